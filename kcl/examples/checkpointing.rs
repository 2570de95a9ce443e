//! Checkpointing every N records or every T seconds, whichever comes first, and where the
//! worker requires it: at the end of a shard (after a split or merge; the children wait for
//! it) and at shutdown (so that the next owner resumes where this one stopped).
//!
//! ```sh
//! cargo run -p kinesis-kcl --example checkpointing
//! ```
//!
//! It starts the embedded Kinesis and DynamoDB servers of the test bed (`kinesis-integration`),
//! puts 250 records on a one-shard stream, splits the shard, puts 10 more, and runs a worker
//! until it has processed all of them. Then it prints each checkpoint written and why, and the
//! checkpoints the lease table holds at the end.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_integration::TestBed;
use kinesis_kcl::{
    Checkpointer, InitialPosition, PollingConfig, ProcessRecordsInput, ProcessorError, Retrieval,
    ShardContext, ShardRecordProcessor, Worker,
};
use kinesis_kpl::{Producer, UserRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Checkpoint after this many records…
const EVERY_RECORDS: usize = 100;
/// …or when this much time passed since the last checkpoint.
const EVERY: Duration = Duration::from_secs(5);

/// Why a checkpoint was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Why {
    /// `EVERY_RECORDS` records since the last one.
    Records,
    /// `EVERY` elapsed since the last one.
    Timer,
    /// `shard_ended`: the shard is closed and fully read (writes `SHARD_END`).
    ShardEnd,
    /// `shutdown_requested`: the worker is stopping (or handing the lease over).
    Shutdown,
}

/// What the run did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Records put.
    pub(crate) put: usize,
    /// Records processed (each once: nothing failed, so nothing was delivered again).
    pub(crate) processed: usize,
    /// Checkpoints written, in order: shard id, why, position.
    pub(crate) checkpoints: Vec<(String, Why, String)>,
    /// The last record processed on each shard: `sequence/sub-sequence`.
    pub(crate) last_processed: BTreeMap<String, String>,
    /// The checkpoint of each shard in the lease table after shutdown.
    pub(crate) table: BTreeMap<String, String>,
    /// The shard that was split.
    pub(crate) parent: String,
}

type Shared = Arc<Mutex<Summary>>;

/// The processor: one per shard lease.
struct Processor {
    shard_id: String,
    summary: Shared,
    /// Records processed since the last checkpoint.
    since_checkpoint: usize,
    last_checkpoint: Instant,
}

impl Processor {
    fn note(&mut self, why: Why, position: String) {
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        if let Ok(mut summary) = self.summary.lock() {
            summary
                .checkpoints
                .push((self.shard_id.clone(), why, position));
        }
    }
}

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Processor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        for record in &input.records {
            // … the application's work on `record` goes here …
            {
                let mut summary = self.summary.lock().map_err(|_| "poisoned")?;
                summary.processed += 1;
                summary.last_processed.insert(
                    self.shard_id.clone(),
                    record.extended_sequence_number().to_string(),
                );
            }
            self.since_checkpoint += 1;
            if self.since_checkpoint >= EVERY_RECORDS {
                // Mid-batch: this record and everything before it are done.
                checkpointer.checkpoint_record(record).await?;
                self.note(Why::Records, record.extended_sequence_number().to_string());
            }
        }
        // A quiet shard still checkpoints now and then.
        if self.since_checkpoint > 0 && self.last_checkpoint.elapsed() >= EVERY {
            checkpointer.checkpoint().await?; // everything delivered so far
            self.note(Why::Timer, last_delivered(checkpointer));
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        // Required: writes SHARD_END. Until it is written the children are not processed
        // (and the worker keeps calling this).
        checkpointer.checkpoint().await?;
        self.note(Why::ShardEnd, "SHARD_END".to_owned());
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        // Not required, but without it the next owner re-processes what came after the last
        // checkpoint.
        if self.since_checkpoint > 0 {
            checkpointer.checkpoint().await?;
            self.note(Why::Shutdown, last_delivered(checkpointer));
        }
        Ok(())
    }
}

