//! What to do with a failed entry: retry after a backoff (exponential with jitter, by `backon`),
//! fail at once, or expire at the record's deadline.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// An error as a shareable source: the SDK error of a call, held once for every record the call
/// concerned (the SDK's errors are not `Clone`).
pub(crate) type SharedSource = Arc<dyn std::error::Error + Send + Sync>;

/// The error codes of a throttled write.
const THROTTLING_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "LimitExceededException",
    "KMSThrottlingException",
    "SlowDown",
    "RequestLimitExceeded",
];

/// Codes that no retry can fix: the stream is gone, the request is invalid, permissions or the
/// stream's KMS key are wrong.
const FINAL_CODES: &[&str] = &[
    "ResourceNotFoundException",
    "InvalidArgumentException",
    "ValidationException",
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSAccessDeniedException",
    "KMSNotFoundException",
    "KMSOptInRequired",
];

/// Request-level codes that mean "something in this call is malformed": one bad entry makes
/// the whole call fail, so the call is split to find it rather than failing its neighbours.
const MALFORMED_CALL_CODES: &[&str] = &[
    "ValidationException",
    "InvalidArgumentException",
    "SerializationException",
];

/// Whether `code` is one no retry can fix.
pub(crate) fn is_final_code(code: &str) -> bool {
    FINAL_CODES.contains(&code)
}

/// A failed attempt, classified.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    /// Shared by every record of the call it concerns.
    pub(crate) code: Arc<str>,
    /// Shared by every record of the call it concerns.
    pub(crate) message: Arc<str>,
    pub(crate) kind: FailureKind,
    /// The whole call failed (not this entry alone).
    pub(crate) whole_call: bool,
    /// The SDK error of a failed call, shared by every record of the call; only the records
    /// failing for good keep it (in their [`PutError`](crate::PutError)), not their attempts.
    pub(crate) source: Option<SharedSource>,
}

/// How a failure is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Throttled: retried (or failed at once with `fail_if_throttled`).
    Throttled,
    /// Transient (5xx, internal failure, timeout, dropped connection): retried.
    Transient,
    /// Final: failed at once.
    Final,
}

impl Failure {
    pub(crate) fn retryable(code: &str, message: String) -> Self {
        Self::classified(code, message, FailureKind::Transient)
    }

    pub(crate) fn rejected(code: &str, message: String) -> Self {
        Self::classified(code, message, FailureKind::Final)
    }

    fn classified(code: &str, message: String, default: FailureKind) -> Self {
        let kind = if THROTTLING_CODES.contains(&code) {
            FailureKind::Throttled
        } else if FINAL_CODES.contains(&code) {
            FailureKind::Final
        } else {
            default
        };
        Self {
            code: Arc::from(code),
            message: Arc::from(message),
            kind,
            whole_call: false,
            source: None,
        }
    }

    /// The same failure, caused by `source`.
    pub(crate) fn with_source(mut self, source: SharedSource) -> Self {
        self.source = Some(source);
        self
    }

    /// The same failure, of a whole call.
    pub(crate) fn of_whole_call(mut self) -> Self {
        self.whole_call = true;
        self
    }

    /// Whether the whole call was refused as malformed, which may be the fault of one entry.
    pub(crate) fn is_malformed_call(&self) -> bool {
        self.whole_call && MALFORMED_CALL_CODES.contains(&&*self.code)
    }

    /// A per-entry error of a PutRecords response. Unknown codes are retried until the deadline:
    /// losing a record to a code we did not foresee is worse than a late failure.
    pub(crate) fn from_entry_error(code: &str, message: &str) -> Self {
        Self::classified(code, message.to_owned(), FailureKind::Transient)
    }

    /// Whether this failure has exactly this code and message.
    pub(crate) fn is(&self, code: &str, message: &str) -> bool {
        &*self.code == code && &*self.message == message
    }

    /// A whole-request service error.
    pub(crate) fn from_request_error(code: &str, message: String) -> Self {
        Self::classified(code, message, FailureKind::Transient)
    }
}

/// The backoff schedule of one entry: from `min` doubling to `max`, with full jitter, never
/// running out (the record's deadline is what ends retries). Both bounds are capped at
/// [`NEVER`](crate::clock::NEVER), so no setting overflows the schedule's arithmetic.
pub(crate) fn backoff(min: Duration, max: Duration) -> backon::ExponentialBackoff {
    let cap = crate::clock::NEVER / 4;
    let (min, max) = (min.min(cap), max.min(cap));
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_codes() {
        let throttled = Failure::from_entry_error("ProvisionedThroughputExceededException", "slow");
        assert_eq!(throttled.kind, FailureKind::Throttled);
        assert_eq!(
            Failure::from_entry_error("InternalFailure", "").kind,
            FailureKind::Transient
        );
        assert_eq!(
            Failure::from_entry_error("SomethingNew", "").kind,
            FailureKind::Transient
        );
        assert_eq!(
            Failure::from_entry_error("KMSAccessDeniedException", "").kind,
            FailureKind::Final
        );
        assert_eq!(
            Failure::from_request_error("ResourceNotFoundException", String::new()).kind,
            FailureKind::Final
        );
        assert_eq!(
            Failure::rejected("ConstructionFailure", String::new()).kind,
            FailureKind::Final
        );
    }

    #[test]
    fn backoff_grows_within_bounds_and_never_ends() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let delays: Vec<Duration> = backoff(min, max).take(50).collect();
        assert_eq!(delays.len(), 50, "the schedule never runs out");
        // Jitter adds up to one more delay on top of the exponential value.
        assert!(
            delays.iter().all(|d| *d >= min && *d <= max * 2),
            "{delays:?}"
        );
        assert!(delays[10] >= max, "reaches the cap: {delays:?}");
    }

    #[test]
    fn the_largest_durations_do_not_overflow_the_schedule() {
        let delays: Vec<Duration> = backoff(Duration::MAX, Duration::MAX).take(70).collect();
        assert_eq!(delays.len(), 70);
        assert!(delays.iter().all(|d| *d <= crate::clock::NEVER));
    }
}
