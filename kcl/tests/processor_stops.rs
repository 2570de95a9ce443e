//! What a worker does with a processor call in flight when processing must stop: the lease
//! is lost, another worker asks for it, or the worker shuts down. The call may finish (it is
//! not dropped mid-batch); a processor that never returns holds things up for the stop timeout
//! at most, never for ever.

#[path = "support/timing.rs"]
mod timing;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use kinesis_integration::TestBed;
use kinesis_kcl::ShardContext;
use kinesis_kcl::lease::{LeaseTable, WriteOutcome};
use kinesis_kcl::{
    Checkpointer, InitialPosition, LeaseConfig, PollingConfig, ProcessRecordsInput, ProcessorError,
    Retrieval, ShardRecordProcessor, Worker, WorkerHandle,
};
use timing::{BoxError, TestResult, bounded, wait_for};
use tokio::task::JoinHandle;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// What a processor does in `process_records` and `shutdown_requested`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Script {
    /// Returns at once.
    #[default]
    Normal,
    /// The first call checkpoints until the checkpoint is refused (the lease is lost), does
    /// a little more work, and returns.
    FinishAfterLoss,
    /// The first call checkpoints until the checkpoint is refused and returns that error.
    FailOnLoss,
    /// The first call never returns.
    HangInProcess,
    /// `shutdown_requested` never returns.
    HangInShutdown,
}

/// Every processor event: (worker, lease key, event).
#[derive(Debug, Default)]
struct Log(Mutex<Vec<(String, String, String)>>);

impl Log {
    fn push(&self, worker: &str, lease: &str, event: &str) {
        self.0
            .lock()
            .unwrap()
            .push((worker.to_owned(), lease.to_owned(), event.to_owned()));
    }

    fn has(&self, worker: &str, lease: &str, event: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(w, l, e)| w == worker && l == lease && e == event)
    }

    /// The events of one worker's processors of one lease, in order.
    fn of(&self, worker: &str, lease: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, l, _)| w == worker && l == lease)
            .map(|(_, _, e)| e.clone())
            .collect()
    }
}

