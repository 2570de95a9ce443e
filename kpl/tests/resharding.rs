//! The producer running through reshards: one producer puts continuously while the stream is
//! split twice and merged once under it. What is read back is judged as the Java KCL judges it
//! (an aggregate with any sub-record outside its shard's range is dropped whole), so a record
//! the producer reported stored but a standard consumer would never deliver counts as lost.

#[path = "support/readback.rs"]
mod readback;
#[path = "support/reshard_load.rs"]
mod reshard_load;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kinesis_integration::TestBed;
use kinesis_integration::faults::{FaultPlan, PutRecordsFaults};
use kinesis_kpl::{Ordering, Producer, ProducerConfig, PutResult};
use readback::{BoxError, Read, by_data, java_kcl_view, read_all};
use reshard_load::{put_through_reshards, wrong_shard_count};

type TestResult = Result<(), BoxError>;

/// What one run through the reshards produced.
struct Run {
    results: Vec<PutResult>,
    reads: Vec<Read>,
}

/// Runs [`put_through_reshards`] on a fresh 4-shard stream with a producer built from `client`
/// and `config`, then reads the whole stream back.
async fn run_through_reshards(
    bed: &TestBed,
    client: aws_sdk_kinesis::Client,
    config: ProducerConfig,
    records: usize,
    keys: usize,
) -> Result<Run, BoxError> {
    let stream = bed.create_stream(4).await?;
    let producer = Producer::new(client, &stream, config).await?;
    let results = put_through_reshards(bed, &producer, &stream, records, keys).await?;
    producer.shutdown().await;
    let reads = read_all(bed.kinesis(), &stream).await?;
    Ok(Run { results, reads })
}

/// Checks that every record is delivered once, by the Java KCL's rule, where its future said.
fn assert_each_record_where_its_future_says(run: &Run) -> BTreeMap<String, Vec<Read>> {
    let (delivered, dropped) = java_kcl_view(run.reads.clone());
    let misplaced = run.reads.iter().filter(|r| !r.aggregate_in_range).count();
    let wrong_shard = wrong_shard_count(&run.results);
    println!(
        "{} records put; {} user records read in {dropped} aggregates the Java KCL drops; \
         {wrong_shard} records sent again after landing on the wrong shard",
        run.results.len(),
        misplaced
    );
    // Without this the test could pass without ever crossing the window it is about: an
    // aggregate built for a shard that has just split, stored on one of its children.
    assert!(
        dropped > 0 && wrong_shard > 0,
        "the reshards never caught an aggregate built for the old shard map"
    );
    let stored = by_data(delivered.clone());
    let missing: Vec<usize> = (0..run.results.len())
        .filter(|n| !stored.contains_key(&Bytes::from(n.to_string())))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} records not delivered by the Java KCL's rule (first: {:?})",
        missing.len(),
        run.results.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(stored.len(), run.results.len(), "nothing else was stored");
    for (n, result) in run.results.iter().enumerate() {
        let read = &stored[&Bytes::from(n.to_string())];
        assert!(
            (read.range.0..=read.range.1).contains(&read.hash_key),
            "record {n} on {} outside its range",
            read.shard_id
        );
        assert_eq!(
            (
                result.shard_id.as_str(),
                result.sequence_number.as_str(),
                result.sub_sequence_number
            ),
            (
                read.shard_id.as_str(),
                read.sequence_number.as_str(),
                read.sub_sequence_number
            ),
            "record {n}: the future reports where it is delivered"
        );
    }
    let mut per_key: BTreeMap<String, Vec<Read>> = BTreeMap::new();
    for read in delivered {
        per_key
            .entry(read.partition_key.clone())
            .or_default()
            .push(read);
    }
    per_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_running_through_two_splits_and_a_merge_puts_every_record_on_its_shard()
-> TestResult {
    let bed = TestBed::start().await?;
    // Full volume on every backend: aggregated, it is a few hundred Kinesis records, which
    // kinesis-mock takes as quickly as the embedded server.
    let records = 60_000;
    let keys = 2_500;
    let run = run_through_reshards(
        &bed,
        bed.kinesis().clone(),
        ProducerConfig::default(),
        records,
        keys,
    )
    .await?;
    assert!(run.results.len() >= records);
    assert_each_record_where_its_future_says(&run);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_order_holds_per_key_across_the_lineage_with_throttling() -> TestResult {
    let bed = TestBed::start().await?;
    let faults = PutRecordsFaults::new(FaultPlan {
        entry_throttle: 0.3,
        ..FaultPlan::seeded(13)
    });
    let client = aws_sdk_kinesis::Client::from_conf(
        bed.kinesis_config()
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .interceptor(faults.clone())
            .build(),
    );
    let config = ProducerConfig::builder()
        .ordering(Ordering::PerShardStrict)
        .min_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(100))
        .record_ttl(Duration::from_secs(120))
        .build()?;
    let records = 50_000;
    let keys = 2_000;
    let run = run_through_reshards(&bed, client, config, records, keys).await?;
    assert!(faults.stats().entries_throttled > 0);
    let per_key = assert_each_record_where_its_future_says(&run);
    for (key, mut reads) in per_key {
        reads.sort_by(|a, b| a.storage_order().cmp(&b.storage_order()));
        let order: Vec<usize> = reads
            .iter()
            .map(|r| {
                std::str::from_utf8(&r.data)
                    .expect("utf-8")
                    .parse()
                    .expect("a number")
            })
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{key}: stored in the order {order:?}"
        );
    }
    Ok(())
}
