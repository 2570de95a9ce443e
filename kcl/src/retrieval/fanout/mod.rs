//! Enhanced fan-out retrieval: `SubscribeToShard` per shard, behind a [`ShardReader`].
//!
//! With enhanced fan-out, each registered *stream consumer* gets its own 2 MB/s of read
//! throughput per shard, and Kinesis pushes the records over a long-lived HTTP/2 response
//! instead of being polled: lower latency, and no sharing of the 5 `GetRecords` per second of
//! a shard with the other applications reading it. The processor API is the same as with
//! polling; a worker chooses with [`Retrieval::FanOut`](crate::Retrieval::FanOut).
//!
//! # The consumer
//!
//! [`FanOutRetriever::register`] finds the stream consumer named
//! [`FanOutConfig::consumer_name`] (a worker names it after its application by default, as the
//! Java KCL does), registers it if it does not exist (`RegisterStreamConsumer`; several workers
//! racing to register it is fine), and waits until it is `ACTIVE`. The consumer outlives the
//! process, so a restart reuses it. [`FanOutConfig::consumer_arn`] uses a given consumer
//! instead, without any registration call. [`FanOutRetriever::deregister`] removes it (a worker
//! does so on shutdown with [`FanOutConfig::deregister_on_shutdown`]; the Java KCL never does).
//!
//! # One subscription per shard
//!
//! [`FanOutRetriever::start`] subscribes to the shard at the [`StartingPosition`] (the first
//! `SubscribeToShard` call is answered before it returns, so a `LATEST` reader sees exactly the
//! records put after `start` returned). A background task then turns each
//! `SubscribeToShardEvent` into a [`RecordBatch`](super::RecordBatch): the records are
//! deaggregated and filtered exactly as polling does them (the same [`OutOfRangePolicy`], and
//! the same skip of user records at or before a sub-sequence checkpoint).
//!
//! - **Flow control.** The task reads the next event only when the reader has room
//!   ([`FanOutConfig::prefetch`]); until then the events stay unread in the connection, whose
//!   HTTP/2 flow-control window (or TCP window) stops the server. A slow processor therefore
//!   holds at most the prefetch limits plus one event (at most the 2 MB/s × a few seconds
//!   Kinesis puts in one event) and whatever the window holds.
//! - **Renewal.** A subscription ends after about 5 minutes. The task subscribes again
//!   `AFTER_SEQUENCE_NUMBER` the last `ContinuationSequenceNumber` it delivered (as the Java
//!   KCL does), and drops any record at or before the last record it delivered, should a server
//!   deliver one again: no gap, no duplicate. Before any event arrived, it subscribes again at
//!   the starting position. Until a first record is delivered, records before the starting
//!   position (or before the last continuation) are dropped too: Kinesis sends none, but
//!   ferrokinesis 0.7 ignores the `SequenceNumber` and `Timestamp` of `SubscribeToShard`'s
//!   starting position (it starts such subscriptions at `TRIM_HORIZON`), and delivery stays
//!   exact there, at the cost of the server re-sending the shard on each renewal.
//! - **Pacing.** Kinesis accepts one `SubscribeToShard` per second per shard and consumer:
//!   subscriptions of a shard start at least [`FanOutConfig::min_time_between_subscribes`]
//!   apart.
//! - **Errors.** `ResourceInUseException` (an older subscription of this consumer to this
//!   shard is still open, e.g. the previous owner's), transient errors (the crate's one
//!   classification: throttling such as `LimitExceededException` or `KMSThrottlingException`,
//!   internal failures such as HTTP 5xx or `InternalFailure`, timeouts), dropped connections,
//!   and an event stream silent for [`FanOutConfig::idle_timeout`] are retried with an exponential
//!   backoff with jitter from [`FanOutConfig::retry_min_delay`] to
//!   [`FanOutConfig::retry_max_delay`], until [`FanOutConfig::retry_budget`] of failures in a
//!   row (an event delivered ends the row). Then, and on any other error (access denied, a
//!   bad argument), the reader returns the error ([`Error::Kinesis`](crate::Error::Kinesis)) and ends; a worker
//!   restarts the shard from its checkpoint.
//! - **Shard not found** (`ResourceNotFoundException`: trimmed after its retention period,
//!   or the stream deleted): as the Java `FanOutRecordsPublisher`, the shard's end, with no
//!   children known (the worker finds them through `ListShards`). A missing *consumer* is
//!   found at registration, before any subscription.
//! - **Shard end.** The last event of a closed shard has no `ContinuationSequenceNumber` and
//!   lists the shard's children (`ChildShards`); its batch carries them in
//!   [`RecordBatch::shard_end`](super::RecordBatch::shard_end), from which the worker creates
//!   the children's leases (the lineage logic of polling). An event with children and no
//!   records is taken as the end too: ferrokinesis ends a closed shard's subscription that way.
//!
//! # Metrics
//!
//! The rows of `kinesis_kcl_fanout_*` in [`crate::metrics`], plus `kinesis_kcl_millis_behind_latest`,
//! `kinesis_kcl_records_fetched_total`, `kinesis_kcl_bytes_fetched_total`, `kinesis_kcl_user_records_delivered_total`,
//! `kinesis_kcl_out_of_range_records_total`, `kinesis_kcl_aggregates_passed_through_total` and the prefetch
//! gauges as with polling ([`super::metrics`]). Every reader's task runs in a
//! `shard_subscription` tracing span with `stream`, `shard_id` and `consumer`. Record payloads
//! are never logged.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use aws_sdk_kinesis::primitives::Blob;
//! use kinesis_kcl::retrieval::{FanOutConfig, FanOutRetriever, StartingPosition};
//!
//! let bed = kinesis_integration::TestBed::start_with(
//!     kinesis_integration::Backend::Embedded, Default::default()).await?;
//! let stream = bed.create_stream(1).await?;
//! for i in 0..5 {
//!     bed.kinesis().put_record().stream_name(&stream).partition_key("pk")
//!         .data(Blob::new(format!("event {i}"))).send().await?;
//! }
//!
//! let config = FanOutConfig::builder().consumer_name("my-application").build()?;
//! let retriever = FanOutRetriever::register(bed.kinesis().clone(), &stream, config).await?;
//! let mut reader = retriever
//!     .start("shardId-000000000000", None, StartingPosition::TrimHorizon)
//!     .await?;
//! let mut seen = 0;
//! while seen < 5 {
//!     let batch = reader.next().await.expect("the shard is open")?;
//!     seen += batch.records.len();
//! }
//! reader.close().await;
//! retriever.deregister().await?;
//! # Ok(())
//! # }
//! ```

