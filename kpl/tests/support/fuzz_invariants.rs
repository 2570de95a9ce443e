//! The invariants the fuzz targets assert, in one place.
//!
//! This file is compiled into `kpl/tests/fuzz_corpus.rs`, which replays the committed corpus
//! (`kpl/tests/data/fuzz-corpus/`) on the stable toolchain, and (through `#[path]`) into the
//! library of the unpublished `kinesis-fuzz` crate, whose `fuzz_targets/*.rs` run under
//! `cargo +nightly fuzz`. It lives in `kpl/` so that the published crate carries what its
//! tests need. So the fuzzers and
//! the normal tests check exactly the same things. It only uses `kinesis-kpl`, `bytes` and
//! `md-5`, which both builds have.
//!
//! - [`check_deaggregate`]: what [`deaggregate`] must do with any bytes.
//! - [`decode_records`], [`expected_outcome`], [`check_rejection`]: the producer's input
//!   validation, against an oracle written independently of `kinesis_kpl`'s own checks.
//! - [`check_entry`]: what every Kinesis record the producer sends must satisfy (what the
//!   validation exists for), aggregates included.

use std::time::Duration;

use bytes::Bytes;
use kinesis_kpl::record::{
    AggregateBuilder, Deaggregated, FRAMING_LEN, HashKeyProblem, MAGIC, PassThroughReason,
    deaggregate, effective_hash_key, has_magic,
};
use kinesis_kpl::{Config, Error, MAX_PARTITION_KEY_CHARS, UserRecord};
use md5::{Digest, Md5};

// --- deaggregation ---------------------------------------------------------------------------

/// The smallest encoding of one `Record` entry in an aggregate: its field tag and length, a
/// one-byte partition key index field and an empty data field.
const MIN_RECORD_ENCODING: usize = 6;

/// The bytes the `deaggregate` target feeds to [`check_deaggregate`] for a fuzzer input: when
/// the first byte is odd, the rest framed as an aggregate (magic ‖ rest ‖ MD5(rest)), so that
/// mutations reach the protobuf decoder instead of failing the digest; otherwise the rest as
/// it is (which exercises the framing checks).
pub fn deaggregate_case(input: &[u8]) -> Vec<u8> {
    match input.split_first() {
        Some((&mode, rest)) if mode & 1 == 1 => {
            let mut framed = MAGIC.to_vec();
            framed.extend_from_slice(rest);
            framed.extend_from_slice(&Md5::digest(rest));
            framed
        }
        Some((_, rest)) => rest.to_vec(),
        None => Vec::new(),
    }
}

