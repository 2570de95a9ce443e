//! The lease coordinator: one worker's side of the lease protocol, run as two background
//! tasks — the renewer and the taker — over one [`LeaseTable`].
//!
//! # The protocol
//!
//! - **Renewal** (every [`renew_interval`](crate::LeaseConfig::renew_interval),
//!   `failover / 3` by default): each held lease gets a conditional write bumping its
//!   counter. A failed condition means another worker took the lease: it is
//!   [`LeaseStatus::Lost`] at once. A lease that cannot be written for 90 % of the failover
//!   time (DynamoDB unreachable, throttled past its retries) is also marked lost, before any
//!   other worker can consider it expired, so two workers never process one shard.
//! - **Taking** (every [`taker_interval`](crate::LeaseConfig::taker_interval),
//!   `failover / 10` by default, and right when a watched lease is due to expire): a
//!   strongly consistent scan feeds the [`ExpiryTracker`](super::ExpiryTracker) and
//!   [`decide`](super::decide); unowned and expired leases are taken with a counter-fenced
//!   write; a lease to steal gets a **graceful hand-off** (Java KCL 3.x): `leaseOwner` becomes
//!   this worker and `checkpointOwner` the current owner, whose next renewal notices it
//!   ([`LeaseStatus::HandoffRequested`]), who checkpoints and
//!   [releases](HeldLease::release) the lease, after which this worker's next scan
//!   takes it. A hand-off not completed within
//!   [`handoff_timeout`](crate::LeaseConfig::handoff_timeout) is completed by force. A victim
//!   that stops renewing the lease instead (a Java KCL 2.x worker ignores `checkpointOwner`:
//!   its renewal fails once `leaseOwner` changed) loses it at its expiry, a failover later;
//!   if that victim still renews its other leases, this worker steals from it outright from
//!   then on, with a counter-fenced take as Java 2.x steals, rather than wait a failover per
//!   steal. (An outright steal, like Java 2.x's, lets the victim's batch in flight overlap the
//!   thief's first one until the victim's next renewal fails.)
//! - **Leases left to this worker id** by a completed hand-off are taken at the next scan;
//!   those left by an earlier run with the same id once their counter has stood still for a
//!   renew interval, without waiting for expiry. If such a counter moves, another live
//!   process uses this worker id: the coordinator logs an error, reports it
//!   ([`CoordinatorStats::duplicate_worker_id`], `kinesis_kcl_duplicate_worker_id_total`) and takes
//!   nothing more, rather than fight the other process over every lease.
//! - **Shutdown**: [`LeaseCoordinator::shutdown`] stops taking and releases every lease
//!   (removing `leaseOwner`), so other workers take them at their next scan instead of
//!   after the failover time. Dropping the coordinator without `shutdown` stops everything
//!   at once without releasing (as a crash would): the leases expire after the failover time.
//!
//! # DynamoDB cost at steady state
//!
//! Per lease: one `UpdateItem` per renew interval (18 per minute at the default 10 s
//! failover, as the Java KCL). Per worker: one consistent `Scan` per taker interval
//! (60 per minute at the default), costing one read unit per 4 KB of table. Checkpoints
//! add one `UpdateItem` each.

mod held;
mod renewer;
mod shared;
mod taker;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use held::{HeldLease, LeaseStatus};
pub use shared::CoordinatorStats;
use shared::{Consumable, Shared};

use super::model::Lease;
use super::table::LeaseTable;
use crate::config::LeaseConfig;
use crate::error::Result;

/// Leases this worker has just acquired, as they are acquired. Each lease arrives once per
/// acquisition; watch its [`status`](HeldLease::status) to learn when it ends.
pub type AcquiredLeases = mpsc::UnboundedReceiver<Arc<HeldLease>>;

/// Runs the lease protocol for one worker (see the [module docs](self)).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use kinesis_kcl::LeaseConfig;
/// use kinesis_kcl::lease::{ExtendedSequenceNumber, Lease, LeaseCoordinator, LeaseTable, TableOptions};
///
/// let bed = kinesis_integration::TestBed::start().await?;
/// let table = LeaseTable::new(bed.dynamodb().clone(), bed.unique_table_name());
/// table.ensure_table(&TableOptions::default()).await?;
/// table.create_lease_if_absent(&Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON)).await?;
///
/// let config = LeaseConfig::builder().failover_time(Duration::from_secs(2)).build()?;
/// let (coordinator, mut acquired) = LeaseCoordinator::start(table, "worker-a", config);
/// let lease = acquired.recv().await.expect("the only worker takes the lease");
/// assert_eq!(lease.lease_key(), "shardId-000000000000");
///
/// // Process the shard, checkpointing through `lease`…
/// lease.checkpoint(ExtendedSequenceNumber::parse("4960", 0)?).await?;
///
/// coordinator.shutdown().await?; // releases the lease for the other workers
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct LeaseCoordinator {
    shared: Arc<Shared>,
    stop_taker: watch::Sender<bool>,
    stop_renewer: watch::Sender<bool>,
    taker: Option<JoinHandle<()>>,
    renewer: Option<JoinHandle<()>>,
}

impl LeaseCoordinator {
    /// Starts renewing and taking leases in `table` as `worker_id`. The table must exist
    /// ([`LeaseTable::ensure_table`]). Must be called inside a Tokio runtime.
    ///
    /// Returns the coordinator and the channel of acquired leases.
    pub fn start(
        table: LeaseTable,
        worker_id: impl Into<String>,
        config: LeaseConfig,
    ) -> (Self, AcquiredLeases) {
        Self::start_filtered(table, worker_id, config, |_: &Lease| true)
    }

