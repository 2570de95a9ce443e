//! What the coordinator's two loops share: the table, this worker's identity and settings,
//! the held leases and the counters. The coordinator ([`super::LeaseCoordinator`]) owns it;
//! the renewer and the taker each get an `Arc` of it. Neither loop imports the coordinator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use super::held::{HeldLease, HoldTiming};
use crate::config::LeaseConfig;
use crate::lease::assignment::Assignment;
use crate::lease::model::Lease;
use crate::lease::table::LeaseTable;

/// Which leases this worker may take.
pub(crate) struct Consumable(Box<dyn Fn(&Lease) -> bool + Send + Sync>);

impl Consumable {
    pub(crate) fn new(accepts: impl Fn(&Lease) -> bool + Send + Sync + 'static) -> Self {
        Consumable(Box::new(accepts))
    }

    pub(crate) fn accepts(&self, lease: &Lease) -> bool {
        (self.0)(lease)
    }
}

impl std::fmt::Debug for Consumable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Consumable(..)")
    }
}

/// What the coordinator's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) table: LeaseTable,
    pub(crate) consumable: Consumable,
    pub(crate) worker_id: Arc<str>,
    pub(crate) config: LeaseConfig,
    pub(crate) timing: HoldTiming,
    held: std::sync::Mutex<BTreeMap<String, Arc<HeldLease>>>,
    acquired: mpsc::UnboundedSender<Arc<HeldLease>>,
    pub(crate) stats: Stats,
}

impl Shared {
    pub(crate) fn new(
        table: LeaseTable,
        consumable: Consumable,
        worker_id: Arc<str>,
        config: LeaseConfig,
        acquired: mpsc::UnboundedSender<Arc<HeldLease>>,
    ) -> Self {
        Shared {
            table,
            consumable,
            worker_id,
            timing: HoldTiming::for_failover(config.failover_time()),
            config,
            held: std::sync::Mutex::new(BTreeMap::new()),
            acquired,
            stats: Stats::default(),
        }
    }

    /// The leases held now (lost or released ones are left out even before they are
    /// forgotten).
    pub(crate) fn held(&self) -> Vec<Arc<HeldLease>> {
        self.lock_held()
            .values()
            .filter(|l| l.status().is_active())
            .cloned()
            .collect()
    }

    pub(crate) fn held_keys(&self) -> BTreeSet<String> {
        self.lock_held()
            .iter()
            .filter(|(_, l)| l.status().is_active())
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Holds a lease just taken (sent at `sent_at`) and announces it.
    pub(crate) fn adopt(&self, lease: Lease, sent_at: Instant) {
        let held = Arc::new(HeldLease::new(
            lease,
            Arc::clone(&self.worker_id),
            self.table.clone(),
            self.timing,
            sent_at,
        ));
        let mut map = self.lock_held();
        map.insert(held.lease_key().to_owned(), Arc::clone(&held));
        Self::report_held(&map);
        drop(map);
        // Nobody listening is fine: the lease is still held and renewed.
        let _ = self.acquired.send(held);
    }

    /// Drops leases that are lost or released from the held set.
    pub(crate) fn forget_inactive(&self) {
        let mut held = self.lock_held();
        held.retain(|_, l| l.status().is_active());
        Self::report_held(&held);
    }

    fn report_held(held: &BTreeMap<String, Arc<HeldLease>>) {
        metrics::gauge!(crate::metrics::LEASES_HELD).set(held.len() as f64);
    }

    fn lock_held(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<HeldLease>>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A counter that is also reported through the `metrics` facade.
#[derive(Debug)]
pub(crate) struct Counter {
    value: AtomicU64,
    metric: &'static str,
}

impl Counter {
    const fn new(metric: &'static str) -> Self {
        Counter {
            value: AtomicU64::new(0),
            metric,
        }
    }

    pub(crate) fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(self.metric).increment(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) taker_rounds: Counter,
    pub(crate) scans: Counter,
    pub(crate) renewals: Counter,
    pub(crate) takes: Counter,
    pub(crate) steals: Counter,
    pub(crate) take_conflicts: Counter,
    pub(crate) lost: Counter,
    pub(crate) duplicate_worker_id: Counter,
}

impl Default for Stats {
    fn default() -> Self {
        use crate::metrics as m;
        Stats {
            taker_rounds: Counter::new(m::LEASE_TAKER_ROUNDS),
            scans: Counter::new(m::LEASE_SCANS),
            renewals: Counter::new(m::LEASE_RENEWALS),
            takes: Counter::new(m::LEASE_TAKES),
            steals: Counter::new(m::LEASE_STEALS),
            take_conflicts: Counter::new(m::LEASE_TAKE_CONFLICTS),
            lost: Counter::new(m::LEASES_LOST),
            duplicate_worker_id: Counter::new(m::DUPLICATE_WORKER_ID),
        }
    }
}

impl Stats {
    pub(crate) fn record_decision(&self, decision: &Assignment) {
        metrics::gauge!(crate::metrics::LEASE_TARGET).set(decision.target as f64);
        metrics::gauge!(crate::metrics::LEASE_SPILLOVER).set(decision.spillover as f64);
    }

    pub(crate) fn snapshot(&self) -> CoordinatorStats {
        CoordinatorStats {
            taker_rounds: self.taker_rounds.get(),
            scans: self.scans.get(),
            renewals: self.renewals.get(),
            takes: self.takes.get(),
            steals: self.steals.get(),
            take_conflicts: self.take_conflicts.get(),
            lost: self.lost.get(),
            duplicate_worker_id: self.duplicate_worker_id.get() > 0,
        }
    }
}

/// Counts of what a [`LeaseCoordinator`](super::LeaseCoordinator) did since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CoordinatorStats {
    /// Completed taker rounds (each one scan and the takes it decided).
    pub taker_rounds: u64,
    /// Successful table scans.
    pub scans: u64,
    /// Renewal attempts.
    pub renewals: u64,
    /// Leases taken (unowned, expired, reclaimed, or at the end of a hand-off).
    pub takes: u64,
    /// Graceful hand-offs started towards this worker (steals).
    pub steals: u64,
    /// Takes and steals that lost a race (the condition failed).
    pub take_conflicts: u64,
    /// Leases lost (taken by another worker, or not renewed in time).
    pub lost: u64,
    /// Another running process uses this worker id (it renews leases the table gives to
    /// this id that this coordinator does not hold): taking stopped for good, to avoid a
    /// fight over every such lease. Logged as an error.
    pub duplicate_worker_id: bool,
}
