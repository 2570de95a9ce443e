//! Polling retrieval: a `GetRecords` loop per shard, behind a [`ShardReader`].
//!
//! [`PollingRetriever::start`] takes a shard iterator for the [`StartingPosition`] (before it
//! returns, so a `LATEST` reader sees exactly the records put after `start` returned), then a
//! background task calls `GetRecords` with [`PollingConfig::max_records`], deaggregates, and hands
//! the batches to the reader within its [`PrefetchLimits`].
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
//!   ([`PrefetchLimits`]); a processor that holds its batches stops the fetching.
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
//!   ([`Error::Kinesis`]) and ends. (The SDK client's own retry layer runs first.)
//! - **Shard not found** (`ResourceNotFoundException` from `GetShardIterator` or
//!   `GetRecords`: the shard was trimmed after its retention period, or the stream deleted):
//!   as the Java KCL (`KinesisDataFetcher`), the shard's end, reported with no children (the
//!   worker finds them through `ListShards`).
//! - **Shard end**: a response without `NextShardIterator` ends the shard; its batch carries
//!   [`RecordBatch::shard_end`] with the `ChildShards` reported (possibly none).
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

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_smithy_types::DateTime;
use backon::{BackoffBuilder, ExponentialBackoff};
use metrics::{Counter, Gauge, Histogram};
use tokio::time::Instant;
use tracing::Instrument;

use super::finish_batch;
use super::metrics::{
    BYTES_FETCHED, EXPIRED_ITERATORS, GET_RECORDS_DURATION, GET_RECORDS_RETRIES,
    GET_RECORDS_THROTTLED, MILLIS_BEHIND_LATEST, RECORDS_FETCHED, ShardLabels,
    USER_RECORDS_DELIVERED,
};
use super::position::ResumeFilter;
use super::prefetch::BatchSender;
use super::{
    Deaggregator, OutOfRangePolicy, PrefetchLimits, RecordBatch, ShardReader, StartingPosition,
};
use crate::aws::kinesis::kinesis_error;
use crate::aws::retry::retrying;
use crate::aws::{KinesisApi, RetryPolicy, StreamTarget, classify};
use crate::error::{ConfigError, Error, Result};
use crate::lease::HashKeyRange;
use crate::record::Record;
use crate::sequence::SequenceNumber;
use crate::shard::ChildShard;

/// Default [`PollingConfig::max_records`]: 10 000, the Java KCL's `maxRecords` (and the most
/// Kinesis returns per call).
pub(crate) const DEFAULT_MAX_RECORDS: u32 = 10_000;
/// Default [`PollingConfig::idle_time_between_reads`]: 1 500 ms, the Java KCL's
/// `idleTimeBetweenReadsInMillis`.
pub(crate) const DEFAULT_IDLE_TIME_BETWEEN_READS: Duration = Duration::from_millis(1_500);
/// Default [`PollingConfig::min_time_between_reads`]: 200 ms (Kinesis serves 5 `GetRecords` per
/// second per shard).
pub(crate) const DEFAULT_MIN_TIME_BETWEEN_READS: Duration = Duration::from_millis(200);
/// Default [`PollingConfig::retry_min_delay`]: 100 ms.
pub(crate) const DEFAULT_RETRY_MIN_DELAY: Duration = Duration::from_millis(100);
/// Default [`PollingConfig::retry_max_delay`]: 10 s.
pub(crate) const DEFAULT_RETRY_MAX_DELAY: Duration = Duration::from_secs(10);
/// Default [`PollingConfig::retry_budget`]: 5 minutes.
pub(crate) const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(300);
/// Default [`PollingConfig::request_timeout`]: 30 s, the Java KCL's `kinesisRequestTimeout`.
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most `InvalidArgumentException`s in a row on `GetRecords` before giving up.
const MAX_INVALID_ITERATORS_IN_A_ROW: u32 = 3;

