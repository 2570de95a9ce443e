//! Reading aggregated records: [`deaggregate`].

use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

use super::hash_key::{hash_key_for_partition_key, parse_explicit_hash_key};
use super::proto;
use super::{DIGEST_LEN, FRAMING_LEN, MAGIC};

/// Splits a Kinesis record's data into the user records it aggregates, or hands it back
/// unchanged, with the reason, when it is not an aggregate this module can read in full.
///
/// Sub-records' data are slices of `data` (no copy). The rules, and how they compare with the
/// Java KCL, are on [`PassThroughReason`]; in short, a record is either fully deaggregated or
/// handed back whole, never partly.
///
/// ```
/// use bytes::Bytes;
/// use kinesis_kpl::record::{Deaggregated, PassThroughReason, deaggregate};
///
/// match deaggregate(Bytes::from_static(b"just a plain record")) {
///     Deaggregated::PassThrough { data, reason } => {
///         assert_eq!(&data[..], b"just a plain record");
///         assert_eq!(reason, PassThroughReason::NoMagic);
///         assert_eq!(reason.as_str(), "no_magic");
///     }
///     Deaggregated::Aggregated(_) => unreachable!(),
/// }
/// ```
///
/// See [`AggregateBuilder`](super::AggregateBuilder) for a round trip.
pub fn deaggregate(data: Bytes) -> Deaggregated {
    match decode(&data) {
        Ok(records) => Deaggregated::Aggregated(records),
        Err(reason) => Deaggregated::PassThrough { data, reason },
    }
}

/// True if `data` starts with the aggregation magic `F3 89 9A C2` (it may still fail to
/// deaggregate; [`deaggregate`] says why).
pub fn has_magic(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// The outcome of [`deaggregate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deaggregated {
    /// The record was an aggregate; these are its user records in order (possibly none, for a
    /// well-formed aggregate that holds no record, which the Java KCL also turns into nothing).
    Aggregated(Vec<SubRecord>),
    /// The record is handed back as one plain user record, unchanged.
    PassThrough {
        /// The record's data, as given.
        data: Bytes,
        /// Why it was not deaggregated.
        reason: PassThroughReason,
    },
}

/// Why [`deaggregate`] handed a record back unchanged.
///
/// The Java KCL (`AggregatorUtil`) treats a record as not aggregated when it lacks the magic, is
/// too short, fails the MD5 check, or fails protobuf parsing, which in Java includes a missing
/// `required` field. We do the same for those, and also pass the record through in the cases
/// where the Java KCL hits an exception half-way through an aggregate (a key index out of range,
/// an explicit hash key that is not a number): Java then delivers the sub-records before the bad
/// one, silently drops the rest and logs an error; for an explicit hash key outside `0..2^128` it
/// drops the whole aggregate as "not in this shard". An aggregate like that can only come from a
/// broken producer (the MD5 was right), and handing the bytes over whole loses nothing and counts
/// the event. Every variant except [`NoMagic`](Self::NoMagic) means the record carried the magic
/// and so was probably meant to be an aggregate: worth a warning and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PassThroughReason {
    /// The data does not start with the 4-byte magic (it is a plain record), including data
    /// shorter than 4 bytes.
    NoMagic,
    /// The data starts with the magic but is 20 bytes or shorter, leaving no room for a protobuf
    /// message before the MD5 (the Java KCL's rule: an empty message does not count).
    TooShort,
    /// The last 16 bytes are not the MD5 of the bytes between the magic and them.
    DigestMismatch,
    /// The bytes between the magic and the MD5 are not a valid protobuf `AggregatedRecord`.
    InvalidProtobuf,
    /// A `Record` lacks its `partition_key_index` or `data`, or a `Tag` lacks its `key`: the
    /// fields the schema marks `required`, which the Java protobuf parser insists on.
    MissingRequiredField,
    /// An entry of the partition key or explicit hash key table is not valid UTF-8 (they are
    /// protobuf `string`s). The Java KCL would deliver it with replacement characters, which
    /// changes its hash key.
    InvalidUtf8Key,
    /// A record's partition key index or explicit hash key index is outside its table.
    KeyIndexOutOfRange,
    /// A record's explicit hash key is not a decimal integer in `0..2^128`.
    InvalidExplicitHashKey,
}

impl PassThroughReason {
    /// Every reason, for tests and for metric registration.
    pub const ALL: [Self; 8] = [
        Self::NoMagic,
        Self::TooShort,
        Self::DigestMismatch,
        Self::InvalidProtobuf,
        Self::MissingRequiredField,
        Self::InvalidUtf8Key,
        Self::KeyIndexOutOfRange,
        Self::InvalidExplicitHashKey,
    ];

    /// A stable `snake_case` name, fit for a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoMagic => "no_magic",
            Self::TooShort => "too_short",
            Self::DigestMismatch => "digest_mismatch",
            Self::InvalidProtobuf => "invalid_protobuf",
            Self::MissingRequiredField => "missing_required_field",
            Self::InvalidUtf8Key => "invalid_utf8_key",
            Self::KeyIndexOutOfRange => "key_index_out_of_range",
            Self::InvalidExplicitHashKey => "invalid_explicit_hash_key",
        }
    }

    /// True for every reason but [`NoMagic`](Self::NoMagic): the record carried the aggregation
    /// magic, so it probably was meant to be an aggregate and could not be read.
    pub fn is_malformed_aggregate(self) -> bool {
        self != Self::NoMagic
    }
}

