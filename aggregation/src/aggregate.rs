//! Building aggregated records: [`AggregateBuilder`].

use std::hash::{BuildHasher, RandomState};
use std::ops::Range;

use bytes::Bytes;
use md5::{Digest, Md5};

use super::wire::{put_varint, tag, varint_len};
use super::{DIGEST_LEN, FRAMING_LEN, MAGIC};

/// Packs user records into one KPL aggregated record, never exceeding a size and count limit.
///
/// Records are encoded as they are pushed, into three buffers (partition key table, explicit
/// hash key table, records), so a push costs time proportional to the record, not to the
/// aggregate; [`take`](Self::take) concatenates them behind the magic and appends the MD5 once.
/// Keys are de-duplicated in first-seen order. The output is the canonical protobuf encoding: the
/// same bytes `prost` (or any protobuf library writing fields in field-number order) produces for
/// the same message.
///
/// [`encoded_size`](Self::encoded_size) and [`size_if_added`](Self::size_if_added) are exact,
/// varint lengths included, and [`try_push`](Self::try_push) refuses any record that would take
/// the aggregate over [`max_size`](Self::max_size) bytes or [`max_count`](Self::max_count)
/// records. A builder that holds a single record hands that record back as it is rather than
/// wrapping it ([`Finished::Single`]), as the KPL does.
///
/// Input validation (partition key length, explicit hash key syntax, …) is the producer's job;
/// the builder encodes whatever strings it is given and never panics. Validate explicit hash keys
/// with [`parse_explicit_hash_key`](super::parse_explicit_hash_key):
/// [`deaggregate`](super::deaggregate) hands back whole, unread, an aggregate in which a record
/// has one that is not a number in `0..2^128`.
///
/// ```
/// use kinesis_aggregation::{AggregateBuilder, Deaggregated, Finished, deaggregate};
///
/// let mut builder = AggregateBuilder::new(51_200, 1_000);
/// builder.try_push("user-1", None, b"first")?;
/// builder.try_push("user-2", Some("42"), b"second")?;
/// builder.try_push("user-1", None, b"third")?;
/// let size = builder.encoded_size();
///
/// let Some(Finished::Aggregated { data, record_count, .. }) = builder.take() else {
///     unreachable!("three records make an aggregate");
/// };
/// assert_eq!((data.len(), record_count), (size, 3));
///
/// let Deaggregated::Aggregated(records) = deaggregate(data) else { unreachable!() };
/// let seen: Vec<_> = records
///     .iter()
///     .map(|r| (r.partition_key(), r.explicit_hash_key(), &r.data()[..], r.sub_sequence_number()))
///     .collect();
/// assert_eq!(seen, [
///     ("user-1", None, &b"first"[..], 0),
///     ("user-2", Some("42"), &b"second"[..], 1),
///     ("user-1", None, &b"third"[..], 2),
/// ]);
/// # Ok::<(), kinesis_aggregation::PushRejected>(())
/// ```
#[derive(Debug, Clone)]
pub struct AggregateBuilder {
    max_size: usize,
    max_count: usize,
    /// Field 1: the partition key table.
    partition_keys: KeyTable,
    /// Field 2: the explicit hash key table.
    explicit_hash_keys: KeyTable,
    /// Encoded field-3 entries.
    records: Vec<u8>,
    count: usize,
    /// The first record's keys and where its data sits in `records`.
    first: Option<FirstRecord>,
}

#[derive(Debug, Clone)]
struct FirstRecord {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: Range<usize>,
}

/// What a builder hands back: a lone record as it was pushed, or an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// The builder held exactly one record: send it as a plain record (not aggregated), as the
    /// KPL does.
    Single {
        /// The record's partition key.
        partition_key: String,
        /// The record's explicit hash key, if it had one.
        explicit_hash_key: Option<String>,
        /// The record's data.
        data: Bytes,
    },
    /// The builder held two or more records: one aggregated record,
    /// at most [`AggregateBuilder::max_size`] bytes long.
    Aggregated {
        /// The partition key of the first record in the aggregate, under which AWS's
        /// kinesis-aggregation libraries put it. (The KPL, and our producer, put an aggregate
        /// under the one-byte key `"a"` with the first record's hash key as explicit hash key,
        /// which Kinesis counts as fewer bytes.)
        partition_key: String,
        /// The explicit hash key of the first record in the aggregate, if it had one.
        explicit_hash_key: Option<String>,
        /// The aggregated record: magic, protobuf, MD5.
        data: Bytes,
        /// How many user records it holds.
        record_count: usize,
    },
}

