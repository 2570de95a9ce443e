//! Reliability scenario 3: DynamoDB faults during lease renewals, takes and checkpoints.
//!
//! Three workers consume a 4-shard stream while records keep arriving; each worker reaches
//! DynamoDB through its own seeded [`ServiceFaults`] layer on the lease operations
//! (`UpdateItem` — renew, take, checkpoint, release —, `Scan`, `GetItem`, `PutItem`,
//! `DeleteItem`): throttling (`ThrottlingException` / `ProvisionedThroughputExceededException`),
//! HTTP 500 (`InternalServerError`), dropped connections, timeouts after the write was applied
//! (the answer lost), and latency. Midway a fourth worker joins (balancing steals leases) and
//! one of the first three shuts down gracefully (hand-off). Then the faults stop and the
//! workers drain the stream. Every layer keeps a log of every DynamoDB attempt of its worker
//! ([`ServiceFaults::log_calls`]): start, request body, whether the server applied it, what
//! the caller got, end.
//!
//! # Checked
//!
//! ## No two processors of one shard ever run at the same time: overlap exactly zero
//!
//! Every processor records the start and end ([`Instant`]s) of each of its calls:
//! `initialize`, every `process_records` (one batch, which it checkpoints), and its last call
//! (`lease_lost`, `shutdown_requested` or `shard_ended`). Its **ownership interval** runs from
//! the start of `initialize` to the end of the last of its calls to return; a call that never
//! returned keeps it open to the end of the test. For each shard, the ownership intervals of
//! any two processors must be disjoint — of two workers above all, and of one worker too (a
//! consumer restarted after a failure) — not "overlapping by less than the failover".
//!
//! The interval is deliberately not cut at the loss. A processor call in flight when the lease
//! is lost, handed off or shut down may finish (as in the Java KCL, which calls `leaseLost`
//! only once `processRecords` returned), so a batch may end after the loss; the library
//! guarantees that it ends before the next owner begins, which is what is asserted:
//! - **hand-off or shutdown**: the old owner's `shutdown_requested` returns before the
//!   release, the release lands before the new owner's take, the take before its
//!   `initialize`;
//! - **expiry**: the old owner marks the lease lost once 0.9 × failover passed since it sent
//!   its last successful write, and a checkpoint in flight fails right then (its write is
//!   bounded by that deadline, or it finds the lease lost); another worker takes the lease
//!   only after seeing its counter stand still for a whole failover, counted from a scan that
//!   completed after that write landed. So the old owner's in-flight batch has 0.1 × failover
//!   (200 ms here) to end before the take, and the new owner's `initialize` comes after the
//!   take.
//!
//! A batch ending after the loss is thus allowed exactly when it ends before the other
//! worker's processor starts (its take has landed by then); nothing else is tolerated. The
//! report gives the closest succession of two workers' processors on a shard, by how the
//! first one ended. (An outright counter-fenced steal from a live owner — what the taker does
//! to a victim it believes ignores hand-offs — gives no such guarantee: the victim's batch in
//! flight may still be running when the thief starts. Should one happen here, this check
//! fails on it, rightly: these workers all hand off.)
//!
//! ## Every lost lease has a real cause
//!
//! A **loss** is a processor's `lease_lost`, or a checkpoint refused with
//! [`LeaseLost`](kinesis_kcl::Error::LeaseLost) (a processor whose checkpoint is refused may
//! end without `lease_lost`: its call returned the error before the consumer saw the loss).
//! Its time `T` is the earliest of the two: the library marked the lease lost no later. A
//! loss of lease `L` by worker `W` whose processor started at `S` has a cause if either:
//! - **taken by another worker**: another worker's take of `L` (from that worker's log: an
//!   `UpdateItem` on `L` that sets `leaseOwner` without being fenced on `leaseKey`, i.e. not a
//!   release nor a hand-off request) landed — the server answered it 200, whether or not the
//!   answer then reached the taker — and was sent between the sending of `W`'s own take that
//!   began the tenure and `T` (both takes are fenced on the counter, so the other one landed
//!   after `W`'s); or a sample of the table (read through a client without faults) that
//!   started after `S` and ended by `T` shows `L` actually owned by another worker (a hand-off
//!   request is not a take: while it runs `leaseOwner` names the incoming worker,
//!   `checkpointOwner` the one still holding; and no owner is not another owner: `W` itself
//!   releases a lease it lost when it shuts down);
//! - **expired**: `W` heard of no success on `L` for 0.9 × failover. The library counts a
//!   lease held until 0.9 × failover after the *sending* of its last successful write (a
//!   retried write counts from its first attempt: the SDK's and the library's retries resend
//!   the same request body). From `W`'s log: take the last of `W`'s writes on `L` answered 200
//!   to `W` by `T`, or the take that began the tenure if later, and the earliest attempt with
//!   that same body, at `a`; the loss is an expiry only if `T ≥ a + 0.9 × failover − 100 ms`
//!   (the 100 ms cover the time from the library reading its clock to the attempt reaching
//!   the layer). This is necessary for a genuine expiry, so it never raises a false alarm;
//!   writes whose lost answer the library recovered are not counted as successes, which only
//!   makes the bound more lenient.
//!
//! A loss with neither cause is spurious — the lease was still ours in the table with our own
//! counter, and nobody took it — and fails the test. As a check of the log itself, every
//! processor's tenure must begin with a landed take of its lease by its worker.
//!
//! ## Kept
//!
//! - no zombie checkpoint lands: a checkpoint acknowledged to a processor is never ahead of
//!   the checkpoint a later processor of the shard starts from (it would have had to land
//!   after the lease moved), and the final checkpoints are at least the highest acknowledged
//!   and never past what was delivered;
//! - no checkpoint moves backwards in the lease table (sampled all along);
//! - every record is processed at least once.

