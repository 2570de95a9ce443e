//! The worker: [`Worker`] runs the lease coordinator and one shard consumer per held lease.
//!
//! - `builder`: [`WorkerBuilder`], the settings and their checks, and `Worker::builder`;
//! - `handle`: [`WorkerHandle`], to shut a worker down and watch its shards;
//! - `supervisor`: the running worker's loop: starts, restarts and stops shard consumers as
//!   leases come and go, runs shard syncs and lease clean-ups;
//! - `consumer`: one shard's consumer: parents, reading, the processor's calls, checkpoints;
//! - `stream`: what the worker holds per stream (its reader, shard syncer, identity);
//! - `state`: the shard states a handle reports.

mod builder;
mod consumer;
mod handle;
mod state;
mod stream;
mod supervisor;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use builder::{MAX_PARALLELIZATION_FACTOR, WorkerBuilder};
pub use handle::WorkerHandle;
pub use state::ShardState;

use self::consumer::ConsumerContext;
use self::stream::{Identity, StreamContext};
use self::supervisor::{RESTART_MIN_DELAY, Running};
use crate::config::LeaseConfig;
use crate::error::{ConfigError, Result};
use crate::failure::FailurePolicy;
use crate::lease::{LeaseCoordinator, LeaseTable, StreamIdentifier, TableOptions};
use crate::processor::SharedFactory;
use crate::retrieval::Retrieval;
use crate::shard::InitialPosition;

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
/// 4. retries a failed `process_records` call in place as the
///    [`FailurePolicy`](crate::FailurePolicy) says (by default without limit, 1 s doubling
///    to 30 s), and restarts a shard whose processor panics, or whose reading fails, from
///    its last checkpoint after the same backoff, without disturbing the others;
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
    failure_policy: FailurePolicy,
    stream_failure_policies: HashMap<String, FailurePolicy>,
    parallelization_factor: usize,
    stream_parallelization_factors: HashMap<String, usize>,
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
            .await?
            .with_failure_policy(
                self.stream_failure_policies
                    .get(name)
                    .unwrap_or(&self.failure_policy)
                    .clone(),
            )
            .with_lanes(
                self.stream_parallelization_factors
                    .get(name)
                    .copied()
                    .unwrap_or(self.parallelization_factor),
            );
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
        let mut run = Running::new(ctx, streams, coordinator);
        run.main_loop(
            acquired,
            sync_requests,
            self.shard_sync_interval,
            self.lease_cleanup_interval,
        )
        .await;
        let streams = run.streams();
        let result = run.shut_down().await;
        for stream in streams {
            stream.retriever.shut_down().await;
        }
        result
    }
}
