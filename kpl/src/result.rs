//! What a user puts and what each put resolves to.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// One user record: a partition key, an optional explicit hash key, the data, and optionally
/// the stream to put it to (the producer's own stream otherwise).
///
/// ```
/// use kinesis_kpl::UserRecord;
///
/// let record = UserRecord::new("sensor-42", "{\"t\":21.5}").explicit_hash_key("12345");
/// assert_eq!(record.partition_key, "sensor-42");
/// let audit = UserRecord::new("sensor-42", "calibrated").stream("audit-events");
/// assert_eq!(audit.stream.as_deref(), Some("audit-events"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    /// Chooses the shard (through MD5) unless an explicit hash key is given; 1 to 256 Unicode
    /// characters.
    pub partition_key: String,
    /// A decimal integer in `0..2^128` that chooses the shard instead of the partition key.
    pub explicit_hash_key: Option<String>,
    /// The payload; partition key + data at most the stream's maximum record size.
    pub data: Bytes,
    /// The stream to put it to, by name or ARN (`arn:…`); `None` for the producer's own stream
    /// (the one it was built for). A stream is known by the spelling given: its name and its
    /// ARN are two streams to the producer, each with its own pipeline.
    pub stream: Option<String>,
}

impl UserRecord {
    /// A record with a partition key and data.
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Self {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
            stream: None,
        }
    }

    /// Sets the stream to put it to (a name, or an ARN starting with `arn:`), instead of the
    /// producer's own: one producer puts to any number of streams, within one set of memory
    /// bounds and one connection budget.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// Sets the explicit hash key.
    pub fn explicit_hash_key(mut self, explicit_hash_key: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key.into());
        self
    }
}

/// Where a user record was stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResult {
    /// The shard that stored it.
    pub shard_id: String,
    /// The sequence number of the Kinesis record holding it (shared by every user record of one
    /// aggregate).
    pub sequence_number: String,
    /// Its position inside the aggregate (0 for a record sent on its own); with the sequence
    /// number it identifies the record exactly, as the KCL's extended sequence number does.
    pub sub_sequence_number: u64,
    /// The attempts made, oldest first; the last one succeeded. At most
    /// [`MAX_ATTEMPTS_KEPT`] are kept (the first and the latest), so that a record retried for
    /// a long time holds bounded memory.
    pub attempts: Vec<Attempt>,
}

/// How many attempts a record keeps: the first and the latest `MAX_ATTEMPTS_KEPT - 1`. With the
/// default `record_ttl` (30 s) and backoff (100 ms doubling to 5 s, jittered) a record rarely
/// makes more than about 20; the bound matters for long TTLs, where a record retried for hours
/// would otherwise hold an ever-growing list.
pub const MAX_ATTEMPTS_KEPT: usize = 16;

/// One try at putting a record, as the KPL's `Attempt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Time between the end of the previous attempt (or the put) and the start of this one:
    /// buffering, rate limiting and backoff.
    pub delay: Duration,
    /// How long the PutRecords call took.
    pub duration: Duration,
    /// The error code (`ProvisionedThroughputExceededException`, `InternalFailure`,
    /// `RequestTimeout`, …), `None` on success. Shared by every record the failure concerned.
    pub error_code: Option<Arc<str>>,
    /// The error message, `None` on success. Held once per failed call and distinct message,
    /// shared by every record it concerned (not copied per record).
    pub error_message: Option<Arc<str>>,
    /// Whether this attempt stored the record.
    pub success: bool,
}
