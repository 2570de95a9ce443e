//! Deaggregation: zero-copy sub-records, hash keys, and every pass-through rule, plus fuzzing
//! with arbitrary and mutated input (it must never panic).

use bytes::Bytes;
use kinesis_aggregation::{
    AggregateBuilder, Deaggregated, MAGIC, PassThroughReason, SubRecord, deaggregate, has_magic,
    hash_key_for_partition_key,
};
use md5::{Digest, Md5};
use proptest::prelude::*;

// A minimal protobuf writer, to craft messages our builder would never produce.

fn varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn field_varint(field: u64, value: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(value, out);
}

fn field_bytes(field: u64, value: &[u8], out: &mut Vec<u8>) {
    varint((field << 3) | 2, out);
    varint(value.len() as u64, out);
    out.extend_from_slice(value);
}

/// `Record { partition_key_index, explicit_hash_key_index, data }`, each field optional.
fn record(pk_index: Option<u64>, ehk_index: Option<u64>, data: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(index) = pk_index {
        field_varint(1, index, &mut out);
    }
    if let Some(index) = ehk_index {
        field_varint(2, index, &mut out);
    }
    if let Some(data) = data {
        field_bytes(3, data, &mut out);
    }
    out
}

/// `AggregatedRecord` from key tables and encoded records.
fn message(pks: &[&[u8]], ehks: &[&[u8]], records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for pk in pks {
        field_bytes(1, pk, &mut out);
    }
    for ehk in ehks {
        field_bytes(2, ehk, &mut out);
    }
    for record in records {
        field_bytes(3, record, &mut out);
    }
    out
}

/// Magic ‖ body ‖ MD5(body).
fn frame(body: &[u8]) -> Bytes {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&Md5::digest(body));
    Bytes::from(out)
}

fn aggregate_of(records: &[(&str, Option<&str>, &[u8])]) -> Bytes {
    let mut builder = AggregateBuilder::new(usize::MAX, usize::MAX);
    for (pk, ehk, data) in records {
        builder.try_push(pk, *ehk, data).expect("fits");
    }
    builder.take_aggregate().expect("records")
}

fn sub_records(data: Bytes) -> Vec<SubRecord> {
    match deaggregate(data) {
        Deaggregated::Aggregated(records) => records,
        Deaggregated::PassThrough { reason, .. } => panic!("passed through: {reason}"),
    }
}

/// Asserts a pass-through with this reason that hands back the very same buffer.
fn assert_passes_through(data: Bytes, expected: PassThroughReason) {
    match deaggregate(data.clone()) {
        Deaggregated::PassThrough { data: back, reason } => {
            assert_eq!(reason, expected);
            assert_eq!(back, data);
            assert_eq!(back.as_ptr(), data.as_ptr(), "handed back a copy");
        }
        Deaggregated::Aggregated(records) => {
            panic!("expected {expected:?}, got {} records", records.len())
        }
    }
}

#[test]
fn sub_records_are_zero_copy_slices_with_their_positions() {
    let data = aggregate_of(&[("a", None, b"first"), ("b", Some("5"), b"second")]);
    let range = data.as_ptr() as usize..data.as_ptr() as usize + data.len();
    let records = sub_records(data.clone());
    assert_eq!(records.len(), 2);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.sub_sequence_number(), i as u64);
        assert!(
            range.contains(&(record.data().as_ptr() as usize)),
            "data was copied"
        );
    }
    assert_eq!(records[1].explicit_hash_key(), Some("5"));
    assert_eq!(
        records[1].clone().into_data(),
        Bytes::from_static(b"second")
    );
}

#[test]
fn sub_records_compare_and_print_by_content() {
    let records = sub_records(aggregate_of(&[("k", Some("1"), b"x"), ("j", None, b"x")]));
    let again = sub_records(aggregate_of(&[("k", Some("1"), b"x")]));
    assert_eq!(records[0], again[0]);
    assert_ne!(records[0], records[1]);
    let printed = format!("{:?}", records[0]);
    assert!(printed.contains("partition_key: \"k\""), "{printed}");
    assert!(
        printed.contains("explicit_hash_key: Some(\"1\")"),
        "{printed}"
    );
    assert!(
        !printed.contains('j'),
        "prints the whole key table: {printed}"
    );
}

