//! The producer and the worker together, both running while the stream is split twice and
//! merged once under them.
//!
//! A `PerShardStrict` producer puts continuously (60 000 records over 2 500 keys, scaled for
//! slow backends) while the first two shards are split and the last two merged; two workers
//! with default retrieval settings consume at the same time. An aggregate the producer built for
//! a shard that has just split lands on one child holding records of the other child: the
//! producer sends it again whole (so the Java KCL, which drops such an aggregate, sees every
//! record once), and the worker must drop that first copy as the Java KCL does.
//!
//! Checked, from what the processors saw:
//! - every record is delivered exactly once (no crash, no lease loss here: hand-offs
//!   checkpoint first, so nothing may come twice);
//! - every record is delivered by a shard whose hash-key range holds its key;
//! - per key, records are delivered in the order they were put, across the lineage;
//! - the reshard window was really crossed: some aggregates landed on a shard not holding all
//!   of their records (counted from the producer's results).

// Written for kpl's tests, where its items are `pub` to a support module shared by several
// test crates.
#[path = "../../kcl/tests/support/quick_worker.rs"]
mod quick_worker;
#[allow(unreachable_pub)]
#[path = "../../kpl/tests/support/reshard_load.rs"]
mod reshard_load;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinesis_integration::TestBed;
use kinesis_kcl::ShardContext;
use kinesis_kcl::{
    Checkpointer, ProcessRecordsInput, ProcessorError, ShardRecordProcessor, Worker,
};
use kinesis_kpl::{Ordering, Producer, ProducerConfig};
use quick_worker::quick;
use reshard_load::{BoxError, put_through_reshards, wrong_shard_count};

const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// One delivery: the shard it came from and the record's key and number.
#[derive(Clone, Debug)]
struct Delivery {
    shard: String,
    key: String,
    number: usize,
}

#[derive(Default)]
struct Log {
    deliveries: Mutex<Vec<Delivery>>,
}

struct Recorder {
    shard: String,
    log: Arc<Log>,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        {
            let mut deliveries = self.log.deliveries.lock().unwrap();
            for record in &input.records {
                let number = std::str::from_utf8(record.data())?.parse()?;
                deliveries.push(Delivery {
                    shard: self.shard.clone(),
                    key: record.partition_key().to_owned(),
                    number,
                });
            }
        }
        Ok(checkpointer.checkpoint().await?)
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

/// Every shard of the stream with its hash-key range, closed ones too.
async fn ranges(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<(String, u128, u128)>, BoxError> {
    let listed = kinesis.list_shards().stream_name(stream).send().await?;
    assert!(listed.next_token().is_none(), "one page is enough here");
    listed
        .shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().ok_or("a shard without a range")?;
            Ok((
                s.shard_id().to_owned(),
                r.starting_hash_key().parse()?,
                r.ending_hash_key().parse()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_workers_through_two_splits_and_a_merge_deliver_each_record_once_in_key_order()
-> Result<(), BoxError> {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(4).await?;
    let kinesis = bed.kinesis().clone();
    let records = 60_000;
    let keys = 2_500;

    let log = Arc::new(Log::default());
    let application = bed.unique_table_name();
    let mut workers = Vec::new();
    for n in 0..2 {
        let log = log.clone();
        let worker = quick(
            Worker::builder(
                &application,
                kinesis.clone(),
                bed.dynamodb().clone(),
                move |context: &ShardContext| Recorder {
                    shard: context.shard_id.clone(),
                    log: log.clone(),
                },
            )
            .stream(&stream)
            .worker_id(format!("worker-{n}")),
        )?
        .build()?;
        let handle = worker.handle();
        workers.push((handle, tokio::spawn(worker.run())));
    }

    let config = ProducerConfig::builder()
        .ordering(Ordering::PerShardStrict)
        .record_ttl(Duration::from_secs(120))
        .build()?;
    let producer = Producer::new(kinesis.clone(), &stream, config).await?;
    let results = put_through_reshards(&bed, &producer, &stream, records, keys).await?;
    producer.shutdown().await;
    let total = results.len();
    let wrong_shard = wrong_shard_count(&results);
    println!("{total} records put; {wrong_shard} sent again after landing on the wrong shard");
    assert!(
        wrong_shard > 0,
        "no aggregate landed on a shard not holding all of its records: the reshard window was \
         not crossed, so this run tests nothing"
    );

    // Wait until every record was delivered at least once (then a little longer would not
    // change the verdict on duplicates: every shard's reader is past the last record).
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let distinct: std::collections::HashSet<usize> = log
            .deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.number)
            .collect();
        if distinct.len() == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {total} records delivered within {TEST_TIMEOUT:?}",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (handle, _) in &workers {
        handle.shutdown().await;
    }
    for (_, task) in workers {
        task.await??;
    }

    let ranges: HashMap<String, (u128, u128)> = ranges(&kinesis, &stream)
        .await?
        .into_iter()
        .map(|(id, start, end)| (id, (start, end)))
        .collect();
    let deliveries = log.deliveries.lock().unwrap().clone();
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut per_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut outside = 0;
    for delivery in &deliveries {
        *seen.entry(delivery.number).or_default() += 1;
        per_key
            .entry(&delivery.key)
            .or_default()
            .push(delivery.number);
        let (start, end) = ranges[&delivery.shard];
        let hash_key = kinesis_aggregation::hash_key_for_partition_key(&delivery.key);
        if !(start..=end).contains(&hash_key) {
            outside += 1;
        }
    }
    let twice = seen.values().filter(|&&n| n > 1).count();
    println!(
        "{} deliveries; {twice} records delivered more than once; {outside} outside their shard",
        deliveries.len()
    );
    assert_eq!(twice, 0, "records delivered more than once");
    assert_eq!(
        outside, 0,
        "records delivered by a shard not holding their key"
    );
    for (key, numbers) in per_key {
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "{key}: delivered in the order {numbers:?}"
        );
    }
    Ok(())
}
