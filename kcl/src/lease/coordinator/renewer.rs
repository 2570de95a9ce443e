//! The renewal loop: every renew interval, renew each held lease (concurrently, within a
//! bound), and stop any lease whose local deadline passes without a successful write.
//!
//! A round's renewals are spread evenly over the first half of the interval, in lease-key
//! order, so that a worker holding many leases writes at a steady rate rather than in one
//! burst per interval (DynamoDB's per-partition write limits and on-demand burst capacity
//! see the rate). A lease keeps its place from round to round while the set held is stable,
//! so it is renewed every interval; when leases come or go, a lease's place moves by at most
//! half an interval, so two of its renewals are at most 1.5 intervals apart: half the
//! failover time at the default interval, within the 90 % for which a holder keeps a lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::shared::Shared;

/// Runs until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let interval = shared.config.renew_interval();
    let mut next_round = Instant::now() + interval;
    loop {
        // Wake for the next round, or earlier if a lease's local deadline comes first.
        let wake = next_wake(&shared, next_round);
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = Instant::now();
        if now >= next_round {
            next_round += interval;
            if next_round < now {
                // Fell behind (a long stall): do not renew in a burst.
                next_round = now + interval;
            }
            let round = now;
            if renew_all(&shared, round, &mut stop).await {
                return;
            }
        }
        expire_due(&shared);
    }
}

/// The earliest local deadline of the leases held, or `then` if that is sooner.
fn next_wake(shared: &Shared, then: Instant) -> Instant {
    shared
        .held()
        .iter()
        .map(|h| h.deadline())
        .min()
        .map_or(then, |d| d.min(then))
}

/// Stops every held lease whose local deadline has passed without a successful renewal.
fn expire_due(shared: &Shared) {
    let now = Instant::now();
    for lease in shared.held() {
        if lease.expire_if_due(now) {
            shared.stats.lost.inc();
        }
    }
    shared.forget_inactive();
}

/// Renews every held lease, at most `max_concurrent_renewals` at a time, spread over the
/// first half of the renew interval from `round` (see the module docs). Returns true if
/// `stop` turned true meanwhile (the renewals started are still awaited).
async fn renew_all(shared: &Arc<Shared>, round: Instant, stop: &mut watch::Receiver<bool>) -> bool {
    let permits = Arc::new(Semaphore::new(
        shared.config.max_concurrent_renewals().get(),
    ));
    let mut held = shared.held();
    held.sort_by(|a, b| a.lease_key().cmp(b.lease_key()));
    let spread = shared.config.renew_interval() / 2;
    let count = held.len();
    let mut stopped = false;
    let mut renewals = JoinSet::new();
    for (place, lease) in held.into_iter().enumerate() {
        let at = round + place_in_round(spread, place, count);
        // Deadlines keep being watched while the round is spread out.
        while Instant::now() < at && !stopped {
            tokio::select! {
                _ = tokio::time::sleep_until(next_wake(shared, at).into()) => expire_due(shared),
                _ = stop.wait_for(|s| *s) => stopped = true,
            }
        }
        if stopped {
            break;
        }
        let shared = Arc::clone(shared);
        let permits = Arc::clone(&permits);
        renewals.spawn(async move {
            // Never closed, so acquiring only waits.
            let _permit = permits.acquire_owned().await;
            let was_active = lease.status().is_active();
            lease.renew().await;
            shared.stats.renewals.inc();
            if was_active && !lease.status().is_active() {
                shared.stats.lost.inc();
            }
        });
    }
    while let Some(joined) = renewals.join_next().await {
        if let Err(e) = joined {
            tracing::error!(error = %e, "lease renewal task failed");
        }
    }
    stopped
}

/// When, after the round's start, the lease at `place` of `count` is renewed: evenly over
/// `spread`, the first at once.
fn place_in_round(spread: Duration, place: usize, count: usize) -> Duration {
    if count == 0 {
        return Duration::ZERO;
    }
    let nanos = spread.as_nanos() * place as u128 / count as u128;
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_spreads_its_renewals_evenly_over_the_spread() {
        let spread = Duration::from_millis(1000);
        let places: Vec<_> = (0..4).map(|p| place_in_round(spread, p, 4)).collect();
        assert_eq!(
            places,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
        assert_eq!(place_in_round(spread, 0, 0), Duration::ZERO);
        assert!(place_in_round(Duration::MAX, 9, 10) < Duration::MAX);
    }
}
