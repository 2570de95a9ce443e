//! Parallel lanes inside a shard (`parallelization_factor`) on real servers: per-key order
//! with keys processed concurrently, a killed worker whose successor re-delivers only records
//! after the low watermark, and a split and a merge whose children start only after every
//! lane of their parents finished and `SHARD_END` was written.

#[path = "support/quick_worker.rs"]
mod quick_worker;
#[path = "support/timing.rs"]
mod timing;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Shard, ShardFilter, ShardFilterType};
use kinesis_integration::TestBed;
use kinesis_kcl::lease::{ExtendedSequenceNumber, LeaseTable};
use kinesis_kcl::{
    Checkpointer, InitializationInput, PollingConfig, ProcessRecordsInput, ProcessorError,
    Retrieval, ShardContext, ShardRecordProcessor, Worker,
};
use quick_worker::quick;
use timing::{BoxError, TestResult, bounded, wait_for};

const TEST_TIMEOUT: Duration = Duration::from_secs(150);
const KEYS: usize = 100;

/// Puts records `range` (data: the number; partition key `key-{n % KEYS}`), in order.
async fn put(bed: &TestBed, stream: &str, range: std::ops::Range<usize>) -> Result<(), BoxError> {
    for chunk in range.collect::<Vec<_>>().chunks(500) {
        let entries = chunk
            .iter()
            .map(|n| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{}", n % KEYS))
                    .data(Blob::new(n.to_string()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = bed
            .kinesis()
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await?;
        assert_eq!(
            out.failed_record_count(),
            Some(0),
            "the bed throttled a put"
        );
    }
    Ok(())
}

fn number(data: &[u8]) -> usize {
    std::str::from_utf8(data)
        .expect("utf-8")
        .parse()
        .expect("a number")
}

/// One record processed: by which run, shard and lane, at which step of the whole test.
#[derive(Clone, Debug)]
struct Processed {
    run: &'static str,
    shard: String,
    lane: usize,
    number: usize,
    position: ExtendedSequenceNumber,
    step: u64,
}

/// What every processor of a test saw.
#[derive(Default)]
struct Journal {
    processed: Mutex<Vec<Processed>>,
    /// A global clock: one tick per record processed and per event.
    clock: AtomicU64,
    /// Per run, the checkpoint each lane started from.
    started_from: Mutex<Vec<(&'static str, String, usize, ExtendedSequenceNumber)>>,
    /// Lanes inside `process_records` now, and the most at once.
    busy: AtomicUsize,
    most_busy: AtomicUsize,
    /// `(shard, lane, step)` of each `shard_ended`.
    ended: Mutex<Vec<(String, usize, u64)>>,
    /// `(run, shard, lane)` of each `shutdown_requested`.
    shutdowns: Mutex<Vec<(&'static str, String, usize)>>,
    /// Child lanes that found a parent lease not at `SHARD_END` when they started.
    early_children: Mutex<Vec<String>>,
}

impl Journal {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn processed(&self) -> Vec<Processed> {
        self.processed.lock().unwrap().clone()
    }
}

/// Sleeps as its [`Load`] says per record, then records it;
/// checkpoints after every call.
struct Sleeper {
    run: &'static str,
    shard: String,
    lane: usize,
    journal: Arc<Journal>,
    load: Load,
    calls: u64,
    /// Parents' lease keys, and the table to look them up in when the lane starts.
    parents: Vec<String>,
    table: Option<LeaseTable>,
}

/// How long processing takes.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// 1 to 5 ms per record, by key.
    ByKey,
    /// As `ByKey`, and every fourth call of lane 0 (from the third) first waits 300 ms (a
    /// slow downstream call): lane 0 falls behind the others for a while.
    Lane0Stalls,
}

impl Load {
    fn per_record(self, number: usize) -> Duration {
        Duration::from_millis(1 + (number % KEYS % 5) as u64)
    }

    /// How long call `call` (from 1) of lane `lane` waits before processing its records.
    fn stall(self, lane: usize, call: u64) -> Duration {
        if self == Load::Lane0Stalls && lane == 0 && call % 4 == 3 {
            Duration::from_millis(300)
        } else {
            Duration::ZERO
        }
    }
}

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Sleeper {
    async fn initialize(&mut self, input: InitializationInput) {
        self.journal.started_from.lock().unwrap().push((
            self.run,
            self.shard.clone(),
            self.lane,
            input.checkpoint,
        ));
        if let Some(table) = &self.table {
            for parent in &self.parents {
                let lease = table.get_lease(parent).await.expect("parent lease read");
                if lease.is_some_and(|l| !l.is_shard_end()) {
                    self.journal
                        .early_children
                        .lock()
                        .unwrap()
                        .push(format!("{} lane {} before {parent}", self.shard, self.lane));
                }
            }
        }
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let busy = self.journal.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.journal.most_busy.fetch_max(busy, Ordering::SeqCst);
        self.calls += 1;
        tokio::time::sleep(self.load.stall(self.lane, self.calls)).await;
        for record in &input.records {
            let n = number(record.data());
            tokio::time::sleep(self.load.per_record(n)).await;
            let step = self.journal.tick();
            self.journal.processed.lock().unwrap().push(Processed {
                run: self.run,
                shard: self.shard.clone(),
                lane: self.lane,
                number: n,
                position: record.extended_sequence_number(),
                step,
            });
        }
        self.journal.busy.fetch_sub(1, Ordering::SeqCst);
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.journal
            .shutdowns
            .lock()
            .unwrap()
            .push((self.run, self.shard.clone(), self.lane));
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        // Lanes end at different times: a child started at the first lane's end would show.
        tokio::time::sleep(Duration::from_millis(150 * self.lane as u64)).await;
        let step = self.journal.tick();
        self.journal
            .ended
            .lock()
            .unwrap()
            .push((self.shard.clone(), self.lane, step));
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// One worker's part in a test: its name (and worker id), lanes per shard and load.
#[derive(Clone, Copy)]
struct Run {
    name: &'static str,
    lanes: usize,
    load: Load,
}

/// A worker for `run` whose processors write to `journal`; `lineage` gives each child
/// shard's parents (its lanes then check them when starting).
fn worker(
    bed: &TestBed,
    application: &str,
    stream: &str,
    Run {
        name: run,
        lanes,
        load,
    }: Run,
    journal: &Arc<Journal>,
    lineage: HashMap<String, Vec<String>>,
) -> Result<Worker, BoxError> {
    let journal = Arc::clone(journal);
    let table = LeaseTable::new(bed.dynamodb().clone(), application);
    Ok(quick(
        Worker::builder(
            application,
            bed.kinesis().clone(),
            bed.dynamodb().clone(),
            move |shard: &ShardContext| {
                let parents = lineage.get(&shard.shard_id).cloned().unwrap_or_default();
                Sleeper {
                    run,
                    shard: shard.shard_id.clone(),
                    lane: shard.lane,
                    journal: Arc::clone(&journal),
                    load,
                    calls: 0,
                    table: (!parents.is_empty()).then(|| table.clone()),
                    parents,
                }
            },
        )
        .stream(stream)
        .worker_id(run)
        .parallelization_factor(lanes),
    )?
    // Batches of 200: each lane gets a few records per batch and checkpoints often.
    .retrieval(Retrieval::Polling(
        PollingConfig::builder()
            .max_records(200)
            .idle_time_between_reads(Duration::from_millis(50))
            .build()?,
    ))
    .build()?)
}

/// A bed with a fresh stream holding records `0..records` (see [`put`]), an application and
/// a journal for its workers.
struct Scene {
    bed: TestBed,
    stream: String,
    application: String,
    journal: Arc<Journal>,
}

impl Scene {
    async fn new(shards: u32, records: usize) -> Result<Self, BoxError> {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(shards).await?;
        put(&bed, &stream, 0..records).await?;
        Ok(Scene {
            application: bed.unique_table_name(),
            bed,
            stream,
            journal: Arc::new(Journal::default()),
        })
    }

    /// A worker for `run` on the scene's stream and application.
    fn worker(&self, run: Run) -> Result<Worker, BoxError> {
        worker(
            &self.bed,
            &self.application,
            &self.stream,
            run,
            &self.journal,
            HashMap::new(),
        )
    }
}

/// Each key's numbers must come in increasing order, in the order processed.
fn assert_key_order(processed: &[Processed]) {
    let mut by_step = processed.to_vec();
    by_step.sort_by_key(|p| p.step);
    let mut last: HashMap<usize, usize> = HashMap::new();
    for p in &by_step {
        let key = p.number % KEYS;
        if let Some(before) = last.insert(key, p.number) {
            assert!(
                before < p.number,
                "key {key}: {} processed after {before} (lane {}, {})",
                p.number,
                p.lane,
                p.run
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_lanes_keep_each_key_in_order_and_run_keys_concurrently() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let records = 2_000;
        let scene = Scene::new(1, records).await?;
        let Scene {
            bed,
            application,
            journal,
            ..
        } = &scene;
        let worker = scene.worker(Run {
            name: "only",
            lanes: 8,
            load: Load::ByKey,
        })?;
        let handle = worker.handle();
        let running = tokio::spawn(worker.run());
        wait_for(Duration::from_secs(60), "every record", || {
            journal.processed.lock().unwrap().len() >= records
        })
        .await?;
        let processed = journal.processed();
        let mut numbers: Vec<usize> = processed.iter().map(|p| p.number).collect();
        numbers.sort_unstable();
        assert_eq!(
            numbers,
            (0..records).collect::<Vec<_>>(),
            "each record once"
        );
        assert_key_order(&processed);
        // Every key stayed in one lane at a time: its records' lanes change only between
        // records, never interleave (implied by the order above); the lanes all worked.
        let lanes: HashSet<usize> = processed.iter().map(|p| p.lane).collect();
        assert_eq!(lanes.len(), 8, "every lane processed records: {lanes:?}");
        let most = journal.most_busy.load(Ordering::SeqCst);
        assert!(most >= 4, "at most {most} lanes were busy at once");
        // The checkpoint reaches the last record once every lane is done.
        let last = processed
            .iter()
            .map(|p| p.position.clone())
            .max()
            .ok_or("nothing processed")?;
        let table = LeaseTable::new(bed.dynamodb().clone(), application.as_str());
        wait_for_checkpoint(&table, &last).await?;
        handle.shutdown().await;
        running.await??;
        eprintln!("REPORT lanes: {records} records, 8 lanes, at most {most} busy at once");
        Ok(())
    })
    .await
}

/// Waits until the only lease's checkpoint is `at`.
async fn wait_for_checkpoint(table: &LeaseTable, at: &ExtendedSequenceNumber) -> TestResult {
    for _ in 0..500 {
        let leases = table.list_leases().await?;
        if leases.iter().any(|l| l.checkpoint == *at) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("the checkpoint never reached {at}").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_s_successor_redelivers_only_records_after_the_low_watermark() -> TestResult
{
    bounded(TEST_TIMEOUT, async {
        let records = 3_000;
        let scene = Scene::new(1, records).await?;
        let Scene {
            bed,
            application,
            journal,
            ..
        } = &scene;

        // The first worker is killed (its task aborted: no shutdown, no last checkpoint)
        // while its lanes are at different places of the shard.
        let first = scene.worker(Run {
            name: "first",
            lanes: 8,
            load: Load::Lane0Stalls,
        })?;
        let killed = tokio::spawn(first.run());
        lanes_far_apart(journal).await?;
        killed.abort();
        let _ = killed.await;
        let by_first = journal.processed();

        // Its successor takes the lease once it expires.
        let second = scene.worker(Run {
            name: "second",
            lanes: 8,
            load: Load::Lane0Stalls,
        })?;
        let handle = second.handle();
        let running = tokio::spawn(second.run());
        successor_done(bed, application, journal, records).await?;
        handle.shutdown().await;
        running.await??;

        let (below, again) = resumed_after_the_watermark(journal, &by_first, records)?;
        assert!(below > 0, "the killed worker checkpointed nothing");
        assert!(
            again > 0,
            "the kill came when every lane was done: nothing to re-deliver"
        );
        eprintln!(
            "REPORT lanes kill: {} records processed before the kill, {below} of them under the \
             checkpoint; {again} processed again after it",
            by_first.len()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shutdown_mid_run_tells_every_lane_and_its_successor_resumes_at_the_watermark()
-> TestResult {
    bounded(TEST_TIMEOUT, async {
        let records = 3_000;
        let scene = Scene::new(1, records).await?;
        let Scene {
            bed,
            application,
            journal,
            ..
        } = &scene;
        let first = Run {
            name: "first",
            lanes: 8,
            load: Load::Lane0Stalls,
        };
        let worker1 = scene.worker(first)?;
        let handle = worker1.handle();
        let running = tokio::spawn(worker1.run());
        lanes_far_apart(journal).await?;
        handle.shutdown().await;
        running.await??;
        let by_first = journal.processed();
        let shutdowns = journal.shutdowns.lock().unwrap().clone();
        let mut lanes: Vec<usize> = shutdowns.iter().map(|(.., lane)| *lane).collect();
        lanes.sort_unstable();
        assert_eq!(
            lanes,
            (0..8).collect::<Vec<_>>(),
            "every lane heard the shutdown once"
        );

        let second = Run {
            name: "second",
            ..first
        };
        let worker2 = scene.worker(second)?;
        let handle = worker2.handle();
        let running = tokio::spawn(worker2.run());
        successor_done(bed, application, journal, records).await?;
        handle.shutdown().await;
        running.await??;
        // Lanes stop after their call in flight, not after their queued batches: records
        // after the first one not processed come again, the others do not.
        let (below, again) = resumed_after_the_watermark(journal, &by_first, records)?;
        assert!(below > 0, "nothing was checkpointed at the shutdown");
        eprintln!(
            "REPORT lanes shutdown: {} records processed before the shutdown, {below} of them \
             under the checkpoint; {again} processed again after it",
            by_first.len()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_handed_to_a_joining_worker_move_with_all_their_lanes() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let records = 4_000;
        let scene = Scene::new(4, records).await?;
        let journal = &scene.journal;
        let run = |name| Run {
            name,
            lanes: 4,
            load: Load::Lane0Stalls,
        };
        let first = scene.worker(run("first"))?;
        let first_handle = first.handle();
        let first_running = tokio::spawn(first.run());
        wait_for(
            Duration::from_secs(60),
            "the first worker on every shard",
            || {
                let processed = journal.processed.lock().unwrap();
                processed
                    .iter()
                    .map(|p| &p.shard)
                    .collect::<HashSet<_>>()
                    .len()
                    == 4
            },
        )
        .await?;
        // A second worker joins: the balance asks the first for half of its leases, which it
        // hands over (every lane of the shard hears `shutdown_requested` and checkpoints).
        let second = scene.worker(run("second"))?;
        let second_handle = second.handle();
        let second_running = tokio::spawn(second.run());
        wait_for(Duration::from_secs(60), "every record", || {
            let processed = journal.processed.lock().unwrap();
            processed
                .iter()
                .map(|p| p.number)
                .collect::<HashSet<_>>()
                .len()
                == records
        })
        .await?;
        let moved: HashSet<String> = journal
            .started_from
            .lock()
            .unwrap()
            .iter()
            .filter(|(run, ..)| *run == "second")
            .map(|(_, shard, ..)| shard.clone())
            .collect();
        first_handle.shutdown().await;
        second_handle.shutdown().await;
        first_running.await??;
        second_running.await??;
        assert!(!moved.is_empty(), "no lease moved to the joining worker");

        let processed = journal.processed();
        let shutdowns = journal.shutdowns.lock().unwrap().clone();
        let started = journal.started_from.lock().unwrap().clone();
        for shard in &moved {
            // Each lane of the shard on the first worker heard the hand-off.
            let told = shutdowns
                .iter()
                .filter(|(run, s, _)| *run == "first" && s == shard)
                .count();
            assert_eq!(
                told, 4,
                "{shard}: {told} lanes of the first worker heard the hand-off"
            );
            // The second resumed all lanes at one checkpoint, below which the first had
            // processed every record of the shard, and processed only records after it.
            let from: HashSet<&ExtendedSequenceNumber> = started
                .iter()
                .filter(|(run, s, ..)| *run == "second" && s == shard)
                .map(|(.., from)| from)
                .collect();
            assert_eq!(from.len(), 1, "{shard}: lanes resumed from {from:?}");
            let from = *from.iter().next().ok_or("no start")?;
            let of_shard: Vec<&Processed> =
                processed.iter().filter(|p| &p.shard == shard).collect();
            for p in &of_shard {
                if p.run == "second" {
                    assert!(
                        p.position > *from,
                        "{shard}: {} re-delivered at or before {from}",
                        p.number
                    );
                }
            }
            let by_first: HashSet<usize> = of_shard
                .iter()
                .filter(|p| p.run == "first")
                .map(|p| p.number)
                .collect();
            let below_unprocessed: Vec<usize> = of_shard
                .iter()
                .filter(|p| {
                    p.run == "second" && p.position <= *from && !by_first.contains(&p.number)
                })
                .map(|p| p.number)
                .collect();
            assert!(
                below_unprocessed.is_empty(),
                "{shard}: {below_unprocessed:?}"
            );
        }
        for run in ["first", "second"] {
            let of_run: Vec<Processed> =
                processed.iter().filter(|p| p.run == run).cloned().collect();
            assert_key_order(&of_run);
        }
        eprintln!(
            "REPORT lanes hand-off: {} of 4 shards moved with their lanes, {} records processed \
             for {records}",
            moved.len(),
            processed.len()
        );
        Ok(())
    })
    .await
}

/// Checks the successor ("second") of the run that processed `by_first`: its lanes all
/// resumed from one checkpoint, below which the first run had processed every record; it
/// processed each record after it once and none before it; nothing is lost; each run kept
/// every key in order. Returns how many of the first run's records are below the checkpoint
/// and how many the successor processed again.
fn resumed_after_the_watermark(
    journal: &Journal,
    by_first: &[Processed],
    records: usize,
) -> Result<(usize, usize), BoxError> {
    let processed = journal.processed();
    let resumed_from = journal
        .started_from
        .lock()
        .unwrap()
        .iter()
        .filter(|(run, ..)| *run == "second")
        .map(|(.., from)| from.clone())
        .collect::<HashSet<_>>();
    assert_eq!(
        resumed_from.len(),
        1,
        "every lane resumes from one checkpoint: {resumed_from:?}"
    );
    let watermark = resumed_from
        .into_iter()
        .next()
        .ok_or("the second worker never started")?;
    let mut after_kill: Vec<&Processed> = processed.iter().filter(|p| p.run == "second").collect();
    after_kill.sort_by_key(|p| p.position.clone());
    // Nothing at or before the checkpoint comes again, everything after it does, once.
    let redelivered_early: Vec<usize> = after_kill
        .iter()
        .filter(|p| p.position <= watermark)
        .map(|p| p.number)
        .collect();
    assert!(
        redelivered_early.is_empty(),
        "re-delivered at or before {watermark}: {redelivered_early:?}"
    );
    let first_done: HashSet<usize> = by_first.iter().map(|p| p.number).collect();
    let mut second_numbers: Vec<usize> = after_kill.iter().map(|p| p.number).collect();
    second_numbers.sort_unstable();
    second_numbers.dedup();
    assert_eq!(
        second_numbers.len(),
        after_kill.len(),
        "the successor processed a record twice"
    );
    // The low watermark: every record at or before the checkpoint had been processed by
    // the killed worker (the checkpoint never passed a lane's unfinished record).
    let mut lost = Vec::new();
    let mut below = 0;
    for p in by_first {
        if p.position <= watermark {
            below += 1;
        }
    }
    for n in 0..records {
        if !first_done.contains(&n) && !second_numbers.contains(&n) {
            lost.push(n);
        }
    }
    assert!(
        lost.is_empty(),
        "{} records lost, from {:?}",
        lost.len(),
        lost.first()
    );
    let again = by_first
        .iter()
        .filter(|p| second_numbers.binary_search(&p.number).is_ok())
        .count();
    assert_key_order(by_first);
    assert_key_order(&after_kill.into_iter().cloned().collect::<Vec<_>>());
    Ok((below, again))
}

/// Waits until the successor ("second") processed the shard's last record and checkpointed
/// it (then every lane is done).
async fn successor_done(
    bed: &TestBed,
    application: &str,
    journal: &Journal,
    records: usize,
) -> TestResult {
    let table = LeaseTable::new(bed.dynamodb().clone(), application);
    let last_record = records - 1;
    wait_for(
        Duration::from_secs(60),
        "the successor at the last record",
        || {
            journal
                .processed
                .lock()
                .unwrap()
                .iter()
                .any(|p| p.run == "second" && p.number == last_record)
        },
    )
    .await?;
    let last = journal
        .processed()
        .into_iter()
        .find(|p| p.number == last_record && p.run == "second")
        .ok_or("the last record")?
        .position;
    wait_for_checkpoint(&table, &last).await?;
    Ok(())
}

/// Lanes far apart: 50 records not yet processed below the highest one processed, the window
/// in which a checkpoint at any lane's own progress would pass records not done.
async fn lanes_far_apart(journal: &Journal) -> TestResult {
    wait_for(Duration::from_secs(60), "lanes far apart", || {
        let processed = journal.processed.lock().unwrap();
        let highest = processed.iter().map(|p| p.number).max().unwrap_or(0);
        processed.len() >= 300 && highest + 1 - processed.len() >= 50
    })
    .await
}

/// The stream's shards (open ones only when `open`).
async fn shards(bed: &TestBed, stream: &str, open: bool) -> Result<Vec<Shard>, BoxError> {
    let mut request = bed.kinesis().list_shards().stream_name(stream);
    if open {
        request = request.shard_filter(
            ShardFilter::builder()
                .r#type(ShardFilterType::AtLatest)
                .build()?,
        );
    }
    let listed = request.send().await?.shards.unwrap_or_default();
    Ok(listed
        .into_iter()
        .filter(|s| {
            !open
                || s.sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_none()
        })
        .collect())
}

fn start_key(shard: &Shard) -> u128 {
    shard
        .hash_key_range()
        .and_then(|r| r.starting_hash_key().parse().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn children_start_after_every_lane_of_their_parents_finished() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(1).await?;
        let phase = 600;
        put(&bed, &stream, 0..phase).await?;
        let parent = shards(&bed, &stream, true).await?.remove(0);
        let range = parent.hash_key_range().ok_or("no range")?;
        let (lo, hi): (u128, u128) = (
            range.starting_hash_key().parse()?,
            range.ending_hash_key().parse()?,
        );
        bed.kinesis()
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(parent.shard_id())
            .new_starting_hash_key((lo + (hi - lo) / 2 + 1).to_string())
            .send()
            .await?;
        bed.wait_for_stream_active(&stream).await?;
        put(&bed, &stream, phase..2 * phase).await?;
        let mut children = shards(&bed, &stream, true).await?;
        children.sort_by_key(start_key);
        bed.kinesis()
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge(children[0].shard_id())
            .adjacent_shard_to_merge(children[1].shard_id())
            .send()
            .await?;
        bed.wait_for_stream_active(&stream).await?;
        put(&bed, &stream, 2 * phase..3 * phase).await?;
        let all = shards(&bed, &stream, false).await?;
        assert_eq!(all.len(), 4, "a parent, two children, their merge");
        let lineage: HashMap<String, Vec<String>> = all
            .iter()
            .map(|s| {
                let parents = s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect();
                (s.shard_id().to_owned(), parents)
            })
            .collect();

        let application = bed.unique_table_name();
        let journal = Arc::new(Journal::default());
        let lanes = 4;
        let worker = worker(
            &bed,
            &application,
            &stream,
            Run {
                name: "only",
                lanes,
                load: Load::ByKey,
            },
            &journal,
            lineage.clone(),
        )?;
        let handle = worker.handle();
        let running = tokio::spawn(worker.run());
        let records = 3 * phase;
        wait_for(
            Duration::from_secs(90),
            "every record across the lineage",
            || journal.processed.lock().unwrap().len() >= records,
        )
        .await?;
        handle.shutdown().await;
        running.await??;

        let processed = journal.processed();
        let mut numbers: Vec<usize> = processed.iter().map(|p| p.number).collect();
        numbers.sort_unstable();
        assert_eq!(
            numbers,
            (0..records).collect::<Vec<_>>(),
            "each record once"
        );
        assert_key_order(&processed);
        let mut steps: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for p in &processed {
            let e = steps.entry(p.shard.as_str()).or_insert((u64::MAX, 0));
            e.0 = e.0.min(p.step);
            e.1 = e.1.max(p.step);
        }
        let ended = journal.ended.lock().unwrap().clone();
        for (child, parents) in &lineage {
            let Some(&(child_first, _)) = steps.get(child.as_str()) else {
                return Err(format!("{child} processed nothing").into());
            };
            for parent in parents {
                let (_, parent_last) = steps[parent.as_str()];
                assert!(
                    parent_last < child_first,
                    "{child} started before {parent}'s last record"
                );
                let parent_ends: Vec<u64> = ended
                    .iter()
                    .filter(|(shard, ..)| shard == parent)
                    .map(|(.., step)| *step)
                    .collect();
                assert_eq!(
                    parent_ends.len(),
                    lanes,
                    "every lane of {parent} heard shard_ended once"
                );
                assert!(
                    parent_ends.iter().all(|&end| end < child_first),
                    "{child} started before every lane of {parent} ended"
                );
            }
        }
        let early = journal.early_children.lock().unwrap().clone();
        assert!(
            early.is_empty(),
            "children started before SHARD_END: {early:?}"
        );
        Ok(())
    })
    .await
}
