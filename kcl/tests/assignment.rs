//! The assignment decision: invariants on every small case, targeted scenarios, fleet
//! simulations, and property tests.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use kinesis_kcl::lease::{
    Assignment, AssignmentConfig, ExpiryTracker, ExtendedSequenceNumber, Item, Lease, LeaseState,
    TakeReason, decide,
};
use proptest::prelude::*;

fn cfg(cap: Option<usize>, steal: usize) -> AssignmentConfig {
    AssignmentConfig {
        max_leases_for_worker: cap.map(|c| NonZeroUsize::new(c).unwrap()),
        max_leases_to_steal_at_one_time: NonZeroUsize::new(steal).unwrap(),
    }
}

fn st(key: &str, owner: Option<&str>, counter: u64, expired: bool) -> LeaseState {
    LeaseState::new(key, owner, counter, expired)
}

fn key(i: usize) -> String {
    format!("shardId-{i:012}")
}

/// Live lease counts per worker as `me` sees the snapshot (me included, possibly 0).
fn live_counts<'a>(snapshot: &'a [LeaseState], me: &'a str) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for l in snapshot {
        if let (Some(o), false) = (&l.owner, l.is_available()) {
            *counts.entry(o.as_str()).or_insert(0) += 1;
        }
    }
    counts.entry(me).or_insert(0);
    counts
}

/// Checks every invariant of one decision; returns a description of the first violation.
fn check(
    snapshot: &[LeaseState],
    me: &str,
    config: &AssignmentConfig,
    d: &Assignment,
) -> Result<(), String> {
    check_with(snapshot, me, config, d, true)
}

/// [`check`], optionally skipping the (costly) order-independence re-run.
fn check_with(
    snapshot: &[LeaseState],
    me: &str,
    config: &AssignmentConfig,
    d: &Assignment,
    determinism: bool,
) -> Result<(), String> {
    let by_key: BTreeMap<&str, &LeaseState> =
        snapshot.iter().map(|l| (l.lease_key.as_str(), l)).collect();
    let counts = live_counts(snapshot, me);
    let total = snapshot.len();
    let workers = counts.len();
    let held = counts[me];
    let available = snapshot.iter().filter(|l| l.is_available()).count();

    // The reported figures.
    if (d.total_leases, d.live_workers, d.held, d.available) != (total, workers, held, available) {
        return Err(format!("figures {d:?}"));
    }
    let uncapped = if total == 0 {
        0
    } else {
        total.div_ceil(workers)
    };
    let target = config
        .max_leases_for_worker
        .map_or(uncapped, |c| uncapped.min(c.get()));
    if d.target != target || d.spillover != uncapped - target {
        return Err(format!(
            "target {} / spillover {}, want {target}",
            d.target, d.spillover
        ));
    }

    // Never exceed the target by taking.
    if held + d.to_take.len() > target.max(held) {
        return Err(format!(
            "held {held} + {} > target {target}",
            d.to_take.len()
        ));
    }
    if held >= target && !d.to_take.is_empty() {
        return Err("took while at target".into());
    }
    let needed = target.saturating_sub(held);

    let mut seen = BTreeSet::new();
    for t in &d.to_take {
        let l = by_key
            .get(t.lease_key.as_str())
            .ok_or_else(|| format!("unknown key {}", t.lease_key))?;
        if !seen.insert(&t.lease_key) {
            return Err(format!("duplicate {}", t.lease_key));
        }
        if t.expected_counter != l.counter || t.previous_owner != l.owner {
            return Err(format!("stale expectation for {}", t.lease_key));
        }
        // Never take a lease this worker holds and considers live.
        if l.owner.as_deref() == Some(me) && !l.expired {
            return Err(format!("took own live lease {}", t.lease_key));
        }
        let want = match (&l.owner, l.expired) {
            (None, _) => TakeReason::Unowned,
            (Some(_), true) => TakeReason::Expired,
            (Some(_), false) => TakeReason::Steal,
        };
        if t.reason != want {
            return Err(format!("reason {:?} for {l:?}", t.reason));
        }
    }

    let steals: Vec<_> = d.steals().collect();
    if available > 0 {
        if !steals.is_empty() {
            return Err("stole while leases were available".into());
        }
        if d.to_take.len() != needed.min(available) {
            return Err(format!(
                "took {} of {available} available, needed {needed}",
                d.to_take.len()
            ));
        }
    } else if !steals.is_empty() {
        // Never steal more than the limit, from one most-loaded victim, and never leave the
        // victim below the thief or (when it was above target) below the target.
        if steals.len() > config.max_leases_to_steal_at_one_time.get() {
            return Err(format!("stole {} > limit", steals.len()));
        }
        let victim = steals[0].previous_owner.as_deref().unwrap();
        if steals
            .iter()
            .any(|t| t.previous_owner.as_deref() != Some(victim))
        {
            return Err("stole from several workers".into());
        }
        let most = counts
            .iter()
            .filter(|(w, _)| **w != me)
            .map(|(_, c)| *c)
            .max()
            .unwrap();
        let v = counts[victim];
        if v != most {
            return Err(format!("victim has {v}, most loaded has {most}"));
        }
        let (v_after, me_after) = (v - steals.len(), held + steals.len());
        if v_after < me_after {
            return Err(format!(
                "victim left at {v_after} below thief at {me_after}"
            ));
        }
        if v > target && v_after < target {
            return Err(format!("victim above target left at {v_after} < {target}"));
        }
        if v_after + 1 < target {
            return Err(format!("victim left at {v_after}, target {target}"));
        }
        if config.max_leases_for_worker.is_none() && v_after < total / workers {
            return Err(format!("victim left at {v_after} below floor share"));
        }
    } else if needed > 0 {
        // Not stealing must be justified: no victim above target, and none at target if we
        // need more than one.
        let most = counts
            .iter()
            .filter(|(w, _)| **w != me)
            .map(|(_, c)| *c)
            .max();
        if let Some(most) = most
            && (most > target || (most == target && needed > 1))
        {
            return Err(format!(
                "did not steal from worker with {most} (target {target}, need {needed})"
            ));
        }
    }

    // No ping-pong: a balanced fleet with nothing available moves nothing.
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    if available == 0 && max - min <= 1 && !d.to_take.is_empty() {
        return Err("moved a lease in a balanced fleet".into());
    }

    // Deterministic and independent of snapshot order.
    if determinism {
        let mut reversed = snapshot.to_vec();
        reversed.reverse();
        if decide(&reversed, me, config) != *d {
            return Err("not deterministic".into());
        }
    }
    Ok(())
}

