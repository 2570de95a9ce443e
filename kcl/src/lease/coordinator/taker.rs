//! The taking loop: scan the table, track expiry, and take, reclaim or steal leases as
//! [`decide`](crate::lease::decide) says.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::shared::Shared;
use crate::lease::assignment::{TakeReason, decide};
use crate::lease::expiry::ExpiryTracker;
use crate::lease::model::Lease;
use crate::lease::table::WriteOutcome;

/// Scans in one round when takes keep losing races to other workers.
const MAX_SCANS_PER_ROUND: usize = 4;

/// A scan right after a lease's expiry moment, not exactly at it (expiry is strict).
const EXPIRY_NUDGE: Duration = Duration::from_millis(5);

/// Rounds start at least `taker_interval / MIN_GAP_DIVISOR` apart, whatever the state: an
/// expiry-timed scan may come soon after a periodic one, never back to back.
const MIN_GAP_DIVISOR: u32 = 4;

/// Runs until `stop` turns true. The first round runs at once.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let interval = shared.config.taker_interval();
    let failover = shared.config.failover_time();
    let mut tracker = ExpiryTracker::new();
    let mut memory = Memory::default();
    let min_gap = interval / MIN_GAP_DIVISOR;
    let mut next_round = Instant::now();
    let mut last_start: Option<Instant> = None;
    loop {
        let wake = tracker
            .next_expiry(failover)
            .map(|t| t + EXPIRY_NUDGE)
            .map_or(next_round, |t| t.min(next_round));
        let wake = last_start.map_or(wake, |last| wake.max(last + min_gap));
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        last_start = Some(started);
        if started >= next_round {
            next_round = started + interval;
        }
        // A take or steal that lost a race is retried at once on a fresh scan, not a
        // period later (the winner's write is visible by then); a few times at most.
        for _ in 0..MAX_SCANS_PER_ROUND {
            if !round(&shared, &mut tracker, &mut memory).await {
                break;
            }
        }
        shared.stats.taker_rounds.inc();
    }
}

/// What the taker remembers between rounds.
#[derive(Default)]
struct Memory {
    /// Hand-offs this worker started (steals), by lease key, with their start.
    handoffs: HashMap<String, Instant>,
    /// Leases the table gives to this worker id that it does not hold (left by an earlier
    /// run), watched before they are taken back.
    reclaims: HashMap<String, Reclaim>,
    /// Another process renews leases under this worker id: taking stopped for good.
    duplicate_id: bool,
    /// Workers that stopped renewing a lease when asked to hand it off instead of finishing
    /// the hand-off (Java KCL 2.x workers ignore `checkpointOwner`; their renewal fails once
    /// `leaseOwner` changed): their leases are stolen outright from now on, as 2.x steals.
    no_handoff: std::collections::HashSet<String>,
}

/// A lease given to this worker id that it does not hold, as watched so far.
struct Reclaim {
    /// Since when its counter has stood still.
    still_since: Instant,
    /// Its counter then.
    counter: u64,
    /// How far its counter moved while watched.
    moved: u64,
}

/// Counter steps seen on a lease this worker does not hold before another process is taken
/// to renew it under this worker id. This worker's own writes still in flight when it let
/// the lease go (a renewal and a checkpoint whose answers were lost, landing late) account
/// for two at most; a live duplicate renews once per renew interval.
const DUPLICATE_ID_STEPS: u64 = 3;

