//! Reading aggregated records: [`deaggregate`].

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};

use super::hash_key::{hash_key_for_partition_key, parse_explicit_hash_key};
use super::wire::{LEN, Malformed, Reader, VARINT};
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
/// use kinesis_aggregation::{Deaggregated, PassThroughReason, deaggregate};
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

/// How many of `records` have an effective hash key outside `start..=end`; see
/// [`HashKeyRange::count_outside`](crate::HashKeyRange::count_outside).
pub(crate) fn count_outside_range(
    records: &[SubRecord],
    start: u128,
    end: u128,
    mut hash_key: impl FnMut(&str) -> u128,
) -> usize {
    let mut cache: Vec<Option<u128>> = Vec::new();
    let mut cached_for: Option<&Arc<KeyTables>> = None;
    let mut outside = 0;
    for record in records {
        let key = match record.explicit_hash_key_entry() {
            Some((_, Some(value))) => *value,
            _ => {
                if !cached_for.is_some_and(|k| Arc::ptr_eq(k, &record.keys)) {
                    cached_for = Some(&record.keys);
                    cache.clear();
                    cache.resize(record.keys.partition_keys.len(), None);
                }
                match cache.get_mut(record.partition_key as usize) {
                    Some(slot) => *slot.get_or_insert_with(|| hash_key(record.partition_key())),
                    None => hash_key(record.partition_key()),
                }
            }
        };
        if key < start || key > end {
            outside += 1;
        }
    }
    outside
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
/// `required` field. We do the same for those, and parse as Java does (unknown fields are
/// skipped, and so is a known field with an unexpected wire type, which may then leave a required
/// field missing). We also pass the record through in the cases where the Java KCL hits an
/// exception half-way through an aggregate (a key index out of range, an explicit hash key that
/// is not a number): Java then delivers the sub-records before the bad one, silently drops the
/// rest and logs an error; for an explicit hash key outside `0..2^128` it drops the whole
/// aggregate as "not in this shard". An aggregate like that can only come from a broken producer
/// (the MD5 was right), and handing the bytes over whole loses nothing and counts the event.
///
/// When several reasons apply, the one declared first here is reported (the variants go from the
/// framing, through the protobuf, to what the fields mean). Every variant except
/// [`NoMagic`](Self::NoMagic) means the record carried the magic and so was probably meant to be
/// an aggregate: worth a warning and a metric.
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
///
/// Cheap to clone: the data is a slice of the aggregate's buffer and the keys live in tables
/// shared by every sub-record of the aggregate.
#[derive(Clone)]
pub struct SubRecord {
    keys: Arc<KeyTables>,
    /// Index into `keys.partition_keys`.
    partition_key: u32,
    /// Index into `keys.explicit_hash_keys`, or `NO_EXPLICIT_HASH_KEY`.
    explicit_hash_key: u32,
    data: Bytes,
    sub_sequence_number: u64,
}

const NO_EXPLICIT_HASH_KEY: u32 = u32::MAX;

/// The key tables of one aggregate: every key in one string (one allocation per aggregate), and
/// where each is in it.
#[derive(Debug, Default)]
struct KeyTables {
    text: String,
    partition_keys: Vec<Range<usize>>,
    /// Where each explicit hash key is, and its value if it is a valid one.
    explicit_hash_keys: Vec<(Range<usize>, Option<u128>)>,
}

impl KeyTables {
    fn text(&self, range: &Range<usize>) -> &str {
        self.text.get(range.clone()).unwrap_or_default()
    }
}

impl SubRecord {
    /// The record's partition key.
    pub fn partition_key(&self) -> &str {
        self.keys
            .partition_keys
            .get(self.partition_key as usize)
            .map_or("", |range| self.keys.text(range))
    }

    /// The record's explicit hash key, if it had one (always a valid decimal in `0..2^128`).
    pub fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key_entry()
            .map(|(range, _)| self.keys.text(range))
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
        match self.explicit_hash_key_entry() {
            Some((_, Some(value))) => *value,
            _ => hash_key_for_partition_key(self.partition_key()),
        }
    }

    fn explicit_hash_key_entry(&self) -> Option<&(Range<usize>, Option<u128>)> {
        if self.explicit_hash_key == NO_EXPLICIT_HASH_KEY {
            return None;
        }
        self.keys
            .explicit_hash_keys
            .get(self.explicit_hash_key as usize)
    }
}

impl PartialEq for SubRecord {
    fn eq(&self, other: &Self) -> bool {
        self.partition_key() == other.partition_key()
            && self.explicit_hash_key() == other.explicit_hash_key()
            && self.data == other.data
            && self.sub_sequence_number == other.sub_sequence_number
    }
}