mod registration;
mod subscription;

use std::time::Duration;

use aws_sdk_kinesis::Client;
use tracing::Instrument;

use super::metrics::ShardLabels;
use super::settings::{PendingLimits, check_positive, check_retry_delays};
use super::{OutOfRangePolicy, PrefetchLimits, ShardReader, StartingPosition};
use crate::aws::{KinesisApi, RetryPolicy};
use crate::error::{ConfigError, Result};
use crate::lease::HashKeyRange;

/// Default [`FanOutConfig::registration_retry_delay`]: 1 s, the Java KCL's
/// `retryBackoffMillis`.
pub(crate) const DEFAULT_REGISTRATION_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Default [`FanOutConfig::registration_timeout`]: 2 minutes.
pub(crate) const DEFAULT_REGISTRATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Default [`FanOutConfig::min_time_between_subscribes`]: 1 s (Kinesis accepts one
/// `SubscribeToShard` per second per shard and consumer).
pub(crate) const DEFAULT_MIN_TIME_BETWEEN_SUBSCRIBES: Duration = Duration::from_secs(1);
/// Default [`FanOutConfig::retry_min_delay`]: 1 s.
pub(crate) const DEFAULT_FANOUT_RETRY_MIN_DELAY: Duration = Duration::from_secs(1);
/// Default [`FanOutConfig::retry_max_delay`]: 10 s.
pub(crate) const DEFAULT_FANOUT_RETRY_MAX_DELAY: Duration = Duration::from_secs(10);
/// Default [`FanOutConfig::retry_budget`]: 5 minutes.
pub(crate) const DEFAULT_FANOUT_RETRY_BUDGET: Duration = Duration::from_secs(300);
/// Default [`FanOutConfig::request_timeout`]: 30 s, the Java KCL's `kinesisRequestTimeout`.
pub(crate) const DEFAULT_FANOUT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`FanOutConfig::idle_timeout`]: 30 s (Kinesis sends an event at least every 5 s,
/// records or not).
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of enhanced fan-out retrieval. Build with [`FanOutConfig::builder`].
///
/// ```
/// use std::time::Duration;
/// use kinesis_kcl::FanOutConfig;
///
/// let config = FanOutConfig::default();
/// assert_eq!(config.consumer_name(), None); // a worker uses its application name
/// assert!(!config.deregister_on_shutdown());
/// assert_eq!(config.min_time_between_subscribes(), Duration::from_secs(1));
/// assert_eq!(config.prefetch().max_batches(), 3);
///
/// let custom = FanOutConfig::builder()
///     .consumer_name("billing-reader")
///     .deregister_on_shutdown(true)
///     .max_pending_batches(10)
///     .build()?;
/// assert_eq!(custom.consumer_name(), Some("billing-reader"));
/// assert!(FanOutConfig::builder().consumer_name("no spaces").build().is_err());
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FanOutConfig {
    consumer_name: Option<String>,
    consumer_arn: Option<String>,
    deregister_on_shutdown: bool,
    prefetch: PrefetchLimits,
    out_of_range: OutOfRangePolicy,
    deliver_empty_batches: bool,
    registration_retry: RetryPolicy,
    min_time_between_subscribes: Duration,
    subscription_retry: RetryPolicy,
    request_timeout: Duration,
    idle_timeout: Duration,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        FanOutConfig {
            consumer_name: None,
            consumer_arn: None,
            deregister_on_shutdown: false,
            prefetch: PrefetchLimits::default(),
            out_of_range: OutOfRangePolicy::default(),
            deliver_empty_batches: false,
            registration_retry: RetryPolicy::new(
                DEFAULT_REGISTRATION_TIMEOUT,
                DEFAULT_REGISTRATION_RETRY_DELAY,
                DEFAULT_REGISTRATION_RETRY_DELAY,
            ),
            min_time_between_subscribes: DEFAULT_MIN_TIME_BETWEEN_SUBSCRIBES,
            subscription_retry: RetryPolicy::new(
                DEFAULT_FANOUT_RETRY_BUDGET,
                DEFAULT_FANOUT_RETRY_MIN_DELAY,
                DEFAULT_FANOUT_RETRY_MAX_DELAY,
            ),
            request_timeout: DEFAULT_FANOUT_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl FanOutConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> FanOutConfigBuilder {
        FanOutConfigBuilder {
            config: FanOutConfig::default(),
            prefetch: PendingLimits::default(),
        }
    }

    /// The stream consumer to find or register. Default `None`: a worker uses its application
    /// name (the Java KCL's `consumerName`, defaulting to `applicationName`);
    /// finding or registering the consumer needs a name or
    /// [`consumer_arn`](Self::consumer_arn).
    pub fn consumer_name(&self) -> Option<&str> {
        self.consumer_name.as_deref()
    }

    /// The ARN of an existing consumer to use as is: no registration call is made (the Java
    /// KCL's `consumerArn`). Default `None`. Only for a single stream.
    pub fn consumer_arn(&self) -> Option<&str> {
        self.consumer_arn.as_deref()
    }

    /// Whether a worker deregisters the consumer when it shuts down. Default false (as the
    /// Java KCL, which never deregisters): deregistering ends the subscriptions of every other
    /// worker of the application, so enable it only where the worker is the last one.
    pub fn deregister_on_shutdown(&self) -> bool {
        self.deregister_on_shutdown
    }

    /// How much the reader holds ahead of the processor. Default: as polling, the Java KCL's
    /// 3 batches, 30 000 records, 8 MiB.
    pub fn prefetch(&self) -> PrefetchLimits {
        self.prefetch
    }

    /// What to do with aggregates holding user records outside the shard's hash key range.
    /// Default [`OutOfRangePolicy::DropAggregate`], as polling.
    pub fn out_of_range(&self) -> OutOfRangePolicy {
        self.out_of_range
    }

    /// Whether events that leave no user record are delivered as empty batches. Default false
    /// (the Java KCL's `callProcessRecordsEvenForEmptyRecordList`).
    pub fn deliver_empty_batches(&self) -> bool {
        self.deliver_empty_batches
    }

    /// How the registration's calls are repeated: the pauses while the consumer is not
    /// `ACTIVE` or a call failed with a transient error, from
    /// [`min_delay`](RetryPolicy::min_delay) (default 1 s,
    /// [`registration_retry_delay`](Self::registration_retry_delay)) to
    /// [`max_delay`](RetryPolicy::max_delay) (the same by default: a constant pause), for
    /// [`budget`](RetryPolicy::budget) in total (default 2 minutes,
    /// [`registration_timeout`](Self::registration_timeout)). Each single call
    /// (`DescribeStreamSummary`, `RegisterStreamConsumer`, `DeregisterStreamConsumer`) is
    /// also retried at most 10 times, as the Java KCL's `registerStreamConsumerRetries`.
    pub fn registration_retry(&self) -> RetryPolicy {
        self.registration_retry
    }

    /// The pause between the registration's calls while the consumer is not `ACTIVE`, or a
    /// call was throttled. Default 1 s, the Java KCL's `retryBackoffMillis` (with up to 100 %
    /// jitter here; Java adds up to 100 ms). The first delay of
    /// [`registration_retry`](Self::registration_retry).
    pub fn registration_retry_delay(&self) -> Duration {
        self.registration_retry.min_delay
    }

    /// How long finding or registering the consumer waits for the consumer to be `ACTIVE`, retries
    /// included. Default 2 minutes (the Java KCL gives up after 10 calls of each kind:
    /// `maxDescribeStreamConsumerRetries`, `registerStreamConsumerRetries`). The budget of
    /// [`registration_retry`](Self::registration_retry).
    pub fn registration_timeout(&self) -> Duration {
        self.registration_retry.budget
    }

    /// The least time between two `SubscribeToShard` calls for one shard. Default 1 s, the
    /// service's limit per shard and consumer.
    pub fn min_time_between_subscribes(&self) -> Duration {
        self.min_time_between_subscribes
    }

    /// How failed subscriptions are retried: from 1 s doubling up to 10 s, failures in a row
    /// for 5 minutes in total. The parts are [`retry_min_delay`](Self::retry_min_delay),
    /// [`retry_max_delay`](Self::retry_max_delay) and [`retry_budget`](Self::retry_budget).
    pub fn subscription_retry(&self) -> RetryPolicy {
        self.subscription_retry
    }

    /// The first retry delay after a failed subscription (doubled, with up to 100 % jitter, on
    /// each further one). Default 1 s. The Java KCL has no such setting: it restarts a failed
    /// subscription at its next dispatch tick.
    pub fn retry_min_delay(&self) -> Duration {
        self.subscription_retry.min_delay
    }

    /// The largest retry delay (before jitter). Default 10 s.
    pub fn retry_max_delay(&self) -> Duration {
        self.subscription_retry.max_delay
    }

    /// How long failures in a row are retried before the reader fails with the last one.
    /// Default 5 minutes (an older subscription holding the shard, `ResourceInUseException`,
    /// ends within 5 minutes).
    pub fn retry_budget(&self) -> Duration {
        self.subscription_retry.budget
    }

    /// The time limit of a `SubscribeToShard` call until its response starts (retries of the
    /// SDK client included), and of the registration's calls. Default 30 s, the Java KCL's
    /// `kinesisRequestTimeout`.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// How long a subscription may go without any event (while the reader has room) before
    /// its connection is taken as dropped and a new subscription made. Default 30 s.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The consumer name to use: the configured one, else `default`.
    pub(crate) fn with_default_consumer_name(mut self, default: &str) -> Self {
        if self.consumer_name.is_none() {
            self.consumer_name = Some(default.to_owned());
        }
        self
    }
}

/// Builds a [`FanOutConfig`]; see its getters for the meaning and defaults.
#[derive(Clone, Debug)]
pub struct FanOutConfigBuilder {
    config: FanOutConfig,
    prefetch: PendingLimits,
}

impl FanOutConfigBuilder {
    /// See [`FanOutConfig::consumer_name`] (1 to 128 of `a-zA-Z0-9_.-`).
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.config.consumer_name = Some(name.into());
        self
    }

    /// See [`FanOutConfig::consumer_arn`].
    pub fn consumer_arn(mut self, arn: impl Into<String>) -> Self {
        self.config.consumer_arn = Some(arn.into());
        self
    }

    /// See [`FanOutConfig::deregister_on_shutdown`].
    pub fn deregister_on_shutdown(mut self, deregister: bool) -> Self {
        self.config.deregister_on_shutdown = deregister;
        self
    }

    /// See [`FanOutConfig::prefetch`]: most batches held (at least 1).
    pub fn max_pending_batches(mut self, max: usize) -> Self {
        self.prefetch.batches = Some(max);
        self
    }

    /// See [`FanOutConfig::prefetch`]: most user records held (at least 1).
    pub fn max_pending_records(mut self, max: usize) -> Self {
        self.prefetch.records = Some(max);
        self
    }

    /// See [`FanOutConfig::prefetch`]: most bytes of record data held (at least 1).
    pub fn max_pending_bytes(mut self, max: usize) -> Self {
        self.prefetch.bytes = Some(max);
        self
    }

    /// See [`FanOutConfig::out_of_range`].
    pub fn out_of_range(mut self, policy: OutOfRangePolicy) -> Self {
        self.config.out_of_range = policy;
        self
    }

    /// See [`FanOutConfig::deliver_empty_batches`].
    pub fn deliver_empty_batches(mut self, deliver: bool) -> Self {
        self.config.deliver_empty_batches = deliver;
        self
    }

    /// See [`FanOutConfig::registration_retry`].
    pub fn registration_retry(mut self, retry: RetryPolicy) -> Self {
        self.config.registration_retry = retry;
        self
    }

    /// See [`FanOutConfig::registration_retry_delay`]: a constant pause of `delay` (the
    /// [`registration_retry`](FanOutConfig::registration_retry)'s first and longest delay).
    pub fn registration_retry_delay(mut self, delay: Duration) -> Self {
        self.config.registration_retry.min_delay = delay;
        self.config.registration_retry.max_delay = delay;
        self
    }

    /// See [`FanOutConfig::registration_timeout`].
    pub fn registration_timeout(mut self, timeout: Duration) -> Self {
        self.config.registration_retry.budget = timeout;
        self
    }

    /// See [`FanOutConfig::min_time_between_subscribes`].
    pub fn min_time_between_subscribes(mut self, min: Duration) -> Self {
        self.config.min_time_between_subscribes = min;
        self
    }

    /// See [`FanOutConfig::subscription_retry`]: all three retry settings at once.
    pub fn subscription_retry(mut self, retry: RetryPolicy) -> Self {
        self.config.subscription_retry = retry;
        self
    }

    /// See [`FanOutConfig::retry_min_delay`].
    pub fn retry_min_delay(mut self, delay: Duration) -> Self {
        self.config.subscription_retry.min_delay = delay;
        self
    }

    /// See [`FanOutConfig::retry_max_delay`].
    pub fn retry_max_delay(mut self, delay: Duration) -> Self {
        self.config.subscription_retry.max_delay = delay;
        self
    }

    /// See [`FanOutConfig::retry_budget`].
    pub fn retry_budget(mut self, budget: Duration) -> Self {
        self.config.subscription_retry.budget = budget;
        self
    }

    /// See [`FanOutConfig::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// See [`FanOutConfig::idle_timeout`].
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Checks and builds the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if the consumer name is not 1 to 128 of `a-zA-Z0-9_.-`, the consumer
    /// ARN is not an ARN, a prefetch limit is 0, a delay or timeout is zero, or the retry
    /// delays are out of order.
    pub fn build(self) -> Result<FanOutConfig, ConfigError> {
        let mut config = self.config;
        if let Some(name) = &config.consumer_name {
            validate_consumer_name(name)?;
        }
        if let Some(arn) = &config.consumer_arn
            && !arn.starts_with("arn:")
        {
            return Err(invalid("consumer_arn", arn, "must be an ARN (`arn:…`)"));
        }
        for (field, value) in [
            (
                "registration_retry_delay",
                config.registration_retry.min_delay,
            ),
            ("registration_timeout", config.registration_retry.budget),
            ("retry_min_delay", config.subscription_retry.min_delay),
            ("request_timeout", config.request_timeout),
            ("idle_timeout", config.idle_timeout),
        ] {
            check_positive(BUILDER, field, value)?;
        }
        if config.registration_retry.max_delay < config.registration_retry.min_delay {
            return Err(invalid(
                "registration_retry",
                config.registration_retry,
                "max_delay must be at least min_delay",
            ));
        }
        check_retry_delays(BUILDER, config.subscription_retry)?;
        config.prefetch = self.prefetch.build(BUILDER)?;
        Ok(config)
    }
}

/// Consumer names: 1 to 128 characters of `a-zA-Z0-9_.-` (the API's pattern).
fn validate_consumer_name(name: &str) -> Result<(), ConfigError> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "consumer_name",
            name,
            "must be 1 to 128 characters of a-zA-Z0-9_.-",
        ))
    }
}