#[test]
fn effective_hash_key_is_the_explicit_one_or_md5_of_the_partition_key() {
    let records = sub_records(aggregate_of(&[
        ("a", None, b""),
        ("a", Some("340282366920938463463374607431768211455"), b""),
        ("a", Some("0"), b""),
    ]));
    assert_eq!(
        records[0].effective_hash_key(),
        0x0cc175b9c0f1b6a831c399e269772661
    );
    assert_eq!(
        records[0].effective_hash_key(),
        hash_key_for_partition_key("a")
    );
    assert_eq!(records[1].effective_hash_key(), u128::MAX);
    assert_eq!(records[2].effective_hash_key(), 0);
}

#[test]
fn plain_records_pass_through_as_no_magic() {
    assert_passes_through(
        Bytes::from_static(b"{\"plain\": true}"),
        PassThroughReason::NoMagic,
    );
    assert_passes_through(Bytes::new(), PassThroughReason::NoMagic);
    assert_passes_through(
        Bytes::copy_from_slice(&MAGIC[..3]),
        PassThroughReason::NoMagic,
    );
    assert!(!has_magic(&MAGIC[..3]));
    assert!(has_magic(&MAGIC));
}

#[test]
fn magic_without_room_for_a_message_is_too_short() {
    assert_passes_through(Bytes::copy_from_slice(&MAGIC), PassThroughReason::TooShort);
    // Magic + MD5 of the empty message: a valid frame around nothing, which the KCL also
    // refuses to call an aggregate.
    assert_eq!(frame(&[]).len(), 20);
    assert_passes_through(frame(&[]), PassThroughReason::TooShort);
}

#[test]
fn wrong_digest_is_digest_mismatch() {
    let good = aggregate_of(&[("a", None, b"x"), ("b", None, b"y")]);
    for position in [4, good.len() / 2, good.len() - 1] {
        let mut bad = good.to_vec();
        bad[position] ^= 0x01;
        assert_passes_through(Bytes::from(bad), PassThroughReason::DigestMismatch);
    }
}

#[test]
fn unparsable_protobuf_is_invalid_protobuf() {
    let cases: Vec<Vec<u8>> = vec![
        vec![0xff; 12],               // a varint that never ends
        vec![0x0a, 0x05, b'a'],       // length past the end
        vec![0x0a, 0x01],             // a string cut short
        vec![0x1a, 0x02, 0x08],       // record cut inside its first field
        vec![0x1a, 0x02, 0x08, 0x80], // record whose varint runs past its end
        vec![0x1a, 0x01, 0x0e],       // record holding wire type 6
        vec![0x00],                   // field number 0
        vec![0x0b],                   // a group that never ends
    ];
    for body in cases {
        assert_passes_through(frame(&body), PassThroughReason::InvalidProtobuf);
    }
}

#[test]
fn missing_required_fields_pass_through() {
    let no_data = message(&[b"k"], &[], &[record(Some(0), None, None)]);
    let no_pk_index = message(&[b"k"], &[], &[record(None, None, Some(b"x"))]);
    // A valid record, then one without data: all or nothing.
    let second_bad = message(
        &[b"k"],
        &[],
        &[
            record(Some(0), None, Some(b"ok")),
            record(Some(0), None, None),
        ],
    );
    let mut tag_without_key = Vec::new();
    field_bytes(2, b"value only", &mut tag_without_key);
    let mut with_bad_tag = record(Some(0), None, Some(b"x"));
    field_bytes(4, &tag_without_key, &mut with_bad_tag);
    let bad_tag = message(&[b"k"], &[], &[with_bad_tag]);
    for body in [no_data, no_pk_index, second_bad, bad_tag] {
        assert_passes_through(frame(&body), PassThroughReason::MissingRequiredField);
    }
}

