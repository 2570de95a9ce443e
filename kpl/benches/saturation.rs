//! Saturation: how close a producer fed as fast as it takes records comes to a stream's write
//! limit, and how many of its PutRecords entries are throttled on the way.
//!
//! `cargo bench -p kinesis-kpl --bench saturation` starts the embedded Kinesis server with its
//! per-shard write limits enforced (ferrokinesis `enforce_limits`: 1 MiB/s of record data and
//! 1 000 records/s per shard, in one-second windows), then for 100-byte and 1-KiB records and
//! `rate_limit` 100 % and 150 % (the KPL's default): a fresh 4-shard stream, one producer with
//! default settings otherwise, a feeder putting records (1 000 partition keys) as fast as the
//! producer accepts them, for 10 s of warm-up and 60 s measured. Then it reads the stream back
//! and reports, over the measured minute:
//!
//! - the **stored bytes per second** (the Kinesis records' data, aggregates included, as the
//!   server charges them, by arrival time) as a share of the stream's limit (4 MiB/s), and the
//!   user payload bytes per second;
//! - the **throttle share**: PutRecords entries throttled over entries sent (the producer's
//!   `kinesis_kpl_throttles_total` over itself plus `kinesis_kpl_kinesis_records_put_total`).
//!
//! Without `--bench` (e.g. `cargo test --benches`) it runs one short smoke pass.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_integration::{BedOptions, TestBed};
use kinesis_kpl::{Producer, UserRecord};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SHARDS: u32 = 4;
const SHARD_LIMIT_BYTES: f64 = 1024.0 * 1024.0;

fn main() -> Result<(), BoxError> {
    let bench = std::env::args().any(|a| a == "--bench");
    let (warm_up, measured) = if bench {
        (Duration::from_secs(10), Duration::from_secs(60))
    } else {
        (Duration::from_secs(1), Duration::from_secs(3))
    };
    metrics::set_global_recorder(Global).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(warm_up, measured))
}

async fn run(warm_up: Duration, measured: Duration) -> Result<(), BoxError> {
    let bed = TestBed::start_with_options(BedOptions::default().enforce_limits(true)).await?;
    println!(
        "{SHARDS}-shard streams, limit {:.1} MiB/s; warm-up {warm_up:?}, measured {measured:?}",
        f64::from(SHARDS)
    );
    println!("record  rate_limit  stored MiB/s  of limit  payload MiB/s  records/s  throttled");
    for size in [100usize, 1024] {
        for rate_limit in [100u32, 150] {
            let r = saturate(&bed, size, rate_limit, warm_up, measured).await?;
            println!(
                "{size:>6}  {rate_limit:>9}%  {:>12.3}  {:>7.1}%  {:>13.3}  {:>9.0}  {:>8.2}%",
                r.stored_bytes_per_s / SHARD_LIMIT_BYTES,
                100.0 * r.stored_bytes_per_s / (SHARD_LIMIT_BYTES * f64::from(SHARDS)),
                r.payload_bytes_per_s / SHARD_LIMIT_BYTES,
                r.records_per_s,
                100.0 * r.throttle_share
            );
        }
    }
    Ok(())
}

struct Saturation {
    stored_bytes_per_s: f64,
    payload_bytes_per_s: f64,
    records_per_s: f64,
    throttle_share: f64,
}

