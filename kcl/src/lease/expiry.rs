//! Deciding, on this worker's monotonic clock, which leases have expired.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::assignment::LeaseState;
use super::model::Lease;

/// Tracks when each lease's counter last changed, as seen by this worker's scans.
///
/// A lease is expired when its counter has not changed for longer than the failover time
/// (strictly longer, as the Java `Lease.isExpired`). Times are this worker's
/// [`Instant`]s, taken when a scan completes; clocks of other machines are never compared.
/// Like the Java `DynamoDBLeaseTaker.updateAllLeases`, a lease seen for the first time counts
/// as renewed at that scan if it has an owner and as never renewed (expired) if not, and a
/// lease that disappears from a scan is forgotten.
///
/// ```
/// use std::time::{Duration, Instant};
/// use kinesis_kcl::lease::{ExpiryTracker, ExtendedSequenceNumber, Lease};
///
/// let failover = Duration::from_secs(10);
/// let mut lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
/// lease.lease_owner = Some("worker-b".into());
///
/// let t0 = Instant::now();
/// let mut tracker = ExpiryTracker::new();
/// let states = tracker.observe(t0, [&lease], failover);
/// assert!(!states[0].expired); // first sight of an owned lease: treated as just renewed
///
/// // worker-b stops renewing: 11 s later the counter is unchanged.
/// let states = tracker.observe(t0 + Duration::from_secs(11), [&lease], failover);
/// assert!(states[0].expired);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ExpiryTracker {
    seen: HashMap<String, Seen>,
    /// When the latest scan completed.
    last_scan: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Seen {
    counter: u64,
    /// Whether the lease had an owner when last seen.
    owned: bool,
    /// When this worker saw the counter change; `None`: never renewed.
    last_change: Option<Instant>,
}

