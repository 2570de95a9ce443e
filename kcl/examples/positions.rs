//! Where a worker starts reading: the initial position applies only to shards **without a
//! checkpoint** (a fresh lease table, or a shard new to it); a shard with a checkpoint always
//! resumes just after it, whatever the initial position says.
//!
//! - `InitialPosition::TrimHorizon`: the oldest record still in the shard (everything kept,
//!   24 hours by default).
//! - `InitialPosition::Latest` (the default, as in the Java KCL): only records put after the
//!   worker started reading the shard.
//! - `InitialPosition::AtTimestamp(t)`: the first record that arrived at or after `t`.
//!
//! ```sh
//! cargo run -p kinesis-kcl --example positions
//! ```
//!
//! It starts the test bed's embedded servers and puts records in three rounds on a one-shard
//! stream: `old-*`, then (after a moment `t`) `mid-*`, then, once three applications (one per
//! initial position, each with its own fresh lease table) are reading, `new-*`. Then it stops
//! the `LATEST` application, puts `later-*`, and restarts it with `TRIM_HORIZON`: it resumes
//! after its checkpoint and sees `later-*` only.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kinesis_integration::TestBed;
use kinesis_kcl::{
    Checkpointer, InitialPosition, PollingConfig, ProcessRecordsInput, ProcessorError, Retrieval,
    ShardRecordProcessor, Worker, WorkerHandle,
};
use kinesis_kpl::{Producer, UserRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The partition keys each run saw, in order.
type Seen = Arc<Mutex<Vec<String>>>;

/// What the run did: the keys each application saw, by run.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    pub(crate) trim_horizon: Vec<String>,
    pub(crate) latest: Vec<String>,
    pub(crate) at_timestamp: Vec<String>,
    /// The `LATEST` application restarted with `TRIM_HORIZON` on its existing lease table.
    pub(crate) restarted: Vec<String>,
}

/// Notes each record's partition key and checkpoints every batch.
struct Recorder(Seen);

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        {
            let mut seen = self.0.lock().map_err(|_| "poisoned")?;
            seen.extend(input.records.iter().map(|r| r.partition_key().to_owned()));
        }
        Ok(checkpointer.checkpoint().await?)
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

/// A running worker of `application` from `position`, recording into `seen`.
struct Running {
    handle: WorkerHandle,
    task: tokio::task::JoinHandle<kinesis_kcl::Result<()>>,
}

fn start(
    bed: &TestBed,
    application: &str,
    stream: &str,
    position: InitialPosition,
    seen: &Seen,
) -> Result<Running, BoxError> {
    let seen = Arc::clone(seen);
    let worker = Worker::builder(
        application, // also the lease table's name
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |_: &kinesis_kcl::ShardContext| Recorder(Arc::clone(&seen)),
    )
    .stream(stream)
    .initial_position(position)
    .retrieval(Retrieval::Polling(
        PollingConfig::builder()
            .idle_time_between_reads(Duration::from_millis(200))
            .build()?,
    ))
    .build()?;
    let handle = worker.handle();
    Ok(Running {
        handle,
        task: tokio::spawn(worker.run()),
    })
}

impl Running {
    async fn stop(self) -> Result<(), BoxError> {
        self.handle.shutdown().await;
        Ok(self.task.await??)
    }
}

async fn put(bed: &TestBed, stream: &str, prefix: &str) -> Result<(), BoxError> {
    let producer = Producer::builder(bed.kinesis().clone(), stream)
        .build()
        .await?;
    for i in 0..3 {
        producer
            .put_record(UserRecord::new(format!("{prefix}-{i}"), "payload"))
            .await?;
    }
    producer.shutdown().await;
    Ok(())
}

/// Waits until every `seen` holds at least its count of records, then a little longer (to
/// show that nothing else arrives).
async fn wait_for(expected: &[(&Seen, usize)]) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !expected.iter().all(|(seen, n)| take(seen).len() >= *n) {
        if Instant::now() > deadline {
            return Err("the records did not arrive within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// The keys `seen` holds, without the probes.
fn take(seen: &Seen) -> Vec<String> {
    seen.lock()
        .map(|s| s.iter().filter(|k| !is_probe(k)).cloned().collect())
        .unwrap_or_default()
}

fn is_probe(key: &str) -> bool {
    key.starts_with(PROBE)
}

/// The key prefix of the records put until the `LATEST` application reads.
const PROBE: &str = "probe-";

/// Runs the example.
pub(crate) async fn run() -> Result<Summary, BoxError> {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;

    put(&bed, &stream, "old").await?;
    // `t`: after every `old-*` record arrived, before any `mid-*` one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put(&bed, &stream, "mid").await?;

    // Three applications, each with a fresh lease table: the initial position decides.
    let (trim, latest, at) = (Seen::default(), Seen::default(), Seen::default());
    let latest_app = bed.unique_table_name();
    let workers = [
        start(
            &bed,
            &bed.unique_table_name(),
            &stream,
            InitialPosition::TrimHorizon,
            &trim,
        )?,
        start(&bed, &latest_app, &stream, InitialPosition::Latest, &latest)?,
        start(
            &bed,
            &bed.unique_table_name(),
            &stream,
            InitialPosition::AtTimestamp(t),
            &at,
        )?,
    ];
    // LATEST means "after the worker got its shard iterator": put probe records until the
    // LATEST application has read one; everything put after that, it reads too. (The probes
    // are left out of what each application saw.)
    let deadline = Instant::now() + Duration::from_secs(60);
    let prober = Producer::builder(bed.kinesis().clone(), &stream)
        .build()
        .await?;
    let mut probes = 0;
    while !latest
        .lock()
        .is_ok_and(|seen| seen.iter().any(|k| is_probe(k)))
    {
        if Instant::now() > deadline {
            return Err("the LATEST application did not start reading within 60 s".into());
        }
        prober
            .put_record(UserRecord::new(format!("{PROBE}{probes}"), "probe"))
            .await?;
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    prober.shutdown().await;
    put(&bed, &stream, "new").await?;
    wait_for(&[(&trim, 9), (&latest, 3), (&at, 6)]).await?;
    for worker in workers {
        worker.stop().await?;
    }

    // The LATEST application has a checkpoint now (after `new-2`). Records put while it is
    // down are not lost: restarted, it resumes after the checkpoint. The initial position
    // (TRIM_HORIZON here) is not looked at, so `old-*` and `mid-*` are not read again.
    put(&bed, &stream, "later").await?;
    let restarted = Seen::default();
    let worker = start(
        &bed,
        &latest_app,
        &stream,
        InitialPosition::TrimHorizon,
        &restarted,
    )?;
    wait_for(&[(&restarted, 3)]).await?;
    worker.stop().await?;

    Ok(Summary {
        trim_horizon: take(&trim),
        latest: take(&latest),
        at_timestamp: take(&at),
        restarted: take(&restarted),
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let summary = run().await?;
    let runs = BTreeMap::from([
        ("1. TRIM_HORIZON, fresh table", &summary.trim_horizon),
        ("2. LATEST, fresh table", &summary.latest),
        ("3. AT_TIMESTAMP(t), fresh table", &summary.at_timestamp),
        ("4. TRIM_HORIZON, table of run 2", &summary.restarted),
    ]);
    for (run, keys) in runs {
        println!("{run:<34} saw {}", keys.join(" "));
    }
    Ok(())
}
