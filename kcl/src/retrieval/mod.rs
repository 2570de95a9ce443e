//! Reading a shard: the records of one shard, in order, as [`RecordBatch`]es from a
//! [`ShardReader`].
//!
//! A shard's task owns one [`ShardReader`]. Behind it a background task fetches from Kinesis
//! (polling `GetRecords`: [`polling`]; or enhanced fan-out's `SubscribeToShard`: [`fanout`]),
//! deaggregates KPL aggregates into user [`Record`]s, and keeps a bounded number
//! of batches ready ([`PrefetchLimits`]), so that reading overlaps processing while a slow
//! processor never makes memory grow.
//!
//! Where reading starts is a [`StartingPosition`], derived from the lease's checkpoint by
//! [`StartingPosition::from_checkpoint`]; resuming from a checkpoint inside an aggregate delivers
//! exactly the user records after it.
//!
//! A reader ends (its [`ShardReader::next`] returns `None`) after the batch that reports the
//! shard's end ([`RecordBatch::shard_end`]), after an error it could not recover from (returned
//! once, as `Some(Err(_))`), or when closed. Its background task stops when the reader is
//! closed ([`ShardReader::close`], which waits for it) or dropped (which aborts it).
//!
//! ```no_run
//! use kinesis_kcl::lease::ExtendedSequenceNumber;
//! use kinesis_kcl::retrieval::{PollingConfig, PollingRetriever, StartingPosition};
//! use kinesis_kcl::shard::InitialPosition;
//!
//! # async fn run(client: aws_sdk_kinesis::Client) -> Result<(), kinesis_kcl::Error> {
//! let retriever = PollingRetriever::new(client, "clickstream", PollingConfig::default());
//! let checkpoint = ExtendedSequenceNumber::TRIM_HORIZON; // read from the lease
//! let Some(position) = StartingPosition::from_checkpoint(&checkpoint, InitialPosition::Latest)?
//! else {
//!     return Ok(()); // SHARD_END: nothing left to read
//! };
//! let mut reader = retriever.start("shardId-000000000000", None, position).await?;
//! while let Some(batch) = reader.next().await {
//!     let batch = batch?;
//!     for record in &batch.records {
//!         println!("{} {}", record.extended_sequence_number(), record.data().len());
//!     }
//!     if batch.shard_end.is_some() {
//!         println!("shard closed; children: {:?}", batch.shard_end);
//!     }
//!     // Dropping the batch makes room for the next prefetch.
//! }
//! reader.close().await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

mod deaggregate;
pub mod fanout;
mod metrics;
pub mod polling;
mod position;
mod prefetch;
mod settings;

pub(crate) use deaggregate::Deaggregator;
pub use deaggregate::OutOfRangePolicy;
pub use fanout::{FanOutConfig, FanOutConfigBuilder, FanOutRetriever};
pub use polling::{PollingConfig, PollingConfigBuilder, PollingRetriever};
pub use position::StartingPosition;
pub use prefetch::{PrefetchLimits, PrefetchUsage};

use self::metrics::ShardLabels;
use self::prefetch::{BatchSender, Budget, PrefetchPermit};
use crate::error::Result;
use crate::record::Record;
use crate::shard::ChildShard;

/// How records are fetched. The processors see the same records either way (deaggregated,
/// resumed exactly after sub-sequence checkpoints, shard ends with their children).
///
/// ```
/// use kinesis_kcl::Retrieval;
/// use kinesis_kcl::FanOutConfig;
///
/// // Enhanced fan-out through a consumer named after the application, kept on shutdown.
/// let fan_out = Retrieval::FanOut(FanOutConfig::default());
/// // … or through a consumer of its own name, removed when the worker shuts down.
/// let named = Retrieval::FanOut(
///     FanOutConfig::builder().consumer_name("reporting").deregister_on_shutdown(true).build()?,
/// );
/// # let _ = (fan_out, named);
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Retrieval {
    /// `GetRecords` polling (the Java KCL's polling mode): the shard's 2 MB/s and 5 calls per
    /// second are shared with every other polling application.
    Polling(PollingConfig),
    /// Enhanced fan-out (the Java KCL's default mode since 2.0): `SubscribeToShard` through a
    /// registered stream consumer, with 2 MB/s per shard of its own, pushed over HTTP/2. The
    /// consumer is [`FanOutConfig::consumer_name`], or the application name by default; it is
    /// found or registered when the worker starts (on every stream it consumes) and reused
    /// across restarts.
    FanOut(FanOutConfig),
}

impl Default for Retrieval {
    fn default() -> Self {
        Retrieval::Polling(PollingConfig::default())
    }
}