/// Settings of polling retrieval. Build with [`PollingConfig::builder`]; the defaults are the
/// Java KCL's where it has the setting.
///
/// ```
/// use std::time::Duration;
/// use kinesis_kcl::{OutOfRangePolicy, PollingConfig};
///
/// let config = PollingConfig::default();
/// assert_eq!(config.max_records(), 10_000);
/// assert_eq!(config.idle_time_between_reads(), Duration::from_millis(1_500));
/// assert_eq!(config.prefetch().max_batches(), 3);
/// assert_eq!(config.prefetch().max_records(), 30_000);
/// assert_eq!(config.prefetch().max_bytes(), 8 * 1024 * 1024);
/// assert_eq!(config.out_of_range(), OutOfRangePolicy::DropAggregate);
///
/// let custom = PollingConfig::builder()
///     .max_records(500)
///     .idle_time_between_reads(Duration::from_millis(250))
///     .out_of_range(OutOfRangePolicy::Deliver)
///     .build()?;
/// assert_eq!(custom.max_records(), 500);
/// assert!(PollingConfig::builder().max_records(10_001).build().is_err());
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollingConfig {
    max_records: u32,
    idle_time_between_reads: Duration,
    min_time_between_reads: Duration,
    prefetch: PrefetchLimits,
    out_of_range: OutOfRangePolicy,
    deliver_empty_batches: bool,
    retry: RetryPolicy,
    request_timeout: Duration,
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            max_records: DEFAULT_MAX_RECORDS,
            idle_time_between_reads: DEFAULT_IDLE_TIME_BETWEEN_READS,
            min_time_between_reads: DEFAULT_MIN_TIME_BETWEEN_READS,
            prefetch: PrefetchLimits::default(),
            out_of_range: OutOfRangePolicy::default(),
            deliver_empty_batches: false,
            retry: RetryPolicy::new(
                DEFAULT_RETRY_BUDGET,
                DEFAULT_RETRY_MIN_DELAY,
                DEFAULT_RETRY_MAX_DELAY,
            ),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl PollingConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> PollingConfigBuilder {
        PollingConfigBuilder {
            config: PollingConfig::default(),
            prefetch: (None, None, None),
        }
    }

    /// Most records per `GetRecords` call (its `Limit`). Default 10 000, the Java KCL's
    /// `maxRecords`; at most 10 000.
    pub fn max_records(&self) -> u32 {
        self.max_records
    }

    /// The pause after a response with no records at the tip of the shard, or a throttled
    /// call. Default 1 500 ms, the Java KCL's `idleTimeBetweenReadsInMillis` (which Java waits
    /// between every call, where this waits only after an empty response at the tip of the
    /// shard or a throttled call).
    pub fn idle_time_between_reads(&self) -> Duration {
        self.idle_time_between_reads
    }

    /// The least time between the starts of two `GetRecords` calls. Default 200 ms: Kinesis
    /// serves 5 calls per second per shard, shared by all its polling consumers.
    pub fn min_time_between_reads(&self) -> Duration {
        self.min_time_between_reads
    }

    /// How much the reader holds ahead of the processor. Default: the Java KCL's 3 batches
    /// (`maxPendingProcessRecordsInput`), 30 000 records (`maxRecordsCount`), 8 MiB
    /// (`maxByteSize`).
    pub fn prefetch(&self) -> PrefetchLimits {
        self.prefetch
    }

    /// What to do with aggregates holding user records outside the shard's hash key range.
    /// Default [`OutOfRangePolicy::DropAggregate`], as the Java KCL (see the policy for when
    /// [`OutOfRangePolicy::Deliver`] fits better).
    pub fn out_of_range(&self) -> OutOfRangePolicy {
        self.out_of_range
    }

    /// Whether responses that leave no user record are delivered as empty batches (to see
    /// [`ProcessRecordsInput::millis_behind_latest`](crate::ProcessRecordsInput::millis_behind_latest)
    /// move). Default false, as the Java KCL's
    /// `callProcessRecordsEvenForEmptyRecordList`.
    pub fn deliver_empty_batches(&self) -> bool {
        self.deliver_empty_batches
    }

    /// How throttles and transient errors are retried: from 100 ms doubling up to 10 s,
    /// transient errors in a row for 5 minutes in total (throttling without limit). The
    /// parts are [`retry_min_delay`](Self::retry_min_delay),
    /// [`retry_max_delay`](Self::retry_max_delay) and [`retry_budget`](Self::retry_budget).
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The first retry delay after a throttle or a transient error (doubled, with up to 100 %
    /// jitter, on each further one). Default 100 ms.
    pub fn retry_min_delay(&self) -> Duration {
        self.retry.min_delay
    }

    /// The largest retry delay (before jitter). Default 10 s.
    pub fn retry_max_delay(&self) -> Duration {
        self.retry.max_delay
    }

    /// How long transient errors in a row are retried before the reader fails with the last
    /// one. Throttling is retried without limit. Default 5 minutes.
    pub fn retry_budget(&self) -> Duration {
        self.retry.budget
    }

    /// The time limit of one `GetRecords` or `GetShardIterator` call, retries of the SDK
    /// client included (a call that times out is retried as a transient error). Default 30 s,
    /// the Java KCL's `kinesisRequestTimeout`.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

/// Builds a [`PollingConfig`]; see its getters for the meaning and defaults.
#[derive(Clone, Debug)]
pub struct PollingConfigBuilder {
    config: PollingConfig,
    prefetch: (Option<usize>, Option<usize>, Option<usize>),
}

impl PollingConfigBuilder {
    /// See [`PollingConfig::max_records`] (1 to 10 000).
    pub fn max_records(mut self, max_records: u32) -> Self {
        self.config.max_records = max_records;
        self
    }

    /// See [`PollingConfig::idle_time_between_reads`].
    pub fn idle_time_between_reads(mut self, idle: Duration) -> Self {
        self.config.idle_time_between_reads = idle;
        self
    }

    /// See [`PollingConfig::min_time_between_reads`].
    pub fn min_time_between_reads(mut self, min: Duration) -> Self {
        self.config.min_time_between_reads = min;
        self
    }

    /// See [`PollingConfig::prefetch`]: most batches held (at least 1).
    pub fn max_pending_batches(mut self, max: usize) -> Self {
        self.prefetch.0 = Some(max);
        self
    }

    /// See [`PollingConfig::prefetch`]: most user records held (at least 1).
    pub fn max_pending_records(mut self, max: usize) -> Self {
        self.prefetch.1 = Some(max);
        self
    }

    /// See [`PollingConfig::prefetch`]: most bytes of record data held (at least 1).
    pub fn max_pending_bytes(mut self, max: usize) -> Self {
        self.prefetch.2 = Some(max);
        self
    }

    /// See [`PollingConfig::out_of_range`].
    pub fn out_of_range(mut self, policy: OutOfRangePolicy) -> Self {
        self.config.out_of_range = policy;
        self
    }

    /// See [`PollingConfig::deliver_empty_batches`].
    pub fn deliver_empty_batches(mut self, deliver: bool) -> Self {
        self.config.deliver_empty_batches = deliver;
        self
    }

    /// See [`PollingConfig::retry`]: all three retry settings at once.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.config.retry = retry;
        self
    }

    /// See [`PollingConfig::retry_min_delay`].
    pub fn retry_min_delay(mut self, delay: Duration) -> Self {
        self.config.retry.min_delay = delay;
        self
    }

    /// See [`PollingConfig::retry_max_delay`].
    pub fn retry_max_delay(mut self, delay: Duration) -> Self {
        self.config.retry.max_delay = delay;
        self
    }

    /// See [`PollingConfig::retry_budget`].
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.config.retry.budget = budget;
        self
    }

    /// See [`PollingConfig::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Checks and builds the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if `max_records` is not in `1..=10_000`, a prefetch limit is 0, the
    /// retry delays are zero or out of order, or the request timeout is zero.
    pub fn build(self) -> Result<PollingConfig, ConfigError> {
        let mut config = self.config;
        if !(1..=DEFAULT_MAX_RECORDS).contains(&config.max_records) {
            return Err(invalid(
                "max_records",
                config.max_records,
                format!("must be between 1 and {DEFAULT_MAX_RECORDS}"),
            ));
        }
        if config.retry.min_delay.is_zero() {
            return Err(invalid(
                "retry_min_delay",
                config.retry.min_delay,
                "must be positive",
            ));
        }
        if config.retry.max_delay < config.retry.min_delay {
            return Err(invalid(
                "retry_max_delay",
                config.retry.max_delay,
                format!(
                    "must be at least retry_min_delay ({:?})",
                    config.retry.min_delay
                ),
            ));
        }
        if config.request_timeout.is_zero() {
            return Err(invalid(
                "request_timeout",
                config.request_timeout,
                "must be positive",
            ));
        }
        let defaults = PrefetchLimits::default();
        config.prefetch = PrefetchLimits::checked(
            "PollingConfig",
            self.prefetch.0.unwrap_or(defaults.max_batches()),
            self.prefetch.1.unwrap_or(defaults.max_records()),
            self.prefetch.2.unwrap_or(defaults.max_bytes()),
        )?;
        Ok(config)
    }
}

