//! An async Kinesis producer in the style of the KPL: put user records, each put resolving to
//! where the record was stored or to why not.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let bed = kinesis_integration::TestBed::start_with(
//! #     kinesis_integration::Backend::Embedded, Default::default()).await?;
//! # let stream = bed.create_stream(2).await?;
//! # let client = bed.kinesis().clone();
//! use std::time::Duration;
//! use kinesis_kpl::{Producer, UserRecord};
//!
//! // `client` is an `aws_sdk_kinesis::Client`; `stream` a stream name or ARN.
//! let producer = Producer::builder(client, &stream)
//!     .record_max_buffered_time(Duration::from_millis(50))
//!     .build()
//!     .await?;
//! let puts: Vec<_> = (0..100)
//!     .map(|i| producer.put_record(UserRecord::new(format!("user-{}", i % 10), "clicked")))
//!     .collect();
//! let mut failed = Vec::new();
//! for put in puts {
//!     match put.await {
//!         Ok(stored) => println!("{} {}", stored.shard_id, stored.sequence_number),
//!         // The record comes back: put it again later, or set it aside.
//!         Err(error) => failed.extend(error.into_record()),
//!     }
//! }
//! producer.shutdown().await; // sends what is buffered; every put resolves
//! # assert!(failed.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! [`Producer::builder`] takes the settings of [`ProducerConfig`] (the KPL's defaults);
//! [`Producer::new`] takes a built [`ProducerConfig`]. Starting fails with an [`Error`]; a bad
//! setting is a [`ConfigError`]; a put fails with a [`PutError`], which hands the record back
//! and says whether putting it again may succeed ([`PutError::is_retryable`]).
//!
//! # What it does
//!
//! It aggregates user records in the official KPL aggregation format, groups them per
//! predicted shard using the stream's hash-key ranges, collects them into PutRecords calls (at
//! most 500 records / 5 MiB), rate-limits per shard, retries with exponential backoff and
//! jitter until each record's deadline, bounds its buffers, and drains everything on flush and
//! shutdown. Every put resolves to a [`PutResult`] (shard, sequence number, sub-sequence
//! number, attempts) or a [`PutError`].
//!
//! ```text
//! put_record ─► validate ─► shard map (predict) ─► per-shard aggregator ─► collector
//!   (≤ 500 entries, ≤ 5 MiB; per-shard token buckets) ─► sender ─► retrier ─► results
//! ```
//!
//! One producer puts to any number of streams: a record names its stream
//! ([`UserRecord::stream`]) or goes to the producer's own; [`Producer::multi_stream`] builds a
//! producer with none. Every stream has its own pipeline, and all of them share the producer's
//! memory bounds and connection budget (see [`Producer`]).
//!
//! # Guarantees
//!
//! - `Ok` only when the shard that stored the record's Kinesis record holds its hash key (the
//!   Java KCL's rule for keeping an aggregate), however the stream is resharded meanwhile.
//! - Records are stored at least once (twice only after a call whose answer was lost).
//! - With [`Ordering::PerShardStrict`], per-key order holds across retries, splits and merges.
//! - The memory held is bounded by [`ProducerConfig::memory_bound`].
//! - The SDK client's own retries are turned off, so that every call made is an attempt in the
//!   result.
//!
//! Metrics are reported through the `metrics` facade; their names are in [`metrics`].
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
mod streams;
mod strict;
mod validate;

pub use config::{MAX_PARTITION_KEY_CHARS, Ordering, ProducerConfig, ProducerConfigBuilder};
pub use error::{ConfigError, Error, PutError};
pub use producer::{Producer, ProducerBuilder};
pub use result::{Attempt, MAX_ATTEMPTS_KEPT, PutResult, UserRecord};

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
