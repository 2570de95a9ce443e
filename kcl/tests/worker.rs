//! The worker end to end on the test bed: records produced with `kinesis-kpl` (aggregated),
//! consumed by one or more [`Worker`]s with checkpoints, leases in the bed's DynamoDB.
//!
//! Every test runs once per retrieval mode (`<test>::polling`, `<test>::fan_out`): the same
//! assertions hold whether records are polled or pushed by enhanced fan-out.

#[path = "support/timing.rs"]
mod timing;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::types::ShardFilter;
use bytes::Bytes;
use kinesis_integration::BedOptions;
use kinesis_integration::TestBed;
use kinesis_kcl::lease::{ExtendedSequenceNumber, LeaseTable};
use kinesis_kcl::{
    Checkpointer, FanOutConfig, InitialPosition, LeaseConfig, PollingConfig, ProcessRecordsInput,
    ProcessorError, Retrieval, ShardRecordProcessor, ShardState, Worker, WorkerHandle,
};
use kinesis_kcl::{InitializationInput, ShardContext};
use kinesis_kpl::{Producer, UserRecord};
use timing::{BoxError, SAMPLE, TestResult, bounded, wait_for};
use tokio::task::JoinHandle;

const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// How the workers of a test fetch records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// `GetRecords` polling.
    Polling,
    /// Enhanced fan-out (`SubscribeToShard`), on a server whose subscriptions end after a few
    /// seconds, so that the tests also run across renewals.
    FanOut,
}

impl Mode {
    /// A test bed for this mode.
    async fn bed(self) -> Result<TestBed, BoxError> {
        Ok(match self {
            Mode::Polling => TestBed::start().await?,
            Mode::FanOut => {
                TestBed::start_with_options(
                    BedOptions::default().subscribe_to_shard_session(Duration::from_secs(3)),
                )
                .await?
            }
        })
    }

    fn retrieval(self) -> Result<Retrieval, BoxError> {
        Ok(match self {
            Mode::Polling => Retrieval::Polling(
                PollingConfig::builder()
                    .idle_time_between_reads(Duration::from_millis(50))
                    .build()?,
            ),
            Mode::FanOut => Retrieval::FanOut(
                FanOutConfig::builder()
                    .registration_retry_delay(Duration::from_millis(50))
                    .min_time_between_subscribes(Duration::from_millis(200))
                    .retry_min_delay(Duration::from_millis(50))
                    .retry_max_delay(Duration::from_millis(500))
                    .build()?,
            ),
        })
    }
}

/// Runs the test body `$name(mode)` once per retrieval mode, as `$name::polling` and
/// `$name::fan_out`.
macro_rules! both_modes {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn polling() -> super::TestResult {
                super::$name(super::Mode::Polling).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn fan_out() -> super::TestResult {
                super::$name(super::Mode::FanOut).await
            }
        }
    };
}

/// One delivered user record.
#[derive(Clone, Debug)]
struct Delivery {
    worker: String,
    shard: String,
    partition_key: String,
    value: u64,
    position: ExtendedSequenceNumber,
    aggregated: bool,
    at: Instant,
}

/// What the test processors saw.
#[derive(Debug, Default)]
struct Log {
    deliveries: Mutex<Vec<Delivery>>,
    /// (when, shard, event)
    events: Mutex<Vec<(Instant, String, String)>>,
}

impl Log {
    fn event(&self, shard: &str, event: impl Into<String>) {
        self.events
            .lock()
            .unwrap()
            .push((Instant::now(), shard.to_owned(), event.into()));
    }

    fn distinct_values(&self) -> BTreeSet<u64> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.value)
            .collect()
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }

    fn events(&self) -> Vec<(Instant, String, String)> {
        self.events.lock().unwrap().clone()
    }
}

/// How a test processor behaves.
#[derive(Clone, Debug, Default)]
struct Behaviour {
    /// Checkpoint after every batch (otherwise only as below).
    checkpoint_every_batch: bool,
    /// Checkpoint once at the n-th user record delivered (0-based), then never again.
    checkpoint_once_at: Option<usize>,
    /// Fail `process_records` the first time for these shards.
    fail_once: Vec<String>,
    /// Panic in `process_records` the first time for these shards.
    panic_once: Vec<String>,
    /// Never checkpoint at shard end.
    skip_shard_end_checkpoint: bool,
    /// Shared counters for the once-only behaviours.
    tripped: Arc<Mutex<BTreeSet<String>>>,
}

