//! The worker's CPU cost per record against a bare `GetRecords` loop, same data, same
//! in-process servers, same run.
//!
//! `cargo bench -p kinesis-kcl --bench worker` puts 300 000 user records (100-byte payloads,
//! 1 000 keys) into a 4-shard stream through the KPL (aggregated), then reads all of them
//! repeatedly, alternating:
//!
//! - **bare**: one task per shard doing `GetShardIterator(TRIM_HORIZON)` and `GetRecords`
//!   (10 000 per call) until caught up, deaggregating with `kinesis_aggregation::deaggregate`
//!   — what a hand-rolled consumer does, with no leases and no checkpoints;
//! - **worker**: a [`Worker`] with a fresh lease table (creating it, syncing shards, taking
//!   leases, renewing them) whose processor counts records and checkpoints every batch.
//!
//! CPU time is the whole process's (user + system, `getrusage`): the in-process
//! Kinesis and DynamoDB servers are included, so the worker pays for its DynamoDB traffic too.
//! Each figure is the median of the runs; the ratio worker / bare is printed at the end.
//! Without `--bench` (e.g. `cargo test --benches`) it runs one small smoke pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, HashKeyRange, deaggregate};
use kinesis_integration::TestBed;
use kinesis_kcl::ShardContext;
use kinesis_kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorError, ShardRecordProcessor,
    Worker,
};
use kinesis_kpl::{Producer, UserRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let bench = std::env::args().any(|a| a == "--bench");
    let (records, runs) = if bench { (300_000, 5) } else { (2_000, 1) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(records, runs))
}

async fn run(records: u64, runs: usize) -> Result<(), BoxError> {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(4).await?;
    let producer = Producer::new(
        bed.kinesis().clone(),
        &stream,
        kinesis_kpl::ProducerConfig::default(),
    )
    .await?;
    let payload = Bytes::from(vec![b'x'; 100]);
    let mut pending = Vec::with_capacity(1000);
    for i in 0..records {
        pending.push(producer.put_record(UserRecord::new(
            format!("key-{}", i % 1000),
            payload.clone(),
        )));
        if pending.len() == 1000 {
            for p in pending.drain(..) {
                p.await?;
            }
        }
    }
    for p in pending {
        p.await?;
    }
    producer.shutdown().await;

    let mut bare = Vec::new();
    let mut checked = Vec::new();
    let mut worker = Vec::new();
    for run in 0..runs {
        bare.push(measure(|| bare_loop(&bed, &stream, records, false)).await?);
        checked.push(measure(|| bare_loop(&bed, &stream, records, true)).await?);
        worker.push(measure(|| worker_run(&bed, &stream, records, run)).await?);
    }
    let (bare_cpu, bare_wall) = median(&bare);
    let (checked_cpu, checked_wall) = median(&checked);
    let (worker_cpu, worker_wall) = median(&worker);
    let per_record = |d: Duration| d.as_secs_f64() * 1e9 / records as f64;
    println!(
        "bare GetRecords loop:           {:>6.0} ns CPU per record (wall {bare_wall:?} for {records})",
        per_record(bare_cpu)
    );
    println!(
        "bare loop + hash range check:   {:>6.0} ns CPU per record (wall {checked_wall:?})",
        per_record(checked_cpu)
    );
    println!(
        "worker:                         {:>6.0} ns CPU per record (wall {worker_wall:?})",
        per_record(worker_cpu)
    );
    println!(
        "worker / bare: {:.2}×; worker / bare with the same range check: {:.2}× \
         (median of {runs} runs each, goal ≤ 1.2×)",
        worker_cpu.as_secs_f64() / bare_cpu.as_secs_f64(),
        worker_cpu.as_secs_f64() / checked_cpu.as_secs_f64()
    );
    Ok(())
}

/// CPU time and wall time of `f`.
async fn measure<F, Fut>(f: F) -> Result<(Duration, Duration), BoxError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let cpu = cpu_time()?;
    let wall = Instant::now();
    f().await?;
    Ok((cpu_time()? - cpu, wall.elapsed()))
}

fn median(samples: &[(Duration, Duration)]) -> (Duration, Duration) {
    let mut cpu: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut wall: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    cpu.sort();
    wall.sort();
    (cpu[cpu.len() / 2], wall[wall.len() / 2])
}

/// User + system CPU time of this process, every thread included (`getrusage`).
fn cpu_time() -> Result<Duration, BoxError> {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// Reads every shard to its tip. With `check`, also checks each user record's hash key
/// against the shard's range, as the worker does by default to detect (and count) user
/// records an aggregator put in the wrong shard.
async fn bare_loop(bed: &TestBed, stream: &str, records: u64, check: bool) -> Result<(), BoxError> {
    let shards = bed
        .kinesis()
        .list_shards()
        .stream_name(stream)
        .send()
        .await?
        .shards
        .unwrap_or_default();
    let total = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for shard in shards {
        let client = bed.kinesis().clone();
        let stream = stream.to_owned();
        let total = Arc::clone(&total);
        let range = shard.hash_key_range().ok_or("no range")?;
        let range = HashKeyRange::parse(range.starting_hash_key(), range.ending_hash_key())?;
        tasks.spawn(async move {
            let mut iterator = client
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(shard.shard_id())
                .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
                .send()
                .await?
                .shard_iterator
                .ok_or("no iterator")?;
            loop {
                let out = client
                    .get_records()
                    .shard_iterator(&iterator)
                    .limit(10_000)
                    .send()
                    .await?;
                let mut count = 0u64;
                for record in out.records() {
                    let data = Bytes::copy_from_slice(record.data().as_ref());
                    count += match deaggregate(data) {
                        Deaggregated::Aggregated(subs) => {
                            if check {
                                std::hint::black_box(range.count_outside(&subs));
                            }
                            subs.len() as u64
                        }
                        Deaggregated::PassThrough { .. } => 1,
                    };
                }
                total.fetch_add(count, Ordering::Relaxed);
                if out.records().is_empty() && out.millis_behind_latest() == Some(0) {
                    return Ok::<(), BoxError>(());
                }
                match out.next_shard_iterator {
                    Some(next) => iterator = next,
                    None => return Ok(()),
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let read = total.load(Ordering::Relaxed);
    if read != records {
        return Err(format!("bare loop read {read} of {records} records").into());
    }
    Ok(())
}

struct Counting {
    total: Arc<AtomicU64>,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Counting {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let bytes: usize = input.records.iter().map(|r| r.data().len()).sum();
        std::hint::black_box(bytes);
        self.total
            .fetch_add(input.records.len() as u64, Ordering::Relaxed);
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

async fn worker_run(bed: &TestBed, stream: &str, records: u64, run: usize) -> Result<(), BoxError> {
    let total = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&total);
    let worker = Worker::builder(
        format!("bench-{}-{run}", bed.unique_table_name()),
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |_: &ShardContext| Counting {
            total: Arc::clone(&counter),
        },
    )
    .stream(stream)
    .worker_id("bench")
    .initial_position(InitialPosition::TrimHorizon)
    .build()?;
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());
    let deadline = Instant::now() + Duration::from_secs(300);
    while total.load(Ordering::Relaxed) < records {
        if Instant::now() > deadline || handle.is_finished() {
            return Err("the worker did not read every record in time".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.shutdown().await;
    task.await??;
    Ok(())
}