fn check_all_observers(snapshot: &[LeaseState], workers: &[String], configs: &[AssignmentConfig]) {
    for (i, config) in configs.iter().enumerate() {
        for me in workers.iter().map(String::as_str).chain(["newcomer"]) {
            let d = decide(snapshot, me, config);
            // Order independence is checked under the first configuration only, for speed.
            if let Err(e) = check_with(snapshot, me, config, &d, i == 0) {
                panic!("{e}\nme={me} config={config:?}\nsnapshot={snapshot:#?}\ndecision={d:#?}");
            }
        }
    }
}

/// Every way to split `n` items into `parts` ordered counts.
fn compositions(n: usize, parts: usize, out: &mut Vec<Vec<usize>>, cur: &mut Vec<usize>) {
    if parts == 1 {
        cur.push(n);
        out.push(cur.clone());
        cur.pop();
        return;
    }
    for first in 0..=n {
        cur.push(first);
        compositions(n - first, parts - 1, out, cur);
        cur.pop();
    }
}

fn small_configs() -> Vec<AssignmentConfig> {
    vec![
        cfg(None, 1),
        cfg(None, 2),
        cfg(None, 3),
        cfg(Some(1), 1),
        cfg(Some(2), 2),
        cfg(Some(3), 1),
    ]
}

/// All distributions of up to 8 leases over up to 4 workers, each lease unowned, live, or
/// expired (per owner), seen by every worker and by a newcomer, under 6 configurations.
#[test]
fn exhaustive_small_cases_hold_every_invariant() {
    let configs = small_configs();
    let mut cases = 0usize;
    for workers in 1..=4usize {
        let names: Vec<String> = (0..workers).map(|w| format!("w{w}")).collect();
        // Categories: 0 = unowned, 1..=W live(w), W+1..=2W expired(w).
        for n in 0..=8usize {
            let mut comps = Vec::new();
            compositions(n, 1 + 2 * workers, &mut comps, &mut Vec::new());
            for comp in comps {
                let mut snapshot = Vec::with_capacity(n);
                for (cat, &count) in comp.iter().enumerate() {
                    for _ in 0..count {
                        let i = snapshot.len();
                        let (owner, expired) = match cat {
                            0 => (None, false),
                            c if c <= workers => (Some(names[c - 1].as_str()), false),
                            c => (Some(names[c - 1 - workers].as_str()), true),
                        };
                        snapshot.push(st(&key(i), owner, i as u64 * 3, expired));
                    }
                }
                check_all_observers(&snapshot, &names, &configs);
                cases += 1;
            }
        }
    }
    // Up to 8 leases over 1 + 2W categories: C(11,3) + C(13,5) + C(15,7) + C(17,9) cases.
    assert_eq!(cases, 165 + 1287 + 6435 + 24310);
}

