//! Property tests of aggregation round trips that start from *other writers'* aggregates.
//!
//! The tests next to the codec compare it with `prost` (canonical encodings and short arbitrary
//! bodies), and `record_aggregate.rs` / `record_deaggregate.rs` round-trip what our own builder
//! writes. Here the aggregates are laid out as the format allows any writer to: key tables in
//! any order, with duplicate and unused entries (more than 128 of them, so indices take two
//! bytes), table entries interleaved with the records, record fields in any order, repeated
//! scalar fields (the last one wins), tags, unknown fields of every wire type (groups included)
//! and non-minimal varints. For all of them:
//!
//! - deaggregation yields exactly the records the writer meant, in order, zero-copy;
//! - re-aggregating them with [`AggregateBuilder`] gives the canonical aggregate of those
//!   records (the same bytes as building it from scratch), which is a fixed point;
//! - every sub-record's effective hash key is its explicit hash key or the MD5 of its
//!   partition key;
//! - one bad reference anywhere (a key index out of its table, an explicit hash key that is not
//!   a number, a missing data field) hands the whole record back unchanged, never a part.

use bytes::Bytes;
use kinesis_aggregation::{
    AggregateBuilder, Deaggregated, MAGIC, PassThroughReason, deaggregate,
    hash_key_for_partition_key,
};
use md5::{Digest, Md5};
use proptest::prelude::*;

/// One user record as its writer meant it.
#[derive(Clone, Debug)]
struct Meant {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: Vec<u8>,
    /// Tags: key, optional value (ignored by readers).
    tags: Vec<(String, Option<String>)>,
}

/// A fault to plant in one record of an otherwise valid aggregate.
#[derive(Clone, Copy, Debug)]
enum Fault {
    PartitionKeyIndexOutOfRange,
    ExplicitHashKeyNotANumber,
    MissingData,
}

/// A small deterministic generator for the layout choices (xorshift64*).
struct Choices(u64);

