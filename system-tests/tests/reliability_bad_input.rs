//! Reliability scenario 4: bad input, end to end.
//!
//! While a producer puts good records and a worker consumes the stream:
//! - the producer is handed bad records (oversize, empty partition key, over-long keys counted
//!   in characters and in UTF-16 units, bad explicit hash keys): each is refused at once with
//!   its typed error, through both `put_record` and `try_put_record`, and the records at the
//!   edges of the limits (256-unit keys, a record of exactly the maximum size, the largest
//!   explicit hash key) are accepted and land;
//! - malformed aggregates are put into the stream directly (truncated, bad MD5, bad protobuf,
//!   out-of-range key indices, huge declared lengths, a missing required field, a bad explicit
//!   hash key, the magic alone): the worker delivers each once, whole and unchanged, as a plain
//!   record (pass-through), with the reason [`deaggregate`] documents;
//! - nothing else is disturbed: every good record (KPL-aggregated, and a hand-made well-formed
//!   aggregate) is delivered, no processor fails or restarts, the producer ends with nothing
//!   outstanding.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_aggregation::{
    AggregateBuilder, Deaggregated, HashKeyProblem, MAGIC, PassThroughReason, deaggregate,
};
use kinesis_integration::TestBed;
use kinesis_kcl::{
    Checkpointer, InitialPosition, LeaseConfig, PollingConfig, ProcessRecordsInput, ProcessorError,
    Retrieval, ShardRecordProcessor, Worker,
};
use kinesis_kcl::{InitializationInput, ShardContext};
use kinesis_kpl::{Producer, ProducerConfig, PutError, UserRecord};
use md5::{Digest, Md5};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_RECORD_SIZE: usize = 1024 * 1024;
/// Records at the edges of the limits, which must be accepted and land.
const EDGES: usize = 4;

// --- Hand-made protobuf, for aggregates no producer of ours would write. ---

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
fn record(pk: Option<u64>, ehk: Option<u64>, data: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(index) = pk {
        field_varint(1, index, &mut out);
    }
    if let Some(index) = ehk {
        field_varint(2, index, &mut out);
    }
    if let Some(data) = data {
        field_bytes(3, data, &mut out);
    }
    out
}

/// `AggregatedRecord { partition_key_table, explicit_hash_key_table, records }`.
fn message(pks: &[&str], ehks: &[&str], records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for pk in pks {
        field_bytes(1, pk.as_bytes(), &mut out);
    }
    for ehk in ehks {
        field_bytes(2, ehk.as_bytes(), &mut out);
    }
    for r in records {
        field_bytes(3, r, &mut out);
    }
    out
}

/// Magic, message, MD5 of the message: a correctly framed aggregate.
fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(message);
    out.extend_from_slice(&Md5::digest(message));
    out
}

/// A well-formed aggregate of `count` records made by our own builder.
fn kpl_aggregate(count: usize) -> Vec<u8> {
    let mut builder = AggregateBuilder::new(51_200, 1_000);
    for i in 0..count {
        builder
            .try_push(&format!("k{}", i % 3), None, format!("sub-{i}").as_bytes())
            .expect("room");
    }
    builder.take_aggregate().expect("an aggregate").to_vec()
}

/// The malformed aggregates put into the stream, with the reason each must be passed through
/// for.
fn malformed() -> Vec<(&'static str, Vec<u8>, PassThroughReason)> {
    let good = kpl_aggregate(10);
    let mut bad_md5 = good.clone();
    *bad_md5.last_mut().unwrap() ^= 0xFF;
    let mut huge_length = Vec::new();
    varint((3 << 3) | 2, &mut huge_length);
    varint(1 << 40, &mut huge_length);
    huge_length.extend_from_slice(b"only a few bytes follow");
    let mut huge_varint = Vec::new();
    varint(1 << 3, &mut huge_varint);
    huge_varint.extend_from_slice(&[0xFF; 11]);
    let one = |r: Vec<u8>| message(&["k"], &[], &[r]);
    vec![
        ("magic-only", MAGIC.to_vec(), PassThroughReason::TooShort),
        (
            "truncated-to-20",
            good[..20].to_vec(),
            PassThroughReason::TooShort,
        ),
        (
            "truncated-half",
            good[..good.len() / 2].to_vec(),
            PassThroughReason::DigestMismatch,
        ),
        ("bad-md5", bad_md5, PassThroughReason::DigestMismatch),
        (
            "bad-protobuf",
            framed(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x07]),
            PassThroughReason::InvalidProtobuf,
        ),
        (
            "huge-length",
            framed(&huge_length),
            PassThroughReason::InvalidProtobuf,
        ),
        (
            "huge-varint",
            framed(&huge_varint),
            PassThroughReason::InvalidProtobuf,
        ),
        (
            "pk-index-out-of-range",
            framed(&one(record(Some(5), None, Some(b"x")))),
            PassThroughReason::KeyIndexOutOfRange,
        ),
        (
            "pk-index-huge",
            framed(&one(record(Some(u64::MAX), None, Some(b"x")))),
            PassThroughReason::KeyIndexOutOfRange,
        ),
        (
            "ehk-index-out-of-range",
            framed(&one(record(Some(0), Some(3), Some(b"x")))),
            PassThroughReason::KeyIndexOutOfRange,
        ),
        (
            "missing-data",
            framed(&one(record(Some(0), None, None))),
            PassThroughReason::MissingRequiredField,
        ),
        (
            "bad-explicit-hash-key",
            framed(&message(
                &["k"],
                &["not-a-number"],
                &[record(Some(0), Some(0), Some(b"x"))],
            )),
            PassThroughReason::InvalidExplicitHashKey,
        ),
    ]
}