#[path = "../../kcl/tests/support/quick_worker.rs"]
mod quick_worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_integration::TestBed;
use kinesis_integration::faults::service::ServiceCall;
use kinesis_integration::faults::{Service, ServiceCounts, ServiceFaults, ServicePlan};
use kinesis_kcl::lease::{ExtendedSequenceNumber, LeaseTable};
use kinesis_kcl::{
    Checkpointer, ProcessRecordsInput, ProcessorError, ShardRecordProcessor, Worker, WorkerHandle,
};
use kinesis_kcl::{InitializationInput, ShardContext};
use kinesis_kpl::{Producer, UserRecord};
use quick_worker::{FAILOVER, quick};
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

const SEED: u64 = 0x5EED_0004;
const SHARDS: u32 = 4;
/// How long a lease counts as held after its last successful write was sent (the library's
/// 90 % of the failover).
const HOLD: Duration = Duration::from_millis(FAILOVER.as_millis() as u64 * 9 / 10);
/// Timing slack of the cause checks (see the module docs).
const SLACK: Duration = Duration::from_millis(100);
/// How long the faults last (records are put all along).
const FAULT_PHASE: Duration = Duration::from_secs(16);
const TEST_TIMEOUT: Duration = Duration::from_secs(150);

/// One processor call: when it started and, once it returned, when it did.
#[derive(Clone, Copy, Debug)]
struct Call {
    started: Instant,
    ended: Option<Instant>,
}

