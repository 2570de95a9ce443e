//! A lease this worker holds: its latest copy, its status, and the writes its holder makes
//! (renewals, checkpoints, the release).
//!
//! Every write to a held lease is fenced on its counter, and the counter changes with every
//! write, so all writes to one lease go through one lock: a renewal and a checkpoint never
//! race each other into a spurious "lease lost".

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};

use crate::error::{Error, Result};
use crate::lease::model::Lease;
use crate::lease::ops::LeaseWrite;
use crate::lease::table::{LeaseTable, WriteOutcome};
use crate::sequence::ExtendedSequenceNumber;

/// Where a held lease stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    /// This worker holds the lease and renews it.
    Held,
    /// Another worker asked for the lease (a graceful hand-off, Java KCL 3.x): finish the
    /// work in hand, checkpoint, then [`release`](HeldLease::release) it. The lease is still
    /// renewed meanwhile, and checkpoints still land.
    HandoffRequested {
        /// The worker the lease goes to.
        to: String,
    },
    /// The lease is gone: another worker took it, or it could not be renewed before it
    /// would expire. Stop processing the shard at once; checkpoints are refused.
    Lost,
    /// This worker released the lease (shutdown or hand-off).
    Released,
}

impl LeaseStatus {
    /// Whether this worker may still process the shard (held, or asked to hand it off).
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            LeaseStatus::Held | LeaseStatus::HandoffRequested { .. }
        )
    }

    /// Whether the lease ended without this worker's consent.
    pub fn is_lost(&self) -> bool {
        *self == LeaseStatus::Lost
    }
}

/// How long a lease counts as held after a successful write, on this worker's clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HoldTiming {
    /// `failover_time` minus a safety margin: past it, this worker stops processing
    /// before any other worker can consider the lease expired.
    pub(crate) hold_for: Duration,
}

impl HoldTiming {
    /// Holds for 90 % of the failover time: the 10 % margin covers stopping the shard's
    /// processing and clock-rate differences between machines.
    pub(crate) fn for_failover(failover: Duration) -> Self {
        HoldTiming {
            hold_for: failover - failover / 10,
        }
    }
}

#[derive(Debug)]
struct State {
    lease: Lease,
    /// When the last successful write of ours was *sent* (conservative: it landed later).
    written_at: Instant,
}

/// A lease held by this worker, shared by the coordinator (which renews it) and the shard's
/// processing (which checkpoints through it and watches its [`LeaseStatus`]).
///
/// Obtained from the [`LeaseCoordinator`](super::LeaseCoordinator)'s acquired-lease channel.
#[derive(Debug)]
pub struct HeldLease {
    key: String,
    worker_id: Arc<str>,
    table: LeaseTable,
    timing: HoldTiming,
    state: Mutex<State>,
    status: watch::Sender<LeaseStatus>,
    /// The local expiry deadline, readable without the state lock.
    deadline: std::sync::Mutex<Instant>,
}

impl HeldLease {
    /// Wraps a lease just taken; `written_at` is when the take was sent.
    pub(crate) fn new(
        lease: Lease,
        worker_id: Arc<str>,
        table: LeaseTable,
        timing: HoldTiming,
        written_at: Instant,
    ) -> Self {
        HeldLease {
            key: lease.lease_key.clone(),
            worker_id,
            table,
            timing,
            deadline: std::sync::Mutex::new(written_at + timing.hold_for),
            state: Mutex::new(State { lease, written_at }),
            status: watch::Sender::new(LeaseStatus::Held),
        }
    }

    /// The lease key.
    pub fn lease_key(&self) -> &str {
        &self.key
    }

    /// A copy of the lease as last written or read by this worker.
    pub async fn lease(&self) -> Lease {
        self.state.lock().await.lease.clone()
    }