/// Why [`AggregateBuilder::try_push`] refused a record. The builder is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushRejected {
    /// The record would not fit even in an empty aggregate: it has to be sent on its own (if
    /// Kinesis accepts its size) or failed.
    #[error(
        "record too large to aggregate: alone it makes a {framed_size}-byte aggregate, \
         over the {max_size}-byte limit"
    )]
    TooLarge {
        /// The size of an aggregate holding only this record.
        framed_size: usize,
        /// The builder's size limit.
        max_size: usize,
    },
    /// The record would take this aggregate over its size limit, but fits in an empty one:
    /// finish this aggregate and push the record into the next.
    #[error(
        "aggregate full: adding the record would make it {size_if_added} bytes, over the {max_size}-byte limit"
    )]
    Full {
        /// The size the aggregate would have had with the record.
        size_if_added: usize,
        /// The builder's size limit.
        max_size: usize,
    },
    /// The aggregate already holds its maximum number of records: finish it and push the record
    /// into the next.
    #[error("aggregate full: it already holds the maximum of {max_count} records")]
    CountLimit {
        /// The builder's count limit.
        max_count: usize,
    },
}

impl PushRejected {
    /// True when the record would fit into an empty builder ([`Full`](Self::Full) or
    /// [`CountLimit`](Self::CountLimit)): finish the current aggregate and push again.
    pub fn fits_in_empty_aggregate(&self) -> bool {
        !matches!(self, Self::TooLarge { .. })
    }
}

/// Where a record would go, and what it would cost.
struct Placement {
    /// Where the partition key is, or would go, in its table.
    partition_key: Slot,
    /// Where the explicit hash key is, or would go, in its table.
    explicit_hash_key: Option<Slot>,
    /// Bytes the aggregate grows by (saturating).
    added: usize,
}

impl Default for AggregateBuilder {
    /// A builder with the KPL's default limits ([`DEFAULT_MAX_SIZE`](Self::DEFAULT_MAX_SIZE),
    /// [`DEFAULT_MAX_COUNT`](Self::DEFAULT_MAX_COUNT)).
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_SIZE, Self::DEFAULT_MAX_COUNT)
    }
}

impl AggregateBuilder {
    /// The KPL's default `AggregationMaxSize`: 51 200 bytes.
    pub const DEFAULT_MAX_SIZE: usize = 51_200;
    /// The KPL's default `AggregationMaxCount`: 4 294 967 295.
    pub const DEFAULT_MAX_COUNT: usize = u32::MAX as usize;

    /// An empty builder whose aggregates are at most `max_size_bytes` long (magic, protobuf and
    /// MD5 included) and hold at most `max_count` records. A `max_count` of 0 is taken as 1.
    pub fn new(max_size_bytes: usize, max_count: usize) -> Self {
        Self {
            max_size: max_size_bytes,
            max_count: max_count.max(1),
            partition_keys: KeyTable::new(tag::PARTITION_KEY_TABLE),
            explicit_hash_keys: KeyTable::new(tag::EXPLICIT_HASH_KEY_TABLE),
            records: Vec::new(),
            count: 0,
            first: None,
        }
    }

    /// The size limit, in bytes, of an aggregate.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// The limit on the number of records in an aggregate.
    pub fn max_count(&self) -> usize {
        self.max_count
    }

    /// How many records the builder holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True when the builder holds no record.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The exact size of the aggregate the builder holds: magic, protobuf and MD5 (20 bytes when
    /// empty). What [`take`](Self::take) returns is this long when it returns an aggregate.
    pub fn encoded_size(&self) -> usize {
        FRAMING_LEN
            + self.partition_keys.encoded.len()
            + self.explicit_hash_keys.encoded.len()
            + self.records.len()
    }