fn invalid(
    field: &'static str,
    value: impl std::fmt::Debug,
    limit: impl Into<std::borrow::Cow<'static, str>>,
) -> ConfigError {
    ConfigError::new("PollingConfig", field, value, limit)
}

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
    /// or `ListShards`), used by the [`OutOfRangePolicy`] (no check when `None`).
    ///
    /// The first shard iterator is taken before this returns (retrying transient errors).
    ///
    /// # Errors
    ///
    /// [`Error::Kinesis`] if `GetShardIterator` fails with an error that is not retried (a
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
        let mut fetcher = Fetcher {
            api: KinesisApi::new(self.client.clone())
                .with_request_timeout(self.config.request_timeout),
            target: StreamTarget::parse(self.stream.clone()),
            stream: self.stream.clone(),
            shard_id,
            config: self.config.clone(),
            iterator: None,
            resume: position.resume_filter(),
            start: position,
            last_fetched: None,
            deaggregator: Deaggregator::new(
                labels.clone(),
                hash_key_range,
                self.config.out_of_range,
            ),
            metrics: FetchMetrics::new(&labels),
            pause: None,
            last_call: None,
            throttle_backoff: None,
            error_backoff: None,
            restart_backoff: None,
            restarts_in_a_row: 0,
            shard_ended: false,
        };
        span.in_scope(|| tracing::debug!(position = ?fetcher.start, "starting polling retrieval"));
        fetcher.iterator = fetcher
            .new_iterator(&fetcher.start)
            .instrument(span.clone())
            .await?;
        fetcher.shard_ended = fetcher.iterator.is_none();
        Ok(ShardReader::spawn(
            &labels,
            self.config.prefetch,
            span,
            move |sender| fetcher.run(sender),
        ))
    }
}