impl ExpiryTracker {
    /// An empty tracker (no lease seen yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a full table scan that completed at `scan_time` and returns the assignment
    /// input for it: each lease's key, owner, counter, and whether it is expired as of
    /// `scan_time`.
    ///
    /// The owner is `leaseOwner`: during a graceful hand-off that is the incoming owner, not
    /// the [actual owner](Lease::actual_owner) still finishing its work, so the lease counts
    /// towards the worker it is going to and nobody steals a second lease for the same gap.
    ///
    /// `leases` must be the whole table: leases missing from it are forgotten.
    pub fn observe<'a, I>(
        &mut self,
        scan_time: Instant,
        leases: I,
        failover: Duration,
    ) -> Vec<LeaseState>
    where
        I: IntoIterator<Item = &'a Lease>,
    {
        let mut next = HashMap::with_capacity(self.seen.len());
        let mut states = Vec::new();
        for lease in leases {
            let owner = lease.lease_owner.as_deref();
            let last_change = match self.seen.get(&lease.lease_key) {
                Some(prev) if prev.counter == lease.lease_counter => prev.last_change,
                Some(_) => Some(scan_time),
                None if owner.is_some() => Some(scan_time),
                None => None,
            };
            let expired =
                last_change.is_none_or(|t| scan_time.saturating_duration_since(t) > failover);
            states.push(LeaseState {
                lease_key: lease.lease_key.clone(),
                owner: owner.map(str::to_owned),
                counter: lease.lease_counter,
                expired,
                in_handoff: lease.checkpoint_owner.is_some(),
            });
            next.insert(
                lease.lease_key.clone(),
                Seen {
                    counter: lease.lease_counter,
                    owned: owner.is_some(),
                    last_change,
                },
            );
        }
        self.seen = next;
        self.last_scan = Some(scan_time);
        states
    }

    /// Records that this worker itself changed the counter of `lease_key` to `counter` at
    /// `at` (after a successful take, renew or update), so its own writes count as renewals.
    pub fn record_write(&mut self, lease_key: &str, counter: u64, at: Instant) {
        self.seen.insert(
            lease_key.to_owned(),
            Seen {
                counter,
                owned: true,
                last_change: Some(at),
            },
        );
    }

    /// The earliest moment at which an owned lease that was not expired at the latest scan
    /// will be, if its counter does not move before then: a scan just after it finds the
    /// lease expired. Leases already expired at the latest scan are not pending (a scan for
    /// them would find nothing new), so this is never before the latest scan. `None` when no
    /// owned lease is pending expiry.
    pub fn next_expiry(&self, failover: Duration) -> Option<Instant> {
        self.seen
            .values()
            .filter(|s| s.owned)
            .filter_map(|s| s.last_change)
            .map(|t| t + failover)
            .filter(|at| self.last_scan.is_none_or(|scan| *at >= scan))
            .min()
    }

    /// Whether `lease_key` is expired as of `now` (unknown leases are).
    pub fn is_expired(&self, lease_key: &str, now: Instant, failover: Duration) -> bool {
        self.seen
            .get(lease_key)
            .and_then(|s| s.last_change)
            .is_none_or(|t| now.saturating_duration_since(t) > failover)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sequence::ExtendedSequenceNumber;

    const F: Duration = Duration::from_secs(10);

    fn lease(key: &str, owner: Option<&str>, counter: u64) -> Lease {
        let mut l = Lease::new(key, ExtendedSequenceNumber::LATEST);
        l.lease_owner = owner.map(str::to_owned);
        l.lease_counter = counter;
        l
    }

    #[test]
    fn first_sight_owned_is_fresh_unowned_is_expired() {
        let t0 = Instant::now();
        let mut tr = ExpiryTracker::new();
        let s = tr.observe(t0, &[lease("a", Some("w"), 1), lease("b", None, 0)], F);
        assert!(!s[0].expired);
        assert!(s[1].expired);
        assert!(s[1].is_available());
    }

    #[test]
    fn expires_strictly_after_failover_without_counter_change() {
        let t0 = Instant::now();
        let mut tr = ExpiryTracker::new();
        let l = lease("a", Some("w"), 1);
        tr.observe(t0, [&l], F);
        assert!(
            !tr.observe(t0 + F, [&l], F)[0].expired,
            "exactly failover: not yet"
        );
        assert!(tr.observe(t0 + F + Duration::from_millis(1), [&l], F)[0].expired);
        // The counter moves: fresh again as of that scan.
        let renewed = lease("a", Some("w"), 2);
        let t1 = t0 + 2 * F;
        assert!(!tr.observe(t1, [&renewed], F)[0].expired);
        assert!(!tr.is_expired("a", t1 + F, F));
        assert!(tr.is_expired("a", t1 + F + Duration::from_nanos(1), F));
    }

    #[test]
    fn forgets_deleted_leases_and_counts_own_writes() {
        let t0 = Instant::now();
        let mut tr = ExpiryTracker::new();
        let l = lease("a", Some("w"), 1);
        tr.observe(t0, [&l], F);
        tr.observe(t0 + Duration::from_secs(1), std::iter::empty::<&Lease>(), F);
        assert!(tr.is_expired("a", t0, F), "forgotten leases are unknown");
        // Seen again unowned: never renewed.
        let unowned = lease("a", None, 5);
        assert!(tr.observe(t0 + Duration::from_secs(2), [&unowned], F)[0].expired);
        // We took it at counter 6.
        tr.record_write("a", 6, t0 + Duration::from_secs(3));
        let mine = lease("a", Some("me"), 6);
        assert!(!tr.observe(t0 + Duration::from_secs(4), [&mine], F)[0].expired);
    }

    #[test]
    fn reports_the_incoming_owner_during_a_handoff() {
        let mut l = lease("a", Some("next"), 1);
        l.checkpoint_owner = Some("current".into());
        let s = ExpiryTracker::new().observe(Instant::now(), [&l], F);
        assert_eq!(s[0].owner.as_deref(), Some("next"));
    }

    #[test]
    fn next_expiry_is_the_earliest_owned_deadline() {
        let t0 = Instant::now();
        let mut tr = ExpiryTracker::new();
        assert_eq!(tr.next_expiry(F), None);
        tr.observe(t0, &[lease("a", Some("w"), 1), lease("b", None, 0)], F);
        assert_eq!(tr.next_expiry(F), Some(t0 + F));
        let t1 = t0 + Duration::from_secs(1);
        tr.observe(t1, &[lease("a", Some("w"), 2), lease("c", Some("v"), 1)], F);
        assert_eq!(tr.next_expiry(F), Some(t1 + F));
    }

    #[test]
    fn a_lease_already_expired_is_not_pending_expiry() {
        // Used to be returned for ever: a dead worker's lease nobody takes (every live worker
        // at its limit) made the taker wake at a moment already past, scanning back to back.
        let t0 = Instant::now();
        let mut tr = ExpiryTracker::new();
        let dead = lease("a", Some("dead"), 1);
        tr.observe(t0, [&dead], F);
        let later = t0 + F + Duration::from_secs(1);
        assert!(tr.observe(later, [&dead], F)[0].expired);
        assert_eq!(tr.next_expiry(F), None);
        // A live lease beside it is still watched.
        let live = lease("b", Some("live"), 1);
        let t2 = later + Duration::from_secs(1);
        tr.observe(t2, [&dead, &live], F);
        assert_eq!(tr.next_expiry(F), Some(t2 + F));
    }
}
