//! The aggregate builder: exact size accounting, limits, key de-duplication, single-record
//! pass-through, reuse.

use bytes::Bytes;
use kinesis_aggregation::{
    AggregateBuilder, Deaggregated, FRAMING_LEN, Finished, MAGIC, PushRejected, deaggregate,
};
use proptest::prelude::*;

type Input = (String, Option<String>, Vec<u8>);

fn unlimited() -> AggregateBuilder {
    AggregateBuilder::new(usize::MAX, usize::MAX)
}

/// Pushes and checks that `size_if_added` predicted the new size exactly.
fn push(builder: &mut AggregateBuilder, pk: &str, ehk: Option<&str>, data: &[u8]) {
    let predicted = builder.size_if_added(pk, ehk, data.len());
    builder.try_push(pk, ehk, data).expect("fits");
    assert_eq!(builder.encoded_size(), predicted);
}

fn deaggregated(data: Bytes) -> Vec<Input> {
    match deaggregate(data) {
        Deaggregated::Aggregated(records) => records
            .into_iter()
            .map(|r| {
                (
                    r.partition_key().to_owned(),
                    r.explicit_hash_key().map(str::to_owned),
                    r.data().to_vec(),
                )
            })
            .collect(),
        Deaggregated::PassThrough { reason, .. } => panic!("not an aggregate: {reason}"),
    }
}

#[test]
fn empty_builder_has_framing_size_and_finishes_to_nothing() {
    let mut builder = AggregateBuilder::default();
    assert!(builder.is_empty());
    assert_eq!(builder.len(), 0);
    assert_eq!(builder.encoded_size(), FRAMING_LEN);
    assert_eq!(builder.max_size(), 51_200);
    assert_eq!(builder.max_count(), 4_294_967_295);
    assert_eq!(builder.take(), None);
    assert_eq!(builder.take_aggregate(), None);
    assert_eq!(builder.finish(), None);
}

/// Hand-computed sizes for partition key "k" and no explicit hash key:
/// 20 (framing) + 3 (`0a 01 6b`) + record `1a LEN 08 00 1a DLEN DATA`.
#[test]
fn sizes_are_exact_across_varint_boundaries() {
    let cases = [
        (0usize, 29usize),
        (123, 152),       // record payload 127: one-byte length
        (124, 154),       // record payload 128: two-byte length
        (127, 157),       // data length 127: one-byte varint
        (128, 159),       // data length 128: two-byte varint
        (16_378, 16_409), // record payload 16383: two-byte length
        (16_379, 16_411), // record payload 16384: three-byte length
        (16_383, 16_415), // data length 16383: two-byte varint
        (16_384, 16_417), // data length 16384: three-byte varint
    ];
    for (data_len, expected) in cases {
        let mut builder = unlimited();
        assert_eq!(
            builder.size_if_added("k", None, data_len),
            expected,
            "data {data_len}"
        );
        push(&mut builder, "k", None, &vec![0xAB; data_len]);
        let aggregate = builder.take_aggregate().expect("one record");
        assert_eq!(aggregate.len(), expected, "data {data_len}");
    }
}

#[test]
fn key_index_varint_grows_at_128_distinct_keys() {
    let mut builder = unlimited();
    for i in 0..128 {
        push(&mut builder, &format!("k{i:03}"), None, b"");
    }
    // Key 128 gets index 128: `08 80 01` instead of `08 7f`.
    let new_key = builder.size_if_added("k128", None, 0) - builder.encoded_size();
    let old_key = builder.size_if_added("k000", None, 0) - builder.encoded_size();
    // New key: table entry (1 + 1 + 4) + record (1 + 1 + [1 + 2] + [1 + 1]).
    assert_eq!(new_key, 6 + 7);
    // Known key 0: record (1 + 1 + [1 + 1] + [1 + 1]).
    assert_eq!(old_key, 6);
    push(&mut builder, "k128", None, b"");
    push(&mut builder, "k000", None, b"");
}

#[test]
fn record_that_fits_exactly_is_accepted_and_one_byte_more_is_not() {
    for data_len in [0usize, 100, 127, 128, 16_383, 16_384] {
        let data = vec![1u8; data_len];
        let size = unlimited().size_if_added("pk", Some("7"), data_len);

        let mut exact = AggregateBuilder::new(size, 10);
        exact
            .try_push("pk", Some("7"), &data)
            .expect("fits exactly");
        assert_eq!(exact.encoded_size(), size);

        let mut short = AggregateBuilder::new(size - 1, 10);
        assert_eq!(
            short.try_push("pk", Some("7"), &data),
            Err(PushRejected::TooLarge {
                framed_size: size,
                max_size: size - 1
            })
        );
        assert!(short.is_empty());
    }
}

