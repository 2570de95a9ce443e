//! The fuzz targets' invariants: the same file the stable replay test
//! (`kpl/tests/fuzz_corpus.rs`) compiles, so fuzzers and tests check exactly the same things.

#[path = "../../kpl/tests/support/fuzz_invariants.rs"]
mod invariants;

pub use invariants::*;
