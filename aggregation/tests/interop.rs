//! Cross-checks with AWS's Python aggregation library (`aws_kinesis_agg`), through vectors
//! committed under `tests/data/` by `tests/data/make_vectors.py` (read it for how to regenerate
//! them). CI never runs Python: these tests only read the committed files.
//!
//! (a) `python_aggregates.txt`: aggregates Python made. We must decode them exactly, and our
//!     encoder must make the same bytes from the same inputs.
//! (b) `rust_aggregates.txt`: aggregates our encoder made (rewritten when
//!     `KPL_WRITE_INTEROP_VECTORS=1`), and `rust_aggregates_python_decoded.txt`: what Python read
//!     out of them. Our encoder must still make exactly those bytes, so Python's verdict stays
//!     valid.

use std::path::PathBuf;

use bytes::Bytes;
use kinesis_aggregation::{AggregateBuilder, Deaggregated, PushRejected, deaggregate};
use md5::{Digest, Md5};

type Input = (String, Option<String>, Vec<u8>);

#[derive(Debug, Default)]
struct Vector {
    name: String,
    records: Vec<Input>,
    aggregate: Option<Vec<u8>>,
    aggregate_md5: Option<Vec<u8>>,
    /// Python's output: a record and its sub-sequence number.
    decoded: Vec<(Input, u64)>,
}

fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn token(value: Option<&[u8]>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| format!("h:{}", to_hex(v)))
}

fn parse_token(token: &str) -> Option<Vec<u8>> {
    if token == "none" {
        return None;
    }
    let hex = token
        .strip_prefix("h:")
        .expect("value token starts with h:");
    assert_eq!(hex.len() % 2, 0, "odd hex length");
    Some(
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
            .collect(),
    )
}

fn parse_text(token: &str) -> Option<String> {
    parse_token(token).map(|bytes| String::from_utf8(bytes).expect("keys are UTF-8"))
}

fn parse_input(fields: &[&str]) -> Input {
    (
        parse_text(fields[0]).expect("partition key present"),
        parse_text(fields[1]),
        parse_token(fields[2]).expect("data present"),
    )
}

fn read_vectors(name: &str) -> Vec<Vector> {
    let text = std::fs::read_to_string(data_file(name)).expect("vector file is committed");
    let mut vectors = Vec::new();
    let mut current = Vector::default();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
        let fields: Vec<&str> = rest.split(' ').collect();
        match kind {
            "vector" => current.name = rest.to_owned(),
            "record" => current.records.push(parse_input(&fields)),
            "aggregate" => current.aggregate = parse_token(rest),
            "aggregate_md5" => current.aggregate_md5 = parse_token(rest),
            "decoded" => current.decoded.push((
                parse_input(&fields[..3]),
                fields[3].parse().expect("sub-sequence number"),
            )),
            "end" => vectors.push(std::mem::take(&mut current)),
            other => panic!("unexpected line kind {other:?} in {name}"),
        }
    }
    assert!(!vectors.is_empty(), "{name} holds no vector");
    vectors
}

fn encode(records: &[Input]) -> Bytes {
    let mut builder = AggregateBuilder::new(usize::MAX, usize::MAX);
    for (pk, ehk, data) in records {
        builder
            .try_push(pk, ehk.as_deref(), data)
            .expect("no limit");
    }
    builder.take_aggregate().expect("at least one record")
}

fn assert_decodes_to(name: &str, aggregate: &[u8], records: &[Input]) {
    let Deaggregated::Aggregated(decoded) = deaggregate(Bytes::copy_from_slice(aggregate)) else {
        panic!("{name}: not read as an aggregate");
    };
    assert_eq!(decoded.len(), records.len(), "{name}");
    for (i, (sub, (pk, ehk, data))) in decoded.iter().zip(records).enumerate() {
        assert_eq!(sub.partition_key(), pk, "{name} #{i}");
        assert_eq!(sub.explicit_hash_key(), ehk.as_deref(), "{name} #{i}");
        assert_eq!(&sub.data()[..], &data[..], "{name} #{i}");
        assert_eq!(sub.sub_sequence_number(), i as u64, "{name} #{i}");
    }
}

