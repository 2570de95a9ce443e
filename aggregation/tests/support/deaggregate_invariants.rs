//! The invariants the `deaggregate` fuzz target asserts, in one place.
//!
//! This file is compiled into `aggregation/tests/deaggregate_corpus.rs`, which replays the committed
//! corpus (`aggregation/tests/data/fuzz-corpus/deaggregate/`) on the stable toolchain, and
//! (through `#[path]`) into the library of the unpublished `kinesis-fuzz` crate, whose
//! `fuzz_targets/deaggregate.rs` runs under `cargo +nightly fuzz`; so the fuzzer and the normal
//! tests check exactly the same things. It lives in `aggregation/` so that the published crate
//! carries what its tests need, and uses only `kinesis-aggregation`, `bytes` and `md-5`.
//!
//! - [`check_deaggregate`]: what [`deaggregate`] must do with any bytes.

use bytes::Bytes;
use kinesis_aggregation::{
    AggregateBuilder, Deaggregated, FRAMING_LEN, MAGIC, PassThroughReason, deaggregate,
    effective_hash_key, has_magic,
};
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
fn reaggregate(records: &[kinesis_aggregation::SubRecord]) -> Bytes {
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