impl Call {
    fn now() -> Self {
        Call {
            started: Instant::now(),
            ended: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Instance {
    worker: String,
    shard: String,
    init: ExtendedSequenceNumber,
    initialize: Call,
    /// Every batch processed.
    batches: Vec<Call>,
    /// When each checkpoint returned, and whether it was refused because the lease was lost.
    checkpoints: Vec<(Instant, bool)>,
    /// The last call: `lease_lost`, `shutdown_requested` or `shard_ended`.
    last: Option<(&'static str, Call)>,
}

impl Instance {
    fn calls(&self) -> impl Iterator<Item = &Call> {
        std::iter::once(&self.initialize)
            .chain(&self.batches)
            .chain(self.last.iter().map(|(_, call)| call))
    }

    /// The ownership interval: from the start of `initialize` to the end of the last call to
    /// return (`open_until` if one never returned).
    fn owned(&self, open_until: Instant) -> (Instant, Instant) {
        let end = self
            .calls()
            .map(|c| c.ended.unwrap_or(open_until))
            .max()
            .unwrap_or(self.initialize.started);
        (self.initialize.started, end)
    }

    fn ended(&self) -> Option<&'static str> {
        self.last.map(|(how, _)| how)
    }

    /// When the processor learnt that the lease was lost, and how.
    fn lost_at(&self) -> Option<(Instant, &'static str)> {
        let refused = self
            .checkpoints
            .iter()
            .find(|(_, lost)| *lost)
            .map(|(at, _)| (*at, "checkpoint refused (lease lost)"));
        let told = self
            .last
            .filter(|(how, _)| *how == "lease_lost")
            .map(|(_, call)| (call.started, "lease_lost"));
        [refused, told]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }
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

    fn with<T>(&self, f: impl FnOnce(&mut Instance) -> T) -> T {
        f(&mut self.log.instances.lock().unwrap()[self.instance()])
    }

    async fn checkpoint(
        &mut self,
        checkpointer: &mut Checkpointer,
        position: ExtendedSequenceNumber,
    ) -> Result<(), ProcessorError> {
        let result = checkpointer.checkpoint().await;
        let lost = matches!(result, Err(kinesis_kcl::Error::LeaseLost { .. }));
        self.with(|i| i.checkpoints.push((Instant::now(), lost)));
        match result {
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

    /// The last call begins.
    fn ending(&self, how: &'static str) {
        self.with(|i| i.last = Some((how, Call::now())));
    }

    /// The last call returns.
    fn ended(&self) {
        self.with(|i| {
            if let Some((_, call)) = &mut i.last {
                call.ended = Some(Instant::now());
            }
        });
    }
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Processor {
    async fn initialize(&mut self, input: InitializationInput) {
        let mut initialize = Call::now();
        let mut instances = self.log.instances.lock().unwrap();
        self.instance = Some(instances.len());
        initialize.ended = Some(Instant::now());
        instances.push(Instance {
            worker: self.worker.clone(),
            shard: self.shard.clone(),
            init: input.checkpoint,
            initialize,
            batches: Vec::new(),
            checkpoints: Vec::new(),
            last: None,
        });
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let batch = self.with(|i| {
            i.batches.push(Call::now());
            i.batches.len() - 1
        });
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
        self.with(|i| i.batches[batch].ended = Some(Instant::now()));
        result
    }

    async fn lease_lost(&mut self) {
        self.ending("lease_lost");
        self.ended();
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        self.ending("shard_ended");
        let result = self
            .checkpoint(checkpointer, ExtendedSequenceNumber::SHARD_END)
            .await;
        self.ended();
        result
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.ending("shutdown_requested");
        let result = match checkpointer.last_delivered().cloned() {
            Some(last) => self.checkpoint(checkpointer, last).await,
            None => Ok(()),
        };
        self.ended();
        result
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
    faults.log_calls(true);
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(faults.dynamodb_config(bed).build());
    let log = Arc::clone(log);
    let worker = id.clone();
    let factory = move |shard: &ShardContext| Processor {
        instance: None,
        worker: worker.clone(),
        shard: shard.lease_key.clone(),
        log: Arc::clone(&log),
    };
    let worker = quick(
        Worker::builder(application, bed.kinesis().clone(), dynamodb, factory)
            .stream(stream)
            .worker_id(&id),
    )?
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
    // Every worker's fault layer (and call log), by worker id.
    let mut layers: BTreeMap<String, ServiceFaults> = workers
        .iter()
        .map(|w| (w.id.clone(), w.faults.clone()))
        .collect();

    // The lease table, sampled all along through a client without faults.
    let sampler_stop = Arc::new(tokio::sync::Notify::new());
    let sampler = {
        let table = table.clone();
        let stop = Arc::clone(&sampler_stop);
        tokio::spawn(async move {
            let mut last: BTreeMap<String, ExtendedSequenceNumber> = BTreeMap::new();
            let mut regressions = Vec::new();
            let mut samples = Vec::new();
            loop {
                let read_from = Instant::now();
                if let Ok(leases) = table.list_leases().await {
                    samples.push(Sample {
                        started: read_from,
                        ended: Instant::now(),
                        owners: leases
                            .iter()
                            .map(|l| (l.lease_key.clone(), l.actual_owner().map(str::to_owned)))
                            .collect(),
                    });
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
        kinesis_kpl::ProducerConfig::builder()
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
                let joiner = start_worker(&bed, &application, &stream, &log, 4)?;
                layers.insert(joiner.id.clone(), joiner.faults.clone());
                workers.push(joiner);
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
    let calls: BTreeMap<String, Vec<ServiceCall>> = layers
        .iter()
        .map(|(id, faults)| (id.clone(), faults.calls()))
        .collect();

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

    // Double ownership: the ownership intervals of two processors of one shard never overlap,
    // not by a nanosecond (see the module docs).
    let now = Instant::now();
    let at = |t: Instant| t.saturating_duration_since(started);
    let mut overlaps = Vec::new();
    // The closest succession of two workers' processors on a shard, by how the first ended
    // ("-": it ended without a last call, its checkpoint refused): (gap, shard).
    let mut closest: BTreeMap<&str, (Duration, String)> = BTreeMap::new();
    for (shard, list) in &by_shard {
        for (k, &p) in list.iter().enumerate() {
            for &q in &list[..k] {
                let ((ps, pe), (qs, qe)) = (instances[p].owned(now), instances[q].owned(now));
                let (start, end) = (ps.max(qs), pe.min(qe));
                if end > start {
                    overlaps.push(format!(
                        "{shard}: {} ({:?}..{:?}, ended by {:?}) and {} ({:?}..{:?}, ended by \
                         {:?}) overlap for {:?}",
                        instances[q].worker,
                        at(qs),
                        at(qe),
                        instances[q].ended(),
                        instances[p].worker,
                        at(ps),
                        at(pe),
                        instances[p].ended(),
                        end - start
                    ));
                }
            }
        }
        let mut by_start = list.clone();
        by_start.sort_by_key(|&i| instances[i].initialize.started);
        for pair in by_start.windows(2) {
            let (p, q) = (&instances[pair[0]], &instances[pair[1]]);
            if p.worker == q.worker {
                continue;
            }
            let gap = q
                .initialize
                .started
                .saturating_duration_since(p.owned(now).1);
            let how = p.ended().unwrap_or("-");
            if closest.get(how).is_none_or(|(g, _)| gap < *g) {
                closest.insert(
                    how,
                    (gap, format!("{shard}: {} then {}", p.worker, q.worker)),
                );
            }
        }
    }

    // Every loss has a cause (see the module docs).
    let writes = |worker: &str, key: &str| -> Vec<&ServiceCall> {
        calls
            .get(worker)
            .into_iter()
            .flatten()
            .filter(|c| c.operation == "UpdateItem")
            .filter(|c| c.request.as_deref().and_then(lease_key_of) == Some(key))
            .collect()
    };
    let mut untaken_tenures = Vec::new();
    let mut spurious = Vec::new();
    let mut causes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut losses = Vec::new();
    for inst in &instances {
        let began = inst.initialize.started;
        let own = writes(&inst.worker, &inst.shard);
        // The take that began this tenure (it landed before `initialize`).
        let tenure_take = own
            .iter()
            .filter(|c| landed_take(c))
            .filter(|c| c.server_answered.is_some_and(|t| t <= began))
            .max_by_key(|c| c.started);
        if tenure_take.is_none() {
            untaken_tenures.push(format!(
                "{} on {} at {:?}",
                inst.worker,
                inst.shard,
                at(began)
            ));
        }
        let Some((lost_at, how)) = inst.lost_at() else {
            continue;
        };
        // Taken by another worker: a take of theirs that landed and was sent between the
        // start of this worker's own take and the loss (both takes are fenced on the counter,
        // so the other one landed after ours).
        let tenure_from = tenure_take.map_or(began, |c| c.started);
        let taken_by = calls.keys().filter(|w| **w != inst.worker).find_map(|w| {
            writes(w, &inst.shard)
                .into_iter()
                .filter(|c| landed_take(c))
                .find(|c| c.started >= tenure_from && c.started <= lost_at)
                .map(|c| (w.clone(), c.started))
        });
        // Or the table, read without faults during the tenure, showed another owner.
        let seen_owned_by = samples
            .iter()
            .filter(|s| s.started >= began && s.ended <= lost_at)
            .find_map(|s| {
                s.owners
                    .iter()
                    .find(|(k, o)| {
                        *k == inst.shard && o.as_deref().is_some_and(|o| o != inst.worker.as_str())
                    })
                    .map(|(_, o)| (o.clone(), s.ended))
            });
        // Expired: the first attempt of the last write that succeeded for this worker (or of
        // the take that began the tenure) came at least the hold time before the loss.
        let last_success = own
            .iter()
            .filter(|c| c.status == Some(200) && c.ended.is_some_and(|e| e <= lost_at))
            .max_by_key(|c| c.ended);
        let first_try = |c: &ServiceCall| {
            own.iter()
                .filter(|o| o.request == c.request)
                .map(|o| o.started)
                .min()
                .unwrap_or(c.started)
        };
        let held_from = [tenure_take, last_success]
            .into_iter()
            .flatten()
            .map(|c| first_try(c))
            .max();
        let unrenewed = held_from.map(|a| lost_at.saturating_duration_since(a));
        let expired = unrenewed.is_some_and(|d| d + SLACK >= HOLD);
        let cause = match (&taken_by, &seen_owned_by, expired) {
            (Some((w, t)), _, _) => format!(
                "taken by {w} (sent {:?} before)",
                lost_at.saturating_duration_since(*t)
            ),
            (None, Some((o, t)), _) => format!(
                "table showed owner {o:?} {:?} before",
                lost_at.saturating_duration_since(*t)
            ),
            (None, None, true) => "expired".to_owned(),
            (None, None, false) => String::new(),
        };
        let line = format!(
            "{} lost {} at {:?} ({how}); no success heard for {unrenewed:?} since the first \
             try of its last successful write; {}",
            inst.worker,
            inst.shard,
            at(lost_at),
            if cause.is_empty() { "NO CAUSE" } else { &cause }
        );
        if cause.is_empty() {
            // The evidence: this worker's writes on the lease in the hold time before.
            let recent: Vec<String> = own
                .iter()
                .filter(|c| c.started + HOLD + SLACK >= lost_at && c.started <= lost_at)
                .map(|c| {
                    format!(
                        "{:?}: {:?} {}→ server {:?}, caller {:?} at {:?}",
                        at(c.started),
                        c.fault,
                        if c.request.as_deref().is_some_and(is_take) {
                            "take "
                        } else {
                            ""
                        },
                        c.server_status,
                        c.status,
                        c.ended.map(at)
                    )
                })
                .collect();
            spurious.push(format!("{line}; its writes on the lease: {recent:#?}"));
        }
        *causes
            .entry(match (&taken_by, &seen_owned_by, expired) {
                (Some(_), _, _) | (None, Some(_), _) => "taken",
                (None, None, true) => "expired",
                (None, None, false) => "none",
            })
            .or_default() += 1;
        losses.push(line);
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
        .filter(|i| i.ended() == Some("lease_lost"))
        .count();
    let logged: usize = calls.values().map(Vec::len).sum();
    eprintln!(
        "REPORT scenario 3 (DynamoDB faults): {n} records, {SHARDS} shards, 4 workers (one \
         joined, one left gracefully); lost {lost}, duplicates {duplicates}; {} processors, \
         {lease_lost} lease_lost, {} losses by cause {causes:?}: {losses:#?}, without a cause: \
         {spurious:#?}; {} checkpoints \
         acknowledged, {} refused or failed ({refusals:?}); ownership overlaps {} (closest \
         succession of two workers' processors on a shard, by how the first ended: \
         {closest:?}; failover {FAILOVER:?}); zombie checkpoints {}; checkpoint regressions {} \
         ({} samples); final checkpoints checked {final_checks}; injected over {} DynamoDB \
         calls: throttled {}, 500 {}, dropped {}, timed out after applying {}, delayed {}; per \
         operation {by_operation:?}; {logged} attempts logged; fault phase \
         {elapsed_faults:?}, total {:?} (seed {SEED:#x})",
        instances.len(),
        losses.len(),
        acks.len(),
        refused.len(),
        overlaps.len(),
        zombies.len(),
        table_regressions.len(),
        samples.len(),
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
        untaken_tenures.is_empty(),
        "processors whose worker's log shows no landed take of their lease before they \
         started (is the call log parsed right?): {untaken_tenures:?}"
    );
    assert!(
        overlaps.is_empty(),
        "two processors of one shard ran at the same time: {overlaps:#?}"
    );
    assert!(
        spurious.is_empty(),
        "leases lost with neither a take by another worker nor an expiry: {spurious:#?}"
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

/// One read of the lease table (through a client without faults): when it started and ended,
/// and each lease's actual owner (during a hand-off, the worker handing it off: `leaseOwner`
/// already names the incoming one).
struct Sample {
    started: Instant,
    ended: Instant,
    owners: Vec<(String, Option<String>)>,
}

/// The lease key of an `UpdateItem` request body (`"Key":{"leaseKey":{"S":"…"}}`).
fn lease_key_of(body: &[u8]) -> Option<&str> {
    const KEY: &str = r#""leaseKey":{"S":""#;
    let text = std::str::from_utf8(body).ok()?;
    let rest = &text[text.find(KEY)? + KEY.len()..];
    Some(&rest[..rest.find('"')?])
}

/// Whether an attempt is a take the server applied (whether or not its answer was then lost).
fn landed_take(call: &ServiceCall) -> bool {
    call.request.as_deref().is_some_and(is_take) && call.server_status == Some(200)
}

/// Whether an `UpdateItem` request body is a take: it names `leaseOwner` (which it sets)
/// but is not conditioned on `leaseKey` (a release and a hand-off request are). Renewals and
/// checkpoints never name `leaseOwner`.
fn is_take(body: &[u8]) -> bool {
    std::str::from_utf8(body)
        .is_ok_and(|text| text.contains(r#":"leaseOwner""#) && !text.contains(r#":"leaseKey""#))
}