#[test]
fn complete_tags_are_accepted_and_ignored() {
    let mut tag = Vec::new();
    field_bytes(1, b"key", &mut tag);
    field_bytes(2, b"value", &mut tag);
    let mut tagged = record(Some(0), None, Some(b"x"));
    field_bytes(4, &tag, &mut tagged);
    let records = sub_records(frame(&message(&[b"k"], &[], &[tagged])));
    assert_eq!(records.len(), 1);
    assert_eq!(&records[0].data()[..], b"x");
}

#[test]
fn non_utf8_keys_pass_through() {
    let bad_pk = message(&[b"\xff"], &[], &[record(Some(0), None, Some(b"x"))]);
    let bad_ehk = message(&[b"k"], &[b"1\xc3"], &[record(Some(0), None, Some(b"x"))]);
    for body in [bad_pk, bad_ehk] {
        assert_passes_through(frame(&body), PassThroughReason::InvalidUtf8Key);
    }
}

#[test]
fn key_indices_out_of_range_pass_through() {
    let cases = [
        message(&[b"k"], &[], &[record(Some(1), None, Some(b"x"))]),
        message(&[], &[], &[record(Some(0), None, Some(b"x"))]),
        message(&[b"k"], &[], &[record(Some(0), Some(0), Some(b"x"))]),
        message(&[b"k"], &[b"1"], &[record(Some(0), Some(1), Some(b"x"))]),
        message(&[b"k"], &[], &[record(Some(u64::MAX), None, Some(b"x"))]),
        // Java would read index 2^32 as 0 (an int cast); we call it out of range.
        message(&[b"k"], &[], &[record(Some(1 << 32), None, Some(b"x"))]),
        // Java delivers the first record and drops the second; we hand over the whole record.
        message(
            &[b"k"],
            &[],
            &[
                record(Some(0), None, Some(b"ok")),
                record(Some(5), None, Some(b"x")),
            ],
        ),
    ];
    for body in cases {
        assert_passes_through(frame(&body), PassThroughReason::KeyIndexOutOfRange);
    }
}

#[test]
fn invalid_explicit_hash_keys_pass_through_when_used() {
    for ehk in [
        &b"abc"[..],
        b"-1",
        b"",
        b"340282366920938463463374607431768211456",
    ] {
        let body = message(&[b"k"], &[ehk], &[record(Some(0), Some(0), Some(b"x"))]);
        assert_passes_through(frame(&body), PassThroughReason::InvalidExplicitHashKey);
    }
    // An unused bad entry harms nobody.
    let body = message(
        &[b"k"],
        &[b"abc", b"7"],
        &[record(Some(0), Some(1), Some(b"x"))],
    );
    let records = sub_records(frame(&body));
    assert_eq!(records[0].explicit_hash_key(), Some("7"));
    assert_eq!(records[0].effective_hash_key(), 7);
}

#[test]
fn aggregate_without_records_yields_none() {
    // Key tables but no record: a valid aggregate of nothing (the Java KCL also yields nothing).
    let records = sub_records(frame(&message(&[b"k"], &[], &[])));
    assert!(records.is_empty());
}

#[test]
fn other_writers_choices_are_accepted() {
    // Records before key tables, an unknown field, a repeated scalar (the last one wins), and
    // a key index written as a 10-byte varint.
    let mut body = Vec::new();
    let mut odd_record = Vec::new();
    field_varint(1, 7, &mut odd_record);
    field_varint(1, 1, &mut odd_record);
    field_bytes(3, b"x", &mut odd_record);
    field_bytes(3, &odd_record, &mut body);
    field_bytes(15, b"unknown field", &mut body);
    field_varint(14, 99, &mut body);
    field_bytes(1, b"zero", &mut body);
    field_bytes(1, b"one", &mut body);
    let mut long_varint = vec![
        0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
    ];
    field_bytes(3, b"y", &mut long_varint);
    field_bytes(3, &long_varint, &mut body);
    let records = sub_records(frame(&body));
    let seen: Vec<_> = records
        .iter()
        .map(|r| (r.partition_key(), &r.data()[..]))
        .collect();
    assert_eq!(seen, [("one", &b"x"[..]), ("zero", &b"y"[..])]);
}

