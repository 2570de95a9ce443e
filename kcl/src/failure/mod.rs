//! What the worker does when `process_records` fails: the [`FailurePolicy`], the
//! [`FailureDestination`] for records it gives up on, and [`RecordFailed`] for partial failures.

#[cfg(feature = "dead-letter-stream")]
mod dead_letter;
mod destination;
pub(crate) mod plan;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "dead-letter-stream")]
pub use dead_letter::{DEAD_LETTER_MAGIC, DeadLetter, DeadLetterError, DeadLetterStream};
pub use destination::{FailedRecords, FailureDestination};

use crate::error::ConfigError;
use crate::processor::ProcessorError;
use crate::record::Record;
use crate::sequence::ExtendedSequenceNumber;

/// How failed [`process_records`](crate::ShardRecordProcessor::process_records) calls are
/// retried and when records are given up on. Built with [`FailurePolicy::builder`]; given to
/// the worker with [`WorkerBuilder::failure_policy`](crate::WorkerBuilder::failure_policy) (or
/// per stream with [`stream_failure_policy`](crate::WorkerBuilder::stream_failure_policy)).
///
/// A failed call is retried in place, on the same processor, with the same records (after a
/// partial failure, from the failed record on), after a backoff. Without limits (the
/// default, as Lambda's `MaximumRetryAttempts = -1`) the shard holds at the failing records
/// until they pass or processing stops. With limits, the policy gives up on records after
/// `max_attempts` failed calls or once they are older than `max_record_age`, hands them to a
/// [`FailureDestination`] (a dead-letter stream, a closure) and moves on; the shard's
/// checkpoint never passes a record that was neither processed nor accepted by the
/// destination. `bisect_on_error` splits a failing batch in halves first, so one bad record
/// does not hold back or take down the good ones beside it.
///
/// A processor reports a partial failure by returning [`RecordFailed`]: every record before the
/// named one is done (the worker checkpoints there), and the next call starts at it.
///
/// A processor that **panics** is not retried in place (its state may be broken): the shard
/// restarts from its last checkpoint with a new processor from the factory, after a backoff
/// (1 s doubling to 30 s), as before this policy existed.
///
/// | | this worker | AWS Lambda (Kinesis event source) | Java KCL |
/// |---|---|---|---|
/// | retries of a failed batch | in place, backoff 1 s → 30 s, [`max_attempts`](FailurePolicyBuilder::max_attempts) (default unlimited) | `MaximumRetryAttempts` (default -1, unlimited) | none: the batch is skipped |
/// | record age limit | [`max_record_age`](FailurePolicyBuilder::max_record_age), applied to failed records (default none) | `MaximumRecordAgeInSeconds`, also before the first try | none |
/// | split a failing batch | [`bisect_on_error`](FailurePolicyBuilder::bisect_on_error) (default off) | `BisectBatchOnFunctionError` (default off) | none |
/// | partial batch response | [`RecordFailed`] | `ReportBatchItemFailures` | none |
/// | a call that takes too long | [`batch_timeout`](FailurePolicyBuilder::batch_timeout): a failed call (default none) | the function timeout | none |
/// | where given-up records go | a [`FailureDestination`] (required with limits) | on-failure destination (metadata only) | nowhere (logged) |
///
/// ```
/// use std::time::Duration;
/// use kinesis_kcl::{FailedRecords, FailurePolicy, ProcessorError};
///
/// let policy = FailurePolicy::builder()
///     .max_attempts(3)
///     .bisect_on_error(true)
///     .destination(|failed: FailedRecords| async move {
///         // Store them somewhere a person will look (here: only say so).
///         eprintln!("giving up on {} records of {}", failed.records.len(), failed.shard_id);
///         Ok::<(), ProcessorError>(())
///     })
///     .build()?;
/// assert_eq!(policy.max_attempts(), Some(3));
///
/// // Limits without a destination are refused: nothing is dropped silently.
/// let error = FailurePolicy::builder().max_attempts(3).build().unwrap_err();
/// assert_eq!(error.field(), "destination");
/// # Ok::<(), kinesis_kcl::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct FailurePolicy {
    max_attempts: Option<NonZeroU32>,
    max_record_age: Option<Duration>,
    bisect_on_error: bool,
    min_backoff: Duration,
    max_backoff: Duration,
    batch_timeout: Option<Duration>,
    destination: Option<Arc<dyn FailureDestination>>,
}

