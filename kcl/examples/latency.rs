//! Put → process latency of polling and of enhanced fan-out, measured side by side: two
//! applications (one per retrieval mode, each with its default settings, i.e. the Java KCL's)
//! consume the same stream on the same server in the same run, while records are put at a
//! steady rate. Each record carries its put time; each processor notes when it got it.
//!
//! ```sh
//! cargo run --release -p kinesis-kcl --example latency -- --records 300 --rate 20
//! ```
//!
//! Options: `--records N` (default 300), `--rate R` records per second (default 20),
//! `--shards S` (default 2), `--idle-ms M` polling's `idle_time_between_reads` (default the
//! Java KCL's 1 500 ms). The servers are the test bed's (`KINESIS_TEST_BACKEND`, default the
//! embedded ferrokinesis, which pushes fan-out events every 200 ms).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::Blob;
use kinesis_integration::TestBed;
use kinesis_kcl::ShardContext;
use kinesis_kcl::{
    Checkpointer, FanOutConfig, InitialPosition, PollingConfig, ProcessRecordsInput,
    ProcessorError, Retrieval, ShardRecordProcessor, ShardState, Worker, WorkerHandle,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Latency of each record seen, by record index.
type Seen = Arc<Mutex<BTreeMap<u64, Duration>>>;

/// Notes the latency of every record (payload: `index put-time-in-nanoseconds`).
struct Timing {
    seen: Seen,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Timing {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        {
            let mut seen = self.seen.lock().map_err(|_| "poisoned")?;
            for record in &input.records {
                let text = std::str::from_utf8(record.data())?;
                let (index, put_nanos) = text.split_once(' ').ok_or("bad payload")?;
                let put = Duration::from_nanos(put_nanos.parse()?);
                seen.entry(index.parse()?)
                    .or_insert(now.saturating_sub(put));
            }
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

struct Args {
    records: u64,
    rate: f64,
    shards: u32,
    idle: Duration,
}

fn args() -> Result<Args, BoxError> {
    let mut args = Args {
        records: 300,
        rate: 20.0,
        shards: 2,
        idle: kinesis_kcl::PollingConfig::default().idle_time_between_reads(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--records" => args.records = value.parse()?,
            "--rate" => args.rate = value.parse()?,
            "--shards" => args.shards = value.parse()?,
            "--idle-ms" => args.idle = Duration::from_millis(value.parse()?),
            _ => return Err(format!("unknown option {flag}").into()),
        }
    }
    if args.records == 0 || args.rate <= 0.0 {
        return Err("--records and --rate must be positive".into());
    }
    Ok(args)
}

fn start(
    bed: &TestBed,
    application: &str,
    stream: &str,
    retrieval: Retrieval,
    seen: &Seen,
) -> Result<
    (
        WorkerHandle,
        tokio::task::JoinHandle<kinesis_kcl::Result<()>>,
    ),
    BoxError,
> {
    let seen = Arc::clone(seen);
    let worker = Worker::builder(
        application,
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |_: &ShardContext| Timing {
            seen: Arc::clone(&seen),
        },
    )
    .stream(stream)
    .initial_position(InitialPosition::TrimHorizon)
    .retrieval(retrieval)
    .build()?;
    let handle = worker.handle();
    Ok((handle, tokio::spawn(worker.run())))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(name: &str, seen: &Seen, expected: u64) {
    let mut latencies: Vec<Duration> = seen
        .lock()
        .map(|s| s.values().copied().collect())
        .unwrap_or_default();
    latencies.sort();
    if latencies.is_empty() {
        println!("{name:<8} no records");
        return;
    }
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    println!(
        "{name:<8} {:>5}/{expected} records  p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  mean {:>7.1} ms",
        latencies.len(),
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies[latencies.len() - 1].as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = args()?;
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(args.shards).await?;
    let polling_seen = Seen::default();
    let fan_out_seen = Seen::default();
    let (polling, polling_task) = start(
        &bed,
        &bed.unique_table_name(),
        &stream,
        Retrieval::Polling(
            PollingConfig::builder()
                .idle_time_between_reads(args.idle)
                .build()?,
        ),
        &polling_seen,
    )?;
    let (fan_out, fan_out_task) = start(
        &bed,
        &bed.unique_table_name(),
        &stream,
        Retrieval::FanOut(
            FanOutConfig::builder()
                .deregister_on_shutdown(true)
                .build()?,
        ),
        &fan_out_seen,
    )?;
    // Both applications read every shard before the first record is put.
    let ready = |handle: &WorkerHandle| {
        let states = handle.shard_states();
        states.len() == args.shards as usize
            && states.values().all(|s| *s == ShardState::Processing)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while !(ready(&polling) && ready(&fan_out)) {
        if tokio::time::Instant::now() > deadline {
            return Err("the workers did not start reading within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    println!(
        "putting {} records at {}/s on {} shards ({:?} backend); polling idle time {:?}",
        args.records,
        args.rate,
        args.shards,
        bed.backend(),
        args.idle
    );
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    for index in 0..args.records {
        tick.tick().await;
        let put = SystemTime::now().duration_since(UNIX_EPOCH)?;
        bed.kinesis()
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("key-{index}"))
            .data(Blob::new(format!("{index} {}", put.as_nanos())))
            .send()
            .await?;
    }
    let complete = |seen: &Seen| seen.lock().map_or(0, |s| s.len()) as u64 >= args.records;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(complete(&polling_seen) && complete(&fan_out_seen)) {
        if tokio::time::Instant::now() > deadline {
            eprintln!("not every record arrived within 60 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("put → process latency, same server, same run:");
    summary("polling", &polling_seen, args.records);
    summary("fan-out", &fan_out_seen, args.records);
    polling.shutdown().await;
    fan_out.shutdown().await;
    polling_task.await??;
    fan_out_task.await??;
    Ok(())
}
