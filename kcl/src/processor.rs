use std::sync::Arc;

use async_trait::async_trait;

use crate::checkpoint::Checkpointer;
use crate::record::Record;
use crate::sequence::ExtendedSequenceNumber;

/// The error a [`ShardRecordProcessor`] returns: any error, boxed.
///
/// Every error type that implements [`std::error::Error`] + `Send` + `Sync` (and `String` or
/// `&str` messages) converts into it with `?` or `.into()`, among them this crate's
/// [`Error`](crate::Error) from a failed checkpoint. What the worker does with it: an error
/// from [`process_records`](ShardRecordProcessor::process_records) goes to the stream's
/// [`FailurePolicy`](crate::FailurePolicy) (see [Errors and panics](ShardRecordProcessor#errors-and-panics));
/// a [`RecordFailed`](crate::RecordFailed) among them reports a partial failure;
/// one from [`shard_ended`](ShardRecordProcessor::shard_ended) makes the worker call it again;
/// one from [`shutdown_requested`](ShardRecordProcessor::shutdown_requested) is logged.
///
/// ```
/// use kinesis_kcl::ProcessorError;
///
/// fn parse(data: &[u8]) -> Result<u64, ProcessorError> {
///     let text = std::str::from_utf8(data)?; // a Utf8Error
///     if text.is_empty() {
///         return Err("empty record".into()); // a message
///     }
///     Ok(text.parse()?) // a ParseIntError
/// }
/// assert!(parse(b"42").is_ok());
/// assert_eq!(parse(b"").unwrap_err().to_string(), "empty record");
/// ```
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync>;

/// What a processor learns when it starts.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct InitializationInput {
    /// The shard id.
    pub shard_id: String,
    /// The stream's name (as configured), useful in multi-stream mode.
    pub stream: String,
    /// The checkpoint processing resumes after (a sentinel such as `TRIM_HORIZON` for a shard
    /// never checkpointed).
    pub checkpoint: ExtendedSequenceNumber,
    /// A prepared but uncommitted checkpoint left by the previous owner, if any.
    pub pending_checkpoint: Option<ExtendedSequenceNumber>,
    /// Application state stored with the pending checkpoint.
    pub pending_checkpoint_state: Option<Vec<u8>>,
}

/// One batch of records for [`ShardRecordProcessor::process_records`].
#[derive(Debug)]
#[non_exhaustive]
pub struct ProcessRecordsInput {
    /// The user records, deaggregated, in order. Never empty unless the retrieval is
    /// configured to deliver empty batches.
    pub records: Vec<Record>,
    /// How far behind the tip of the shard the fetch was, if reported.
    pub millis_behind_latest: Option<u64>,
}

/// Processes the records of one shard. One instance per shard lease (one per lane with
/// [`parallelization_factor`](crate::WorkerBuilder::parallelization_factor)), made by the
/// factory given to [`Worker::builder`](crate::Worker::builder).
///
/// ```
/// use kinesis_kcl::{Checkpointer, ProcessRecordsInput, ProcessorError, ShardRecordProcessor};
/// use kinesis_kcl::InitializationInput;
///
/// struct Counter {
///     seen: u64,
/// }
///
/// #[kinesis_kcl::async_trait]
/// impl ShardRecordProcessor for Counter {
///     async fn initialize(&mut self, input: InitializationInput) {
///         tracing::info!(shard = %input.shard_id, from = %input.checkpoint, "starting");
///     }
///
///     async fn process_records(
///         &mut self,
///         input: ProcessRecordsInput,
///         checkpointer: &mut Checkpointer,
///     ) -> Result<(), ProcessorError> {
///         self.seen += input.records.len() as u64;
///         checkpointer.checkpoint().await?; // everything delivered so far is done
///         Ok(())
///     }
///
///     async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
///         checkpointer.checkpoint().await?; // writes SHARD_END: the children may start
///         Ok(())
///     }
/// }
/// ```
///
/// The code users write: a [`ShardRecordProcessor`] per shard lease, made by the factory
/// closure given to [`Worker::builder`](crate::Worker::builder).
///
/// # Lifecycle of one processor
///
/// 1. [`initialize`](ShardRecordProcessor::initialize) once, with the shard and the checkpoint
///    processing resumes after.
/// 2. [`process_records`](ShardRecordProcessor::process_records) for each batch, in shard
///    order, with a [`Checkpointer`] to record progress.
/// 3. Exactly one ending:
///    - [`shard_ended`](ShardRecordProcessor::shard_ended): the shard was closed by a split or
///      merge and every record was delivered. The processor **must** checkpoint (the
///      checkpointer then writes `SHARD_END`); until it does, the shard's children are not
///      processed. The worker calls it again (with backoff) while it returns without
///      checkpointing, logging an error and reporting the shard as
///      [`ShardState::ShardEndNotCheckpointed`](crate::ShardState::ShardEndNotCheckpointed).
///    - [`lease_lost`](ShardRecordProcessor::lease_lost): another worker has the shard now.
///      Do not checkpoint (it would be refused); drop in-flight work.
///    - [`shutdown_requested`](ShardRecordProcessor::shutdown_requested): the worker is shutting
///      down, or another worker asked for the lease (a graceful hand-off). Checkpoint what is
///      done; the lease is released right after.
///
/// # Parallel lanes
///
/// With [`parallelization_factor`](crate::WorkerBuilder::parallelization_factor) N above 1,
/// the factory makes N processors per shard, one per lane
/// ([`ShardContext::lane`]), and each goes through the lifecycle above with its lane's
/// records: all records of a partition key in shard order, other keys concurrently in other
/// lanes. Its [`Checkpointer`] reports its lane's progress (see
/// [In a lane](Checkpointer#in-a-lane)). Each lane's processor gets its own ending; at a
/// shard's end every lane has finished its records before any `shard_ended` is called.
///
/// # Stopping is not cancelling
///
/// A call in flight when processing must stop (lost lease, hand-off, shutdown) is not
/// dropped: it may finish its batch, and then the ending above is called, as in the Java KCL.
/// Checkpoints it attempts after a loss fail with
/// [`Error::LeaseLost`](crate::Error::LeaseLost). The call in flight and the
/// ending together get
/// [`processor_stop_timeout`](crate::WorkerBuilder::processor_stop_timeout) (30 s by default);
/// what is still running then is dropped at its next `.await` and the processor hears nothing
/// more. Keep blocking work off the async thread (`spawn_blocking`): a call that blocks its
/// thread cannot be dropped.
///
/// # Errors and panics
///
/// If `process_records` returns an error, the worker's [`FailurePolicy`](crate::FailurePolicy)
/// decides: by default the same processor gets the same records again after a backoff (1 s,
/// doubling up to 30 s), for as long as they fail; a policy with limits splits the batch,
/// gives up on records and hands them to its destination. Returning
/// [`RecordFailed`](crate::RecordFailed) says which record failed: the ones before it are
/// checkpointed and the next call starts at it. If `process_records` panics, the processor is
/// dropped and the shard restarts from its last checkpoint with a new processor from the
/// factory, after the same backoff; records after the last checkpoint are delivered again.
/// Processing is at least once either way, and other shards are not affected. (The Java KCL
/// logs the exception and moves on to the next batch, which loses the batch.)
#[async_trait]
pub trait ShardRecordProcessor: Send {
    /// Called once before the first batch.
    async fn initialize(&mut self, input: InitializationInput) {
        let _ = input;
    }