    /// The current status.
    pub fn status(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change (for `tokio::select!` in the shard's task).
    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.status.subscribe()
    }

    /// Resolves once the status is no longer [`LeaseStatus::Held`], returning it.
    pub async fn wait_not_held(&self) -> LeaseStatus {
        let mut rx = self.status.subscribe();
        let status = rx
            .wait_for(|s| *s != LeaseStatus::Held)
            .await
            .map(|s| s.clone());
        // The sender lives in `self`, so the channel cannot close while we borrow it.
        status.unwrap_or(LeaseStatus::Lost)
    }

    /// When this worker stops considering the lease held if no write succeeds before then.
    pub(crate) fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `checkpoint` as the lease's checkpoint (clearing any prepared checkpoint),
    /// fenced on the lease counter.
    ///
    /// # Errors
    ///
    /// [`Error::LeaseLost`] if this worker no longer holds the lease (nothing is written);
    /// [`Error::CheckpointRegression`] if `checkpoint` is below the current checkpoint;
    /// [`Error::DynamoDb`] if DynamoDB could not be reached in time.
    pub async fn checkpoint(&self, checkpoint: ExtendedSequenceNumber) -> Result<Lease> {
        self.update(|lease| {
            if checkpoint < lease.checkpoint {
                return Err(Error::CheckpointRegression {
                    lease_key: lease.lease_key.clone(),
                    current: lease.checkpoint.to_string(),
                    proposed: checkpoint.to_string(),
                });
            }
            lease.set_checkpoint(checkpoint.clone());
            Ok(())
        })
        .await
    }

    /// Records a prepared checkpoint (`pendingCheckpoint`, the first phase of a two-phase
    /// checkpoint), with optional application state, fenced on the lease counter.
    ///
    /// # Errors
    ///
    /// As [`checkpoint`](Self::checkpoint).
    pub async fn prepare_checkpoint(
        &self,
        pending: ExtendedSequenceNumber,
        state: Option<Vec<u8>>,
    ) -> Result<Lease> {
        self.update(|lease| {
            if pending < lease.checkpoint {
                return Err(Error::CheckpointRegression {
                    lease_key: lease.lease_key.clone(),
                    current: lease.checkpoint.to_string(),
                    proposed: pending.to_string(),
                });
            }
            lease.set_pending_checkpoint(pending.clone(), state.clone());
            Ok(())
        })
        .await
    }

    /// Applies `change` to a copy of the lease and writes it ([`Lease::update_write`]),
    /// fenced on the counter. On success the copy becomes the held lease.
    ///
    /// Use it for what the checkpoint methods do not cover (child shard ids at a shard's
    /// end, for example).
    ///
    /// # Errors
    ///
    /// The error `change` returns; otherwise as [`checkpoint`](Self::checkpoint).
    pub async fn update<F>(&self, change: F) -> Result<Lease>
    where
        F: Fn(&mut Lease) -> Result<()>,
    {
        let mut state = self.state.lock().await;
        for _ in 0..2 {
            self.ensure_active()?;
            let mut next = state.lease.clone();
            change(&mut next)?;
            let write = next.update_write()?;
            match self.send(&mut state, &write).await? {
                Sent::Applied => return Ok(state.lease.clone()),
                // A hand-off began: the lease was re-read; try once more on the new copy.
                Sent::Adopted => continue,
            }
        }
        self.ensure_active()?;
        Err(self.lost_error())
    }

    /// Releases the lease: the Java `evictLease`. During a hand-off this clears
    /// `checkpointOwner` so the incoming owner starts at once; otherwise it removes
    /// `leaseOwner`, leaving the lease free for any worker's next take.
    ///
    /// Checkpoint first: processing must have stopped before the lease is released.
    /// Releasing a lease that is already lost or released does nothing.
    ///
    /// # Errors
    ///
    /// [`Error::DynamoDb`] if DynamoDB could not be reached; the lease then expires
    /// normally after the failover time (its status is [`LeaseStatus::Lost`]).
    pub async fn release(&self) -> Result<()> {
        let mut state = self.state.lock().await;
        if !self.status().is_active() {
            return Ok(());
        }
        let write = state.lease.evict_write()?;
        let result = self.table.apply(&write).await;
        match result {
            Ok(WriteOutcome::Applied(lease)) => {
                state.lease = lease;
                self.set_status(LeaseStatus::Released);
                tracing::debug!(lease = %self.key, "lease released");
                Ok(())
            }
            Ok(WriteOutcome::ConditionFailed { .. }) => {
                // Someone else owns it now: nothing of ours to release.
                self.set_status(LeaseStatus::Lost);
                Ok(())
            }
            Err(e) => {
                self.set_status(LeaseStatus::Lost);
                Err(e)
            }
        }
    }

    /// Renews the lease once (the coordinator calls this every renew interval).
    pub(crate) async fn renew(&self) {
        let mut state = self.state.lock().await;
        for _ in 0..2 {
            if !self.status().is_active() {
                return;
            }
            let write = match state.lease.renew_write() {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(lease = %self.key, error = %e, "cannot build renewal");
                    return;
                }
            };
            match self.send(&mut state, &write).await {
                Ok(Sent::Applied) => return,
                Ok(Sent::Adopted) => continue,
                Err(e) => {
                    if self.status().is_active() {
                        tracing::warn!(
                            lease = %self.key,
                            error = %e,
                            "lease renewal failed; retrying until the lease would expire"
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Marks the lease lost if its local deadline has passed. Returns whether it did.
    pub(crate) fn expire_if_due(&self, now: Instant) -> bool {
        if self.status().is_active() && now >= self.deadline() {
            tracing::warn!(
                lease = %self.key,
                "lease not renewed in time (DynamoDB unreachable?): stopping its processing"
            );
            self.set_status(LeaseStatus::Lost);
            return true;
        }
        false
    }

    /// Marks the lease lost (the coordinator is shutting down without a release, or the
    /// table shows another owner).
    pub(crate) fn mark_lost(&self) {
        if self.status().is_active() {
            self.set_status(LeaseStatus::Lost);
        }
    }

    fn set_status(&self, status: LeaseStatus) {
        self.status.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }

    /// `Ok` while this worker may still write the lease; [`Error::LeaseLost`] otherwise.
    pub(crate) fn ensure_active(&self) -> Result<()> {
        if self.status().is_active() && Instant::now() < self.deadline() {
            Ok(())
        } else {
            self.expire_if_due(Instant::now());
            Err(self.lost_error())
        }
    }

    fn lost_error(&self) -> Error {
        Error::LeaseLost {
            lease_key: self.key.clone(),
        }
    }

    /// Sends a counter-fenced write of ours, bounded by the local deadline, and folds the
    /// outcome into the state and status.
    async fn send(&self, state: &mut State, write: &LeaseWrite) -> Result<Sent> {
        let sent_at = Instant::now();
        let deadline = state.written_at + self.timing.hold_for;
        let Some(budget) = deadline.checked_duration_since(sent_at) else {
            self.expire_if_due(sent_at);
            return Err(self.lost_error());
        };
        let holder = state.lease.lease_owner.clone();
        let apply = self.table.apply_as(write, holder.as_deref());
        let outcome = match tokio::time::timeout(budget, apply).await {
            Ok(result) => result?,
            Err(_) => {
                self.expire_if_due(Instant::now());
                return Err(self.lost_error());
            }
        };
        match outcome {
            WriteOutcome::Applied(lease) => {
                // A hand-off does not bump the counter, so a write of ours can land after
                // one started: the returned item tells.
                self.notice_handoff(&state.lease, &lease);
                state.lease = lease;
                state.written_at = sent_at;
                *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) =
                    sent_at + self.timing.hold_for;
                Ok(Sent::Applied)
            }
            WriteOutcome::ConditionFailed { current } => {
                let current = match current {
                    Some(c) => Some(c),
                    None => self.table.get_lease(&self.key).await?,
                };
                self.reconcile(state, current)
            }
        }
    }

    /// Sets [`LeaseStatus::HandoffRequested`] if `now` (the table's copy) shows a hand-off
    /// from this worker that `before` (our copy) did not.
    fn notice_handoff(&self, before: &Lease, now: &Lease) {
        let me = &*self.worker_id;
        if now.checkpoint_owner.as_deref() == Some(me)
            && let Some(to) = now.lease_owner.as_deref().filter(|o| *o != me)
        {
            if before.checkpoint_owner.is_none() {
                tracing::info!(lease = %self.key, to = %to, "graceful hand-off requested");
            }
            self.set_status(LeaseStatus::HandoffRequested { to: to.to_owned() });
        }
    }

    /// After a failed condition: either a hand-off to another worker has started (adopt the
    /// table's copy and go on), or the lease is lost.
    fn reconcile(&self, state: &mut State, current: Option<Lease>) -> Result<Sent> {
        let me = &*self.worker_id;
        match current {
            Some(c)
                if c.checkpoint_owner.as_deref() == Some(me)
                    && c.lease_owner.as_deref().is_some_and(|o| o != me) =>
            {
                self.notice_handoff(&state.lease, &c);
                state.lease = c;
                Ok(Sent::Adopted)
            }
            other => {
                let owner = other
                    .as_ref()
                    .and_then(|c| c.lease_owner.clone())
                    .unwrap_or_default();
                tracing::info!(lease = %self.key, now_owned_by = %owner, "lease lost");
                self.set_status(LeaseStatus::Lost);
                Err(self.lost_error())
            }
        }
    }
}

enum Sent {
    Applied,
    Adopted,
}
