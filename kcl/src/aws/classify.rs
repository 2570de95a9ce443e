//! The crate's one answer to "is this AWS error transient?", for Kinesis and DynamoDB alike.
//!
//! # Classification
//!
//! It starts from the SDK's own retry classifiers (`aws-runtime`'s `AwsErrorCodeClassifier`,
//! `aws-smithy-runtime`'s `TransientErrorClassifier` and `HttpStatusCodeClassifier`) and adds
//! the codes the services send that the SDK does not list:
//!
//! | error | [`TransientKind`] | label |
//! |---|---|---|
//! | a code of the SDK's [`THROTTLING_ERRORS`] (among them `ThrottlingException`, `ProvisionedThroughputExceededException`, `LimitExceededException`, `RequestLimitExceeded`, `TransactionInProgressException`) | `Throttling` | the code |
//! | `KMSThrottlingException` (Kinesis, on KMS-encrypted streams) | `Throttling` | the code |
//! | a code of the SDK's [`TRANSIENT_ERRORS`] (`RequestTimeout`, `RequestTimeoutException`) | `Timeout` | the code |
//! | `InternalFailure`, `InternalFailureException` (Kinesis), `InternalServerError` (DynamoDB), `ServiceUnavailable` | `ServerError` | the code |
//! | any other service error or unparsable response with an HTTP 5xx status (the SDK: 500, 502, 503, 504) | `ServerError` | `http_5xx` |
//! | the call timed out (`SdkError::TimeoutError`, a dispatch timeout) | `Timeout` | `timeout` |
//! | the connection failed or broke while dispatching (I/O) | `Io` | `io` |
//! | anything else (access denied, a bad argument, a missing resource, …) | not transient | |
//!
//! A code is matched before the status, so a `ServiceUnavailable` with a 503 is labelled
//! `ServiceUnavailable`.
//!
//! A shard's readers (polling and fan-out) ask [`classify_shard_read`], which adds their common
//! cases before the table: `ResourceNotFoundException` (the shard's end) and
//! `ExpiredIteratorException` (a new iterator).
//!
//! Call sites that treat some errors differently keep that explicit, *before* asking this
//! module: polling's own unbounded backoff for `ProvisionedThroughputExceededException` and its
//! restarts on `InvalidArgumentException`, fan-out's retried `ResourceInUseException`,
//! the `ListShards` `NextToken` fallback, `ResourceInUseException` from
//! `RegisterStreamConsumer`. Whatever they do not handle themselves is transient exactly when
//! [`classify`] says so.

use aws_runtime::retries::classifiers::{THROTTLING_ERRORS, TRANSIENT_ERRORS};
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// Throttling codes the SDK does not list.
const MORE_THROTTLING_ERRORS: &[&str] = &["KMSThrottlingException"];

/// Server-error codes (the SDK only looks at the status).
const SERVER_ERRORS: &[&str] = &[
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "ServiceUnavailable",
];

/// What makes an error transient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TransientKind {
    /// The service refused the call for now (a rate or capacity limit).
    Throttling,
    /// The service failed (a 5xx or an internal-failure code).
    ServerError,
    /// The call timed out.
    Timeout,
    /// The connection failed or broke.
    Io,
}

/// A transient error: its kind, and a label for logs and metrics (the error code, or
/// `http_5xx`, `timeout`, `io`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transient {
    pub(crate) kind: TransientKind,
    pub(crate) label: &'static str,
}

impl Transient {
    const fn new(kind: TransientKind, label: &'static str) -> Self {
        Transient { kind, label }
    }
}

/// The transient class of an error code, if it has one.
pub(crate) fn classify_code(code: &str) -> Option<Transient> {
    let find = |list: &[&'static str]| list.iter().copied().find(|c| *c == code);
    if let Some(c) = find(THROTTLING_ERRORS).or_else(|| find(MORE_THROTTLING_ERRORS)) {
        return Some(Transient::new(TransientKind::Throttling, c));
    }
    if let Some(c) = find(TRANSIENT_ERRORS) {
        return Some(Transient::new(TransientKind::Timeout, c));
    }
    find(SERVER_ERRORS).map(|c| Transient::new(TransientKind::ServerError, c))
}

/// The transient class of a service error, from its code, else its HTTP status (`None` when
/// there is none, as for an error inside an event stream).
pub(crate) fn classify_service(code: Option<&str>, status: Option<u16>) -> Option<Transient> {
    code.and_then(classify_code).or_else(|| {
        status
            .is_some_and(|s| (500..600).contains(&s))
            .then_some(Transient::new(TransientKind::ServerError, "http_5xx"))
    })
}

/// The transient class of a failed call, `None` if it is not transient (see the
/// [module](self) for the table).
pub(crate) fn classify<E: ProvideErrorMetadata>(
    error: &SdkError<E, HttpResponse>,
) -> Option<Transient> {
    match error {
        SdkError::TimeoutError(_) => Some(Transient::new(TransientKind::Timeout, "timeout")),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            Some(Transient::new(TransientKind::Timeout, "timeout"))
        }
        SdkError::DispatchFailure(d) if d.is_io() => Some(Transient::new(TransientKind::Io, "io")),
        SdkError::ResponseError(r) => classify_service(None, Some(r.raw().status().as_u16())),
        SdkError::ServiceError(s) => {
            classify_service(s.err().code(), Some(s.raw().status().as_u16()))
        }
        _ => None,
    }
}