    /// As [`start`](Self::start), but only ever takes (or steals, or reclaims) the leases
    /// `consumable` accepts: those of the streams this worker processes. The others are not
    /// seen at all by the taker: they count neither towards the balance nor towards the live
    /// workers, so a worker of an older deploy that does not know a newly added stream
    /// balances only the streams it knows, and leaves the new stream's leases to the workers
    /// that process it.
    pub fn start_filtered(
        table: LeaseTable,
        worker_id: impl Into<String>,
        config: LeaseConfig,
        consumable: impl Fn(&Lease) -> bool + Send + Sync + 'static,
    ) -> (Self, AcquiredLeases) {
        let (acquired_tx, acquired_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(
            table,
            Consumable::new(consumable),
            Arc::from(worker_id.into()),
            config,
            acquired_tx,
        ));
        let (stop_taker, taker_rx) = watch::channel(false);
        let (stop_renewer, renewer_rx) = watch::channel(false);
        let taker = tokio::spawn(taker::run(Arc::clone(&shared), taker_rx));
        let renewer = tokio::spawn(renewer::run(Arc::clone(&shared), renewer_rx));
        (
            LeaseCoordinator {
                shared,
                stop_taker,
                stop_renewer,
                taker: Some(taker),
                renewer: Some(renewer),
            },
            acquired_rx,
        )
    }

    /// This worker's id (the `leaseOwner` it writes).
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.shared.config
    }

    /// The lease table.
    pub fn table(&self) -> &LeaseTable {
        &self.shared.table
    }

    /// The leases held now (held, or being handed off), by key.
    pub fn held(&self) -> Vec<Arc<HeldLease>> {
        self.shared.held()
    }

    /// The keys of the leases held now.
    pub fn held_keys(&self) -> BTreeSet<String> {
        self.shared.held_keys()
    }

    /// Counters of what the coordinator did so far.
    pub fn stats(&self) -> CoordinatorStats {
        self.shared.stats.snapshot()
    }

    /// Stops taking new leases (held leases are still renewed). The first step of a
    /// graceful shutdown: the worker then checkpoints and releases each lease.
    pub async fn stop_taking(&mut self) {
        self.stop_taker.send_replace(true);
        if let Some(task) = self.taker.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "lease taker task failed");
        }
    }

    /// Stops taking, releases every lease still held (see [`HeldLease::release`]), stops
    /// renewing, and waits for both background tasks to end.
    ///
    /// # Errors
    ///
    /// The first release that failed (DynamoDB unreachable); every lease is attempted, and
    /// those not released expire after the failover time.
    pub async fn shutdown(mut self) -> Result<()> {
        self.stop_taking().await;
        let mut first_error = None;
        for lease in self.shared.held() {
            if let Err(e) = lease.release().await {
                tracing::warn!(lease = %lease.lease_key(), error = %e, "release failed");
                first_error.get_or_insert(e);
            }
        }
        // With another live process on this worker id, the leases the table gives to the id
        // are that process's: releasing them would take them from under it.
        if self.shared.stats.duplicate_worker_id.get() == 0
            && let Err(e) = self.release_unheld().await
        {
            tracing::warn!(error = %e, "could not release leases assigned to this worker");
            first_error.get_or_insert(e);
        }
        self.stop_renewer.send_replace(true);
        if let Some(task) = self.renewer.take()
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "lease renewer task failed");
        }
        for lease in self.shared.held() {
            lease.mark_lost();
        }
        self.shared.forget_inactive();
        first_error.map_or(Ok(()), Err)
    }
}

impl LeaseCoordinator {
    /// Releases the leases the table assigns to this worker that it does not hold: one
    /// handed over to it (waiting, within the failover time, for the old owner to finish the
    /// hand-off), or left by an earlier run with the same id. Without this, they would sit
    /// until they expire.
    async fn release_unheld(&self) -> Result<()> {
        let me = &*self.shared.worker_id;
        let deadline = Instant::now() + self.shared.config.failover_time();
        loop {
            let held = self.shared.held_keys();
            let mut pending = 0;
            for lease in self.shared.table.list_leases().await? {
                if lease.lease_owner.as_deref() != Some(me) || held.contains(&lease.lease_key) {
                    continue;
                }
                if lease.checkpoint_owner.is_some() {
                    pending += 1;
                } else if self.shared.table.evict(&lease).await?.applied().is_some() {
                    tracing::debug!(lease = %lease.lease_key, "released a lease assigned to this worker");
                }
            }
            if pending == 0 || Instant::now() >= deadline {
                if pending > 0 {
                    tracing::warn!(
                        pending,
                        "hand-offs towards this worker still open at shutdown; those leases will expire"
                    );
                }
                return Ok(());
            }
            tokio::time::sleep(self.shared.config.taker_interval()).await;
        }
    }
}

impl Drop for LeaseCoordinator {
    /// Without [`shutdown`](LeaseCoordinator::shutdown): stops both tasks at once, releases
    /// nothing (the leases expire after the failover time, as after a crash) and marks every
    /// held lease lost so its processing stops.
    fn drop(&mut self) {
        for task in [self.taker.take(), self.renewer.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        for lease in self.shared.held() {
            lease.mark_lost();
        }
    }
}
