//! The crate's errors, one per purpose: [`Error`] when a producer cannot start, [`ConfigError`]
//! for a setting outside its limits, [`PutError`] for the outcome of one record's put.
//!
//! Their messages are short (a Kinesis error's code and message, never the SDK's whole dump);
//! the SDK error, where there is one, is the [`source`](std::error::Error::source), so print
//! the chain to see it.

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use kinesis_aggregation::HashKeyError;

use crate::UserRecord;
use crate::result::Attempt;
use crate::retrier::{SharedSource, is_final_code};

/// A setting outside its limits, from [`ProducerConfigBuilder::build`](crate::ProducerConfigBuilder::build)
/// (or, inside [`Error::InvalidConfig`], from [`ProducerBuilder::build`](crate::ProducerBuilder::build)).
///
/// ```
/// use kinesis_kpl::ProducerConfig;
///
/// let error = ProducerConfig::builder().collection_max_count(501).build().unwrap_err();
/// assert_eq!(error.setting, "collection_max_count");
/// assert_eq!(error.to_string(),
///     "invalid configuration: collection_max_count = 501; allowed: 1..=500");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {setting} = {value}; allowed: {limit}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The setting (as its setter is named).
    pub setting: &'static str,
    /// The value given.
    pub value: String,
    /// What is allowed.
    pub limit: String,
}

impl ConfigError {
    /// Whether building the same configuration again may succeed: never.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Why a producer could not start ([`Producer::new`](crate::Producer::new),
/// [`ProducerBuilder::build`](crate::ProducerBuilder::build)).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is outside its limits.
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// Listing the stream's shards failed.
    #[error(
        "ListShards for stream {stream} failed: {}",
        code_and_message(code, message)
    )]
    ListShards {
        /// The stream name or ARN.
        stream: String,
        /// The error code (`ResourceNotFoundException`, `AccessDeniedException`,
        /// `LimitExceededException`, …; `DispatchFailure`, `RequestTimeout` and the like when
        /// there was no answer).
        code: String,
        /// The error's message.
        message: String,
        /// The SDK error.
        #[source]
        source: SharedSource,
    },
    /// The stream has no open shard to put records to.
    #[error("stream {stream} has no open shard")]
    NoOpenShards {
        /// The stream name or ARN.
        stream: String,
    },
}

impl Error {
    /// Whether starting the producer again may succeed: when ListShards was throttled or failed
    /// transiently (a 5xx, a timeout, a dropped connection, a stream still being created), not
    /// when the stream is missing, access is denied, the stream has no open shard or a setting
    /// is invalid.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::InvalidConfig(error) => error.is_retryable(),
            Error::ListShards { code, .. } => !is_final_code(code) && code != CONSTRUCTION_FAILURE,
            Error::NoOpenShards { .. } => false,
        }
    }
}