#[test]
fn reasons_have_distinct_labels_and_sentences() {
    let labels: std::collections::BTreeSet<_> =
        PassThroughReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), PassThroughReason::ALL.len());
    let sentences: std::collections::BTreeSet<_> = PassThroughReason::ALL
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(sentences.len(), PassThroughReason::ALL.len());
    for reason in PassThroughReason::ALL {
        assert!(
            reason
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "{reason:?}"
        );
        assert_eq!(
            reason.is_malformed_aggregate(),
            reason != PassThroughReason::NoMagic
        );
    }
}

/// Checks the invariants every outcome must hold, whatever the input.
fn check_outcome(input: Bytes) {
    let range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    match deaggregate(input.clone()) {
        Deaggregated::PassThrough { data, .. } => assert_eq!(data, input),
        Deaggregated::Aggregated(records) => {
            assert!(has_magic(&input));
            for (i, record) in records.iter().enumerate() {
                assert_eq!(record.sub_sequence_number(), i as u64);
                if !record.data().is_empty() {
                    assert!(range.contains(&(record.data().as_ptr() as usize)));
                }
                let _ = record.effective_hash_key();
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert(at, byte)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn small_record() -> impl Strategy<Value = (String, Option<String>, Vec<u8>)> {
    (
        "[a-c]{1,3}",
        proptest::option::of("[0-9]{1,3}"),
        proptest::collection::vec(any::<u8>(), 0..20),
    )
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_outcome(Bytes::from(data));
    }

    /// Arbitrary bodies behind the magic and a correct MD5 reach the protobuf parser.
    #[test]
    fn arbitrary_framed_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        check_outcome(frame(&body));
    }

    /// Valid aggregates, mutated inside the protobuf and re-framed with a correct MD5.
    #[test]
    fn mutated_aggregates_never_panic(
        records in proptest::collection::vec(small_record(), 2..8),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let aggregate = {
            let mut builder = AggregateBuilder::new(usize::MAX, usize::MAX);
            for (pk, ehk, data) in &records {
                builder.try_push(pk, ehk.as_deref(), data).unwrap();
            }
            builder.take_aggregate().unwrap()
        };
        let mut body = aggregate[MAGIC.len()..aggregate.len() - 16].to_vec();
        for mutation in &mutations {
            match *mutation {
                Mutation::Flip(at, bits) if !body.is_empty() => {
                    let at = at % body.len();
                    body[at] ^= bits;
                }
                Mutation::Insert(at, byte) => body.insert(at % (body.len() + 1), byte),
                Mutation::Remove(at) if !body.is_empty() => {
                    body.remove(at % body.len());
                }
                Mutation::Truncate(at) => body.truncate(at % (body.len() + 1)),
                _ => {}
            }
        }
        check_outcome(frame(&body));
        // The same mutation without re-framing fails the digest (or, rarely, is unchanged).
        let mut unframed = aggregate.to_vec();
        unframed.splice(MAGIC.len()..aggregate.len() - 16, body.iter().copied());
        check_outcome(Bytes::from(unframed));
    }

    #[test]
    fn valid_aggregates_always_deaggregate(records in proptest::collection::vec(small_record(), 1..30)) {
        let mut builder = AggregateBuilder::new(usize::MAX, usize::MAX);
        for (pk, ehk, data) in &records {
            builder.try_push(pk, ehk.as_deref(), data).unwrap();
        }
        let decoded = sub_records(builder.take_aggregate().unwrap());
        prop_assert_eq!(decoded.len(), records.len());
        for (sub, (pk, ehk, data)) in decoded.iter().zip(&records) {
            prop_assert_eq!(sub.partition_key(), pk.as_str());
            prop_assert_eq!(sub.explicit_hash_key(), ehk.as_deref());
            prop_assert_eq!(&sub.data()[..], &data[..]);
        }
    }
}