/// The first wait before a retry (today's restart backoff).
const DEFAULT_MIN_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a retry.
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Default for FailurePolicy {
    /// Unlimited retries in place, 1 s doubling to 30 s, no bisection, no destination.
    fn default() -> Self {
        FailurePolicy {
            max_attempts: None,
            max_record_age: None,
            bisect_on_error: false,
            min_backoff: DEFAULT_MIN_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            batch_timeout: None,
            destination: None,
        }
    }
}

impl std::fmt::Debug for FailurePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailurePolicy")
            .field("max_attempts", &self.max_attempts)
            .field("max_record_age", &self.max_record_age)
            .field("bisect_on_error", &self.bisect_on_error)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("batch_timeout", &self.batch_timeout)
            .field("destination", &self.destination.is_some())
            .finish()
    }
}

impl FailurePolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> FailurePolicyBuilder {
        FailurePolicyBuilder {
            policy: FailurePolicy::default(),
            max_attempts: None,
        }
    }

    /// Failed calls on the same records before they are given up (`None`: never).
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts.map(NonZeroU32::get)
    }

    /// Age past which failed records are given up (`None`: never).
    pub fn max_record_age(&self) -> Option<Duration> {
        self.max_record_age
    }

    /// Whether a failing batch is split in halves.
    pub fn bisect_on_error(&self) -> bool {
        self.bisect_on_error
    }

    /// The first wait before a retry.
    pub fn min_backoff(&self) -> Duration {
        self.min_backoff
    }

    /// The longest wait before a retry (before jitter).
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// How long one `process_records` call may take before it counts as failed (`None`: no
    /// limit).
    pub fn batch_timeout(&self) -> Option<Duration> {
        self.batch_timeout
    }

    pub(crate) fn destination(&self) -> Option<&Arc<dyn FailureDestination>> {
        self.destination.as_ref()
    }
}

/// Builds a [`FailurePolicy`]; every setting is optional.
#[derive(Clone, Debug)]
pub struct FailurePolicyBuilder {
    policy: FailurePolicy,
    max_attempts: Option<u32>,
}

impl FailurePolicyBuilder {
    /// Failed calls on the same records before the policy gives up on them (Lambda's
    /// `MaximumRetryAttempts` + 1: this counts the first call). Default: unlimited. With
    /// bisection, a split does not count: each half starts afresh, and a single failing
    /// record is given up after this many failed calls. After a partial failure the count
    /// starts again at the failed record.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Gives up on failed records older than `age` (by their approximate arrival time) at
    /// their next failure. Default: none. Unlike Lambda's `MaximumRecordAgeInSeconds`, records
    /// that do not fail are never skipped for their age.
    pub fn max_record_age(mut self, age: Duration) -> Self {
        self.policy.max_record_age = Some(age);
        self
    }

    /// Splits a batch whose call failed (without naming a failed record) in halves and
    /// processes them one after the other, so a bad record ends alone. Default: off.
    pub fn bisect_on_error(mut self, bisect: bool) -> Self {
        self.policy.bisect_on_error = bisect;
        self
    }

    /// The waits between retries: `min` doubling up to `max`, each with up to as much again
    /// of jitter. Default: 1 s to 30 s.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.policy.min_backoff = min;
        self.policy.max_backoff = max;
        self
    }

    /// How long one `process_records` call may take: a call still running then is dropped
    /// (cancelled at its next `.await`; a call blocking its thread cannot be) and counts as a
    /// failed call, retried or given up like any other. Default: none (as the Java KCL; Lambda
    /// has its function timeout).
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.policy.batch_timeout = Some(timeout);
        self
    }

    /// Where records go when the policy gives up on them: a [`FailureDestination`], such as a
    /// closure `Fn(FailedRecords) -> impl Future<Output = Result<(), ProcessorError>>`. Until
    /// it accepts them (it is retried with the same backoff), the shard holds. Required
    /// with `max_attempts` or `max_record_age`.
    pub fn destination(mut self, destination: impl FailureDestination) -> Self {
        self.policy.destination = Some(Arc::new(destination));
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the setting: `max_attempts` of 0, a zero `min_backoff` or one
    /// above `max_backoff`, a zero `max_record_age`, or limits without a `destination`.
    pub fn build(self) -> Result<FailurePolicy, ConfigError> {
        let mut p = self.policy;
        if let Some(attempts) = self.max_attempts {
            p.max_attempts = Some(NonZeroU32::new(attempts).ok_or_else(|| {
                ConfigError::new(
                    "FailurePolicy",
                    "max_attempts",
                    attempts,
                    "must be at least 1 (the first call counts)",
                )
            })?);
        }
        if p.min_backoff.is_zero() || p.min_backoff > p.max_backoff {
            return Err(ConfigError::new(
                "FailurePolicy",
                "backoff",
                (p.min_backoff, p.max_backoff),
                "min must be above zero and at most max",
            ));
        }
        if p.batch_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::new(
                "FailurePolicy",
                "batch_timeout",
                Duration::ZERO,
                "must be above zero",
            ));
        }
        if p.max_record_age.is_some_and(|age| age.is_zero()) {
            return Err(ConfigError::new(
                "FailurePolicy",
                "max_record_age",
                Duration::ZERO,
                "must be above zero",
            ));
        }
        if (p.max_attempts.is_some() || p.max_record_age.is_some()) && p.destination.is_none() {
            return Err(ConfigError::displayed(
                "FailurePolicy",
                "destination",
                "none",
                "a policy that gives up on records (max_attempts or max_record_age) needs a \
                 destination for them",
            ));
        }
        Ok(p)
    }
}

