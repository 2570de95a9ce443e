//! Reliability scenario 2: the producer under throttling, server errors, partial failures,
//! latency and dropped connections.
//!
//! The producer's client (SDK retries off: the producer's own retries are under test) goes
//! through both seeded fault layers:
//! - [`PutRecordsFaults`]: 20 % of PutRecords calls throttled and 5 % failed with
//!   `InternalFailure` (HTTP 500) as a whole; of the other calls, 5 % of the entries throttled
//!   and 2 % failed with `InternalFailure` (partial failures);
//! - [`ServiceFaults`]: 30 % of PutRecords calls delayed by up to 40 ms and 3 % dropped
//!   before reaching the server (a dispatch failure).
//!
//! Run once per ordering mode. Checked: every put's future resolves, to success; every record
//! is stored exactly once, where its result says; with `PerShardStrict` every key is stored in
//! put order; the buffers never hold more records than their bound while the putter runs
//! faster than the faulty stream lets records out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_integration::TestBed;
use kinesis_integration::faults::{
    FaultPlan, PutRecordsFaults, Service, ServiceFaults, ServicePlan,
};
use kinesis_kpl::record::{Deaggregated, deaggregate};
use kinesis_kpl::{Config, Error, Ordering, Producer, UserRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const SHARDS: u32 = 4;
const KEYS: u64 = 1_000;
const MAX_BUFFERED_RECORDS: usize = 4_000;
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// One user record read back: (shard, sequence number, sub-sequence number, key, value).
struct Stored {
    shard: String,
    sequence_number: String,
    sub_sequence_number: u64,
    key: String,
    value: u64,
}

/// Reads every shard from TRIM_HORIZON with a client of its own (no faults), deaggregating;
/// storage order per shard.
async fn read_all(bed: &TestBed, stream: &str) -> Result<Vec<Stored>, BoxError> {
    let client = bed.kinesis();
    let shards = client.list_shards().stream_name(stream).send().await?;
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        while let Some(current) = iterator {
            let page = client.get_records().shard_iterator(current).send().await?;
            for record in page.records() {
                let data = Bytes::copy_from_slice(record.data().as_ref());
                let subs: Vec<(u64, String, Bytes)> = match deaggregate(data) {
                    Deaggregated::Aggregated(subs) => subs
                        .into_iter()
                        .map(|s| {
                            (
                                s.sub_sequence_number(),
                                s.partition_key().to_owned(),
                                s.into_data(),
                            )
                        })
                        .collect(),
                    Deaggregated::PassThrough { data, .. } => {
                        vec![(
                            0,
                            record.partition_key().unwrap_or_default().to_owned(),
                            data,
                        )]
                    }
                };
                for (sub, key, data) in subs {
                    out.push(Stored {
                        shard: shard.shard_id().to_owned(),
                        sequence_number: record.sequence_number().to_owned(),
                        sub_sequence_number: sub,
                        key,
                        value: std::str::from_utf8(&data)?.parse()?,
                    });
                }
            }
            iterator = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator().map(str::to_owned)
            };
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_producer_under_faults_resolves_every_put_and_loses_nothing() -> TestResult {
    bounded(scenario(Ordering::Unordered, 0x5EED_0002)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_producer_under_faults_keeps_key_order_and_loses_nothing() -> TestResult {
    bounded(scenario(Ordering::PerShardStrict, 0x5EED_0003)).await
}

async fn bounded(body: impl std::future::Future<Output = TestResult>) -> TestResult {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .map_err(|_| format!("scenario did not finish within {TEST_TIMEOUT:?}"))?
}

async fn scenario(ordering: Ordering, seed: u64) -> TestResult {
    let started = Instant::now();
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(SHARDS).await?;
    let records = bed.scaled(50_000) as u64;

    let put_faults = PutRecordsFaults::new(FaultPlan {
        call_throttle: 0.20,
        call_internal_failure: 0.05,
        entry_throttle: 0.05,
        entry_internal_failure: 0.02,
        ..FaultPlan::seeded(seed)
    });
    let put_transport = ServicePlan {
        latency: 0.30,
        max_latency: Duration::from_millis(40),
        dropped_connection: 0.03,
        ..ServicePlan::seeded(seed)
    }
    .operations(["PutRecords"]);
    let transport_faults = ServiceFaults::new(Service::Kinesis, put_transport);
    let client = aws_sdk_kinesis::Client::from_conf(
        transport_faults
            .kinesis_config(&bed)
            .retry_config(RetryConfig::disabled())
            .interceptor(put_faults.clone())
            .build(),
    );
    // The producer starts (its first ListShards) without faults; they begin with the puts.
    transport_faults.set_enabled(false);
    put_faults.set_enabled(false);
    let config = Config::builder()
        .ordering(ordering)
        .aggregation_max_size(2_048)
        .collection_max_count(10)
        .record_max_buffered_time(Duration::from_millis(20))
        .record_ttl(Duration::from_secs(90))
        .min_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(200))
        .shard_map_refresh_interval(Duration::from_millis(200))
        .max_buffered_records(MAX_BUFFERED_RECORDS)
        .max_buffered_bytes(2 * 1024 * 1024)
        .build()?;
    let producer = Producer::new(client, &stream, config).await?;
    transport_faults.set_enabled(true);
    put_faults.set_enabled(true);

    // The bound, sampled all along.
    let done = Arc::new(AtomicBool::new(false));
    let highest = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (producer, done, highest) = (producer.clone(), done.clone(), highest.clone());
        tokio::spawn(async move {
            let mut samples = 0u64;
            while !done.load(AtomicOrdering::SeqCst) {
                highest.fetch_max(producer.outstanding_records(), AtomicOrdering::SeqCst);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples
        })
    };

    // Put in order; a full buffer makes the putter wait (and retry the same record), so
    // records are accepted in put order.
    let mut futures = Vec::with_capacity(records as usize);
    let mut full = 0u64;
    for v in 0..records {
        let record = || UserRecord::new(format!("key-{}", v % KEYS), Bytes::from(v.to_string()));
        loop {
            match producer.try_put_record(record()) {
                Ok(future) => {
                    futures.push(future);
                    break;
                }
                Err(Error::Full { .. }) => {
                    full += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(other) => return Err(other.into()),
            }
        }
    }
    let mut results = Vec::with_capacity(futures.len());
    let mut retried = 0;
    for future in futures {
        let result = future.await?;
        if result.attempts.len() > 1 {
            retried += 1;
        }
        results.push(result);
    }
    producer.shutdown().await;
    done.store(true, AtomicOrdering::SeqCst);
    let samples = sampler.await?;
    let highest = highest.load(AtomicOrdering::SeqCst);
    let put_stats = put_faults.stats();
    let transport_stats = transport_faults.stats().total;
    let produced = started.elapsed();

    // Everything stored once, where its result says.
    let stored = read_all(&bed, &stream).await?;
    let mut by_value: HashMap<u64, &Stored> = HashMap::new();
    let mut duplicates = 0;
    for s in &stored {
        if by_value.insert(s.value, s).is_some() {
            duplicates += 1;
        }
    }
    let lost = (0..records).filter(|v| !by_value.contains_key(v)).count();
    for (v, result) in results.iter().enumerate() {
        let Some(s) = by_value.get(&(v as u64)) else {
            continue;
        };
        assert_eq!(
            (
                &result.shard_id,
                &result.sequence_number,
                result.sub_sequence_number
            ),
            (&s.shard, &s.sequence_number, s.sub_sequence_number),
            "record {v} is not where its result says"
        );
    }
    // Storage order per key.
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut out_of_order = 0;
    for s in &stored {
        if let Some(previous) = last.insert(&s.key, s.value)
            && previous > s.value
        {
            out_of_order += 1;
        }
    }
    eprintln!(
        "REPORT scenario 2 (producer under faults, {ordering:?}): {records} records, {SHARDS} \
         shards; all {} futures resolved ({retried} after retries); lost {lost}, duplicates \
         {duplicates}, stored out of key order {out_of_order}; outstanding records at most \
         {highest} (bound {MAX_BUFFERED_RECORDS}, {samples} samples, putter found the buffers \
         full {full} times); injected: PutRecords calls {} (throttled {}, InternalFailure {}), \
         entries throttled {}, entries InternalFailure {}, PutRecords delayed {} and dropped {} \
         of {}; {produced:?} (seed {seed:#x})",
        results.len(),
        put_stats.calls,
        put_stats.calls_throttled,
        put_stats.calls_internal_failure,
        put_stats.entries_throttled,
        put_stats.entries_internal_failure,
        transport_stats.delayed,
        transport_stats.dropped,
        transport_stats.calls,
    );
    assert_eq!(results.len() as u64, records, "every future resolved");
    assert_eq!(lost, 0, "records lost");
    assert_eq!(duplicates, 0, "records stored twice");
    if ordering == Ordering::PerShardStrict {
        assert_eq!(
            out_of_order, 0,
            "strict ordering kept every key in put order"
        );
    }
    assert!(
        highest <= MAX_BUFFERED_RECORDS,
        "{highest} records outstanding, over the bound of {MAX_BUFFERED_RECORDS}"
    );
    assert!(full > 0, "the putter reached the bound");
    assert!(retried > 0, "records were retried");
    assert!(
        put_stats.calls_throttled > 0
            && put_stats.calls_internal_failure > 0
            && put_stats.entries_throttled > 0
            && put_stats.entries_internal_failure > 0
            && transport_stats.dropped > 0
            && transport_stats.delayed > 0,
        "every fault was drawn: {put_stats:?} {transport_stats:?}"
    );
    Ok(())
}
