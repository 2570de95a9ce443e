//! Property tests of [`decide`] beyond those of `assignment.rs` (which checks every invariant
//! on small fleets with `worker-N` ids and `shardId-N` keys, order independence under
//! reversal, and convergence of uncapped fleets deciding on fresh snapshots). Here:
//!
//! - arbitrary worker ids and lease keys (any Unicode, ids that are prefixes of one another,
//!   the empty id) and larger tables (up to 400 leases, 40 workers);
//! - independence from *any* permutation of the snapshot;
//! - a balanced, stable fleet never moves a lease, whatever the configuration;
//! - convergence with a `max_leases_for_worker` cap, with workers racing on one stale snapshot
//!   per round, and after arbitrary membership churn (joins, deaths, rejoins) — each ending in
//!   a fixed point with largest minus smallest count at most 1 (when uncapped), that the
//!   following rounds keep.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;

use kinesis_kcl::lease::{Assignment, AssignmentConfig, LeaseState, TakeReason, decide};
use proptest::prelude::*;

fn config(cap: Option<usize>, steal: usize) -> AssignmentConfig {
    AssignmentConfig {
        max_leases_for_worker: cap.and_then(NonZeroUsize::new),
        max_leases_to_steal_at_one_time: NonZeroUsize::new(steal).unwrap(),
    }
}

fn arb_config() -> impl Strategy<Value = AssignmentConfig> {
    (proptest::option::weighted(0.3, 1usize..=20), 1usize..=5)
        .prop_map(|(cap, steal)| config(cap, steal))
}

fn worker_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "w[0-9]{0,2}",
        "[a-c]{0,3}",
        "\\PC{0,8}",
        Just("worker-1".to_owned()),
        Just("worker-10".to_owned()),
    ]
}

fn lease_key() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..100_000).prop_map(|i| format!("shardId-{i:012}")),
        "\\PC{1,12}",
        "[a-z]{1,4}:shardId-[0-9]{1,3}",
    ]
}

/// A snapshot over arbitrary ids: (snapshot, worker ids that appear or may observe).
fn arb_snapshot(
    max_workers: usize,
    max_leases: usize,
) -> impl Strategy<Value = (Vec<LeaseState>, Vec<String>)> {
    (
        proptest::collection::btree_set(worker_id(), 1..=max_workers),
        proptest::collection::btree_set(lease_key(), 0..=max_leases),
    )
        .prop_flat_map(|(workers, keys)| {
            let workers: Vec<String> = workers.into_iter().collect();
            let n = workers.len();
            let leases = proptest::collection::vec(
                (
                    proptest::option::weighted(0.8, 0..n),
                    proptest::bool::weighted(0.2),
                    any::<u64>(),
                ),
                keys.len(),
            );
            (Just(workers), Just(keys), leases)
        })
        .prop_map(|(workers, keys, leases)| {
            let snapshot = keys
                .into_iter()
                .zip(leases)
                .map(|(key, (owner, expired, counter))| {
                    let owner = owner.map(|o| workers[o].as_str());
                    LeaseState::new(key, owner, counter, expired && owner.is_some())
                })
                .collect();
            (snapshot, workers)
        })
}

