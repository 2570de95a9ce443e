//! The running worker's loop: one shard consumer per held lease, started when the lease is
//! acquired (after the previous consumer of that shard has ended), restarted after a failure
//! with a backoff, stopped when the lease is lost or handed off; shard syncs and lease
//! clean-ups in the background, at most one of each per stream; and the shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};
use tracing::Instrument;

use super::consumer::{self, ConsumerContext, Exit, Failure};
use super::state::ShardState;
use super::stream::StreamContext;
use crate::error::Result;
use crate::lease::{HeldLease, LeaseCoordinator};

/// First restart delay of a failed shard consumer; doubles per failure in a row.
pub(super) const RESTART_MIN_DELAY: Duration = Duration::from_secs(1);
/// Largest restart delay.
const RESTART_MAX_DELAY: Duration = Duration::from_secs(30);
/// A consumer that ran this long before failing starts its backoff afresh.
const RESTART_RESET_AFTER: Duration = Duration::from_secs(60);

/// A running consumer's bookkeeping.
struct Active {
    lease: Arc<HeldLease>,
    stream: Arc<StreamContext>,
    failures: u32,
    started: Instant,
}

/// The state of [`Worker::run`] once started.
pub(super) struct Running {
    ctx: ConsumerContext,
    streams: Vec<Arc<StreamContext>>,
    coordinator: LeaseCoordinator,
    consumers: JoinSet<(String, Exit)>,
    tasks: HashMap<Id, String>,
    active: HashMap<String, Active>,
    /// Leases re-acquired while their previous consumer is still ending.
    queued: HashMap<String, Arc<HeldLease>>,
    /// Background syncs and clean-ups, each returning its job.
    syncs: JoinSet<SyncJob>,
    /// The jobs running.
    syncing: HashSet<SyncJob>,
}

/// A background job on one stream's leases: at most one of each kind runs per stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SyncJob {
    /// A shard sync (leases for the stream's new shards), named by its stream.
    ShardSync(String),
    /// A lease clean-up (leases of shards gone from the stream), named by its stream.
    CleanUp(String),
}

impl Running {
    pub(super) fn new(
        ctx: ConsumerContext,
        streams: Vec<Arc<StreamContext>>,
        coordinator: LeaseCoordinator,
    ) -> Self {
        Self {
            ctx,
            streams,
            coordinator,
            consumers: JoinSet::new(),
            tasks: HashMap::new(),
            active: HashMap::new(),
            queued: HashMap::new(),
            syncs: JoinSet::new(),
            syncing: HashSet::new(),
        }
    }

    /// The streams consumed.
    pub(super) fn streams(&self) -> Vec<Arc<StreamContext>> {
        self.streams.clone()
    }