#[test]
fn python_aggregates_decode_exactly_and_reencode_identically() {
    let vectors = read_vectors("python_aggregates.txt");
    assert!(vectors.len() >= 10);
    for vector in &vectors {
        let aggregate = vector.aggregate.as_deref().expect("aggregate line");
        assert_decodes_to(&vector.name, aggregate, &vector.records);
        assert_eq!(
            to_hex(&encode(&vector.records)),
            to_hex(aggregate),
            "{}: our encoder differs from Python's",
            vector.name
        );
    }
}

#[test]
fn python_filled_aggregate_fits_our_default_limit() {
    let vectors = read_vectors("python_aggregates.txt");
    let filled = vectors
        .iter()
        .find(|v| v.name == "record_aggregator_filled_51200")
        .expect("filled vector");
    let mut builder = AggregateBuilder::default();
    for (pk, ehk, data) in &filled.records {
        builder
            .try_push(pk, ehk.as_deref(), data)
            .expect("Python's fill fits ours");
    }
    assert_eq!(
        Some(builder.encoded_size()),
        filled.aggregate.as_ref().map(Vec::len)
    );
    assert!(builder.encoded_size() <= AggregateBuilder::DEFAULT_MAX_SIZE);
}

/// A small deterministic generator (xorshift64*), so the cases never change.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Low-entropy data for big records, so the committed files compress well in git.
fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed + i * 7) as u8).collect()
}

/// The inputs behind `rust_aggregates.txt`. Changing them means regenerating (b).
fn rust_cases() -> Vec<(&'static str, Vec<Input>)> {
    let mut rng = Rng(0x0005_EED0_FA66);
    let rec =
        |pk: &str, ehk: Option<&str>, data: Vec<u8>| (pk.to_owned(), ehk.map(str::to_owned), data);
    let max = u128::MAX.to_string();
    let mut cases = vec![
        (
            "single_record",
            vec![rec("only", None, b"one record, still aggregated".to_vec())],
        ),
        (
            "repeated_keys",
            ["a", "b", "a", "c", "b", "a"]
                .iter()
                .map(|pk| rec(pk, None, rng.bytes(9)))
                .collect(),
        ),
        (
            "explicit_hash_keys",
            vec![
                rec("p1", Some("0"), b"zero".to_vec()),
                rec("p2", Some(&max), b"max".to_vec()),
                rec("p3", Some("0"), b"zero again".to_vec()),
            ],
        ),
        (
            "mixed_explicit_hash_keys",
            vec![
                rec("p1", None, b"none".to_vec()),
                rec("p2", Some("99"), b"ehk".to_vec()),
                rec("p1", None, b"none again".to_vec()),
                rec("p3", Some("100"), b"other".to_vec()),
            ],
        ),
        (
            "empty_data",
            vec![
                rec("e1", None, vec![]),
                rec("e2", Some("5"), vec![]),
                rec("e1", None, vec![]),
            ],
        ),
        (
            "unicode_keys",
            vec![
                rec("ключ-1", None, "значение".as_bytes().to_vec()),
                rec("鍵🔑", Some("12"), vec![0, 255, 0]),
                rec("ключ-1", None, b"again".to_vec()),
            ],
        ),
        (
            "varint_boundaries",
            [127usize, 128, 16_383, 16_384]
                .iter()
                .map(|&n| rec(&format!("len-{n}"), None, pattern(n, n)))
                .collect(),
        ),
        (
            "many_keys",
            (0..300)
                .map(|i| {
                    let ehk = (i % 4 == 0).then(|| (i * 104_729).to_string());
                    rec(
                        &format!("key-{:03}", i % 210),
                        ehk.as_deref(),
                        rng.bytes(i % 33),
                    )
                })
                .collect(),
        ),
    ];
    // Filled to the default 51 200 bytes with distinct 20-character keys and 100-byte records.
    let mut builder = AggregateBuilder::default();
    let mut filled = Vec::new();
    for i in 0..usize::MAX {
        let record = rec(&format!("{:020}", i * 7_777_777), None, pattern(i, 100));
        match builder.try_push(&record.0, None, &record.2) {
            Ok(()) => filled.push(record),
            Err(PushRejected::Full { .. }) => break,
            Err(other) => panic!("{other}"),
        }
    }
    cases.push(("filled_to_default_max", filled));
    cases
}

