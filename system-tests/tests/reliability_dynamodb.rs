//! Reliability scenario 3: DynamoDB faults during lease renewals, takes and checkpoints.
//!
//! Three workers consume a 4-shard stream while records keep arriving; each worker reaches
//! DynamoDB through its own seeded [`ServiceFaults`] layer on the lease operations
//! (`UpdateItem` — renew, take, checkpoint, release —, `Scan`, `GetItem`, `PutItem`,
//! `DeleteItem`): throttling (`ThrottlingException` / `ProvisionedThroughputExceededException`),
//! HTTP 500 (`InternalServerError`), dropped connections, timeouts after the write was applied
//! (the answer lost), and latency. Midway a fourth worker joins (balancing steals leases) and
//! one of the first three shuts down gracefully (hand-off). Then the faults stop and the
//! workers drain the stream.
//!
//! Checked:
//! - no two workers process one shard at the same time for longer than the failover window:
//!   every processor records the interval of every batch it processes; for each shard the
//!   overlap between processors of different workers is measured;
//! - no zombie checkpoint lands: a checkpoint acknowledged to a processor is never ahead of the
//!   checkpoint a later processor of the shard starts from (it would have had to land after the
//!   lease moved), and the final checkpoints are at least the highest acknowledged and never
//!   past what was delivered;
//! - no checkpoint moves backwards in the lease table (sampled all along);
//! - every record is processed at least once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_integration::TestBed;
use kinesis_integration::faults::{Service, ServiceCounts, ServiceFaults, ServicePlan};
use kinesis_kcl::lease::{ExtendedSequenceNumber, LeaseTable};
use kinesis_kcl::processor::{InitializationInput, ShardContext};
use kinesis_kcl::{
    Checkpointer, InitialPosition, LeaseConfig, PollingConfig, ProcessRecordsInput, ProcessorError,
    Retrieval, ShardRecordProcessor, Worker, WorkerHandle,
};
use kinesis_kpl::{Producer, UserRecord};
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const SEED: u64 = 0x5EED_0004;
const SHARDS: u32 = 4;
const FAILOVER: Duration = Duration::from_secs(2);
/// How long the faults last (records are put all along).
const FAULT_PHASE: Duration = Duration::from_secs(16);
const TEST_TIMEOUT: Duration = Duration::from_secs(150);

#[derive(Clone, Debug)]
struct Instance {
    worker: String,
    shard: String,
    init: ExtendedSequenceNumber,
    /// (start, end) of every batch processed.
    batches: Vec<(Instant, Instant)>,
    ended: Option<&'static str>,
}

#[derive(Default)]
struct Log {
    instances: Mutex<Vec<Instance>>,
    /// (instance, value, position)
    deliveries: Mutex<Vec<(usize, u64, ExtendedSequenceNumber)>>,
    /// (instance, acknowledged position)
    acks: Mutex<Vec<(usize, ExtendedSequenceNumber)>>,
    /// Checkpoints refused or failed: (instance, error)
    refused: Mutex<Vec<(usize, String)>>,
    distinct: Mutex<HashSet<u64>>,
}

struct Processor {
    instance: Option<usize>,
    worker: String,
    shard: String,
    log: Arc<Log>,
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
        match checkpointer.checkpoint().await {
            Ok(()) => {
                self.log
                    .acks
                    .lock()
                    .unwrap()
                    .push((self.instance(), position));
                Ok(())
            }
            Err(e) => {
                self.log
                    .refused
                    .lock()
                    .unwrap()
                    .push((self.instance(), e.to_string()));
                Err(e.into())
            }
        }
    }

    fn ended(&self, how: &'static str) {
        self.log.instances.lock().unwrap()[self.instance()].ended = Some(how);
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
            batches: Vec::new(),
            ended: None,
        });
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let started = Instant::now();
        let instance = self.instance();
        {
            let mut deliveries = self.log.deliveries.lock().unwrap();
            let mut distinct = self.log.distinct.lock().unwrap();
            for record in &input.records {
                let value: u64 = std::str::from_utf8(record.data())?.parse()?;
                distinct.insert(value);
                deliveries.push((instance, value, record.extended_sequence_number()));
            }
        }
        let result = match checkpointer.last_delivered().cloned() {
            Some(last) => self.checkpoint(checkpointer, last).await,
            None => Ok(()),
        };
        self.log.instances.lock().unwrap()[instance]
            .batches
            .push((started, Instant::now()));
        result
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
    faults: ServiceFaults,
    handle: WorkerHandle,
    task: JoinHandle<kinesis_kcl::Result<()>>,
}

