//! [`WorkerBuilder`]: a worker's settings, their defaults (the Java KCL's) and their checks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Worker;
use super::handle::WorkerHandle;
use super::state::ShardStates;
use crate::config::LeaseConfig;
use crate::error::ConfigError;
use crate::failure::FailurePolicy;
use crate::lease::{StreamIdentifier, TableOptions};
use crate::processor::{ShardContext, ShardRecordProcessor, SharedFactory};
use crate::retrieval::Retrieval;
use crate::shard::InitialPosition;

/// Java KCL `shardSyncIntervalMillis` default: 60 000 ms.
const DEFAULT_SHARD_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Java KCL `parentShardPollIntervalMillis` default: 10 000 ms.
const DEFAULT_PARENT_SHARD_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Java KCL `completedLeaseCleanupIntervalMillis` default: 5 minutes.
const DEFAULT_LEASE_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);
/// How long a processor has to finish once processing must stop: 30 s, the Java KCL 3.x
/// graceful hand-off timeout (`gracefulLeaseHandoffTimeoutMillis`), after which the new
/// owner takes the lease whatever the old one is doing.
const DEFAULT_PROCESSOR_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds a [`Worker`]; see [`Worker::builder`].
pub struct WorkerBuilder {
    application_name: String,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    factory: SharedFactory,
    streams: Vec<String>,
    identifiers: HashMap<String, StreamIdentifier>,
    multi_stream: Option<bool>,
    worker_id: Option<String>,
    table_name: Option<String>,
    table_options: TableOptions,
    initial_position: InitialPosition,
    retrieval: Retrieval,
    lease_config: LeaseConfig,
    shard_sync_interval: Duration,
    parent_shard_poll_interval: Duration,
    lease_cleanup_interval: Duration,
    processor_stop_timeout: Duration,
    failure_policy: FailurePolicy,
    stream_failure_policies: HashMap<String, FailurePolicy>,
    parallelization_factor: usize,
    stream_parallelization_factors: HashMap<String, usize>,
}

