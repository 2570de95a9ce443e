//! The aggregation schema as `prost` messages (hand-written; there is no `protoc` build step).
//!
//! The published schema (proto2, package `aws.kinesis.protobuf`) is:
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! message Tag {
//!   required string key   = 1;
//!   optional string value = 2;
//! }
//! ```
//!
//! These are the reference the hand-written wire code (`wire`, and the builder and decoder built
//! on it) is tested against: the builder must produce exactly what `prost` encodes, and the
//! decoder must accept exactly what this decodes (give or take the documented leniency about wire
//! types). Two deliberate differences from a literal translation, neither of which changes a byte
//! on the wire:
//!
//! * `required` fields are declared `optional` here, so that decoding can tell a missing field
//!   from a zero one (`prost` does not enforce `required`; the Java parser the KCL uses does, and
//!   we reject the same messages it rejects). An `optional` field that is `Some` encodes exactly as
//!   a `required` one.
//! * `string` fields are declared `bytes` (same wire type, length-delimited) so that decoding from
//!   a [`Bytes`] buffer is zero-copy; the deaggregator checks UTF-8 itself where it matters.

use bytes::Bytes;

/// `AggregatedRecord`: the key tables and the user records.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AggregatedRecord {
    /// Field 1: distinct partition keys, in first-seen order.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub partition_key_table: Vec<Bytes>,
    /// Field 2: distinct explicit hash keys, in first-seen order.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<Bytes>,
    /// Field 3: the user records.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// `Record`: one user record.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Record {
    /// Field 1 (required): index into `partition_key_table`.
    #[prost(uint64, optional, tag = "1")]
    pub partition_key_index: Option<u64>,
    /// Field 2: index into `explicit_hash_key_table`.
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// Field 3 (required): the user data.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub data: Option<Bytes>,
    /// Field 4: tags. The KPL never writes them and no KCL exposes them; they are parsed (so a
    /// malformed tag rejects the aggregate as it would in Java) and then ignored.
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// `Tag`: a key/value pair attached to a record.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Tag {
    /// Field 1 (required).
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub key: Option<Bytes>,
    /// Field 2.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub value: Option<Bytes>,
}
