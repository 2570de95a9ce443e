//! Replays the committed fuzz corpus of the `deaggregate` target
//! (`tests/data/fuzz-corpus/deaggregate/`) on the stable toolchain, asserting the invariants the
//! fuzz target asserts (the same code: `tests/support/deaggregate_invariants.rs`, compiled in
//! below): every input through [`deaggregate`], raw or framed as the target frames it. CI
//! therefore needs no nightly toolchain; `cargo +nightly fuzz run deaggregate` grows the corpus
//! (see `fuzz/README.md`).

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, PassThroughReason, deaggregate};

// `pub`: the fuzz crate re-exports these for its targets.
#[allow(unreachable_pub)]
#[path = "support/deaggregate_invariants.rs"]
mod fuzz;

use fuzz::{check_deaggregate, deaggregate_case};

/// The corpus files of a fuzz target, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fuzz-corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Runs `check`, naming the corpus file if it panics.
fn replay(name: &str, check: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        eprintln!("corpus file aggregation/tests/data/fuzz-corpus/*/{name} fails");
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn deaggregate_corpus_holds_every_invariant() {
    let files = corpus("deaggregate");
    assert!(files.len() >= 100, "only {} corpus files", files.len());
    let mut reasons = BTreeSet::new();
    let (mut aggregates, mut sub_records) = (0, 0);
    for (name, input) in &files {
        let case = deaggregate_case(input);
        replay(name, || check_deaggregate(&case));
        match deaggregate(Bytes::from(case)) {
            Deaggregated::Aggregated(records) => {
                aggregates += 1;
                sub_records += records.len();
            }
            Deaggregated::PassThrough { reason, .. } => {
                reasons.insert(reason);
            }
        }
    }
    // The corpus reaches every outcome, so the replay covers every path of the decoder.
    assert_eq!(
        reasons,
        PassThroughReason::ALL.into_iter().collect::<BTreeSet<_>>()
    );
    assert!(
        aggregates >= 20 && sub_records >= 100,
        "{aggregates} aggregates, {sub_records} sub-records"
    );
}