/// The highest [`WorkerBuilder::parallelization_factor`], Lambda's `ParallelizationFactor`
/// limit.
pub const MAX_PARALLELIZATION_FACTOR: usize = 10;

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("application_name", &self.application_name)
            .field("streams", &self.streams)
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// The stream to consume, by name or ARN (`arn:aws:kinesis:…`). Call again (or use
    /// [`streams`](Self::streams)) to consume several streams: multi-stream mode.
    pub fn stream(mut self, stream: impl Into<String>) -> Self {
        self.streams.push(stream.into());
        self
    }

    /// Several streams (multi-stream mode: lease keys are
    /// `<account>:<stream>:<creation epoch>:<shard id>`, as the Java KCL's multi-stream mode).
    ///
    /// A worker takes only leases of the streams configured here. In a rolling deploy that
    /// adds a stream, workers still running the old configuration leave the new stream's
    /// leases to the workers that process it (and balance only the streams they know); the
    /// Java KCL instead processes such leases with a default "orphan" configuration.
    pub fn streams<I, S>(mut self, streams: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.streams.extend(streams.into_iter().map(Into::into));
        self
    }

    /// A stream whose multi-stream identifier (`<account>:<name>:<creation epoch>`, the
    /// prefix of its lease keys) the application supplies, as with the Java KCL's
    /// `StreamIdentifier.multiStreamInstance`: built with [`StreamIdentifier::new`] or parsed
    /// from its serialized form with [`StreamIdentifier::parse`]. `stream` is the name or ARN
    /// the worker reads by; it must name the identifier's stream (and, as an ARN, its account).
    /// The worker then does not call `DescribeStreamSummary` for it and uses the identifier
    /// as given: after a stream is deleted and re-created under the same name, the old
    /// epoch keeps addressing the old leases (and their checkpoints), the new one starts
    /// afresh. Implies multi-stream lease keys.
    ///
    /// Streams added with [`stream`](Self::stream) in multi-stream mode get their identifier
    /// from `DescribeStreamSummary` at start-up (account from the ARN, creation time in
    /// seconds), retried with backoff on throttling: its limit is 20 calls per second per
    /// account, which a fleet starting together can exceed.
    pub fn stream_with_identifier(
        mut self,
        stream: impl Into<String>,
        identifier: StreamIdentifier,
    ) -> Self {
        let stream = stream.into();
        self.identifiers.insert(stream.clone(), identifier);
        self.streams.push(stream);
        self
    }

    /// Forces multi-stream lease keys even for one stream (default: multi-stream exactly when
    /// more than one stream is configured, or an identifier is supplied with
    /// [`stream_with_identifier`](Self::stream_with_identifier)).
    pub fn multi_stream(mut self, enabled: bool) -> Self {
        self.multi_stream = Some(enabled);
        self
    }

    /// This worker's id (the `leaseOwner` it writes). Default: host name, process id and a
    /// random suffix. Must be unique among the application's running workers.
    pub fn worker_id(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// The lease table. Default: the application name (as the Java KCL).
    pub fn table_name(mut self, table_name: impl Into<String>) -> Self {
        self.table_name = Some(table_name.into());
        self
    }

    /// How the lease table is created when missing (billing mode, tags, deletion
    /// protection). Default: on-demand.
    pub fn table_options(mut self, options: TableOptions) -> Self {
        self.table_options = options;
        self
    }

    /// Where shards without a checkpoint start. Default [`InitialPosition::Latest`] (the
    /// Java KCL's default).
    pub fn initial_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = position;
        self
    }

    /// How records are fetched. Default: polling with the Java KCL's settings.
    pub fn retrieval(mut self, retrieval: Retrieval) -> Self {
        self.retrieval = retrieval;
        self
    }

    /// Lease timing and balancing. Default: [`LeaseConfig::default`].
    pub fn lease_config(mut self, config: LeaseConfig) -> Self {
        self.lease_config = config;
        self
    }

    /// How often shards are listed and new leases created. Default 60 s (Java
    /// `shardSyncIntervalMillis`); a shard ending on this worker also triggers a sync.
    pub fn shard_sync_interval(mut self, interval: Duration) -> Self {
        self.shard_sync_interval = interval;
        self
    }

    /// How often a child shard's lease checks whether its parents have finished. Default
    /// 10 s (Java `parentShardPollIntervalMillis`).
    pub fn parent_shard_poll_interval(mut self, interval: Duration) -> Self {
        self.parent_shard_poll_interval = interval;
        self
    }

    /// How often finished leases are cleaned up. Default 5 minutes (Java
    /// `completedLeaseCleanupIntervalMillis`).
    pub fn lease_cleanup_interval(mut self, interval: Duration) -> Self {
        self.lease_cleanup_interval = interval;
        self
    }

    /// How long a processor has to finish once processing of its shard must stop (the lease
    /// was lost, another worker asked for it, or the worker shuts down). The call in flight
    /// is not cancelled: it may finish its batch; then the processor gets
    /// [`lease_lost`](crate::ShardRecordProcessor::lease_lost) or
    /// [`shutdown_requested`](crate::ShardRecordProcessor::shutdown_requested). Both together
    /// get this long; a call still running then is dropped (at its next `.await`: a call that
    /// blocks its thread cannot be), logged, counted
    /// (`kinesis_kcl_processor_calls_abandoned_total`), and the lease is released or left to expire,
    /// so a hung processor delays a hand-off or a shutdown by this much at most. A processor
    /// that hangs while its lease is simply held is not interrupted (neither is it in the
    /// Java KCL, which has no per-call timeout): its shard's state stays
    /// [`ShardState::Processing`](crate::ShardState::Processing). Default 30 s, the Java KCL 3.x `gracefulLeaseHandoffTimeoutMillis`.
    pub fn processor_stop_timeout(mut self, timeout: Duration) -> Self {
        self.processor_stop_timeout = timeout;
        self
    }

    /// What happens when `process_records` fails: retries in place with backoff, bisection,
    /// and giving up on records to a destination; see [`FailurePolicy`]. Default
    /// ([`FailurePolicy::default`]): unlimited retries in place, 1 s doubling to 30 s (the
    /// shard holds at records that keep failing, as Lambda's default; the Java KCL skips a
    /// failed batch instead).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// A failure policy for one of the configured streams, in place of
    /// [`failure_policy`](Self::failure_policy).
    pub fn stream_failure_policy(
        mut self,
        stream: impl Into<String>,
        policy: FailurePolicy,
    ) -> Self {
        self.stream_failure_policies.insert(stream.into(), policy);
        self
    }

    /// Processes each shard in `factor` parallel lanes (1 to
    /// [`MAX_PARALLELIZATION_FACTOR`]), as Lambda's `ParallelizationFactor`. Default 1: one
    /// processor per shard, records in shard order (the Java KCL's only mode).
    ///
    /// With a factor N above 1, the factory makes N processors per shard
    /// ([`ShardContext::lane`](crate::ShardContext::lane) says which), each called with the
    /// records of its lane, in order, while the other lanes run concurrently:
    ///
    /// - **Order:** all records of one partition key are processed in shard order, by one
    ///   lane at a time. A key is bound to a lane while that lane has records of it to
    ///   process; a key with none goes to the lane with the fewest records waiting. (Lambda
    ///   binds keys to lanes by hash. Placing 100 keys at random over 8 lanes, the busiest
    ///   lane gets 17.8 keys on average against a mean of 12.5 (20 000 simulated placements),
    ///   which caps the speed-up of equal keys near 5.6×.)
    /// - **Checkpoints:** a lane's [`Checkpointer`](crate::Checkpointer) reports that lane's
    ///   progress; the shard's checkpoint is the low watermark of all lanes (see
    ///   [In a lane](crate::Checkpointer#in-a-lane)), so a crash re-delivers only records
    ///   after it.
    /// - **Failures:** the [`FailurePolicy`] applies to each lane's calls. A lane that holds
    ///   at a failing record holds the checkpoint there, while the other lanes go on (until
    ///   their queues fill). A panic in any lane restarts the whole shard from its checkpoint.
    /// - **Endings:** lost leases, hand-offs and shutdowns reach every lane's processor as for
    ///   a single one (the stop timeout applies to each). At a shard's end, every lane
    ///   finishes its records before any `shard_ended` is called, and `SHARD_END` is written
    ///   once every lane's `shard_ended` checkpointed, so the children start after all of it.
    pub fn parallelization_factor(mut self, factor: usize) -> Self {
        self.parallelization_factor = factor;
        self
    }

    /// A parallelization factor for one of the configured streams, in place of
    /// [`parallelization_factor`](Self::parallelization_factor).
    pub fn stream_parallelization_factor(
        mut self,
        stream: impl Into<String>,
        factor: usize,
    ) -> Self {
        self.stream_parallelization_factors
            .insert(stream.into(), factor);
        self
    }

    /// Checks the configuration and builds the worker.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] without a stream, with a stream named twice, an empty application
    /// name or worker id, a zero interval, or a stream identifier that does not match its
    /// stream or comes with `multi_stream(false)`.
    pub fn build(self) -> Result<Worker, ConfigError> {
        let invalid = |field, value: &dyn std::fmt::Debug, limit: &'static str| {
            ConfigError::new("WorkerBuilder", field, value, limit)
        };
        if self.application_name.is_empty() {
            return Err(invalid("application_name", &"", "must not be empty"));
        }
        if self.streams.is_empty() {
            return Err(invalid(
                "stream",
                &self.streams,
                "at least one stream is needed",
            ));
        }
        let mut seen = HashSet::new();
        if let Some(dup) = self.streams.iter().find(|s| !seen.insert(s.as_str())) {
            return Err(invalid("streams", dup, "a stream may be configured once"));
        }
        for (name, d) in [
            ("shard_sync_interval", self.shard_sync_interval),
            (
                "parent_shard_poll_interval",
                self.parent_shard_poll_interval,
            ),
            ("lease_cleanup_interval", self.lease_cleanup_interval),
            ("processor_stop_timeout", self.processor_stop_timeout),
        ] {
            if d.is_zero() {
                return Err(invalid(name, &d, "must be positive"));
            }
        }
        if !self.identifiers.is_empty() && self.multi_stream == Some(false) {
            return Err(invalid(
                "multi_stream",
                &false,
                "must not be turned off when a stream identifier is supplied \
                 (`stream_with_identifier`): identifiers are part of multi-stream lease keys",
            ));
        }
        for (stream, id) in &self.identifiers {
            check_identifier(stream, id)?;
        }
        if let Some(stream) = self
            .stream_failure_policies
            .keys()
            .find(|s| !self.streams.contains(s))
        {
            return Err(invalid(
                "stream_failure_policy",
                stream,
                "names a stream that is not configured",
            ));
        }
        if let Some(stream) = self
            .stream_parallelization_factors
            .keys()
            .find(|s| !self.streams.contains(s))
        {
            return Err(invalid(
                "stream_parallelization_factor",
                stream,
                "names a stream that is not configured",
            ));
        }
        for (field, factor) in
            std::iter::once(("parallelization_factor", self.parallelization_factor)).chain(
                self.stream_parallelization_factors
                    .values()
                    .map(|f| ("stream_parallelization_factor", *f)),
            )
        {
            if !(1..=MAX_PARALLELIZATION_FACTOR).contains(&factor) {
                return Err(invalid(
                    field,
                    &factor,
                    "must be 1 to 10 (MAX_PARALLELIZATION_FACTOR)",
                ));
            }
        }
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        if worker_id.is_empty() {
            return Err(invalid("worker_id", &"", "must not be empty"));
        }
        let (shutdown, _) = watch::channel(false);
        let (finished, _) = watch::channel(false);
        let handle = WorkerHandle {
            worker_id: Arc::from(worker_id.as_str()),
            shutdown: Arc::new(shutdown),
            finished: Arc::new(finished),
            states: ShardStates::default(),
        };
        Ok(Worker {
            table_name: self
                .table_name
                .unwrap_or_else(|| self.application_name.clone()),
            multi_stream: self
                .multi_stream
                .unwrap_or(self.streams.len() > 1 || !self.identifiers.is_empty()),
            application_name: self.application_name,
            kinesis: self.kinesis,
            dynamodb: self.dynamodb,
            factory: self.factory,
            streams: self.streams,
            identifiers: self.identifiers,
            table_options: self.table_options,
            initial_position: self.initial_position,
            retrieval: self.retrieval,
            lease_config: self.lease_config,
            shard_sync_interval: self.shard_sync_interval,
            parent_shard_poll_interval: self.parent_shard_poll_interval,
            lease_cleanup_interval: self.lease_cleanup_interval,
            processor_stop_timeout: self.processor_stop_timeout,
            failure_policy: self.failure_policy,
            stream_failure_policies: self.stream_failure_policies,
            parallelization_factor: self.parallelization_factor,
            stream_parallelization_factors: self.stream_parallelization_factors,
            handle,
        })
    }
}

