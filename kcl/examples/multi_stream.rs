//! One worker consuming two streams. Calling `.stream(…)` twice (or `.streams([…])`) turns on
//! multi-stream mode, as the Java KCL's: the streams share the application's lease table, and
//! lease keys become `<account>:<stream>:<creation epoch>:<shard id>`. The processor factory
//! is told each shard's stream ([`ShardContext::stream`]), so it can build a different
//! processor per stream.
//!
//! ```sh
//! cargo run -p kinesis-kcl --example multi_stream
//! ```
//!
//! It starts the test bed's embedded servers, creates an `orders` stream (2 shards) and a
//! `payments` stream (1 shard), puts 40 and 25 records, runs one worker on both until it has
//! processed all 65, and prints what each stream's processors saw and the lease keys.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinesis_integration::TestBed;
use kinesis_kcl::{
    Checkpointer, InitialPosition, PollingConfig, ProcessRecordsInput, ProcessorError, Retrieval,
    ShardContext, ShardRecordProcessor, Worker,
};
use kinesis_kpl::{Producer, UserRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the run did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// The two streams' names (the test bed makes them unique) and the records put to each.
    pub(crate) streams: Vec<(String, usize)>,
    /// Records processed, by stream.
    pub(crate) processed: BTreeMap<String, usize>,
    /// The worker's lease keys, by stream.
    pub(crate) lease_keys: BTreeMap<String, Vec<String>>,
}

type Shared = Arc<Mutex<Summary>>;

/// Counts the records of one shard for its stream.
struct Counter {
    stream: String,
    summary: Shared,
}

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Counter {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        {
            let mut summary = self.summary.lock().map_err(|_| "poisoned")?;
            *summary.processed.entry(self.stream.clone()).or_default() += input.records.len();
        }
        Ok(checkpointer.checkpoint().await?)
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

async fn put(bed: &TestBed, stream: &str, records: usize) -> Result<(), BoxError> {
    let producer = Producer::builder(bed.kinesis().clone(), stream)
        .build()
        .await?;
    let puts: Vec<_> = (0..records)
        .map(|i| producer.put_record(UserRecord::new(format!("key-{i}"), format!("record {i}"))))
        .collect();
    for put in puts {
        put.await?;
    }
    producer.shutdown().await;
    Ok(())
}

/// Runs the example.
pub(crate) async fn run() -> Result<Summary, BoxError> {
    let bed = TestBed::start().await?;
    let orders = bed.create_stream(2).await?;
    let payments = bed.create_stream(1).await?;
    put(&bed, &orders, 40).await?;
    put(&bed, &payments, 25).await?;

    let summary = Shared::default();
    let shared = Arc::clone(&summary);
    let worker = Worker::builder(
        bed.unique_table_name(), // the application, and its one lease table
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        // One factory for both streams: `shard.stream` says which (a real application could
        // build a different processor per stream here).
        move |shard: &ShardContext| Counter {
            stream: shard.stream.clone(),
            summary: Arc::clone(&shared),
        },
    )
    .streams([&orders, &payments])
    .initial_position(InitialPosition::TrimHorizon)
    .retrieval(Retrieval::Polling(
        PollingConfig::builder()
            .idle_time_between_reads(Duration::from_millis(200))
            .build()?,
    ))
    .build()?;
    let handle = worker.handle();
    let running = tokio::spawn(worker.run());

    let processed = || {
        summary
            .lock()
            .map_or(0, |s| s.processed.values().sum::<usize>())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while processed() < 65 {
        if Instant::now() > deadline {
            return Err(format!("only {} of 65 records within 60 s", processed()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Multi-stream lease keys: `<account>:<stream>:<creation epoch>:<shard id>`.
    let mut lease_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in handle.shard_states().into_keys() {
        let stream = key.split(':').nth(1).unwrap_or_default().to_owned();
        lease_keys.entry(stream).or_default().push(key);
    }
    handle.shutdown().await;
    running.await??;

    let mut summary = std::mem::take(&mut *summary.lock().map_err(|_| "poisoned")?);
    summary.streams = vec![(orders, 40), (payments, 25)];
    summary.lease_keys = lease_keys;
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let summary = run().await?;
    for (stream, put) in &summary.streams {
        let processed = summary.processed.get(stream).copied().unwrap_or(0);
        println!("{stream}: {processed} of {put} records processed");
        for key in summary.lease_keys.get(stream).into_iter().flatten() {
            println!("  lease {key}");
        }
    }
    Ok(())
}
