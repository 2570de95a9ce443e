//! A worker paused longer than the failover time (a stopped process, a stop-the-world pause, a
//! host that froze) whose lease another worker took meanwhile: once it runs again it must not
//! deliver another record of that lease. The call that was running when it froze may finish
//! (stopping is not cancelling), but nothing after it.
//!
//! The pause is real: worker A runs on a single-threaded runtime of its own, and its processor
//! blocks that thread (`std::thread::sleep`) for twice the failover time, so none of A's tasks
//! (renewer, fetcher, consumer) runs meanwhile, as under SIGSTOP. Worker B, on the test's
//! runtime, takes the lease once it expired (whether it already has when A thaws depends on
//! timing; A's lease is past its local deadline either way, so A may not deliver).

#[path = "support/timing.rs"]
mod timing;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use kinesis_integration::TestBed;
use kinesis_kcl::{
    Checkpointer, InitialPosition, InitializationInput, LeaseConfig, PollingConfig,
    ProcessRecordsInput, ProcessorError, Retrieval, ShardContext, ShardRecordProcessor, Worker,
    WorkerBuilder,
};
use timing::{BoxError, TestResult, bounded, wait_for};

const FAILOVER: Duration = Duration::from_secs(2);
const FREEZE: Duration = Duration::from_secs(6);

/// What the processors did: (worker, event, when).
#[derive(Default)]
struct Log(Mutex<Vec<(&'static str, &'static str, Instant)>>);

impl Log {
    fn push(&self, worker: &'static str, event: &'static str) {
        self.0.lock().unwrap().push((worker, event, Instant::now()));
    }

    fn events(&self) -> Vec<(&'static str, &'static str, Instant)> {
        self.0.lock().unwrap().clone()
    }
}

struct Recorder {
    worker: &'static str,
    log: Arc<Log>,
    /// Worker A freezes its thread in the second batch of its first processor.
    freeze_on_batch: Option<usize>,
    batches: usize,
    froze: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Recorder {
    async fn initialize(&mut self, _input: InitializationInput) {
        self.log.push(self.worker, "initialize");
    }

    async fn process_records(
        &mut self,
        _input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.batches += 1;
        self.log.push(self.worker, "batch");
        checkpointer.checkpoint().await?;
        if self.freeze_on_batch == Some(self.batches) && !self.froze.swap(true, Ordering::SeqCst) {
            // Let the fetcher queue what arrives meanwhile, then freeze the whole runtime.
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.log.push(self.worker, "freeze");
            std::thread::sleep(FREEZE);
            self.log.push(self.worker, "thaw");
        }
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.log.push(self.worker, "lease_lost");
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

fn worker(
    bed: &TestBed,
    application: &str,
    stream: &str,
    name: &'static str,
    log: &Arc<Log>,
    freeze_on_batch: Option<usize>,
    lanes: usize,
) -> Result<WorkerBuilder, BoxError> {
    let log = log.clone();
    let froze = Arc::new(AtomicBool::new(false));
    Ok(Worker::builder(
        application,
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |_: &ShardContext| Recorder {
            worker: name,
            log: log.clone(),
            freeze_on_batch,
            batches: 0,
            froze: froze.clone(),
        },
    )
    .stream(stream)
    .worker_id(name)
    .parallelization_factor(lanes)
    .initial_position(InitialPosition::TrimHorizon)
    .lease_config(LeaseConfig::builder().failover_time(FAILOVER).build()?)
    .retrieval(Retrieval::Polling(
        PollingConfig::builder()
            .idle_time_between_reads(Duration::from_millis(50))
            .build()?,
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_delivers_nothing_more_of_it() -> TestResult {
    // Boxed: with the newest dependency versions (CI's packaged build), the layout of the
    // test's future nested inline overflows the compiler's query depth limit.
    Box::pin(frozen_worker_delivers_nothing_more(1)).await
}

/// With lanes, the lane that froze the runtime has batches queued when it thaws (its keys
/// stayed with it while its call ran): it must not take them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_delivers_nothing_more_in_any_lane() -> TestResult {
    Box::pin(frozen_worker_delivers_nothing_more(4)).await
}

async fn frozen_worker_delivers_nothing_more(lanes: usize) -> TestResult {
    bounded(Duration::from_secs(90), async {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(1).await?;
        let application = bed.unique_table_name();
        let log = Arc::new(Log::default());

        // Records keep arriving all along.
        let putting = {
            let kinesis = bed.kinesis().clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                for n in 0u64.. {
                    let _ = kinesis
                        .put_record()
                        .stream_name(&stream)
                        .partition_key(format!("k{}", n % 7))
                        .data(Blob::new(n.to_string()))
                        .send()
                        .await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };

        // Worker A on a single-threaded runtime of its own, which its processor freezes.
        let a = worker(&bed, &application, &stream, "a", &log, Some(2), lanes)?.build()?;
        let a_handle = a.handle();
        let a_thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(a.run())
        });
        wait_for(Duration::from_secs(30), "A to freeze", || {
            log.events().iter().any(|(_, e, _)| *e == "freeze")
        })
        .await?;

        // B takes the lease once it expired, while A is frozen.
        let b = worker(&bed, &application, &stream, "b", &log, None, lanes)?.build()?;
        let b_handle = b.handle();
        let b_task = tokio::spawn(b.run());
        wait_for(Duration::from_secs(30), "A to thaw", || {
            log.events().iter().any(|(_, e, _)| *e == "thaw")
        })
        .await?;
        let b_took_it = log
            .events()
            .iter()
            .any(|(w, e, _)| *w == "b" && *e == "initialize");
        // A's processor hears of the loss (whatever it delivered first is what is checked).
        let thawed = log
            .events()
            .iter()
            .find(|(_, e, _)| *e == "thaw")
            .map(|(_, _, at)| *at)
            .ok_or("no thaw")?;
        wait_for(Duration::from_secs(30), "A to hear lease_lost", || {
            log.events()
                .iter()
                .any(|(w, e, at)| *w == "a" && *e == "lease_lost" && *at >= thawed)
        })
        .await?;

        putting.abort();
        a_handle.shutdown().await;
        b_handle.shutdown().await;
        a_thread.join().map_err(|_| "worker A panicked")??;
        b_task.await??;

        let events = log.events();
        let thaw = events
            .iter()
            .find(|(_, e, _)| *e == "thaw")
            .map(|(_, _, at)| *at)
            .ok_or("no thaw")?;
        // What A did from the thaw until its processor heard of the loss.
        let after_thaw: Vec<&str> = events
            .iter()
            .filter(|(w, _, at)| *w == "a" && *at >= thaw)
            .map(|(_, e, _)| *e)
            .collect();
        // No call starts after the thaw, in any lane (each lane hears `lease_lost`).
        let zombie: Vec<&&str> = after_thaw
            .iter()
            .skip(1) // the thaw itself
            .filter(|e| **e == "batch")
            .collect();
        println!(
            "B started before A thawed: {b_took_it}; A's batches after the thaw before \
             lease_lost: {}; A's events: {:?}",
            zombie.len(),
            events
                .iter()
                .filter(|(w, _, _)| *w == "a")
                .map(|(_, e, _)| *e)
                .collect::<Vec<_>>()
        );
        assert!(
            zombie.is_empty(),
            "A delivered {} batches of a lease B held, after it thawed",
            zombie.len()
        );
        assert!(
            events
                .iter()
                .any(|(w, e, at)| *w == "a" && *e == "lease_lost" && *at >= thaw),
            "A heard lease_lost"
        );
        Ok(())
    })
    .await
}