/// The user records of one fetch, in shard order, with the shard's lag and, on the last batch of
/// a closed shard, its end.
///
/// The batch counts against its reader's [`PrefetchLimits`] until it is dropped (moving the
/// records out and dropping the rest releases it too): keep it while processing, drop it when
/// done.
///
/// ```
/// use kinesis_kcl::Record;
/// use kinesis_kcl::lease::SequenceNumber;
/// use kinesis_kcl::retrieval::RecordBatch;
///
/// let record = Record::new(SequenceNumber::new("1")?, "pk", "data");
/// let batch = RecordBatch::new(vec![record], Some(0), None);
/// assert_eq!(batch.records.len(), 1);
/// assert!(!batch.is_shard_end());
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Debug)]
pub struct RecordBatch {
    /// The user records, deaggregated, in order of (sequence number, sub-sequence number).
    pub records: Vec<Record>,
    /// How far behind the tip of the shard the fetch was (`MillisBehindLatest`), if reported.
    pub millis_behind_latest: Option<u64>,
    /// `Some` on the last batch of a closed shard (after a split or merge): its children as
    /// reported by Kinesis. They may be empty when the server does not report them (ferrokinesis
    /// and other emulators never do); the children are then found by `ListShards`.
    pub shard_end: Option<Vec<ChildShard>>,
    /// The batch's share of the prefetch budget.
    permit: Option<PrefetchPermit>,
}

impl RecordBatch {
    /// A batch (for tests of processors, or other sources of records); it is charged to no
    /// budget.
    pub fn new(
        records: Vec<Record>,
        millis_behind_latest: Option<u64>,
        shard_end: Option<Vec<ChildShard>>,
    ) -> Self {
        RecordBatch {
            records,
            millis_behind_latest,
            shard_end,
            permit: None,
        }
    }

    /// Whether this is the last batch of a closed shard.
    pub fn is_shard_end(&self) -> bool {
        self.shard_end.is_some()
    }
}

/// The batch a fetch (a `GetRecords` response or a `SubscribeToShard` event) yields, with its
/// data bytes; `None` when it carries no user record and no shard end and empty batches are
/// not wanted. Counts the delivered user records.
pub(crate) fn finish_batch(
    records: Vec<Record>,
    millis_behind_latest: Option<u64>,
    shard_end: Option<Vec<ChildShard>>,
    deliver_empty_batches: bool,
    delivered: &::metrics::Counter,
) -> Option<(RecordBatch, usize)> {
    if records.is_empty() && shard_end.is_none() && !deliver_empty_batches {
        return None;
    }
    delivered.increment(records.len() as u64);
    let bytes = records.iter().map(|r| r.data().len()).sum();
    Some((
        RecordBatch::new(records, millis_behind_latest, shard_end),
        bytes,
    ))
}

/// The consumer's end of one shard's retrieval: batches in order, fetched ahead by a background
/// task within [`PrefetchLimits`].
///
/// Made by a retriever such as [`PollingRetriever::start`]; see the [module](self) for an
/// example.
#[derive(Debug)]
pub struct ShardReader {
    shard_id: String,
    rx: mpsc::Receiver<Result<RecordBatch>>,
    budget: Arc<Budget>,
    task: Option<JoinHandle<()>>,
}

impl ShardReader {
    /// Starts `produce` as the reader's background task, instrumented with `span`. It gets the
    /// producing side of a channel bounded by `limits`, and stops when the reader is closed or
    /// dropped (at its next await point).
    pub(crate) fn spawn<F, Fut>(
        labels: &ShardLabels,
        limits: PrefetchLimits,
        span: tracing::Span,
        produce: F,
    ) -> Self
    where
        F: FnOnce(BatchSender) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let budget = Budget::new(limits, labels);
        // Every batch in the channel is charged to the budget, so the channel never holds more
        // than `max_batches` of them; one more slot is for a final error.
        let (tx, rx) = mpsc::channel(limits.max_batches().saturating_add(1));
        let closed = tx.clone();
        let producing = produce(BatchSender {
            tx,
            budget: Arc::clone(&budget),
        });
        let task = tokio::spawn(
            async move {
                tokio::select! {
                    () = closed.closed() => tracing::debug!("reader closed, retrieval stopped"),
                    () = producing => {}
                }
            }
            .instrument(span),
        );
        ShardReader {
            shard_id: labels.shard_id.clone(),
            rx,
            budget,
            task: Some(task),
        }
    }

    /// The next batch, waiting for it if none is ready.
    ///
    /// `None` once the shard's end was delivered, after an error (which is returned once), or
    /// when the background task has stopped. Cancel-safe.
    pub async fn next(&mut self) -> Option<Result<RecordBatch>> {
        self.rx.recv().await
    }

    /// The shard this reader reads.
    pub fn shard_id(&self) -> &str {
        &self.shard_id
    }

    /// What the reader holds right now: fetched batches not yet dropped by the consumer.
    pub fn prefetched(&self) -> PrefetchUsage {
        self.budget.usage()
    }

    /// Stops the background task and waits for it to finish. Batches not yet taken are
    /// discarded.
    pub async fn close(mut self) {
        self.rx.close();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
            && error.is_panic()
        {
            tracing::error!(shard_id = %self.shard_id, %error, "retrieval task panicked");
        }
    }
}

impl Drop for ShardReader {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_and_batches_move_between_tasks() {
        fn send_and_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_and_sync::<Record>();
        send_and_sync::<RecordBatch>();
        send::<ShardReader>();
    }
}