struct TestProcessor {
    worker: String,
    shard: String,
    log: Arc<Log>,
    behaviour: Behaviour,
    delivered: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for TestProcessor {
    async fn initialize(&mut self, input: InitializationInput) {
        self.log
            .event(&self.shard, format!("initialize {}", input.checkpoint));
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let once = |list: &Vec<String>, tag: &str| {
            list.contains(&self.shard)
                && self
                    .behaviour
                    .tripped
                    .lock()
                    .unwrap()
                    .insert(format!("{tag}:{}", self.shard))
        };
        if once(&self.behaviour.fail_once, "fail") {
            self.log.event(&self.shard, "fail");
            return Err("test failure".into());
        }
        if once(&self.behaviour.panic_once, "panic") {
            self.log.event(&self.shard, "panic");
            panic!("test panic in process_records");
        }
        let now = Instant::now();
        let mut checkpoint_at = None;
        {
            let mut deliveries = self.log.deliveries.lock().unwrap();
            for record in &input.records {
                let n = self.delivered.fetch_add(1, Ordering::SeqCst);
                if self.behaviour.checkpoint_once_at == Some(n) {
                    checkpoint_at = Some(record.clone());
                }
                let value = std::str::from_utf8(record.data())?.parse()?;
                deliveries.push(Delivery {
                    worker: self.worker.clone(),
                    shard: self.shard.clone(),
                    partition_key: record.partition_key().to_owned(),
                    value,
                    position: record.extended_sequence_number(),
                    aggregated: record.is_aggregated(),
                    at: now,
                });
            }
        }
        if let Some(record) = checkpoint_at {
            checkpointer.checkpoint_record(&record).await?;
            self.log.event(
                &self.shard,
                format!("checkpoint {}", record.extended_sequence_number()),
            );
        }
        if self.behaviour.checkpoint_every_batch {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.log.event(&self.shard, "lease_lost");
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        self.log.event(&self.shard, "shard_ended");
        if !self.behaviour.skip_shard_end_checkpoint {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.log.event(&self.shard, "shutdown_requested");
        if self.behaviour.checkpoint_every_batch {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }
}

/// A running worker and its task.
struct Running {
    handle: WorkerHandle,
    task: JoinHandle<kinesis_kcl::Result<()>>,
}

impl Running {
    async fn shutdown(self) -> TestResult {
        self.handle.shutdown().await;
        self.task.await??;
        Ok(())
    }
}

struct Setup<'a> {
    bed: &'a TestBed,
    mode: Mode,
    application: String,
    streams: Vec<String>,
    position: InitialPosition,
    log: Arc<Log>,
}

impl Setup<'_> {
    fn start(&self, worker_id: &str, behaviour: Behaviour) -> Result<Running, BoxError> {
        self.start_with(worker_id, behaviour, self.bed.kinesis().clone())
    }

    /// As [`start`](Self::start), reaching Kinesis through `kinesis`.
    fn start_with(
        &self,
        worker_id: &str,
        behaviour: Behaviour,
        kinesis: aws_sdk_kinesis::Client,
    ) -> Result<Running, BoxError> {
        let log = Arc::clone(&self.log);
        let worker = worker_id.to_owned();
        let delivered = Arc::new(AtomicUsize::new(0));
        let factory = move |shard: &ShardContext| TestProcessor {
            worker: worker.clone(),
            shard: shard.lease_key.clone(),
            log: Arc::clone(&log),
            behaviour: behaviour.clone(),
            delivered: Arc::clone(&delivered),
        };
        let worker = Worker::builder(
            &self.application,
            kinesis,
            self.bed.dynamodb().clone(),
            factory,
        )
        .streams(self.streams.clone())
        .worker_id(worker_id)
        .initial_position(self.position)
        .lease_config(
            LeaseConfig::builder()
                .failover_time(Duration::from_secs(2))
                .build()?,
        )
        .retrieval(self.mode.retrieval()?)
        .shard_sync_interval(Duration::from_millis(500))
        .parent_shard_poll_interval(Duration::from_millis(100))
        .lease_cleanup_interval(Duration::from_secs(1))
        .build()?;
        let handle = worker.handle();
        let task = tokio::spawn(worker.run());
        Ok(Running { handle, task })
    }
}

fn every_batch() -> Behaviour {
    Behaviour {
        checkpoint_every_batch: true,
        ..Behaviour::default()
    }
}

/// Puts `values` as user records through the KPL (aggregated), key `key-{v % keys}`.
async fn produce(
    bed: &TestBed,
    stream: &str,
    values: std::ops::Range<u64>,
    keys: u64,
) -> TestResult {
    let producer = Producer::new(
        bed.kinesis().clone(),
        stream,
        kinesis_kpl::ProducerConfig::default(),
    )
    .await?;
    let mut pending = Vec::new();
    for v in values {
        pending.push(producer.put_record(UserRecord::new(
            format!("key-{}", v % keys),
            Bytes::from(v.to_string()),
        )));
        if pending.len() >= 1000 {
            for p in pending.drain(..) {
                p.await?;
            }
        }
    }
    for p in pending {
        p.await?;
    }
    producer.shutdown().await;
    Ok(())
}

/// Per partition key, first deliveries must come in increasing value order (values of one key
/// are produced in increasing order). Returns the number of re-deliveries.
fn check_key_order(deliveries: &[Delivery]) -> Result<usize, BoxError> {
    let mut seen: HashMap<u64, ()> = HashMap::new();
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut duplicates = 0;
    for d in deliveries {
        if seen.insert(d.value, ()).is_some() {
            duplicates += 1;
            continue;
        }
        if let Some(prev) = last.insert(&d.partition_key, d.value)
            && prev > d.value
        {
            return Err(format!(
                "key {} delivered {} after {} (shard {}, worker {})",
                d.partition_key, d.value, prev, d.shard, d.worker
            )
            .into());
        }
    }
    Ok(duplicates)
}

async fn two_workers_deliver_every_record_in_key_order(mode: Mode) -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = mode.bed().await?;
        let stream = bed.create_stream(4).await?;
        let n = bed.scaled(50_000) as u64;
        produce(&bed, &stream, 0..n, 1000).await?;
        let setup = Setup {
            bed: &bed,
            mode,
            application: bed.unique_table_name(),
            streams: vec![stream.clone()],
            position: InitialPosition::TrimHorizon,
            log: Arc::new(Log::default()),
        };
        let started = Instant::now();
        let a = setup.start("worker-a", every_batch())?;
        let b = setup.start("worker-b", every_batch())?;
        wait_for(Duration::from_secs(120), "every record", || {
            setup.log.distinct_values().len() as u64 == n
        })
        .await?;
        let elapsed = started.elapsed();
        let deliveries = setup.log.deliveries();
        let duplicates = check_key_order(&deliveries)?;
        let aggregated = deliveries.iter().filter(|d| d.aggregated).count();
        let workers: BTreeSet<&str> = deliveries.iter().map(|d| d.worker.as_str()).collect();
        eprintln!(
            "REPORT worker e2e ({mode:?}): {n} records over 4 shards, 2 workers: all delivered in {elapsed:?}, \
             {duplicates} re-deliveries, {aggregated} from aggregates, workers {workers:?}"
        );
        assert!(aggregated > 0, "the KPL aggregated nothing");
        assert_eq!(setup.log.distinct_values(), (0..n).collect());
        a.shutdown().await?;
        b.shutdown().await?;

        // Every lease is checkpointed at the last record of its shard and released.
        let table = LeaseTable::new(bed.dynamodb().clone(), &setup.application);
        let leases = table.list_leases().await?;
        assert_eq!(leases.len(), 4);
        for lease in &leases {
            assert_eq!(lease.lease_owner, None, "released on shutdown: {lease:?}");
            let last = deliveries
                .iter()
                .filter(|d| d.shard == lease.lease_key)
                .map(|d| d.position.clone())
                .max()
                .expect("every shard got records");
            assert_eq!(lease.checkpoint, last, "checkpoint of {}", lease.lease_key);
        }
        Ok(())
    })
    .await
}

