//! The invariants the `producer_validation` fuzz target asserts, in one place.
//!
//! This file is compiled into `kpl/tests/fuzz_corpus.rs`, which replays the committed corpus
//! (`kpl/tests/data/fuzz-corpus/producer_validation/`) on the stable toolchain, and (through
//! `#[path]`) into the library of the unpublished `kinesis-fuzz` crate, whose
//! `fuzz_targets/producer_validation.rs` runs under `cargo +nightly fuzz`; so the fuzzer and
//! the normal tests check exactly the same things. It lives in `kpl/` so that the published
//! crate carries what its tests need, and uses only `kinesis-kpl`, `kinesis-aggregation`,
//! `bytes` and `md-5`.
//!
//! - [`decode_records`], [`expected_outcome`], [`check_rejection`]: the producer's input
//!   validation, against an oracle written independently of `kinesis_kpl`'s own checks.
//! - [`check_entry`]: what every Kinesis record the producer sends must satisfy (what the
//!   validation exists for), aggregates included.

use std::time::Duration;

use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, HashKeyProblem, deaggregate, has_magic};
use kinesis_kpl::{MAX_PARTITION_KEY_CHARS, ProducerConfig, PutError, UserRecord};
use md5::{Digest, Md5};

// --- producer input validation ---------------------------------------------------------------

/// The producer's maximum record size in these checks: small, so that inputs of a few hundred
/// bytes reach [`PutError::RecordTooLarge`].
pub const MAX_RECORD_SIZE: usize = 1536;

/// The aggregation size limit: the largest `ProducerConfig::build` allows, leaving room in a record of
/// [`MAX_RECORD_SIZE`] for the aggregate's one-byte partition key `"a"`. (Aggregates once went
/// out under their first record's key, and at this size could exceed the record limit: see
/// `fuzz/README.md`.)
pub const AGGREGATION_MAX_SIZE: usize = MAX_RECORD_SIZE - 1;

/// Records one input decodes to at most.
pub const MAX_RECORDS_PER_INPUT: usize = 12;

/// Data one record of an input has at most.
pub const MAX_DATA_LEN: usize = 4096;

/// The producer configuration of the fuzz target and the corpus replay: small records, nothing
/// sent until a flush (so the records of one input are aggregated together), no rate limit
/// to speak of.
pub fn producer_config() -> ProducerConfig {
    ProducerConfig::builder()
        .max_record_size(MAX_RECORD_SIZE)
        .aggregation_max_size(AGGREGATION_MAX_SIZE)
        .record_max_buffered_time(Duration::from_secs(600))
        .record_ttl(Duration::from_secs(1200))
        .rate_limit(1_000_000)
        .build()
        .expect("a valid configuration")
}

/// Reads fuzzer bytes as up to [`MAX_RECORDS_PER_INPUT`] user records. Each record is
///
/// ```text
/// flags, pk_len, pk[pk_len + 256 × (flags & 1)],
/// [if flags & 2: ehk_len, ehk[ehk_len]],
/// data_len (one byte, or two big-endian if flags & 4; at most 4096), data[data_len]
/// ```
///
/// Keys are read as lossy UTF-8. Missing bytes read as 0, and data cut short by the end of
/// the input is padded with zeros, so any input decodes, and short inputs make large records.
pub fn decode_records(input: &[u8]) -> Vec<UserRecord> {
    fn byte(input: &mut &[u8]) -> u8 {
        match input.split_first() {
            Some((&b, rest)) => {
                *input = rest;
                b
            }
            None => 0,
        }
    }
    fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
        let (taken, rest) = input.split_at(n.min(input.len()));
        *input = rest;
        taken
    }
    let mut input = input;
    let mut records = Vec::new();
    while !input.is_empty() && records.len() < MAX_RECORDS_PER_INPUT {
        let flags = byte(&mut input);
        let pk_len = usize::from(byte(&mut input)) + if flags & 1 != 0 { 256 } else { 0 };
        let partition_key = String::from_utf8_lossy(take(&mut input, pk_len)).into_owned();
        let explicit_hash_key = if flags & 2 != 0 {
            let len = usize::from(byte(&mut input));
            Some(String::from_utf8_lossy(take(&mut input, len)).into_owned())
        } else {
            None
        };
        let mut data_len = usize::from(byte(&mut input));
        if flags & 4 != 0 {
            data_len = (data_len << 8) | usize::from(byte(&mut input));
        }
        let data_len = data_len.min(MAX_DATA_LEN);
        let mut data = take(&mut input, data_len).to_vec();
        data.resize(data_len, 0);
        records.push(UserRecord {
            partition_key,
            explicit_hash_key,
            data: Bytes::from(data),
            stream: None,
        });
    }
    records
}