    /// The exact [`encoded_size`](Self::encoded_size) the builder would have if this record were
    /// added, whether or not that is within the limits (saturating at `usize::MAX`).
    pub fn size_if_added(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> usize {
        self.encoded_size()
            .saturating_add(self.place(partition_key, explicit_hash_key, data_len).added)
    }

    /// Adds a record if the aggregate stays within its limits; otherwise leaves the builder as it
    /// was and says why.
    pub fn try_push(
        &mut self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data: &[u8],
    ) -> Result<(), PushRejected> {
        let placement = self.place(partition_key, explicit_hash_key, data.len());
        let size_if_added = self.encoded_size().saturating_add(placement.added);
        if size_if_added > self.max_size {
            let framed_size = size_alone(partition_key, explicit_hash_key, data.len());
            return Err(if framed_size > self.max_size {
                PushRejected::TooLarge {
                    framed_size,
                    max_size: self.max_size,
                }
            } else {
                PushRejected::Full {
                    size_if_added,
                    max_size: self.max_size,
                }
            });
        }
        if self.count >= self.max_count {
            return Err(PushRejected::CountLimit {
                max_count: self.max_count,
            });
        }

        let pk_index = self
            .partition_keys
            .insert(partition_key, placement.partition_key);
        let ehk_index = match (explicit_hash_key, placement.explicit_hash_key) {
            (Some(ehk), Some(slot)) => Some(self.explicit_hash_keys.insert(ehk, slot)),
            _ => None,
        };

        let buf = &mut self.records;
        buf.reserve(placement.added);
        buf.push(tag::RECORDS);
        put_varint(record_len(pk_index, ehk_index, data.len()) as u64, buf);
        buf.push(tag::PARTITION_KEY_INDEX);
        put_varint(pk_index, buf);
        if let Some(index) = ehk_index {
            buf.push(tag::EXPLICIT_HASH_KEY_INDEX);
            put_varint(index, buf);
        }
        buf.push(tag::DATA);
        put_varint(data.len() as u64, buf);
        let data_start = buf.len();
        buf.extend_from_slice(data);
        debug_assert_eq!(size_if_added, self.encoded_size());

        if self.first.is_none() {
            self.first = Some(FirstRecord {
                partition_key: partition_key.to_owned(),
                explicit_hash_key: explicit_hash_key.map(str::to_owned),
                data: data_start..self.records.len(),
            });
        }
        self.count += 1;
        Ok(())
    }

    /// Hands back what the builder holds and leaves it empty, keeping its buffers for reuse:
    /// `None` if it was empty, [`Finished::Single`] for one record, otherwise
    /// [`Finished::Aggregated`].
    pub fn take(&mut self) -> Option<Finished> {
        let first = self.first.take()?;
        let finished = if self.count == 1 {
            Finished::Single {
                data: Bytes::copy_from_slice(self.records.get(first.data).unwrap_or_default()),
                partition_key: first.partition_key,
                explicit_hash_key: first.explicit_hash_key,
            }
        } else {
            Finished::Aggregated {
                data: self.encode(),
                record_count: self.count,
                partition_key: first.partition_key,
                explicit_hash_key: first.explicit_hash_key,
            }
        };
        self.clear();
        Some(finished)
    }

    /// [`take`](Self::take), consuming the builder.
    pub fn finish(mut self) -> Option<Finished> {
        self.take()
    }

    /// Hands back what the builder holds as an aggregated record even if it is a single record,
    /// and leaves the builder empty; `None` if it was empty. (Producers want [`take`](Self::take);
    /// this is for tools and tests.)
    pub fn take_aggregate(&mut self) -> Option<Bytes> {
        if self.is_empty() {
            return None;
        }
        let data = self.encode();
        self.clear();
        Some(data)
    }

    /// Drops every record, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.partition_keys.clear();
        self.explicit_hash_keys.clear();
        self.records.clear();
        self.count = 0;
        self.first = None;
    }

    /// Magic ‖ protobuf ‖ MD5(protobuf).
    fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.encoded_size());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.partition_keys.encoded);
        out.extend_from_slice(&self.explicit_hash_keys.encoded);
        out.extend_from_slice(&self.records);
        let digest = Md5::digest(&out[MAGIC.len()..]);
        out.extend_from_slice(&digest);
        debug_assert_eq!(out.len(), self.encoded_size());
        debug_assert_eq!(digest.len(), DIGEST_LEN);
        Bytes::from(out)
    }

    fn place(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<&str>,
        data_len: usize,
    ) -> Placement {
        let mut added = 0usize;
        let partition_key = self.partition_keys.find(partition_key, &mut added);
        let explicit_hash_key =
            explicit_hash_key.map(|ehk| self.explicit_hash_keys.find(ehk, &mut added));
        let record = record_len(
            partition_key.index,
            explicit_hash_key.as_ref().map(|slot| slot.index),
            data_len,
        );
        Placement {
            partition_key,
            explicit_hash_key,
            added: added.saturating_add(field_len(record)),
        }
    }
}

