//! Retries of transient Kinesis errors, in the same shape as the lease table's DynamoDB
//! retries: exponential backoff with full jitter within a [`RetryPolicy`]'s total budget, on
//! top of the SDK client's own retry layer.
//!
//! Transient: throttling (`LimitExceededException`, `ProvisionedThroughputExceededException`,
//! `ThrottlingException`, `KMSThrottlingException`), server errors (HTTP 5xx,
//! `InternalFailure`, `ServiceUnavailable`), timeouts and I/O failures. Everything else is
//! returned at once.

use std::future::Future;

use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

use crate::lease::RetryPolicy;

/// Kinesis error codes worth retrying.
const TRANSIENT_CODES: [&str; 7] = [
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "KMSThrottlingException",
    "InternalFailure",
    "InternalFailureException",
    "ServiceUnavailable",
];

/// Runs `send` until it succeeds, fails with a non-transient error, or `policy`'s budget is
/// spent. `stream` only labels the log lines.
pub(crate) async fn retrying<T, E, F, Fut>(
    policy: RetryPolicy,
    stream: &str,
    send: F,
) -> Result<T, SdkError<E, HttpResponse>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let deadline = Instant::now() + policy.budget;
    let backoff = ExponentialBuilder::new()
        .with_jitter()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .without_max_times()
        .with_total_delay(Some(policy.budget));
    send.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e| is_transient(e) && Instant::now() < deadline)
        .notify(|e, delay| {
            tracing::debug!(
                stream,
                code = e.code().unwrap_or("-"),
                ?delay,
                "transient Kinesis error, retrying"
            );
        })
        .await
}

/// Whether an SDK error is throttling, a server error, a timeout or an I/O failure.
pub(crate) fn is_transient<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) => true,
        SdkError::DispatchFailure(d) => d.is_timeout() || d.is_io(),
        SdkError::ResponseError(r) => r.raw().status().is_server_error(),
        SdkError::ServiceError(s) => {
            s.raw().status().is_server_error()
                || s.err().code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        _ => false,
    }
}
