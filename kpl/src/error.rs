//! The crate's one error type.

use crate::result::Attempt;
use kinesis_aggregation::HashKeyError;

/// Everything that can go wrong in the producer: bad input, full buffers, a record that could
/// not be put before its deadline, bad configuration, or the stream not being reachable.
///
/// A put's future resolves to `Result<PutResult, Error>`; the variants a put can resolve to are
/// documented on [`Producer::put_record`](crate::Producer::put_record).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The partition key is empty.
    #[error("partition key is empty: it must be 1 to {max} Unicode characters")]
    EmptyPartitionKey {
        /// The limit, 256.
        max: usize,
    },
    /// The partition key is longer than 256 characters as Kinesis counts them (UTF-16 code
    /// units: two for a character outside the Basic Multilingual Plane, such as an emoji).
    #[error("partition key of {chars} characters (UTF-16 code units) is over the limit of {max}")]
    PartitionKeyTooLong {
        /// Its length in UTF-16 code units.
        chars: usize,
        /// The limit, 256.
        max: usize,
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
    },
    /// The explicit hash key is not a decimal integer in `0..2^128`.
    #[error(transparent)]
    InvalidExplicitHashKey(#[from] HashKeyError),
    /// `try_put_record` found the buffers at their bound.
    #[error(
        "producer buffers are full: at most {max_records} records and {max_bytes} bytes may be outstanding"
    )]
    Full {
        /// The configured bound on buffered records.
        max_records: usize,
        /// The configured bound on buffered bytes.
        max_bytes: usize,
    },
    /// The record could not be put before its deadline (`record_ttl`). Every attempt made is
    /// listed.
    #[error("record expired after {} attempt(s){}", attempts.len(), last_error(attempts))]
    Expired {
        /// The attempts, oldest first.
        attempts: Vec<Attempt>,
    },
    /// The record was throttled and `fail_if_throttled` is set.
    #[error(
        "record throttled and fail_if_throttled is set{}",
        last_error(attempts)
    )]
    Throttled {
        /// The attempts, oldest first.
        attempts: Vec<Attempt>,
    },
    /// Kinesis refused the record with an error that retrying cannot fix (for example an
    /// unknown stream, a KMS key that is disabled, or missing permissions).
    #[error("record rejected{}", last_error(attempts))]
    Rejected {
        /// The attempts, oldest first; the last holds the refusal.
        attempts: Vec<Attempt>,
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
    },
    /// The producer was shut down before the record was accepted.
    #[error("the producer is shut down")]
    ShutDown,
    /// A configuration value is outside its limits.
    #[error("invalid configuration: {setting} = {value}; allowed: {limit}")]
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        limit: String,
    },
    /// Listing the stream's shards failed.
    #[error("ListShards for stream {stream} failed: {message}")]
    ListShards {
        /// The stream name or ARN.
        stream: String,
        /// The SDK error, rendered (the SDK error itself is not `Clone`).
        message: String,
        /// The SDK error.
        #[source]
        source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The stream has no open shard to put records to.
    #[error("stream {stream} has no open shard")]
    NoOpenShards {
        /// The stream name or ARN.
        stream: String,
    },
}

fn last_error(attempts: &[Attempt]) -> String {
    match attempts
        .iter()
        .rev()
        .find_map(|a| a.error_code.as_deref().map(|c| (c, a)))
    {
        Some((code, attempt)) => format!(
            "; last error {code}: {}",
            attempt.error_message.as_deref().unwrap_or("")
        ),
        None => String::new(),
    }
}