async fn restart_resumes_right_after_a_sub_sequence_checkpoint(mode: Mode) -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = mode.bed().await?;
        let stream = bed.create_stream(1).await?;
        let n = 300;
        produce(&bed, &stream, 0..n, 7).await?;
        let setup = Setup {
            bed: &bed,
            mode,
            application: bed.unique_table_name(),
            streams: vec![stream.clone()],
            position: InitialPosition::TrimHorizon,
            log: Arc::new(Log::default()),
        };
        // The first worker checkpoints once, at the 158th user record, and never again.
        let cut = 157;
        let first = setup.start(
            "first",
            Behaviour {
                checkpoint_once_at: Some(cut),
                ..Behaviour::default()
            },
        )?;
        wait_for(Duration::from_secs(60), "all records, first run", || {
            setup.log.distinct_values().len() as u64 == n
        })
        .await?;
        first.shutdown().await?;
        let first_run = setup.log.deliveries();
        let checkpointed = &first_run[cut];
        assert!(
            checkpointed.aggregated && checkpointed.position.sub_sequence_number > 0,
            "the checkpoint is inside an aggregate: {checkpointed:?}"
        );
        let table = LeaseTable::new(bed.dynamodb().clone(), &setup.application);
        let lease = table.list_leases().await?.pop().expect("one lease");
        assert_eq!(lease.checkpoint, checkpointed.position);

        // The second run starts exactly after it.
        let second_log = Arc::new(Log::default());
        let setup2 = Setup {
            log: Arc::clone(&second_log),
            ..setup
        };
        let second = setup2.start("second", every_batch())?;
        let expected: Vec<u64> = first_run[cut + 1..].iter().map(|d| d.value).collect();
        wait_for(Duration::from_secs(60), "the rest, second run", || {
            second_log.deliveries().len() >= expected.len()
        })
        .await?;
        second.shutdown().await?;
        let got: Vec<u64> = second_log.deliveries().iter().map(|d| d.value).collect();
        assert_eq!(
            got, expected,
            "resumed exactly after the checkpoint, nothing twice"
        );
        assert_eq!(
            second_log.deliveries()[0].position.position,
            checkpointed.position.position
        );
        Ok(())
    })
    .await
}