// --- targeted cases -----------------------------------------------------------------------

#[test]
fn lone_worker_takes_everything() {
    let snapshot: Vec<_> = (0..5).map(|i| st(&key(i), None, 0, false)).collect();
    let d = decide(&snapshot, "a", &AssignmentConfig::default());
    assert_eq!(d.target, 5);
    assert_eq!(d.to_take.len(), 5);
    assert!(d.to_take.iter().all(|t| t.reason == TakeReason::Unowned));
}

#[test]
fn no_leases_no_work() {
    let d = decide(&[], "a", &AssignmentConfig::default());
    assert_eq!((d.target, d.live_workers, d.to_take.len()), (0, 1, 0));
}

#[test]
fn more_workers_than_leases_target_is_one() {
    let snapshot = vec![
        st(&key(0), Some("a"), 1, false),
        st(&key(1), Some("b"), 1, false),
    ];
    let d = decide(&snapshot, "c", &AssignmentConfig::default());
    assert_eq!(d.target, 1);
    // a and b hold exactly the target; c needs only one: no steal.
    assert!(d.is_empty());
}

#[test]
fn three_three_three_one_resolves_like_java() {
    // 10 leases, 4 workers, target 3: the worker with 1 needs 2 and steals 1 from a worker at
    // target (Java's rule b), ending at 3,3,2,2.
    let mut snapshot = Vec::new();
    for (w, n) in [("a", 3), ("b", 3), ("c", 3), ("d", 1)] {
        for _ in 0..n {
            snapshot.push(st(&key(snapshot.len()), Some(w), 0, false));
        }
    }
    let d = decide(&snapshot, "d", &cfg(None, 5));
    assert_eq!(d.target, 3);
    assert_eq!(d.steals().count(), 1);
    // Then 3,3,2,2 is balanced: nobody moves.
    let victim = d.to_take[0].previous_owner.clone().unwrap();
    let stolen = d.to_take[0].lease_key.clone();
    for l in &mut snapshot {
        if l.lease_key == stolen {
            l.owner = Some("d".into());
        }
    }
    for me in ["a", "b", "c", "d"] {
        assert!(
            decide(&snapshot, me, &cfg(None, 5)).is_empty(),
            "{me} moved (victim was {victim})"
        );
    }
}

#[test]
fn steals_only_from_the_most_loaded_and_respects_the_limit() {
    let mut snapshot = Vec::new();
    for (w, n) in [("a", 10), ("b", 6)] {
        for _ in 0..n {
            snapshot.push(st(&key(snapshot.len()), Some(w), 0, false));
        }
    }
    // 16 leases, 3 workers: target 6. c needs 6; a has 4 over target.
    for (limit, want) in [(1, 1), (2, 2), (3, 3), (10, 4)] {
        let d = decide(&snapshot, "c", &cfg(None, limit));
        assert_eq!(d.target, 6);
        assert_eq!(d.steals().count(), want, "limit {limit}");
        assert!(
            d.to_take
                .iter()
                .all(|t| t.previous_owner.as_deref() == Some("a"))
        );
    }
}

#[test]
fn expired_and_unowned_come_before_stealing() {
    let snapshot = vec![
        st(&key(0), Some("a"), 4, false),
        st(&key(1), Some("a"), 4, false),
        st(&key(2), Some("a"), 4, false),
        st(&key(3), Some("dead"), 9, true),
        st(&key(4), None, 0, false),
    ];
    // Live: a, me. Target ceil(5/2) = 3; me needs 3 but only 2 are available: take them, no
    // steal this round.
    let d = decide(&snapshot, "me", &cfg(None, 3));
    assert_eq!(d.to_take.len(), 2);
    assert_eq!(d.steals().count(), 0);
    let reasons: BTreeSet<_> = d
        .to_take
        .iter()
        .map(|t| format!("{:?}", t.reason))
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["Expired".to_string(), "Unowned".to_string()])
    );
}