    pub(super) async fn main_loop(
        &mut self,
        mut acquired: mpsc::UnboundedReceiver<Arc<HeldLease>>,
        mut sync_requests: mpsc::UnboundedReceiver<Arc<StreamContext>>,
        sync_interval: Duration,
        cleanup_interval: Duration,
    ) {
        let shutdown = self.ctx.shutdown.clone();
        let mut sync_tick = tokio::time::interval(sync_interval);
        sync_tick.tick().await; // the first tick is immediate; the initial sync is done
        let mut cleanup_tick = tokio::time::interval(cleanup_interval);
        cleanup_tick.tick().await;
        loop {
            tokio::select! {
                () = consumer::flag_set(shutdown.clone()) => return,
                lease = acquired.recv() => match lease {
                    Some(lease) => self.acquired(lease).await,
                    None => {
                        tracing::error!("lease coordinator stopped; shutting the worker down");
                        return;
                    }
                },
                Some(joined) = self.consumers.join_next_with_id() => self.consumer_ended(joined),
                Some(stream) = sync_requests.recv() => self.sync(stream, false),
                _ = sync_tick.tick() => {
                    for stream in self.streams.clone() {
                        self.sync(stream, false);
                    }
                }
                _ = cleanup_tick.tick() => {
                    for stream in self.streams.clone() {
                        self.sync(stream, true);
                    }
                }
                Some(done) = self.syncs.join_next() => match done {
                    Ok(job) => {
                        self.syncing.remove(&job);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "shard sync task failed");
                        self.syncing.clear();
                    }
                },
            }
        }
    }

    async fn acquired(&mut self, lease: Arc<HeldLease>) {
        let key = lease.lease_key().to_owned();
        if self.active.contains_key(&key) {
            // The previous consumer of this lease is still ending: start after it.
            self.queued.insert(key, lease);
            return;
        }
        let snapshot = lease.lease().await;
        let Some(stream) = self.streams.iter().find(|s| s.owns(&snapshot)).cloned() else {
            // The taker never takes these; guard anyway rather than hold one idle.
            tracing::warn!(lease = %key, "lease of a stream this worker does not consume; releasing it");
            if let Err(e) = lease.release().await {
                tracing::warn!(lease = %key, error = %e, "could not release the lease; it will expire");
            }
            return;
        };
        self.start(lease, stream, 0, Duration::ZERO);
    }

    fn start(
        &mut self,
        lease: Arc<HeldLease>,
        stream: Arc<StreamContext>,
        failures: u32,
        delay: Duration,
    ) {
        let key = lease.lease_key().to_owned();
        let span = tracing::info_span!(
            "shard",
            stream = %stream.name,
            lease = %key,
            worker = %self.coordinator.worker_id()
        );
        let ctx = self.ctx.clone();
        let (task_lease, task_stream) = (Arc::clone(&lease), Arc::clone(&stream));
        let task_key = key.clone();
        let handle = self.consumers.spawn(
            async move {
                if !delay.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = consumer::inactive(task_lease.subscribe()) => return (task_key, Exit::Done),
                        () = consumer::flag_set(ctx.shutdown.clone()) => return (task_key, Exit::Done),
                    }
                }
                let exit = consumer::run(ctx, task_stream, task_lease).await;
                (task_key, exit)
            }
            .instrument(span),
        );
        self.tasks.insert(handle.id(), key.clone());
        self.active.insert(
            key,
            Active {
                lease,
                stream,
                failures,
                started: Instant::now(),
            },
        );
    }

    fn consumer_ended(
        &mut self,
        joined: std::result::Result<(Id, (String, Exit)), tokio::task::JoinError>,
    ) {
        let (id, key, exit) = match joined {
            Ok((id, (key, exit))) => (id, key, exit),
            Err(e) => {
                let Some(key) = self.tasks.get(&e.id()).cloned() else {
                    return;
                };
                let why = if e.is_panic() {
                    Failure::Panicked
                } else {
                    Failure::Cancelled
                };
                (e.id(), key, Exit::Failed(why))
            }
        };
        self.tasks.remove(&id);
        let Some(active) = self.active.remove(&key) else {
            return;
        };
        match exit {
            Exit::Done => self.ctx.states.remove(&key),
            Exit::Failed(failure) => {
                let shutting_down = *self.ctx.shutdown.borrow();
                if active.lease.status().is_active() && !shutting_down {
                    let failures = if active.started.elapsed() >= RESTART_RESET_AFTER {
                        1
                    } else {
                        active.failures + 1
                    };
                    let delay = RESTART_MIN_DELAY
                        .saturating_mul(1 << (failures - 1).min(5))
                        .min(RESTART_MAX_DELAY);
                    let reason = failure.to_string();
                    tracing::error!(lease = %key, %reason, failures, ?delay, "shard consumer failed; restarting from the last checkpoint");
                    metrics::counter!(crate::metrics::PROCESSOR_RESTARTS).increment(1);
                    self.ctx
                        .states
                        .set(&key, ShardState::Restarting { failures, reason });
                    self.start(active.lease, active.stream, failures, delay);
                    return;
                }
                self.ctx.states.remove(&key);
            }
        }
        if let Some(next) = self.queued.remove(&key) {
            self.start(next, active.stream, 0, Duration::ZERO);
        }
    }

    /// Syncs (or, with `cleanup`, cleans up) a stream's leases in the background, one at a
    /// time per stream.
    fn sync(&mut self, stream: Arc<StreamContext>, cleanup: bool) {
        let job = if cleanup {
            SyncJob::CleanUp(stream.name.clone())
        } else {
            SyncJob::ShardSync(stream.name.clone())
        };
        if !self.syncing.insert(job.clone()) {
            return;
        }
        let labels = [("stream", stream.name.clone())];
        self.syncs.spawn(async move {
            match &job {
                SyncJob::CleanUp(_) => match stream.syncer.clean_up().await {
                    Ok(report) => tracing::debug!(?report, "lease clean-up"),
                    Err(e) => tracing::warn!(error = %e, "lease clean-up failed"),
                },
                SyncJob::ShardSync(_) => {
                    metrics::counter!(crate::metrics::SHARD_SYNCS, &labels).increment(1);
                    match stream.syncer.sync().await {
                        Ok(report) => tracing::debug!(?report, "shard sync"),
                        Err(e) => tracing::warn!(error = %e, "shard sync failed"),
                    }
                }
            }
            job
        });
    }

    /// Graceful shutdown: no more takes; every consumer tells its processor and ends; then
    /// every lease is released.
    pub(super) async fn shut_down(mut self) -> Result<()> {
        tracing::info!(worker = %self.coordinator.worker_id(), "worker shutting down");
        self.coordinator.stop_taking().await;
        // Consumers see the shutdown signal (already sent) and end after their processors'
        // shutdown_requested; restarts are not scheduled while shutting down.
        while let Some(joined) = self.consumers.join_next_with_id().await {
            self.consumer_ended(joined);
        }
        self.syncs.abort_all();
        while self.syncs.join_next().await.is_some() {}
        let result = self.coordinator.shutdown().await;
        tracing::info!("worker stopped");
        result
    }
}