impl Choices {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

/// A varint, padded with up to 3 redundant continuation bytes (at most 10 bytes in all).
fn varint(mut value: u64, choices: &mut Choices, out: &mut Vec<u8>) {
    let minimal = (64 - (value | 1).leading_zeros() as usize).div_ceil(7);
    let len = (minimal + choices.below(4) * usize::from(choices.one_in(3))).min(10);
    for i in 0..len {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        out.push(if i + 1 < len { byte | 0x80 } else { byte });
    }
}

fn key(field: u64, wire_type: u64, out: &mut Vec<u8>) {
    let mut tag = (field << 3) | wire_type;
    while tag >= 0x80 {
        out.push(tag as u8 | 0x80);
        tag >>= 7;
    }
    out.push(tag as u8);
}

fn len_field(field: u64, payload: &[u8], choices: &mut Choices) -> Vec<u8> {
    let mut out = Vec::new();
    key(field, 2, &mut out);
    varint(payload.len() as u64, choices, &mut out);
    out.extend_from_slice(payload);
    out
}

fn varint_field(field: u64, value: u64, choices: &mut Choices) -> Vec<u8> {
    let mut out = Vec::new();
    key(field, 0, &mut out);
    varint(value, choices, &mut out);
    out
}

/// An unknown field (number 5 to 40) of a random wire type.
fn unknown_field(choices: &mut Choices) -> Vec<u8> {
    let field = 5 + choices.below(36) as u64;
    let mut out = Vec::new();
    match choices.below(5) {
        0 => return varint_field(field, choices.next() >> choices.below(64), choices),
        1 => {
            key(field, 1, &mut out);
            out.extend_from_slice(&choices.next().to_le_bytes());
        }
        2 => {
            let payload: Vec<u8> = (0..choices.below(6))
                .map(|_| choices.next() as u8)
                .collect();
            return len_field(field, &payload, choices);
        }
        3 => {
            key(field, 5, &mut out);
            out.extend_from_slice(&(choices.next() as u32).to_le_bytes());
        }
        _ => {
            key(field, 3, &mut out);
            out.extend(varint_field(1, choices.next() % 1000, choices));
            key(field, 4, &mut out);
        }
    }
    out
}

/// A key table: every key used, plus the extras, some entries duplicated, shuffled. Returns the
/// table and, for each key, every position it has.
fn table(used: &[&str], extras: &[String], choices: &mut Choices) -> Vec<String> {
    let mut entries: Vec<String> = Vec::new();
    for key in used
        .iter()
        .copied()
        .chain(extras.iter().map(String::as_str))
    {
        if !entries.iter().any(|e| e == key) || choices.one_in(8) {
            entries.push(key.to_owned());
        }
        if choices.one_in(6) {
            entries.push(key.to_owned());
        }
    }
    choices.shuffle(&mut entries);
    entries
}

/// Any position of `key` in `table`.
fn index_of(table: &[String], key: &str, choices: &mut Choices) -> u64 {
    let positions: Vec<usize> = (0..table.len()).filter(|&i| table[i] == key).collect();
    positions[choices.below(positions.len())] as u64
}

/// Lays out `records` as an aggregate's protobuf body the way some writer might, planting
/// `fault` in record `fault_at` (mod the record count) if given.
fn foreign_body(
    records: &[Meant],
    extra_partition_keys: &[String],
    extra_explicit_hash_keys: &[String],
    fault: Option<(Fault, usize)>,
    seed: u64,
) -> Vec<u8> {
    let mut choices = Choices(seed | 1);
    let pks: Vec<&str> = records.iter().map(|r| r.partition_key.as_str()).collect();
    let mut ehk_extras = extra_explicit_hash_keys.to_vec();
    if matches!(fault, Some((Fault::ExplicitHashKeyNotANumber, _))) {
        ehk_extras.push("12x".to_owned());
    }
    let ehks: Vec<&str> = records
        .iter()
        .filter_map(|r| r.explicit_hash_key.as_deref())
        .collect();
    let pk_table = table(&pks, extra_partition_keys, &mut choices);
    let ehk_table = table(&ehks, &ehk_extras, &mut choices);
    let faulty = fault.map(|(fault, at)| (fault, at % records.len()));

    let mut encoded_records = Vec::new();
    for (n, record) in records.iter().enumerate() {
        let fault = faulty.filter(|(_, at)| *at == n).map(|(fault, _)| fault);
        let mut fields: Vec<Vec<u8>> = Vec::new();
        let pk_index = match fault {
            Some(Fault::PartitionKeyIndexOutOfRange) => {
                pk_table.len() as u64 + choices.below(300) as u64
            }
            _ => index_of(&pk_table, &record.partition_key, &mut choices),
        };
        fields.push(varint_field(1, pk_index, &mut choices));
        let ehk_index = match (fault, &record.explicit_hash_key) {
            (Some(Fault::ExplicitHashKeyNotANumber), _) => {
                Some(index_of(&ehk_table, "12x", &mut choices))
            }
            (_, Some(ehk)) => Some(index_of(&ehk_table, ehk, &mut choices)),
            (_, None) => None,
        };
        if let Some(index) = ehk_index {
            fields.push(varint_field(2, index, &mut choices));
        }
        if !matches!(fault, Some(Fault::MissingData)) {
            fields.push(len_field(3, &record.data, &mut choices));
        }
        for (tag_key, value) in &record.tags {
            let mut tag = len_field(1, tag_key.as_bytes(), &mut choices);
            if let Some(value) = value {
                tag.extend(len_field(2, value.as_bytes(), &mut choices));
            }
            fields.push(len_field(4, &tag, &mut choices));
        }
        while choices.one_in(4) {
            fields.push(unknown_field(&mut choices));
        }
        choices.shuffle(&mut fields);
        // Repeated scalars: the last occurrence wins, so decoys go first.
        if choices.one_in(4) {
            fields.insert(0, varint_field(1, choices.next() % 1000, &mut choices));
        }
        if !matches!(fault, Some(Fault::MissingData)) && choices.one_in(4) {
            let decoy: Vec<u8> = (0..choices.below(4))
                .map(|_| choices.next() as u8)
                .collect();
            fields.insert(0, len_field(3, &decoy, &mut choices));
        }
        encoded_records.push(len_field(3, &fields.concat(), &mut choices));
    }

    // Interleave the table entries and the records (records keep their order), sprinkling
    // unknown fields.
    let mut queues: Vec<std::collections::VecDeque<Vec<u8>>> = vec![
        pk_table
            .iter()
            .map(|k| len_field(1, k.as_bytes(), &mut choices))
            .collect(),
        ehk_table
            .iter()
            .map(|k| len_field(2, k.as_bytes(), &mut choices))
            .collect(),
        encoded_records.into(),
    ];
    let mut body = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        if choices.one_in(12) {
            body.extend(unknown_field(&mut choices));
        }
        let open: Vec<usize> = (0..3).filter(|&q| !queues[q].is_empty()).collect();
        let q = open[choices.below(open.len())];
        body.extend(queues[q].pop_front().unwrap());
    }
    body
}

