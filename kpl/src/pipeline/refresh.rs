//! Map refresh: the shard map, when to list it again (at most once per
//! `shard_map_refresh_interval`, and after a failed listing 1 s doubling up to 30 s), the
//! listings running, and the records parked until a listing started after they landed arrives.
//!
//! It decides and holds; what the records parked here become once released (resolved, sent
//! again) is the pipeline's business.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::{JoinError, JoinSet};

use crate::Error;
use crate::clock::later;
use crate::pending::{Pending, Tried};
use crate::shard_map::{Scope, ShardMap, StreamId};

/// After a failed shard-map listing, the next waits this long, doubling up to
/// [`REFRESH_RETRY_MAX`] (the KPL's 1 s to 30 s).
const REFRESH_RETRY_MIN: Duration = Duration::from_secs(1);
const REFRESH_RETRY_MAX: Duration = Duration::from_secs(30);

/// How long to wait before the next map refresh after `failures` failed ones in a row: 1 s,
/// doubling up to 30 s.
fn refresh_retry_delay(failures: u32) -> Duration {
    REFRESH_RETRY_MIN
        .saturating_mul(1 << failures.min(5))
        .min(REFRESH_RETRY_MAX)
}

/// A finished shard-map listing: its number, scope and result.
pub(super) type Listing = (u64, Scope, Result<ShardMap, Error>);

/// User records stored in an aggregate, waiting for a shard map listed after they landed: to
/// learn the range of the shard that stored them (`stored`), or, landed on the wrong shard, to be
/// re-routed by a map that knows the new shards (`stored` is `None`).
pub(super) struct Parked {
    pub(super) records: Vec<Pending>,
    pub(super) stored: Option<StoredAt>,
    /// Released by the first listing numbered this or higher: one started after they landed.
    pub(super) after_refresh: u64,
    pub(super) retries: u32,
}

/// Where and when an aggregate was stored.
pub(super) struct StoredAt {
    pub(super) shard_id: String,
    pub(super) sequence_number: String,
    pub(super) started: Instant,
    pub(super) duration: Duration,
    /// The successful attempt, shared by every record the call stored.
    pub(super) succeeded: Arc<Tried>,
}

/// When the next listing may start, and of which scope. Plain state, time passed in.
struct Schedule {
    interval: Duration,
    /// Listings started so far (each gets the next number).
    started: u64,
    last: Option<Instant>,
    wanted: bool,
    /// The next listing must include closed shards.
    all_wanted: bool,
    /// Consecutive failed listings, and when the next may start.
    failures: u32,
    not_before: Option<Instant>,
}

impl Schedule {
    /// A schedule whose map was just listed at `now`.
    fn new(interval: Duration, now: Instant) -> Self {
        Self {
            interval,
            started: 0,
            last: Some(now),
            wanted: false,
            all_wanted: false,
            failures: 0,
            not_before: None,
        }
    }

    /// Whether a listing is wanted and may start at `now` (none running, the last long enough
    /// ago, a failed one's backoff waited out); if so it counts as started, numbered.
    fn start(&mut self, now: Instant, running: bool) -> Option<(u64, Scope)> {
        if !self.wanted || running {
            return None;
        }
        if self.not_before.is_some_and(|at| now < at) {
            return None;
        }
        if self
            .last
            .is_some_and(|last| now < later(last, self.interval))
        {
            return None;
        }
        self.wanted = false;
        self.last = Some(now);
        self.started += 1;
        let scope = if std::mem::take(&mut self.all_wanted) {
            Scope::All
        } else {
            Scope::Open
        };
        Some((self.started, scope))
    }

    fn succeeded(&mut self, now: Instant) {
        self.failures = 0;
        self.not_before = None;
        self.last = Some(now);
    }

    /// A listing failed: the next one waits 1 s, doubling up to 30 s while they keep failing.
    fn failed(&mut self, scope: Scope, now: Instant) {
        self.wanted = true;
        self.all_wanted |= scope == Scope::All;
        let delay = refresh_retry_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(later(now, delay));
    }

    /// When a wanted listing may start, if one is wanted and none is running.
    fn wake_at(&self, now: Instant, running: bool) -> Option<Instant> {
        if !self.wanted || running {
            return None;
        }
        let mut at = now;
        if let Some(last) = self.last {
            at = at.max(later(last, self.interval));
        }
        if let Some(not_before) = self.not_before {
            at = at.max(not_before);
        }
        Some(at)
    }
}

/// The shard map and keeping it fresh.
pub(super) struct MapRefresh {
    map: ShardMap,
    schedule: Schedule,
    listings: JoinSet<Listing>,
    parked: Vec<Parked>,
}

impl MapRefresh {
    /// Starts from `map`, listed just now; listed again at most once per `interval`.
    pub(super) fn new(map: ShardMap, interval: Duration, now: Instant) -> Self {
        Self {
            map,
            schedule: Schedule::new(interval, now),
            listings: JoinSet::new(),
            parked: Vec::new(),
        }
    }

    pub(super) fn map(&self) -> &ShardMap {
        &self.map
    }

    /// Takes a newly listed map (remembering the ranges of shards it no longer lists); returns
    /// whether it differs from the old one.
    pub(super) fn replace_map(&mut self, mut map: ShardMap) -> bool {
        map.remember(&self.map);
        let changed = map != self.map;
        self.map = map;
        changed
    }

    /// The map is stale: list it again as soon as allowed.
    pub(super) fn want(&mut self) {
        self.schedule.wanted = true;
    }

    /// List it again, closed shards included.
    pub(super) fn want_all(&mut self) {
        self.schedule.wanted = true;
        self.schedule.all_wanted = true;
    }