/// The outcome of a put that did not store its record: bad input, full buffers, a record that
/// could not be put before its deadline, a refusal, or a producer shut down.
///
/// The record comes back inside the error (the KPL's `ReturnUserRecordOnFailure`), so a caller
/// can put it again or set it aside without keeping a copy: see [`PutError::into_record`]. It
/// is the record the producer held until the put resolved, handed over, not copied; only its
/// explicit hash key may differ in spelling (it is kept canonical: `"007"` becomes `"7"`).
///
/// The variants a put can resolve to are documented on
/// [`Producer::put_record`](crate::Producer::put_record).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PutError {
    /// The partition key is empty.
    #[error("partition key is empty: it must be 1 to {max} Unicode characters")]
    EmptyPartitionKey {
        /// The limit, 256.
        max: usize,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// The partition key is longer than 256 characters as Kinesis counts them (UTF-16 code
    /// units: two for a character outside the Basic Multilingual Plane, such as an emoji).
    #[error("partition key of {chars} characters (UTF-16 code units) is over the limit of {max}")]
    PartitionKeyTooLong {
        /// Its length in UTF-16 code units.
        chars: usize,
        /// The limit, 256.
        max: usize,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// Partition key plus data are larger than the stream's maximum record size.
    #[error(
        "record of {size} bytes (partition key + data) is over the maximum record size of {max} bytes"
    )]
    RecordTooLarge {
        /// The record's size in bytes.
        size: usize,
        /// The configured maximum record size.
        max: usize,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// The explicit hash key is not a decimal integer in `0..2^128`.
    #[error("{error}")]
    InvalidExplicitHashKey {
        /// What is wrong with it.
        error: HashKeyError,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// `try_put_record` found the buffers at their bound.
    #[error(
        "producer buffers are full: at most {max_records} records and {max_bytes} bytes may be outstanding"
    )]
    Full {
        /// The configured bound on buffered records.
        max_records: usize,
        /// The configured bound on buffered bytes.
        max_bytes: usize,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// The record could not be put before its deadline (`record_ttl`). Every attempt made is
    /// listed.
    #[error("record expired after {} attempt(s){}", attempts.len(), last_error(attempts))]
    Expired {
        /// The attempts, oldest first.
        attempts: Vec<Attempt>,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// The record was throttled and `fail_if_throttled` is set.
    #[error(
        "record throttled and fail_if_throttled is set{}",
        last_error(attempts)
    )]
    Throttled {
        /// The attempts, oldest first.
        attempts: Vec<Attempt>,
        /// The SDK error, when the whole call failed (a throttled entry of an answered call
        /// has only the code and message of its attempt).
        #[source]
        source: Option<SharedSource>,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// Kinesis refused the record with an error that retrying cannot fix (for example an
    /// unknown stream, a KMS key that is disabled, or missing permissions).
    #[error("record rejected{}", last_error(attempts))]
    Rejected {
        /// The attempts, oldest first; the last holds the refusal.
        attempts: Vec<Attempt>,
        /// The SDK error, when the whole call failed (a refused entry of an answered call has
        /// only the code and message of its attempt).
        #[source]
        source: Option<SharedSource>,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// The call carrying the record ended without an answer (its task panicked, e.g. in a
    /// user-supplied SDK interceptor), or the record was stored on a shard that could not be
    /// listed before its deadline: it may or may not be stored where a consumer reads it. Not
    /// retried, so it is never stored twice by the producer; the attempts say what happened.
    #[error(
        "outcome unknown: the record may or may not be stored{}",
        last_error(attempts)
    )]
    UnknownOutcome {
        /// The attempts, oldest first.
        attempts: Vec<Attempt>,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// The record names no stream ([`UserRecord::stream`]) and the producer has none of its
    /// own (it was started with [`Producer::multi_stream`](crate::Producer::multi_stream)).
    #[error("the record names no stream and the producer has no default stream")]
    NoStream {
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// The record's stream could not be put to: listing its shards failed (the stream is
    /// missing, access is denied, or ListShards kept failing for the record's TTL). The records
    /// of other streams are not affected; a record for this stream put again after a second
    /// lists it again.
    #[error("stream {stream} is unavailable")]
    StreamUnavailable {
        /// The stream name or ARN, as the record gave it.
        stream: String,
        /// Why: the listing's error ([`Error::ListShards`] or [`Error::NoOpenShards`]).
        #[source]
        source: Box<Error>,
        /// The record, handed back.
        record: Box<UserRecord>,
    },
    /// The producer was shut down before the record was accepted.
    #[error("the producer is shut down")]
    ShutDown {
        /// The record, handed back; `None` only if the producer's pipeline task ended
        /// abnormally (it panicked) with the record inside.
        record: Option<Box<UserRecord>>,
    },
}

impl PutError {
    /// Whether putting the same record again may succeed: after [`Full`](PutError::Full),
    /// [`Expired`](PutError::Expired), [`Throttled`](PutError::Throttled) (later, when the
    /// shard has room), [`UnknownOutcome`](PutError::UnknownOutcome) (the record may then
    /// be stored twice) and [`StreamUnavailable`](PutError::StreamUnavailable) when its listing
    /// failed transiently. Not for invalid input, a record naming no stream, a
    /// [`Rejected`](PutError::Rejected) record or a producer [`ShutDown`](PutError::ShutDown).
    pub fn is_retryable(&self) -> bool {
        match self {
            PutError::StreamUnavailable { source, .. } => source.is_retryable(),
            PutError::Full { .. }
            | PutError::Expired { .. }
            | PutError::Throttled { .. }
            | PutError::UnknownOutcome { .. } => true,
            PutError::EmptyPartitionKey { .. }
            | PutError::PartitionKeyTooLong { .. }
            | PutError::RecordTooLarge { .. }
            | PutError::InvalidExplicitHashKey { .. }
            | PutError::NoStream { .. }
            | PutError::Rejected { .. }
            | PutError::ShutDown { .. } => false,
        }
    }

    /// The record whose put failed.
    pub fn record(&self) -> Option<&UserRecord> {
        match self {
            PutError::EmptyPartitionKey { record, .. }
            | PutError::PartitionKeyTooLong { record, .. }
            | PutError::RecordTooLarge { record, .. }
            | PutError::InvalidExplicitHashKey { record, .. }
            | PutError::Full { record, .. }
            | PutError::Expired { record, .. }
            | PutError::Throttled { record, .. }
            | PutError::Rejected { record, .. }
            | PutError::NoStream { record }
            | PutError::StreamUnavailable { record, .. }
            | PutError::UnknownOutcome { record, .. } => Some(record),
            PutError::ShutDown { record } => record.as_deref(),
        }
    }

    /// The record whose put failed, to put again (when [`is_retryable`](PutError::is_retryable))
    /// or to set aside. `None` only for [`ShutDown`](PutError::ShutDown) after the pipeline
    /// task panicked.
    ///
    /// ```no_run
    /// # async fn run(producer: kinesis_kpl::Producer, dead_letters: &mut Vec<kinesis_kpl::UserRecord>) {
    /// use kinesis_kpl::{PutError, UserRecord};
    ///
    /// let mut record = UserRecord::new("user-17", "clicked");
    /// loop {
    ///     match producer.put_record(record).await {
    ///         Ok(_) => break,
    ///         Err(error) if error.is_retryable() => match error.into_record() {
    ///             Some(again) => record = again,
    ///             None => break,
    ///         },
    ///         Err(error) => {
    ///             eprintln!("{error}");
    ///             dead_letters.extend(error.into_record());
    ///             break;
    ///         }
    ///     }
    /// }
    /// # }
    /// ```
    pub fn into_record(self) -> Option<UserRecord> {
        match self {
            PutError::EmptyPartitionKey { record, .. }
            | PutError::PartitionKeyTooLong { record, .. }
            | PutError::RecordTooLarge { record, .. }
            | PutError::InvalidExplicitHashKey { record, .. }
            | PutError::Full { record, .. }
            | PutError::Expired { record, .. }
            | PutError::Throttled { record, .. }
            | PutError::Rejected { record, .. }
            | PutError::NoStream { record }
            | PutError::StreamUnavailable { record, .. }
            | PutError::UnknownOutcome { record, .. } => Some(*record),
            PutError::ShutDown { record } => record.map(|record| *record),
        }
    }
}

/// The code of a request that could not be built (never sent).
pub(crate) const CONSTRUCTION_FAILURE: &str = "ConstructionFailure";

/// A failed call's code and short message: a service error's own code and message; otherwise
/// the kind of failure (`RequestTimeout`, `DispatchFailure`, …) and the first few causes' texts.
/// Never the SDK's `Debug` dump (response headers, request ids), which stays in the source.
pub(crate) fn sdk_code_and_message<E, R>(error: &SdkError<E, R>) -> (&str, String)
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let code = match error {
        SdkError::ServiceError(service) => {
            let err = service.err();
            return (
                err.code().unwrap_or("UnknownServiceError"),
                err.message().unwrap_or_default().to_owned(),
            );
        }
        SdkError::TimeoutError(_) => "RequestTimeout",
        // The connection's own timeout.
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "RequestTimeout",
        SdkError::DispatchFailure(_) => "DispatchFailure",
        SdkError::ResponseError(_) => "ResponseError",
        SdkError::ConstructionFailure(_) => CONSTRUCTION_FAILURE,
        _ => "SdkError",
    };
    (code, causes(error))
}

