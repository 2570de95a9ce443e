//! A Kinesis consumer library in the style of the Java Kinesis Client Library (KCL).
//!
//! Shard leases are coordinated through a DynamoDB table laid out exactly as the Java KCL
//! lays it out, so an application can move between the Java KCL and this crate on the same
//! lease table without losing its position.
//!
//! What exists so far is the lease layer (the worker, retrieval and processors build on it):
//!
//! - [`lease::Lease`] with [`lease::Lease::from_item`] / [`lease::Lease::to_item`]: the
//!   Java-compatible item layout, preserving attributes it does not know;
//! - the conditional writes (renew, take, evict, checkpoint) as data ([`lease::LeaseWrite`]);
//! - [`lease::ExpiryTracker`]: lease expiry on this worker's monotonic clock;
//! - [`lease::decide`]: the deterministic lease assignment;
//! - [`lease::LeaseTable`]: the DynamoDB I/O (table creation, scans, conditional writes with
//!   retries on throttling);
//! - [`lease::LeaseCoordinator`]: one worker's side of the protocol (renewal, expiry, taking,
//!   balancing, graceful hand-off, shutdown), handing out [`lease::HeldLease`]s to checkpoint
//!   through;
//! - [`LeaseConfig`]: the settings, with the Java KCL's defaults.
//!
//! ```
//! use std::time::Instant;
//! use kinesis_kcl::LeaseConfig;
//! use kinesis_kcl::lease::{ExpiryTracker, ExtendedSequenceNumber, Lease, decide};
//!
//! let config = LeaseConfig::default();
//! // A scan of the lease table found two fresh, unowned leases.
//! let leases = [
//!     Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON),
//!     Lease::new("shardId-000000000001", ExtendedSequenceNumber::TRIM_HORIZON),
//! ];
//! let mut tracker = ExpiryTracker::new();
//! let snapshot = tracker.observe(Instant::now(), &leases, config.failover_time());
//! let decision = decide(&snapshot, "worker-a", &config.assignment());
//! assert_eq!(decision.to_take.len(), 2); // a lone worker takes everything
//!
//! // The conditional write that takes the first one:
//! let write = leases[0].take_write("worker-a")?;
//! let request = write.render();
//! assert_eq!(request.condition_expression.as_deref(), Some("#a0 = :v0"));
//! # Ok::<(), kinesis_kcl::Error>(())
//! ```

#![warn(missing_docs)]

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

pub use config::{DEFAULT_FAILOVER_TIME, DEFAULT_HANDOFF_TIMEOUT, LeaseConfig, LeaseConfigBuilder};
pub use error::{Error, Result};
pub use record::Record;

pub use checkpoint::{Checkpointer, PreparedCheckpoint};
pub use processor::{
    ProcessRecordsInput, ProcessorError, ShardRecordProcessor, ShardRecordProcessorFactory,
};
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