/// Shard ids of the stream, open ones only when `open`.
async fn shard_ids(
    bed: &TestBed,
    stream: &str,
    open: bool,
) -> Result<Vec<aws_sdk_kinesis::types::Shard>, BoxError> {
    let mut request = bed.kinesis().list_shards().stream_name(stream);
    if open {
        request = request.shard_filter(ShardFilter::builder().r#type("AT_LATEST".into()).build()?);
    }
    let shards = request.send().await?.shards.unwrap_or_default();
    Ok(shards
        .into_iter()
        .filter(|s| {
            !open
                || s.sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_none()
        })
        .collect())
}

async fn split_and_merge_children_start_after_their_parents_end(mode: Mode) -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = mode.bed().await?;
        let stream = bed.create_stream(2).await?;
        let setup = Setup {
            bed: &bed,
            mode,
            application: bed.unique_table_name(),
            streams: vec![stream.clone()],
            position: InitialPosition::TrimHorizon,
            log: Arc::new(Log::default()),
        };
        let a = setup.start("worker-a", every_batch())?;
        let b = setup.start("worker-b", every_batch())?;
        let per_phase = bed.scaled(3000) as u64;
        produce(&bed, &stream, 0..per_phase, 50).await?;

        // Split shard 0 in the middle of its range.
        let shards = shard_ids(&bed, &stream, true).await?;
        let first = shards.iter().find(|s| s.shard_id().ends_with('0')).expect("shard 0");
        let range = first.hash_key_range().expect("range");
        let (lo, hi): (u128, u128) = (range.starting_hash_key().parse()?, range.ending_hash_key().parse()?);
        bed.kinesis()
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(first.shard_id())
            .new_starting_hash_key((lo + (hi - lo) / 2 + 1).to_string())
            .send()
            .await?;
        bed.wait_for_stream_active(&stream).await?;
        produce(&bed, &stream, per_phase..2 * per_phase, 50).await?;

        // Merge the upper child of the split with its neighbour (shard 1).
        let open = shard_ids(&bed, &stream, true).await?;
        let mut by_start: Vec<_> = open
            .iter()
            .map(|s| (s.hash_key_range().unwrap().starting_hash_key().parse::<u128>().unwrap(), s.shard_id().to_owned()))
            .collect();
        by_start.sort();
        assert_eq!(by_start.len(), 3, "two children and shard 1: {by_start:?}");
        bed.kinesis()
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge(&by_start[1].1)
            .adjacent_shard_to_merge(&by_start[2].1)
            .send()
            .await?;
        bed.wait_for_stream_active(&stream).await?;
        produce(&bed, &stream, 2 * per_phase..3 * per_phase, 50).await?;

        let n = 3 * per_phase;
        wait_for(Duration::from_secs(120), "every record across the lineage", || {
            setup.log.distinct_values().len() as u64 == n
        })
        .await?;
        let deliveries = setup.log.deliveries();
        let duplicates = check_key_order(&deliveries)?;

        // No child delivered anything before each of its parents reported shard_ended.
        let all = shard_ids(&bed, &stream, false).await?;
        let events = setup.log.events();
        let ended: HashMap<String, Instant> = events
            .iter()
            .filter(|(_, _, e)| e == "shard_ended")
            .map(|(t, s, _)| (s.clone(), *t))
            .collect();
        let mut first_delivery: BTreeMap<String, Instant> = BTreeMap::new();
        for d in &deliveries {
            first_delivery.entry(d.shard.clone()).or_insert(d.at);
        }
        let mut children_checked = 0;
        for shard in &all {
            let parents: Vec<&str> = shard.parent_shard_id().into_iter().chain(shard.adjacent_parent_shard_id()).collect();
            let Some(child_first) = first_delivery.get(shard.shard_id()) else {
                continue;
            };
            for p in &parents {
                let parent_end = ended.get(*p).ok_or_else(|| format!("parent {p} never ended"))?;
                assert!(parent_end <= child_first, "{} started before its parent {p} ended", shard.shard_id());
            }
            if !parents.is_empty() {
                children_checked += 1;
            }
        }
        assert_eq!(children_checked, 3, "two split children and one merge child delivered records");
        eprintln!(
            "REPORT reshard: {n} records through a split and a merge with 2 workers: all delivered, \
             per-key order kept, {duplicates} re-deliveries"
        );
        a.shutdown().await?;
        b.shutdown().await?;
        Ok(())
    })
    .await
}