/// The texts of an error and its first causes, joined by `": "`.
pub(crate) fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    /// Deep enough for the SDK's dispatch failures (connector error, HTTP client error, I/O).
    const DEPTH: usize = 4;
    let mut text = error.to_string();
    let mut cause = error.source();
    for _ in 1..DEPTH {
        let Some(next) = cause else { break };
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

fn code_and_message(code: &str, message: &str) -> String {
    if message.is_empty() {
        code.to_owned()
    } else {
        format!("{code}: {message}")
    }
}

fn last_error(attempts: &[Attempt]) -> String {
    match attempts
        .iter()
        .rev()
        .find_map(|a| a.error_code.as_deref().map(|c| (c, a)))
    {
        Some((code, attempt)) => format!(
            "; last error {}",
            code_and_message(code, attempt.error_message.as_deref().unwrap_or(""))
        ),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    use aws_sdk_kinesis::operation::list_shards::ListShardsError;
    use aws_smithy_types::error::ErrorMetadata;

    /// A service error as the SDK builds one, with a raw response that must not show.
    fn service_error(code: &str, message: &str) -> SdkError<ListShardsError, &'static str> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message(message)
            .custom("request_id", "a-request-id")
            .build();
        SdkError::service_error(
            ListShardsError::generic(meta),
            "HTTP/1.1 400 x-amzn-RequestId: a-request-id",
        )
    }

    #[test]
    fn list_shards_failures_say_code_and_message_and_keep_the_sdk_error_as_source() {
        let sdk = service_error("ResourceNotFoundException", "Stream s not found");
        let (code, message) = sdk_code_and_message(&sdk);
        let error = Error::ListShards {
            stream: "s".into(),
            code: code.to_owned(),
            message,
            source: Arc::new(sdk),
        };
        assert_eq!(
            error.to_string(),
            "ListShards for stream s failed: ResourceNotFoundException: Stream s not found"
        );
        assert!(std::error::Error::source(&error).is_some());
        assert!(!error.is_retryable());

        let sdk = service_error("LimitExceededException", "Rate exceeded");
        let (code, message) = sdk_code_and_message(&sdk);
        let throttled = Error::ListShards {
            stream: "s".into(),
            code: code.to_owned(),
            message,
            source: Arc::new(sdk),
        };
        assert!(throttled.is_retryable());
        assert!(
            !throttled.to_string().contains("a-request-id"),
            "{throttled}"
        );
    }

    #[test]
    fn retryable_says_whether_the_same_record_may_succeed() {
        let record = || Box::new(UserRecord::new("k", "v"));
        assert!(
            PutError::Expired {
                attempts: vec![],
                record: record()
            }
            .is_retryable()
        );
        assert!(
            PutError::Full {
                max_records: 1,
                max_bytes: 1,
                record: record()
            }
            .is_retryable()
        );
        assert!(
            !PutError::Rejected {
                attempts: vec![],
                source: None,
                record: record()
            }
            .is_retryable()
        );
        assert!(
            !PutError::EmptyPartitionKey {
                max: 256,
                record: record()
            }
            .is_retryable()
        );
        assert!(!PutError::ShutDown { record: None }.is_retryable());
        assert!(!Error::NoOpenShards { stream: "s".into() }.is_retryable());
    }
}
