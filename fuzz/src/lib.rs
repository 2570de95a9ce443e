//! The fuzz targets' invariants: the same files the stable replay tests
//! (`aggregation/tests/deaggregate_corpus.rs`, `kpl/tests/fuzz_corpus.rs`) compile, so fuzzers and
//! tests check exactly the same things.

#[path = "../../aggregation/tests/support/deaggregate_invariants.rs"]
mod deaggregate_invariants;
#[path = "../../kpl/tests/support/producer_invariants.rs"]
mod producer_invariants;

pub use deaggregate_invariants::*;
pub use producer_invariants::*;