#[test]
fn own_expired_lease_is_retaken_but_own_live_lease_never() {
    let snapshot = vec![
        st(&key(0), Some("me"), 3, true),
        st(&key(1), Some("me"), 3, false),
    ];
    let d = decide(&snapshot, "me", &AssignmentConfig::default());
    assert_eq!(d.held, 1);
    assert_eq!(d.to_take.len(), 1);
    assert_eq!(d.to_take[0].lease_key, key(0));
    assert_eq!(d.to_take[0].reason, TakeReason::Expired);
}

#[test]
fn cap_limits_target_and_reports_spillover() {
    let snapshot: Vec<_> = (0..32).map(|i| st(&key(i), None, 0, false)).collect();
    let d = decide(&snapshot, "a", &cfg(Some(5), 1));
    assert_eq!((d.target, d.spillover, d.to_take.len()), (5, 27, 5));
}

#[test]
fn competing_workers_spread_over_expired_leases() {
    // 16 expired leases of a dead worker, 8 survivors who each need 2: their first choices
    // should mostly differ.
    let snapshot: Vec<_> = (0..16)
        .map(|i| st(&key(i), Some("dead"), 1, true))
        .collect();
    let mut firsts = BTreeSet::new();
    for w in 0..8 {
        let d = decide(
            &snapshot,
            &format!("survivor-{w}"),
            &AssignmentConfig::default(),
        );
        assert_eq!(d.target, 16);
        firsts.insert(d.to_take[0].lease_key.clone());
    }
    assert!(
        firsts.len() >= 5,
        "first picks collide too much: {firsts:?}"
    );
}

// --- fleet simulations ----------------------------------------------------------------------

/// A fleet sharing one in-memory lease table. Each round (one taker period) every alive
/// worker renews the leases it owns, then every alive worker scans, decides and applies its
/// takes as conditional writes, in worker-id order.
struct Fleet {
    table: BTreeMap<String, Item>,
    workers: BTreeMap<String, Worker>,
    config: AssignmentConfig,
    failover: Duration,
    period: Duration,
    now: Instant,
    /// Scan everything first, then apply (every worker decides on a stale snapshot).
    racing: bool,
}

struct Worker {
    alive: bool,
    tracker: ExpiryTracker,
}

impl Fleet {
    fn new(leases: usize, config: AssignmentConfig, racing: bool) -> Self {
        let table = (0..leases)
            .map(|i| {
                let lease = Lease::new(key(i), ExtendedSequenceNumber::TRIM_HORIZON);
                (key(i), lease.to_item().unwrap())
            })
            .collect();
        let failover = Duration::from_secs(10);
        Fleet {
            table,
            workers: BTreeMap::new(),
            config,
            failover,
            period: failover / 3,
            now: Instant::now(),
            racing,
        }
    }

    fn join(&mut self, id: &str) {
        self.workers.insert(
            id.to_owned(),
            Worker {
                alive: true,
                tracker: ExpiryTracker::new(),
            },
        );
    }

    fn kill(&mut self, id: &str) {
        self.workers.get_mut(id).unwrap().alive = false;
    }

    fn scan(&self) -> Vec<Lease> {
        self.table
            .values()
            .map(|i| Lease::from_item(i).unwrap())
            .collect()
    }

    /// One round; returns the number of successful takes.
    fn round(&mut self) -> usize {
        self.now += self.period;
        let now = self.now;
        let alive: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| w.alive)
            .map(|(id, _)| id.clone())
            .collect();

        // Renewals.
        for item in self.table.values_mut() {
            let lease = Lease::from_item(item).unwrap();
            if let Some(owner) = &lease.lease_owner
                && alive.contains(owner)
            {
                let w = lease.renew_write().unwrap();
                assert!(w.conditions_hold(Some(item)));
                w.apply_to(item).unwrap();
            }
        }