/// The metric handles of one shard's fetcher.
struct FetchMetrics {
    labels: ShardLabels,
    duration_ok: Histogram,
    duration_throttled: Histogram,
    duration_expired: Histogram,
    duration_error: Histogram,
    throttled: Counter,
    expired: Counter,
    records: Counter,
    bytes: Counter,
    delivered: Counter,
    millis_behind: Gauge,
}

impl FetchMetrics {
    fn new(labels: &ShardLabels) -> Self {
        FetchMetrics {
            duration_ok: labels.histogram_with(GET_RECORDS_DURATION, "outcome", "ok"),
            duration_throttled: labels.histogram_with(GET_RECORDS_DURATION, "outcome", "throttled"),
            duration_expired: labels.histogram_with(GET_RECORDS_DURATION, "outcome", "expired"),
            duration_error: labels.histogram_with(GET_RECORDS_DURATION, "outcome", "error"),
            throttled: labels.counter(GET_RECORDS_THROTTLED),
            expired: labels.counter(EXPIRED_ITERATORS),
            records: labels.counter(RECORDS_FETCHED),
            bytes: labels.counter(BYTES_FETCHED),
            delivered: labels.counter(USER_RECORDS_DELIVERED),
            millis_behind: labels.gauge(MILLIS_BEHIND_LATEST),
            labels: labels.clone(),
        }
    }

    fn retried(&self, code: &'static str) {
        self.labels
            .counter_with(GET_RECORDS_RETRIES, "code", code)
            .increment(1);
    }
}

/// The state of one shard's `GetRecords` loop.
struct Fetcher {
    api: KinesisApi,
    target: StreamTarget,
    stream: String,
    shard_id: String,
    config: PollingConfig,
    /// The iterator for the next call; `None` when a new one must be taken.
    iterator: Option<String>,
    start: StartingPosition,
    resume: ResumeFilter,
    /// The last Kinesis record fetched: an expired iterator restarts after it.
    last_fetched: Option<Arc<SequenceNumber>>,
    deaggregator: Deaggregator,
    metrics: FetchMetrics,
    /// A wait owed before the next call (idle or backoff).
    pause: Option<Duration>,
    last_call: Option<Instant>,
    throttle_backoff: Option<ExponentialBackoff>,
    /// Transient errors in a row (bounded by the retry budget).
    error_backoff: Option<ExponentialBackoff>,
    /// Expired or invalid iterators in a row.
    restart_backoff: Option<ExponentialBackoff>,
    restarts_in_a_row: u32,
    /// `GetShardIterator` returned no iterator: the shard is over.
    shard_ended: bool,
}