async fn latest_and_at_timestamp_start_where_asked(mode: Mode) -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = mode.bed().await?;
        let stream = bed.create_stream(2).await?;
        produce(&bed, &stream, 0..100, 10).await?;
        // A boundary strictly after every record of the first batch arrived.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let boundary = SystemTime::now();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        produce(&bed, &stream, 100..200, 10).await?;

        // AT_TIMESTAMP: exactly the second batch.
        let at = Setup {
            bed: &bed,
            mode,
            application: bed.unique_table_name(),
            streams: vec![stream.clone()],
            position: InitialPosition::AtTimestamp(boundary),
            log: Arc::new(Log::default()),
        };
        let worker = at.start("at", every_batch())?;
        wait_for(Duration::from_secs(60), "the second batch", || {
            at.log.distinct_values().len() >= 100
        })
        .await?;
        worker.shutdown().await?;
        assert_eq!(at.log.distinct_values(), (100..200).collect());

        // LATEST: nothing of what is there, exactly what comes after the readers started.
        let latest = Setup {
            bed: &bed,
            mode,
            application: bed.unique_table_name(),
            streams: vec![stream.clone()],
            position: InitialPosition::Latest,
            log: Arc::new(Log::default()),
        };
        let worker = latest.start("latest", every_batch())?;
        wait_for(Duration::from_secs(30), "both shards processing", || {
            let states = worker.handle.shard_states();
            states.len() == 2 && states.values().all(|s| *s == ShardState::Processing)
        })
        .await?;
        produce(&bed, &stream, 200..300, 10).await?;
        wait_for(Duration::from_secs(60), "the new records", || {
            latest.log.distinct_values().len() >= 100
        })
        .await?;
        worker.shutdown().await?;
        assert_eq!(latest.log.distinct_values(), (200..300).collect());
        Ok(())
    })
    .await
}

