//! The KPL aggregated record format: writing it ([`AggregateBuilder`]), reading it
//! ([`deaggregate`]), and the hash keys that place records in shards.
//!
//! # Why it lives here
//!
//! The producer writes this format and the consumer reads it. The consumer crate
//! (`kinesis-kcl`) depends on `kinesis-kpl` for this module, so the format has exactly one home
//! and the two sides can never disagree about it.
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
//! use kinesis_kpl::record::{AggregateBuilder, Deaggregated, Finished, deaggregate};
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
//! # Ok::<(), kinesis_kpl::record::PushRejected>(())
//! ```

mod aggregate;
mod deaggregate;
mod hash_key;
#[cfg(test)]
mod proto;
mod wire;

pub use aggregate::{AggregateBuilder, Finished, PushRejected};
pub use deaggregate::{
    Deaggregated, PassThroughReason, SubRecord, count_outside_range, deaggregate, has_magic,
};
pub use hash_key::{
    HashKeyError, HashKeyProblem, effective_hash_key, hash_key_for_partition_key,
    parse_explicit_hash_key,
};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// The length of the MD5 digest that ends every aggregated record.
pub const DIGEST_LEN: usize = 16;

/// Magic plus digest: what an aggregate costs on top of its protobuf message.
pub const FRAMING_LEN: usize = MAGIC.len() + DIGEST_LEN;

/// The errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// An explicit hash key is not a decimal integer in `0..2^128`.
    #[error(transparent)]
    HashKey(#[from] HashKeyError),
    /// An aggregate builder refused a record.
    #[error(transparent)]
    Rejected(#[from] PushRejected),
}
