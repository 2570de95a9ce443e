//! Reliability scenario 1: crashes and resharding.
//!
//! 100 000 records (scaled for slow backends) are put into an 8-shard stream in three phases
//! while three workers consume it; between the phases one shard is split and two others are
//! merged. Every couple of seconds (seeded) one worker is killed abruptly — the task running
//! `Worker::run` is aborted: no `shutdown_requested`, no last checkpoint, no release; its
//! leases expire after the failover time — and a fresh worker is started in its place.
//!
//! Every worker reads Kinesis through its own seeded fault layer ([`ServiceFaults`] on
//! `GetRecords`, `GetShardIterator` and `ListShards`: throttling, HTTP 500, dropped connections,
//! lost answers, latency).
//!
//! Checked:
//! - every record is processed at least once (none lost);
//! - per partition key, first deliveries come in the order the records were put, across the
//!   lineage (parents before children), and every processor delivers its keys in order;
//! - every processor resumes strictly after the checkpoint it was initialised with, and that
//!   checkpoint is at or after every checkpoint acknowledged by earlier processors of the shard
//!   (no acknowledged checkpoint lost, no zombie checkpoint landed after a new owner took the
//!   lease);
//! - a record is delivered twice only if it lay after the last acknowledged checkpoint of a
//!   processor that was killed or lost its lease — never after a clean hand-off;
//! - no checkpoint ever moves backwards: neither in the lease table (sampled all along) nor in
//!   the acknowledgements of one processor.

#[path = "../../kcl/tests/support/quick_worker.rs"]
mod quick_worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardFilter;
use bytes::Bytes;
use kinesis_integration::TestBed;
use kinesis_integration::faults::{Service, ServiceCounts, ServiceFaults, ServicePlan};
use kinesis_kcl::lease::{ExtendedSequenceNumber, LeaseTable};
use kinesis_kcl::{
    Checkpointer, ProcessRecordsInput, ProcessorError, ShardRecordProcessor, Worker, WorkerHandle,
};
use kinesis_kcl::{InitializationInput, ShardContext};
use kinesis_kpl::{Producer, UserRecord};
use quick_worker::quick;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const SEED: u64 = 0x5EED_0001;
const SHARDS: u32 = 8;
const WORKERS: usize = 3;
const KEYS: u64 = 500;
/// Processors checkpoint at most this often (and at shard end and on shutdown), so that a kill
/// usually leaves delivered but uncheckpointed records behind.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(300);
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// SplitMix64: the test's own seeded choices (kill times, victims).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One processor instance (one lease tenure of one worker on one shard).
#[derive(Clone, Debug)]
struct Instance {
    worker: String,
    shard: String,
    init: ExtendedSequenceNumber,
    /// How it ended: "lease_lost", "shard_ended", "shutdown_requested" (None: killed or still
    /// running at the end).
    ended: Option<&'static str>,
    /// When it ended (`lease_lost`, `shard_ended`, `shutdown_requested`).
    ended_at: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Delivery {
    instance: usize,
    key: String,
    value: u64,
    position: ExtendedSequenceNumber,
}

#[derive(Clone, Debug)]
struct Ack {
    instance: usize,
    position: ExtendedSequenceNumber,
}

#[derive(Default)]
struct Log {
    instances: Mutex<Vec<Instance>>,
    deliveries: Mutex<Vec<Delivery>>,
    acks: Mutex<Vec<Ack>>,
    distinct: Mutex<std::collections::HashSet<u64>>,
}

impl Log {
    fn distinct(&self) -> usize {
        self.distinct.lock().unwrap().len()
    }
}

struct Processor {
    instance: Option<usize>,
    worker: String,
    shard: String,
    log: Arc<Log>,
    last_checkpoint: Instant,
}

impl Processor {
    fn instance(&self) -> usize {
        self.instance.expect("initialised first")
    }