struct Scripted {
    worker: String,
    lease: String,
    script: Script,
    calls: usize,
    log: Arc<Log>,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Scripted {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.calls += 1;
        let first = self.calls == 1;
        self.log.push(&self.worker, &self.lease, "process_records");
        match self.script {
            Script::FinishAfterLoss if first && !input.records.is_empty() => {
                self.log.push(&self.worker, &self.lease, "in call");
                loop {
                    match checkpointer.checkpoint().await {
                        Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
                        Err(kinesis_kcl::Error::LeaseLost { .. }) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                self.log
                    .push(&self.worker, &self.lease, "checkpoint refused");
                // The rest of the batch's work, after the loss became visible.
                tokio::time::sleep(Duration::from_millis(300)).await;
                self.log.push(&self.worker, &self.lease, "returned");
                Ok(())
            }
            Script::FailOnLoss if first && !input.records.is_empty() => {
                self.log.push(&self.worker, &self.lease, "in call");
                loop {
                    if let Err(e) = checkpointer.checkpoint().await {
                        self.log.push(&self.worker, &self.lease, "returned error");
                        return Err(e.into());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Script::HangInProcess if first => {
                self.log.push(&self.worker, &self.lease, "hung");
                std::future::pending().await
            }
            _ => Ok(()),
        }
    }

    async fn lease_lost(&mut self) {
        self.log.push(&self.worker, &self.lease, "lease_lost");
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }

    async fn shutdown_requested(
        &mut self,
        _checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.log
            .push(&self.worker, &self.lease, "shutdown_requested");
        if self.script == Script::HangInShutdown {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

struct Fixture {
    bed: TestBed,
    stream: String,
    table: String,
    /// The stream's shard ids (= lease keys), in order.
    shards: Vec<String>,
    log: Arc<Log>,
}

impl Fixture {
    async fn new(shards: u32) -> Result<Self, BoxError> {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(shards).await?;
        let listed = bed
            .kinesis()
            .list_shards()
            .stream_name(&stream)
            .send()
            .await?;
        let shards: Vec<String> = listed
            .shards()
            .iter()
            .map(|s| s.shard_id().to_owned())
            .collect();
        for shard in &shards {
            let start = listed
                .shards()
                .iter()
                .find(|s| s.shard_id() == shard)
                .and_then(|s| s.hash_key_range())
                .map(|r| r.starting_hash_key().to_owned())
                .unwrap_or_default();
            for i in 0..5 {
                bed.kinesis()
                    .put_record()
                    .stream_name(&stream)
                    .partition_key(format!("k{i}"))
                    .explicit_hash_key(&start)
                    .data(Blob::new(format!("{shard}-{i}")))
                    .send()
                    .await?;
            }
        }
        let table = bed.unique_table_name();
        Ok(Fixture {
            bed,
            stream,
            table,
            shards,
            log: Arc::new(Log::default()),
        })
    }

    /// Starts a worker whose processors follow `scripts` (by lease key; others are normal).
    fn start(
        &self,
        worker_id: &str,
        scripts: BTreeMap<String, Script>,
        lease_config: LeaseConfig,
    ) -> Result<(WorkerHandle, JoinHandle<kinesis_kcl::Result<()>>), BoxError> {
        let log = Arc::clone(&self.log);
        let worker = worker_id.to_owned();
        let factory = move |shard: &ShardContext| Scripted {
            worker: worker.clone(),
            lease: shard.lease_key.clone(),
            script: scripts.get(&shard.lease_key).copied().unwrap_or_default(),
            calls: 0,
            log: Arc::clone(&log),
        };
        let worker = Worker::builder(
            &self.table,
            self.bed.kinesis().clone(),
            self.bed.dynamodb().clone(),
            factory,
        )
        .stream(&self.stream)
        .worker_id(worker_id)
        .initial_position(InitialPosition::TrimHorizon)
        .lease_config(lease_config)
        .retrieval(Retrieval::Polling(
            PollingConfig::builder()
                .idle_time_between_reads(Duration::from_millis(50))
                .build()?,
        ))
        .processor_stop_timeout(STOP_TIMEOUT)
        .shard_sync_interval(Duration::from_secs(1))
        .parent_shard_poll_interval(Duration::from_millis(100))
        .build()?;
        let handle = worker.handle();
        Ok((handle, tokio::spawn(worker.run())))
    }

    fn lease_table(&self) -> LeaseTable {
        LeaseTable::new(self.bed.dynamodb().clone(), &self.table)
    }
}

fn failover_2s() -> Result<LeaseConfig, BoxError> {
    Ok(LeaseConfig::builder()
        .failover_time(Duration::from_secs(2))
        .build()?)
}

/// The Java KCL lets `processRecords` finish and calls `leaseLost` after it; dropping the
/// call mid-batch would leave the application's work half done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_lease_lets_the_call_in_flight_finish_then_says_lease_lost() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let fx = Fixture::new(1).await?;
        let shard = fx.shards[0].clone();
        let scripts = BTreeMap::from([(shard.clone(), Script::FinishAfterLoss)]);
        let (handle, task) = fx.start("worker-a", scripts, failover_2s()?)?;
        wait_for(Duration::from_secs(30), "the first batch", || {
            fx.log.has("worker-a", &shard, "in call")
        })
        .await?;
        // Another worker takes the lease while the batch is being processed.
        let table = fx.lease_table();
        loop {
            let lease = table
                .list_leases()
                .await?
                .into_iter()
                .find(|l| l.lease_key == shard)
                .ok_or("no lease")?;
            if let WriteOutcome::Applied(_) = table.take(&lease, "intruder").await? {
                break;
            }
        }
        wait_for(Duration::from_secs(20), "lease_lost", || {
            fx.log.has("worker-a", &shard, "lease_lost")
        })
        .await?;
        let events = fx.log.of("worker-a", &shard);
        let lost_at = events.iter().position(|e| e == "lease_lost").unwrap();
        assert_eq!(
            &events[..=lost_at],
            [
                "process_records",
                "in call",
                "checkpoint refused",
                "returned",
                "lease_lost"
            ],
            "the call in flight must finish before lease_lost: {events:?}"
        );
        handle.shutdown().await;
        task.await??;
        Ok(())
    })
    .await
}

/// A processor hung in `process_records`, another hung in `shutdown_requested`: the worker
/// still shuts down, within the stop timeout, and releases both leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_processors_delay_a_shutdown_by_the_stop_timeout_only() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let fx = Fixture::new(2).await?;
        let (hung, stuck) = (fx.shards[0].clone(), fx.shards[1].clone());
        let scripts = BTreeMap::from([
            (hung.clone(), Script::HangInProcess),
            (stuck.clone(), Script::HangInShutdown),
        ]);
        let (handle, task) = fx.start("worker-a", scripts, failover_2s()?)?;
        wait_for(Duration::from_secs(30), "both shards processing", || {
            fx.log.has("worker-a", &hung, "hung")
                && fx.log.has("worker-a", &stuck, "process_records")
        })
        .await?;
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(20), handle.shutdown())
            .await
            .map_err(|_| "the worker did not shut down with hung processors")?;
        let took = started.elapsed();
        task.await??;
        assert!(
            took < STOP_TIMEOUT * 10,
            "shutdown took {took:?}, the stop timeout is {STOP_TIMEOUT:?}"
        );
        assert!(fx.log.has("worker-a", &stuck, "shutdown_requested"));
        assert!(
            !fx.log.has("worker-a", &hung, "shutdown_requested"),
            "an abandoned processor hears nothing more"
        );
        for lease in fx.lease_table().list_leases().await? {
            assert_eq!(
                lease.lease_owner, None,
                "lease {} not released at shutdown",
                lease.lease_key
            );
        }
        Ok(())
    })
    .await
}

/// A worker whose processors hang is asked for a lease (a steal): the lease moves after the
/// stop timeout, not after the (much longer) hand-off timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_processor_hands_its_lease_off_after_the_stop_timeout() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let fx = Fixture::new(2).await?;
        let scripts: BTreeMap<String, Script> = fx
            .shards
            .iter()
            .map(|s| (s.clone(), Script::HangInProcess))
            .collect();
        let handoff_timeout = Duration::from_secs(90);
        let config = LeaseConfig::builder()
            .failover_time(Duration::from_secs(2))
            .handoff_timeout(handoff_timeout)
            .build()?;
        let (handle_a, task_a) = fx.start("worker-a", scripts, config.clone())?;
        wait_for(
            Duration::from_secs(30),
            "worker-a hung on both shards",
            || fx.shards.iter().all(|s| fx.log.has("worker-a", s, "hung")),
        )
        .await?;
        let started = Instant::now();
        let (handle_b, task_b) = fx.start("worker-b", BTreeMap::new(), config)?;
        wait_for(
            Duration::from_secs(30),
            "worker-b processing a shard it stole",
            || {
                fx.shards
                    .iter()
                    .any(|s| fx.log.has("worker-b", s, "process_records"))
            },
        )
        .await?;
        let took = started.elapsed();
        assert!(
            took < handoff_timeout / 3,
            "the hand-off took {took:?}: it waited for the hand-off timeout"
        );
        for (handle, task) in [(handle_b, task_b), (handle_a, task_a)] {
            handle.shutdown().await;
            task.await??;
        }
        Ok(())
    })
    .await
}