fn write_rust_vectors(cases: &[(&str, Vec<Input>)]) {
    let mut out = String::from(
        "# (b) Aggregates made by our encoder (tests/record_interop.rs, with\n\
         # KPL_WRITE_INTEROP_VECTORS=1); read by make_vectors.py. Do not edit.\n",
    );
    for (name, records) in cases {
        out.push_str(&format!("vector {name}\n"));
        for (pk, ehk, data) in records {
            out.push_str(&format!(
                "record {} {} {}\n",
                token(Some(pk.as_bytes())),
                token(ehk.as_deref().map(str::as_bytes)),
                token(Some(data))
            ));
        }
        out.push_str(&format!(
            "aggregate {}\nend\n",
            token(Some(&encode(records)))
        ));
    }
    std::fs::write(data_file("rust_aggregates.txt"), out).expect("write vectors");
}

#[test]
fn our_aggregates_are_unchanged_and_python_reads_them() {
    let cases = rust_cases();
    if std::env::var_os("KPL_WRITE_INTEROP_VECTORS").is_some() {
        write_rust_vectors(&cases);
    }
    let ours = read_vectors("rust_aggregates.txt");
    let python = read_vectors("rust_aggregates_python_decoded.txt");
    assert_eq!(ours.len(), cases.len());
    assert_eq!(python.len(), cases.len());

    for (((name, records), ours), python) in cases.iter().zip(&ours).zip(&python) {
        assert_eq!(
            (&ours.name, &python.name),
            (&name.to_string(), &name.to_string())
        );
        assert_eq!(
            &ours.records, records,
            "{name}: inputs changed; regenerate (b)"
        );
        let aggregate = ours.aggregate.as_deref().expect("aggregate line");
        assert_eq!(
            to_hex(&encode(records)),
            to_hex(aggregate),
            "{name}: our encoder's output changed; regenerate (b) and rerun Python"
        );
        assert!(
            aggregate.len() <= AggregateBuilder::DEFAULT_MAX_SIZE,
            "{name}"
        );
        assert_decodes_to(name, aggregate, records);

        // What Python read out of exactly these bytes.
        assert_eq!(
            python.aggregate_md5.as_deref(),
            Some(&Md5::digest(aggregate)[..]),
            "{name}: Python read other bytes"
        );
        assert_eq!(python.decoded.len(), records.len(), "{name}");
        // Python's deaggregator gives a record without an explicit hash key the table's first
        // one when the table is not empty (its bug, see make_vectors.py).
        let first_ehk = records.iter().find_map(|(_, ehk, _)| ehk.clone());
        for (i, ((pk, ehk, data), ((py_pk, py_ehk, py_data), py_subseq))) in
            records.iter().zip(&python.decoded).enumerate()
        {
            assert_eq!(
                (py_pk, py_data, *py_subseq),
                (pk, data, i as u64),
                "{name} #{i}"
            );
            if ehk.is_some() || first_ehk.is_none() {
                assert_eq!(py_ehk, ehk, "{name} #{i}");
            } else {
                assert_eq!(
                    py_ehk, &first_ehk,
                    "{name} #{i}: Python's known bug changed"
                );
            }
        }
    }
}

#[test]
fn filled_vector_is_tight() {
    let cases = rust_cases();
    let (_, filled) = cases
        .iter()
        .find(|(name, _)| *name == "filled_to_default_max")
        .expect("case");
    let aggregate = encode(filled);
    assert!(aggregate.len() <= AggregateBuilder::DEFAULT_MAX_SIZE);
    // Another 100-byte record with a new 20-character key costs 2 + 20 + 2 + 3 + 2 + 100 = 129
    // bytes at most, so a tight fill leaves less than that.
    assert!(AggregateBuilder::DEFAULT_MAX_SIZE - aggregate.len() < 129);
}
