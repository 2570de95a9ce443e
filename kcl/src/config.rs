//! Lease coordination settings.

use std::num::NonZeroUsize;
use std::time::Duration;

use crate::error::ConfigError;
use crate::lease::AssignmentConfig;

/// Default failover time: 10 000 ms, the Java KCL's `failoverTimeMillis` default.
pub(crate) const DEFAULT_FAILOVER_TIME: Duration = Duration::from_millis(10_000);

/// Default graceful hand-off timeout: 30 000 ms, the Java KCL 3.x
/// `gracefulLeaseHandoffTimeoutMillis` default.
pub(crate) const DEFAULT_HANDOFF_TIMEOUT: Duration = Duration::from_millis(30_000);

/// How leases are held, renewed, taken and balanced.
///
/// Build one with [`LeaseConfig::builder`], or use [`LeaseConfig::default`] for the Java KCL
/// defaults:
///
/// ```
/// use std::time::Duration;
/// use kinesis_kcl::LeaseConfig;
///
/// let config = LeaseConfig::builder()
///     .failover_time(Duration::from_secs(30))
///     .max_leases_to_steal_at_one_time(2)
///     .build()?;
/// assert_eq!(config.renew_interval(), Duration::from_secs(10)); // failover / 3
/// assert_eq!(config.max_leases_for_worker(), None); // unlimited
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    failover_time: Duration,
    renew_interval: Duration,
    taker_interval: Duration,
    handoff_timeout: Duration,
    max_leases_for_worker: Option<NonZeroUsize>,
    max_leases_to_steal_at_one_time: NonZeroUsize,
    max_concurrent_renewals: NonZeroUsize,
}

/// The Java KCL's `maxLeaseRenewalThreads` default.
const DEFAULT_MAX_CONCURRENT_RENEWALS: NonZeroUsize = NonZeroUsize::new(20).unwrap();

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            failover_time: DEFAULT_FAILOVER_TIME,
            renew_interval: DEFAULT_FAILOVER_TIME / 3,
            taker_interval: DEFAULT_FAILOVER_TIME / 10,
            handoff_timeout: DEFAULT_HANDOFF_TIMEOUT,
            max_leases_for_worker: None,
            max_leases_to_steal_at_one_time: NonZeroUsize::MIN,
            max_concurrent_renewals: DEFAULT_MAX_CONCURRENT_RENEWALS,
        }
    }
}

impl LeaseConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> LeaseConfigBuilder {
        LeaseConfigBuilder::default()
    }

    /// How long a lease's counter may stay unchanged, as seen on a worker's own clock,
    /// before that worker considers the lease expired and takes it.
    ///
    /// Default 10 000 ms, equal to the Java KCL's `failoverTimeMillis`. A Java worker and ours
    /// sharing a table should use the same value.
    pub fn failover_time(&self) -> Duration {
        self.failover_time
    }

    /// How often the holder renews (heartbeats) its leases.
    ///
    /// Default `failover_time / 3` (3 333 ms at the default failover), so two renewals can be
    /// lost before a lease expires. At most 45 % of `failover_time`: a holder keeps a lease
    /// for 90 % of the failover time after its last successful write, and one renewal may
    /// fail. Each round's renewals are spread evenly over the first half of the interval
    /// (the Java KCL renews them all at the round's start), so a worker holding many leases
    /// writes at a steady rate. The Java KCL renews every `failover / 3 - epsilon`
    /// (`epsilonMillis` = 25 ms by default, so 3 308 ms); the difference does not matter for
    /// interoperation.
    pub fn renew_interval(&self) -> Duration {
        self.renew_interval
    }

    /// How often a worker scans the table and runs the assignment.
    ///
    /// Default `failover_time / 10` (1 000 ms at the default failover). **This differs from
    /// the Java KCL**, which scans every `2 × (failover + epsilon)` (20 050 ms): there a dead
    /// worker's shards can sit idle for up to ~30 s, and balancing after scale-out takes one
    /// 20 s round per stolen lease.
    ///
    /// Expiry is judged on this worker's clock from the scan that first saw a lease's
    /// counter unchanged, so the last renewal of a dead worker is noticed up to one period
    /// late; the taker also wakes up for a scan right when the earliest lease it watches is
    /// due to expire, instead of waiting for the next period. A killed worker's leases are
    /// therefore taken at most `failover + period` (+ one scan and one write) after its last
    /// renewal: 1.1 × failover at this default.
    ///
    /// Cost: one strongly consistent `Scan` per worker per period — 60 per worker per minute
    /// at the default, each costing 1 read unit per 4 KB of lease table (a lease item is
    /// 200–400 bytes, so about 1 RCU per 10–20 leases). Renewals dominate anyway: 18 writes
    /// per lease per minute (every `failover / 3`), as in Java. For lease tables of thousands
    /// of leases, raise this (the bound above grows with it).
    pub fn taker_interval(&self) -> Duration {
        self.taker_interval
    }

    /// How long a worker that started a graceful hand-off (a steal) waits for the current
    /// owner to checkpoint and release the lease before it takes the lease anyway.
    ///
    /// Default 30 000 ms, equal to the Java KCL 3.x `gracefulLeaseHandoffTimeoutMillis`. A
    /// current owner that dies during the hand-off stops renewing, and its lease is taken on
    /// expiry after `failover_time`, whichever comes first.
    pub fn handoff_timeout(&self) -> Duration {
        self.handoff_timeout
    }

    /// Most leases one worker holds; `None` is unlimited.
    ///
    /// Default unlimited, equal to the Java KCL's `maxLeasesForWorker` default
    /// (`Integer.MAX_VALUE`). Setting it too low can leave shards unprocessed.
    pub fn max_leases_for_worker(&self) -> Option<NonZeroUsize> {
        self.max_leases_for_worker
    }

    /// Most leases one worker steals from a more loaded worker per assignment round.
    ///
    /// Default 1, equal to the Java KCL's `maxLeasesToStealAtOneTime` default. Higher values
    /// balance faster after scale-out at the cost of more lease churn.
    pub fn max_leases_to_steal_at_one_time(&self) -> NonZeroUsize {
        self.max_leases_to_steal_at_one_time
    }

    /// Most renewals in flight at once: a worker holding many leases renews them in waves
    /// of this size rather than in one burst every renew interval.
    ///
    /// Default 20, the Java KCL's `maxLeaseRenewalThreads` setting (its renewal pool, having
    /// an unbounded queue, in practice runs only its 5 core threads at once). With DynamoDB
    /// writes of ~10 ms, 20 renew ~2 000 leases per second, far more than one worker holds.
    pub fn max_concurrent_renewals(&self) -> NonZeroUsize {
        self.max_concurrent_renewals
    }

    /// The settings [`decide`](crate::lease::decide) uses.
    pub(crate) fn assignment(&self) -> AssignmentConfig {
        AssignmentConfig {
            max_leases_for_worker: self.max_leases_for_worker,
            max_leases_to_steal_at_one_time: self.max_leases_to_steal_at_one_time,
        }
    }
}