/// Used to drop the processor without a word: a call that returned the refused checkpoint's
/// `LeaseLost` error ended the consumer as a failure, and `lease_lost` was never called.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_failing_on_the_loss_still_hears_lease_lost() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let fx = Fixture::new(1).await?;
        let shard = fx.shards[0].clone();
        let scripts = BTreeMap::from([(shard.clone(), Script::FailOnLoss)]);
        let (handle, task) = fx.start("worker-a", scripts, failover_2s()?)?;
        wait_for(Duration::from_secs(30), "the first batch", || {
            fx.log.has("worker-a", &shard, "in call")
        })
        .await?;
        let table = fx.lease_table();
        loop {
            let lease = table
                .list_leases()
                .await?
                .into_iter()
                .find(|l| l.lease_key == shard)
                .ok_or("no lease")?;
            if let WriteOutcome::Applied(_) = table.take(&lease, "intruder").await? {
                break;
            }
        }
        wait_for(Duration::from_secs(20), "lease_lost", || {
            fx.log.has("worker-a", &shard, "lease_lost")
        })
        .await?;
        let events = fx.log.of("worker-a", &shard);
        let lost_at = events.iter().position(|e| e == "lease_lost").unwrap();
        assert_eq!(
            &events[..=lost_at],
            ["process_records", "in call", "returned error", "lease_lost"],
            "{events:?}"
        );
        handle.shutdown().await;
        task.await??;
        Ok(())
    })
    .await
}