async fn one_worker_consumes_several_streams(mode: Mode) -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = mode.bed().await?;
        let s1 = bed.create_stream(2).await?;
        let s2 = bed.create_stream(1).await?;
        produce(&bed, &s1, 0..500, 20).await?;
        produce(&bed, &s2, 500..800, 20).await?;
        let setup = Setup {
            bed: &bed,
            mode,
            application: bed.unique_table_name(),
            streams: vec![s1.clone(), s2.clone()],
            position: InitialPosition::TrimHorizon,
            log: Arc::new(Log::default()),
        };
        let worker = setup.start("multi", every_batch())?;
        wait_for(Duration::from_secs(60), "both streams", || {
            setup.log.distinct_values().len() == 800
        })
        .await?;
        worker.shutdown().await?;
        let table = LeaseTable::new(bed.dynamodb().clone(), &setup.application);
        let keys: Vec<String> = table
            .list_leases()
            .await?
            .into_iter()
            .map(|l| l.lease_key)
            .collect();
        assert_eq!(keys.len(), 3);
        for key in &keys {
            let parts: Vec<&str> = key.split(':').collect();
            assert_eq!(parts.len(), 4, "multi-stream lease key {key}");
            assert!(
                parts[0].bytes().all(|b| b.is_ascii_digit()),
                "account in {key}"
            );
            assert!(parts[1] == s1 || parts[1] == s2, "stream in {key}");
            assert!(parts[3].starts_with("shardId-"), "shard in {key}");
        }
        Ok(())
    })
    .await
}

async fn failing_processors_retry_in_place_and_panicking_ones_restart_from_their_checkpoint(
    mode: Mode,
) -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = mode.bed().await?;
        let stream = bed.create_stream(4).await?;
        let n = 2000;
        produce(&bed, &stream, 0..n, 40).await?;
        let setup = Setup {
            bed: &bed,
            mode,
            application: bed.unique_table_name(),
            streams: vec![stream.clone()],
            position: InitialPosition::TrimHorizon,
            log: Arc::new(Log::default()),
        };
        let behaviour = Behaviour {
            fail_once: vec!["shardId-000000000000".into()],
            panic_once: vec!["shardId-000000000001".into()],
            ..every_batch()
        };
        let worker = setup.start("w", behaviour)?;
        wait_for(Duration::from_secs(60), "every record", || {
            setup.log.distinct_values().len() as u64 == n
        })
        .await?;
        let events = setup.log.events();
        // A failed call is retried in place by the same processor (the default failure
        // policy); a panic restarts the shard from its checkpoint with a new one.
        for (shard, what, processors) in [
            ("shardId-000000000000", "fail", 1),
            ("shardId-000000000001", "panic", 2),
        ] {
            let inits = events
                .iter()
                .filter(|(_, s, e)| s == shard && e.starts_with("initialize"))
                .count();
            assert!(
                events.iter().any(|(_, s, e)| s == shard && e == what),
                "{what} on {shard}"
            );
            assert_eq!(inits, processors, "processors made for {shard} ({what})");
        }
        for shard in ["shardId-000000000002", "shardId-000000000003"] {
            let inits = events
                .iter()
                .filter(|(_, s, e)| s == shard && e.starts_with("initialize"))
                .count();
            assert_eq!(inits, 1, "{shard} was not disturbed");
        }
        check_key_order(&setup.log.deliveries())?;
        assert!(!worker.handle.is_finished());
        worker.shutdown().await?;
        Ok(())
    })
    .await
}

async fn a_processor_that_never_checkpoints_shard_end_is_surfaced_and_children_wait(
    mode: Mode,
) -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = mode.bed().await?;
        let stream = bed.create_stream(1).await?;
        produce(&bed, &stream, 0..50, 5).await?;
        let setup = Setup {
            bed: &bed,
            mode,
            application: bed.unique_table_name(),
            streams: vec![stream.clone()],
            position: InitialPosition::TrimHorizon,
            log: Arc::new(Log::default()),
        };
        let worker = setup.start(
            "w",
            Behaviour {
                skip_shard_end_checkpoint: true,
                ..every_batch()
            },
        )?;
        wait_for(Duration::from_secs(30), "the first records", || {
            setup.log.distinct_values().len() == 50
        })
        .await?;
        let parent = "shardId-000000000000";
        bed.kinesis()
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(parent)
            .new_starting_hash_key((u128::MAX / 2).to_string())
            .send()
            .await?;
        bed.wait_for_stream_active(&stream).await?;
        produce(&bed, &stream, 50..100, 5).await?;
        wait_for(
            Duration::from_secs(30),
            "the stuck shard end to be surfaced",
            || {
                matches!(
                    worker.handle.shard_states().get(parent),
                    Some(ShardState::ShardEndNotCheckpointed { attempts }) if *attempts >= 2
                )
            },
        )
        .await?;
        // The children never started: nothing after the split was delivered.
        assert_eq!(setup.log.distinct_values(), (0..50).collect());
        let table = LeaseTable::new(bed.dynamodb().clone(), &setup.application);
        let parent_lease = table.get_lease(parent).await?.expect("parent lease");
        assert!(!parent_lease.is_shard_end());
        worker.shutdown().await?;
        Ok(())
    })
    .await
}