/// Why the policy gave up on records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// They failed `max_attempts` calls.
    Attempts,
    /// They failed and were older than `max_record_age`.
    RecordAge,
}

impl GiveUpReason {
    /// The reason as a metric label and envelope value: `attempts` or `record_age`.
    pub fn as_str(&self) -> &'static str {
        match self {
            GiveUpReason::Attempts => "attempts",
            GiveUpReason::RecordAge => "record_age",
        }
    }

    /// The reason named `text` ([`as_str`](Self::as_str)), if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "attempts" => Some(GiveUpReason::Attempts),
            "record_age" => Some(GiveUpReason::RecordAge),
            _ => None,
        }
    }
}

/// A `process_records` call that ran past the policy's
/// [`batch_timeout`](FailurePolicyBuilder::batch_timeout) (it was dropped).
#[derive(Debug, thiserror::Error)]
#[error("process_records did not return within {after:?}")]
pub(crate) struct TimedOut {
    pub(crate) after: Duration,
}

/// A partial failure of [`process_records`](crate::ShardRecordProcessor::process_records):
/// every record before [`position`](Self::position) is done, that one failed. Return it as the
/// call's error; the worker checkpoints before the failed record and calls again from it
/// (Lambda's `ReportBatchItemFailures`).
///
/// ```
/// use kinesis_kcl::{ProcessorError, Record, RecordFailed};
///
/// fn handle(records: &[Record]) -> Result<(), ProcessorError> {
///     for record in records {
///         if record.data().is_empty() {
///             return Err(RecordFailed::new(record, "empty record").into());
///         }
///     }
///     Ok(())
/// }
/// # let _ = handle;
/// ```
#[derive(Debug, thiserror::Error)]
#[error("record {position} failed: {source}")]
pub struct RecordFailed {
    position: ExtendedSequenceNumber,
    #[source]
    source: ProcessorError,
}

impl RecordFailed {
    /// `record` failed with `source`; the records delivered before it are done.
    pub fn new(record: &Record, source: impl Into<ProcessorError>) -> Self {
        RecordFailed {
            position: record.extended_sequence_number(),
            source: source.into(),
        }
    }

    /// The failed record's position.
    pub fn position(&self) -> &ExtendedSequenceNumber {
        &self.position
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_unlimited_in_place_retries() {
        let p = FailurePolicy::default();
        assert_eq!(p.max_attempts(), None);
        assert_eq!(p.max_record_age(), None);
        assert!(!p.bisect_on_error());
        assert_eq!(p.min_backoff(), Duration::from_secs(1));
        assert_eq!(p.max_backoff(), Duration::from_secs(30));
        assert!(FailurePolicy::builder().build().is_ok());
    }

    #[test]
    fn bad_settings_name_the_setting_and_the_limit() {
        let e = FailurePolicy::builder()
            .max_attempts(0)
            .build()
            .unwrap_err();
        assert_eq!((e.field(), e.value()), ("max_attempts", "0"));
        let e = FailurePolicy::builder()
            .backoff(Duration::from_secs(5), Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "backoff");
        assert!(e.to_string().contains("at most max"), "{e}");
        let e = FailurePolicy::builder()
            .max_record_age(Duration::from_secs(60))
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "destination");
        let e = FailurePolicy::builder()
            .max_record_age(Duration::ZERO)
            .destination(|_: FailedRecords| async { Ok::<(), ProcessorError>(()) })
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "max_record_age");
    }
}
