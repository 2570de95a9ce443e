//! The crate's error type.

use std::borrow::Cow;
use std::time::Duration;

/// Everything that can go wrong in this crate.
///
/// One enum for the whole crate. It is `#[non_exhaustive]`: more variants (for example the
/// DynamoDB and Kinesis SDK errors, carried as `#[source]`) are added as the crate grows, so
/// match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A lease item lacks an attribute that every lease written by the Java KCL carries.
    #[error("lease item has no `{attribute}` attribute")]
    MissingAttribute {
        /// The DynamoDB attribute name, as the Java KCL spells it.
        attribute: &'static str,
    },

    /// A lease attribute holds a DynamoDB type other than the one the Java KCL writes.
    #[error("lease attribute `{attribute}` is a DynamoDB {found} ({value}), expected {expected}")]
    AttributeType {
        /// The DynamoDB attribute name, as the Java KCL spells it.
        attribute: &'static str,
        /// The DynamoDB type the Java KCL writes (`S`, `N`, `SS`, `B`).
        expected: &'static str,
        /// The DynamoDB type found in the item.
        found: &'static str,
        /// A rendering of the value found (truncated when long).
        value: String,
    },

    /// A lease attribute has the right DynamoDB type but a value the Java KCL would not
    /// write or could not read (a non-numeric checkpoint, a negative counter, …), or a lease
    /// about to be written has a value the Java KCL could not read back.
    #[error("lease attribute `{attribute}` has invalid value {value:?}: {reason}")]
    AttributeValue {
        /// The DynamoDB attribute name, as the Java KCL spells it.
        attribute: &'static str,
        /// The offending value (truncated when long).
        value: String,
        /// Why the value is rejected.
        reason: Cow<'static, str>,
    },

    /// A value given to a constructor (a sequence number, a stream identifier, a hash key
    /// range, …) is malformed.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidValue {
        /// What kind of value it was meant to be.
        what: &'static str,
        /// The offending value (truncated when long).
        value: String,
        /// Why the value is rejected.
        reason: Cow<'static, str>,
    },

    /// A setting is out of range or inconsistent with another. The builders
    /// ([`LeaseConfig`](crate::LeaseConfig), [`PollingConfig`](crate::PollingConfig),
    /// [`FanOutConfig`](crate::FanOutConfig), [`WorkerBuilder`](crate::WorkerBuilder)) return
    /// the [`ConfigError`] itself; it appears here when a run finds a setting unusable (a
    /// fan-out consumer ARN with several streams, a fan-out retrieval with neither a consumer
    /// name nor an ARN).
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// A DynamoDB request on the lease table failed with an error that is not retried
    /// (validation, access denied, missing table, …), or a transient error (throttling,
    /// 5xx, timeout) outlasted the retry budget. A failed condition on a lease write is not
    /// an error: the worker reads it as a lost race (a lease taken by another worker).
    #[error("DynamoDB {operation} on table `{table}` failed")]
    DynamoDb {
        /// The DynamoDB operation (`UpdateItem`, `Scan`, …).
        operation: &'static str,
        /// The lease table.
        table: String,
        /// The SDK error.
        #[source]
        source: Box<aws_sdk_dynamodb::Error>,
    },

    /// The lease table did not become usable (`ACTIVE`) in time.
    #[error("lease table `{table}` not ACTIVE after {waited:?} (last status: {status})")]
    TableNotActive {
        /// The lease table.
        table: String,
        /// The last status DynamoDB reported.
        status: String,
        /// How long it was waited for.
        waited: Duration,
    },

    /// A checkpoint write would move a lease's checkpoint backwards.
    #[error("checkpoint of lease `{lease_key}` cannot move back from {current} to {proposed}")]
    CheckpointRegression {
        /// The lease key.
        lease_key: String,
        /// The checkpoint the lease holds (`position/subSequenceNumber`).
        current: String,
        /// The rejected checkpoint.
        proposed: String,
    },

    /// A Kinesis request failed with an error that is not retried, or a transient error
    /// outlasted its retries.
    #[error("Kinesis {operation} on stream `{stream}` failed")]
    Kinesis {
        /// The Kinesis operation (`ListShards`, `GetRecords`, …).
        operation: &'static str,
        /// The stream (name or ARN).
        stream: String,
        /// The SDK error.
        #[source]
        source: Box<aws_sdk_kinesis::Error>,
    },

    /// This worker no longer holds the lease: another worker took it, or it expired before it
    /// could be renewed. Nothing was written.
    #[error("lease `{lease_key}` is no longer held by this worker")]
    LeaseLost {
        /// The lease key.
        lease_key: String,
    },

    /// `ListShards` kept returning a shard listing that does not cover the stream's hash key
    /// space exactly once (a reshard was under way), so no lease was created from it.
    #[error("shard listing of stream `{stream}` is incomplete after {attempts} attempts")]
    IncompleteShardListing {
        /// The stream (name or ARN).
        stream: String,
        /// How many listings were tried.
        attempts: u32,
    },

    /// A checkpoint names a position past the last record delivered to the processor (or,
    /// at a shard's end, something other than the end).
    #[error("checkpoint {proposed} of lease `{lease_key}` is out of range: {reason}")]
    CheckpointOutOfRange {
        /// The lease key.
        lease_key: String,
        /// The rejected checkpoint.
        proposed: String,
        /// What the allowed range is.
        reason: String,
    },

    /// The worker could not run: a bad configuration, or a failure it cannot recover from.
    #[error("worker: {0}")]
    Worker(Cow<'static, str>),

    /// An enhanced fan-out stream consumer did not become usable (`ACTIVE`) in time: its
    /// registration (or an earlier deregistration) was still under way.
    #[error(
        "stream consumer `{consumer}` of stream `{stream}` not ACTIVE after {waited:?} (last status: {status})"
    )]
    ConsumerNotActive {
        /// The stream (name or ARN).
        stream: String,
        /// The consumer's name.
        consumer: String,
        /// The last status Kinesis reported (`CREATING`, `DELETING`, or `absent`).
        status: String,
        /// How long it was waited for.
        waited: Duration,
    },
}