#[test]
fn full_aggregate_rejects_by_one_byte_and_keeps_its_contents() {
    let mut probe = unlimited();
    push(&mut probe, "a", None, &[1; 40]);
    let with_second = probe.size_if_added("b", None, 60);

    // Exactly room for the second record.
    let mut builder = AggregateBuilder::new(with_second, 100);
    push(&mut builder, "a", None, &[1; 40]);
    builder.try_push("b", None, &[2; 60]).expect("fits exactly");
    assert_eq!(builder.encoded_size(), with_second);

    // One byte short of it.
    let mut builder = AggregateBuilder::new(with_second - 1, 100);
    push(&mut builder, "a", None, &[1; 40]);
    let before = builder.clone().take_aggregate();
    let rejected = builder.try_push("b", None, &[2; 60]).unwrap_err();
    assert_eq!(
        rejected,
        PushRejected::Full {
            size_if_added: with_second,
            max_size: with_second - 1
        }
    );
    assert!(rejected.fits_in_empty_aggregate());
    assert_eq!(builder.len(), 1);
    assert_eq!(
        builder.take_aggregate(),
        before,
        "a rejected push changed the builder"
    );
}

#[test]
fn count_limit_rejects_and_zero_means_one() {
    let mut builder = AggregateBuilder::new(1_000, 2);
    push(&mut builder, "a", None, b"1");
    push(&mut builder, "a", None, b"2");
    let rejected = builder.try_push("a", None, b"3").unwrap_err();
    assert_eq!(rejected, PushRejected::CountLimit { max_count: 2 });
    assert!(rejected.fits_in_empty_aggregate());
    assert_eq!(builder.len(), 2);

    let mut builder = AggregateBuilder::new(1_000, 0);
    assert_eq!(builder.max_count(), 1);
    push(&mut builder, "a", None, b"1");
    assert_eq!(
        builder.try_push("a", None, b"2"),
        Err(PushRejected::CountLimit { max_count: 1 })
    );
}

#[test]
fn too_large_wins_over_full_and_count_limit() {
    let mut builder = AggregateBuilder::new(100, 1);
    push(&mut builder, "a", None, b"x");
    let rejected = builder.try_push("a", None, &[0; 100]).unwrap_err();
    assert!(matches!(
        rejected,
        PushRejected::TooLarge { max_size: 100, .. }
    ));
    assert!(!rejected.fits_in_empty_aggregate());
    assert!(
        rejected.to_string().contains("100-byte limit"),
        "{rejected}"
    );
}

#[test]
fn tiny_limits_never_panic() {
    for max in 0..=FRAMING_LEN + 8 {
        let mut builder = AggregateBuilder::new(max, 5);
        let result = builder.try_push("k", None, b"");
        // The smallest aggregate is 29 bytes; nothing fits below that.
        assert!(
            matches!(result, Err(PushRejected::TooLarge { .. })),
            "{max}: {result:?}"
        );
        assert_eq!(builder.take(), None);
    }
    assert_eq!(unlimited().size_if_added("k", None, usize::MAX), usize::MAX);
}

#[test]
fn keys_are_deduplicated_in_first_seen_order() {
    let mut builder = unlimited();
    for (pk, ehk) in [
        ("b", Some("2")),
        ("a", None),
        ("b", Some("1")),
        ("c", Some("2")),
        ("a", None),
    ] {
        push(&mut builder, pk, ehk, pk.as_bytes());
    }
    let aggregate = builder.take_aggregate().expect("records");
    // Field 1 entries b, a, c, then field 2 entries "2", "1", then the records.
    let tables = [
        0x0a, 1, b'b', 0x0a, 1, b'a', 0x0a, 1, b'c', 0x12, 1, b'2', 0x12, 1, b'1',
    ];
    assert_eq!(&aggregate[..4], &MAGIC);
    assert_eq!(&aggregate[4..4 + tables.len()], &tables);
    // First record: pk index 0, ehk index 0, data "b".
    assert_eq!(
        &aggregate[4 + tables.len()..][..9],
        &[0x1a, 7, 0x08, 0, 0x10, 0, 0x1a, 1, b'b']
    );
    assert_eq!(
        deaggregated(aggregate),
        [
            ("b", Some("2"), "b"),
            ("a", None, "a"),
            ("b", Some("1"), "b"),
            ("c", Some("2"), "c"),
            ("a", None, "a"),
        ]
        .map(|(pk, ehk, data)| (
            pk.to_owned(),
            ehk.map(str::to_owned),
            data.as_bytes().to_vec()
        ))
    );
}

#[test]
fn single_record_is_handed_back_raw() {
    let mut builder = unlimited();
    push(&mut builder, "pk", Some("123"), b"payload");
    assert_eq!(builder.len(), 1);
    assert_eq!(
        builder.take(),
        Some(Finished::Single {
            partition_key: "pk".into(),
            explicit_hash_key: Some("123".into()),
            data: Bytes::from_static(b"payload"),
        })
    );
    assert!(builder.is_empty());
    assert_eq!(builder.encoded_size(), FRAMING_LEN);
}