impl Eq for SubRecord {}

impl std::fmt::Debug for SubRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubRecord")
            .field("partition_key", &self.partition_key())
            .field("explicit_hash_key", &self.explicit_hash_key())
            .field("data", &self.data)
            .field("sub_sequence_number", &self.sub_sequence_number)
            .finish()
    }
}

impl From<Malformed> for PassThroughReason {
    fn from(_: Malformed) -> Self {
        Self::InvalidProtobuf
    }
}

/// Remembers the first reason, in [`PassThroughReason`]'s declaration order, that applies, while
/// the rest of the message is still checked for a more fundamental one.
#[derive(Default)]
struct Verdict(Option<PassThroughReason>);

impl Verdict {
    fn fail(&mut self, reason: PassThroughReason) {
        self.0 = Some(self.0.map_or(reason, |seen| seen.min(reason)));
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
    let body = &data[MAGIC.len()..body_end];
    if Md5::digest(body)[..] != data[body_end..] {
        return Err(PassThroughReason::DigestMismatch);
    }

    // Pass 1: the key tables (which may come anywhere), and the message's overall shape.
    let mut verdict = Verdict::default();
    let mut keys = KeyTables::default();
    let mut pk_ranges = Vec::new();
    let mut ehk_ranges = Vec::new();
    let mut record_count = 0usize;
    let mut reader = Reader::new(body);
    while !reader.is_done() {
        match reader.key()? {
            (1, LEN) => pk_ranges.push(reader.len_delimited()?),
            (2, LEN) => ehk_ranges.push(reader.len_delimited()?),
            (3, LEN) => {
                reader.len_delimited()?;
                record_count += 1;
            }
            // Java's parser keeps a known field with an unexpected wire type as an unknown field.
            (field, wire_type) => reader.skip(field, wire_type)?,
        }
    }
    keys.text.reserve(
        pk_ranges
            .iter()
            .chain(&ehk_ranges)
            .map(ExactSizeIterator::len)
            .sum(),
    );
    for range in pk_ranges {
        match append_key(&mut keys.text, &body[range]) {
            Some((range, _)) => keys.partition_keys.push(range),
            None => verdict.fail(PassThroughReason::InvalidUtf8Key),
        }
    }
    for range in ehk_ranges {
        match append_key(&mut keys.text, &body[range]) {
            // A bad value only matters if a record refers to it.
            Some((range, key)) => keys
                .explicit_hash_keys
                .push((range, parse_explicit_hash_key(key).ok())),
            None => verdict.fail(PassThroughReason::InvalidUtf8Key),
        }
    }
    let keys = Arc::new(keys);

    // Pass 2: the records.
    let mut records = Vec::with_capacity(record_count);
    let mut reader = Reader::new(body);
    while !reader.is_done() {
        let (field, wire_type) = reader.key()?;
        if (field, wire_type) != (3, LEN) {
            reader.skip(field, wire_type)?;
            continue;
        }
        let record = reader.len_delimited()?;
        let RawRecord {
            pk_index,
            ehk_index,
            data: data_range,
        } = read_record(reader.nested(record), &mut verdict)?;
        let partition_key = pk_index
            .and_then(|index| checked_index(index, keys.partition_keys.len()))
            .ok_or(PassThroughReason::KeyIndexOutOfRange);
        let explicit_hash_key = match ehk_index {
            None => Ok(NO_EXPLICIT_HASH_KEY),
            Some(index) => match checked_index(index, keys.explicit_hash_keys.len()) {
                None => Err(PassThroughReason::KeyIndexOutOfRange),
                Some(index) if keys.explicit_hash_keys[index as usize].1.is_none() => {
                    Err(PassThroughReason::InvalidExplicitHashKey)
                }
                Some(index) => Ok(index),
            },
        };
        match (partition_key, explicit_hash_key, data_range) {
            (Ok(partition_key), Ok(explicit_hash_key), Some(range)) if verdict.0.is_none() => {
                records.push(SubRecord {
                    keys: Arc::clone(&keys),
                    partition_key,
                    explicit_hash_key,
                    data: data.slice(MAGIC.len() + range.start..MAGIC.len() + range.end),
                    sub_sequence_number: records.len() as u64,
                });
            }
            (partition_key, explicit_hash_key, _) => {
                // A missing field was already noted by `read_record`.
                if let Err(reason) = partition_key.and(explicit_hash_key) {
                    verdict.fail(reason);
                }
            }
        }
    }
    match verdict.0 {
        Some(reason) => Err(reason),
        None => Ok(records),
    }
}

/// The fields of one `Record` that matter, as read.
struct RawRecord {
    pk_index: Option<u64>,
    ehk_index: Option<u64>,
    /// Where the data is in the message body.
    data: Option<Range<usize>>,
}

/// Reads one `Record`. Notes missing required fields (including a `Tag` without its key) in
/// `verdict`.
fn read_record(mut reader: Reader<'_>, verdict: &mut Verdict) -> Result<RawRecord, Malformed> {
    let (mut pk_index, mut ehk_index, mut data) = (None, None, None);
    while !reader.is_done() {
        match reader.key()? {
            (1, VARINT) => pk_index = Some(reader.varint()?),
            (2, VARINT) => ehk_index = Some(reader.varint()?),
            (3, LEN) => data = Some(reader.len_delimited()?),
            (4, LEN) => {
                let tag = reader.len_delimited()?;
                let mut tag = reader.nested(tag);
                let mut has_key = false;
                while !tag.is_done() {
                    match tag.key()? {
                        (1, LEN) => has_key = tag.len_delimited().map(|_| true)?,
                        (field, wire_type) => tag.skip(field, wire_type)?,
                    }
                }
                if !has_key {
                    verdict.fail(PassThroughReason::MissingRequiredField);
                }
            }
            (field, wire_type) => reader.skip(field, wire_type)?,
        }
    }
    if pk_index.is_none() || data.is_none() {
        verdict.fail(PassThroughReason::MissingRequiredField);
    }
    Ok(RawRecord {
        pk_index,
        ehk_index,
        data,
    })
}

/// Appends a key-table entry to `text` if it is UTF-8; returns where it went and the key.
fn append_key<'a>(text: &mut String, key: &'a [u8]) -> Option<(Range<usize>, &'a str)> {
    let key = std::str::from_utf8(key).ok()?;
    let start = text.len();
    text.push_str(key);
    Some((start..text.len(), key))
}