        // Takers.
        let stale: BTreeMap<String, Vec<Lease>> = if self.racing {
            alive.iter().map(|id| (id.clone(), self.scan())).collect()
        } else {
            BTreeMap::new()
        };
        let mut moves = 0;
        for id in &alive {
            let leases = if self.racing {
                stale[id].clone()
            } else {
                self.scan()
            };
            let worker = self.workers.get_mut(id).unwrap();
            let states = worker.tracker.observe(now, &leases, self.failover);
            let decision = decide(&states, id, &self.config);
            for t in decision.to_take {
                let seen = leases.iter().find(|l| l.lease_key == t.lease_key).unwrap();
                assert_eq!(seen.lease_counter, t.expected_counter);
                let write = seen.take_write(id).unwrap();
                let item = self.table.get_mut(&t.lease_key).unwrap();
                if write.conditions_hold(Some(item)) {
                    write.apply_to(item).unwrap();
                    worker
                        .tracker
                        .record_write(&t.lease_key, t.expected_counter + 1, now);
                    moves += 1;
                }
            }
        }
        moves
    }

    /// Lease counts of alive workers (zeros included) and leases not held by an alive worker.
    fn counts(&self) -> (BTreeMap<String, usize>, usize) {
        let mut counts: BTreeMap<String, usize> = self
            .workers
            .iter()
            .filter(|(_, w)| w.alive)
            .map(|(id, _)| (id.clone(), 0))
            .collect();
        let mut orphans = 0;
        for lease in self.scan() {
            match lease.lease_owner.as_ref().and_then(|o| counts.get_mut(o)) {
                Some(c) => *c += 1,
                None => orphans += 1,
            }
        }
        (counts, orphans)
    }

    fn balanced(&self) -> bool {
        let (counts, orphans) = self.counts();
        let max = counts.values().max().copied().unwrap_or(0);
        let min = counts.values().min().copied().unwrap_or(0);
        orphans == 0 && max - min <= 1
    }

    /// Runs rounds until balanced; returns how many it took.
    fn rounds_until_balanced(&mut self, limit: usize) -> usize {
        for r in 1..=limit {
            self.round();
            if self.balanced() {
                return r;
            }
        }
        panic!("not balanced after {limit} rounds: {:?}", self.counts());
    }

    fn assert_stable(&mut self, rounds: usize) {
        for r in 0..rounds {
            let moves = self.round();
            assert_eq!(
                moves, 0,
                "round {r} of a balanced fleet moved {moves} leases"
            );
        }
        assert!(self.balanced());
    }
}

fn scale_out_then_failure(config: AssignmentConfig, racing: bool, join_rounds: usize) {
    let mut fleet = Fleet::new(32, config, racing);
    fleet.join("w0");
    assert_eq!(
        fleet.round(),
        32,
        "a lone worker takes every lease in one round"
    );
    assert_eq!(fleet.counts().0["w0"], 32);

    for w in ["w1", "w2", "w3"] {
        fleet.join(w);
    }
    let took = fleet.rounds_until_balanced(join_rounds);
    assert!(took <= join_rounds);
    assert!(fleet.counts().0.values().all(|&c| c == 8));
    fleet.assert_stable(10);

    // w3 dies: its 8 leases expire (counter unchanged for > failover on the survivors'
    // clocks: 4 taker periods of failover/3) and are redistributed.
    fleet.kill("w3");
    let took = fleet.rounds_until_balanced(6);
    assert!(took >= 4, "leases moved before they expired (round {took})");
    let (counts, _) = fleet.counts();
    let mut sizes: Vec<_> = counts.values().copied().collect();
    sizes.sort();
    assert_eq!(sizes, [10, 11, 11]);
    fleet.assert_stable(10);
}

#[test]
fn simulation_scale_out_balances_within_3_rounds_with_steal_limit_3() {
    // Each newcomer needs 8 leases from w0: 3 + 3 + 2 per round.
    scale_out_then_failure(cfg(None, 3), false, 3);
}

#[test]
fn simulation_scale_out_with_java_default_steal_limit() {
    // One steal per worker per round: 8 rounds for each newcomer to reach 8.
    scale_out_then_failure(AssignmentConfig::default(), false, 8);
}

#[test]
fn simulation_racing_workers_on_stale_snapshots() {
    // Everyone decides on the same start-of-round scan; conflicting takes fail their
    // conditions, and the fleet still converges and then stays put.
    scale_out_then_failure(cfg(None, 3), true, 4);
    scale_out_then_failure(AssignmentConfig::default(), true, 9);
}

