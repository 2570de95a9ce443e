//! The renewal loop: every renew interval, renew each held lease (concurrently, within a
//! bound), and stop any lease whose local deadline passes without a successful write.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::shared::Shared;

/// Runs until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let interval = shared.config.renew_interval();
    let mut next_round = Instant::now() + interval;
    loop {
        // Wake for the next round, or earlier if a lease's local deadline comes first.
        let wake = shared
            .held()
            .iter()
            .map(|h| h.deadline())
            .min()
            .map_or(next_round, |d| d.min(next_round));
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
            renew_all(&shared).await;
        }
        let now = Instant::now();
        for lease in shared.held() {
            if lease.expire_if_due(now) {
                shared.stats.lost.inc();
            }
        }
        shared.forget_inactive();
    }
}

/// Renews every held lease, at most `max_concurrent_renewals` at a time.
async fn renew_all(shared: &Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(
        shared.config.max_concurrent_renewals().get(),
    ));
    let mut renewals = JoinSet::new();
    for lease in shared.held() {
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
}
