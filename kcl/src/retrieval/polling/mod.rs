//! Polling retrieval: a `GetRecords` loop per shard, behind a [`ShardReader`].
//!
//! [`PollingRetriever::start`] takes a shard iterator for the [`StartingPosition`] (before it
//! returns, so a `LATEST` reader sees exactly the records put after `start` returned), then a
//! background task calls `GetRecords` with [`PollingConfig::max_records`], deaggregates, and hands
//! the batches to the reader within its [`PrefetchLimits`](super::PrefetchLimits).
//!
//! # The loop
//!
//! - **Pacing.** Calls are at least [`PollingConfig::min_time_between_reads`] apart (200 ms:
//!   Kinesis allows 5 `GetRecords` per second per shard). After a response with no records at
//!   the tip of the shard (`MillisBehindLatest` 0 or absent), or a throttled call, the next call
//!   waits [`PollingConfig::idle_time_between_reads`] (1.5 s). **This differs from the Java
//!   KCL**, which spaces *every* call `idleTimeBetweenReadsInMillis` apart: here a shard with a
//!   backlog is read as fast as the processor and Kinesis allow, and an idle shard costs the
//!   same as in Java. An empty response behind the tip does not pause (Kinesis may return empty
//!   responses while skipping over a gap).
//! - **Prefetch.** Before each call the task waits until the reader has room
//!   ([`PrefetchLimits`](super::PrefetchLimits)); a processor that holds its batches stops the fetching.
//! - **Throttling** (`ProvisionedThroughputExceededException`): the same iterator is retried
//!   after the longer of the idle time and an exponential backoff with jitter
//!   ([`PollingConfig::retry_min_delay`] to [`PollingConfig::retry_max_delay`]), without limit;
//!   each throttle is counted.
//! - **Expired iterator** (`ExpiredIteratorException`, e.g. after the processor held the
//!   prefetch full for longer than the iterator's 5-minute life): a new iterator is taken
//!   `AFTER_SEQUENCE_NUMBER` the last Kinesis record fetched — batches always hold whole
//!   Kinesis records (an aggregate is never split), so nothing is skipped or repeated. Before
//!   any record was fetched the starting position is used again (with its checkpoint filter).
//!   An `InvalidArgumentException` on `GetRecords` is treated the same way (as the Java KCL
//!   does), three times in a row at most.
//! - **Transient errors** (the crate's one classification: other throttling such as
//!   `KMSThrottlingException`, `ThrottlingException` or `LimitExceededException`, HTTP 5xx,
//!   `InternalFailure`, timeouts, I/O) are retried with the same backoff until [`PollingConfig::retry_budget`] of
//!   consecutive failures; then, and on any other error, the reader returns the error
//!   ([`Error::Kinesis`](crate::Error::Kinesis)) and ends. (The SDK client's own retry layer runs first.)
//! - **Shard not found** (`ResourceNotFoundException` from `GetShardIterator` or
//!   `GetRecords`: the shard was trimmed after its retention period, or the stream deleted):
//!   as the Java KCL (`KinesisDataFetcher`), the shard's end, reported with no children (the
//!   worker finds them through `ListShards`).
//! - **Shard end**: a response without `NextShardIterator` ends the shard; its batch carries
//!   [`RecordBatch::shard_end`](super::RecordBatch::shard_end) with the `ChildShards` reported (possibly none).
//!
//! # Metrics
//!
//! Through the [`metrics`] facade, labelled `stream` and `shard_id`: `GetRecords` latency,
//! throttles, retries and expired iterators, records and bytes fetched, millis behind latest,
//! out-of-range and passed-through aggregates, prefetch gauges. The list, with units and
//! labels, is [`crate::metrics`].
//!
//! Every reader's task runs in a `shard_reader` tracing span with `stream` and `shard_id`.
//! Record payloads are never logged.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use aws_sdk_kinesis::primitives::Blob;
//! use kinesis_kcl::retrieval::{PollingConfig, PollingRetriever, StartingPosition};
//!
//! let bed = kinesis_integration::TestBed::start_with(
//!     kinesis_integration::Backend::Embedded, Default::default()).await?;
//! let stream = bed.create_stream(1).await?;
//! for i in 0..5 {
//!     bed.kinesis().put_record().stream_name(&stream).partition_key("pk")
//!         .data(Blob::new(format!("event {i}"))).send().await?;
//! }
//!
//! let config = PollingConfig::builder().max_records(2).build()?;
//! let retriever = PollingRetriever::new(bed.kinesis().clone(), &stream, config);
//! let mut reader = retriever
//!     .start("shardId-000000000000", None, StartingPosition::TrimHorizon)
//!     .await?;
//! let mut seen = 0;
//! while seen < 5 {
//!     let batch = reader.next().await.expect("the shard is open")?;
//!     assert!(batch.records.len() <= 2);
//!     seen += batch.records.len();
//! }
//! reader.close().await;
//! # Ok(())
//! # }
//! ```

mod config;
mod fetcher;

use aws_sdk_kinesis::Client;

use super::metrics::ShardLabels;
use super::{ShardReader, StartingPosition};
use crate::error::Result;
use crate::lease::HashKeyRange;

pub use config::{PollingConfig, PollingConfigBuilder};
use fetcher::Fetcher;

/// Starts polling readers for the shards of one stream.
///
/// Cheap to clone (the client is shared). See the [module](self) for an example.
#[derive(Clone, Debug)]
pub struct PollingRetriever {
    client: Client,
    stream: String,
    config: PollingConfig,
}

impl PollingRetriever {
    /// A retriever reading `stream` (a stream name, or a stream ARN — `arn:…`) through
    /// `client`.
    pub fn new(client: Client, stream: impl Into<String>, config: PollingConfig) -> Self {
        PollingRetriever {
            client,
            stream: stream.into(),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &PollingConfig {
        &self.config
    }

    /// Starts reading `shard_id` at `position`; `hash_key_range` is the shard's (from the lease
    /// or `ListShards`), used by the [`OutOfRangePolicy`](super::OutOfRangePolicy) (no check when `None`).
    ///
    /// The first shard iterator is taken before this returns (retrying transient errors).
    ///
    /// # Errors
    ///
    /// [`Error::Kinesis`](crate::Error::Kinesis) if `GetShardIterator` fails with an error that is not retried (a
    /// sequence number of another shard, access denied, …) or transient errors outlast
    /// [`PollingConfig::retry_budget`]. A shard that is not found is not an error: the reader
    /// reports its end at once (see the module docs).
    pub async fn start(
        &self,
        shard_id: impl Into<String>,
        hash_key_range: Option<HashKeyRange>,
        position: StartingPosition,
    ) -> Result<ShardReader> {
        let shard_id = shard_id.into();
        let labels = ShardLabels::new(&self.stream, &shard_id);
        let span = tracing::info_span!("shard_reader", stream = %self.stream, shard_id = %shard_id);
        let fetcher = Fetcher::new(
            &self.client,
            &self.stream,
            &self.config,
            shard_id,
            hash_key_range,
            position,
            &labels,
        )
        .open(&span)
        .await?;
        Ok(ShardReader::spawn(
            &labels,
            self.config.prefetch,
            span,
            move |sender| fetcher.run(sender),
        ))
    }
}