both_modes!(two_workers_deliver_every_record_in_key_order);
both_modes!(restart_resumes_right_after_a_sub_sequence_checkpoint);
both_modes!(split_and_merge_children_start_after_their_parents_end);
both_modes!(latest_and_at_timestamp_start_where_asked);
both_modes!(one_worker_consumes_several_streams);
both_modes!(failing_processors_retry_in_place_and_panicking_ones_restart_from_their_checkpoint);
both_modes!(a_processor_that_never_checkpoints_shard_end_is_surfaced_and_children_wait);

/// Used to stop at start-up: the first lease table item that did not parse as a lease failed
/// every listing, so the worker took nothing, synced no shard and cleaned nothing up.
async fn items_that_are_not_leases_are_skipped_and_left_untouched(mode: Mode) -> TestResult {
    use aws_sdk_dynamodb::types::AttributeValue;
    bounded(TEST_TIMEOUT, async {
        let bed = mode.bed().await?;
        let stream = bed.create_stream(2).await?;
        let application = bed.unique_table_name();
        let table = LeaseTable::new(bed.dynamodb().clone(), &application);
        table
            .ensure_table(&kinesis_kcl::lease::TableOptions::default())
            .await?;
        let s = |v: &str| AttributeValue::S(v.to_owned());
        // What Java KCL 3.5 keeps beside leases, an operator's note, a corrupt lease.
        let foreign: Vec<HashMap<String, AttributeValue>> = [
            vec![("leaseKey", s("Leader")), ("entityType", s("LEADER"))],
            vec![
                ("leaseKey", s("WORKER_METRIC_STATS#w1")),
                ("entityType", s("WORKER_METRIC_STATS")),
            ],
            vec![("leaseKey", s("README")), ("note", s("hands off"))],
            vec![
                ("leaseKey", s("shardId-000000000077")),
                ("leaseCounter", s("NaN")),
            ],
        ]
        .into_iter()
        .map(|item| item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        .collect();
        for item in &foreign {
            bed.dynamodb()
                .put_item()
                .table_name(&application)
                .set_item(Some(item.clone()))
                .send()
                .await?;
        }
        let n = 2_000;
        produce(&bed, &stream, 0..n, 100).await?;
        let setup = Setup {
            bed: &bed,
            mode,
            application: application.clone(),
            streams: vec![stream.clone()],
            position: InitialPosition::TrimHorizon,
            log: Arc::new(Log::default()),
        };
        let worker = setup.start("worker-a", every_batch())?;
        wait_for(Duration::from_secs(60), "every record", || {
            setup.log.distinct_values().len() as u64 == n
        })
        .await?;
        // Past a lease clean-up round (every second here) and a few shard syncs.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        worker.shutdown().await?;
        assert_eq!(table.list_leases().await?.len(), 2, "one lease per shard");
        for item in &foreign {
            let stored = bed
                .dynamodb()
                .get_item()
                .table_name(&application)
                .key("leaseKey", item["leaseKey"].clone())
                .consistent_read(true)
                .send()
                .await?
                .item;
            assert_eq!(stored.as_ref(), Some(item), "a non-lease item was changed");
        }
        Ok(())
    })
    .await
}
both_modes!(items_that_are_not_leases_are_skipped_and_left_untouched);

/// Makes one shard look trimmed (past its retention period): `GetShardIterator` for it is
/// asked for a shard that does not exist (so the server answers `ResourceNotFoundException`),
/// and `ListShards` no longer lists it; its children still name it as their parent.
#[derive(Debug)]
struct Trimmed(String);

impl aws_sdk_kinesis::config::Intercept for Trimmed {
    fn name(&self) -> &'static str {
        "Trimmed"
    }

    fn modify_before_serialization(
        &self,
        context: &mut aws_sdk_kinesis::config::interceptors::BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &aws_sdk_kinesis::config::RuntimeComponents,
        _cfg: &mut aws_sdk_kinesis::config::ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorInput;
        if let Some(input) = context.input_mut().downcast_mut::<GetShardIteratorInput>()
            && input.shard_id.as_deref() == Some(self.0.as_str())
        {
            input.shard_id = Some("shardId-000000099999".to_owned());
        }
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut aws_sdk_kinesis::config::interceptors::FinalizerInterceptorContextMut<'_>,
        _runtime_components: &aws_sdk_kinesis::config::RuntimeComponents,
        _cfg: &mut aws_sdk_kinesis::config::ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
        if let Some(Ok(output)) = context.output_or_error_mut()
            && let Some(listing) = output.downcast_mut::<ListShardsOutput>()
            && let Some(shards) = listing.shards.as_mut()
        {
            shards.retain(|s| s.shard_id != self.0);
        }
        Ok(())
    }
}