/// One scan and the takes it leads to. Returns whether a take or steal lost a race.
async fn round(shared: &Shared, tracker: &mut ExpiryTracker, memory: &mut Memory) -> bool {
    let failover = shared.config.failover_time();
    // Eventually consistent (half the read units): a stale view delays a decision by a scan
    // at most, and every take is conditional on the counter it read.
    let leases = match shared.table.list_leases_eventually_consistent().await {
        Ok(mut leases) => {
            let listed = leases.len();
            leases.retain(|l| shared.consumable.accepts(l));
            metrics::gauge!(crate::metrics::LEASES_NOT_CONSUMABLE)
                .set((listed - leases.len()) as f64);
            leases
        }
        Err(e) => {
            tracing::warn!(error = %e, "lease table scan failed; retrying next round");
            return false;
        }
    };
    shared.stats.scans.inc();
    let scan_time = Instant::now();
    let states = tracker.observe(scan_time, &leases, failover);
    let me = &*shared.worker_id;
    let held = shared.held_keys();
    let by_key: HashMap<&str, &Lease> = leases.iter().map(|l| (l.lease_key.as_str(), l)).collect();

    if memory.duplicate_id {
        return false;
    }
    // Leases the table gives to this worker that it does not hold. Handed over to it: taken
    // once the old owner has cleared `checkpointOwner` (or the hand-off timed out). Left by
    // an earlier run with the same worker id: taken back once their counter has stood still
    // for two renew intervals, without waiting for expiry. A counter that moves meanwhile means
    // another live process renews them under this worker id: taking them would start a fight
    // in which both lose and retake every lease every second (or, worse, both believe they
    // hold it), so this worker refuses, says so and takes nothing more.
    let stolen: std::collections::HashSet<String> = memory.handoffs.keys().cloned().collect();
    memory.handoffs.retain(|key, _| {
        by_key
            .get(key.as_str())
            .is_some_and(|l| l.lease_owner.as_deref() == Some(me) && l.checkpoint_owner.is_some())
    });
    memory.reclaims.retain(|key, _| {
        by_key.get(key.as_str()).is_some_and(|l| {
            l.lease_owner.as_deref() == Some(me)
                && l.checkpoint_owner.is_none()
                && !held.contains(key)
        })
    });
    // Two renewals of a live holder's lease come at most 1.5 renew intervals apart (a round
    // is spread over half an interval, see the renewer): still for two intervals, the lease
    // is left over. Still well within the failover time (three intervals at the default).
    let settle = shared.config.renew_interval() * 2 + EXPIRY_NUDGE;
    let expired: std::collections::HashSet<&str> = states
        .iter()
        .filter(|s| s.expired)
        .map(|s| s.lease_key.as_str())
        .collect();
    for lease in &leases {
        if lease.lease_owner.as_deref() != Some(me) || held.contains(&lease.lease_key) {
            continue;
        }
        match &lease.checkpoint_owner {
            None if stolen.contains(&lease.lease_key) => {
                take(shared, tracker, lease, TakeReason::Unowned).await;
            }
            None => {
                let watched = memory
                    .reclaims
                    .entry(lease.lease_key.clone())
                    .or_insert(Reclaim {
                        still_since: scan_time,
                        counter: lease.lease_counter,
                        moved: 0,
                    });
                if lease.lease_counter < watched.counter {
                    // A stale read (the scan is eventually consistent): counters only grow.
                } else if lease.lease_counter != watched.counter {
                    watched.moved += lease.lease_counter - watched.counter;
                    watched.counter = lease.lease_counter;
                    watched.still_since = scan_time;
                    if watched.moved >= DUPLICATE_ID_STEPS {
                        duplicate_worker_id(shared, lease);
                        memory.duplicate_id = true;
                        return false;
                    }
                } else if scan_time.duration_since(watched.still_since) >= settle {
                    memory.reclaims.remove(&lease.lease_key);
                    take(shared, tracker, lease, TakeReason::Unowned).await;
                }
            }
            Some(previous) => {
                let since = *memory
                    .handoffs
                    .entry(lease.lease_key.clone())
                    .or_insert(scan_time);
                if expired.contains(lease.lease_key.as_str()) {
                    // Nobody renewed it for a failover time: the previous owner dropped it
                    // when asked to hand it off, or stopped. Only one that still renews its
                    // other leases is taken for a worker that ignores hand-offs (Java KCL
                    // 2.x); a dead or unreachable one is not marked.
                    let alive = states
                        .iter()
                        .any(|s| s.owner.as_deref() == Some(previous.as_str()) && !s.expired);
                    tracing::warn!(
                        lease = %lease.lease_key,
                        previous_owner = %previous,
                        ignores_handoffs = alive,
                        "the previous owner stopped renewing the lease instead of handing it \
                         off; taking it{}",
                        if alive {
                            ", and stealing from that worker outright from now on (it renews \
                             its other leases: it ignores hand-offs, as Java KCL 2.x does)"
                        } else {
                            ""
                        }
                    );
                    if alive {
                        memory.no_handoff.insert(previous.clone());
                    }
                    memory.handoffs.remove(&lease.lease_key);
                    take(shared, tracker, lease, TakeReason::Expired).await;
                } else if scan_time.duration_since(since) >= shared.config.handoff_timeout() {
                    tracing::warn!(
                        lease = %lease.lease_key,
                        "graceful hand-off timed out; taking the lease"
                    );
                    memory.handoffs.remove(&lease.lease_key);
                    take(shared, tracker, lease, TakeReason::Expired).await;
                }
            }
        }
    }

    let decision = decide(&states, me, &shared.config.assignment());
    shared.stats.record_decision(&decision);
    let mut conflicted = false;
    for to_take in &decision.to_take {
        if held.contains(&to_take.lease_key) {
            continue;
        }
        let Some(lease) = by_key.get(to_take.lease_key.as_str()) else {
            continue;
        };
        match to_take.reason {
            TakeReason::Unowned | TakeReason::Expired => {
                conflicted |= take(shared, tracker, lease, to_take.reason).await == Took::Conflict;
            }
            TakeReason::Steal
                if lease
                    .lease_owner
                    .as_ref()
                    .is_some_and(|o| memory.no_handoff.contains(o)) =>
            {
                conflicted |= take(shared, tracker, lease, to_take.reason).await == Took::Conflict;
            }
            TakeReason::Steal => match steal(shared, lease).await {
                Took::Yes => {
                    memory.handoffs.insert(lease.lease_key.clone(), scan_time);
                }
                Took::Conflict => conflicted = true,
                Took::Failed => {}
            },
        }
    }
    conflicted
}

