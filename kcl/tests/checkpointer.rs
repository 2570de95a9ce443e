//! The checkpointer a processor gets, through a real worker: typed errors for bad positions,
//! two-phase checkpoints, and what the next owner sees.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kinesis_integration::TestBed;
use kinesis_kcl::lease::{ExtendedSequenceNumber, LeaseTable};
use kinesis_kcl::{
    Checkpointer, Error, InitialPosition, LeaseConfig, PollingConfig, ProcessRecordsInput,
    ProcessorError, Retrieval, ShardRecordProcessor, Worker,
};
use kinesis_kcl::{InitializationInput, ShardContext};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const LIMIT: Duration = Duration::from_secs(60);

async fn bounded(body: impl Future<Output = Result<(), BoxError>>) -> Result<(), BoxError> {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .map_err(|_| "test timed out")?
}

#[derive(Default, Debug)]
struct Seen {
    /// Outcomes of the probe, in order.
    outcomes: Vec<String>,
    /// Positions of the first batch.
    first_batch: Vec<ExtendedSequenceNumber>,
    init: Option<InitializationInput>,
    done: bool,
}

struct Probe {
    seen: Arc<Mutex<Seen>>,
    table: LeaseTable,
    lease_key: String,
    commit: bool,
}

fn outcome<T>(r: &Result<T, Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(Error::CheckpointOutOfRange { .. }) => "out-of-range".into(),
        Err(Error::CheckpointRegression { .. }) => "regression".into(),
        Err(Error::InvalidValue { .. }) => "invalid".into(),
        Err(Error::LeaseLost { .. }) => "lost".into(),
        Err(e) => format!("other: {e}"),
    }
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Probe {
    async fn initialize(&mut self, input: InitializationInput) {
        self.seen.lock().unwrap().init = Some(input);
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        cp: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        if self.seen.lock().unwrap().done {
            return Ok(());
        }
        let records = &input.records;
        let mut out = Vec::new();
        let beyond = "9".repeat(60);
        out.push(outcome(&cp.checkpoint_at(&beyond, 0).await));
        out.push(outcome(&cp.checkpoint_at("12a", 0).await));
        out.push(outcome(&cp.checkpoint_record(&records[1]).await));
        out.push(outcome(&cp.checkpoint_record(&records[0]).await));
        let prepared = cp.prepare_checkpoint(Some(b"app-state".to_vec())).await?;
        let lease = self
            .table
            .get_lease(&self.lease_key)
            .await?
            .ok_or("lease")?;
        out.push(format!(
            "pending {:?} state {:?} checkpoint {}",
            lease.pending_checkpoint.as_ref().map(|p| p.to_string()),
            lease.pending_checkpoint_state,
            lease.checkpoint
        ));
        if self.commit {
            prepared.commit().await?;
            let lease = self
                .table
                .get_lease(&self.lease_key)
                .await?
                .ok_or("lease")?;
            out.push(format!(
                "committed {} pending {:?}",
                lease.checkpoint,
                lease.pending_checkpoint.as_ref().map(|p| p.to_string())
            ));
        }
        let mut seen = self.seen.lock().unwrap();
        seen.outcomes = out;
        seen.first_batch = records
            .iter()
            .map(|r| r.extended_sequence_number())
            .collect();
        seen.done = true;
        Ok(())
    }

    async fn shard_ended(&mut self, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(cp.checkpoint().await?)
    }
}

fn start(
    bed: &TestBed,
    app: &str,
    stream: &str,
    seen: Arc<Mutex<Seen>>,
    commit: bool,
) -> Result<
    (
        kinesis_kcl::WorkerHandle,
        tokio::task::JoinHandle<kinesis_kcl::Result<()>>,
    ),
    BoxError,
> {
    let table = LeaseTable::new(bed.dynamodb().clone(), app);
    let worker = Worker::builder(
        app,
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |s: &ShardContext| Probe {
            seen: Arc::clone(&seen),
            table: table.clone(),
            lease_key: s.lease_key.clone(),
            commit,
        },
    )
    .stream(stream)
    .worker_id(format!("w-{commit}"))
    .initial_position(InitialPosition::TrimHorizon)
    .lease_config(
        LeaseConfig::builder()
            .failover_time(Duration::from_secs(2))
            .build()?,
    )
    .retrieval(Retrieval::Polling(
        PollingConfig::builder()
            .idle_time_between_reads(Duration::from_millis(50))
            .build()?,
    ))
    .build()?;
    let handle = worker.handle();
    Ok((handle, tokio::spawn(worker.run())))
}

async fn put_plain(bed: &TestBed, stream: &str, n: usize) -> Result<(), BoxError> {
    for i in 0..n {
        bed.kinesis()
            .put_record()
            .stream_name(stream)
            .partition_key("k")
            .data(aws_sdk_kinesis::primitives::Blob::new(format!("{i}")))
            .send()
            .await?;
    }
    Ok(())
}

async fn wait_done(seen: &Mutex<Seen>) -> Result<(), BoxError> {
    let deadline = Instant::now() + LIMIT;
    while !seen.lock().unwrap().done {
        if Instant::now() > deadline {
            return Err("the probe did not run".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typed_errors_and_a_committed_two_phase_checkpoint() -> Result<(), BoxError> {
    bounded(async {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(1).await?;
        put_plain(&bed, &stream, 5).await?;
        let app = bed.unique_table_name();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (handle, task) = start(&bed, &app, &stream, Arc::clone(&seen), true)?;
        wait_done(&seen).await?;
        handle.shutdown().await;
        task.await??;
        let seen = seen.lock().unwrap();
        let last = seen.first_batch.last().expect("records").to_string();
        let second = seen.first_batch[1].to_string();
        assert_eq!(
            seen.outcomes,
            vec![
                "out-of-range".to_owned(),
                "invalid".to_owned(),
                "ok".to_owned(),
                "regression".to_owned(),
                format!("pending Some({last:?}) state Some([97, 112, 112, 45, 115, 116, 97, 116, 101]) checkpoint {second}"),
                format!("committed {last} pending None"),
            ]
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_next_owner_sees_an_uncommitted_prepared_checkpoint() -> Result<(), BoxError> {
    bounded(async {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(1).await?;
        put_plain(&bed, &stream, 5).await?;
        let app = bed.unique_table_name();
        let first = Arc::new(Mutex::new(Seen::default()));
        let (handle, task) = start(&bed, &app, &stream, Arc::clone(&first), false)?;
        wait_done(&first).await?;
        handle.shutdown().await;
        task.await??;
        let (second_pos, last) = {
            let s = first.lock().unwrap();
            (
                s.first_batch[1].clone(),
                s.first_batch.last().cloned().expect("records"),
            )
        };

        let next = Arc::new(Mutex::new(Seen::default()));
        let (handle, task) = start(&bed, &app, &stream, Arc::clone(&next), true)?;
        let deadline = Instant::now() + LIMIT;
        while next.lock().unwrap().init.is_none() {
            assert!(
                Instant::now() < deadline,
                "the second worker never started the shard"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle.shutdown().await;
        task.await??;
        let init = next.lock().unwrap().init.clone().expect("initialized");
        assert_eq!(init.checkpoint, second_pos);
        assert_eq!(init.pending_checkpoint, Some(last));
        assert_eq!(
            init.pending_checkpoint_state.as_deref(),
            Some(&b"app-state"[..])
        );
        Ok(())
    })
    .await
}