/// How a shard's reader (polling's `GetRecords` and `GetShardIterator`, fan-out's
/// `SubscribeToShard` and its event stream) takes a failed call its own cases left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ShardReadFailure {
    /// `ResourceNotFoundException`: the shard is gone (trimmed after its retention, or its
    /// stream deleted). As the Java KCL, the shard's end, with no children known.
    ShardGone,
    /// `ExpiredIteratorException`: a new shard iterator is taken, after the last record read.
    IteratorExpired,
    /// A transient error (see the [module](self)): retried, and counted by its kind or label.
    Transient(Transient),
    /// Anything else: not retried.
    Fatal,
}

/// A shard reader's failed call by its error code and HTTP status (`None` when there is none,
/// as for an error inside an event stream): the shard's end, an expired iterator, else
/// [`classify_service`].
pub(crate) fn classify_shard_read(code: Option<&str>, status: Option<u16>) -> ShardReadFailure {
    match code {
        Some("ResourceNotFoundException") => ShardReadFailure::ShardGone,
        Some("ExpiredIteratorException") => ShardReadFailure::IteratorExpired,
        _ => classify_service(code, status)
            .map_or(ShardReadFailure::Fatal, ShardReadFailure::Transient),
    }
}

/// [`classify_shard_read`] for a failed call: a service error by its code and status, any other
/// failure (a timeout, a broken connection) as [`classify`].
pub(crate) fn classify_shard_read_error<E: ProvideErrorMetadata>(
    error: &SdkError<E, HttpResponse>,
) -> ShardReadFailure {
    match error {
        SdkError::ServiceError(s) => {
            classify_shard_read(s.err().code(), Some(s.raw().status().as_u16()))
        }
        other => classify(other).map_or(ShardReadFailure::Fatal, ShardReadFailure::Transient),
    }
}