    /// Starts a ListShards listing if one is wanted and may start at `now`.
    pub(super) fn maybe_start(
        &mut self,
        now: Instant,
        client: &aws_sdk_kinesis::Client,
        stream: &StreamId,
    ) {
        let Some((number, scope)) = self.schedule.start(now, !self.listings.is_empty()) else {
            return;
        };
        let client = client.clone();
        let stream = stream.clone();
        self.listings.spawn(async move {
            let listed = ShardMap::fetch(&client, &stream, scope).await;
            (number, scope, listed)
        });
    }

    /// The next listing to finish (`None` at once if none is running).
    pub(super) async fn join_next(&mut self) -> Option<Result<Listing, JoinError>> {
        self.listings.join_next().await
    }

    /// A listing succeeded at `now` (the map is then taken with [`MapRefresh::replace_map`]).
    pub(super) fn succeeded(&mut self, now: Instant) {
        self.schedule.succeeded(now);
    }

    /// A listing of `scope` failed at `now`: it is tried again after a backoff.
    pub(super) fn failed(&mut self, scope: Scope, now: Instant) {
        self.schedule.failed(scope, now);
    }

    /// When the loop must wake up to start a wanted listing.
    pub(super) fn wake_at(&self, now: Instant) -> Option<Instant> {
        self.schedule.wake_at(now, !self.listings.is_empty())
    }

    /// Stops the listings still running (the pipeline is ending).
    pub(super) fn abort(&mut self) {
        self.listings.abort_all();
    }

    /// Holds `records` until a shard map listed from now on arrives.
    pub(super) fn park(&mut self, records: Vec<Pending>, stored: Option<StoredAt>, retries: u32) {
        self.want();
        self.parked.push(Parked {
            records,
            stored,
            after_refresh: self.schedule.started + 1,
            retries,
        });
    }

    /// Takes out every parked group (to look through them); what is kept goes back with
    /// [`MapRefresh::keep_parked`].
    pub(super) fn take_parked(&mut self) -> Vec<Parked> {
        std::mem::take(&mut self.parked)
    }

    pub(super) fn keep_parked(&mut self, parked: Parked) {
        self.parked.push(parked);
    }

    pub(super) fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The hash keys of every parked record.
    pub(super) fn parked_hash_keys(&self) -> impl Iterator<Item = u128> + '_ {
        self.parked
            .iter()
            .flat_map(|parked| parked.records.iter().map(|p| p.hash_key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(750);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_failing_map_refresh_waits_1_s_doubling_to_at_most_30_s() {
        let delays: Vec<u64> = (0..8).map(|n| refresh_retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(refresh_retry_delay(u32::MAX), REFRESH_RETRY_MAX);
    }

    #[test]
    fn nothing_starts_unless_wanted() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(INTERVAL, t0);
        assert_eq!(schedule.start(t0 + secs(10), false), None);
        assert_eq!(schedule.wake_at(t0 + secs(10), false), None);
    }

    #[test]
    fn a_wanted_listing_waits_out_the_interval_and_none_running() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(INTERVAL, t0);
        schedule.wanted = true;
        assert_eq!(schedule.wake_at(t0, false), Some(t0 + INTERVAL));
        assert_eq!(schedule.start(t0, false), None);
        assert_eq!(schedule.start(t0 + INTERVAL, true), None);
        assert_eq!(schedule.wake_at(t0 + INTERVAL, true), None);
        assert_eq!(schedule.start(t0 + INTERVAL, false), Some((1, Scope::Open)));
        // Started: no longer wanted.
        assert_eq!(schedule.start(t0 + secs(5), false), None);
    }

    #[test]
    fn failed_listings_back_off_1_s_doubling_and_a_success_resets_it() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(Duration::ZERO, t0);
        let mut now = t0;
        for expected in [1, 2, 4, 8, 16, 30, 30] {
            schedule.failed(Scope::Open, now);
            assert_eq!(schedule.wake_at(now, false), Some(now + secs(expected)));
            assert_eq!(
                schedule.start(now + secs(expected) - Duration::from_millis(1), false),
                None
            );
            now += secs(expected);
            assert!(schedule.start(now, false).is_some());
        }
        schedule.succeeded(now);
        schedule.failed(Scope::Open, now);
        assert_eq!(schedule.wake_at(now, false), Some(now + secs(1)));
    }

    #[test]
    fn a_failed_listing_of_every_shard_is_retried_as_one() {
        let t0 = Instant::now();
        let mut schedule = Schedule::new(Duration::ZERO, t0);
        schedule.failed(Scope::All, t0);
        assert_eq!(schedule.start(t0 + secs(1), false), Some((1, Scope::All)));
        schedule.wanted = true;
        assert_eq!(schedule.start(t0 + secs(2), false), Some((2, Scope::Open)));
    }

    #[test]
    fn parked_records_wait_for_a_listing_started_after_they_landed() {
        let t0 = Instant::now();
        let mut refresh = MapRefresh::new(ShardMap::default(), Duration::ZERO, t0);
        refresh.park(Vec::new(), None, 3);
        assert!(refresh.has_parked());
        // Listing 1 starts after the first group parked; the second parks while it runs.
        assert_eq!(refresh.schedule.start(t0, false), Some((1, Scope::Open)));
        refresh.park(Vec::new(), None, 4);
        let waiting: Vec<(u64, u32)> = refresh
            .take_parked()
            .iter()
            .map(|parked| (parked.after_refresh, parked.retries))
            .collect();
        assert_eq!(waiting, [(1, 3), (2, 4)]);
        assert!(!refresh.has_parked());
        // The second parking wanted another listing.
        assert_eq!(refresh.schedule.start(t0, false), Some((2, Scope::Open)));
    }
}