/// Checks one decision; returns the first violation.
fn check(
    snapshot: &[LeaseState],
    me: &str,
    config: &AssignmentConfig,
    d: &Assignment,
) -> Result<(), String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for lease in snapshot {
        if let (Some(owner), false) = (&lease.owner, lease.is_available()) {
            *counts.entry(owner).or_default() += 1;
        }
    }
    counts.entry(me).or_default();
    let held = counts[me];
    let available = snapshot.iter().filter(|l| l.is_available()).count();
    let uncapped = snapshot.len().div_ceil(counts.len());
    let target = config
        .max_leases_for_worker
        .map_or(uncapped, |cap| uncapped.min(cap.get()));
    if (
        d.total_leases,
        d.live_workers,
        d.held,
        d.available,
        d.target,
    ) != (snapshot.len(), counts.len(), held, available, target)
    {
        return Err(format!("figures {d:?}"));
    }
    if d.spillover != uncapped - target {
        return Err(format!("spillover {}", d.spillover));
    }
    if held + d.to_take.len() > target.max(held) {
        return Err(format!(
            "held {held} + takes {} > target {target}",
            d.to_take.len()
        ));
    }
    let needed = target.saturating_sub(held);
    let mut keys = BTreeSet::new();
    for take in &d.to_take {
        let lease = snapshot
            .iter()
            .find(|l| l.lease_key == take.lease_key)
            .ok_or_else(|| format!("unknown lease {:?}", take.lease_key))?;
        if !keys.insert(&take.lease_key) {
            return Err(format!("{:?} taken twice", take.lease_key));
        }
        if lease.owner.as_deref() == Some(me) && !lease.expired {
            return Err(format!("took its own live lease {:?}", take.lease_key));
        }
        if (take.expected_counter, &take.previous_owner) != (lease.counter, &lease.owner) {
            return Err(format!("stale expectation for {:?}", take.lease_key));
        }
        let reason = match (&lease.owner, lease.expired) {
            (None, _) => TakeReason::Unowned,
            (Some(_), true) => TakeReason::Expired,
            (Some(_), false) => TakeReason::Steal,
        };
        if take.reason != reason {
            return Err(format!("{:?} for {lease:?}", take.reason));
        }
    }
    let steals: Vec<_> = d.steals().collect();
    if available > 0 {
        if !steals.is_empty() || d.to_take.len() != needed.min(available) {
            return Err(format!(
                "{available} available, need {needed}, took {:?}",
                d.to_take
            ));
        }
    } else if let Some(first) = steals.first() {
        let victim = first.previous_owner.as_deref().unwrap();
        let most = counts
            .iter()
            .filter(|(w, _)| **w != me)
            .map(|(_, c)| *c)
            .max()
            .unwrap_or(0);
        if steals.len() > config.max_leases_to_steal_at_one_time.get()
            || steals
                .iter()
                .any(|s| s.previous_owner.as_deref() != Some(victim))
            || counts[victim] != most
            || counts[victim] - steals.len() < held + steals.len()
        {
            return Err(format!("bad steals {steals:?} with counts {counts:?}"));
        }
    }
    Ok(())
}

// --- fleet model ------------------------------------------------------------------------------

/// A lease table in memory: key → (owner, counter). A lease is expired for every worker when
/// its owner is not alive (a global clock), and a take is conditional on the counter.
#[derive(Clone, Debug)]
struct Table(BTreeMap<String, (Option<String>, u64)>);

impl Table {
    fn new(owners: &[Option<String>]) -> Self {
        Table(
            owners
                .iter()
                .enumerate()
                .map(|(i, owner)| (format!("shardId-{i:012}"), (owner.clone(), 0)))
                .collect(),
        )
    }

    fn snapshot(&self, alive: &BTreeSet<String>) -> Vec<LeaseState> {
        self.0
            .iter()
            .map(|(key, (owner, counter))| {
                let expired = owner.as_ref().is_some_and(|o| !alive.contains(o));
                LeaseState::new(key.clone(), owner.as_deref(), *counter, expired)
            })
            .collect()
    }

    /// One round: every alive worker, in id order, decides (on a fresh snapshot, or all on
    /// the snapshot taken at the start of the round when `racing`) and applies its takes.
    /// Checks every decision; returns the successful takes.
    fn round(
        &mut self,
        alive: &BTreeSet<String>,
        config: &AssignmentConfig,
        racing: bool,
    ) -> Result<usize, String> {
        let start = self.snapshot(alive);
        let mut moves = 0;
        for me in alive {
            let snapshot = if racing {
                start.clone()
            } else {
                self.snapshot(alive)
            };
            let d = decide(&snapshot, me, config);
            check(&snapshot, me, config, &d).map_err(|e| format!("{me}: {e}"))?;
            for take in d.to_take {
                let (owner, counter) = self.0.get_mut(&take.lease_key).unwrap();
                if *counter == take.expected_counter {
                    *owner = Some(me.clone());
                    *counter += 1;
                    moves += 1;
                }
            }
        }
        Ok(moves)
    }