/// Builds a [`LeaseConfig`]. Unset intervals follow the failover time (renewal every
/// `failover / 3`, taking every `failover / 10`).
#[derive(Clone, Debug, Default)]
pub struct LeaseConfigBuilder {
    failover_time: Option<Duration>,
    renew_interval: Option<Duration>,
    taker_interval: Option<Duration>,
    handoff_timeout: Option<Duration>,
    max_leases_for_worker: Option<usize>,
    max_leases_to_steal_at_one_time: Option<usize>,
    max_concurrent_renewals: Option<usize>,
}

impl LeaseConfigBuilder {
    /// See [`LeaseConfig::max_concurrent_renewals`].
    pub fn max_concurrent_renewals(mut self, max: usize) -> Self {
        self.max_concurrent_renewals = Some(max);
        self
    }

    /// See [`LeaseConfig::failover_time`].
    pub fn failover_time(mut self, failover_time: Duration) -> Self {
        self.failover_time = Some(failover_time);
        self
    }

    /// See [`LeaseConfig::renew_interval`].
    pub fn renew_interval(mut self, renew_interval: Duration) -> Self {
        self.renew_interval = Some(renew_interval);
        self
    }

    /// See [`LeaseConfig::taker_interval`].
    pub fn taker_interval(mut self, taker_interval: Duration) -> Self {
        self.taker_interval = Some(taker_interval);
        self
    }

    /// See [`LeaseConfig::handoff_timeout`].
    pub fn handoff_timeout(mut self, timeout: Duration) -> Self {
        self.handoff_timeout = Some(timeout);
        self
    }

    /// See [`LeaseConfig::max_leases_for_worker`]. Must be at least 1.
    pub fn max_leases_for_worker(mut self, max: usize) -> Self {
        self.max_leases_for_worker = Some(max);
        self
    }

    /// See [`LeaseConfig::max_leases_to_steal_at_one_time`]. Must be at least 1.
    pub fn max_leases_to_steal_at_one_time(mut self, max: usize) -> Self {
        self.max_leases_to_steal_at_one_time = Some(max);
        self
    }