/// One record delivered to a processor.
#[derive(Clone, Debug)]
struct Delivered {
    shard: String,
    key: String,
    data: Bytes,
    aggregated: bool,
    sub_sequence_number: u64,
}

#[derive(Default)]
struct Log {
    delivered: Mutex<Vec<Delivered>>,
    initialized: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
}

struct Processor {
    shard: String,
    log: Arc<Log>,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Processor {
    async fn initialize(&mut self, _input: InitializationInput) {
        self.log
            .initialized
            .lock()
            .unwrap()
            .push(self.shard.clone());
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        {
            let mut delivered = self.log.delivered.lock().unwrap();
            for r in &input.records {
                delivered.push(Delivered {
                    shard: self.shard.clone(),
                    key: r.partition_key().to_owned(),
                    data: r.data().clone(),
                    aggregated: r.is_aggregated(),
                    sub_sequence_number: r.sub_sequence_number(),
                });
            }
        }
        if let Err(e) = checkpointer.checkpoint().await {
            self.log.failures.lock().unwrap().push(e.to_string());
            return Err(e.into());
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_or_passed_through_and_disturbs_nothing() -> TestResult {
    tokio::time::timeout(TEST_TIMEOUT, scenario())
        .await
        .map_err(|_| format!("scenario did not finish within {TEST_TIMEOUT:?}"))?
}

/// What a bad put must be refused with.
type Expect = fn(&PutError) -> bool;

fn bad_puts() -> Vec<(&'static str, UserRecord, Expect)> {
    let emoji_key = "😀".repeat(129); // 258 UTF-16 units, 129 characters
    vec![
        (
            "oversize",
            UserRecord::new("k", vec![0u8; MAX_RECORD_SIZE]),
            |e| {
                matches!(e, PutError::RecordTooLarge { size, max, .. }
                    if *size == MAX_RECORD_SIZE + 1 && *max == MAX_RECORD_SIZE)
            },
        ),
        ("empty-key", UserRecord::new("", "x"), |e| {
            matches!(e, PutError::EmptyPartitionKey { max: 256, .. })
        }),
        ("257-char-key", UserRecord::new("k".repeat(257), "x"), |e| {
            matches!(
                e,
                PutError::PartitionKeyTooLong {
                    chars: 257,
                    max: 256,
                    ..
                }
            )
        }),
        ("258-unit-emoji-key", UserRecord::new(emoji_key, "x"), |e| {
            matches!(
                e,
                PutError::PartitionKeyTooLong {
                    chars: 258,
                    max: 256,
                    ..
                }
            )
        }),
        (
            "ehk-not-decimal",
            UserRecord::new("k", "x").explicit_hash_key("12ab"),
            |e| {
                matches!(e, PutError::InvalidExplicitHashKey { error: h, .. }
                if h.problem == HashKeyProblem::NotDecimal)
            },
        ),
        (
            "ehk-negative",
            UserRecord::new("k", "x").explicit_hash_key("-1"),
            |e| {
                matches!(e, PutError::InvalidExplicitHashKey { error: h, .. }
                if h.problem == HashKeyProblem::NotDecimal)
            },
        ),
        (
            "ehk-2^128",
            UserRecord::new("k", "x").explicit_hash_key(u128::MAX.to_string() + "0"),
            |e| {
                matches!(e, PutError::InvalidExplicitHashKey { error: h, .. }
                if h.problem == HashKeyProblem::OutOfRange)
            },
        ),
        (
            "ehk-exactly-2^128",
            UserRecord::new("k", "x").explicit_hash_key("340282366920938463463374607431768211456"),
            |e| {
                matches!(e, PutError::InvalidExplicitHashKey { error: h, .. }
                if h.problem == HashKeyProblem::OutOfRange)
            },
        ),
        (
            "ehk-empty",
            UserRecord::new("k", "x").explicit_hash_key(""),
            |e| {
                matches!(e, PutError::InvalidExplicitHashKey { error: h, .. }
                if h.problem == HashKeyProblem::Empty)
            },
        ),
    ]
}

async fn scenario() -> TestResult {
    let started = Instant::now();
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(2).await?;
    let log = Arc::new(Log::default());
    let worker = {
        let log = Arc::clone(&log);
        Worker::builder(
            bed.unique_table_name(),
            bed.kinesis().clone(),
            bed.dynamodb().clone(),
            move |shard: &ShardContext| Processor {
                shard: shard.lease_key.clone(),
                log: Arc::clone(&log),
            },
        )
        .stream(&stream)
        .initial_position(InitialPosition::TrimHorizon)
        .lease_config(
            LeaseConfig::builder()
                .failover_time(Duration::from_secs(10))
                .build()?,
        )
        .retrieval(Retrieval::Polling(
            PollingConfig::builder()
                .idle_time_between_reads(Duration::from_millis(50))
                .build()?,
        ))
        .shard_sync_interval(Duration::from_millis(500))
        .build()?
    };
    let handle = worker.handle();
    let worker_task = tokio::spawn(worker.run());

    let producer = Producer::new(
        bed.kinesis().clone(),
        &stream,
        ProducerConfig::builder()
            .record_max_buffered_time(Duration::from_millis(20))
            .build()?,
    )
    .await?;
    let good = bed.scaled(20_000);
    let malformed = malformed();
    // The spec, checked on its own first: each malformed record passes through for its reason.
    for (name, data, reason) in &malformed {
        match deaggregate(Bytes::from(data.clone())) {
            Deaggregated::PassThrough { reason: got, .. } => {
                assert_eq!(got, *reason, "{name}")
            }
            Deaggregated::Aggregated(subs) => {
                panic!("{name} deaggregated into {} records", subs.len())
            }
        }
    }
    let hand_made = framed(&message(
        &["hand-a", "hand-b"],
        &[],
        &[
            record(Some(0), None, Some(b"hand-0")),
            record(Some(1), None, Some(b"hand-1")),
            record(Some(0), None, Some(b"hand-2")),
        ],
    ));

    // Good records, with the bad ones interleaved: bad puts through the producer, malformed
    // aggregates and a well-formed hand-made one straight into the stream.
    let bad = bad_puts();
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    let mut pending = Vec::with_capacity(good);
    let edges = [
        UserRecord::new("e".repeat(256), "edge-256-char-key"),
        UserRecord::new("k", "edge-max-ehk").explicit_hash_key(u128::MAX.to_string()),
        UserRecord::new("k", "edge-zero-ehk").explicit_hash_key("0"),
        UserRecord::new("k", {
            let mut data = b"edge-max-size:".to_vec();
            data.resize(MAX_RECORD_SIZE - 1, b'.');
            data
        }),
    ];
    // (A 256-unit key of characters outside ASCII is valid for Kinesis, which counts UTF-16
    // units, and accepted by the producer; it is left out because the embedded server counts
    // UTF-8 bytes and would refuse the whole PutRecords call holding it.)
    for edge in edges {
        pending.push(producer.put_record(edge));
    }
    let step = good / (bad.len() + malformed.len() + 1);
    let (mut next_bad, mut next_malformed) = (0, 0);
    for i in 0..good {
        pending.push(producer.put_record(UserRecord::new(
            format!("key-{}", i % 100),
            format!("good-{i}"),
        )));
        if i % step == step - 1 {
            if next_bad < bad.len() {
                let (name, record, expect) = &bad[next_bad];
                next_bad += 1;
                match producer.try_put_record(record.clone()) {
                    Err(e) => assert!(expect(&e), "{name}: try_put_record refused with {e:?}"),
                    Ok(_) => panic!("{name}: try_put_record accepted it"),
                }
                let e = tokio::time::timeout(
                    Duration::from_secs(1),
                    producer.put_record(record.clone()),
                )
                .await
                .map_err(|_| format!("{name}: put_record did not resolve at once"))?
                .expect_err(name);
                assert!(expect(&e), "{name}: put_record refused with {e:?}");
                *refused.entry(name).or_default() += 1;
            } else if next_malformed < malformed.len() {
                let (name, data, _) = &malformed[next_malformed];
                next_malformed += 1;
                bed.kinesis()
                    .put_record()
                    .stream_name(&stream)
                    .partition_key(format!("bad-{name}"))
                    .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
                    .send()
                    .await?;
            }
        }
    }
    bed.kinesis()
        .put_record()
        .stream_name(&stream)
        .partition_key("hand-made")
        .data(aws_sdk_kinesis::primitives::Blob::new(hand_made.clone()))
        .send()
        .await?;
    assert_eq!(next_bad, bad.len(), "every bad put was tried");
    assert_eq!(
        next_malformed,
        malformed.len(),
        "every malformed record was put"
    );
    let mut landed = 0;
    for p in pending {
        p.await?;
        landed += 1;
    }
    producer.shutdown().await;
    assert_eq!(producer.outstanding_records(), 0);

    // Everything arrives: good records, edges, the hand-made aggregate's three records, and
    // every malformed one.
    let expected = good + EDGES + 3 + malformed.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.delivered.lock().unwrap().len() < expected {
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {expected} records delivered after 60 s",
                log.delivered.lock().unwrap().len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A last look for strays (nothing more may come).
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.shutdown().await;
    worker_task.await??;

    let delivered = log.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), expected, "each record delivered once");
    let mut by_data: HashMap<&[u8], &Delivered> = HashMap::new();
    for d in &delivered {
        assert!(
            by_data.insert(&d.data[..], d).is_none(),
            "delivered twice: {:?}",
            String::from_utf8_lossy(&d.data[..d.data.len().min(40)])
        );
    }
    for i in 0..good {
        let d = by_data
            .get(format!("good-{i}").as_bytes())
            .ok_or_else(|| format!("good-{i} not delivered"))?;
        assert_eq!(d.key, format!("key-{}", i % 100));
    }
    for edge in ["edge-256-char-key", "edge-max-ehk", "edge-zero-ehk"] {
        assert!(by_data.contains_key(edge.as_bytes()), "{edge} delivered");
    }
    assert!(
        delivered
            .iter()
            .any(|d| d.data.starts_with(b"edge-max-size:") && d.data.len() == MAX_RECORD_SIZE - 1),
        "the record of the maximum size was delivered"
    );
    let mut passed_through: BTreeMap<&str, PassThroughReason> = BTreeMap::new();
    for (name, data, reason) in &malformed {
        let d = by_data
            .get(&data[..])
            .ok_or_else(|| format!("malformed {name} not delivered"))?;
        assert_eq!(
            d.key,
            format!("bad-{name}"),
            "{name}: its own partition key"
        );
        assert!(!d.aggregated, "{name}: delivered as a plain record");
        assert_eq!(d.sub_sequence_number, 0, "{name}");
        passed_through.insert(name, *reason);
    }
    for (i, key) in ["hand-a", "hand-b", "hand-a"].iter().enumerate() {
        let d = by_data
            .get(format!("hand-{i}").as_bytes())
            .ok_or("the hand-made aggregate's records")?;
        assert!(d.aggregated && d.sub_sequence_number == i as u64, "{d:?}");
        assert_eq!(d.key, *key);
    }
    let initialized = log.initialized.lock().unwrap().clone();
    let shards: std::collections::BTreeSet<&String> = delivered.iter().map(|d| &d.shard).collect();
    assert_eq!(
        initialized.len(),
        2,
        "each shard's processor started once, none restarted: {initialized:?}"
    );
    assert!(
        log.failures.lock().unwrap().is_empty(),
        "{:?}",
        log.failures
    );
    eprintln!(
        "REPORT scenario 4 (bad input): {good} good records + {EDGES} edge records put through the \
         producer and delivered ({landed} futures resolved Ok); bad puts refused with typed \
         errors (each through try_put_record and put_record): {refused:?}; {} malformed \
         aggregates put straight into the stream, each delivered once, whole, as a plain \
         record: {passed_through:?}; a hand-made well-formed aggregate deaggregated into its 3 \
         records; {} records delivered over {} shards, lost 0, duplicates 0, processor \
         restarts 0; {:?}",
        malformed.len(),
        delivered.len(),
        shards.len(),
        started.elapsed(),
    );
    Ok(())
}