    async fn checkpoint(
        &mut self,
        checkpointer: &mut Checkpointer,
        position: ExtendedSequenceNumber,
    ) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        self.log.acks.lock().unwrap().push(Ack {
            instance: self.instance(),
            position,
        });
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    fn ended(&self, how: &'static str) {
        let mut instances = self.log.instances.lock().unwrap();
        let instance = &mut instances[self.instance()];
        instance.ended = Some(how);
        instance.ended_at = Some(Instant::now());
    }
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Processor {
    async fn initialize(&mut self, input: InitializationInput) {
        let mut instances = self.log.instances.lock().unwrap();
        self.instance = Some(instances.len());
        instances.push(Instance {
            worker: self.worker.clone(),
            shard: self.shard.clone(),
            init: input.checkpoint,
            ended: None,
            ended_at: None,
        });
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let instance = self.instance();
        {
            let mut deliveries = self.log.deliveries.lock().unwrap();
            let mut distinct = self.log.distinct.lock().unwrap();
            for record in &input.records {
                let value: u64 = std::str::from_utf8(record.data())?.parse()?;
                distinct.insert(value);
                deliveries.push(Delivery {
                    instance,
                    key: record.partition_key().to_owned(),
                    value,
                    position: record.extended_sequence_number(),
                });
            }
        }
        if self.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
            && let Some(last) = checkpointer.last_delivered().cloned()
        {
            self.checkpoint(checkpointer, last).await?;
        }
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.ended("lease_lost");
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        self.checkpoint(checkpointer, ExtendedSequenceNumber::SHARD_END)
            .await?;
        self.ended("shard_ended");
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        if let Some(last) = checkpointer.last_delivered().cloned() {
            self.checkpoint(checkpointer, last).await?;
        }
        self.ended("shutdown_requested");
        Ok(())
    }
}

struct Running {
    id: String,
    handle: WorkerHandle,
    task: JoinHandle<kinesis_kcl::Result<()>>,
}

struct Fleet<'a> {
    bed: &'a TestBed,
    application: String,
    stream: String,
    log: Arc<Log>,
    /// Every worker's Kinesis fault layer.
    kinesis_faults: Mutex<Vec<ServiceFaults>>,
}

impl Fleet<'_> {
    fn start(&self, id: String) -> Result<Running, BoxError> {
        let log = Arc::clone(&self.log);
        let worker = id.clone();
        let factory = move |shard: &ShardContext| Processor {
            instance: None,
            worker: worker.clone(),
            shard: shard.lease_key.clone(),
            log: Arc::clone(&log),
            last_checkpoint: Instant::now(),
        };
        // Each worker reads through its own seeded Kinesis fault layer.
        let faults = {
            let mut all = self.kinesis_faults.lock().unwrap();
            let faults = ServiceFaults::new(Service::Kinesis, kinesis_plan(all.len() as u64));
            all.push(faults.clone());
            faults
        };
        let kinesis = aws_sdk_kinesis::Client::from_conf(faults.kinesis_config(self.bed).build());
        let worker = quick(
            Worker::builder(
                &self.application,
                kinesis,
                self.bed.dynamodb().clone(),
                factory,
            )
            .stream(&self.stream)
            .worker_id(&id),
        )?
        .lease_cleanup_interval(Duration::from_secs(1))
        .build()?;
        let handle = worker.handle();
        let task = tokio::spawn(worker.run());
        Ok(Running { id, handle, task })
    }
}

/// The Kinesis read faults of worker `index`: throttling, HTTP 500, dropped connections, lost
/// answers and latency on the calls a worker reads with (the SDK's standard retries on top).
fn kinesis_plan(index: u64) -> ServicePlan {
    ServicePlan {
        throttle: 0.05,
        server_error: 0.03,
        dropped_connection: 0.02,
        timeout: 0.01,
        timeout_after: Duration::from_millis(200),
        latency: 0.10,
        max_latency: Duration::from_millis(50),
        ..ServicePlan::seeded(SEED + 100 + index)
    }
    .operations(["GetRecords", "GetShardIterator", "ListShards"])
}

/// How long putting every record is spread over, so that kills and reshards fall mid-run.
const PRODUCTION_TIME: Duration = Duration::from_secs(9);

/// Puts `values` through a fresh producer (a fresh shard map), key `key-{v % KEYS}`, strict
/// per-shard ordering so that every key is stored in the order put; record `v` is not put
/// before `start + v * per_record`.
async fn produce(
    bed: &TestBed,
    stream: &str,
    values: std::ops::Range<u64>,
    start: tokio::time::Instant,
    per_record: Duration,
) -> TestResult {
    let producer = Producer::new(
        bed.kinesis().clone(),
        stream,
        kinesis_kpl::ProducerConfig::builder()
            .ordering(kinesis_kpl::Ordering::PerShardStrict)
            .record_max_buffered_time(Duration::from_millis(50))
            .build()?,
    )
    .await?;
    let mut pending = Vec::new();
    for v in values {
        pending.push(producer.put_record(UserRecord::new(
            format!("key-{}", v % KEYS),
            Bytes::from(v.to_string()),
        )));
        if pending.len() >= 2000 {
            for p in pending.drain(..) {
                p.await?;
            }
            tokio::time::sleep_until(start + per_record * (v as u32)).await;
        }
    }
    for p in pending {
        p.await?;
    }
    producer.shutdown().await;
    Ok(())
}