impl Error {
    /// Whether trying the same thing again later may succeed: a transient AWS error
    /// (throttling, a 5xx, a timeout) that outlasted its retries, a table or stream consumer
    /// not `ACTIVE` yet, a shard listing caught in the middle of a reshard. A bad
    /// configuration, a malformed lease, a lost lease or a refused checkpoint are not.
    pub fn is_retryable(&self) -> bool {
        use aws_sdk_kinesis::error::ProvideErrorMetadata;
        match self {
            Error::DynamoDb { source, .. } => {
                crate::aws::classify::classify_service(source.code(), None).is_some()
            }
            Error::Kinesis { source, .. } => {
                crate::aws::classify::classify_service(source.code(), None).is_some()
            }
            Error::TableNotActive { .. }
            | Error::ConsumerNotActive { .. }
            | Error::IncompleteShardListing { .. } => true,
            _ => false,
        }
    }
}

/// A setting refused by a builder ([`LeaseConfig`](crate::LeaseConfig),
/// [`PollingConfig`](crate::PollingConfig), [`FanOutConfig`](crate::FanOutConfig),
/// [`WorkerBuilder`](crate::WorkerBuilder)): which builder and field, the value given, and the
/// limit it breaks.
///
/// ```
/// use std::time::Duration;
/// use kinesis_kcl::PollingConfig;
///
/// let error = PollingConfig::builder().max_records(0).build().unwrap_err();
/// assert_eq!(error.field(), "max_records");
/// assert_eq!(error.value(), "0");
/// assert_eq!(
///     error.to_string(),
///     "invalid PollingConfig setting `max_records` = 0: must be between 1 and 10000"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {builder} setting `{field}` = {value}: {limit}")]
pub struct ConfigError {
    builder: &'static str,
    field: &'static str,
    value: String,
    limit: Cow<'static, str>,
}

impl ConfigError {
    /// The error for `field` of `builder` set to `value` (rendered with `Debug`, truncated),
    /// which breaks `limit`.
    pub(crate) fn new(
        builder: &'static str,
        field: &'static str,
        value: impl std::fmt::Debug,
        limit: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError {
            builder,
            field,
            value: truncate(&format!("{value:?}")),
            limit: limit.into(),
        }
    }

    /// [`ConfigError::new`] with a value rendered by `Display` (an identifier, a name).
    pub(crate) fn displayed(
        builder: &'static str,
        field: &'static str,
        value: impl std::fmt::Display,
        limit: impl Into<Cow<'static, str>>,
    ) -> Self {
        ConfigError {
            builder,
            field,
            value: truncate(&value.to_string()),
            limit: limit.into(),
        }
    }

    /// The builder that refused the setting: `LeaseConfig`, `PollingConfig`, `FanOutConfig`
    /// or `WorkerBuilder`.
    pub fn builder(&self) -> &str {
        self.builder
    }

    /// The setting, named as the builder method that sets it.
    pub fn field(&self) -> &str {
        self.field
    }

    /// The value given, as Rust's `Debug` renders it (durations, numbers, quoted strings) or,
    /// for identifiers, as they are written (cut when long).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The limit the value breaks (`must be positive`, `at most 45 % of failover_time (10s)`, …).
    pub fn limit(&self) -> &str {
        &self.limit
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest rendering of a bad value kept in an error.
const MAX_VALUE_CHARS: usize = 200;

/// Renders `value` for an error message, cut to a bounded length.
pub(crate) fn truncate(value: &str) -> String {
    if value.chars().count() <= MAX_VALUE_CHARS {
        value.to_owned()
    } else {
        let mut out: String = value.chars().take(MAX_VALUE_CHARS).collect();
        out.push('…');
        out
    }
}

impl Error {
    /// Builds [`Error::InvalidValue`].
    pub(crate) fn invalid_value(
        what: &'static str,
        value: &str,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::InvalidValue {
            what,
            value: truncate(value),
            reason: reason.into(),
        }
    }

    /// Builds [`Error::AttributeValue`].
    pub(crate) fn attribute_value(
        attribute: &'static str,
        value: &str,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::AttributeValue {
            attribute,
            value: truncate(value),
            reason: reason.into(),
        }
    }

    /// Re-labels an [`Error::InvalidValue`] as a bad value of `attribute`; other errors pass
    /// through unchanged.
    pub(crate) fn in_attribute(self, attribute: &'static str) -> Self {
        match self {
            Error::InvalidValue { value, reason, .. } => Error::AttributeValue {
                attribute,
                value,
                reason,
            },
            other => other,
        }
    }
}

impl From<kinesis_aggregation::HashKeyRangeError> for Error {
    /// A hash-key range that is not one is an [`Error::InvalidValue`].
    fn from(e: kinesis_aggregation::HashKeyRangeError) -> Self {
        use kinesis_aggregation::HashKeyRangeError;
        match e {
            HashKeyRangeError::Start(e) | HashKeyRangeError::End(e) => {
                Error::invalid_value("hash key", &e.value, e.problem.to_string())
            }
            other => Error::invalid_value("hash key range", "", other.to_string()),
        }
    }
}