fn start_worker(
    bed: &TestBed,
    application: &str,
    stream: &str,
    log: &Arc<Log>,
    index: u64,
) -> Result<Running, BoxError> {
    let id = format!("worker-{index}");
    let faults = ServiceFaults::new(
        Service::DynamoDb,
        ServicePlan {
            throttle: 0.10,
            server_error: 0.05,
            dropped_connection: 0.03,
            timeout: 0.03,
            timeout_after: Duration::from_millis(300),
            latency: 0.20,
            max_latency: Duration::from_millis(150),
            ..ServicePlan::seeded(SEED + index)
        }
        .operations(["UpdateItem", "Scan", "GetItem", "PutItem", "DeleteItem"]),
    );
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(faults.dynamodb_config(bed).build());
    let log = Arc::clone(log);
    let worker = id.clone();
    let factory = move |shard: &ShardContext| Processor {
        instance: None,
        worker: worker.clone(),
        shard: shard.lease_key.clone(),
        log: Arc::clone(&log),
    };
    let worker = Worker::builder(application, bed.kinesis().clone(), dynamodb, factory)
        .stream(stream)
        .worker_id(&id)
        .initial_position(InitialPosition::TrimHorizon)
        .lease_config(LeaseConfig::builder().failover_time(FAILOVER).build()?)
        .retrieval(Retrieval::Polling(
            PollingConfig::builder()
                .idle_time_between_reads(Duration::from_millis(50))
                .build()?,
        ))
        .shard_sync_interval(Duration::from_millis(500))
        .parent_shard_poll_interval(Duration::from_millis(100))
        .lease_cleanup_interval(Duration::from_secs(1))
        .build()?;
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());
    Ok(Running {
        id,
        faults,
        handle,
        task,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_faults_never_let_two_workers_process_a_shard_nor_a_zombie_checkpoint_land()
-> TestResult {
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
    let application = bed.unique_table_name();
    let log = Arc::new(Log::default());
    let table = LeaseTable::new(bed.dynamodb().clone(), &application);
    let n = bed.scaled(40_000) as u64;

    let mut workers = Vec::new();
    for i in 1..=3 {
        workers.push(start_worker(&bed, &application, &stream, &log, i)?);
    }

    // The lease table, sampled all along through a client without faults.
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

    // Records all through the fault phase, at an even pace.
    let producer = Producer::new(
        bed.kinesis().clone(),
        &stream,
        kinesis_kpl::Config::builder()
            .record_max_buffered_time(Duration::from_millis(50))
            .build()?,
    )
    .await?;
    let fault_start = tokio::time::Instant::now();
    let per_record = FAULT_PHASE / n as u32;
    let mut pending = Vec::new();
    let mut joined = false;
    let mut handed_off = false;
    let mut left: Option<ServiceFaults> = None;
    for v in 0..n {
        pending.push(producer.put_record(UserRecord::new(
            format!("key-{}", v % 200),
            Bytes::from(v.to_string()),
        )));
        if v % 500 == 499 {
            tokio::time::sleep_until(fault_start + per_record * (v as u32)).await;
            let at = fault_start.elapsed();
            if !joined && at >= FAULT_PHASE * 2 / 5 {
                // A fourth worker joins: balancing steals leases under faults.
                workers.push(start_worker(&bed, &application, &stream, &log, 4)?);
                joined = true;
            }
            if !handed_off && at >= FAULT_PHASE * 7 / 10 {
                // One worker leaves gracefully: hand-off under faults.
                let leaving = workers.remove(0);
                leaving.handle.shutdown().await;
                leaving.task.await??;
                left = Some(leaving.faults);
                handed_off = true;
            }
        }
    }
    for p in pending {
        p.await?;
    }
    producer.shutdown().await;
    let elapsed_faults = fault_start.elapsed();

    // The faults stop; the remaining workers drain the stream.
    let mut injected = ServiceCounts::default();
    let mut by_operation: BTreeMap<String, ServiceCounts> = BTreeMap::new();
    for faults in workers.iter().map(|w| &w.faults).chain(&left) {
        faults.set_enabled(false);
        let stats = faults.stats();
        for (op, c) in stats.by_operation {
            *by_operation.entry(op).or_default() += c;
        }
        injected += stats.total;
    }
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    while (log.distinct.lock().unwrap().len() as u64) < n {
        if Instant::now() > drain_deadline {
            return Err(format!(
                "only {} of {n} records processed 60 s after the faults stopped",
                log.distinct.lock().unwrap().len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut still_running = Vec::new();
    for w in workers {
        if !w.handle.is_finished() {
            still_running.push(w.id.clone());
        }
        w.handle.shutdown().await;
        w.task.await??;
    }
    sampler_stop.notify_one();
    let (samples, table_regressions) = sampler.await?;

    // --- The checks. ---
    let instances = log.instances.lock().unwrap().clone();
    let deliveries = log.deliveries.lock().unwrap().clone();
    let acks = log.acks.lock().unwrap().clone();
    let refused = log.refused.lock().unwrap().clone();

    let distinct: HashSet<u64> = deliveries.iter().map(|(_, v, _)| *v).collect();
    let lost = (0..n).filter(|v| !distinct.contains(v)).count();
    let duplicates = deliveries.len() - distinct.len();

    let mut max_ack: HashMap<usize, &ExtendedSequenceNumber> = HashMap::new();
    for (i, position) in &acks {
        let entry = max_ack.entry(*i).or_insert(position);
        if position > *entry {
            *entry = position;
        }
    }
    let mut by_shard: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, inst) in instances.iter().enumerate() {
        by_shard.entry(&inst.shard).or_default().push(i);
    }

    // Double ownership: the overlap of the processing spans of two processors of different
    // workers on one shard.
    let span = |i: usize| {
        let b = &instances[i].batches;
        Some((b.first()?.0, b.iter().map(|(_, end)| *end).max()?))
    };
    let mut longest_overlap = Duration::ZERO;
    let mut overlaps = Vec::new();
    for (shard, list) in &by_shard {
        for (k, &p) in list.iter().enumerate() {
            for &q in &list[..k] {
                if instances[p].worker == instances[q].worker {
                    continue;
                }
                let (Some((ps, pe)), Some((qs, qe))) = (span(p), span(q)) else {
                    continue;
                };
                let (start, end) = (ps.max(qs), pe.min(qe));
                if end > start {
                    let overlap = end - start;
                    longest_overlap = longest_overlap.max(overlap);
                    overlaps.push(format!(
                        "{shard}: {} and {} for {overlap:?}",
                        instances[q].worker, instances[p].worker
                    ));
                }
            }
        }
    }

    // Zombie checkpoints: an acknowledged checkpoint of an earlier processor is never ahead of
    // where a later one starts.
    let mut zombies = Vec::new();
    for (shard, list) in &by_shard {
        for (k, &p) in list.iter().enumerate() {
            for &q in &list[..k] {
                if let Some(acked) = max_ack.get(&q)
                    && **acked > instances[p].init
                {
                    zombies.push(format!(
                        "{shard}: {} acknowledged {acked} but {} started at {}",
                        instances[q].worker, instances[p].worker, instances[p].init
                    ));
                }
            }
        }
    }

    // Final checkpoints: at least the highest acknowledged, never past what was delivered.
    let leases = table.list_leases().await?;
    let mut final_checks = 0;
    for lease in &leases {
        let Some(list) = by_shard.get(lease.lease_key.as_str()) else {
            continue;
        };
        let highest_ack = list.iter().filter_map(|i| max_ack.get(i)).max();
        let highest_delivered = deliveries
            .iter()
            .filter(|(i, _, _)| list.contains(i))
            .map(|(_, _, p)| p)
            .max();
        if let Some(acked) = highest_ack {
            assert!(
                lease.checkpoint >= **acked,
                "{}: final checkpoint {} behind the acknowledged {acked}",
                lease.lease_key,
                lease.checkpoint
            );
        }
        if !lease.checkpoint.is_shard_end()
            && let Some(delivered) = highest_delivered
        {
            assert!(
                lease.checkpoint <= *delivered,
                "{}: final checkpoint {} past the last record delivered {delivered}",
                lease.lease_key,
                lease.checkpoint
            );
        }
        assert_eq!(lease.lease_owner, None, "released: {lease:?}");
        final_checks += 1;
    }

    let mut refusals: BTreeMap<String, usize> = BTreeMap::new();
    for (_, error) in &refused {
        let kind = if error.contains("no longer held") {
            "lease lost".to_owned()
        } else {
            error.clone()
        };
        *refusals.entry(kind).or_default() += 1;
    }
    let lease_lost = instances
        .iter()
        .filter(|i| i.ended == Some("lease_lost"))
        .count();
    eprintln!(
        "REPORT scenario 3 (DynamoDB faults): {n} records, {SHARDS} shards, 4 workers (one \
         joined, one left gracefully); lost {lost}, duplicates {duplicates}; {} processors, \
         {lease_lost} lease losses, {} checkpoints acknowledged, {} refused or failed ({refusals:?}); longest \
         double-ownership window {longest_overlap:?} (failover {FAILOVER:?}; {} overlaps); \
         zombie checkpoints {}; checkpoint regressions {} ({samples} samples); final \
         checkpoints checked {final_checks}; injected over {} DynamoDB calls: throttled {}, \
         500 {}, dropped {}, timed out after applying {}, delayed {}; per operation \
         {by_operation:?}; fault phase {elapsed_faults:?}, total {:?} (seed {SEED:#x})",
        instances.len(),
        acks.len(),
        refused.len(),
        overlaps.len(),
        zombies.len(),
        table_regressions.len(),
        injected.calls,
        injected.throttled,
        injected.server_errors,
        injected.dropped,
        injected.timed_out,
        injected.delayed,
        started.elapsed(),
    );
    assert_eq!(lost, 0, "records never processed");
    assert!(
        longest_overlap < FAILOVER,
        "two workers processed one shard for {longest_overlap:?}: {overlaps:?}"
    );
    assert!(zombies.is_empty(), "zombie checkpoints: {zombies:?}");
    assert!(
        table_regressions.is_empty(),
        "checkpoints moved backwards: {table_regressions:?}"
    );
    assert!(
        injected.throttled > 0
            && injected.server_errors > 0
            && injected.dropped > 0
            && injected.timed_out > 0
            && injected.delayed > 0,
        "every fault was drawn: {injected:?}"
    );
    assert!(
        by_operation
            .get("UpdateItem")
            .is_some_and(|c| c.failed() > 0),
        "renewals and checkpoints were faulted: {by_operation:?}"
    );
    assert!(
        still_running.len() == 3,
        "the three workers left were still running: {still_running:?}"
    );
    Ok(())
}