/// Used to stall the lineage for ever: `ResourceNotFoundException` for a trimmed parent was
/// fatal, so its consumer restarted every few seconds, the parent never reached `SHARD_END`,
/// its children never started and its lease was never cleaned up. Polling only: the fan-out
/// reader's handling of the same answer is covered by its classification tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_trimmed_parent_ends_its_children_start_and_its_lease_is_removed() -> TestResult {
    use kinesis_kcl::lease::{HashKeyRange, Lease};
    bounded(TEST_TIMEOUT, async {
        let bed = Mode::Polling.bed().await?;
        let stream = bed.create_stream(1).await?;
        let parent = "shardId-000000000000".to_owned();
        let n = 1_000u64;
        produce(&bed, &stream, 0..n, 50).await?;
        let shards = shard_ids(&bed, &stream, true).await?;
        let range = shards[0].hash_key_range().expect("range");
        let (lo, hi): (u128, u128) = (
            range.starting_hash_key().parse()?,
            range.ending_hash_key().parse()?,
        );
        bed.kinesis()
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(&parent)
            .new_starting_hash_key((lo + (hi - lo) / 2 + 1).to_string())
            .send()
            .await?;
        bed.wait_for_stream_active(&stream).await?;
        produce(&bed, &stream, n..2 * n, 50).await?;
        let children = shard_ids(&bed, &stream, true).await?;

        // The table as an earlier run left it: the parent's lease mid-shard, the children's
        // leases waiting for it.
        let application = bed.unique_table_name();
        let table = LeaseTable::new(bed.dynamodb().clone(), &application);
        table
            .ensure_table(&kinesis_kcl::lease::TableOptions::default())
            .await?;
        table
            .create_lease_if_absent(&Lease::new(&parent, ExtendedSequenceNumber::TRIM_HORIZON))
            .await?;
        for child in &children {
            let r = child.hash_key_range().expect("range");
            let mut lease = Lease::new(child.shard_id(), ExtendedSequenceNumber::TRIM_HORIZON);
            lease.parent_shard_ids = BTreeSet::from([parent.clone()]);
            lease.hash_key_range = Some(HashKeyRange::new(
                r.starting_hash_key().parse()?,
                r.ending_hash_key().parse()?,
            )?);
            table.create_lease_if_absent(&lease).await?;
        }

        let setup = Setup {
            bed: &bed,
            mode: Mode::Polling,
            application: application.clone(),
            streams: vec![stream.clone()],
            position: InitialPosition::TrimHorizon,
            log: Arc::new(Log::default()),
        };
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            bed.kinesis_config()
                .interceptor(Trimmed(parent.clone()))
                .build(),
        );
        let worker = setup.start_with("worker-a", every_batch(), kinesis)?;
        // The children's records (the parent's are "trimmed": never delivered).
        wait_for(Duration::from_secs(60), "the children's records", || {
            setup.log.distinct_values() == (n..2 * n).collect()
        })
        .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while table.get_lease(&parent).await?.is_some() {
            assert!(
                Instant::now() < deadline,
                "the trimmed parent's lease was never removed"
            );
            tokio::time::sleep(SAMPLE).await;
        }
        worker.shutdown().await?;
        let left: BTreeSet<String> = table
            .list_leases()
            .await?
            .into_iter()
            .map(|l| l.lease_key)
            .collect();
        let expected: BTreeSet<String> = children.iter().map(|c| c.shard_id().to_owned()).collect();
        assert_eq!(left, expected, "the children's leases remain");
        Ok(())
    })
    .await
}