    /// Processes one batch. Checkpoint through `checkpointer` as often as suits the
    /// application (every batch, every N records, every few seconds).
    ///
    /// # Errors
    ///
    /// An error goes to the failure policy: by default the same records are retried (see
    /// [Errors and panics](ShardRecordProcessor#errors-and-panics)).
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError>;

    /// The lease was lost to another worker (or could not be renewed in time): stop, do not
    /// checkpoint. Called after the `process_records` call in flight, if any, returned.
    async fn lease_lost(&mut self) {}

    /// The shard ended (split or merge) and every record was delivered. Must call
    /// [`Checkpointer::checkpoint`], which writes `SHARD_END`.
    ///
    /// # Errors
    ///
    /// An error (or returning without checkpointing) makes the worker call this again after a
    /// backoff; the shard's children wait meanwhile.
    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError>;

    /// The worker is shutting down or handing the lease to another worker: checkpoint what is
    /// done. The default checkpoints nothing (the next owner resumes after the last
    /// checkpoint, re-delivering the rest).
    ///
    /// # Errors
    ///
    /// Logged; the lease is released anyway.
    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let _ = checkpointer;
        Ok(())
    }
}

/// Which shard a processor is made for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardContext {
    /// The shard id.
    pub shard_id: String,
    /// The stream name (as configured).
    pub stream: String,
    /// The lease key (the shard id, or the multi-stream key).
    pub lease_key: String,
    /// Which of the shard's parallel lanes the processor is for, from 0 (always 0 without
    /// [`parallelization_factor`](crate::WorkerBuilder::parallelization_factor)).
    pub lane: usize,
    /// How many lanes the shard is processed in (1 without
    /// [`parallelization_factor`](crate::WorkerBuilder::parallelization_factor)).
    pub lanes: usize,
}

/// Makes one [`ShardRecordProcessor`] per shard lease: the closures `Fn(&ShardContext) -> P`
/// given to [`Worker::builder`](crate::Worker::builder).
pub(crate) trait ShardRecordProcessorFactory: Send + Sync + 'static {
    /// A new processor for `shard`.
    fn create(&self, shard: &ShardContext) -> Box<dyn ShardRecordProcessor>;
}

impl<F, P> ShardRecordProcessorFactory for F
where
    F: Fn(&ShardContext) -> P + Send + Sync + 'static,
    P: ShardRecordProcessor + 'static,
{
    fn create(&self, shard: &ShardContext) -> Box<dyn ShardRecordProcessor> {
        Box::new(self(shard))
    }
}

impl ShardContext {
    /// A context (for tests of factories and processors).
    pub fn new(
        shard_id: impl Into<String>,
        stream: impl Into<String>,
        lease_key: impl Into<String>,
    ) -> Self {
        ShardContext {
            shard_id: shard_id.into(),
            stream: stream.into(),
            lease_key: lease_key.into(),
            lane: 0,
            lanes: 1,
        }
    }

    /// The same shard, for lane `lane` of `lanes`.
    pub(crate) fn in_lane(mut self, lane: usize, lanes: usize) -> Self {
        self.lane = lane;
        self.lanes = lanes;
        self
    }
}

/// A shared factory.
pub(crate) type SharedFactory = Arc<dyn ShardRecordProcessorFactory>;
