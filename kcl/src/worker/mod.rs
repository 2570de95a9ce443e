mod shard_consumer;
mod state;
mod stream;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinSet};
use tracing::Instrument;

pub use state::ShardState;

use self::shard_consumer::{ConsumerContext, Exit, Failure};
use self::state::ShardStates;
use self::stream::{Identity, StreamContext};
use crate::config::LeaseConfig;
use crate::error::{ConfigError, Result};
use crate::lease::{HeldLease, LeaseCoordinator, LeaseTable, StreamIdentifier, TableOptions};
use crate::processor::{ShardContext, ShardRecordProcessor, SharedFactory};
use crate::retrieval::Retrieval;
use crate::shard::InitialPosition;

/// Java KCL `shardSyncIntervalMillis` default: 60 000 ms.
pub(crate) const DEFAULT_SHARD_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Java KCL `parentShardPollIntervalMillis` default: 10 000 ms.
pub(crate) const DEFAULT_PARENT_SHARD_POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Java KCL `completedLeaseCleanupIntervalMillis` default: 5 minutes.
pub(crate) const DEFAULT_LEASE_CLEANUP_INTERVAL: Duration = Duration::from_secs(300);
/// How long a processor has to finish once processing must stop: 30 s, the Java KCL 3.x
/// graceful hand-off timeout (`gracefulLeaseHandoffTimeoutMillis`), after which the new
/// owner takes the lease whatever the old one is doing.
pub(crate) const DEFAULT_PROCESSOR_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// First restart delay of a failed shard consumer; doubles per failure in a row.
const RESTART_MIN_DELAY: Duration = Duration::from_secs(1);
/// Largest restart delay.
const RESTART_MAX_DELAY: Duration = Duration::from_secs(30);
/// A consumer that ran this long before failing starts its backoff afresh.
const RESTART_RESET_AFTER: Duration = Duration::from_secs(60);

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
}

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
    /// [`ShardState::Processing`]. Default 30 s, the Java KCL 3.x `gracefulLeaseHandoffTimeoutMillis`.
    pub fn processor_stop_timeout(mut self, timeout: Duration) -> Self {
        self.processor_stop_timeout = timeout;
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
            handle,
        })
    }
}

