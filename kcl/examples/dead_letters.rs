//! A failure policy with a dead-letter stream: records the processor cannot handle are
//! isolated (the failing batch is split in halves until the bad record is alone), retried,
//! then put to another stream with where they came from and why they failed, and the shard
//! moves on. Without a policy with limits the shard would hold at the first bad record.
//!
//! ```sh
//! cargo run -p kinesis-kcl --example dead_letters
//! ```
//!
//! It starts the test bed's embedded servers, creates an `orders` stream (2 shards) and an
//! `orders-dead-letters` stream (1 shard), puts 200 orders of which 3 are malformed, runs a
//! worker that sums the amounts until every good order is processed, then reads the
//! dead-letter stream back and prints each letter.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinesis_integration::TestBed;
use kinesis_kcl::{
    Checkpointer, DeadLetter, DeadLetterStream, FailurePolicy, InitialPosition, PollingConfig,
    ProcessRecordsInput, ProcessorError, Retrieval, ShardRecordProcessor, Worker,
};
use kinesis_kpl::{Producer, UserRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Orders put, and which of them are malformed.
const ORDERS: usize = 200;
const MALFORMED: [usize; 3] = [17, 90, 161];

/// What the run did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Orders put.
    pub(crate) put: usize,
    /// Good orders processed (counted once each) and the sum of their amounts.
    pub(crate) processed: usize,
    pub(crate) total: u64,
    /// What the dead-letter stream holds, decoded.
    pub(crate) letters: Vec<DeadLetter>,
}

/// Sums the amounts of `order-N amount=M` records; fails a batch holding a malformed one.
struct Accountant {
    summary: Arc<Mutex<Summary>>,
}

fn amount(data: &[u8]) -> Result<u64, ProcessorError> {
    let text = std::str::from_utf8(data)?;
    let value = text
        .split_once("amount=")
        .ok_or_else(|| format!("no amount in an order of {} bytes", text.len()))?
        .1;
    Ok(value.parse()?)
}

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Accountant {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        // All or nothing: parse the whole batch before counting any of it.
        let amounts = input
            .records
            .iter()
            .map(|r| amount(r.data()))
            .collect::<Result<Vec<u64>, _>>()?;
        {
            let mut summary = self.summary.lock().map_err(|_| "poisoned")?;
            summary.processed += amounts.len();
            summary.total += amounts.iter().sum::<u64>();
        }
        Ok(checkpointer.checkpoint().await?)
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

/// Every record of `stream` from `TRIM_HORIZON`, deaggregated.
async fn read_all(bed: &TestBed, stream: &str) -> Result<Vec<bytes::Bytes>, BoxError> {
    let kinesis = bed.kinesis();
    let mut out = Vec::new();
    for shard in kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await?
        .shards()
    {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_owned);
        while let Some(it) = iterator {
            let page = kinesis.get_records().shard_iterator(it).send().await?;
            for record in page.records() {
                let data = bytes::Bytes::copy_from_slice(record.data().as_ref());
                match kinesis_aggregation::deaggregate(data) {
                    kinesis_aggregation::Deaggregated::Aggregated(subs) => {
                        out.extend(subs.iter().map(|s| s.data().clone()));
                    }
                    kinesis_aggregation::Deaggregated::PassThrough { data, .. } => out.push(data),
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

/// Runs the example.
pub(crate) async fn run() -> Result<Summary, BoxError> {
    let bed = TestBed::start().await?;
    let orders = bed.create_stream(2).await?;
    let dead_letters = bed.create_stream(1).await?;

    let producer = Producer::builder(bed.kinesis().clone(), &orders)
        .build()
        .await?;
    let puts: Vec<_> = (0..ORDERS)
        .map(|i| {
            let data = if MALFORMED.contains(&i) {
                format!("order-{i} amount=lots")
            } else {
                format!("order-{i} amount={}", i % 50)
            };
            producer.put_record(UserRecord::new(format!("customer-{}", i % 20), data))
        })
        .collect();
    for put in puts {
        put.await?;
    }
    producer.shutdown().await;

    // The dead letters go through a producer of their own.
    let letters_out = Producer::builder(bed.kinesis().clone(), &dead_letters)
        .build()
        .await?;
    let policy = FailurePolicy::builder()
        .max_attempts(2) // a batch call, then one retry, before giving a record up
        .bisect_on_error(true) // split a failing batch until the bad record is alone
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .destination(DeadLetterStream::new(letters_out.clone()))
        .build()?;

    let summary = Arc::new(Mutex::new(Summary {
        put: ORDERS,
        ..Summary::default()
    }));
    let shared = Arc::clone(&summary);
    let worker = Worker::builder(
        bed.unique_table_name(),
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |_| Accountant {
            summary: Arc::clone(&shared),
        },
    )
    .stream(&orders)
    .initial_position(InitialPosition::TrimHorizon)
    .retrieval(Retrieval::Polling(
        PollingConfig::builder()
            .idle_time_between_reads(Duration::from_millis(200))
            .build()?,
    ))
    .failure_policy(policy)
    .build()?;
    let handle = worker.handle();
    let running = tokio::spawn(worker.run());

    let good = ORDERS - MALFORMED.len();
    let processed = || summary.lock().map_or(0, |s| s.processed);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut letters = Vec::new();
    while processed() < good || letters.len() < MALFORMED.len() {
        if Instant::now() > deadline {
            return Err(format!(
                "within 60 s: {} of {good} good orders, {} of {} dead letters",
                processed(),
                letters.len(),
                MALFORMED.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        letters_out.flush().await;
        letters = read_all(&bed, &dead_letters).await?;
    }
    handle.shutdown().await;
    running.await??;
    letters_out.shutdown().await;

    let mut summary = std::mem::take(&mut *summary.lock().map_err(|_| "poisoned")?);
    summary.letters = letters
        .iter()
        .map(|data| DeadLetter::decode(data))
        .collect::<Result<_, _>>()?;
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let summary = run().await?;
    println!(
        "{} orders put; {} processed (total amount {}); {} in the dead-letter stream:",
        summary.put,
        summary.processed,
        summary.total,
        summary.letters.len()
    );
    for letter in &summary.letters {
        println!(
            "  {} {} #{}/{} key {}: {} after {} attempts ({}): {:?}",
            letter.stream,
            letter.shard_id,
            letter.sequence_number,
            letter.sub_sequence_number,
            letter.partition_key,
            letter.reason,
            letter.attempts,
            letter.error,
            String::from_utf8_lossy(&letter.data)
        );
    }
    Ok(())
}