    /// Counts of the alive workers (zeros included) and the leases none of them holds.
    fn counts(&self, alive: &BTreeSet<String>) -> (BTreeMap<String, usize>, usize) {
        let mut counts: BTreeMap<String, usize> = alive.iter().map(|w| (w.clone(), 0)).collect();
        let mut loose = 0;
        for (owner, _) in self.0.values() {
            match owner.as_ref().and_then(|o| counts.get_mut(o)) {
                Some(count) => *count += 1,
                None => loose += 1,
            }
        }
        (counts, loose)
    }

    /// Runs rounds until one moves nothing; returns how many moved something.
    fn settle(
        &mut self,
        alive: &BTreeSet<String>,
        config: &AssignmentConfig,
        racing: bool,
        limit: usize,
    ) -> Result<usize, String> {
        for round in 0..limit {
            if self.round(alive, config, racing)? == 0 {
                return Ok(round);
            }
        }
        Err(format!(
            "no fixed point within {limit} rounds: {:?}",
            self.counts(alive)
        ))
    }

    /// Asserts the fixed point is balanced (as far as the cap allows) and stays put.
    fn assert_settled(
        &mut self,
        alive: &BTreeSet<String>,
        config: &AssignmentConfig,
        racing: bool,
    ) -> Result<(), TestCaseError> {
        let (counts, loose) = self.counts(alive);
        let max = counts.values().copied().max().unwrap_or(0);
        let min = counts.values().copied().min().unwrap_or(0);
        let target = self.0.len().div_ceil(alive.len().max(1));
        match config.max_leases_for_worker {
            None => prop_assert!(loose == 0 && max - min <= 1, "{counts:?} loose {loose}"),
            Some(cap) => prop_assert!(
                min >= target.min(cap.get()) || (loose == 0 && max - min <= 1),
                "{counts:?} loose {loose} cap {cap}"
            ),
        }
        for _ in 0..3 {
            let moves = self
                .round(alive, config, racing)
                .map_err(TestCaseError::fail)?;
            prop_assert_eq!(moves, 0, "a settled fleet moved leases");
        }
        Ok(())
    }
}

fn workers(n: usize) -> BTreeSet<String> {
    (0..n).map(|w| format!("w{w}")).collect()
}

/// Initial owners: `None`, or worker `w{i}` (dead unless `i` < the alive count).
fn arb_owners(max: usize) -> impl Strategy<Value = Vec<Option<String>>> {
    proptest::collection::vec(proptest::option::weighted(0.7, 0usize..12), 0..max)
        .prop_map(|v| v.into_iter().map(|o| o.map(|o| format!("w{o}"))).collect())
}

#[derive(Clone, Debug)]
enum Event {
    Join(usize),
    Die(usize),
    Round,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => (0usize..10).prop_map(Event::Join),
        1 => (0usize..10).prop_map(Event::Die),
        3 => Just(Event::Round),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Every invariant holds for arbitrary ids and keys, for every worker and a newcomer.
    #[test]
    fn invariants_hold_with_arbitrary_ids(
        (snapshot, ids) in arb_snapshot(12, 60),
        config in arb_config(),
        newcomer in worker_id(),
    ) {
        for me in ids.iter().chain([&newcomer]) {
            let d = decide(&snapshot, me, &config);
            if let Err(e) = check(&snapshot, me, &config, &d) {
                return Err(TestCaseError::fail(format!("{me:?}: {e}\n{snapshot:#?}\n{d:#?}")));
            }
        }
    }