fn last_delivered(checkpointer: &Checkpointer) -> String {
    checkpointer
        .last_delivered()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Puts records keyed `keys` through the producer (it aggregates them).
async fn put(bed: &TestBed, stream: &str, keys: std::ops::Range<usize>) -> Result<(), BoxError> {
    let producer = Producer::builder(bed.kinesis().clone(), stream)
        .build()
        .await?;
    let mut pending = Vec::new();
    for i in keys {
        let record = UserRecord::new(format!("key-{i}"), format!("record {i}"));
        pending.push(producer.put_record(record));
    }
    for put in pending {
        put.await?;
    }
    producer.shutdown().await;
    Ok(())
}

/// Each lease's checkpoint, read from the lease table (the Java KCL's layout: `leaseKey`,
/// `checkpoint`, `checkpointSubSequenceNumber`).
async fn table_checkpoints(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<BTreeMap<String, String>, BoxError> {
    let scan = dynamodb
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await?;
    let text = |item: &HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().or_else(|_| v.as_n()).ok())
            .cloned()
            .unwrap_or_default()
    };
    Ok(scan
        .items()
        .iter()
        .map(|item| {
            let checkpoint = match text(item, "checkpoint") {
                sentinel if sentinel.chars().any(|c| !c.is_ascii_digit()) => sentinel,
                number => format!("{number}/{}", text(item, "checkpointSubSequenceNumber")),
            };
            (text(item, "leaseKey"), checkpoint)
        })
        .collect())
}

/// Polls `done` every 50 ms for up to 60 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Runs the example.
pub(crate) async fn run() -> Result<Summary, BoxError> {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let application = bed.unique_table_name(); // also the lease table's name
    put(&bed, &stream, 0..250).await?;

    let summary = Shared::default();
    let shared = Arc::clone(&summary);
    let worker = Worker::builder(
        &application,
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |shard: &ShardContext| Processor {
            shard_id: shard.shard_id.clone(),
            summary: Arc::clone(&shared),
            since_checkpoint: 0,
            last_checkpoint: Instant::now(),
        },
    )
    .stream(&stream)
    .initial_position(InitialPosition::TrimHorizon)
    // Shorter than the defaults (1.5 s between reads, 10 s between checks of a child's
    // parents) so that the example finishes in seconds.
    .retrieval(Retrieval::Polling(
        PollingConfig::builder()
            .idle_time_between_reads(Duration::from_millis(200))
            .build()?,
    ))
    .parent_shard_poll_interval(Duration::from_millis(500))
    .build()?;
    let handle = worker.handle();
    let running = tokio::spawn(worker.run());

    let processed = || summary.lock().map_or(0, |s| s.processed);
    wait_until("the first 250 records", || processed() >= 250).await?;

    // Split the shard: it is closed, the worker reads it to its end and calls shard_ended.
    let shards = bed
        .kinesis()
        .list_shards()
        .stream_name(&stream)
        .send()
        .await?;
    let parent = shards.shards()[0].shard_id().to_owned();
    bed.kinesis()
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent)
        .new_starting_hash_key((u128::MAX / 2 + 1).to_string())
        .send()
        .await?;
    bed.wait_for_stream_active(&stream).await?;
    put(&bed, &stream, 250..260).await?; // to the children
    wait_until("the 10 records on the children", || processed() >= 260).await?;

    // Shutdown: each processor's shutdown_requested checkpoints what it did.
    handle.shutdown().await;
    running.await??;

    let table = table_checkpoints(bed.dynamodb(), &application).await?;
    let mut summary = std::mem::take(&mut *summary.lock().map_err(|_| "poisoned")?);
    summary.put = 260;
    summary.table = table;
    summary.parent = parent;
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let summary = run().await?;
    println!(
        "processed {} of {} records (split shard: {})",
        summary.processed, summary.put, summary.parent
    );
    println!("checkpoints written (every {EVERY_RECORDS} records or {EVERY:?}):");
    for (shard, why, position) in &summary.checkpoints {
        println!("  {shard}  {why:?}  at {position}");
    }
    println!("lease table after shutdown:");
    for (lease, checkpoint) in &summary.table {
        let last = summary
            .last_processed
            .get(lease)
            .map_or("-", String::as_str);
        println!("  {lease}  checkpoint {checkpoint}  (last processed {last})");
    }
    Ok(())
}