#[test]
fn simulation_many_workers_and_uneven_counts() {
    for (leases, workers, steal) in [(100, 10, 2), (50, 7, 1), (4, 10, 1), (33, 4, 4), (1, 3, 1)] {
        let mut fleet = Fleet::new(leases, cfg(None, steal), false);
        fleet.join("w00");
        fleet.round();
        for w in 1..workers {
            fleet.join(&format!("w{w:02}"));
        }
        fleet.rounds_until_balanced(leases + 2);
        fleet.assert_stable(10);
        let (counts, _) = fleet.counts();
        let expected_max = leases.div_ceil(workers);
        assert!(counts.values().all(|&c| c <= expected_max), "{counts:?}");
    }
}

#[test]
fn simulation_cap_leaves_spillover_unowned() {
    let mut fleet = Fleet::new(32, cfg(Some(5), 1), false);
    for w in ["w0", "w1", "w2", "w3"] {
        fleet.join(w);
    }
    fleet.round();
    let (counts, orphans) = fleet.counts();
    assert!(counts.values().all(|&c| c == 5), "{counts:?}");
    assert_eq!(orphans, 12);
    for _ in 0..10 {
        assert_eq!(fleet.round(), 0);
    }
}

// --- convergence over small cases, and property tests -----------------------------------------

/// A global-view fleet: a lease is expired for everyone iff its owner is not alive.
/// Workers act in id order, each on a fresh view. Returns (rounds to reach a fixed point,
/// final counts, unowned-or-dead-owned leases).
fn converge(
    owners: &[Option<String>],
    alive: &[String],
    config: &AssignmentConfig,
    limit: usize,
    check_each: bool,
) -> (usize, BTreeMap<String, usize>, usize) {
    let mut leases: Vec<(String, Option<String>, u64)> = owners
        .iter()
        .enumerate()
        .map(|(i, o)| (key(i), o.clone(), 0))
        .collect();
    let snapshot = |leases: &[(String, Option<String>, u64)]| -> Vec<LeaseState> {
        leases
            .iter()
            .map(|(k, o, c)| {
                let expired = o.as_ref().is_some_and(|o| !alive.contains(o));
                LeaseState::new(k.clone(), o.as_deref(), *c, expired)
            })
            .collect()
    };
    for round in 1..=limit {
        let mut moves = 0;
        for me in alive {
            let snap = snapshot(&leases);
            let d = decide(&snap, me, config);
            if check_each {
                check_with(&snap, me, config, &d, false).unwrap();
            }
            for t in d.to_take {
                let l = leases.iter_mut().find(|l| l.0 == t.lease_key).unwrap();
                if l.2 == t.expected_counter {
                    l.1 = Some(me.clone());
                    l.2 += 1;
                    moves += 1;
                }
            }
        }
        if moves == 0 {
            let mut counts: BTreeMap<String, usize> =
                alive.iter().map(|w| (w.clone(), 0)).collect();
            let mut loose = 0;
            for (_, o, _) in &leases {
                match o.as_ref().and_then(|o| counts.get_mut(o)) {
                    Some(c) => *c += 1,
                    None => loose += 1,
                }
            }
            return (round - 1, counts, loose);
        }
    }
    panic!("no fixed point within {limit} rounds");
}

fn assert_balanced_fixed_point(
    counts: &BTreeMap<String, usize>,
    loose: usize,
    total: usize,
    config: &AssignmentConfig,
) {
    let max = *counts.values().max().unwrap();
    let min = *counts.values().min().unwrap();
    match config.max_leases_for_worker {
        None => {
            assert_eq!(loose, 0, "{counts:?}");
            assert!(max - min <= 1, "{counts:?}");
        }
        Some(cap) => {
            let cap = cap.get();
            // Everyone is at its capped target, or everything is held and balanced.
            let target = total.div_ceil(counts.len()).min(cap);
            assert!(
                min >= target || (loose == 0 && max - min <= 1),
                "{counts:?} loose={loose}"
            );
        }
    }
}

