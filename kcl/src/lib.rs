//! A Kinesis consumer library in the style of the Java Kinesis Client Library (KCL).
//!
//! Write a [`ShardRecordProcessor`], hand a factory of them to a [`Worker`], run it: the
//! worker leases the stream's shards with the application's other workers (through a DynamoDB
//! table laid out exactly as the Java KCL lays it out), reads each leased shard by polling or
//! enhanced fan-out, deaggregates KPL records, and calls your processor batch by batch.
//!
//! ```no_run
//! use kinesis_kcl::{
//!     Checkpointer, InitialPosition, ProcessRecordsInput, ProcessorError, ShardRecordProcessor,
//!     Worker,
//! };
//!
//! struct Count(u64);
//!
//! #[kinesis_kcl::async_trait]
//! impl ShardRecordProcessor for Count {
//!     async fn process_records(&mut self, input: ProcessRecordsInput, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
//!         self.0 += input.records.len() as u64;
//!         cp.checkpoint().await?; // everything delivered so far is done
//!         Ok(())
//!     }
//!     async fn shard_ended(&mut self, cp: &mut Checkpointer) -> Result<(), ProcessorError> {
//!         Ok(cp.checkpoint().await?) // SHARD_END: the shard's children may start
//!     }
//! }
//!
//! # async fn run() -> Result<(), kinesis_kcl::Error> {
//! let config = aws_config::load_from_env().await;
//! let worker = Worker::builder(
//!     "clickstream-counter", // the application: also the lease table's name
//!     aws_sdk_kinesis::Client::new(&config),
//!     aws_sdk_dynamodb::Client::new(&config),
//!     |_| Count(0), // a processor per shard lease
//! )
//! .stream("clickstream")
//! .initial_position(InitialPosition::TrimHorizon)
//! .build()?;
//! // Until Ctrl-C; then processors checkpoint and leases go to the other workers.
//! worker.run_until(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```
//!
//! What a processor can count on:
//!
//! - **At least once, in order per shard.** After a restart, a lease move or a failed batch,
//!   processing resumes right after the last checkpoint (to the user record inside an
//!   aggregate); what came after it is delivered again.
//! - **One worker per shard.** Leases are counter-fenced and given up before any other worker
//!   may take them; a checkpoint from a worker that lost the lease is refused
//!   ([`Error::LeaseLost`]).
//! - **Parents before children.** After a split or a merge, a child shard is processed only
//!   once its parents were checkpointed at `SHARD_END`.
//! - **Stopping is not cancelling.** A call in flight when the lease is lost, handed off or
//!   the worker shuts down may finish, within
//!   [`processor_stop_timeout`](WorkerBuilder::processor_stop_timeout) (see [`processor`]).
//!
//! The modules, from the top down: [`worker`] (the worker and its settings), [`processor`]
//! (what you implement), [`retrieval`] (polling and enhanced fan-out), [`shard`] (shard
//! listing, lineage and lease creation), [`lease`] (the lease table and protocol:
//! [`lease::LeaseCoordinator`] runs it for one worker, [`lease::decide`] is the pure
//! assignment, [`lease::Lease`] the Java-compatible item), [`record`] and [`metrics`].
//! The README's "Moving from the Java KCL" says which Java versions can share or take over a
//! lease table.

#![warn(missing_docs)]

mod aws;
mod checkpoint;
mod config;
mod error;
pub mod lease;
pub mod metrics;
pub mod processor;
pub mod record;
pub mod retrieval;
pub mod shard;
pub mod worker;

pub use aws::RetryPolicy;
pub use config::{DEFAULT_FAILOVER_TIME, DEFAULT_HANDOFF_TIMEOUT, LeaseConfig, LeaseConfigBuilder};
pub use error::{ConfigError, Error, Result};
pub use record::Record;

pub use checkpoint::{Checkpointer, PreparedCheckpoint};
pub use processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, ShardContext, ShardRecordProcessor,
};

/// The attribute [`ShardRecordProcessor`] implementations carry (`#[kinesis_kcl::async_trait]`),
/// re-exported from the `async-trait` crate so that applications need not depend on it.
pub use async_trait::async_trait;
pub use retrieval::{FanOutConfig, PollingConfig, RecordBatch};
pub use shard::InitialPosition;
pub use worker::{
    DEFAULT_LEASE_CLEANUP_INTERVAL, DEFAULT_PARENT_SHARD_POLL_INTERVAL,
    DEFAULT_SHARD_SYNC_INTERVAL, Retrieval, ShardState, Worker, WorkerBuilder, WorkerHandle,
};

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
