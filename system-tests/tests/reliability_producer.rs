//! Reliability scenario 2: the producer under throttling, server errors, partial failures,
//! latency and dropped connections.
//!
//! The producer's client (SDK retries off: the producer's own retries are under test) goes
//! through both seeded fault layers:
//! - [`PutRecordsFaults`]: 20 % of PutRecords calls throttled and 5 % failed with
//!   `InternalFailure` (HTTP 500) as a whole; of the other calls, 5 % of the entries throttled
//!   and 2 % failed with `InternalFailure` (partial failures);
//! - [`ServiceFaults`]: 30 % of PutRecords calls delayed by up to 40 ms, 3 % dropped before
//!   reaching the server (a dispatch failure), and 2 % applied by the server with their answer
//!   lost (the client sees a timeout, so it retries records that are already stored).
//!
//! Run once per ordering mode. Checked: every put's future resolves, to success; nothing is
//! lost; a record is stored more than once only if one of its attempts timed out (its call's
//! answer lost), and such duplicates are counted and reported; every record is where its
//! result says (the last copy, for a duplicate); with `PerShardStrict` every key is stored in
//! put order (a duplicate comes right after its first copy). The producer's memory at its
//! bounds is checked by `kpl/tests/memory.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, deaggregate};
use kinesis_integration::TestBed;
use kinesis_integration::faults::{
    FaultPlan, PutRecordsFaults, Service, ServiceFaults, ServicePlan,
};
use kinesis_kpl::{Ordering, Producer, ProducerConfig, PutError, UserRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const SHARDS: u32 = 4;
const KEYS: u64 = 1_000;
const MAX_BUFFERED_RECORDS: usize = 4_000;
/// The attempt code of a call whose answer was lost (it may have been applied).
const TIMED_OUT: &str = "RequestTimeout";
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
    // Scaled down on slower backends only as far as still draws every fault: strict order
    // makes one call per shard at a time, so it needs fewer records for as many calls.
    let least = if ordering == Ordering::PerShardStrict {
        10_000
    } else {
        50_000
    };
    let records = bed.scaled(50_000).max(least) as u64;

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
        timeout: 0.02,
        timeout_after: Duration::from_millis(50),
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
    let config = ProducerConfig::builder()
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
                Err(PutError::Full { .. }) => {
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
    let put_stats = put_faults.stats();
    let transport_stats = transport_faults.stats().total;
    let produced = started.elapsed();

    // Everything stored, where its result says; more than once only after a lost answer.
    let stored = read_all(&bed, &stream).await?;
    let mut copies: HashMap<u64, Vec<&Stored>> = HashMap::new();
    for s in &stored {
        copies.entry(s.value).or_default().push(s);
    }
    let lost = (0..records).filter(|v| !copies.contains_key(v)).count();
    let timed_out = |v: u64| {
        results[v as usize]
            .attempts
            .iter()
            .any(|a| a.error_code.as_deref() == Some(TIMED_OUT))
    };
    let duplicated: Vec<u64> = copies
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(v, _)| *v)
        .collect();
    let duplicates: usize = copies.values().map(|c| c.len() - 1).sum();
    let unexplained: Vec<u64> = duplicated
        .iter()
        .copied()
        .filter(|v| !timed_out(*v))
        .collect();
    let records_timed_out = (0..records).filter(|v| timed_out(*v)).count();
    for (v, result) in results.iter().enumerate() {
        let Some(c) = copies.get(&(v as u64)) else {
            continue;
        };
        // Its result names the copy its successful attempt stored.
        let placed = c.iter().any(|s| {
            (&s.shard, &s.sequence_number, s.sub_sequence_number)
                == (
                    &result.shard_id,
                    &result.sequence_number,
                    result.sub_sequence_number,
                )
        });
        assert!(placed, "record {v} is not where its result says");
    }
    // Storage order per key; a duplicate's later copy is not counted against it.
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
         {duplicates} (of {} records, all among the {records_timed_out} records with a \
         timed-out attempt), stored out of key order {out_of_order}; putter found the buffers \
         full {full} times; injected: PutRecords calls {} (throttled {}, InternalFailure {}), \
         entries throttled {}, entries InternalFailure {}, PutRecords delayed {}, dropped {} \
         and answer lost {} of {}; {produced:?} (seed {seed:#x})",
        results.len(),
        duplicated.len(),
        put_stats.calls,
        put_stats.calls_throttled,
        put_stats.calls_internal_failure,
        put_stats.entries_throttled,
        put_stats.entries_internal_failure,
        transport_stats.delayed,
        transport_stats.dropped,
        transport_stats.timed_out,
        transport_stats.calls,
    );
    assert_eq!(results.len() as u64, records, "every future resolved");
    assert_eq!(lost, 0, "records lost");
    assert!(
        unexplained.is_empty(),
        "records stored twice though no call of theirs lost its answer: {unexplained:?}"
    );
    if ordering == Ordering::PerShardStrict {
        assert_eq!(
            out_of_order, 0,
            "strict ordering kept every key in put order"
        );
    }
    assert!(full > 0, "the putter reached the bound");
    assert!(retried > 0, "records were retried");
    assert!(
        put_stats.calls_throttled > 0
            && put_stats.calls_internal_failure > 0
            && put_stats.entries_throttled > 0
            && put_stats.entries_internal_failure > 0
            && transport_stats.dropped > 0
            && transport_stats.delayed > 0
            && transport_stats.timed_out > 0,
        "every fault was drawn: {put_stats:?} {transport_stats:?}"
    );
    Ok(())
}