/// One key table: its encoded protobuf entries, and an index from key to position that reads
/// the keys' bytes out of the encoded entries (no allocation per key, one hash per lookup).
#[derive(Debug, Clone)]
struct KeyTable {
    /// The wire tag of the table's entries.
    tag: u8,
    /// The encoded entries: `tag ‖ varint length ‖ key`, repeated.
    encoded: Vec<u8>,
    /// Each key's position in `encoded` and its hash, in table order.
    entries: Vec<KeyEntry>,
    /// Open addressing with linear probing: 0 is empty, `i + 1` is `entries[i]`. Empty, or a
    /// power of two at least twice as long as `entries`.
    slots: Vec<usize>,
    /// Randomly keyed SipHash, so that hostile keys cannot be made to collide.
    hasher: RandomState,
}

#[derive(Debug, Clone, Copy)]
struct KeyEntry {
    start: usize,
    len: usize,
    hash: u64,
}

/// Where a key is, or would go, in a [`KeyTable`].
struct Slot {
    /// The key's index in the table (for a new key, the index it will get).
    index: u64,
    /// For a new key: its hash and the free slot the probe ended on.
    new: Option<(u64, usize)>,
}

impl KeyTable {
    fn new(tag: u8) -> Self {
        Self {
            tag,
            encoded: Vec::new(),
            entries: Vec::new(),
            slots: Vec::new(),
            hasher: RandomState::new(),
        }
    }

    /// Finds `key`; if it is new, adds the cost of its table entry to `added`.
    fn find(&self, key: &str, added: &mut usize) -> Slot {
        let hash = self.hasher.hash_one(key);
        let mask = self.slots.len().wrapping_sub(1);
        let mut at = hash as usize & mask;
        while let Some(&occupant) = self.slots.get(at).filter(|&&occupant| occupant != 0) {
            let entry = self.entries[occupant - 1];
            if entry.hash == hash
                && self.encoded.get(entry.start..entry.start + entry.len) == Some(key.as_bytes())
            {
                return Slot {
                    index: (occupant - 1) as u64,
                    new: None,
                };
            }
            at = (at + 1) & mask;
        }
        *added = added.saturating_add(field_len(key.len()));
        Slot {
            index: self.entries.len() as u64,
            new: Some((hash, at)),
        }
    }

    /// Adds `key` where [`find`](Self::find) said it goes (if it is new); returns its index.
    fn insert(&mut self, key: &str, slot: Slot) -> u64 {
        let Some((hash, at)) = slot.new else {
            return slot.index;
        };
        self.encoded.push(self.tag);
        put_varint(key.len() as u64, &mut self.encoded);
        let start = self.encoded.len();
        self.encoded.extend_from_slice(key.as_bytes());
        self.entries.push(KeyEntry {
            start,
            len: key.len(),
            hash,
        });
        if self.entries.len() * 2 > self.slots.len() {
            self.rehash();
        } else {
            self.slots[at] = self.entries.len();
        }
        slot.index
    }

    /// Doubles the slots (at least 16) and re-inserts every entry.
    fn rehash(&mut self) {
        let len = (self.entries.len() * 2).next_power_of_two().max(16);
        self.slots.clear();
        self.slots.resize(len, 0);
        let mask = len - 1;
        for (i, entry) in self.entries.iter().enumerate() {
            let mut at = entry.hash as usize & mask;
            while self.slots[at] != 0 {
                at = (at + 1) & mask;
            }
            self.slots[at] = i + 1;
        }
    }

    fn clear(&mut self) {
        self.encoded.clear();
        self.entries.clear();
        self.slots.fill(0);
    }
}

/// Size of a length-delimited field with a one-byte tag and a `len`-byte payload.
fn field_len(len: usize) -> usize {
    (1 + varint_len(len as u64)).saturating_add(len)
}

