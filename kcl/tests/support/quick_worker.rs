//! The settings every worker-level test file runs its workers with (included with
//! `#[path = "support/quick_worker.rs"] mod quick_worker;`): the Java defaults scaled down so
//! that a test sees renewals, takes, syncs and shard ends within seconds.

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