/// The open shards of the stream, sorted by starting hash key: (start, end, id).
async fn open_shards(bed: &TestBed, stream: &str) -> Result<Vec<(u128, u128, String)>, BoxError> {
    let shards = bed
        .kinesis()
        .list_shards()
        .stream_name(stream)
        .shard_filter(ShardFilter::builder().r#type("AT_LATEST".into()).build()?)
        .send()
        .await?
        .shards
        .unwrap_or_default();
    let mut open = Vec::new();
    for s in shards {
        if s.sequence_number_range()
            .and_then(|r| r.ending_sequence_number())
            .is_some()
        {
            continue;
        }
        let range = s.hash_key_range().ok_or("no hash key range")?;
        open.push((
            range.starting_hash_key().parse()?,
            range.ending_hash_key().parse()?,
            s.shard_id().to_owned(),
        ));
    }
    open.sort();
    Ok(open)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashes_and_resharding_lose_nothing_and_never_move_checkpoints_back() -> TestResult {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::time::timeout(TEST_TIMEOUT, scenario())
        .await
        .map_err(|_| format!("scenario did not finish within {TEST_TIMEOUT:?}"))?
}

async fn scenario() -> TestResult {
    let started = Instant::now();
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(SHARDS).await?;
    let n = bed.scaled(100_000) as u64;
    let fleet = Fleet {
        bed: &bed,
        application: bed.unique_table_name(),
        stream: stream.clone(),
        log: Arc::new(Log::default()),
        kinesis_faults: Mutex::new(Vec::new()),
    };
    let log = Arc::clone(&fleet.log);
    let table = LeaseTable::new(bed.dynamodb().clone(), &fleet.application);

    let mut next_worker = 0;
    let mut fresh_id = || {
        next_worker += 1;
        format!("worker-{next_worker}")
    };
    let mut workers: Vec<Running> = Vec::new();
    for _ in 0..WORKERS {
        workers.push(fleet.start(fresh_id())?);
    }

    // The lease table, sampled all along: no checkpoint may ever move backwards.
    let sampler_stop = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let table = table.clone();
        let stop = Arc::clone(&sampler_stop);
        tokio::spawn(async move {
            let mut last: BTreeMap<String, ExtendedSequenceNumber> = BTreeMap::new();
            let mut regressions = Vec::new();
            let mut samples = 0u64;
            loop {
                if let Ok(leases) = table.list_leases().await {
                    samples += 1;
                    for lease in leases {
                        if let Some(previous) = last.get(&lease.lease_key)
                            && lease.checkpoint < *previous
                        {
                            regressions.push(format!(
                                "{}: {} -> {}",
                                lease.lease_key, previous, lease.checkpoint
                            ));
                        }
                        last.insert(lease.lease_key.clone(), lease.checkpoint);
                    }
                }
                tokio::select! {
                    _ = stop.notified() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            (samples, regressions)
        })
    };

    // Production in three phases, with a split and a merge in between.
    let producer = {
        let (p1, p2) = (n * 4 / 10, n * 7 / 10);
        let start = tokio::time::Instant::now();
        let per_record = PRODUCTION_TIME / n as u32;
        let stream = stream.clone();
        let bed = &bed;
        async move {
            produce(bed, &stream, 0..p1, start, per_record).await?;
            // Split shard 1 in the middle of its range.
            let open = open_shards(bed, &stream).await?;
            let (lo, hi, id) = open
                .iter()
                .find(|(_, _, id)| id.ends_with("000001"))
                .cloned()
                .ok_or("shard 1")?;
            bed.kinesis()
                .split_shard()
                .stream_name(&stream)
                .shard_to_split(&id)
                .new_starting_hash_key((lo + (hi - lo) / 2 + 1).to_string())
                .send()
                .await?;
            bed.wait_for_stream_active(&stream).await?;
            produce(bed, &stream, p1..p2, start, per_record).await?;
            // Merge shards 4 and 5 (adjacent ranges).
            bed.kinesis()
                .merge_shards()
                .stream_name(&stream)
                .shard_to_merge("shardId-000000000004")
                .adjacent_shard_to_merge("shardId-000000000005")
                .send()
                .await?;
            bed.wait_for_stream_active(&stream).await?;
            produce(bed, &stream, p2..n, start, per_record).await?;
            Ok::<_, BoxError>(Instant::now())
        }
    };
    tokio::pin!(producer);

    // Kill a worker every 1–2.5 s (seeded) until every record was delivered, at least
    // `MIN_KILLS` times; the first kills fall while records are still being put and the stream
    // resharded.
    const MIN_KILLS: usize = 8;
    let mut rng = Rng(SEED);
    let mut kills: Vec<(Instant, String)> = Vec::new();
    let mut produced_at = None;
    let mut next_kill = Instant::now() + Duration::from_millis(1000 + rng.below(1500));
    loop {
        if produced_at.is_some() && log.distinct() as u64 == n && kills.len() >= MIN_KILLS {
            break;
        }
        tokio::select! {
            done = &mut producer, if produced_at.is_none() => produced_at = Some(done?),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if Instant::now() >= next_kill {
            let victim = workers.remove(rng.below(workers.len() as u64) as usize);
            kills.push((Instant::now(), victim.id.clone()));
            victim.task.abort();
            let _ = victim.task.await;
            workers.push(fleet.start(fresh_id())?);
            next_kill = Instant::now() + Duration::from_millis(1000 + rng.below(1500));
        }
        if started.elapsed() > Duration::from_secs(150) {
            return Err(format!(
                "only {} of {n} records delivered after {:?}",
                log.distinct(),
                started.elapsed()
            )
            .into());
        }
    }
    let all_delivered = started.elapsed();
    let produced = produced_at.expect("production finished") - started;
    let kills_while_producing = kills
        .iter()
        .filter(|(at, _)| *at - started < produced)
        .count();
    for w in &workers {
        w.handle.shutdown().await;
    }
    for w in workers {
        w.task.await??;
    }
    sampler_stop.notify_one();
    let (samples, table_regressions) = sampler.await?;

    // --- The checks. ---
    let instances = log.instances.lock().unwrap().clone();
    let deliveries = log.deliveries.lock().unwrap().clone();
    let acks = log.acks.lock().unwrap().clone();
    let killed_at: HashMap<&str, Instant> = kills.iter().map(|(t, w)| (w.as_str(), *t)).collect();
    // A processor went down with its worker if the worker was killed while it ran. (Dropping a
    // worker's tasks may still tell some processors `lease_lost` as the coordinator goes.)
    let killed = |inst: &Instance| {
        killed_at
            .get(inst.worker.as_str())
            .is_some_and(|k| inst.ended_at.is_none_or(|end| end >= *k))
    };

    // Nothing lost.
    let mut by_value: HashMap<u64, Vec<&Delivery>> = HashMap::new();
    for d in &deliveries {
        by_value.entry(d.value).or_default().push(d);
    }
    let lost = (0..n).filter(|v| !by_value.contains_key(v)).count();
    assert_eq!(lost, 0, "records never processed");

    // Per-key order: first deliveries in put order across the lineage; within each processor,
    // every key strictly increasing.
    let mut first_seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut last_first: HashMap<&str, u64> = HashMap::new();
    let mut per_instance: HashMap<(usize, &str), u64> = HashMap::new();
    for d in &deliveries {
        if let Some(prev) = per_instance.insert((d.instance, &d.key), d.value) {
            assert!(
                prev < d.value,
                "processor {} delivered key {} value {} after {}",
                d.instance,
                d.key,
                d.value,
                prev
            );
        }
        if first_seen.insert(d.value)
            && let Some(prev) = last_first.insert(&d.key, d.value)
        {
            assert!(
                prev < d.value,
                "key {}: {} first delivered after {} (instance {:?})",
                d.key,
                d.value,
                prev,
                instances[d.instance]
            );
        }
    }

    // Acknowledged checkpoints per processor: never backwards.
    let mut acks_of: HashMap<usize, Vec<&ExtendedSequenceNumber>> = HashMap::new();
    let mut ack_regressions = 0;
    for a in &acks {
        let list = acks_of.entry(a.instance).or_default();
        if list.last().is_some_and(|last| **last > a.position) {
            ack_regressions += 1;
        }
        list.push(&a.position);
    }
    let max_ack = |i: usize| acks_of.get(&i).and_then(|l| l.iter().max().copied());

    // Each processor resumes strictly after its initial checkpoint, which covers every
    // checkpoint acknowledged to the shard's earlier processors.
    let mut first_position: HashMap<usize, &ExtendedSequenceNumber> = HashMap::new();
    for d in &deliveries {
        first_position.entry(d.instance).or_insert(&d.position);
    }
    let mut by_shard: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, inst) in instances.iter().enumerate() {
        by_shard.entry(&inst.shard).or_default().push(i);
    }
    let mut handovers = 0;
    for (shard, list) in &by_shard {
        for (k, &p) in list.iter().enumerate() {
            let init = &instances[p].init;
            if let Some(first) = first_position.get(&p) {
                assert!(
                    *first > init,
                    "{shard}: processor {p} delivered {first} at or before its checkpoint {init}"
                );
            }
            for &q in &list[..k] {
                handovers += 1;
                if let Some(acked) = max_ack(q) {
                    assert!(
                        acked <= init,
                        "{shard}: processor {p} ({}) started at {init}, before the checkpoint \
                         {acked} acknowledged to the earlier processor {q} ({}, ended {:?}): a \
                         lost or zombie checkpoint",
                        instances[p].worker,
                        instances[q].worker,
                        instances[q].ended,
                    );
                }
            }
        }
    }

    // Duplicates: only after the last acknowledged checkpoint of a processor that was killed
    // or lost its lease.
    let mut duplicates = 0;
    let mut duplicates_after_kill = 0;
    for list in by_value.values().filter(|l| l.len() > 1) {
        for pair in list.windows(2) {
            let (earlier, later) = (pair[0], pair[1]);
            duplicates += 1;
            let q = &instances[earlier.instance];
            assert_ne!(
                earlier.instance, later.instance,
                "one processor delivered {} twice",
                earlier.value
            );
            if let Some(acked) = max_ack(earlier.instance) {
                assert!(
                    earlier.position > *acked,
                    "value {} at {} re-delivered though processor {} ({}) acknowledged a \
                     checkpoint at {acked}",
                    earlier.value,
                    earlier.position,
                    earlier.instance,
                    q.worker
                );
            }
            let was_killed = killed(q);
            assert!(
                was_killed || q.ended == Some("lease_lost"),
                "value {} re-delivered after a clean hand-off by processor {} ({:?})",
                earlier.value,
                earlier.instance,
                q
            );
            if was_killed {
                duplicates_after_kill += 1;
            }
        }
    }

    let lease_lost = instances
        .iter()
        .filter(|i| i.ended == Some("lease_lost") && !killed(i))
        .count();
    let mut read_faults = ServiceCounts::default();
    let mut read_faults_by_operation: BTreeMap<String, u64> = BTreeMap::new();
    for faults in fleet.kinesis_faults.lock().unwrap().iter() {
        let stats = faults.stats();
        read_faults += stats.total;
        for (operation, counts) in stats.by_operation {
            *read_faults_by_operation.entry(operation).or_default() += counts.failed();
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "REPORT scenario 1 (crashes and resharding): {n} records, {SHARDS} shards, {WORKERS} \
         workers; {} kills ({kills_while_producing} while producing/resharding), 2 reshards (1 split, 1 merge); lost 0; duplicates {duplicates} \
         ({duplicates_after_kill} after a kill, {} after a lost lease); {} processors, \
         {handovers} processor pairs checked, {lease_lost} lease losses (not counting killed workers); checkpoint \
         regressions: {} in the table ({samples} samples), {ack_regressions} acknowledged; \
         Kinesis read faults injected over {} calls: throttled {}, 500 {}, dropped {}, answer \
         lost {}, delayed {} (failed calls per operation {read_faults_by_operation:?}); \
         produced in {produced:?}, all delivered after {all_delivered:?}, total {elapsed:?} (seed {SEED:#x})",
        kills.len(),
        duplicates - duplicates_after_kill,
        instances.len(),
        table_regressions.len(),
        read_faults.calls,
        read_faults.throttled,
        read_faults.server_errors,
        read_faults.dropped,
        read_faults.timed_out,
        read_faults.delayed,
    );
    assert!(
        read_faults.throttled > 0
            && read_faults.server_errors > 0
            && read_faults.dropped > 0
            && read_faults.timed_out > 0,
        "every Kinesis read fault was drawn: {read_faults:?}"
    );
    assert!(
        table_regressions.is_empty(),
        "checkpoints moved backwards in the lease table: {table_regressions:?}"
    );
    assert_eq!(
        ack_regressions, 0,
        "acknowledged checkpoints moved backwards"
    );
    assert!(kills.len() >= MIN_KILLS);
    assert!(
        kills_while_producing >= 3,
        "kills fell while the stream was being written and resharded"
    );
    assert!(samples > 10, "the lease table was sampled");
    Ok(())
}