impl std::fmt::Display for PassThroughReason {
    /// A sentence for people (an ops CLI, a log line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NoMagic => "not aggregated (no KPL magic)",
            Self::TooShort => "KPL magic, but too short to hold a message and its MD5",
            Self::DigestMismatch => "KPL magic, but the MD5 does not match",
            Self::InvalidProtobuf => "KPL magic and MD5, but the protobuf message does not parse",
            Self::MissingRequiredField => {
                "KPL magic and MD5, but a required protobuf field is missing"
            }
            Self::InvalidUtf8Key => "KPL magic and MD5, but a key table entry is not UTF-8",
            Self::KeyIndexOutOfRange => {
                "KPL magic and MD5, but a record's key index is out of its table"
            }
            Self::InvalidExplicitHashKey => {
                "KPL magic and MD5, but a record's explicit hash key is not a number in 0..2^128"
            }
        })
    }
}

/// One user record taken out of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRecord {
    partition_key: Arc<str>,
    explicit_hash_key: Option<(Arc<str>, u128)>,
    data: Bytes,
    sub_sequence_number: u64,
}

impl SubRecord {
    /// The record's partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The record's partition key, shared with the other sub-records of the aggregate that have
    /// the same key (cloning it is a reference count increment).
    pub fn shared_partition_key(&self) -> &Arc<str> {
        &self.partition_key
    }

    /// The record's explicit hash key, if it had one (always a valid decimal in `0..2^128`).
    pub fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key.as_ref().map(|(text, _)| &**text)
    }

    /// The record's data (a slice of the aggregate's buffer).
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The record's data, consuming the record.
    pub fn into_data(self) -> Bytes {
        self.data
    }

    /// The record's position in the aggregate, from 0: its sub-sequence number.
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }

    /// The hash key that places the record in a shard: its explicit hash key if it has one
    /// (parsed when the aggregate was read), else the MD5 of its partition key (computed on each
    /// call). Compare it with a shard's `StartingHashKey..=EndingHashKey`.
    pub fn effective_hash_key(&self) -> u128 {
        match &self.explicit_hash_key {
            Some((_, value)) => *value,
            None => hash_key_for_partition_key(&self.partition_key),
        }
    }
}

fn decode(data: &Bytes) -> Result<Vec<SubRecord>, PassThroughReason> {
    if !has_magic(data) {
        return Err(PassThroughReason::NoMagic);
    }
    if data.len() <= FRAMING_LEN {
        return Err(PassThroughReason::TooShort);
    }
    let body_end = data.len() - DIGEST_LEN;
    let body = data.slice(MAGIC.len()..body_end);
    if Md5::digest(&body)[..] != data[body_end..] {
        return Err(PassThroughReason::DigestMismatch);
    }
    // Decoding from `Bytes` makes every `bytes` field a slice of `data`.
    let message =
        proto::AggregatedRecord::decode(body).map_err(|_| PassThroughReason::InvalidProtobuf)?;

    let missing_required = message.records.iter().any(|record| {
        record.partition_key_index.is_none()
            || record.data.is_none()
            || record.tags.iter().any(|tag| tag.key.is_none())
    });
    if missing_required {
        return Err(PassThroughReason::MissingRequiredField);
    }

    let partition_keys = message
        .partition_key_table
        .iter()
        .map(|key| utf8(key).map(Arc::<str>::from))
        .collect::<Result<Vec<_>, _>>()?;
    // An entry that is not a valid hash key only matters if a record refers to it.
    let explicit_hash_keys = message
        .explicit_hash_key_table
        .iter()
        .map(|key| {
            utf8(key).map(|text| (Arc::<str>::from(text), parse_explicit_hash_key(text).ok()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut records = Vec::with_capacity(message.records.len());
    for (sub_sequence_number, record) in (0u64..).zip(message.records) {
        let partition_key = record
            .partition_key_index
            .and_then(|index| table_entry(&partition_keys, index))
            .ok_or(PassThroughReason::KeyIndexOutOfRange)?;
        let explicit_hash_key = match record.explicit_hash_key_index {
            None => None,
            Some(index) => match table_entry(&explicit_hash_keys, index) {
                None => return Err(PassThroughReason::KeyIndexOutOfRange),
                Some((_, None)) => return Err(PassThroughReason::InvalidExplicitHashKey),
                Some((text, Some(value))) => Some((Arc::clone(text), *value)),
            },
        };
        records.push(SubRecord {
            partition_key: Arc::clone(partition_key),
            explicit_hash_key,
            data: record.data.unwrap_or_default(),
            sub_sequence_number,
        });
    }
    Ok(records)
}

fn utf8(key: &Bytes) -> Result<&str, PassThroughReason> {
    std::str::from_utf8(key).map_err(|_| PassThroughReason::InvalidUtf8Key)
}

fn table_entry<T>(table: &[T], index: u64) -> Option<&T> {
    usize::try_from(index)
        .ok()
        .and_then(|index| table.get(index))
}