/// How a failed call is handled.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Throttled,
    Expired,
    InvalidArgument,
    Transient(&'static str),
    /// `ResourceNotFoundException`: the shard is gone (trimmed after its retention, or its
    /// stream deleted). As the Java KCL, that is the shard's end.
    Gone,
    Fatal,
}

/// The fetcher's own cases first (see the [module](self)); anything else is transient
/// exactly when the crate's classifier says so (its label is the metric's `code`).
fn classify<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Failure {
    if let SdkError::ServiceError(service) = error {
        match service.err().code() {
            Some("ProvisionedThroughputExceededException") => return Failure::Throttled,
            Some("ExpiredIteratorException") => return Failure::Expired,
            Some("InvalidArgumentException") => return Failure::InvalidArgument,
            Some("ResourceNotFoundException") => return Failure::Gone,
            _ => {}
        }
    }
    match classify::classify(error) {
        Some(transient) => Failure::Transient(transient.label),
        None => Failure::Fatal,
    }
}

impl Fetcher {
    fn kinesis_error<E>(&self, operation: &'static str, error: SdkError<E, HttpResponse>) -> Error
    where
        aws_sdk_kinesis::Error: From<SdkError<E, HttpResponse>>,
    {
        kinesis_error(operation, &self.stream, error)
    }

    /// Takes a shard iterator for `position`, retrying throttling and transient errors within
    /// the retry budget. `None` if Kinesis returned none (the shard is over).
    async fn new_iterator(&self, position: &StartingPosition) -> Result<Option<String>> {
        let request = position.iterator_request();
        let send = || {
            self.api.get_shard_iterator(
                &self.target,
                &self.shard_id,
                request.kind.clone(),
                request.sequence_number.map(|s| s.to_string()),
                request.timestamp.map(DateTime::from),
            )
        };
        let output = retrying(self.config.retry, send, |error, delay| {
            self.metrics.retried(match classify(error) {
                Failure::Transient(code) => code,
                _ => "throttled",
            });
            tracing::debug!(
                code = error.code().unwrap_or("-"),
                ?delay,
                "GetShardIterator failed, retrying"
            );
        })
        .await;
        let output = match output {
            Ok(output) => output,
            Err(error) if classify(&error) == Failure::Gone => {
                self.gone();
                return Ok(None);
            }
            Err(error) => return Err(self.kinesis_error("GetShardIterator", error)),
        };
        tracing::debug!(kind = request.kind.as_str(), "got a shard iterator");
        Ok(output.shard_iterator)
    }

    /// The shard is not found: it ends here, with no children known (the worker finds them
    /// through `ListShards`).
    fn gone(&self) {
        tracing::warn!(
            "shard not found (trimmed after its retention, or its stream deleted): treating it \
             as ended"
        );
    }

    /// Fetches until the consumer goes away, the shard ends or an error ends the reader.
    async fn run(mut self, sender: BatchSender) {
        loop {
            sender.wait_for_room().await;
            match self.fetch().await {
                Ok(Some((batch, bytes))) => {
                    let end = batch.is_shard_end();
                    if sender.send(batch, bytes).await.is_err() {
                        return;
                    }
                    if end {
                        tracing::debug!("shard end delivered");
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "retrieval failed");
                    sender.fail(error).await;
                    return;
                }
            }
        }
    }

    /// Waits what is owed before the next call.
    async fn pace(&mut self) {
        let mut wake = self.pause.take().map(|pause| Instant::now() + pause);
        if let Some(last) = self.last_call {
            let earliest = last + self.config.min_time_between_reads;
            wake = Some(wake.map_or(earliest, |w| w.max(earliest)));
        }
        if let Some(wake) = wake {
            tokio::time::sleep_until(wake).await;
        }
    }

    /// One successful `GetRecords` (retrying what can be retried): the batch to deliver with
    /// its bytes, or `None` if it left nothing to deliver.
    async fn fetch(&mut self) -> Result<Option<(RecordBatch, usize)>> {
        loop {
            if self.shard_ended {
                return Ok(Some((
                    RecordBatch::new(Vec::new(), None, Some(Vec::new())),
                    0,
                )));
            }
            self.pace().await;
            let iterator = match self.iterator.take() {
                Some(iterator) => iterator,
                None => {
                    let position = match &self.last_fetched {
                        Some(seq) => StartingPosition::AfterSequenceNumber(seq.as_ref().clone()),
                        None => self.start.clone(),
                    };
                    match self.new_iterator(&position).await? {
                        Some(iterator) => iterator,
                        None => {
                            self.shard_ended = true;
                            continue;
                        }
                    }
                }
            };
            let started = Instant::now();
            self.last_call = Some(started);
            let result = self
                .api
                .get_records(&self.target, &iterator, self.config.max_records as i32)
                .await;
            let elapsed = started.elapsed();
            let error = match result {
                Ok(output) => {
                    self.metrics.duration_ok.record(elapsed);
                    self.throttle_backoff = None;
                    self.error_backoff = None;
                    self.restart_backoff = None;
                    self.restarts_in_a_row = 0;
                    return self.accept(output);
                }
                Err(error) => error,
            };
            match classify(&error) {
                Failure::Throttled => {
                    self.metrics.duration_throttled.record(elapsed);
                    self.metrics.throttled.increment(1);
                    let backoff = self
                        .throttle_backoff
                        .get_or_insert_with(|| self.config.retry.backoff().build())
                        .next()
                        .unwrap_or(self.config.retry.max_delay);
                    let pause = backoff.max(self.config.idle_time_between_reads);
                    tracing::debug!(?pause, "GetRecords throttled, backing off");
                    self.pause = Some(pause);
                    self.iterator = Some(iterator);
                }
                failure @ (Failure::Expired | Failure::InvalidArgument) => {
                    self.metrics.duration_expired.record(elapsed);
                    self.metrics.expired.increment(1);
                    self.restarts_in_a_row += 1;
                    if failure == Failure::InvalidArgument
                        && self.restarts_in_a_row >= MAX_INVALID_ITERATORS_IN_A_ROW
                    {
                        return Err(self.kinesis_error("GetRecords", error));
                    }
                    if self.restarts_in_a_row > 1 {
                        self.pause = self
                            .restart_backoff
                            .get_or_insert_with(|| self.config.retry.backoff().build())
                            .next();
                    }
                    tracing::info!(
                        code = error.code().unwrap_or("-"),
                        after = ?self.last_fetched.as_deref().map(SequenceNumber::as_str),
                        "shard iterator expired or invalid, taking a new one"
                    );
                    // `self.iterator` stays `None`: the next round takes a new one.
                }
                Failure::Transient(code) => {
                    self.metrics.duration_error.record(elapsed);
                    self.metrics.retried(code);
                    let delay = self
                        .error_backoff
                        .get_or_insert_with(|| self.config.retry.budgeted_backoff().build())
                        .next();
                    let Some(delay) = delay else {
                        return Err(self.kinesis_error("GetRecords", error));
                    };
                    tracing::debug!(code, ?delay, "transient GetRecords failure, retrying");
                    self.pause = Some(delay);
                    self.iterator = Some(iterator);
                }
                Failure::Gone => {
                    self.metrics.duration_error.record(elapsed);
                    self.gone();
                    self.shard_ended = true;
                }
                Failure::Fatal => {
                    self.metrics.duration_error.record(elapsed);
                    return Err(self.kinesis_error("GetRecords", error));
                }
            }
        }
    }

    /// Turns a response into the batch to deliver, advancing the position.
    fn accept(&mut self, output: GetRecordsOutput) -> Result<Option<(RecordBatch, usize)>> {
        let GetRecordsOutput {
            records,
            next_shard_iterator,
            millis_behind_latest,
            child_shards,
            ..
        } = output;
        let fetched = records.len();
        let mut user_records: Vec<Record> = Vec::with_capacity(fetched);
        let mut fetched_bytes = 0;
        for record in records {
            let (sequence_number, size) = self.deaggregator.push(record, &mut user_records)?;
            fetched_bytes += size;
            self.last_fetched = Some(sequence_number);
        }
        self.metrics.records.increment(fetched as u64);
        self.metrics.bytes.increment(fetched_bytes as u64);
        self.resume.apply(&mut user_records);

        let millis_behind_latest = millis_behind_latest.and_then(|ms| u64::try_from(ms).ok());
        if let Some(ms) = millis_behind_latest {
            self.metrics.millis_behind.set(ms as f64);
        }
        let shard_end = match next_shard_iterator {
            Some(next) => {
                self.iterator = Some(next);
                None
            }
            None => Some(
                child_shards
                    .unwrap_or_default()
                    .iter()
                    .map(ChildShard::from)
                    .collect::<Vec<_>>(),
            ),
        };
        if fetched == 0 && shard_end.is_none() && millis_behind_latest.unwrap_or(0) == 0 {
            self.pause = Some(self.config.idle_time_between_reads);
        }
        Ok(finish_batch(
            user_records,
            millis_behind_latest,
            shard_end,
            self.config.deliver_empty_batches,
            &self.metrics.delivered,
        ))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::operation::get_records::GetRecordsError;
    use aws_smithy_runtime_api::client::result::ServiceError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn service_error(code: &str, status: u16) -> SdkError<GetRecordsError, HttpResponse> {
        let error = GetRecordsError::generic(ErrorMetadata::builder().code(code).build());
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::ServiceError(ServiceError::builder().source(error).raw(raw).build())
    }

    #[test]
    fn errors_are_classified() {
        let cases = [
            (
                "ProvisionedThroughputExceededException",
                400,
                Failure::Throttled,
            ),
            ("ExpiredIteratorException", 400, Failure::Expired),
            ("InvalidArgumentException", 400, Failure::InvalidArgument),
            (
                "InternalFailure",
                500,
                Failure::Transient("InternalFailure"),
            ),
            (
                "KMSThrottlingException",
                400,
                Failure::Transient("KMSThrottlingException"),
            ),
            // Fatal here before the crate had one classifier; transient everywhere now.
            (
                "LimitExceededException",
                400,
                Failure::Transient("LimitExceededException"),
            ),
            (
                "ThrottlingException",
                400,
                Failure::Transient("ThrottlingException"),
            ),
            ("SomethingNew", 503, Failure::Transient("http_5xx")),
            ("ResourceNotFoundException", 400, Failure::Gone),
            ("AccessDeniedException", 400, Failure::Fatal),
        ];
        for (code, status, expected) in cases {
            assert_eq!(classify(&service_error(code, status)), expected, "{code}");
        }
    }

    #[test]
    fn retry_settings_are_one_retry_policy() {
        let config = PollingConfig::default();
        assert_eq!(
            config.retry(),
            RetryPolicy::new(
                Duration::from_secs(300),
                Duration::from_millis(100),
                Duration::from_secs(10)
            )
        );
        let policy = RetryPolicy::new(
            Duration::from_secs(1),
            Duration::from_millis(5),
            Duration::from_millis(50),
        );
        let custom = PollingConfig::builder().retry(policy).build().unwrap();
        assert_eq!(custom.retry(), policy);
        assert_eq!(custom.retry_min_delay(), Duration::from_millis(5));
        assert_eq!(custom.retry_max_delay(), Duration::from_millis(50));
        assert_eq!(custom.retry_budget(), Duration::from_secs(1));
        let backwards = RetryPolicy::new(policy.budget, policy.max_delay, policy.min_delay);
        assert!(PollingConfig::builder().retry(backwards).build().is_err());
    }

    #[test]
    fn config_defaults_and_validation() {
        let config = PollingConfig::builder().build().unwrap();
        assert_eq!(config, PollingConfig::default());
        assert_eq!(config.min_time_between_reads(), Duration::from_millis(200));
        assert_eq!(config.request_timeout(), Duration::from_secs(30));
        assert!(!config.deliver_empty_batches());
        for bad in [
            PollingConfig::builder().max_records(0),
            PollingConfig::builder().max_pending_bytes(0),
            PollingConfig::builder().retry_min_delay(Duration::ZERO),
            PollingConfig::builder()
                .retry_min_delay(Duration::from_secs(2))
                .retry_max_delay(Duration::from_secs(1)),
            PollingConfig::builder().request_timeout(Duration::ZERO),
        ] {
            assert!(matches!(bad.build(), Err(ConfigError { .. })));
        }
        let limits = PollingConfig::builder()
            .max_pending_batches(7)
            .build()
            .unwrap()
            .prefetch();
        assert_eq!((limits.max_batches(), limits.max_records()), (7, 30_000));
    }
}