/// Whether a failed call is worth retrying.
pub(crate) fn is_transient<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    classify(error).is_some()
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::operation::get_records::GetRecordsError;
    use aws_smithy_runtime_api::client::result::{ConnectorError, ServiceError};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::TransientKind::{Io, ServerError, Throttling, Timeout};
    use super::*;

    fn service_error(code: &str, status: u16) -> SdkError<GetRecordsError, HttpResponse> {
        let error = GetRecordsError::generic(ErrorMetadata::builder().code(code).build());
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::ServiceError(ServiceError::builder().source(error).raw(raw).build())
    }

    fn dynamodb_error(
        code: &str,
        status: u16,
    ) -> SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError, HttpResponse> {
        let error = aws_sdk_dynamodb::operation::update_item::UpdateItemError::generic(
            ErrorMetadata::builder().code(code).build(),
        );
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::ServiceError(ServiceError::builder().source(error).raw(raw).build())
    }

    #[test]
    fn every_listed_code_is_classified() {
        let cases = [
            // Kinesis.
            ("LimitExceededException", 400, Some(Throttling)),
            (
                "ProvisionedThroughputExceededException",
                400,
                Some(Throttling),
            ),
            ("ThrottlingException", 400, Some(Throttling)),
            ("KMSThrottlingException", 400, Some(Throttling)),
            ("InternalFailure", 500, Some(ServerError)),
            ("InternalFailureException", 500, Some(ServerError)),
            ("ServiceUnavailable", 503, Some(ServerError)),
            // DynamoDB.
            ("RequestLimitExceeded", 400, Some(Throttling)),
            ("TransactionInProgressException", 400, Some(Throttling)),
            ("InternalServerError", 500, Some(ServerError)),
            // The SDK's transient codes.
            ("RequestTimeout", 400, Some(Timeout)),
            ("RequestTimeoutException", 408, Some(Timeout)),
            // By status only.
            ("SomethingNew", 503, Some(ServerError)),
            ("SomethingNew", 599, Some(ServerError)),
            // Not transient: call sites decide, or the error is final.
            ("ExpiredIteratorException", 400, None),
            ("ResourceNotFoundException", 400, None),
            ("ResourceInUseException", 400, None),
            ("InvalidArgumentException", 400, None),
            ("AccessDeniedException", 400, None),
            ("KMSAccessDeniedException", 400, None),
            ("ConditionalCheckFailedException", 400, None),
            ("ExpiredNextTokenException", 400, None),
            ("SomethingNew", 404, None),
        ];
        for (code, status, expected) in cases {
            let kinesis = classify(&service_error(code, status));
            assert_eq!(kinesis.map(|t| t.kind), expected, "{code} {status}");
            assert_eq!(
                is_transient(&service_error(code, status)),
                expected.is_some()
            );
            let dynamodb = classify(&dynamodb_error(code, status));
            assert_eq!(
                dynamodb, kinesis,
                "{code} {status}: one answer for both services"
            );
        }
        // Every code the SDK itself calls throttling or transient is transient here too.
        for code in THROTTLING_ERRORS {
            assert_eq!(
                classify_code(code).map(|t| t.kind),
                Some(Throttling),
                "{code}"
            );
        }
        for code in TRANSIENT_ERRORS {
            assert_eq!(classify_code(code).map(|t| t.kind), Some(Timeout), "{code}");
        }
    }

    #[test]
    fn labels_name_the_code_else_the_cause() {
        let label = |code, status| classify(&service_error(code, status)).map(|t| t.label);
        assert_eq!(label("ServiceUnavailable", 503), Some("ServiceUnavailable"));
        assert_eq!(
            label("KMSThrottlingException", 400),
            Some("KMSThrottlingException")
        );
        assert_eq!(label("SomethingNew", 500), Some("http_5xx"));
        assert_eq!(classify_service(None, None), None);
        assert_eq!(
            classify_service(Some("InternalFailure"), None).map(|t| t.label),
            Some("InternalFailure")
        );
    }

    #[test]
    fn shard_reads_end_at_not_found_renew_expired_iterators_and_retry_the_rest() {
        use ShardReadFailure::{Fatal, IteratorExpired, ShardGone};
        let read = |code, status| classify_shard_read_error(&service_error(code, status));
        assert_eq!(read("ResourceNotFoundException", 400), ShardGone);
        assert_eq!(read("ExpiredIteratorException", 400), IteratorExpired);
        assert_eq!(
            read("ProvisionedThroughputExceededException", 400),
            ShardReadFailure::Transient(Transient::new(
                Throttling,
                "ProvisionedThroughputExceededException"
            ))
        );
        assert_eq!(
            read("SomethingNew", 502),
            ShardReadFailure::Transient(Transient::new(ServerError, "http_5xx"))
        );
        assert_eq!(read("AccessDeniedException", 400), Fatal);
        // In an event stream: no status.
        assert_eq!(
            classify_shard_read(Some("ResourceNotFoundException"), None),
            ShardGone
        );
        assert_eq!(
            classify_shard_read(Some("InternalFailure"), None),
            ShardReadFailure::Transient(Transient::new(ServerError, "InternalFailure"))
        );
        assert_eq!(classify_shard_read(None, None), Fatal);
        // Anything but a service error as `classify`.
        let timeout: SdkError<GetRecordsError, HttpResponse> =
            SdkError::timeout_error("operation timed out");
        assert_eq!(
            classify_shard_read_error(&timeout),
            ShardReadFailure::Transient(Transient::new(Timeout, "timeout"))
        );
        let construction: SdkError<GetRecordsError, HttpResponse> =
            SdkError::construction_failure("missing field");
        assert_eq!(classify_shard_read_error(&construction), Fatal);
    }

    #[test]
    fn timeouts_and_io_are_transient_other_failures_not() {
        let timeout: SdkError<GetRecordsError, HttpResponse> =
            SdkError::timeout_error("operation timed out");
        assert_eq!(classify(&timeout), Some(Transient::new(Timeout, "timeout")));
        let io: SdkError<GetRecordsError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io("connection reset".into()));
        assert_eq!(classify(&io), Some(Transient::new(Io, "io")));
        let dispatch_timeout: SdkError<GetRecordsError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::timeout("connect timeout".into()));
        assert_eq!(classify(&dispatch_timeout).map(|t| t.kind), Some(Timeout));
        let user: SdkError<GetRecordsError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::user("bad request".into()));
        assert_eq!(classify(&user), None);
        let construction: SdkError<GetRecordsError, HttpResponse> =
            SdkError::construction_failure("missing field");
        assert_eq!(classify(&construction), None);
        let unparsable_5xx: SdkError<GetRecordsError, HttpResponse> = SdkError::response_error(
            "garbled",
            HttpResponse::new(502.try_into().unwrap(), SdkBody::empty()),
        );
        assert_eq!(
            classify(&unparsable_5xx),
            Some(Transient::new(ServerError, "http_5xx"))
        );
        let unparsable_4xx: SdkError<GetRecordsError, HttpResponse> = SdkError::response_error(
            "garbled",
            HttpResponse::new(400.try_into().unwrap(), SdkBody::empty()),
        );
        assert_eq!(classify(&unparsable_4xx), None);
    }
}
