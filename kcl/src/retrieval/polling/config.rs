//! The settings of polling retrieval and their builder.

use std::time::Duration;

use crate::aws::RetryPolicy;
use crate::error::{ConfigError, Result};
use crate::retrieval::settings::{PendingLimits, check_positive, check_retry_delays};
use crate::retrieval::{OutOfRangePolicy, PrefetchLimits};

/// Default [`PollingConfig::max_records`]: 10 000, the Java KCL's `maxRecords` (and the most
/// Kinesis returns per call).
pub(crate) const DEFAULT_MAX_RECORDS: u32 = 10_000;
/// Default [`PollingConfig::idle_time_between_reads`]: 1 500 ms, the Java KCL's
/// `idleTimeBetweenReadsInMillis`.
pub(crate) const DEFAULT_IDLE_TIME_BETWEEN_READS: Duration = Duration::from_millis(1_500);
/// Default [`PollingConfig::min_time_between_reads`]: 200 ms (Kinesis serves 5 `GetRecords` per
/// second per shard).
pub(crate) const DEFAULT_MIN_TIME_BETWEEN_READS: Duration = Duration::from_millis(200);
/// Default [`PollingConfig::retry_min_delay`]: 100 ms.
pub(crate) const DEFAULT_RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
/// Default [`PollingConfig::retry_max_delay`]: 10 s.
pub(crate) const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(10);
/// Default [`PollingConfig::retry_budget`]: 5 minutes.
pub(crate) const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(300);
/// Default [`PollingConfig::request_timeout`]: 30 s, the Java KCL's `kinesisRequestTimeout`.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of polling retrieval. Build with [`PollingConfig::builder`]; the defaults are the
/// Java KCL's where it has the setting.
///
/// ```
/// use std::time::Duration;
/// use kinesis_kcl::{OutOfRangePolicy, PollingConfig};
///
/// let config = PollingConfig::default();
/// assert_eq!(config.max_records(), 10_000);
/// assert_eq!(config.idle_time_between_reads(), Duration::from_millis(1_500));
/// assert_eq!(config.prefetch().max_batches(), 3);
/// assert_eq!(config.prefetch().max_records(), 30_000);
/// assert_eq!(config.prefetch().max_bytes(), 8 * 1024 * 1024);
/// assert_eq!(config.out_of_range(), OutOfRangePolicy::DropAggregate);
///
/// let custom = PollingConfig::builder()
///     .max_records(500)
///     .idle_time_between_reads(Duration::from_millis(250))
///     .out_of_range(OutOfRangePolicy::Deliver)
///     .build()?;
/// assert_eq!(custom.max_records(), 500);
/// assert!(PollingConfig::builder().max_records(10_001).build().is_err());
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollingConfig {
    pub(super) max_records: u32,
    pub(super) idle_time_between_reads: Duration,
    pub(super) min_time_between_reads: Duration,
    pub(super) prefetch: PrefetchLimits,
    pub(super) out_of_range: OutOfRangePolicy,
    pub(super) deliver_empty_batches: bool,
    pub(super) retry: RetryPolicy,
    pub(super) request_timeout: Duration,
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            max_records: DEFAULT_MAX_RECORDS,
            idle_time_between_reads: DEFAULT_IDLE_TIME_BETWEEN_READS,
            min_time_between_reads: DEFAULT_MIN_TIME_BETWEEN_READS,
            prefetch: PrefetchLimits::default(),
            out_of_range: OutOfRangePolicy::default(),
            deliver_empty_batches: false,
            retry: RetryPolicy::new(
                DEFAULT_RETRY_BUDGET,
                DEFAULT_RETRY_MIN_DELAY,
                DEFAULT_RETRY_MAX_DELAY,
            ),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl PollingConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> PollingConfigBuilder {
        PollingConfigBuilder {
            config: PollingConfig::default(),
            prefetch: PendingLimits::default(),
        }
    }

    /// Most records per `GetRecords` call (its `Limit`). Default 10 000, the Java KCL's
    /// `maxRecords`; at most 10 000.
    pub fn max_records(&self) -> u32 {
        self.max_records
    }

    /// The pause after a response with no records at the tip of the shard, or a throttled
    /// call. Default 1 500 ms, the Java KCL's `idleTimeBetweenReadsInMillis` (which Java waits
    /// between every call, where this waits only after an empty response at the tip of the
    /// shard or a throttled call).
    pub fn idle_time_between_reads(&self) -> Duration {
        self.idle_time_between_reads
    }

    /// The least time between the starts of two `GetRecords` calls. Default 200 ms: Kinesis
    /// serves 5 calls per second per shard, shared by all its polling consumers.
    pub fn min_time_between_reads(&self) -> Duration {
        self.min_time_between_reads
    }

    /// How much the reader holds ahead of the processor. Default: the Java KCL's 3 batches
    /// (`maxPendingProcessRecordsInput`), 30 000 records (`maxRecordsCount`), 8 MiB
    /// (`maxByteSize`).
    pub fn prefetch(&self) -> PrefetchLimits {
        self.prefetch
    }

    /// What to do with aggregates holding user records outside the shard's hash key range.
    /// Default [`OutOfRangePolicy::DropAggregate`], as the Java KCL (see the policy for when
    /// [`OutOfRangePolicy::Deliver`] fits better).
    pub fn out_of_range(&self) -> OutOfRangePolicy {
        self.out_of_range
    }

    /// Whether responses that leave no user record are delivered as empty batches (to see
    /// [`ProcessRecordsInput::millis_behind_latest`](crate::ProcessRecordsInput::millis_behind_latest)
    /// move). Default false, as the Java KCL's
    /// `callProcessRecordsEvenForEmptyRecordList`.
    pub fn deliver_empty_batches(&self) -> bool {
        self.deliver_empty_batches
    }

    /// How throttles and transient errors are retried: from 100 ms doubling up to 10 s,
    /// transient errors in a row for 5 minutes in total (throttling without limit). The
    /// parts are [`retry_min_delay`](Self::retry_min_delay),
    /// [`retry_max_delay`](Self::retry_max_delay) and [`retry_budget`](Self::retry_budget).
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The first retry delay after a throttle or a transient error (doubled, with up to 100 %
    /// jitter, on each further one). Default 100 ms.
    pub fn retry_min_delay(&self) -> Duration {
        self.retry.min_delay
    }

    /// The largest retry delay (before jitter). Default 10 s.
    pub fn retry_max_delay(&self) -> Duration {
        self.retry.max_delay
    }

    /// How long transient errors in a row are retried before the reader fails with the last
    /// one. Throttling is retried without limit. Default 5 minutes.
    pub fn retry_budget(&self) -> Duration {
        self.retry.budget
    }

    /// The time limit of one `GetRecords` or `GetShardIterator` call, retries of the SDK
    /// client included (a call that times out is retried as a transient error). Default 30 s,
    /// the Java KCL's `kinesisRequestTimeout`.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

/// Builds a [`PollingConfig`]; see its getters for the meaning and defaults.
#[derive(Clone, Debug)]
pub struct PollingConfigBuilder {
    config: PollingConfig,
    prefetch: PendingLimits,
}

impl PollingConfigBuilder {
    /// See [`PollingConfig::max_records`] (1 to 10 000).
    pub fn max_records(mut self, max_records: u32) -> Self {
        self.config.max_records = max_records;
        self
    }

    /// See [`PollingConfig::idle_time_between_reads`].
    pub fn idle_time_between_reads(mut self, idle: Duration) -> Self {
        self.config.idle_time_between_reads = idle;
        self
    }

    /// See [`PollingConfig::min_time_between_reads`].
    pub fn min_time_between_reads(mut self, min: Duration) -> Self {
        self.config.min_time_between_reads = min;
        self
    }

    /// See [`PollingConfig::prefetch`]: most batches held (at least 1).
    pub fn max_pending_batches(mut self, max: usize) -> Self {
        self.prefetch.batches = Some(max);
        self
    }

    /// See [`PollingConfig::prefetch`]: most user records held (at least 1).
    pub fn max_pending_records(mut self, max: usize) -> Self {
        self.prefetch.records = Some(max);
        self
    }

    /// See [`PollingConfig::prefetch`]: most bytes of record data held (at least 1).
    pub fn max_pending_bytes(mut self, max: usize) -> Self {
        self.prefetch.bytes = Some(max);
        self
    }

    /// See [`PollingConfig::out_of_range`].
    pub fn out_of_range(mut self, policy: OutOfRangePolicy) -> Self {
        self.config.out_of_range = policy;
        self
    }

    /// See [`PollingConfig::deliver_empty_batches`].
    pub fn deliver_empty_batches(mut self, deliver: bool) -> Self {
        self.config.deliver_empty_batches = deliver;
        self
    }

    /// See [`PollingConfig::retry`]: all three retry settings at once.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// See [`PollingConfig::retry_min_delay`].
    pub fn retry_min_delay(mut self, delay: Duration) -> Self {
        self.config.retry.min_delay = delay;
        self
    }

    /// See [`PollingConfig::retry_max_delay`].
    pub fn retry_max_delay(mut self, delay: Duration) -> Self {
        self.config.retry.max_delay = delay;
        self
    }

    /// See [`PollingConfig::retry_budget`].
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.config.retry.budget = budget;
        self
    }

    /// See [`PollingConfig::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Checks and builds the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `max_records` is not in `1..=10_000`, a prefetch limit is 0, the
    /// retry delays are zero or out of order, or the request timeout is zero.
    pub fn build(self) -> Result<PollingConfig, ConfigError> {
        let mut config = self.config;
        if !(1..=DEFAULT_MAX_RECORDS).contains(&config.max_records) {
            return Err(invalid(
                "max_records",
                config.max_records,
                format!("must be between 1 and {DEFAULT_MAX_RECORDS}"),
            ));
        }
        check_positive(BUILDER, "retry_min_delay", config.retry.min_delay)?;
        check_retry_delays(BUILDER, config.retry)?;
        check_positive(BUILDER, "request_timeout", config.request_timeout)?;
        config.prefetch = self.prefetch.build(BUILDER)?;
        Ok(config)
    }
}

/// The builder named in errors.
const BUILDER: &str = "PollingConfig";

fn invalid(
    field: &'static str,
    value: impl std::fmt::Debug,
    limit: impl Into<std::borrow::Cow<'static, str>>,
) -> ConfigError {
    ConfigError::new(BUILDER, field, value, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_settings_are_one_retry_policy() {
        let config = PollingConfig::default();
        assert_eq!(
            config.retry(),
            RetryPolicy::new(
                Duration::from_secs(300),
                Duration::from_millis(100),
                Duration::from_secs(10)
            )
        );
        let policy = RetryPolicy::new(
            Duration::from_secs(1),
            Duration::from_millis(5),
            Duration::from_millis(50),
        );
        let custom = PollingConfig::builder().retry(policy).build().unwrap();
        assert_eq!(custom.retry(), policy);
        assert_eq!(custom.retry_min_delay(), Duration::from_millis(5));
        assert_eq!(custom.retry_max_delay(), Duration::from_millis(50));
        assert_eq!(custom.retry_budget(), Duration::from_secs(1));
        let backwards = RetryPolicy::new(policy.budget, policy.max_delay, policy.min_delay);
        assert!(PollingConfig::builder().retry(backwards).build().is_err());
    }

    #[test]
    fn config_defaults_and_validation() {
        let config = PollingConfig::builder().build().unwrap();
        assert_eq!(config, PollingConfig::default());
        assert_eq!(config.min_time_between_reads(), Duration::from_millis(200));
        assert_eq!(config.request_timeout(), Duration::from_secs(30));
        assert!(!config.deliver_empty_batches());
        for bad in [
            PollingConfig::builder().max_records(0),
            PollingConfig::builder().max_pending_bytes(0),
            PollingConfig::builder().retry_min_delay(Duration::ZERO),
            PollingConfig::builder()
                .retry_min_delay(Duration::from_secs(2))
                .retry_max_delay(Duration::from_secs(1)),
            PollingConfig::builder().request_timeout(Duration::ZERO),
        ] {
            assert!(matches!(bad.build(), Err(ConfigError { .. })));
        }
        let limits = PollingConfig::builder()
            .max_pending_batches(7)
            .build()
            .unwrap()
            .prefetch();
        assert_eq!((limits.max_batches(), limits.max_records()), (7, 30_000));
    }
}