/// `index` as a `u32`, if it is below `len` (and below `u32::MAX`, which no real table reaches).
fn checked_index(index: u64, len: usize) -> Option<u32> {
    u32::try_from(index)
        .ok()
        .filter(|&index| index != NO_EXPLICIT_HASH_KEY && (index as usize) < len)
}

#[cfg(test)]
mod tests {
    //! Differential tests against the `prost` reference messages.

    use super::super::proto;
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    fn frame(body: &[u8]) -> Bytes {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&Md5::digest(body));
        Bytes::from(out)
    }

    /// What the rules say `message` deaggregates to, computed straight from the prost structs.
    fn expected(
        message: &proto::AggregatedRecord,
    ) -> Result<Vec<(String, Option<String>, Bytes)>, PassThroughReason> {
        let missing = message.records.iter().any(|r| {
            r.partition_key_index.is_none()
                || r.data.is_none()
                || r.tags.iter().any(|t| t.key.is_none())
        });
        if missing {
            return Err(PassThroughReason::MissingRequiredField);
        }
        let utf8 = |table: &[Bytes]| -> Option<Vec<String>> {
            table
                .iter()
                .map(|k| String::from_utf8(k.to_vec()).ok())
                .collect()
        };
        let (Some(pks), Some(ehks)) = (
            utf8(&message.partition_key_table),
            utf8(&message.explicit_hash_key_table),
        ) else {
            return Err(PassThroughReason::InvalidUtf8Key);
        };
        let mut out = Vec::new();
        let mut worst: Option<PassThroughReason> = None;
        for record in &message.records {
            let pk = pks.get(record.partition_key_index.unwrap_or(u64::MAX) as usize);
            let ehk = record.explicit_hash_key_index.map(|i| ehks.get(i as usize));
            let reason = match (pk, &ehk) {
                (None, _) | (_, Some(None)) => Some(PassThroughReason::KeyIndexOutOfRange),
                (_, Some(Some(e))) if parse_explicit_hash_key(e).is_err() => {
                    Some(PassThroughReason::InvalidExplicitHashKey)
                }
                _ => None,
            };
            if let Some(reason) = reason {
                worst = Some(worst.map_or(reason, |w| w.min(reason)));
                continue;
            }
            out.push((
                pk.unwrap().clone(),
                ehk.flatten().cloned(),
                record.data.clone().unwrap(),
            ));
        }
        match worst {
            Some(reason) => Err(reason),
            None => Ok(out),
        }
    }

    fn actual(data: Bytes) -> Result<Vec<(String, Option<String>, Bytes)>, PassThroughReason> {
        match deaggregate(data) {
            Deaggregated::Aggregated(records) => Ok(records
                .into_iter()
                .map(|r| {
                    (
                        r.partition_key().to_owned(),
                        r.explicit_hash_key().map(str::to_owned),
                        r.data().clone(),
                    )
                })
                .collect()),
            Deaggregated::PassThrough { reason, .. } => Err(reason),
        }
    }

    fn key() -> impl Strategy<Value = Bytes> {
        prop_oneof![
            8 => "[a-c]{0,3}".prop_map(Bytes::from),
            4 => "[0-9]{1,3}".prop_map(Bytes::from),
            1 => Just(Bytes::from_static(b"\xff")),
            1 => Just(Bytes::from_static(b"340282366920938463463374607431768211456")),
        ]
    }

    fn record() -> impl Strategy<Value = proto::Record> {
        let tag = (
            proptest::option::weighted(0.9, key()),
            proptest::option::of(key()),
        )
            .prop_map(|(key, value)| proto::Tag { key, value });
        (
            proptest::option::weighted(0.95, 0u64..4),
            proptest::option::of(0u64..3),
            proptest::option::weighted(
                0.95,
                proptest::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from),
            ),
            proptest::collection::vec(tag, 0..2),
        )
            .prop_map(
                |(partition_key_index, explicit_hash_key_index, data, tags)| proto::Record {
                    partition_key_index,
                    explicit_hash_key_index,
                    data,
                    tags,
                },
            )
    }

    fn message() -> impl Strategy<Value = proto::AggregatedRecord> {
        (
            proptest::collection::vec(key(), 0..4),
            proptest::collection::vec(key(), 0..3),
            proptest::collection::vec(record(), 0..6),
        )
            .prop_map(|(partition_key_table, explicit_hash_key_table, records)| {
                proto::AggregatedRecord {
                    partition_key_table,
                    explicit_hash_key_table,
                    records,
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Messages prost encodes (valid and invalid per the rules) decode as the rules say.
        #[test]
        fn decodes_what_prost_encodes_as_the_rules_say(message in message()) {
            let body = message.encode_to_vec();
            let expected = if body.is_empty() { Err(PassThroughReason::TooShort) } else { expected(&message) };
            prop_assert_eq!(actual(frame(&body)), expected);
        }

        /// On arbitrary bodies, whenever prost can parse the message, we agree with the rules
        /// applied to what it parsed. (Where prost refuses a known field with another wire type
        /// we skip it, as Java does, so prost failing says nothing.)
        #[test]
        fn agrees_with_prost_on_arbitrary_bodies(body in proptest::collection::vec(any::<u8>(), 1..64)) {
            if let Ok(message) = proto::AggregatedRecord::decode(&body[..]) {
                prop_assert_eq!(actual(frame(&body)), expected(&message));
            }
        }
    }

    #[test]
    fn known_fields_with_another_wire_type_are_skipped_like_java() {
        // partition_key_table as a varint; a record whose data is a varint (so data is missing).
        let mut body = vec![0x08, 0x01];
        assert_eq!(actual(frame(&body)), Ok(vec![]));
        body.extend_from_slice(&[0x0a, 0x01, b'k', 0x1a, 0x04, 0x08, 0x00, 0x18, 0x05]);
        assert_eq!(
            actual(frame(&body)),
            Err(PassThroughReason::MissingRequiredField)
        );
        assert!(
            proto::AggregatedRecord::decode(&body[..]).is_err(),
            "prost is stricter"
        );
    }

    #[test]
    fn the_most_fundamental_reason_wins() {
        // Record 0: index out of range. Record 1: no data. Table: not UTF-8.
        let message = proto::AggregatedRecord {
            partition_key_table: vec![Bytes::from_static(b"\xff")],
            explicit_hash_key_table: vec![],
            records: vec![
                proto::Record {
                    partition_key_index: Some(9),
                    data: Some(Bytes::new()),
                    ..Default::default()
                },
                proto::Record {
                    partition_key_index: Some(0),
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            actual(frame(&message.encode_to_vec())),
            Err(PassThroughReason::MissingRequiredField)
        );
        // A malformed record after all that: the protobuf is invalid, whatever else.
        let mut body = message.encode_to_vec();
        body.extend_from_slice(&[0x1a, 0x02, 0x08, 0x80]);
        assert_eq!(
            actual(frame(&body)),
            Err(PassThroughReason::InvalidProtobuf)
        );
    }
}
