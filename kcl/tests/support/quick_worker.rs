//! The settings every worker-level test suite runs its workers with: the Java defaults scaled
//! down so that a test sees renewals, takes, syncs and shard ends within seconds.
//!
//! One source file shared by the suites of several crates, each including it with
//! `#[path = "..."] mod quick_worker;`:
//! - kcl's own suites (`#[path = "support/quick_worker.rs"]`): `multi_stream`, `merge_deferral`;
//! - system-tests (`#[path = "../../kcl/tests/support/quick_worker.rs"]`): `through_reshards`,
//!   `reliability_crashes`, `reliability_dynamodb`;
//! - examples (same path): `rewind`.
//!
//! It is a file, not a crate, on purpose: kcl's integration tests cannot depend on a crate that
//! depends on kinesis-kcl (the dev-dependency cycle would give them two copies of kcl's types).
//! So it uses only kinesis-kcl's public API and the standard library, which every includer has.

use std::time::Duration;

use kinesis_kcl::{InitialPosition, LeaseConfig, PollingConfig, Retrieval, WorkerBuilder};

/// The failover time of the test workers.
pub(crate) const FAILOVER: Duration = Duration::from_secs(2);

/// `builder` from `TRIM_HORIZON`, with a 2 s failover time, polling every 50 ms, shard syncs
/// every 500 ms and parent checks every 100 ms.
pub(crate) fn quick(
    builder: WorkerBuilder,
) -> Result<WorkerBuilder, Box<dyn std::error::Error + Send + Sync>> {
    Ok(builder
        .initial_position(InitialPosition::TrimHorizon)
        .lease_config(LeaseConfig::builder().failover_time(FAILOVER).build()?)
        .retrieval(Retrieval::Polling(
            PollingConfig::builder()
                .idle_time_between_reads(Duration::from_millis(50))
                .build()?,
        ))
        .shard_sync_interval(Duration::from_millis(500))
        .parent_shard_poll_interval(Duration::from_millis(100)))
}