#[test]
fn two_records_make_an_aggregate_with_the_first_records_keys() {
    let mut builder = unlimited();
    push(&mut builder, "first", None, b"1");
    push(&mut builder, "second", Some("9"), b"2");
    let size = builder.encoded_size();
    match builder.finish() {
        Some(Finished::Aggregated {
            partition_key,
            explicit_hash_key,
            data,
            record_count,
        }) => {
            assert_eq!(partition_key, "first");
            assert_eq!(explicit_hash_key, None);
            assert_eq!(record_count, 2);
            assert_eq!(data.len(), size);
            assert_eq!(deaggregated(data).len(), 2);
        }
        other => panic!("expected an aggregate, got {other:?}"),
    }
}

#[test]
fn taken_builder_is_reusable_and_forgets_old_keys() {
    let mut builder = AggregateBuilder::new(10_000, 100);
    push(&mut builder, "old", None, b"x");
    push(&mut builder, "old", None, b"y");
    assert!(matches!(
        builder.take(),
        Some(Finished::Aggregated {
            record_count: 2,
            ..
        })
    ));

    // "new" must get index 0 in a fresh table, and "old" is no longer known.
    push(&mut builder, "new", None, b"1");
    push(&mut builder, "old", None, b"2");
    let mut fresh = AggregateBuilder::new(10_000, 100);
    push(&mut fresh, "new", None, b"1");
    push(&mut fresh, "old", None, b"2");
    assert_eq!(builder.take_aggregate(), fresh.take_aggregate());

    push(&mut builder, "x", None, b"1");
    builder.clear();
    assert!(builder.is_empty());
    assert_eq!(builder.encoded_size(), FRAMING_LEN);
}

fn input() -> impl Strategy<Value = Input> {
    (
        prop_oneof!["[a-d]{1,2}", "\\PC{1,40}"],
        proptest::option::of(prop_oneof!["[0-3]", "[1-9][0-9]{0,37}"]),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
}

proptest! {
    #[test]
    fn round_trips_arbitrary_records(records in proptest::collection::vec(input(), 2..60)) {
        let mut builder = unlimited();
        for (pk, ehk, data) in &records {
            push(&mut builder, pk, ehk.as_deref(), data);
        }
        let size = builder.encoded_size();
        let Some(Finished::Aggregated { data, record_count, .. }) = builder.take() else {
            panic!("two or more records make an aggregate");
        };
        prop_assert_eq!(record_count, records.len());
        prop_assert_eq!(data.len(), size);
        prop_assert_eq!(deaggregated(data), records);
    }

    /// Feeding records through size-limited builders, flushing on rejection as a producer does:
    /// no aggregate is ever over the limit, nothing is lost or reordered, and a record rejected
    /// as `Full` always fits a fresh builder.
    #[test]
    fn limits_always_hold(
        records in proptest::collection::vec(input(), 1..80),
        max_size in 20usize..600,
        max_count in 1usize..10,
    ) {
        let mut builder = AggregateBuilder::new(max_size, max_count);
        let mut delivered: Vec<Input> = Vec::new();
        let mut too_large = 0;
        let flush = |builder: &mut AggregateBuilder, delivered: &mut Vec<Input>| {
            match builder.take() {
                None => {}
                Some(Finished::Single { partition_key, explicit_hash_key, data }) => {
                    delivered.push((partition_key, explicit_hash_key, data.to_vec()));
                }
                Some(Finished::Aggregated { data, record_count, .. }) => {
                    assert!(data.len() <= max_size, "{} > {max_size}", data.len());
                    assert!(record_count <= max_count && record_count >= 2);
                    delivered.extend(deaggregated(data));
                }
            }
        };
        let mut expected = Vec::new();
        for (pk, ehk, data) in &records {
            match builder.try_push(pk, ehk.as_deref(), data) {
                Ok(()) => expected.push((pk.clone(), ehk.clone(), data.clone())),
                Err(rejected) if rejected.fits_in_empty_aggregate() => {
                    prop_assert!(!builder.is_empty());
                    flush(&mut builder, &mut delivered);
                    prop_assert_eq!(builder.try_push(pk, ehk.as_deref(), data), Ok(()));
                    expected.push((pk.clone(), ehk.clone(), data.clone()));
                }
                Err(PushRejected::TooLarge { framed_size, .. }) => {
                    prop_assert!(framed_size > max_size);
                    prop_assert_eq!(AggregateBuilder::new(usize::MAX, 1)
                        .size_if_added(pk, ehk.as_deref(), data.len()), framed_size);
                    too_large += 1;
                }
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
            prop_assert!(builder.encoded_size() <= max_size || builder.is_empty());
        }
        flush(&mut builder, &mut delivered);
        prop_assert_eq!(delivered, expected);
        prop_assert!(too_large <= records.len());
    }
}