/// A consumer application's worker process.
///
/// ```no_run
/// use kinesis_kcl::{Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorError, ShardRecordProcessor, Worker};
///
/// struct Printer;
///
/// #[kinesis_kcl::async_trait]
/// impl ShardRecordProcessor for Printer {
///     async fn process_records(&mut self, input: ProcessRecordsInput, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
///         for record in &input.records {
///             println!("{} {} bytes", record.partition_key(), record.data().len());
///         }
///         cp.checkpoint().await?;
///         Ok(())
///     }
///     async fn shard_ended(&mut self, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
///         Ok(cp.checkpoint().await?)
///     }
/// }
///
/// # async fn run() -> Result<(), kinesis_kcl::Error> {
/// let config = aws_config::load_from_env().await;
/// let worker = Worker::builder(
///     "my-application",
///     aws_sdk_kinesis::Client::new(&config),
///     aws_sdk_dynamodb::Client::new(&config),
///     |_| Printer,
/// )
/// .stream("clickstream")
/// .initial_position(InitialPosition::TrimHorizon)
/// .build()?;
/// // On Ctrl-C: checkpoints and hands off every lease, then returns.
/// worker.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await
/// # }
/// ```
///
/// The [`Worker`]: leases shards of one or more streams and runs a
/// [`ShardRecordProcessor`](crate::ShardRecordProcessor) on each.
///
/// A worker
/// 1. creates the lease table if needed and syncs the streams' shards into leases (the Java
///    KCL's rules for the initial position),
///    again every [`shard_sync_interval`](WorkerBuilder::shard_sync_interval) and at once when
///    a shard ends;
/// 2. runs a lease coordinator (renewing, taking and balancing leases with the other
///    workers of the application);
/// 3. for each lease it holds, waits until the shard's parents are finished, then reads the
///    shard from its checkpoint and hands the records to a processor made by the factory;
/// 4. restarts a shard whose processor fails or panics from its last checkpoint after a
///    backoff (1 s doubling to 30 s), without disturbing the others;
/// 5. deletes the leases of finished shards once their children have started
///    ([`lease_cleanup_interval`](WorkerBuilder::lease_cleanup_interval)).
///
/// Shutting down through a [`WorkerHandle`] stops taking leases, gives every processor its
/// [`shutdown_requested`](crate::ShardRecordProcessor::shutdown_requested) (a chance to
/// checkpoint), then releases every lease so that other workers take them over at their
/// next scan. A processor call in flight when its shard must stop (shutdown, hand-off, lost
/// lease) may finish, within
/// [`processor_stop_timeout`](WorkerBuilder::processor_stop_timeout): a hung processor
/// delays a shutdown or a hand-off by that much, never for ever.
pub struct Worker {
    application_name: String,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    factory: SharedFactory,
    streams: Vec<String>,
    identifiers: HashMap<String, StreamIdentifier>,
    multi_stream: bool,
    table_name: String,
    table_options: TableOptions,
    initial_position: InitialPosition,
    retrieval: Retrieval,
    lease_config: LeaseConfig,
    shard_sync_interval: Duration,
    parent_shard_poll_interval: Duration,
    lease_cleanup_interval: Duration,
    processor_stop_timeout: Duration,
    handle: WorkerHandle,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("application_name", &self.application_name)
            .field("worker_id", &self.handle.worker_id)
            .field("streams", &self.streams)
            .field("table_name", &self.table_name)
            .finish_non_exhaustive()
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
        }
    }

    /// A handle to shut the worker down and watch it.
    pub fn handle(&self) -> WorkerHandle {
        self.handle.clone()
    }

    /// Runs until `signal` resolves, then shuts down gracefully (as
    /// [`WorkerHandle::shutdown`]: processors checkpoint, leases go to the other workers) and
    /// returns once that is done. A shutdown through a [`WorkerHandle`] ends it too.
    ///
    /// ```no_run
    /// # async fn run(worker: kinesis_kcl::Worker) -> Result<(), kinesis_kcl::Error> {
    /// worker
    ///     .run_until(async {
    ///         tokio::signal::ctrl_c().await.ok();
    ///     })
    ///     .await
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Worker::run`].
    pub async fn run_until<S>(self, signal: S) -> Result<()>
    where
        S: Future<Output = ()>,
    {
        let handle = self.handle();
        let run = self.run();
        tokio::pin!(run);
        tokio::select! {
            result = &mut run => result,
            () = signal => {
                handle.request_shutdown();
                run.await
            }
        }
    }

    /// Runs until shut down through a [`WorkerHandle`] (or see [`Worker::run_until`]).
    ///
    /// # Errors
    ///
    /// Set-up failures: the lease table cannot be created or reached, a stream cannot be
    /// described or listed. Once running, failures of single shards are retried (see the
    /// [`Worker`] docs) and do not end the worker.
    pub async fn run(self) -> Result<()> {
        let result = self.run_inner().await;
        self.handle.finished.send_replace(true);
        result
    }

    async fn run_inner(&self) -> Result<()> {
        let table = LeaseTable::new(self.dynamodb.clone(), &self.table_name);
        table.ensure_table(&self.table_options).await?;
        if let Retrieval::FanOut(fan_out) = &self.retrieval
            && fan_out.consumer_arn().is_some()
            && self.streams.len() > 1
        {
            return Err(ConfigError::new(
                "WorkerBuilder",
                "retrieval",
                fan_out.consumer_arn(),
                "a fan-out consumer ARN belongs to one stream: name the consumer instead \
                 (`consumer_name`) to consume several streams",
            )
            .into());
        }
        let mut streams = Vec::new();
        for name in &self.streams {
            let ctx = StreamContext::new(
                &self.kinesis,
                &table,
                name,
                self.initial_position,
                &self.retrieval,
                &self.application_name,
                match self.identifiers.get(name) {
                    Some(id) => Identity::Given(id.clone()),
                    None if self.multi_stream => Identity::Describe,
                    None => Identity::SingleStream,
                },
            )
            .await?;
            ctx.syncer.sync().await?;
            streams.push(Arc::new(ctx));
        }
        // Only leases of the streams configured here: in a rolling deploy that adds a
        // stream, the workers that do not know it yet leave its leases alone.
        let owners = streams.clone();
        let (coordinator, acquired) = LeaseCoordinator::start_filtered(
            table,
            self.handle.worker_id.to_string(),
            self.lease_config.clone(),
            move |lease| owners.iter().any(|s| s.owns(lease)),
        );
        tracing::info!(
            worker = %self.handle.worker_id,
            application = %self.application_name,
            streams = ?self.streams,
            "worker started"
        );
        let (sync_now, sync_requests) = mpsc::unbounded_channel();
        let ctx = ConsumerContext {
            factory: Arc::clone(&self.factory),
            shutdown: self.handle.shutdown.subscribe(),
            states: self.handle.states.clone(),
            parent_poll_interval: self.parent_shard_poll_interval,
            shard_end_retry: RESTART_MIN_DELAY,
            stop_timeout: self.processor_stop_timeout,
            sync_now,
        };
        let mut run = Running {
            ctx,
            streams,
            coordinator,
            consumers: JoinSet::new(),
            tasks: HashMap::new(),
            active: HashMap::new(),
            queued: HashMap::new(),
            syncs: JoinSet::new(),
            syncing: HashSet::new(),
        };
        run.main_loop(
            acquired,
            sync_requests,
            self.shard_sync_interval,
            self.lease_cleanup_interval,
        )
        .await;
        let streams = run.streams.clone();
        let result = run.shut_down().await;
        for stream in streams {
            stream.retriever.shut_down().await;
        }
        result
    }
}

/// A cloneable handle on a [`Worker`]: shut it down, watch its shards.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    worker_id: Arc<str>,
    shutdown: Arc<watch::Sender<bool>>,
    finished: Arc<watch::Sender<bool>>,
    states: ShardStates,
}

impl WorkerHandle {
    /// The worker's id.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Shuts the worker down gracefully and resolves once it is done: every processor has
    /// been told ([`shutdown_requested`](crate::ShardRecordProcessor::shutdown_requested),
    /// where it checkpoints) and every lease has been released for the other workers. A
    /// processor that does not return holds this up by at most
    /// [`processor_stop_timeout`](WorkerBuilder::processor_stop_timeout). Also resolves if the
    /// worker already stopped.
    pub async fn shutdown(&self) {
        self.request_shutdown();
        self.wait_finished().await;
    }

    /// Resolves once [`Worker::run`] has returned.
    pub async fn wait_finished(&self) {
        let mut rx = self.finished.subscribe();
        // The sender lives in this handle: the channel cannot close under us.
        let _ = rx.wait_for(|f| *f).await;
    }

    /// Whether [`Worker::run`] has returned.
    pub fn is_finished(&self) -> bool {
        *self.finished.borrow()
    }

    /// What each shard leased by this worker is doing, by lease key.
    pub fn shard_states(&self) -> BTreeMap<String, ShardState> {
        self.states.snapshot()
    }
}

/// A running consumer's bookkeeping.
struct Active {
    lease: Arc<HeldLease>,
    stream: Arc<StreamContext>,
    failures: u32,
    started: Instant,
}

/// The state of [`Worker::run`] once started.
struct Running {
    ctx: ConsumerContext,
    streams: Vec<Arc<StreamContext>>,
    coordinator: LeaseCoordinator,
    consumers: JoinSet<(String, Exit)>,
    tasks: HashMap<Id, String>,
    active: HashMap<String, Active>,
    /// Leases re-acquired while their previous consumer is still ending.
    queued: HashMap<String, Arc<HeldLease>>,
    /// Background syncs and clean-ups, each returning its job.
    syncs: JoinSet<SyncJob>,
    /// The jobs running.
    syncing: HashSet<SyncJob>,
}

/// A background job on one stream's leases: at most one of each kind runs per stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SyncJob {
    /// A shard sync (leases for the stream's new shards), named by its stream.
    ShardSync(String),
    /// A lease clean-up (leases of shards gone from the stream), named by its stream.
    CleanUp(String),
}

impl Running {
    async fn main_loop(
        &mut self,
        mut acquired: mpsc::UnboundedReceiver<Arc<HeldLease>>,
        mut sync_requests: mpsc::UnboundedReceiver<Arc<StreamContext>>,
        sync_interval: Duration,
        cleanup_interval: Duration,
    ) {
        let shutdown = self.ctx.shutdown.clone();
        let mut sync_tick = tokio::time::interval(sync_interval);
        sync_tick.tick().await; // the first tick is immediate; the initial sync is done
        let mut cleanup_tick = tokio::time::interval(cleanup_interval);
        cleanup_tick.tick().await;
        loop {
            tokio::select! {
                () = shard_consumer::flag_set(shutdown.clone()) => return,
                lease = acquired.recv() => match lease {
                    Some(lease) => self.acquired(lease).await,
                    None => {
                        tracing::error!("lease coordinator stopped; shutting the worker down");
                        return;
                    }
                },
                Some(joined) = self.consumers.join_next_with_id() => self.consumer_ended(joined),
                Some(stream) = sync_requests.recv() => self.sync(stream, false),
                _ = sync_tick.tick() => {
                    for stream in self.streams.clone() {
                        self.sync(stream, false);
                    }
                }
                _ = cleanup_tick.tick() => {
                    for stream in self.streams.clone() {
                        self.sync(stream, true);
                    }
                }
                Some(done) = self.syncs.join_next() => match done {
                    Ok(job) => {
                        self.syncing.remove(&job);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "shard sync task failed");
                        self.syncing.clear();
                    }
                },
            }
        }
    }

    async fn acquired(&mut self, lease: Arc<HeldLease>) {
        let key = lease.lease_key().to_owned();
        if self.active.contains_key(&key) {
            // The previous consumer of this lease is still ending: start after it.
            self.queued.insert(key, lease);
            return;
        }
        let snapshot = lease.lease().await;
        let Some(stream) = self.streams.iter().find(|s| s.owns(&snapshot)).cloned() else {
            // The taker never takes these; guard anyway rather than hold one idle.
            tracing::warn!(lease = %key, "lease of a stream this worker does not consume; releasing it");
            if let Err(e) = lease.release().await {
                tracing::warn!(lease = %key, error = %e, "could not release the lease; it will expire");
            }
            return;
        };
        self.start(lease, stream, 0, Duration::ZERO);
    }

    fn start(
        &mut self,
        lease: Arc<HeldLease>,
        stream: Arc<StreamContext>,
        failures: u32,
        delay: Duration,
    ) {
        let key = lease.lease_key().to_owned();
        let span = tracing::info_span!(
            "shard",
            stream = %stream.name,
            lease = %key,
            worker = %self.coordinator.worker_id()
        );
        let ctx = self.ctx.clone();
        let (task_lease, task_stream) = (Arc::clone(&lease), Arc::clone(&stream));
        let task_key = key.clone();
        let handle = self.consumers.spawn(
            async move {
                if !delay.is_zero() {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shard_consumer::inactive(task_lease.subscribe()) => return (task_key, Exit::Done),
                        () = shard_consumer::flag_set(ctx.shutdown.clone()) => return (task_key, Exit::Done),
                    }
                }
                let exit = shard_consumer::run(ctx, task_stream, task_lease).await;
                (task_key, exit)
            }
            .instrument(span),
        );
        self.tasks.insert(handle.id(), key.clone());
        self.active.insert(
            key,
            Active {
                lease,
                stream,
                failures,
                started: Instant::now(),
            },
        );
    }

    fn consumer_ended(
        &mut self,
        joined: std::result::Result<(Id, (String, Exit)), tokio::task::JoinError>,
    ) {
        let (id, key, exit) = match joined {
            Ok((id, (key, exit))) => (id, key, exit),
            Err(e) => {
                let Some(key) = self.tasks.get(&e.id()).cloned() else {
                    return;
                };
                let why = if e.is_panic() {
                    Failure::Panicked
                } else {
                    Failure::Cancelled
                };
                (e.id(), key, Exit::Failed(why))
            }
        };
        self.tasks.remove(&id);
        let Some(active) = self.active.remove(&key) else {
            return;
        };
        match exit {
            Exit::Done => self.ctx.states.remove(&key),
            Exit::Failed(failure) => {
                let shutting_down = *self.ctx.shutdown.borrow();
                if active.lease.status().is_active() && !shutting_down {
                    let failures = if active.started.elapsed() >= RESTART_RESET_AFTER {
                        1
                    } else {
                        active.failures + 1
                    };
                    let delay = RESTART_MIN_DELAY
                        .saturating_mul(1 << (failures - 1).min(5))
                        .min(RESTART_MAX_DELAY);
                    let reason = failure.to_string();
                    tracing::error!(lease = %key, %reason, failures, ?delay, "shard consumer failed; restarting from the last checkpoint");
                    metrics::counter!(crate::metrics::PROCESSOR_RESTARTS).increment(1);
                    self.ctx
                        .states
                        .set(&key, ShardState::Restarting { failures, reason });
                    self.start(active.lease, active.stream, failures, delay);
                    return;
                }
                self.ctx.states.remove(&key);
            }
        }
        if let Some(next) = self.queued.remove(&key) {
            self.start(next, active.stream, 0, Duration::ZERO);
        }
    }

    /// Syncs (or, with `cleanup`, cleans up) a stream's leases in the background, one at a
    /// time per stream.
    fn sync(&mut self, stream: Arc<StreamContext>, cleanup: bool) {
        let job = if cleanup {
            SyncJob::CleanUp(stream.name.clone())
        } else {
            SyncJob::ShardSync(stream.name.clone())
        };
        if !self.syncing.insert(job.clone()) {
            return;
        }
        let labels = [("stream", stream.name.clone())];
        self.syncs.spawn(async move {
            match &job {
                SyncJob::CleanUp(_) => match stream.syncer.clean_up().await {
                    Ok(report) => tracing::debug!(?report, "lease clean-up"),
                    Err(e) => tracing::warn!(error = %e, "lease clean-up failed"),
                },
                SyncJob::ShardSync(_) => {
                    metrics::counter!(crate::metrics::SHARD_SYNCS, &labels).increment(1);
                    match stream.syncer.sync().await {
                        Ok(report) => tracing::debug!(?report, "shard sync"),
                        Err(e) => tracing::warn!(error = %e, "shard sync failed"),
                    }
                }
            }
            job
        });
    }

    /// Graceful shutdown: no more takes; every consumer tells its processor and ends; then
    /// every lease is released.
    async fn shut_down(mut self) -> Result<()> {
        tracing::info!(worker = %self.coordinator.worker_id(), "worker shutting down");
        self.coordinator.stop_taking().await;
        // Consumers see the shutdown signal (already sent) and end after their processors'
        // shutdown_requested; restarts are not scheduled while shutting down.
        while let Some(joined) = self.consumers.join_next_with_id().await {
            self.consumer_ended(joined);
        }
        self.syncs.abort_all();
        while self.syncs.join_next().await.is_some() {}
        let result = self.coordinator.shutdown().await;
        tracing::info!("worker stopped");
        result
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