    /// The decision depends on the snapshot's contents, not its order.
    #[test]
    fn any_permutation_gives_the_same_decision(
        (snapshot, ids, shuffled) in arb_snapshot(12, 60).prop_flat_map(|(snapshot, ids)| {
            let shuffled = Just(snapshot.clone()).prop_shuffle();
            (Just(snapshot), Just(ids), shuffled)
        }),
        config in arb_config(),
        who in any::<prop::sample::Index>(),
    ) {
        let me = &ids[who.index(ids.len())];
        prop_assert_eq!(decide(&snapshot, me, &config), decide(&shuffled, me, &config));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    /// Larger tables and fleets.
    #[test]
    fn invariants_hold_on_large_tables(
        (snapshot, ids) in arb_snapshot(40, 400),
        config in arb_config(),
    ) {
        for me in &ids {
            let d = decide(&snapshot, me, &config);
            if let Err(e) = check(&snapshot, me, &config, &d) {
                return Err(TestCaseError::fail(format!("{me:?}: {e}")));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A fleet whose counts differ by at most one, with nothing free, never moves a lease,
    /// whatever the ids, counters and configuration.
    #[test]
    fn balanced_stable_fleets_never_move(
        ids in proptest::collection::btree_set(worker_id(), 1..20),
        base in 0usize..12,
        extra in any::<prop::sample::Index>(),
        counters in proptest::collection::vec(any::<u64>(), 1..300),
        config in arb_config(),
    ) {
        let ids: Vec<String> = ids.into_iter().collect();
        // The first `plus_one` workers hold base + 1 leases, the others base.
        let plus_one = extra.index(ids.len() + 1);
        let mut snapshot = Vec::new();
        for (w, id) in ids.iter().enumerate() {
            for _ in 0..base + usize::from(w < plus_one) {
                let n = snapshot.len();
                let counter = counters[n % counters.len()];
                snapshot.push(LeaseState::new(format!("lease-{n}"), Some(id), counter, false));
            }
        }
        for me in &ids {
            let d = decide(&snapshot, me, &config);
            prop_assert!(d.to_take.is_empty(), "{me:?} takes {:?}", d.to_take);
        }
    }

    /// Fleets with a cap converge to a fixed point where nobody is below the capped target
    /// while leases lie loose, and nobody took itself over the target.
    #[test]
    fn capped_fleets_converge(
        owners in arb_owners(60),
        alive in 1usize..=8,
        cap in 1usize..=10,
        steal in 1usize..=3,
        racing in any::<bool>(),
    ) {
        let alive = workers(alive);
        let config = config(Some(cap), steal);
        let mut table = Table::new(&owners);
        let (before, _) = table.counts(&alive);
        table.settle(&alive, &config, racing, 4 * owners.len() + 4).map_err(TestCaseError::fail)?;
        let target = owners.len().div_ceil(alive.len()).min(cap);
        let (after, _) = table.counts(&alive);
        for (worker, &count) in &after {
            prop_assert!(count <= before[worker].max(target), "{worker}: {count} > target {target}");
        }
        table.assert_settled(&alive, &config, racing)?;
    }

    /// Workers racing on one stale snapshot per round (conflicting takes fail their
    /// condition) still converge to a balanced fixed point.
    #[test]
    fn racing_fleets_converge(
        owners in arb_owners(60),
        alive in 1usize..=8,
        steal in 1usize..=3,
    ) {
        let alive = workers(alive);
        let config = config(None, steal);
        let mut table = Table::new(&owners);
        table.settle(&alive, &config, true, 4 * owners.len() + 4).map_err(TestCaseError::fail)?;
        table.assert_settled(&alive, &config, true)?;
    }

    /// After any sequence of joins, deaths and rounds, a fleet whose membership stops changing
    /// converges and stays balanced.
    #[test]
    fn fleets_converge_after_membership_churn(
        owners in arb_owners(50),
        first in 1usize..=4,
        events in proptest::collection::vec(event(), 0..30),
        steal in 1usize..=3,
        racing in any::<bool>(),
    ) {
        let config = config(None, steal);
        let mut alive = workers(first);
        let mut table = Table::new(&owners);
        for event in events {
            match event {
                Event::Join(w) => {
                    alive.insert(format!("w{w}"));
                }
                Event::Die(w) if alive.len() > 1 => {
                    alive.remove(&format!("w{w}"));
                }
                Event::Die(_) => {}
                Event::Round => {
                    table.round(&alive, &config, racing).map_err(TestCaseError::fail)?;
                }
            }
        }
        let rounds = table
            .settle(&alive, &config, racing, 4 * owners.len() + 4)
            .map_err(TestCaseError::fail)?;
        prop_assert!(rounds <= 2 * owners.len() + 2, "took {rounds} rounds");
        table.assert_settled(&alive, &config, racing)?;
    }
}