fn frame(body: &[u8]) -> Bytes {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(body);
    out.extend_from_slice(&Md5::digest(body));
    Bytes::from(out)
}

fn canonical(records: impl IntoIterator<Item = (String, Option<String>, Bytes)>) -> Bytes {
    let mut builder = AggregateBuilder::new(usize::MAX, usize::MAX);
    for (pk, ehk, data) in records {
        builder.try_push(&pk, ehk.as_deref(), &data).unwrap();
    }
    builder.take_aggregate().unwrap()
}

type Triple = (String, Option<String>, Bytes);

fn triples(data: Bytes) -> Result<Vec<Triple>, PassThroughReason> {
    match deaggregate(data) {
        Deaggregated::Aggregated(records) => Ok(records
            .iter()
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

fn meant_triples(records: &[Meant]) -> Vec<Triple> {
    records
        .iter()
        .map(|r| {
            (
                r.partition_key.clone(),
                r.explicit_hash_key.clone(),
                Bytes::from(r.data.clone()),
            )
        })
        .collect()
}

fn meant() -> impl Strategy<Value = Meant> {
    (
        prop_oneof![3 => "[a-c]{0,2}", 1 => "\\PC{0,12}"],
        proptest::option::weighted(
            0.4,
            prop_oneof![
                Just("0".to_owned()),
                "[1-9][0-9]{0,37}",
                "0{1,3}[0-9]{1,6}",
                any::<u128>().prop_map(|v| v.to_string()),
            ],
        ),
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..40),
            1 => proptest::collection::vec(any::<u8>(), 100..300),
        ],
        proptest::collection::vec(("\\PC{0,5}", proptest::option::of("\\PC{0,5}")), 0..2),
    )
        .prop_map(|(partition_key, explicit_hash_key, data, tags)| Meant {
            partition_key,
            explicit_hash_key,
            data,
            tags,
        })
}

fn extras() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
    (
        prop_oneof![
            4 => proptest::collection::vec("\\PC{0,8}", 0..4),
            1 => proptest::collection::vec("[a-z0-9]{1,8}", 130..200),
        ],
        // Unused explicit hash keys need not be numbers.
        proptest::collection::vec("\\PC{0,6}", 0..3),
    )
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::PartitionKeyIndexOutOfRange),
        Just(Fault::ExplicitHashKeyNotANumber),
        Just(Fault::MissingData),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the layout, deaggregation yields the records the writer meant, zero-copy, and
    /// re-aggregating them gives the canonical aggregate, a fixed point.
    #[test]
    fn foreign_layouts_round_trip_through_the_canonical_form(
        records in proptest::collection::vec(meant(), 1..25),
        (extra_pks, extra_ehks) in extras(),
        seed in any::<u64>(),
    ) {
        let body = foreign_body(&records, &extra_pks, &extra_ehks, None, seed);
        let foreign = frame(&body);
        let meant = meant_triples(&records);

        let decoded = triples(foreign.clone());
        prop_assert_eq!(decoded.as_ref(), Ok(&meant));
        let Deaggregated::Aggregated(subs) = deaggregate(foreign.clone()) else { unreachable!() };
        let body_range = foreign.as_ptr() as usize + MAGIC.len()..foreign.as_ptr() as usize + foreign.len() - 16;
        for (i, sub) in subs.iter().enumerate() {
            prop_assert_eq!(sub.sub_sequence_number(), i as u64);
            if !sub.data().is_empty() {
                prop_assert!(body_range.contains(&(sub.data().as_ptr() as usize)), "not a slice");
            }
            let want = match sub.explicit_hash_key() {
                Some(ehk) => ehk.parse::<u128>().unwrap(),
                None => hash_key_for_partition_key(sub.partition_key()),
            };
            prop_assert_eq!(sub.effective_hash_key(), want);
        }

        let from_scratch = canonical(meant.clone());
        let reaggregated = canonical(decoded.unwrap());
        prop_assert_eq!(&reaggregated, &from_scratch);
        prop_assert_eq!(triples(reaggregated.clone()), Ok(meant));
        prop_assert_eq!(canonical(triples(reaggregated.clone()).unwrap()), reaggregated);
    }

    /// One bad reference anywhere in any layout hands the whole record back, unchanged, with
    /// the reason; never the records before it.
    #[test]
    fn one_bad_reference_passes_the_whole_aggregate_through(
        records in proptest::collection::vec(meant(), 1..12),
        (extra_pks, extra_ehks) in extras(),
        (fault, at) in (fault(), any::<usize>()),
        seed in any::<u64>(),
    ) {
        let body = foreign_body(&records, &extra_pks, &extra_ehks, Some((fault, at)), seed);
        let foreign = frame(&body);
        let want = match fault {
            Fault::PartitionKeyIndexOutOfRange => PassThroughReason::KeyIndexOutOfRange,
            Fault::ExplicitHashKeyNotANumber => PassThroughReason::InvalidExplicitHashKey,
            Fault::MissingData => PassThroughReason::MissingRequiredField,
        };
        match deaggregate(foreign.clone()) {
            Deaggregated::PassThrough { data, reason } => {
                prop_assert_eq!(reason, want);
                prop_assert_eq!(data, foreign);
            }
            Deaggregated::Aggregated(records) => {
                prop_assert!(false, "deaggregated to {} records despite {fault:?}", records.len());
            }
        }
    }

    /// Splitting a stream of records into aggregates anywhere and deaggregating them gives the
    /// records back, each aggregate numbering its own from 0, whatever the split.
    #[test]
    fn any_split_into_aggregates_round_trips(
        records in proptest::collection::vec(meant(), 1..40),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let meant = meant_triples(&records);
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c.index(meant.len() + 1)).collect();
        bounds.extend([0, meant.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let mut delivered = Vec::new();
        for pair in bounds.windows(2) {
            let chunk = &meant[pair[0]..pair[1]];
            let aggregate = canonical(chunk.to_vec());
            let Deaggregated::Aggregated(subs) = deaggregate(aggregate) else {
                return Err(TestCaseError::fail("not an aggregate"));
            };
            prop_assert_eq!(subs.len(), chunk.len());
            for (i, sub) in subs.iter().enumerate() {
                prop_assert_eq!(sub.sub_sequence_number(), i as u64);
                delivered.push((
                    sub.partition_key().to_owned(),
                    sub.explicit_hash_key().map(str::to_owned),
                    sub.data().clone(),
                ));
            }
        }
        prop_assert_eq!(delivered, meant);
    }
}
