//! What each shard's consumer is doing, for health checks and tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The state of one leased shard on this worker.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardState {
    /// Waiting for these parent leases to reach `SHARD_END`.
    WaitingOnParents {
        /// The parent lease keys still open.
        parents: Vec<String>,
    },
    /// Reading and processing records.
    Processing,
    /// The shard ended, but the processor has not checkpointed `SHARD_END` after this many
    /// calls of `shard_ended`: its children cannot start. An application bug; logged as an
    /// error at every attempt.
    ShardEndNotCheckpointed {
        /// Calls of `shard_ended` so far.
        attempts: u32,
    },
    /// The shard ended into a merge whose other parent has no lease yet: the child's lease is
    /// not created and `SHARD_END` not checkpointed until it has (as the Java `ShutdownTask`,
    /// `BlockedOnParentShardException`), retried every second meanwhile.
    ChildLeaseDeferred {
        /// The merged child.
        child_shard_id: String,
        /// The other parent's missing lease.
        missing_parent_lease_key: String,
    },
    /// `process_records` failed on records that are retried in place after a backoff (see
    /// [`FailurePolicy`](crate::FailurePolicy)).
    RetryingRecords {
        /// Failed calls on these records so far.
        attempts: u32,
        /// The last error.
        reason: String,
    },
    /// The failure policy gave up on records and the destination has not accepted them yet:
    /// the shard holds until it does.
    DestinationFailing {
        /// Failed calls of the destination so far.
        attempts: u32,
        /// Its last error.
        reason: String,
    },
    /// Fully processed (checkpoint `SHARD_END`); the lease stays until clean-up deletes it.
    ShardEnded,
    /// The processor or retrieval failed; the shard restarts from its last checkpoint after
    /// a backoff.
    Restarting {
        /// Failures in a row.
        failures: u32,
        /// The last failure.
        reason: String,
    },
}

/// Shared map of lease key → state.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShardStates(Arc<Mutex<BTreeMap<String, ShardState>>>);

impl ShardStates {
    pub(crate) fn set(&self, lease_key: &str, state: ShardState) {
        self.lock().insert(lease_key.to_owned(), state);
    }

    pub(crate) fn remove(&self, lease_key: &str) {
        self.lock().remove(lease_key);
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<String, ShardState> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ShardState>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