/// What validation must make of a record, by an oracle independent of the producer's code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Accepted; routed by this hash key, sent with this explicit hash key (canonical form).
    Accepted {
        /// The explicit hash key's value, or the MD5 of the partition key.
        hash_key: u128,
        /// The explicit hash key as the API accepts it (no leading zeros).
        explicit_hash_key: Option<String>,
    },
    /// [`PutError::EmptyPartitionKey`].
    EmptyPartitionKey,
    /// [`PutError::PartitionKeyTooLong`] with the key's length in UTF-16 code units.
    PartitionKeyTooLong(usize),
    /// [`PutError::RecordTooLarge`] with partition key + data in bytes.
    RecordTooLarge(usize),
    /// [`PutError::InvalidExplicitHashKey`] with the problem.
    InvalidExplicitHashKey(HashKeyProblem),
}

/// The oracle: checks in the documented order (empty key, key length, size, explicit hash key).
pub fn expected_outcome(record: &UserRecord, max_record_size: usize) -> Expected {
    let chars = record.partition_key.encode_utf16().count();
    if chars == 0 {
        return Expected::EmptyPartitionKey;
    }
    if chars > MAX_PARTITION_KEY_CHARS {
        return Expected::PartitionKeyTooLong(chars);
    }
    let size = record.partition_key.len() + record.data.len();
    if size > max_record_size {
        return Expected::RecordTooLarge(size);
    }
    match &record.explicit_hash_key {
        None => Expected::Accepted {
            hash_key: u128::from_be_bytes(Md5::digest(record.partition_key.as_bytes()).into()),
            explicit_hash_key: None,
        },
        Some(ehk) if ehk.is_empty() => Expected::InvalidExplicitHashKey(HashKeyProblem::Empty),
        Some(ehk) if !ehk.bytes().all(|b| b.is_ascii_digit()) => {
            Expected::InvalidExplicitHashKey(HashKeyProblem::NotDecimal)
        }
        // All digits: `parse` fails only on overflow.
        Some(ehk) => match ehk.parse::<u128>() {
            Ok(value) => Expected::Accepted {
                hash_key: value,
                explicit_hash_key: Some(value.to_string()),
            },
            Err(_) => Expected::InvalidExplicitHashKey(HashKeyProblem::OutOfRange),
        },
    }
}

/// Checks that a rejected put was rejected as the oracle says (`what` names the input).
pub fn check_rejection(expected: &Expected, error: &PutError, what: &str) {
    let ok = match (expected, error) {
        (Expected::EmptyPartitionKey, PutError::EmptyPartitionKey { max, .. }) => {
            *max == MAX_PARTITION_KEY_CHARS
        }
        (Expected::PartitionKeyTooLong(want), PutError::PartitionKeyTooLong { chars, max, .. }) => {
            chars == want && *max == MAX_PARTITION_KEY_CHARS
        }
        (Expected::RecordTooLarge(want), PutError::RecordTooLarge { size, max, .. }) => {
            size == want && *max == MAX_RECORD_SIZE
        }
        (
            Expected::InvalidExplicitHashKey(want),
            PutError::InvalidExplicitHashKey { error: e, .. },
        ) => e.problem == *want,
        _ => false,
    };
    assert!(
        ok,
        "{what}: expected {expected:?}, the producer said {error:?}"
    );
    assert!(!error.to_string().is_empty());
}

