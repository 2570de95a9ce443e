//! Shards: where a new lease starts reading ([`InitialPosition`]), and what a shard's end
//! reveals about its children ([`ChildShard`]).
//!
//! - [`lineage`]: the pure lineage decisions — which leases to create for a stream's shards
//!   ([`plan_new_leases`], [`bootstrap_leases`]), whether a lease may be processed yet
//!   ([`LeaseLineage`]), which finished leases may go ([`leases_to_delete`]);
//! - [`sync`]: [`ShardSyncer`], the I/O around them for one stream (`ListShards`, lease
//!   creation, children at a shard's end, clean-up).

use std::time::SystemTime;

pub mod lineage;
pub mod sync;

pub use lineage::{
    CleanupReason, LeaseDeletion, LeaseLineage, NewLease, ShardInfo, bootstrap_leases, has_started,
    inconsistent_shards, initial_checkpoint, is_hash_range_complete, leases_to_delete,
    plan_new_leases, shards_at_initial_position, sibling_lease_key,
};
pub use sync::{ChildLeases, CleanupReport, ShardSyncer, StreamTarget, SyncReport};

use crate::lease::HashKeyRange;

/// Where processing of a shard with no checkpoint yet starts.
///
/// Default [`InitialPosition::Latest`], as the Java KCL's `InitialPositionInStream.LATEST`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InitialPosition {
    /// The oldest record still in the shard.
    TrimHorizon,
    /// Just after the newest record: only records put from now on.
    #[default]
    Latest,
    /// The first record at or after this arrival time.
    AtTimestamp(SystemTime),
}

/// A shard born from a split or a merge, as reported at its parent's end (the `ChildShards`
/// of a `GetRecords` response or a `SubscribeToShard` event) or found by `ListShards`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildShard {
    /// The child's shard id.
    pub shard_id: String,
    /// Its parents: one after a split, two after a merge.
    pub parent_shard_ids: Vec<String>,
    /// The hash keys it covers, when known.
    pub hash_key_range: Option<HashKeyRange>,
}

impl From<&aws_sdk_kinesis::types::ChildShard> for ChildShard {
    /// A child as reported by `GetRecords` or a `SubscribeToShard` event; a malformed hash
    /// key range is dropped (`None`).
    fn from(child: &aws_sdk_kinesis::types::ChildShard) -> Self {
        ChildShard {
            shard_id: child.shard_id().to_owned(),
            parent_shard_ids: child.parent_shards().to_vec(),
            hash_key_range: child.hash_key_range().and_then(|range| {
                HashKeyRange::parse(range.starting_hash_key(), range.ending_hash_key()).ok()
            }),
        }
    }
}
