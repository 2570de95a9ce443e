//! A two-phase checkpoint: prepare the checkpoint (with application state, here a transaction
//! id), do the side effect, then commit the checkpoint. If the processor dies between the two,
//! the next owner of the shard finds the prepared ("pending") checkpoint and its state in
//! `initialize`, and can tell whether the side effect happened: the records up to the pending
//! position are then skipped instead of written twice.
//!
//! ```sh
//! cargo run -p kinesis-kcl --example two_phase
//! ```
//!
//! It starts the test bed's embedded servers, puts 50 records, and runs a worker whose first
//! processor crashes (panics) after its side effect and before the commit. The worker restarts
//! the shard from its checkpoint with a new processor, which sees the pending checkpoint,
//! skips what the side effect already covered, and commits. The store ends with every record
//! once. (An error, unlike a panic, would be retried in place by the same processor: see
//! `FailurePolicy`.)

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_integration::TestBed;
use kinesis_kcl::{
    Checkpointer, ExtendedSequenceNumber, InitialPosition, InitializationInput, PollingConfig,
    ProcessRecordsInput, ProcessorError, Retrieval, ShardRecordProcessor, Worker,
};
use kinesis_kpl::{Producer, UserRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The external system the side effect writes to (a database, another stream, …): records by
/// partition key, each with the transaction that wrote it. Writes are counted, so that a
/// record written twice shows.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) rows: BTreeMap<String, String>,
    pub(crate) writes: usize,
    pub(crate) transactions: Vec<String>,
}

/// What the run did.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Records put.
    pub(crate) put: usize,
    /// The store at the end.
    pub(crate) store: Store,
    /// The pending checkpoint (position, state) the restarted processor found.
    pub(crate) pending_found: Option<(String, String)>,
    /// Records the restarted processor skipped as already written.
    pub(crate) skipped: usize,
    /// The last record processed: `sequence/sub-sequence`.
    pub(crate) last_processed: String,
    /// The lease's `checkpoint` and `pendingCheckpoint` after shutdown.
    pub(crate) table_checkpoint: String,
    pub(crate) table_pending: Option<String>,
}

struct Shared {
    summary: Mutex<Summary>,
    /// The first processor crashes once, between side effect and commit.
    crashed: AtomicBool,
}

