//! Throughput of one shard processed in parallel lanes (`parallelization_factor`) against
//! one processor, same records, same in-process servers, same run.
//!
//! `cargo bench -p kinesis-kcl --bench lanes` puts 3 000 records over 100 partition keys on a
//! one-shard stream, then has a fresh worker (fresh lease table) process all of them with
//! factors 1, 2, 4, 8 and 10, three times each, alternating. The processor takes 1 to 5 ms
//! per record (a pseudo-random but fixed cost per record: an awaited call to a downstream
//! service) and checkpoints after every call. Each figure is the time from the first record
//! processed to the last (the worker's start-up is left out), the median of the runs; the
//! speed-up is factor 1's time over the factor's. Without `--bench` (e.g.
//! `cargo test --benches`) it runs one small smoke pass.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesis_integration::TestBed;
use kinesis_kcl::{
    Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorError, ShardContext,
    ShardRecordProcessor, Worker,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const KEYS: u64 = 100;
const FACTORS: [usize; 5] = [1, 2, 4, 8, 10];

fn main() -> Result<(), BoxError> {
    let bench = std::env::args().any(|a| a == "--bench");
    let (records, runs) = if bench { (3_000, 3) } else { (200, 1) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(records, runs))
}

/// The cost of record `n`: 1 to 5 ms, fixed per record, spread evenly and independent of
/// its key (a SplitMix64 hash of `n`).
fn cost(n: u64) -> Duration {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Duration::from_millis(1 + z % 5)
}

async fn run(records: u64, runs: usize) -> Result<(), BoxError> {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    for chunk in (0..records).collect::<Vec<_>>().chunks(500) {
        let entries = chunk
            .iter()
            .map(|n| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{}", n % KEYS))
                    .data(Blob::new(n.to_string()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        bed.kinesis()
            .put_records()
            .stream_name(&stream)
            .set_records(Some(entries))
            .send()
            .await?;
    }
    let total_cost: Duration = (0..records).map(cost).sum();
    println!(
        "{records} records over {KEYS} keys on one shard; processing costs {total_cost:.1?} in all"
    );
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); FACTORS.len()];
    for run in 0..runs {
        for (i, factor) in FACTORS.iter().enumerate() {
            let took = process(&bed, &stream, records, *factor, run).await?;
            println!("run {run}: factor {factor:>2}: {took:.2?}");
            times[i].push(took);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let base = median(&mut times[0]);
    println!("\nfactor  median   records/s  speed-up");
    for (i, factor) in FACTORS.iter().enumerate() {
        let m = median(&mut times[i]);
        println!(
            "{factor:>6}  {:>6.2?}  {:>9.0}  {:>7.2}x",
            m,
            records as f64 / m.as_secs_f64(),
            base.as_secs_f64() / m.as_secs_f64()
        );
    }
    Ok(())
}

/// Sleeps each record's cost, counts it, notes the first and last time; checkpoints after
/// every call.
struct Costly {
    done: Arc<AtomicU64>,
    span: Arc<Mutex<Option<(Instant, Instant)>>>,
}

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Costly {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        for record in &input.records {
            let n: u64 = std::str::from_utf8(record.data())?.parse()?;
            tokio::time::sleep(cost(n)).await;
            let now = Instant::now();
            {
                let mut span = self.span.lock().unwrap_or_else(|e| e.into_inner());
                let (first, _) = span.unwrap_or((now, now));
                *span = Some((first, now));
            }
            self.done.fetch_add(1, Ordering::Relaxed);
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// Processes every record of `stream` with `factor` lanes; the time from the first record
/// to the last.
async fn process(
    bed: &TestBed,
    stream: &str,
    records: u64,
    factor: usize,
    run: usize,
) -> Result<Duration, BoxError> {
    let done = Arc::new(AtomicU64::new(0));
    let span = Arc::new(Mutex::new(None));
    let (counter, times) = (Arc::clone(&done), Arc::clone(&span));
    let worker = Worker::builder(
        format!("lanes-{}-{factor}-{run}", bed.unique_table_name()),
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |_: &ShardContext| Costly {
            done: Arc::clone(&counter),
            span: Arc::clone(&times),
        },
    )
    .stream(stream)
    .worker_id("bench")
    .initial_position(InitialPosition::TrimHorizon)
    .parallelization_factor(factor)
    .build()?;
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());
    let deadline = Instant::now() + Duration::from_secs(600);
    while done.load(Ordering::Relaxed) < records {
        if Instant::now() > deadline || handle.is_finished() {
            return Err("the worker did not process every record in time".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    handle.shutdown().await;
    task.await??;
    let (first, last) = span
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ok_or("nothing processed")?;
    Ok(last - first)
}
