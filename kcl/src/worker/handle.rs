//! [`WorkerHandle`]: a cloneable handle on a running worker.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

use super::state::{ShardState, ShardStates};

/// A cloneable handle on a [`Worker`](crate::Worker): shut it down, watch its shards.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    pub(super) worker_id: Arc<str>,
    pub(super) shutdown: Arc<watch::Sender<bool>>,
    pub(super) finished: Arc<watch::Sender<bool>>,
    pub(super) states: ShardStates,
}

impl WorkerHandle {
    /// The worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Shuts the worker down gracefully and resolves once it is done: every processor has
    /// been told ([`shutdown_requested`](crate::ShardRecordProcessor::shutdown_requested),
    /// where it checkpoints) and every lease has been released for the other workers. A
    /// processor that does not return holds this up by at most
    /// [`processor_stop_timeout`](crate::WorkerBuilder::processor_stop_timeout). Also resolves if the
    /// worker already stopped.
    pub async fn shutdown(&self) {
        self.request_shutdown();
        self.wait_finished().await;
    }

    /// Resolves once [`Worker::run`](crate::Worker::run) has returned.
    pub async fn wait_finished(&self) {
        let mut rx = self.finished.subscribe();
        // The sender lives in this handle: the channel cannot close under us.
        let _ = rx.wait_for(|f| *f).await;
    }

    /// Whether [`Worker::run`](crate::Worker::run) has returned.
    pub fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// What each shard leased by this worker is doing, by lease key.
    pub fn shard_states(&self) -> BTreeMap<String, ShardState> {
        self.states.snapshot()
    }
}