async fn saturate(
    bed: &TestBed,
    size: usize,
    rate_limit: u32,
    warm_up: Duration,
    measured: Duration,
) -> Result<Saturation, BoxError> {
    let stream = bed.create_stream(SHARDS).await?;
    let producer = Producer::builder(bed.kinesis().clone(), &stream)
        .rate_limit(rate_limit)
        .build()
        .await?;
    let payload = Bytes::from(vec![b'x'; size]);
    let started = Instant::now();
    let (from, to) = (started + warm_up, started + warm_up + measured);
    // The counters and the clock are read at the window's edges by a task of their own, so a
    // feeder waiting for room cannot move them.
    let window = tokio::spawn(async move {
        tokio::time::sleep_until(from.into()).await;
        let before = (Counts::global().snapshot(), SystemTime::now());
        tokio::time::sleep_until(to.into()).await;
        let after = (Counts::global().snapshot(), SystemTime::now());
        (before, after)
    });
    // Futures need not be polled for their records to be accepted and sent: keep as many as
    // the producer buffers, awaiting the oldest when more are outstanding.
    let outstanding = producer.config().max_buffered_records();
    let mut waiting = std::collections::VecDeque::with_capacity(outstanding);
    let mut n = 0u64;
    while !window.is_finished() {
        waiting.push_back(producer.put_record(UserRecord::new(
            format!("key-{}", n % 1000),
            payload.clone(),
        )));
        n += 1;
        if waiting.len() >= outstanding
            && let Some(oldest) = waiting.pop_front()
        {
            oldest.await?;
        }
        if n.is_multiple_of(256) {
            tokio::task::yield_now().await;
        }
    }
    let ((before, wall_from), (after, wall_to)) = window.await?;
    producer.shutdown().await;
    drop(waiting);

    let seconds = measured.as_secs_f64();
    let user = after.user_records - before.user_records;
    let put = after.kinesis_records - before.kinesis_records;
    let throttled = after.throttles - before.throttles;
    let (stored, stored_seconds) = stored_bytes(bed, &stream, wall_from, wall_to).await?;
    Ok(Saturation {
        stored_bytes_per_s: stored as f64 / stored_seconds,
        payload_bytes_per_s: (user as f64 * size as f64) / seconds,
        records_per_s: user as f64 / seconds,
        throttle_share: throttled as f64 / (throttled + put).max(1) as f64,
    })
}

/// The data bytes of the Kinesis records that arrived in the whole seconds within
/// `[from, to)`, all shards, and how many seconds that is (the server stamps arrivals to the
/// second).
async fn stored_bytes(
    bed: &TestBed,
    stream: &str,
    from: SystemTime,
    to: SystemTime,
) -> Result<(u64, f64), BoxError> {
    let epoch = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
    };
    let (from, to) = (epoch(from)?.ceil(), epoch(to)?.floor());
    if to <= from {
        return Err("the measured window holds no whole second".into());
    }
    let kinesis = bed.kinesis();
    let shards = kinesis.list_shards().stream_name(stream).send().await?;
    let mut total = 0u64;
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_owned);
        while let Some(it) = iterator {
            let page = kinesis.get_records().shard_iterator(it).send().await?;
            for record in page.records() {
                let arrived = record
                    .approximate_arrival_timestamp()
                    .map(|t| t.as_secs_f64());
                if arrived.is_some_and(|at| at >= from && at < to) {
                    total += record.data().as_ref().len() as u64;
                }
            }
            iterator = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator().map(str::to_owned)
            };
        }
    }
    Ok((total, to - from))
}

/// The producer's counters this harness reads, summed over their labels.
#[derive(Default)]
struct Counts {
    by_name: Mutex<HashMap<String, Arc<Count>>>,
}

#[derive(Clone, Copy)]
struct Snapshot {
    user_records: u64,
    kinesis_records: u64,
    throttles: u64,
}

impl Counts {
    fn global() -> &'static Counts {
        static COUNTS: OnceLock<Counts> = OnceLock::new();
        COUNTS.get_or_init(Counts::default)
    }

    fn count(&self, name: &str) -> Arc<Count> {
        let mut by_name = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(by_name.entry(name.to_owned()).or_default())
    }

    fn read(&self, name: &str) -> u64 {
        self.count(name).0.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            user_records: self.read(kinesis_kpl::metrics::USER_RECORDS_PUT),
            kinesis_records: self.read(kinesis_kpl::metrics::KINESIS_RECORDS_PUT),
            throttles: self.read(kinesis_kpl::metrics::THROTTLES),
        }
    }
}

#[derive(Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::Relaxed);
    }
}

/// The recorder: counters into [`Counts::global`], the rest dropped.
struct Global;

impl Recorder for Global {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Counts::global().count(key.name()))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
