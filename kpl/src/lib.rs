//! An async Kinesis producer in the style of the KPL: it aggregates user records in the official
//! KPL aggregation format, groups them per predicted shard using the stream's hash-key ranges,
//! collects them into PutRecords calls (at most 500 records / 5 MiB), rate-limits per shard,
//! retries with exponential backoff and jitter until each record's deadline, bounds its buffers,
//! and drains everything on flush and shutdown. Every put resolves to a [`PutResult`] (shard,
//! sequence number, sub-sequence number, attempts) or a typed [`Error`].
//!
//! The pipeline, one direction only:
//!
//! ```text
//! put_record ─► validate ─► shard map (predict) ─► per-shard aggregator ─► collector
//!   (≤ 500 entries, ≤ 5 MiB; per-shard token buckets) ─► sender ─► retrier ─► results
//! ```
//!
//! What a result means: `Ok` only when the shard that stored the record's Kinesis record holds
//! its hash key (the Java KCL's rule for keeping an aggregate), however the stream is resharded
//! meanwhile; records are stored at least once (twice only after a call whose answer was lost);
//! with [`Ordering::PerShardStrict`] per-key order holds across retries, splits and merges; the
//! memory held is bounded by [`ProducerConfig::memory_bound`]. The SDK client's own retries are turned
//! off so that every call made is an attempt in the result.
//!
//! The aggregation format itself is the `kinesis-aggregation` crate, which the consumer
//! (`kinesis-kcl`) reads it with.

#![warn(missing_docs)]

mod aggregator;
mod clock;
mod config;
mod error;
mod limiter;
pub mod metrics;
mod pending;
mod pipeline;
mod producer;
mod result;
mod retrier;
mod sender;
mod shard_map;
mod strict;
mod validate;

pub use config::{
    DEFAULT_MAX_RECORD_SIZE, MAX_PARTITION_KEY_BYTES, MAX_PARTITION_KEY_CHARS, Ordering,
    PUT_RECORDS_MAX_BYTES, PUT_RECORDS_MAX_ENTRIES, ProducerConfig, ProducerConfigBuilder,
    RECORD_OVERHEAD,
};
pub use error::{ConfigError, Error, PutError};
pub use producer::{Producer, ProducerBuilder};
pub use result::{Attempt, MAX_ATTEMPTS_KEPT, PutResult, UserRecord};

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
