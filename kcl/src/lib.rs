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
//!   aggregate); what came after it is delivered again. With
//!   [`parallelization_factor`](WorkerBuilder::parallelization_factor), in order per
//!   partition key, keys processed concurrently in lanes, the checkpoint at their low
//!   watermark.
//! - **One worker per shard.** Leases are counter-fenced and given up before any other worker
//!   may take them; a checkpoint from a worker that lost the lease is refused
//!   ([`Error::LeaseLost`]).
//! - **Parents before children.** After a split or a merge, a child shard is processed only
//!   once its parents were checkpointed at `SHARD_END`.
//! - **Stopping is not cancelling.** A call in flight when the lease is lost, handed off or
//!   the worker shuts down may finish, within
//!   [`processor_stop_timeout`](WorkerBuilder::processor_stop_timeout) (see [`ShardRecordProcessor`]).
//!
//! The public API is what this page lists: the [`Worker`] and its settings ([`LeaseConfig`],
//! [`Retrieval`] with [`PollingConfig`] or [`FanOutConfig`], [`RetryPolicy`], [`TableOptions`]),
//! what you implement ([`ShardRecordProcessor`]) and what it is handed ([`ProcessRecordsInput`],
//! [`Record`], [`Checkpointer`]), positions ([`InitialPosition`], [`ExtendedSequenceNumber`]),
//! errors ([`Error`], [`ConfigError`]) and the names of the [`metrics`]. Defaults equal the
//! Java KCL's; each builder method documents its own. The README's "Moving from the Java KCL"
//! says which Java versions can share or take over a lease table.
//!
//! # Examples
//!
//! Complete programs in the crate's `examples/` directory, one per concept; each starts
//! embedded Kinesis and DynamoDB servers (the workspace's test bed), puts records, runs a
//! worker until they are processed and prints what happened
//! (`cargo run -p kinesis-kcl --example checkpointing`):
//!
//! - `checkpointing`: checkpoint every N records or T seconds
//!   ([`Checkpointer::checkpoint_record`], [`Checkpointer::checkpoint`]), and where the worker
//!   requires it: `SHARD_END` in [`shard_ended`](ShardRecordProcessor::shard_ended) after a
//!   split, what is done in [`shutdown_requested`](ShardRecordProcessor::shutdown_requested).
//! - `two_phase`: [`Checkpointer::prepare_checkpoint`] with application state, the side
//!   effect, then [`PreparedCheckpoint::commit`]; after a crash in between, the next processor
//!   finds the pending checkpoint in [`InitializationInput`] and skips what was written.
//! - `positions`: [`InitialPosition::TrimHorizon`], [`InitialPosition::Latest`] and
//!   [`InitialPosition::AtTimestamp`] on a fresh lease table, and a restart on an existing
//!   checkpoint, where the initial position is ignored.
//! - `dead_letters`: a [`FailurePolicy`] that isolates malformed records by bisection,
//!   retries them, then puts them to a dead-letter stream in their `DeadLetter` envelope
//!   (feature `dead-letter-stream`) while the rest is processed once.
//! - `multi_stream`: one worker consuming two streams ([`WorkerBuilder::streams`],
//!   [`ShardContext::stream`]).
//! - `latency`: put → process latency of polling and enhanced fan-out, side by side.
//!
//! # The `unstable` feature
//!
//! It makes the layers under the worker public, with **no semver promise** (they change with
//! any release): `lease` (the Java-compatible lease item, its conditional writes, the lease
//! table, the coordinator and the pure assignment), `shard` (shard listing, lineage, lease
//! creation) and `retrieval` (shard readers for polling and enhanced fan-out, on their own).
//! It exists for operations tools (the workspace's `kinesis-ops` lists leases and resets a
//! checkpoint with a write conditional on the lease counter) and for this crate's own tests.
//! Applications should not need it.

#![warn(missing_docs)]

// `StreamTarget` is public through the `unstable` layers' signatures only.
#[cfg_attr(not(feature = "unstable"), allow(unreachable_pub))]
mod aws;
mod checkpoint;
mod config;
mod error;
mod failure;
pub mod metrics;
mod processor;
mod record;
mod sequence;
mod worker;

// With `unstable`, the layers under the worker are public (see the crate docs); without it they
// are internal, and items the worker does not use are left in for the feature's sake. Their
// doctests use the public paths: the crate's own tests turn the feature on (a dev-dependency of
// the crate on itself), so `cargo test -p kinesis-kcl` runs them.
#[cfg(feature = "unstable")]
pub mod lease;
#[cfg(not(feature = "unstable"))]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod lease;
#[cfg(feature = "unstable")]
pub mod retrieval;
#[cfg(not(feature = "unstable"))]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod retrieval;
#[cfg(feature = "unstable")]
pub mod shard;
#[cfg(not(feature = "unstable"))]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod shard;

pub use aws::RetryPolicy;
pub use checkpoint::{Checkpointer, PreparedCheckpoint};
pub use config::{LeaseConfig, LeaseConfigBuilder};
pub use error::{ConfigError, Error, Result};
#[cfg(feature = "dead-letter-stream")]
pub use failure::{DEAD_LETTER_MAGIC, DeadLetter, DeadLetterError, DeadLetterStream};
pub use failure::{
    FailedRecords, FailureDestination, FailurePolicy, FailurePolicyBuilder, GiveUpReason,
    RecordFailed,
};
pub use lease::{Billing, StreamIdentifier, TableOptions};
pub use processor::{
    InitializationInput, ProcessRecordsInput, ProcessorError, ShardContext, ShardRecordProcessor,
};
pub use record::Record;
pub use retrieval::{
    FanOutConfig, FanOutConfigBuilder, OutOfRangePolicy, PollingConfig, PollingConfigBuilder,
    PrefetchLimits, Retrieval,
};
pub use sequence::{ExtendedSequenceNumber, SequenceNumber, SequencePosition};
pub use shard::InitialPosition;
pub use worker::{MAX_PARALLELIZATION_FACTOR, ShardState, Worker, WorkerBuilder, WorkerHandle};

/// The attribute [`ShardRecordProcessor`] implementations carry (`#[kinesis_kcl::async_trait]`),
/// re-exported from the `async-trait` crate so that applications need not depend on it.
pub use async_trait::async_trait;

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