struct Processor {
    shared: Arc<Shared>,
    /// Records at or before this position were written by a transaction that committed to
    /// the store but not to the lease (it was prepared only).
    already_written: Option<ExtendedSequenceNumber>,
    transactions: usize,
    shard_id: String,
}

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Processor {
    async fn initialize(&mut self, input: InitializationInput) {
        self.shard_id = input.shard_id;
        // A previous processor prepared a checkpoint and did not commit it: did its side
        // effect happen? Its state names the transaction; the store knows.
        if let Some(pending) = input.pending_checkpoint {
            let transaction = input
                .pending_checkpoint_state
                .map(|s| String::from_utf8_lossy(&s).into_owned())
                .unwrap_or_default();
            let mut summary = self.shared.summary.lock().expect("not poisoned");
            if summary.store.transactions.contains(&transaction) {
                self.already_written = Some(pending.clone());
            }
            summary.pending_found = Some((pending.to_string(), transaction));
        }
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        // Drop what a committed side effect already covered.
        let total = input.records.len();
        let records: Vec<_> = input
            .records
            .into_iter()
            .filter(|r| {
                self.already_written
                    .as_ref()
                    .is_none_or(|done| r.extended_sequence_number() > *done)
            })
            .collect();
        self.shared.summary.lock().map_err(|_| "poisoned")?.skipped += total - records.len();
        let Some(last) = records.last() else {
            // Nothing new: the batch was written before; make that the checkpoint.
            checkpointer.checkpoint().await?;
            return Ok(());
        };
        let last = last.extended_sequence_number();

        // 1. Prepare: the lease records `pendingCheckpoint` (this batch's last record) and
        //    the transaction id, before anything is written.
        self.transactions += 1;
        let transaction = format!("{}-tx-{}", self.shard_id, self.transactions);
        let prepared = checkpointer
            .prepare_checkpoint(Some(transaction.clone().into_bytes()))
            .await?;

        // 2. The side effect, atomically with its transaction id (one database transaction).
        {
            let mut summary = self.shared.summary.lock().map_err(|_| "poisoned")?;
            let store = &mut summary.store;
            for record in &records {
                store
                    .rows
                    .insert(record.partition_key().to_owned(), transaction.clone());
                store.writes += 1;
            }
            store.transactions.push(transaction);
            summary.last_processed = last.to_string();
        }

        // The demonstration's crash, once: the side effect happened, the commit does not.
        if !self.shared.crashed.swap(true, Ordering::SeqCst) {
            drop(prepared);
            panic!("the demonstration's crash, between the side effect and the commit");
        }

        // 3. Commit: the prepared position becomes the checkpoint.
        prepared.commit().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

/// The lease's `checkpoint` and `pendingCheckpoint` (the Java KCL's attribute names).
async fn lease_checkpoints(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(String, Option<String>), BoxError> {
    let scan = dynamodb
        .scan()
        .table_name(table)
        .consistent_read(true)
        .send()
        .await?;
    let item = scan.items().first().ok_or("no lease")?;
    let text = |item: &HashMap<String, AttributeValue>, name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().or_else(|_| v.as_n()).ok())
            .cloned()
    };
    let checkpoint = format!(
        "{}/{}",
        text(item, "checkpoint").unwrap_or_default(),
        text(item, "checkpointSubSequenceNumber").unwrap_or_default()
    );
    Ok((checkpoint, text(item, "pendingCheckpoint")))
}

/// Runs the example.
pub(crate) async fn run() -> Result<Summary, BoxError> {
    const RECORDS: usize = 50;
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let application = bed.unique_table_name();
    let producer = Producer::builder(bed.kinesis().clone(), &stream)
        .build()
        .await?;
    let puts: Vec<_> = (0..RECORDS)
        .map(|i| producer.put_record(UserRecord::new(format!("key-{i}"), format!("record {i}"))))
        .collect();
    for put in puts {
        put.await?;
    }
    producer.shutdown().await;

    let shared = Arc::new(Shared {
        summary: Mutex::default(),
        crashed: AtomicBool::new(false),
    });
    let factory_shared = Arc::clone(&shared);
    let worker = Worker::builder(
        &application,
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |_: &kinesis_kcl::ShardContext| Processor {
            shared: Arc::clone(&factory_shared),
            already_written: None,
            transactions: 0,
            shard_id: String::new(),
        },
    )
    .stream(&stream)
    .initial_position(InitialPosition::TrimHorizon)
    .retrieval(Retrieval::Polling(
        PollingConfig::builder()
            .idle_time_between_reads(Duration::from_millis(200))
            .build()?,
    ))
    .build()?;
    let handle = worker.handle();
    let running = tokio::spawn(worker.run());

    // Done once the restarted processor has caught up: a committed checkpoint at the last
    // record written (the lease table says so).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (last, recovered, stored) = {
            let summary = shared.summary.lock().map_err(|_| "poisoned")?;
            let recovered = summary.pending_found.is_some();
            (
                summary.last_processed.clone(),
                recovered,
                summary.store.rows.len(),
            )
        };
        let lease = lease_checkpoints(bed.dynamodb(), &application).await.ok();
        let committed =
            lease.is_some_and(|(checkpoint, pending)| checkpoint == last && pending.is_none());
        if recovered && stored == RECORDS && committed {
            break;
        }
        if Instant::now() > deadline {
            return Err("the restarted processor did not commit within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.shutdown().await;
    running.await??;

    let (checkpoint, pending) = lease_checkpoints(bed.dynamodb(), &application).await?;
    let mut summary = std::mem::take(&mut *shared.summary.lock().map_err(|_| "poisoned")?);
    summary.put = RECORDS;
    summary.table_checkpoint = checkpoint;
    summary.table_pending = pending;
    Ok(summary)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let summary = run().await?;
    if let Some((position, transaction)) = &summary.pending_found {
        println!("restarted processor found pending checkpoint {position} of {transaction}");
    }
    println!(
        "it skipped {} records already written; the store holds {} of {} records after {} writes",
        summary.skipped,
        summary.store.rows.len(),
        summary.put,
        summary.store.writes
    );
    println!(
        "lease: checkpoint {} (last processed {}), pending checkpoint {:?}",
        summary.table_checkpoint, summary.last_processed, summary.table_pending
    );
    Ok(())
}
