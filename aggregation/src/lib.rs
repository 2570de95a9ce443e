//! The Kinesis Producer Library's aggregated record format: writing it ([`AggregateBuilder`]),
//! reading it ([`deaggregate`]), the hash keys that place records in shards
//! ([`hash_key_for_partition_key`], [`effective_hash_key`]) and a shard's [`HashKeyRange`].
//!
//! No AWS SDK and no async runtime: `bytes`, `md-5` and `thiserror` only. The producer
//! (`kinesis-kpl`) writes the format with this crate and the consumer (`kinesis-kcl`) reads it
//! with this crate, so the two can never disagree about it; anything else that reads Kinesis
//! records (a Lambda function, a Firehose transformation, a hand-written `GetRecords` loop) can
//! deaggregate with it alone. With the `lambda` feature, `lambda::deaggregate_event` takes
//! an [`aws_lambda_events`](https://docs.rs/aws_lambda_events) Kinesis event as Lambda
//! delivers it.
//!
//! # The format
//!
//! An aggregated record is a Kinesis record whose data is
//!
//! ```text
//! F3 89 9A C2  ‖  protobuf AggregatedRecord  ‖  MD5(protobuf), 16 bytes
//! ```
//!
//! where `AggregatedRecord` holds a table of distinct partition keys, a table of distinct explicit
//! hash keys, and the user records, each referring to its keys by index. The schema is in the
//! source of the private `proto` module: `prost` messages that the tests use as the reference for
//! the hand-written encoder and decoder (which are faster, and follow the Java parser's rules). It
//! is the format of the AWS Kinesis Producer Library, read by every KCL and by AWS's
//! `kinesis-aggregation` libraries; the tests check our output against vectors made and read by
//! the Python one.
//!
//! ```
//! use kinesis_aggregation::{AggregateBuilder, Deaggregated, Finished, deaggregate};
//!
//! let mut builder = AggregateBuilder::default();
//! for i in 0..100 {
//!     builder.try_push(&format!("key-{}", i % 7), None, format!("event {i}").as_bytes())?;
//! }
//! let Some(Finished::Aggregated { data, .. }) = builder.finish() else { unreachable!() };
//!
//! let Deaggregated::Aggregated(records) = deaggregate(data) else { unreachable!() };
//! assert_eq!(records.len(), 100);
//! assert_eq!(records[9].partition_key(), "key-2");
//! assert_eq!(&records[9].data()[..], b"event 9");
//! assert_eq!(records[9].sub_sequence_number(), 9);
//! # Ok::<(), kinesis_aggregation::PushRejected>(())
//! ```

#![warn(missing_docs)]

mod aggregate;
mod deaggregate;
mod hash_key;
#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(test)]
mod proto;
mod range;
mod wire;

pub use aggregate::{AggregateBuilder, Finished, PushRejected};
pub use deaggregate::{Deaggregated, PassThroughReason, SubRecord, deaggregate, has_magic};
pub use hash_key::{
    HashKeyCache, HashKeyError, HashKeyProblem, effective_hash_key, hash_key_for_partition_key,
    parse_explicit_hash_key,
};
pub use range::{HashKeyRange, HashKeyRangeError};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The length of the MD5 digest that ends every aggregated record.
pub const DIGEST_LEN: usize = 16;

/// Magic plus digest: what an aggregate costs on top of its protobuf message.
pub const FRAMING_LEN: usize = MAGIC.len() + DIGEST_LEN;

// The README's example compiles and runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
