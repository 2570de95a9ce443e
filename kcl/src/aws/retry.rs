//! [`RetryPolicy`], the one shape of retry settings in the crate, and [`retrying`], the loop
//! that applies it to one call.

use std::future::Future;
use std::time::Duration;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

use super::classify::is_transient;

/// Default total time spent retrying one call on transient errors: 5 s.
///
/// Half the default failover time, so a lease renewal that keeps being throttled gives up (and
/// the caller learns about it) before the lease would expire anyway.
pub(crate) const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(5);

/// How transient errors are retried: exponential backoff with jitter (each delay plus up to
/// 100 %), from `min_delay` doubling up to `max_delay`, for at most `budget` in total. With
/// `min_delay == max_delay` the delay is constant.
///
/// Every setting of the crate that retries AWS calls is one of these: the lease table and
/// shard sync ([`RetryPolicy::default`]), polling
/// ([`PollingConfig::retry`](crate::PollingConfig::retry)), fan-out registration and
/// subscriptions ([`FanOutConfig::registration_retry`](crate::FanOutConfig::registration_retry),
/// [`FanOutConfig::subscription_retry`](crate::FanOutConfig::subscription_retry)) and the
/// worker's `DescribeStreamSummary` at start-up (60 s in total, from 100 ms to 5 s). Which
/// errors are transient is decided in one place for all of them.
///
/// The default is the lease table's and shard sync's: 5 s in total, from 25 ms to 1 s.
///
/// ```
/// use std::time::Duration;
/// use kinesis_kcl::RetryPolicy;
///
/// let policy = RetryPolicy::default();
/// assert_eq!(policy.budget, Duration::from_secs(5));
/// let patient = RetryPolicy::new(Duration::from_secs(60), Duration::from_millis(100),
///     Duration::from_secs(5));
/// assert_eq!(patient.max_delay, Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total time after which no new attempt starts. Default 5 s;
    /// `Duration::ZERO` disables retries.
    pub budget: Duration,
    /// First backoff delay. Default 25 ms.
    pub min_delay: Duration,
    /// Longest backoff delay (before jitter). Default 1 s.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::new(
            DEFAULT_RETRY_BUDGET,
            Duration::from_millis(25),
            Duration::from_secs(1),
        )
    }
}

impl RetryPolicy {
    /// A policy of `budget` in total, with delays from `min_delay` to `max_delay`.
    pub const fn new(budget: Duration, min_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            budget,
            min_delay,
            max_delay,
        }
    }

    /// The policy's delays, without end (for loops that bound them otherwise).
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .without_max_times()
    }

    /// The policy's delays, ending once they add up to the budget.
    pub(crate) fn budgeted_backoff(&self) -> ExponentialBuilder {
        self.backoff().with_total_delay(Some(self.budget))
    }
}

/// A [`RetryPolicy`], optionally with a cap on the number of retries (the Java KCL counts the
/// retries of its stream-consumer calls).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retries {
    pub(crate) policy: RetryPolicy,
    pub(crate) at_most: Option<usize>,
}

impl From<RetryPolicy> for Retries {
    fn from(policy: RetryPolicy) -> Self {
        Retries {
            policy,
            at_most: None,
        }
    }
}

/// Runs `send` until it succeeds, fails with an error that is not
/// [transient](super::classify), or `retries` are spent; `notify` hears of each retry.
pub(crate) async fn retrying<T, E, F, Fut, N>(
    retries: impl Into<Retries>,
    send: F,
    notify: N,
) -> Result<T, SdkError<E, HttpResponse>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
    N: FnMut(&SdkError<E, HttpResponse>, Duration),
{
    let retries = retries.into();
    let deadline = Instant::now() + retries.policy.budget;
    let mut backoff = retries.policy.budgeted_backoff();
    if let Some(at_most) = retries.at_most {
        backoff = backoff.with_max_times(at_most);
    }
    send.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| is_transient(e) && Instant::now() < deadline)
        .notify(notify)
        .await
}