/// The builder named in errors.
const BUILDER: &str = "FanOutConfig";

fn invalid(
    field: &'static str,
    value: impl std::fmt::Debug,
    limit: impl Into<std::borrow::Cow<'static, str>>,
) -> ConfigError {
    ConfigError::new(BUILDER, field, value, limit)
}

/// Starts fan-out readers for the shards of one stream, through one registered stream
/// consumer.
///
/// Cheap to clone (the client is shared). See the [module](self) for an example.
#[derive(Clone, Debug)]
pub struct FanOutRetriever {
    api: KinesisApi,
    stream: String,
    consumer_name: Option<String>,
    consumer_arn: String,
    config: FanOutConfig,
}

impl FanOutRetriever {
    /// A retriever reading `stream` (a name, or an ARN — `arn:…`) through `client`, with the
    /// consumer of [`FanOutConfig::consumer_arn`], or else the one named
    /// [`FanOutConfig::consumer_name`], found or registered and `ACTIVE` when this returns.
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) with neither a consumer name nor an ARN;
    /// [`Error::Kinesis`](crate::Error::Kinesis) if `DescribeStreamSummary`, `DescribeStreamConsumer` or
    /// `RegisterStreamConsumer` fails with an error that is not retried (no such stream,
    /// access denied, too many consumers on the stream);
    /// [`Error::ConsumerNotActive`](crate::Error::ConsumerNotActive) if the consumer is not `ACTIVE` within
    /// [`FanOutConfig::registration_timeout`].
    pub async fn register(
        client: Client,
        stream: impl Into<String>,
        config: FanOutConfig,
    ) -> Result<Self> {
        let stream = stream.into();
        let api = KinesisApi::new(client).with_request_timeout(config.request_timeout);
        let consumer_arn = match (&config.consumer_arn, &config.consumer_name) {
            (Some(arn), _) => arn.clone(),
            (None, Some(name)) => {
                let span = tracing::info_span!(
                    "consumer_registration",
                    stream = %stream,
                    consumer = %name
                );
                registration::find_or_register(&api, &stream, name, &config)
                    .instrument(span)
                    .await?
            }
            (None, None) => {
                return Err(invalid(
                    "consumer_name",
                    None::<&str>,
                    "is needed (or consumer_arn) to find or register the stream consumer",
                )
                .into());
            }
        };
        Ok(FanOutRetriever {
            api,
            stream,
            consumer_name: config.consumer_name.clone(),
            consumer_arn,
            config,
        })
    }

    /// The consumer's ARN.
    pub fn consumer_arn(&self) -> &str {
        &self.consumer_arn
    }

    /// The settings.
    pub fn config(&self) -> &FanOutConfig {
        &self.config
    }

    /// Starts reading `shard_id` at `position`; `hash_key_range` is the shard's (from the lease
    /// or `ListShards`), used by the [`OutOfRangePolicy`] (no check when `None`).
    ///
    /// The first subscription is made before this returns (retrying what
    /// [the module](self) retries).
    ///
    /// # Errors
    ///
    /// [`Error::Kinesis`](crate::Error::Kinesis) if `SubscribeToShard` fails with an error that is not retried (no
    /// such shard or consumer, a sequence number of another shard, access denied, …) or
    /// retried errors outlast [`FanOutConfig::retry_budget`].
    pub async fn start(
        &self,
        shard_id: impl Into<String>,
        hash_key_range: Option<HashKeyRange>,
        position: StartingPosition,
    ) -> Result<ShardReader> {
        let shard_id = shard_id.into();
        let labels = ShardLabels::new(&self.stream, &shard_id);
        let span = tracing::info_span!(
            "shard_subscription",
            stream = %self.stream,
            shard_id = %shard_id,
            consumer = %self.consumer_name.as_deref().unwrap_or(&self.consumer_arn),
        );
        let mut subscriber = subscription::Subscriber::new(
            self.api.clone(),
            self.stream.clone(),
            self.consumer_arn.clone(),
            shard_id,
            self.config.clone(),
            &labels,
            hash_key_range,
            position,
        );
        subscriber.subscribe().instrument(span.clone()).await?;
        Ok(ShardReader::spawn(
            &labels,
            self.config.prefetch,
            span,
            move |sender| subscriber.run(sender),
        ))
    }

    /// Deregisters the consumer (`DeregisterStreamConsumer`), ending every subscription made
    /// through it, this application's other workers' included. Kinesis finishes the deletion
    /// in the background; registering the same name again waits for it.
    ///
    /// # Errors
    ///
    /// [`Error::Kinesis`](crate::Error::Kinesis) if the call fails (a consumer already gone is not an error).
    pub async fn deregister(&self) -> Result<()> {
        registration::deregister(&self.api, &self.stream, &self.consumer_arn, &self.config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_settings_are_retry_policies() {
        let config = FanOutConfig::default();
        assert_eq!(
            config.registration_retry(),
            RetryPolicy::new(
                Duration::from_secs(120),
                Duration::from_secs(1),
                Duration::from_secs(1)
            )
        );
        assert_eq!(
            config.subscription_retry(),
            RetryPolicy::new(
                Duration::from_secs(300),
                Duration::from_secs(1),
                Duration::from_secs(10)
            )
        );
        let custom = FanOutConfig::builder()
            .registration_retry_delay(Duration::from_millis(50))
            .registration_timeout(Duration::from_secs(3))
            .retry_budget(Duration::from_millis(500))
            .build()
            .unwrap();
        assert_eq!(
            custom.registration_retry(),
            RetryPolicy::new(
                Duration::from_secs(3),
                Duration::from_millis(50),
                Duration::from_millis(50)
            )
        );
        assert_eq!(
            custom.subscription_retry().budget,
            Duration::from_millis(500)
        );
        let policy = RetryPolicy::new(
            Duration::from_secs(2),
            Duration::from_millis(20),
            Duration::from_millis(100),
        );
        let set = FanOutConfig::builder()
            .registration_retry(policy)
            .subscription_retry(policy)
            .build()
            .unwrap();
        assert_eq!(set.registration_timeout(), Duration::from_secs(2));
        assert_eq!(set.registration_retry_delay(), Duration::from_millis(20));
        assert_eq!(set.retry_max_delay(), Duration::from_millis(100));
        let backwards = RetryPolicy::new(policy.budget, policy.max_delay, policy.min_delay);
        for bad in [
            FanOutConfig::builder().registration_retry(backwards),
            FanOutConfig::builder().subscription_retry(backwards),
        ] {
            assert!(matches!(bad.build(), Err(ConfigError { .. })));
        }
    }

    #[test]
    fn config_defaults_and_validation() {
        let config = FanOutConfig::builder().build().unwrap();
        assert_eq!(config, FanOutConfig::default());
        assert_eq!(config.registration_retry_delay(), Duration::from_secs(1));
        assert_eq!(config.retry_min_delay(), Duration::from_secs(1));
        assert_eq!(config.request_timeout(), Duration::from_secs(30));
        assert_eq!(config.prefetch(), PrefetchLimits::default());
        assert!(!config.deliver_empty_batches());
        for bad in [
            FanOutConfig::builder().consumer_name(""),
            FanOutConfig::builder().consumer_name("a/b"),
            FanOutConfig::builder().consumer_name("x".repeat(129)),
            FanOutConfig::builder().consumer_arn("consumer"),
            FanOutConfig::builder().max_pending_records(0),
            FanOutConfig::builder().retry_min_delay(Duration::ZERO),
            FanOutConfig::builder().idle_timeout(Duration::ZERO),
            FanOutConfig::builder()
                .retry_min_delay(Duration::from_secs(2))
                .retry_max_delay(Duration::from_secs(1)),
        ] {
            assert!(matches!(bad.build(), Err(ConfigError { .. })));
        }
        let named = FanOutConfig::default().with_default_consumer_name("app");
        assert_eq!(named.consumer_name(), Some("app"));
        let kept = FanOutConfig::builder()
            .consumer_name("mine")
            .build()
            .unwrap()
            .with_default_consumer_name("app");
        assert_eq!(kept.consumer_name(), Some("mine"));
    }
}