    /// Checks and builds the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the failover time or an interval is zero, the renew interval is
    /// over 45 % of the failover time, or a maximum is 0.
    pub fn build(self) -> Result<LeaseConfig, ConfigError> {
        let failover_time = self.failover_time.unwrap_or(DEFAULT_FAILOVER_TIME);
        if failover_time.is_zero() {
            return Err(invalid("failover_time", failover_time, "must be positive"));
        }
        let renew_interval = self.renew_interval.unwrap_or(failover_time / 3);
        if renew_interval.is_zero() {
            return Err(invalid(
                "renew_interval",
                renew_interval,
                "must be positive",
            ));
        }
        // A holder keeps a lease for 90 % of the failover time after its last successful
        // write: renewing at most every half of that lets one renewal fail without losing it.
        let longest_renew_interval = (failover_time - failover_time / 10) / 2;
        if renew_interval > longest_renew_interval {
            return Err(invalid(
                "renew_interval",
                renew_interval,
                format!(
                    "must be at most {longest_renew_interval:?}, 45 % of failover_time \
                     ({failover_time:?}), as a lease is held for 90 % of it after a renewal and \
                     one renewal may fail"
                ),
            ));
        }
        let taker_interval = self.taker_interval.unwrap_or(failover_time / 10);
        if taker_interval.is_zero() {
            return Err(invalid(
                "taker_interval",
                taker_interval,
                "must be positive",
            ));
        }
        let max_leases_for_worker = match self.max_leases_for_worker {
            None => None,
            Some(n) => Some(
                NonZeroUsize::new(n)
                    .ok_or_else(|| invalid("max_leases_for_worker", n, "must be at least 1"))?,
            ),
        };
        let max_leases_to_steal_at_one_time = match self.max_leases_to_steal_at_one_time {
            None => NonZeroUsize::MIN,
            Some(n) => NonZeroUsize::new(n).ok_or_else(|| {
                invalid("max_leases_to_steal_at_one_time", n, "must be at least 1")
            })?,
        };
        let max_concurrent_renewals = match self.max_concurrent_renewals {
            None => DEFAULT_MAX_CONCURRENT_RENEWALS,
            Some(n) => NonZeroUsize::new(n)
                .ok_or_else(|| invalid("max_concurrent_renewals", n, "must be at least 1"))?,
        };
        Ok(LeaseConfig {
            max_concurrent_renewals,
            failover_time,
            renew_interval,
            taker_interval,
            handoff_timeout: self.handoff_timeout.unwrap_or(DEFAULT_HANDOFF_TIMEOUT),
            max_leases_for_worker,
            max_leases_to_steal_at_one_time,
        })
    }
}

fn invalid(
    field: &'static str,
    value: impl std::fmt::Debug,
    limit: impl Into<std::borrow::Cow<'static, str>>,
) -> ConfigError {
    ConfigError::new("LeaseConfig", field, value, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renew_interval_leaving_no_room_for_one_failed_renewal_is_refused() {
        // Used to pass when shorter than the failover time: at 60 % a lease was dropped on
        // the holder's own clock (held for 90 %) as soon as one renewal failed.
        let failover = Duration::from_secs(10);
        let at = |renew_ms: u64| {
            LeaseConfig::builder()
                .failover_time(failover)
                .renew_interval(Duration::from_millis(renew_ms))
                .build()
        };
        assert!(at(4_500).is_ok());
        let error = at(6_000).unwrap_err().to_string();
        assert!(
            error.contains("renew_interval") && error.contains("6s") && error.contains("4.5s"),
            "{error}"
        );
        assert!(at(9_999).is_err());
    }

    #[test]
    fn defaults_match_java() {
        let c = LeaseConfig::default();
        assert_eq!(c.failover_time(), Duration::from_millis(10_000));
        assert_eq!(c.renew_interval(), Duration::from_nanos(3_333_333_333));
        assert_eq!(c.taker_interval(), c.failover_time() / 10);
        assert_eq!(c.handoff_timeout(), Duration::from_secs(30));
        assert_eq!(c.max_leases_for_worker(), None);
        assert_eq!(c.max_leases_to_steal_at_one_time().get(), 1);
        assert_eq!(LeaseConfig::builder().build().unwrap(), c);
    }

    #[test]
    fn intervals_follow_failover() {
        let c = LeaseConfig::builder()
            .failover_time(Duration::from_secs(30))
            .build()
            .unwrap();
        assert_eq!(c.renew_interval(), Duration::from_secs(10));
        assert_eq!(c.taker_interval(), Duration::from_secs(3));
    }

    #[test]
    fn rejects_bad_values() {
        let bad = [
            LeaseConfig::builder().failover_time(Duration::ZERO),
            LeaseConfig::builder().renew_interval(Duration::from_secs(10)),
            LeaseConfig::builder().renew_interval(Duration::ZERO),
            LeaseConfig::builder().taker_interval(Duration::ZERO),
            LeaseConfig::builder().max_leases_for_worker(0),
            LeaseConfig::builder().max_leases_to_steal_at_one_time(0),
        ];
        for b in bad {
            assert!(matches!(b.build(), Err(ConfigError { .. })));
        }
    }
}