/// Deaggregates `input` and panics if any invariant fails:
///
/// - it is deterministic, and a pass-through hands back the very buffer it was given;
/// - the pass-through reason agrees with the framing: `NoMagic` exactly when the magic is
///   missing, `TooShort` for 20 bytes or fewer, `DigestMismatch` exactly when the MD5 is wrong;
/// - an aggregate has the magic and a correct MD5; its sub-records are numbered 0, 1, 2, …;
///   their data are zero-copy slices of the protobuf body; there are at most one per 6 body
///   bytes and their data add up to at most the body; explicit hash keys are valid and the
///   effective hash key is the one `effective_hash_key` computes;
/// - re-aggregating the sub-records with [`AggregateBuilder`] gives an aggregate (of the size
///   it announced) that deaggregates to the same sub-records, and re-aggregating those gives
///   the same bytes again (the builder's output is a canonical form and a fixed point).
///
/// The round trip compares partition key, explicit hash key, data and sub-sequence number:
/// what the format carries for a consumer. It cannot be byte-for-byte with the input, as the
/// format allows other writers' choices (key table order and duplicates, unused keys, tags,
/// unknown fields, non-minimal varints) that deaggregation rightly forgets.
pub fn check_deaggregate(input: &[u8]) {
    let bytes = Bytes::copy_from_slice(input);
    let outcome = deaggregate(bytes.clone());
    assert_eq!(
        outcome,
        deaggregate(bytes.clone()),
        "deaggregate is deterministic"
    );

    let magic = has_magic(input);
    assert_eq!(magic, input.starts_with(&MAGIC));
    let digest_ok = magic && input.len() > FRAMING_LEN && {
        let body_end = input.len() - 16;
        Md5::digest(&input[MAGIC.len()..body_end])[..] == input[body_end..]
    };

    match outcome {
        Deaggregated::PassThrough { data, reason } => {
            assert_eq!(data, bytes, "a pass-through hands the input back");
            assert_eq!(
                data.as_ptr(),
                bytes.as_ptr(),
                "a pass-through does not copy"
            );
            assert!(PassThroughReason::ALL.contains(&reason));
            assert_eq!(reason.is_malformed_aggregate(), magic, "{reason:?}");
            let framing = if !magic {
                Some(PassThroughReason::NoMagic)
            } else if input.len() <= FRAMING_LEN {
                Some(PassThroughReason::TooShort)
            } else if !digest_ok {
                Some(PassThroughReason::DigestMismatch)
            } else {
                None
            };
            match framing {
                Some(want) => assert_eq!(reason, want),
                None => assert!(
                    reason > PassThroughReason::DigestMismatch,
                    "framing is fine, yet {reason:?}"
                ),
            }
        }
        Deaggregated::Aggregated(records) => {
            assert!(
                digest_ok,
                "deaggregated without magic, room and a correct MD5"
            );
            let body_start = bytes.as_ptr() as usize + MAGIC.len();
            let body_len = input.len() - FRAMING_LEN;
            assert!(
                records.len() <= body_len / MIN_RECORD_ENCODING,
                "{} records in a {body_len}-byte body",
                records.len()
            );
            let mut total = 0usize;
            for (i, record) in records.iter().enumerate() {
                assert_eq!(record.sub_sequence_number(), i as u64);
                let data = record.data();
                total += data.len();
                let at = data.as_ptr() as usize;
                if !data.is_empty() {
                    assert!(
                        at >= body_start && at + data.len() <= body_start + body_len,
                        "sub-record {i}'s data is not a slice of the body"
                    );
                }
                let ehk = record.explicit_hash_key();
                let want = effective_hash_key(record.partition_key(), ehk)
                    .unwrap_or_else(|e| panic!("sub-record {i} has a bad explicit hash key: {e}"));
                assert_eq!(record.effective_hash_key(), want);
            }
            assert!(
                total <= body_len,
                "{total} bytes of data in a {body_len}-byte body"
            );

            if records.is_empty() {
                return;
            }
            let again = reaggregate(&records);
            match deaggregate(again.clone()) {
                Deaggregated::Aggregated(round_trip) => {
                    assert_eq!(round_trip, records, "re-aggregated sub-records differ");
                    assert_eq!(
                        reaggregate(&round_trip),
                        again,
                        "canonical form is not stable"
                    );
                }
                other => panic!("a re-aggregated aggregate does not deaggregate: {other:?}"),
            }
        }
    }
}

/// Packs sub-records into one aggregate with an unlimited [`AggregateBuilder`].
fn reaggregate(records: &[kinesis_kpl::record::SubRecord]) -> Bytes {
    let mut builder = AggregateBuilder::new(usize::MAX, usize::MAX);
    for record in records {
        builder
            .try_push(
                record.partition_key(),
                record.explicit_hash_key(),
                record.data(),
            )
            .expect("an unlimited builder takes every record");
    }
    let size = builder.encoded_size();
    let data = builder.take_aggregate().expect("not empty");
    assert_eq!(data.len(), size, "encoded_size is exact");
    data
}

// --- producer input validation ---------------------------------------------------------------

/// The producer's maximum record size in these checks: small, so that inputs of a few hundred
/// bytes reach [`Error::RecordTooLarge`].
pub const MAX_RECORD_SIZE: usize = 1536;

/// The aggregation size limit: the largest `Config::build` allows, leaving room in a record of
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
pub fn producer_config() -> Config {
    Config::builder()
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
    /// [`Error::EmptyPartitionKey`].
    EmptyPartitionKey,
    /// [`Error::PartitionKeyTooLong`] with the key's length in UTF-16 code units.
    PartitionKeyTooLong(usize),
    /// [`Error::RecordTooLarge`] with partition key + data in bytes.
    RecordTooLarge(usize),
    /// [`Error::InvalidExplicitHashKey`] with the problem.
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
pub fn check_rejection(expected: &Expected, error: &Error, what: &str) {
    let ok = match (expected, error) {
        (Expected::EmptyPartitionKey, Error::EmptyPartitionKey { max }) => {
            *max == MAX_PARTITION_KEY_CHARS
        }
        (Expected::PartitionKeyTooLong(want), Error::PartitionKeyTooLong { chars, max }) => {
            chars == want && *max == MAX_PARTITION_KEY_CHARS
        }
        (Expected::RecordTooLarge(want), Error::RecordTooLarge { size, max }) => {
            size == want && *max == MAX_RECORD_SIZE
        }
        (Expected::InvalidExplicitHashKey(want), Error::InvalidExplicitHashKey(e)) => {
            e.problem == *want
        }
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
