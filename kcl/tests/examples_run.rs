//! Runs each of the crate's examples (`kcl/examples/`) against the test bed, as
//! `cargo run --example` would, and checks what it reports: the examples stay working code.

#[allow(dead_code)]
#[path = "../examples/checkpointing.rs"]
mod checkpointing;
#[allow(dead_code)]
#[path = "../examples/dead_letters.rs"]
mod dead_letters;
#[allow(dead_code)]
#[path = "../examples/multi_stream.rs"]
mod multi_stream;
#[allow(dead_code)]
#[path = "../examples/positions.rs"]
mod positions;
#[allow(dead_code)]
#[path = "../examples/two_phase.rs"]
mod two_phase;

use std::collections::BTreeSet;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpointing_every_n_records_at_shard_end_and_at_shutdown() -> TestResult {
    use checkpointing::Why;
    let summary = checkpointing::run().await?;
    assert_eq!(summary.processed, summary.put, "{summary:#?}");
    let on_parent: Vec<Why> = summary
        .checkpoints
        .iter()
        .filter(|(shard, _, _)| *shard == summary.parent)
        .map(|(_, why, _)| *why)
        .collect();
    // 250 records on the parent: two every-100 checkpoints (maybe a timer one), then SHARD_END.
    assert_eq!(
        on_parent.iter().filter(|w| **w == Why::Records).count(),
        2,
        "{summary:#?}"
    );
    assert_eq!(on_parent.last(), Some(&Why::ShardEnd), "{summary:#?}");
    assert_eq!(summary.table[&summary.parent], "SHARD_END", "{summary:#?}");
    // Each child that got records was checkpointed at its last one (at shutdown at the latest).
    let children: Vec<_> = summary
        .table
        .keys()
        .filter(|k| **k != summary.parent)
        .collect();
    assert_eq!(children.len(), 2, "{summary:#?}");
    for child in children {
        if let Some(last) = summary.last_processed.get(child) {
            assert_eq!(&summary.table[child], last, "{summary:#?}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_recovers_a_prepared_checkpoint_without_writing_twice() -> TestResult {
    let summary = two_phase::run().await?;
    let (pending, transaction) = summary.pending_found.clone().expect("a pending checkpoint");
    assert!(
        summary.store.transactions.contains(&transaction),
        "{summary:#?}"
    );
    assert!(!pending.is_empty());
    assert!(summary.skipped > 0, "{summary:#?}");
    assert_eq!(summary.store.rows.len(), summary.put, "{summary:#?}");
    assert_eq!(
        summary.store.writes, summary.put,
        "written once each: {summary:#?}"
    );
    assert_eq!(summary.table_checkpoint, summary.last_processed);
    assert_eq!(summary.table_pending, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_apply_to_shards_without_a_checkpoint_only() -> TestResult {
    let summary = positions::run().await?;
    let keys = |prefixes: &[&str]| -> BTreeSet<String> {
        prefixes
            .iter()
            .flat_map(|p| (0..3).map(move |i| format!("{p}-{i}")))
            .collect()
    };
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(summary.trim_horizon.len(), 9, "{summary:#?}");
    assert_eq!(set(&summary.trim_horizon), keys(&["old", "mid", "new"]));
    assert_eq!(summary.at_timestamp.len(), 6, "{summary:#?}");
    assert_eq!(set(&summary.at_timestamp), keys(&["mid", "new"]));
    assert_eq!(summary.latest.len(), 3, "{summary:#?}");
    assert_eq!(set(&summary.latest), keys(&["new"]));
    assert_eq!(summary.restarted.len(), 3, "{summary:#?}");
    assert_eq!(set(&summary.restarted), keys(&["later"]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_stream_one_worker_processes_both_streams() -> TestResult {
    let summary = multi_stream::run().await?;
    assert_eq!(summary.streams.len(), 2);
    for (stream, put) in &summary.streams {
        assert_eq!(summary.processed.get(stream), Some(put), "{summary:#?}");
    }
    let (orders, payments) = (&summary.streams[0].0, &summary.streams[1].0);
    assert_eq!(summary.lease_keys[orders].len(), 2, "{summary:#?}");
    assert_eq!(summary.lease_keys[payments].len(), 1, "{summary:#?}");
    for key in summary.lease_keys.values().flatten() {
        assert_eq!(key.split(':').count(), 4, "multi-stream lease key {key}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_isolate_the_malformed_orders_and_the_rest_is_processed_once() -> TestResult {
    let summary = dead_letters::run().await?;
    // Each good order counted once: 197 orders, amounts i % 50.
    let good: Vec<usize> = (0..200).filter(|i| ![17, 90, 161].contains(i)).collect();
    assert_eq!(summary.processed, good.len(), "{summary:#?}");
    assert_eq!(
        summary.total,
        good.iter().map(|i| (i % 50) as u64).sum::<u64>(),
        "{summary:#?}"
    );
    let mut bad: Vec<String> = summary
        .letters
        .iter()
        .map(|l| String::from_utf8_lossy(&l.data).into_owned())
        .collect();
    bad.sort();
    assert_eq!(
        bad,
        [
            "order-161 amount=lots",
            "order-17 amount=lots",
            "order-90 amount=lots"
        ],
        "{summary:#?}"
    );
    for letter in &summary.letters {
        assert_eq!(letter.reason, "attempts");
        assert_eq!(letter.attempts, 2);
        assert!(letter.error.contains("invalid digit"), "{}", letter.error);
        assert!(letter.partition_key.starts_with("customer-"));
    }
    Ok(())
}