/// Size of an encoded `Record` message (its payload, without its own tag and length).
fn record_len(pk_index: u64, ehk_index: Option<u64>, data_len: usize) -> usize {
    (1 + varint_len(pk_index) + ehk_index.map_or(0, |index| 1 + varint_len(index)))
        .saturating_add(field_len(data_len))
}

/// Size of an aggregate holding only this record.
fn size_alone(partition_key: &str, explicit_hash_key: Option<&str>, data_len: usize) -> usize {
    FRAMING_LEN
        .saturating_add(field_len(partition_key.len()))
        .saturating_add(explicit_hash_key.map_or(0, |ehk| field_len(ehk.len())))
        .saturating_add(field_len(record_len(
            0,
            explicit_hash_key.map(|_| 0),
            data_len,
        )))
}

#[cfg(test)]
mod tests {
    use super::super::proto;
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    type Input = (String, Option<String>, Vec<u8>);

    /// The reference: build the message with prost in canonical order and frame it.
    fn prost_aggregate(records: &[Input]) -> Vec<u8> {
        let mut message = proto::AggregatedRecord::default();
        let mut pks: Vec<&str> = Vec::new();
        let mut ehks: Vec<&str> = Vec::new();
        for (pk, ehk, data) in records {
            let pk_index = pks
                .iter()
                .position(|k| *k == pk.as_str())
                .unwrap_or_else(|| {
                    pks.push(pk);
                    pks.len() - 1
                }) as u64;
            let ehk_index = ehk.as_deref().map(|ehk| {
                ehks.iter().position(|k| *k == ehk).unwrap_or_else(|| {
                    ehks.push(ehk);
                    ehks.len() - 1
                }) as u64
            });
            message.records.push(proto::Record {
                partition_key_index: Some(pk_index),
                explicit_hash_key_index: ehk_index,
                data: Some(Bytes::copy_from_slice(data)),
                tags: Vec::new(),
            });
        }
        message.partition_key_table = pks
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect();
        message.explicit_hash_key_table = ehks
            .iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect();
        let body = message.encode_to_vec();
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        out
    }

    fn build(records: &[Input]) -> AggregateBuilder {
        let mut builder = AggregateBuilder::new(usize::MAX, usize::MAX);
        for (pk, ehk, data) in records {
            let before = builder.size_if_added(pk, ehk.as_deref(), data.len());
            builder.try_push(pk, ehk.as_deref(), data).unwrap();
            assert_eq!(builder.encoded_size(), before);
        }
        builder
    }

    fn input() -> impl Strategy<Value = Input> {
        (
            // Small alphabets so that keys repeat and the dedupe path runs.
            prop_oneof!["[a-c]{0,2}", "\\PC{0,300}"],
            proptest::option::of(prop_oneof!["[0-2]{1,2}", "[0-9]{1,39}"]),
            proptest::collection::vec(any::<u8>(), 0..300),
        )
    }

    proptest! {
        #[test]
        fn matches_prost_byte_for_byte(records in proptest::collection::vec(input(), 1..40)) {
            let mut builder = build(&records);
            let expected = prost_aggregate(&records);
            prop_assert_eq!(builder.encoded_size(), expected.len());
            prop_assert_eq!(&builder.take_aggregate().unwrap()[..], &expected[..]);
            prop_assert!(builder.is_empty());
        }
    }

    #[test]
    fn matches_prost_with_many_keys_and_large_data() {
        // Indices past 127 (two-byte varints) and data past 16383 bytes (three-byte varints).
        let mut records: Vec<Input> = (0..300)
            .map(|i| {
                (
                    format!("key-{}", i % 200),
                    (i % 3 == 0).then(|| (i % 150).to_string()),
                    vec![i as u8; i],
                )
            })
            .collect();
        records.push(("big".into(), None, vec![7; 20_000]));
        let mut builder = build(&records);
        assert_eq!(
            &builder.take_aggregate().unwrap()[..],
            &prost_aggregate(&records)[..]
        );
    }

    #[test]
    fn reuse_after_take_gives_identical_output() {
        let records: Vec<Input> = (0..10)
            .map(|i| (format!("k{i}"), None, vec![i; 10]))
            .collect();
        let mut builder = build(&records);
        let first = builder.take_aggregate().unwrap();
        for (pk, ehk, data) in &records {
            builder.try_push(pk, ehk.as_deref(), data).unwrap();
        }
        assert_eq!(builder.take_aggregate().unwrap(), first);
    }
}