/// Another process renews `lease` under this worker's id.
fn duplicate_worker_id(shared: &Shared, lease: &Lease) {
    tracing::error!(
        worker = %shared.worker_id,
        lease = %lease.lease_key,
        "another running process uses this worker id: it renews a lease the table gives to \
         this id and this process does not hold; this worker takes no more leases (give every \
         process a unique worker id, then restart this one)"
    );
    shared.stats.duplicate_worker_id.inc();
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Took {
    Yes,
    Conflict,
    Failed,
}

/// A counter-fenced take; on success the lease is held and announced.
async fn take(
    shared: &Shared,
    tracker: &mut ExpiryTracker,
    lease: &Lease,
    reason: TakeReason,
) -> Took {
    let me = &*shared.worker_id;
    let sent_at = Instant::now();
    match shared.table.take(lease, me).await {
        Ok(WriteOutcome::Applied(taken)) => {
            tracker.record_write(&taken.lease_key, taken.lease_counter, sent_at);
            tracing::info!(
                lease = %taken.lease_key,
                ?reason,
                previous_owner = lease.lease_owner.as_deref().unwrap_or("-"),
                "lease taken"
            );
            shared.stats.takes.inc();
            shared.adopt(taken, sent_at);
            Took::Yes
        }
        Ok(WriteOutcome::ConditionFailed { .. }) => {
            shared.stats.take_conflicts.inc();
            tracing::debug!(lease = %lease.lease_key, "lease changed before our take");
            Took::Conflict
        }
        Err(e) => {
            tracing::warn!(lease = %lease.lease_key, error = %e, "lease take failed");
            Took::Failed
        }
    }
}

/// Starts a graceful hand-off from the lease's owner to this worker.
async fn steal(shared: &Shared, lease: &Lease) -> Took {
    let write = match lease.handoff_write(&shared.worker_id) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(lease = %lease.lease_key, error = %e, "cannot steal lease");
            return Took::Failed;
        }
    };
    match shared.table.apply(&write).await {
        Ok(WriteOutcome::Applied(_)) => {
            shared.stats.steals.inc();
            tracing::info!(
                lease = %lease.lease_key,
                from = lease.lease_owner.as_deref().unwrap_or("-"),
                "graceful hand-off started (steal)"
            );
            Took::Yes
        }
        Ok(WriteOutcome::ConditionFailed { .. }) => {
            shared.stats.take_conflicts.inc();
            Took::Conflict
        }
        Err(e) => {
            tracing::warn!(lease = %lease.lease_key, error = %e, "steal failed");
            Took::Failed
        }
    }
}