/// A shard's hash key range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRange {
    /// The shard id.
    pub id: String,
    /// The first hash key.
    pub start: u128,
    /// The last hash key (inclusive).
    pub end: u128,
}

/// `count` shards splitting the hash key space evenly, as Kinesis creates them.
pub fn even_shards(count: u128) -> Vec<ShardRange> {
    let step = u128::MAX / count;
    (0..count)
        .map(|i| ShardRange {
            id: format!("shardId-{i:012}"),
            start: if i == 0 { 0 } else { i * step + 1 },
            end: if i + 1 == count {
                u128::MAX
            } else {
                (i + 1) * step
            },
        })
        .collect()
}

/// The shard owning `hash_key`.
pub fn shard_for(shards: &[ShardRange], hash_key: u128) -> &str {
    shards
        .iter()
        .find(|s| (s.start..=s.end).contains(&hash_key))
        .map(|s| s.id.as_str())
        .expect("the shards cover the hash key space")
}

/// Checks one Kinesis record as the producer sends it (a PutRecords entry) and returns the
/// shard it goes to. It must be what Kinesis accepts: a partition key of 1 to 256 characters,
/// partition key + data within the maximum record size, an explicit hash key (if any) in the
/// canonical decimal form of a value in `0..2^128`. If it is an aggregate, every user record
/// in it must be valid too and belong to the same shard.
pub fn check_entry(
    partition_key: &str,
    explicit_hash_key: Option<&str>,
    data: &Bytes,
    max_record_size: usize,
    shards: &[ShardRange],
) -> Result<String, String> {
    let shard = routed_shard(partition_key, explicit_hash_key, shards)
        .map_err(|e| format!("entry: {e}"))?;
    let size = partition_key.len() + data.len();
    if size > max_record_size {
        return Err(format!(
            "entry of {size} bytes (partition key {} + data {}) is over the maximum record size \
             {max_record_size}{}",
            partition_key.len(),
            data.len(),
            if has_magic(data) {
                " (an aggregate)"
            } else {
                ""
            }
        ));
    }
    if let Deaggregated::Aggregated(records) = deaggregate(data.clone()) {
        for record in &records {
            let n = record.sub_sequence_number();
            let inner = routed_shard(record.partition_key(), record.explicit_hash_key(), shards)
                .map_err(|e| format!("sub-record {n}: {e}"))?;
            let size = record.partition_key().len() + record.data().len();
            if size > max_record_size {
                return Err(format!("sub-record {n} of {size} bytes in an aggregate"));
            }
            if inner != shard {
                return Err(format!(
                    "sub-record {n} belongs to {inner}, its aggregate goes to {shard}"
                ));
            }
        }
    }
    Ok(shard)
}

fn routed_shard(
    partition_key: &str,
    explicit_hash_key: Option<&str>,
    shards: &[ShardRange],
) -> Result<String, String> {
    let chars = partition_key.encode_utf16().count();
    if !(1..=MAX_PARTITION_KEY_CHARS).contains(&chars) {
        return Err(format!("partition key of {chars} characters"));
    }
    let hash_key = match explicit_hash_key {
        None => u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into()),
        Some(ehk) => {
            let canonical =
                ehk == "0" || (ehk.bytes().all(|b| b.is_ascii_digit()) && !ehk.starts_with('0'));
            match ehk.parse::<u128>() {
                Ok(value) if canonical && !ehk.is_empty() => value,
                _ => return Err(format!("explicit hash key {ehk:?} is not canonical")),
            }
        }
    };
    Ok(shard_for(shards, hash_key).to_owned())
}