impl Worker {
    /// A builder for the application `application_name` (also the lease table's name by
    /// default), reading with `kinesis`, coordinating through `dynamodb`, processing with
    /// processors from `factory`.
    ///
    /// The factory is any `Fn(&ShardContext) -> P` where `P` is a [`ShardRecordProcessor`]:
    /// a plain closure such as `|_| Counter::default()` or `|shard| Printer::new(&shard.shard_id)`
    /// will do (no type annotation needed). It is called once per shard lease, each time
    /// processing of the shard starts or restarts.
    ///
    /// ```
    /// # use kinesis_kcl::{Checkpointer, ProcessRecordsInput, ProcessorError, ShardRecordProcessor, Worker};
    /// # #[derive(Default)]
    /// # struct Counter(u64);
    /// # #[kinesis_kcl::async_trait]
    /// # impl ShardRecordProcessor for Counter {
    /// #     async fn process_records(&mut self, _: ProcessRecordsInput, _: &mut Checkpointer) -> Result<(), ProcessorError> { Ok(()) }
    /// #     async fn shard_ended(&mut self, c: &mut Checkpointer) -> Result<(), ProcessorError> { Ok(c.checkpoint().await?) }
    /// # }
    /// # fn clients() -> (aws_sdk_kinesis::Client, aws_sdk_dynamodb::Client) {
    /// #     let config = aws_config::SdkConfig::builder()
    /// #         .behavior_version(aws_config::BehaviorVersion::latest())
    /// #         .build();
    /// #     (aws_sdk_kinesis::Client::new(&config), aws_sdk_dynamodb::Client::new(&config))
    /// # }
    /// let (kinesis, dynamodb) = clients();
    /// let worker = Worker::builder("counter", kinesis, dynamodb, |_| Counter::default())
    ///     .stream("clickstream")
    ///     .build()?;
    /// # let _ = worker;
    /// # Ok::<(), kinesis_kcl::ConfigError>(())
    /// ```
    pub fn builder<F, P>(
        application_name: impl Into<String>,
        kinesis: aws_sdk_kinesis::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        factory: F,
    ) -> WorkerBuilder
    where
        F: Fn(&ShardContext) -> P + Send + Sync + 'static,
        P: ShardRecordProcessor + 'static,
    {
        WorkerBuilder {
            application_name: application_name.into(),
            kinesis,
            dynamodb,
            factory: Arc::new(factory),
            streams: Vec::new(),
            identifiers: HashMap::new(),
            multi_stream: None,
            worker_id: None,
            table_name: None,
            table_options: TableOptions::default(),
            initial_position: InitialPosition::default(),
            retrieval: Retrieval::default(),
            lease_config: LeaseConfig::default(),
            shard_sync_interval: DEFAULT_SHARD_SYNC_INTERVAL,
            parent_shard_poll_interval: DEFAULT_PARENT_SHARD_POLL_INTERVAL,
            lease_cleanup_interval: DEFAULT_LEASE_CLEANUP_INTERVAL,
            processor_stop_timeout: DEFAULT_PROCESSOR_STOP_TIMEOUT,
            failure_policy: FailurePolicy::default(),
            stream_failure_policies: HashMap::new(),
            parallelization_factor: 1,
            stream_parallelization_factors: HashMap::new(),
        }
    }
}

/// An identifier supplied for `stream` must name it (and its account, for an ARN).
fn check_identifier(stream: &str, id: &StreamIdentifier) -> Result<(), ConfigError> {
    let target = crate::shard::StreamTarget::parse(stream);
    let invalid = |limit: String| {
        ConfigError::displayed("WorkerBuilder", "stream_with_identifier", id, limit)
    };
    if target.stream_name() != Some(id.stream_name()) {
        return Err(invalid(format!(
            "it names stream `{}`, not `{stream}`",
            id.stream_name()
        )));
    }
    if let crate::shard::StreamTarget::Arn(arn) = &target
        && arn.split(':').nth(4) != Some(id.account_id())
    {
        return Err(invalid(format!(
            "its account `{}` is not the account of `{arn}`",
            id.account_id()
        )));
    }
    Ok(())
}

/// `host-pid-random`.
fn default_worker_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        hasher.finish() as u32
    )
}