#[test]
fn every_small_case_converges_to_a_balanced_fixed_point() {
    let mut worst = 0;
    for workers in 1..=4usize {
        let alive: Vec<String> = (0..workers).map(|w| format!("w{w}")).collect();
        for n in 0..=8usize {
            // Categories: unowned, held by a dead worker, held by alive worker w.
            let mut comps = Vec::new();
            compositions(n, 2 + workers, &mut comps, &mut Vec::new());
            for comp in comps {
                let mut owners = Vec::new();
                for (cat, &count) in comp.iter().enumerate() {
                    for _ in 0..count {
                        owners.push(match cat {
                            0 => None,
                            1 => Some("dead".to_owned()),
                            c => Some(alive[c - 2].clone()),
                        });
                    }
                }
                for config in [cfg(None, 1), cfg(None, 2)] {
                    let (rounds, counts, loose) = converge(&owners, &alive, &config, 20, false);
                    assert_balanced_fixed_point(&counts, loose, n, &config);
                    worst = worst.max(rounds);
                }
            }
        }
    }
    // The slowest case: all 8 leases on one of two workers with one steal per round, so the
    // other needs 4 rounds to reach its 4.
    assert_eq!(worst, 4, "worst case took {worst} rounds");
}

fn arb_snapshot() -> impl Strategy<Value = (Vec<LeaseState>, Vec<String>)> {
    (1usize..=8, 0usize..=48).prop_flat_map(|(workers, leases)| {
        let names: Vec<String> = (0..workers).map(|w| format!("worker-{w}")).collect();
        let lease = (
            prop::option::weighted(0.8, 0..workers),
            any::<bool>(),
            0u64..1000,
        );
        (Just(names), prop::collection::vec(lease, leases)).prop_map(|(names, ls)| {
            let snapshot = ls
                .into_iter()
                .enumerate()
                .map(|(i, (owner, expired, counter))| {
                    LeaseState::new(
                        key(i),
                        owner.map(|o| names[o].as_str()),
                        counter,
                        expired && owner.is_some(),
                    )
                })
                .collect();
            (snapshot, names)
        })
    })
}

fn arb_config() -> impl Strategy<Value = AssignmentConfig> {
    (prop::option::weighted(0.3, 1usize..=12), 1usize..=4).prop_map(|(cap, steal)| cfg(cap, steal))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Never exceeds the target by taking, never takes its own live lease, never steals more
    /// than the limit or leaves the victim below the thief/target, takes what it can when
    /// leases are free, and is deterministic — for any snapshot, observer and configuration.
    #[test]
    fn decision_invariants((snapshot, names) in arb_snapshot(), config in arb_config(), who in 0usize..9) {
        let me = names.get(who).map_or("newcomer", String::as_str);
        let d = decide(&snapshot, me, &config);
        if let Err(e) = check(&snapshot, me, &config, &d) {
            return Err(TestCaseError::fail(e));
        }
    }

    /// Any initial ownership (some leases unowned or held by dead workers) converges to a
    /// balanced fixed point, and stays there.
    #[test]
    fn fleet_converges(
        owners in prop::collection::vec(prop::option::of(0usize..10), 0..40),
        alive_count in 1usize..=8,
        steal in 1usize..=3,
    ) {
        let alive: Vec<String> = (0..alive_count).map(|w| format!("w{w}")).collect();
        // Owner indexes >= alive_count are dead workers.
        let owners: Vec<Option<String>> = owners.into_iter().map(|o| o.map(|o| format!("w{o}"))).collect();
        let config = cfg(None, steal);
        let (rounds, counts, loose) = converge(&owners, &alive, &config, 60, true);
        assert_balanced_fixed_point(&counts, loose, owners.len(), &config);
        // Loose bound: each round every short worker gains at least one lease.
        prop_assert!(rounds <= owners.len() + 1, "took {} rounds", rounds);
    }
}

/// Used to pick the same lease every scan until its hand-off ended: a lease already being
/// handed over (its `checkpointOwner` set) was a steal candidate again.
#[test]
fn a_lease_in_a_handoff_is_not_stolen_again() {
    // `t` holds 2 leases, one of them still being handed over to it; `u` holds 1; the
    // observer none: it steals one of `t`'s, and never the one in hand-off, whatever its id
    // (its id decides the spread order among candidates).
    let snapshot = vec![
        st(&key(0), Some("t"), 1, false).in_handoff(true),
        st(&key(1), Some("t"), 1, false),
        st(&key(2), Some("u"), 1, false),
    ];
    for n in 0..20 {
        let me = format!("worker-{n}");
        let decision = decide(&snapshot, &me, &cfg(None, 1));
        assert_eq!(
            decision.to_take.len(),
            1,
            "{me}: a steal is due: {decision:?}"
        );
        assert_eq!(
            decision.to_take[0].lease_key,
            key(1),
            "{me} picked the lease in hand-off"
        );
    }
}
