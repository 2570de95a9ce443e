//! Shard lineage decisions, as plain functions over plain data: which leases to create for
//! the shards of a stream, which leases may be processed now, and which may be deleted.
//!
//! Kinesis reshards by closing shards: a split closes one parent and opens two children, a
//! merge closes two parents and opens one child. Records of a key go to the parent until it
//! closes and to a child after, so a consumer that wants per-key order must finish a parent
//! (checkpoint `SHARD_END`) before it starts any of its children. The lease table records that
//! lineage: every lease names its parent shards ([`Lease::parent_shard_ids`]).
//!
//! Nothing here does I/O; [`ShardSyncer`](super::ShardSyncer) feeds these functions with a
//! `ListShards` listing ([`ShardInfo`]) and a lease-table scan ([`Lease`]), then writes what
//! they decide.
//!
//! # The rules (as the Java KCL 2.x/3.x)
//!
//! - **Lease creation** ([`plan_new_leases`], the Java `HierarchicalShardSyncer` with its
//!   `NonEmptyLeaseTableSynchronizer`): every open shard without a lease is traced back
//!   through its ancestors. If no ancestor has a lease, the shard gets one at the initial
//!   position — except that for `TRIM_HORIZON` and `AT_TIMESTAMP` the *oldest* ancestors still
//!   in the stream get the leases instead (so no record is skipped), and the descendants wait
//!   for them. If an ancestor has a lease, nothing is created for the descendants: their
//!   leases appear when that ancestor reaches its end ([`NewLease::for_child`]), one level at
//!   a time. With `LATEST`, the other parent of a merge whose first parent has a lease gets a
//!   lease at `LATEST`.
//! - **Bootstrap** ([`bootstrap_leases`], the Java `EmptyLeaseTableSynchronizer`): on an empty
//!   table, every shard open at the initial position gets a lease at that position.
//! - **Processing** ([`LeaseLineage`], the Java `BlockOnParentShardTask`): a lease may be
//!   processed once every parent shard's lease is at `SHARD_END` or absent from the table
//!   (absent: deleted after it finished, or never needed).
//! - **Clean-up** ([`leases_to_delete`], the Java `LeaseCleanupManager`): a lease at
//!   `SHARD_END` is deleted once all its children's leases exist and have started, and its
//!   own parents' leases are gone; a lease at `SHARD_END` whose shard has left the stream
//!   (trimmed) is deleted too.
//!
//! Where this module differs from Java, the item says so.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{ChildShard, InitialPosition};
use crate::error::{Error, Result};
use crate::lease::{HashKeyRange, Lease, StreamIdentifier};
use crate::sequence::{ExtendedSequenceNumber, SequenceNumber, SequencePosition};

/// One shard as `ListShards` describes it.
///
/// ```
/// use kinesis_kcl::lease::{HashKeyRange, SequenceNumber};
/// use kinesis_kcl::shard::ShardInfo;
///
/// let parent = ShardInfo::new("shardId-000000000000", HashKeyRange::new(0, u128::MAX)?, SequenceNumber::new("100")?)
///     .closed_at(SequenceNumber::new("199")?);
/// let child = ShardInfo::new("shardId-000000000001", HashKeyRange::new(0, u128::MAX / 2)?, SequenceNumber::new("200")?)
///     .with_parent("shardId-000000000000");
/// assert!(!parent.is_open() && child.is_open());
/// assert_eq!(child.parent_shard_ids().collect::<Vec<_>>(), ["shardId-000000000000"]);
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    /// The shard id, e.g. `shardId-000000000004`.
    pub shard_id: String,
    /// `ParentShardId`: the shard it was split from, or the first of the two it was merged
    /// from.
    pub parent_shard_id: Option<String>,
    /// `AdjacentParentShardId`: the second parent of a merge.
    pub adjacent_parent_shard_id: Option<String>,
    /// The hash keys it covers.
    pub hash_key_range: HashKeyRange,
    /// The first sequence number of the shard.
    pub starting_sequence_number: SequenceNumber,
    /// The last sequence number; present once the shard is closed.
    pub ending_sequence_number: Option<SequenceNumber>,
}

impl ShardInfo {
    /// An open shard without parents.
    pub fn new(
        shard_id: impl Into<String>,
        hash_key_range: HashKeyRange,
        starting_sequence_number: SequenceNumber,
    ) -> Self {
        ShardInfo {
            shard_id: shard_id.into(),
            parent_shard_id: None,
            adjacent_parent_shard_id: None,
            hash_key_range,
            starting_sequence_number,
            ending_sequence_number: None,
        }
    }

    /// Sets the parent (a split's only parent, or a merge's first).
    pub fn with_parent(mut self, parent_shard_id: impl Into<String>) -> Self {
        self.parent_shard_id = Some(parent_shard_id.into());
        self
    }

    /// Sets the adjacent parent (a merge's second parent).
    pub fn with_adjacent_parent(mut self, parent_shard_id: impl Into<String>) -> Self {
        self.adjacent_parent_shard_id = Some(parent_shard_id.into());
        self
    }

    /// Marks the shard closed at `ending_sequence_number`.
    pub fn closed_at(mut self, ending_sequence_number: SequenceNumber) -> Self {
        self.ending_sequence_number = Some(ending_sequence_number);
        self
    }

    /// Whether the shard is open (no ending sequence number): it still receives records.
    pub fn is_open(&self) -> bool {
        self.ending_sequence_number.is_none()
    }

    /// The parent and the adjacent parent, when present (each once).
    pub fn parent_shard_ids(&self) -> impl Iterator<Item = &str> {
        let first = self.parent_shard_id.as_deref();
        let second = self
            .adjacent_parent_shard_id
            .as_deref()
            .filter(|adjacent| Some(*adjacent) != first);
        first.into_iter().chain(second)
    }
}

/// A lease to create: what [`plan_new_leases`], [`bootstrap_leases`] and
/// [`NewLease::for_child`] decide, before it is keyed for single- or multi-stream mode by
/// [`NewLease::into_lease`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLease {
    /// The shard.
    pub shard_id: String,
    /// Where processing starts.
    pub checkpoint: ExtendedSequenceNumber,
    /// The parent shards (one after a split, two after a merge), as the lease records them.
    pub parent_shard_ids: BTreeSet<String>,
    /// The shard's hash keys, when known.
    pub hash_key_range: Option<HashKeyRange>,
}

impl NewLease {
    /// A lease for a listed shard, starting at `checkpoint`, recording both parents (listed
    /// or not, as the Java `newKCLLease`) and the hash key range.
    pub fn for_shard(shard: &ShardInfo, checkpoint: ExtendedSequenceNumber) -> Self {
        NewLease {
            shard_id: shard.shard_id.clone(),
            checkpoint,
            parent_shard_ids: shard.parent_shard_ids().map(str::to_owned).collect(),
            hash_key_range: Some(shard.hash_key_range),
        }
    }

    /// The lease of a child reported at its parent's end: at `TRIM_HORIZON` (all its records
    /// follow the parent's), with the parents and hash range from the report.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] if the child names no parent (as the Java
    /// `newKCLLeaseForChildShard`, which refuses such a child).
    pub fn for_child(child: &ChildShard) -> Result<Self> {
        if child.parent_shard_ids.is_empty() {
            return Err(Error::invalid_value(
                "child shard",
                &child.shard_id,
                "a child shard must name its parent shards",
            ));
        }
        Ok(NewLease {
            shard_id: child.shard_id.clone(),
            checkpoint: ExtendedSequenceNumber::TRIM_HORIZON,
            parent_shard_ids: child.parent_shard_ids.iter().cloned().collect(),
            hash_key_range: child.hash_key_range,
        })
    }

    /// The lease item: keyed by the shard id, or by `stream`'s multi-stream key when given.
    pub fn into_lease(self, stream: Option<&StreamIdentifier>) -> Lease {
        let mut lease = match stream {
            Some(stream) => Lease::new_multi_stream(stream.clone(), self.shard_id, self.checkpoint),
            None => Lease::new(self.shard_id, self.checkpoint),
        };
        lease.parent_shard_ids = self.parent_shard_ids;
        lease.hash_key_range = self.hash_key_range;
        lease
    }
}

/// The checkpoint a lease created at `position` starts with: `TRIM_HORIZON`, `LATEST` or
/// `AT_TIMESTAMP` (the timestamp itself is configuration, not stored in the lease).
pub fn initial_checkpoint(position: InitialPosition) -> ExtendedSequenceNumber {
    match position {
        InitialPosition::TrimHorizon => ExtendedSequenceNumber::TRIM_HORIZON,
        InitialPosition::Latest => ExtendedSequenceNumber::LATEST,
        InitialPosition::AtTimestamp(_) => ExtendedSequenceNumber::AT_TIMESTAMP,
    }
}

/// The lease key of `shard_id` in the same stream as `lease`: the shard id itself, or the
/// multi-stream key `<account>:<stream>:<epoch>:<shard>` when `lease` is a multi-stream lease.
pub fn sibling_lease_key(lease: &Lease, shard_id: &str) -> String {
    match &lease.multi_stream {
        Some(ms) => ms.stream.lease_key(shard_id),
        None => shard_id.to_owned(),
    }
}

/// The shards "open at" `position` among `shards`, as the `ListShards` filters the Java KCL
/// sends on an empty lease table would return them: for `LATEST` the open shards
/// (`AT_LATEST`); for `TRIM_HORIZON` the shards none of whose parents is listed, i.e. the
/// oldest shards still in the stream (`AT_TRIM_HORIZON`).
///
/// For `AT_TIMESTAMP` a listing holds no shard creation times, so this returns the oldest
/// shards as for `TRIM_HORIZON`: a superset in time, never a gap — their leases start
/// `AT_TIMESTAMP`, older shards yield no records and reach their end, and the children follow.
/// Applied to a listing the server already filtered, each rule returns it unchanged (the
/// shards open at one instant never include a parent and its child), so it is safe to apply
/// whether or not the server honoured the filter.
pub fn shards_at_initial_position(
    shards: &[ShardInfo],
    position: InitialPosition,
) -> Vec<&ShardInfo> {
    match position {
        InitialPosition::Latest => shards.iter().filter(|s| s.is_open()).collect(),
        InitialPosition::TrimHorizon | InitialPosition::AtTimestamp(_) => {
            let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
            shards
                .iter()
                .filter(|s| s.parent_shard_ids().all(|p| !listed.contains(p)))
                .collect()
        }
    }
}

/// The leases for an empty lease table (the Java `EmptyLeaseTableSynchronizer`): one per
/// shard open at `position` ([`shards_at_initial_position`]), at the initial checkpoint,
/// in creation order (starting sequence number, then shard id).
///
/// Closed shards among them are processed to their end, where their children's leases are
/// created ([`NewLease::for_child`]).
pub fn bootstrap_leases(shards: &[ShardInfo], position: InitialPosition) -> Vec<NewLease> {
    let checkpoint = initial_checkpoint(position);
    let mut leases: Vec<(&ShardInfo, NewLease)> = shards_at_initial_position(shards, position)
        .into_iter()
        .map(|s| (s, NewLease::for_shard(s, checkpoint.clone())))
        .collect();
    leases.sort_by(|(a, _), (b, _)| creation_order(a, b));
    leases.into_iter().map(|(_, lease)| lease).collect()
}

/// Whether `shards` cover the whole hash key space `0..=2^128-1` exactly once: no gap, no
/// overlap. A listing taken while a reshard is under way may fail this.
pub fn is_hash_range_complete<'a>(shards: impl IntoIterator<Item = &'a ShardInfo>) -> bool {
    let mut ranges: Vec<HashKeyRange> = shards.into_iter().map(|s| s.hash_key_range).collect();
    ranges.sort();
    let Some(first) = ranges.first() else {
        return false;
    };
    if first.start() != 0 {
        return false;
    }
    let mut end = first.end();
    for range in &ranges[1..] {
        match end.checked_add(1) {
            Some(next) if next == range.start() => end = range.end(),
            _ => return false,
        }
    }
    end == u128::MAX
}

/// Open shards with an open listed parent: a listing caught in the middle of a reshard
/// (the Java `findInconsistentShardIds`). [`plan_new_leases`] leaves them alone.
pub fn inconsistent_shards(shards: &[ShardInfo]) -> BTreeSet<String> {
    let by_id: HashMap<&str, &ShardInfo> =
        shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    shards
        .iter()
        .filter(|s| s.is_open())
        .filter(|s| {
            s.parent_shard_ids()
                .any(|p| by_id.get(p).is_some_and(|parent| parent.is_open()))
        })
        .map(|s| s.shard_id.clone())
        .collect()
}

/// The leases to create for a stream that already has leases (`leases`: this stream's), given
/// a full `ListShards` listing, in creation order (starting sequence number, then shard id).
///
/// This is the Java `NonEmptyLeaseTableSynchronizer`: for each open shard without a lease
/// (skipping [`inconsistent_shards`]), walk its ancestors. A shard is a *descendant* if it
/// or an ancestor has a lease, or (for `TRIM_HORIZON` / `AT_TIMESTAMP`) an ancestor is an
/// oldest listed shard that will get a lease. Then:
///
/// - an open shard that is not a descendant gets a lease at the initial position;
/// - for a descendant, the first unleased parents on the way get leases: those that are
///   themselves descendants (the oldest shards, for `TRIM_HORIZON`) start at `TRIM_HORIZON`
///   (`AT_TIMESTAMP` for `AT_TIMESTAMP`), a parent that is not (the other parent of a merge,
///   for `LATEST`) at the initial position;
/// - nothing is created below a shard that has a lease: the lease of its child is created at
///   its end ([`NewLease::for_child`]).
///
/// One addition to Java: a listed shard without a lease whose parent's lease is at
/// `SHARD_END` gets its lease here, at `TRIM_HORIZON`, provided every listed parent has (or
/// is getting) a lease. That is the lease the parent's consumer creates at its end from the
/// `ChildShards`; creating it here too (idempotently) repairs a consumer that stopped between
/// its `SHARD_END` checkpoint and the child's creation, which Java only prevents by ordering.
///
/// ```
/// use kinesis_kcl::lease::{ExtendedSequenceNumber, HashKeyRange, Lease, SequenceNumber};
/// use kinesis_kcl::shard::{InitialPosition, ShardInfo, plan_new_leases};
///
/// let seq = |s: &str| SequenceNumber::new(s).unwrap();
/// let half = u128::MAX / 2;
/// // Shard 0 was split into 1 and 2 while nobody consumed the stream.
/// let shards = [
///     ShardInfo::new("shardId-0", HashKeyRange::new(0, u128::MAX)?, seq("1")).closed_at(seq("9")),
///     ShardInfo::new("shardId-1", HashKeyRange::new(0, half)?, seq("10")).with_parent("shardId-0"),
///     ShardInfo::new("shardId-2", HashKeyRange::new(half + 1, u128::MAX)?, seq("11")).with_parent("shardId-0"),
/// ];
/// // Another stream's lease makes the table non-empty; this stream has none.
/// let leases: [Lease; 0] = [];
/// // TRIM_HORIZON starts at the oldest shard; its children follow once it ends.
/// let planned = plan_new_leases(&shards, &leases, InitialPosition::TrimHorizon);
/// assert_eq!(planned.len(), 1);
/// assert_eq!(planned[0].shard_id, "shardId-0");
/// assert_eq!(planned[0].checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
/// // LATEST starts at the open shards.
/// let planned = plan_new_leases(&shards, &leases, InitialPosition::Latest);
/// assert_eq!(planned.iter().map(|l| l.shard_id.as_str()).collect::<Vec<_>>(), ["shardId-1", "shardId-2"]);
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
pub fn plan_new_leases(
    shards: &[ShardInfo],
    leases: &[Lease],
    position: InitialPosition,
) -> Vec<NewLease> {
    let mut planner = Planner {
        shards: shards.iter().map(|s| (s.shard_id.as_str(), s)).collect(),
        leased: leases.iter().map(Lease::shard_id).collect(),
        position,
        descendant: HashMap::new(),
        should_create: HashSet::new(),
        planned: BTreeMap::new(),
    };
    let inconsistent = inconsistent_shards(shards);
    let mut open: Vec<&ShardInfo> = shards.iter().filter(|s| s.is_open()).collect();
    open.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    for shard in open {
        let id = shard.shard_id.as_str();
        if planner.leased.contains(id) || inconsistent.contains(id) {
            continue;
        }
        if !planner.is_descendant(id) {
            planner
                .planned
                .insert(id, NewLease::for_shard(shard, initial_checkpoint(position)));
        }
    }
    planner.add_children_of_finished(leases);

    let mut out: Vec<(&ShardInfo, NewLease)> = planner
        .planned
        .into_iter()
        .filter_map(|(id, lease)| planner.shards.get(id).map(|s| (*s, lease)))
        .collect();
    out.sort_by(|(a, _), (b, _)| creation_order(a, b));
    out.into_iter().map(|(_, lease)| lease).collect()
}

/// Starting sequence number, then shard id: the order the Java KCL creates leases in, so a
/// sync interrupted half-way leaves the older shards covered.
fn creation_order(a: &ShardInfo, b: &ShardInfo) -> std::cmp::Ordering {
    a.starting_sequence_number
        .cmp(&b.starting_sequence_number)
        .then_with(|| a.shard_id.cmp(&b.shard_id))
}

/// The ancestor walk of [`plan_new_leases`], memoised per shard.
struct Planner<'a> {
    shards: HashMap<&'a str, &'a ShardInfo>,
    leased: HashSet<&'a str>,
    position: InitialPosition,
    descendant: HashMap<&'a str, bool>,
    should_create: HashSet<&'a str>,
    planned: BTreeMap<&'a str, NewLease>,
}

impl<'a> Planner<'a> {
    /// Parents of `shard` that are in the listing (expired ones are out of reach).
    fn listed_parents(&self, shard: &'a ShardInfo) -> Vec<&'a str> {
        shard
            .parent_shard_ids()
            .filter(|p| self.shards.contains_key(p))
            .collect()
    }

    /// Whether `id` has a lease or descends from a shard that has or gets one; plans the
    /// leases of the first unleased ancestors on the way (the Java
    /// `checkIfDescendantAndAddNewLeasesForAncestors`).
    fn is_descendant(&mut self, id: &'a str) -> bool {
        if let Some(&known) = self.descendant.get(id) {
            return known;
        }
        let mut descendant = false;
        if let Some(&shard) = self.shards.get(id) {
            if self.leased.contains(id) {
                descendant = true;
            } else {
                let parents = self.listed_parents(shard);
                let mut descendant_parents = HashSet::new();
                for &parent in &parents {
                    if self.is_descendant(parent) || self.should_create.contains(parent) {
                        descendant = true;
                        descendant_parents.insert(parent);
                    }
                }
                if descendant {
                    for &parent in &parents {
                        self.plan_parent(parent, descendant_parents.contains(parent));
                    }
                } else if !matches!(self.position, InitialPosition::Latest) {
                    // An oldest shard: TRIM_HORIZON and AT_TIMESTAMP read it too.
                    self.should_create.insert(id);
                }
            }
        }
        self.descendant.insert(id, descendant);
        descendant
    }

    /// Plans (or re-checkpoints) the lease of `parent`, a parent of a descendant.
    fn plan_parent(&mut self, parent: &'a str, parent_is_descendant: bool) {
        if self.leased.contains(parent) {
            return;
        }
        if !self.planned.contains_key(parent)
            && (self.should_create.contains(parent) || !parent_is_descendant)
        {
            let shard = self.shards[parent];
            self.planned.insert(
                parent,
                NewLease::for_shard(shard, initial_checkpoint(self.position)),
            );
        }
        if let Some(lease) = self.planned.get_mut(parent) {
            lease.checkpoint = if parent_is_descendant
                && !matches!(self.position, InitialPosition::AtTimestamp(_))
            {
                ExtendedSequenceNumber::TRIM_HORIZON
            } else {
                initial_checkpoint(self.position)
            };
        }
    }

    /// Plans the children of leases at `SHARD_END` that lack a lease (see
    /// [`plan_new_leases`]).
    fn add_children_of_finished(&mut self, leases: &'a [Lease]) {
        let finished: HashSet<&str> = leases
            .iter()
            .filter(|l| l.is_shard_end())
            .map(Lease::shard_id)
            .collect();
        let mut children: Vec<&'a ShardInfo> = self
            .shards
            .values()
            .copied()
            .filter(|s| s.parent_shard_ids().any(|p| finished.contains(p)))
            .collect();
        children.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        for child in children {
            let id = child.shard_id.as_str();
            if self.leased.contains(id) || self.planned.contains_key(id) {
                continue;
            }
            let parents_covered = self
                .listed_parents(child)
                .iter()
                .all(|p| self.leased.contains(p) || self.planned.contains_key(p));
            if parents_covered {
                self.planned.insert(
                    id,
                    NewLease::for_shard(child, ExtendedSequenceNumber::TRIM_HORIZON),
                );
            }
        }
    }
}

/// The leases of a lease table, indexed for lineage questions: may this lease be processed,
/// and which leases wait on which parents (the Java `BlockOnParentShardTask`).
///
/// A parent blocks its child while the parent's lease exists and is not at `SHARD_END`. A
/// parent without a lease does not block: its lease was deleted after it finished (clean-up
/// only deletes finished leases whose children started), or it was never needed (it expired
/// from the stream, or the application started after it closed).
///
/// ```
/// use std::collections::BTreeSet;
/// use kinesis_kcl::lease::{ExtendedSequenceNumber, Lease};
/// use kinesis_kcl::shard::LeaseLineage;
///
/// let parent = Lease::new("shardId-0", ExtendedSequenceNumber::TRIM_HORIZON);
/// let mut child = Lease::new("shardId-1", ExtendedSequenceNumber::TRIM_HORIZON);
/// child.parent_shard_ids = BTreeSet::from(["shardId-0".to_owned()]);
///
/// let leases = [parent.clone(), child.clone()];
/// let lineage = LeaseLineage::new(&leases);
/// assert!(lineage.may_process(&parent));
/// assert!(!lineage.may_process(&child)); // shardId-0 is not finished
///
/// let mut finished = parent;
/// finished.checkpoint = ExtendedSequenceNumber::SHARD_END;
/// let leases = [finished, child.clone()];
/// assert!(LeaseLineage::new(&leases).may_process(&child));
/// ```
#[derive(Clone, Debug)]
pub struct LeaseLineage<'a> {
    by_key: BTreeMap<&'a str, &'a Lease>,
}

impl<'a> LeaseLineage<'a> {
    /// Indexes `leases` (a scan of the table, or of one stream's leases) by lease key.
    pub fn new(leases: &'a [Lease]) -> Self {
        LeaseLineage {
            by_key: leases.iter().map(|l| (l.lease_key.as_str(), l)).collect(),
        }
    }

    /// The lease with this key, if present.
    pub fn get(&self, lease_key: &str) -> Option<&'a Lease> {
        self.by_key.get(lease_key).copied()
    }

    /// The parent leases that block `lease`: present and not at `SHARD_END`, in lease key
    /// order.
    pub fn blocking_parents(&self, lease: &Lease) -> Vec<&'a Lease> {
        lease
            .parent_shard_ids
            .iter()
            .filter_map(|p| self.get(&sibling_lease_key(lease, p)))
            .filter(|parent| !parent.is_shard_end())
            .collect()
    }

    /// Whether `lease` may be processed now: no parent blocks it.
    pub fn may_process(&self, lease: &Lease) -> bool {
        self.blocking_parents(lease).is_empty()
    }

    /// Every indexed lease that is blocked, with the keys of the parents it waits for.
    pub fn waiting(&self) -> BTreeMap<&'a str, Vec<&'a str>> {
        self.by_key
            .iter()
            .filter_map(|(&key, &lease)| {
                let blocking = self.blocking_parents(lease);
                (!blocking.is_empty())
                    .then(|| (key, blocking.iter().map(|p| p.lease_key.as_str()).collect()))
            })
            .collect()
    }
}

/// Whether a lease has begun processing, as the Java `LeaseCleanupManager` judges a child:
/// its checkpoint is neither `TRIM_HORIZON` nor `AT_TIMESTAMP`.
pub fn has_started(lease: &Lease) -> bool {
    !matches!(
        lease.checkpoint.position,
        SequencePosition::TrimHorizon | SequencePosition::AtTimestamp
    )
}

/// Why [`leases_to_delete`] deletes a lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CleanupReason {
    /// The shard is finished and all its children have started.
    Completed,
    /// The shard is finished and has left the stream (its records expired).
    Trimmed,
}

/// A lease [`leases_to_delete`] chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseDeletion {
    /// The lease key.
    pub lease_key: String,
    /// Why.
    pub reason: CleanupReason,
}

/// The leases to delete, parents before children (the Java `LeaseCleanupManager`), given a
/// stream's leases and a full `ListShards` listing (`shards`; empty means unknown: then no
/// shard counts as trimmed).
///
/// Only leases at `SHARD_END` are deleted. Such a lease goes when:
///
/// 1. its parents' leases are gone (deleted earlier, or earlier in this same plan), so the
///    lineage is always cut from the oldest end; and
/// 2. each child — named in the lease's `childShardIds` or listed with it as parent — has a
///    lease that [`has_started`]; a child without a lease only passes when the shard itself
///    and the child have both left the stream.
///
/// A finished lease whose shard has left the stream and whose children are unknown goes too
/// (reason [`CleanupReason::Trimmed`]); a finished lease whose shard is still listed but whose
/// children are unknown stays. Differences from Java: Java asks `GetRecords` for the children
/// when the lease lacks `childShardIds` (here the listing answers), and deletes a trimmed lease
/// without the parent and child checks (here they apply, so a trimmed parent never
/// leaves an unstarted child behind without its lineage).
pub fn leases_to_delete(leases: &[Lease], shards: &[ShardInfo]) -> Vec<LeaseDeletion> {
    let listing = Listing {
        known: !shards.is_empty(),
        shards: shards.iter().map(|s| (s.shard_id.as_str(), s)).collect(),
    };
    let by_key: BTreeMap<&str, &Lease> = leases.iter().map(|l| (l.lease_key.as_str(), l)).collect();
    let mut deleted: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    loop {
        let mut progress = false;
        for (&key, &lease) in &by_key {
            if deleted.contains(key) || !lease.is_shard_end() {
                continue;
            }
            let remaining = |k: &str| by_key.get(k).copied().filter(|_| !deleted.contains(k));
            if let Some(reason) = listing.deletable(lease, remaining) {
                deleted.insert(key);
                out.push(LeaseDeletion {
                    lease_key: key.to_owned(),
                    reason,
                });
                progress = true;
            }
        }
        if !progress {
            return out;
        }
    }
}

/// A `ListShards` listing as [`leases_to_delete`] consults it.
struct Listing<'a> {
    /// Whether there is a listing at all (an empty one is taken as unknown).
    known: bool,
    shards: HashMap<&'a str, &'a ShardInfo>,
}

impl Listing<'_> {
    /// Whether the shard is known to have left the stream.
    fn is_gone(&self, shard_id: &str) -> bool {
        self.known && !self.shards.contains_key(shard_id)
    }

    /// Why the finished `lease` may be deleted, if it may; `remaining` looks up the leases
    /// still in the table (not deleted so far).
    fn deletable<'l>(
        &self,
        lease: &Lease,
        remaining: impl Fn(&str) -> Option<&'l Lease>,
    ) -> Option<CleanupReason> {
        if lease
            .parent_shard_ids
            .iter()
            .any(|p| remaining(&sibling_lease_key(lease, p)).is_some())
        {
            return None;
        }
        let shard_id = lease.shard_id();
        let gone = self.is_gone(shard_id);
        let mut children: BTreeSet<&str> =
            lease.child_shard_ids.iter().map(String::as_str).collect();
        children.extend(
            self.shards
                .values()
                .filter(|s| s.parent_shard_ids().any(|p| p == shard_id))
                .map(|s| s.shard_id.as_str()),
        );
        if children.is_empty() {
            return gone.then_some(CleanupReason::Trimmed);
        }
        let children_ready =
            children
                .into_iter()
                .all(|child| match remaining(&sibling_lease_key(lease, child)) {
                    Some(child_lease) => has_started(child_lease),
                    None => gone && self.is_gone(child),
                });
        children_ready.then_some(if gone {
            CleanupReason::Trimmed
        } else {
            CleanupReason::Completed
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    const HALF: u128 = u128::MAX / 2;

    fn seq(n: u64) -> SequenceNumber {
        SequenceNumber::new(n.to_string()).unwrap()
    }

    fn range(start: u128, end: u128) -> HashKeyRange {
        HashKeyRange::new(start, end).unwrap()
    }

    fn id(n: u32) -> String {
        format!("shardId-{n:012}")
    }

    /// A shard `n` over `r`, starting at sequence `start`, optionally closed at `end`.
    fn shard(n: u32, r: HashKeyRange, start: u64, end: Option<u64>, parents: &[u32]) -> ShardInfo {
        let mut s = ShardInfo::new(id(n), r, seq(start));
        if let Some(&p) = parents.first() {
            s = s.with_parent(id(p));
        }
        if let Some(&p) = parents.get(1) {
            s = s.with_adjacent_parent(id(p));
        }
        if let Some(end) = end {
            s = s.closed_at(seq(end));
        }
        s
    }

    fn lease(n: u32, checkpoint: ExtendedSequenceNumber, parents: &[u32]) -> Lease {
        let mut l = Lease::new(id(n), checkpoint);
        l.parent_shard_ids = parents.iter().map(|&p| id(p)).collect();
        l
    }

    fn numbered(n: &str) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::parse(n, 0).unwrap()
    }

    fn ids(leases: &[NewLease]) -> Vec<String> {
        let mut v: Vec<String> = leases.iter().map(|l| l.shard_id.clone()).collect();
        v.sort();
        v
    }

    fn names(ns: &[u32]) -> Vec<String> {
        let mut v: Vec<String> = ns.iter().map(|&n| id(n)).collect();
        v.sort();
        v
    }

    fn at(n: u32, planned: &[NewLease]) -> &NewLease {
        planned.iter().find(|l| l.shard_id == id(n)).unwrap()
    }

    fn timestamp() -> InitialPosition {
        InitialPosition::AtTimestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    /// The example of the Java `NonEmptyLeaseTableSynchronizer` documentation:
    ///
    /// ```text
    /// 0 1 2 3 4   5   - shards till epoch 102
    /// \ / \ / |   |
    ///  6   7  4   5   - shards from epoch 103 - 205
    ///  \  /   |  / \
    ///   8     4 9  10 - shards from epoch 206 (open)
    /// ```
    fn java_example() -> Vec<ShardInfo> {
        let q = u128::MAX / 8;
        vec![
            shard(0, range(0, q - 1), 0, Some(102), &[]),
            shard(1, range(q, 2 * q - 1), 1, Some(102), &[]),
            shard(2, range(2 * q, 3 * q - 1), 2, Some(102), &[]),
            shard(3, range(3 * q, 4 * q - 1), 3, Some(102), &[]),
            shard(4, range(4 * q, 6 * q - 1), 4, None, &[]),
            shard(5, range(6 * q, u128::MAX), 5, Some(205), &[]),
            shard(6, range(0, 2 * q - 1), 103, Some(205), &[0, 1]),
            shard(7, range(2 * q, 4 * q - 1), 104, Some(205), &[2, 3]),
            shard(8, range(0, 4 * q - 1), 206, None, &[6, 7]),
            shard(9, range(6 * q, 7 * q - 1), 207, None, &[5]),
            shard(10, range(7 * q, u128::MAX), 208, None, &[5]),
        ]
    }

    fn th() -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::TRIM_HORIZON
    }

    #[test]
    fn java_example_with_leases_4_5_7() {
        let shards = java_example();
        let leases = [
            lease(4, th(), &[]),
            lease(5, th(), &[]),
            lease(7, th(), &[2, 3]),
        ];

        let latest = plan_new_leases(&shards, &leases, InitialPosition::Latest);
        assert_eq!(ids(&latest), names(&[6]));
        assert_eq!(at(6, &latest).checkpoint, ExtendedSequenceNumber::LATEST);
        assert_eq!(
            at(6, &latest).parent_shard_ids,
            names(&[0, 1]).into_iter().collect()
        );

        let trim = plan_new_leases(&shards, &leases, InitialPosition::TrimHorizon);
        assert_eq!(ids(&trim), names(&[0, 1]));
        assert!(trim.iter().all(|l| l.checkpoint == th()));

        let ts = plan_new_leases(&shards, &leases, timestamp());
        assert_eq!(ids(&ts), names(&[0, 1]));
        assert!(
            ts.iter()
                .all(|l| l.checkpoint == ExtendedSequenceNumber::AT_TIMESTAMP)
        );
    }

    #[test]
    fn java_example_without_leases_of_this_stream() {
        let shards = java_example();
        let trim = plan_new_leases(&shards, &[], InitialPosition::TrimHorizon);
        assert_eq!(ids(&trim), names(&[0, 1, 2, 3, 4, 5]));
        assert!(trim.iter().all(|l| l.checkpoint == th()));
        // Creation order: starting sequence number.
        assert_eq!(
            trim.iter().map(|l| l.shard_id.clone()).collect::<Vec<_>>(),
            (0..=5).map(id).collect::<Vec<_>>()
        );

        let latest = plan_new_leases(&shards, &[], InitialPosition::Latest);
        assert_eq!(ids(&latest), names(&[4, 8, 9, 10]));
        assert!(
            latest
                .iter()
                .all(|l| l.checkpoint == ExtendedSequenceNumber::LATEST)
        );
        assert_eq!(
            at(8, &latest).parent_shard_ids,
            names(&[6, 7]).into_iter().collect()
        );

        let ts = plan_new_leases(&shards, &[], timestamp());
        assert_eq!(ids(&ts), names(&[0, 1, 2, 3, 4, 5]));
        assert!(
            ts.iter()
                .all(|l| l.checkpoint == ExtendedSequenceNumber::AT_TIMESTAMP)
        );
    }

    #[test]
    fn every_open_shard_leased_means_nothing_to_do() {
        let shards = java_example();
        let leases: Vec<Lease> = [4, 8, 9, 10].iter().map(|&n| lease(n, th(), &[])).collect();
        for position in [
            InitialPosition::Latest,
            InitialPosition::TrimHorizon,
            timestamp(),
        ] {
            assert!(plan_new_leases(&shards, &leases, position).is_empty());
        }
    }

    fn split() -> Vec<ShardInfo> {
        vec![
            shard(0, range(0, u128::MAX), 1, Some(50), &[]),
            shard(1, range(0, HALF), 51, None, &[0]),
            shard(2, range(HALF + 1, u128::MAX), 52, None, &[0]),
        ]
    }

    #[test]
    fn children_of_an_unfinished_leased_parent_wait_for_its_end() {
        let leases = [lease(0, numbered("20"), &[])];
        for position in [
            InitialPosition::Latest,
            InitialPosition::TrimHorizon,
            timestamp(),
        ] {
            assert!(plan_new_leases(&split(), &leases, position).is_empty());
        }
    }

    #[test]
    fn children_of_a_finished_parent_start_at_trim_horizon() {
        let leases = [lease(0, ExtendedSequenceNumber::SHARD_END, &[])];
        for position in [
            InitialPosition::Latest,
            InitialPosition::TrimHorizon,
            timestamp(),
        ] {
            let planned = plan_new_leases(&split(), &leases, position);
            assert_eq!(ids(&planned), names(&[1, 2]));
            for l in &planned {
                assert_eq!(l.checkpoint, th());
                assert_eq!(l.parent_shard_ids, names(&[0]).into_iter().collect());
            }
            assert_eq!(at(1, &planned).hash_key_range, Some(range(0, HALF)));
            assert_eq!(
                at(2, &planned).hash_key_range,
                Some(range(HALF + 1, u128::MAX))
            );
        }
    }

    fn merge() -> Vec<ShardInfo> {
        vec![
            shard(0, range(0, HALF), 1, Some(50), &[]),
            shard(1, range(HALF + 1, u128::MAX), 2, Some(51), &[]),
            shard(2, range(0, u128::MAX), 52, None, &[0, 1]),
        ]
    }

    #[test]
    fn merge_child_waits_for_both_parents() {
        let both = [lease(0, numbered("10"), &[]), lease(1, numbered("11"), &[])];
        assert!(plan_new_leases(&merge(), &both, InitialPosition::TrimHorizon).is_empty());

        // One parent finished, the other leased: the child's lease may exist (it stays
        // blocked by the other parent until that one ends).
        let one_done = [
            lease(0, ExtendedSequenceNumber::SHARD_END, &[]),
            lease(1, numbered("11"), &[]),
        ];
        let planned = plan_new_leases(&merge(), &one_done, InitialPosition::Latest);
        assert_eq!(ids(&planned), names(&[2]));
        assert_eq!(planned[0].checkpoint, th());
        assert_eq!(
            planned[0].parent_shard_ids,
            names(&[0, 1]).into_iter().collect()
        );
    }

    #[test]
    fn merge_with_one_leased_parent_leases_the_other_parent() {
        let leases = [lease(0, numbered("10"), &[])];
        let latest = plan_new_leases(&merge(), &leases, InitialPosition::Latest);
        assert_eq!(ids(&latest), names(&[1]));
        assert_eq!(latest[0].checkpoint, ExtendedSequenceNumber::LATEST);

        let trim = plan_new_leases(&merge(), &leases, InitialPosition::TrimHorizon);
        assert_eq!(ids(&trim), names(&[1]));
        assert_eq!(trim[0].checkpoint, th());

        let ts = plan_new_leases(&merge(), &leases, timestamp());
        assert_eq!(ids(&ts), names(&[1]));
        assert_eq!(ts[0].checkpoint, ExtendedSequenceNumber::AT_TIMESTAMP);

        // Once that parent is finished, the merged child gets its lease too, created after
        // the other parent's (creation order), so it never exists without both parents'.
        let finished = [lease(0, ExtendedSequenceNumber::SHARD_END, &[])];
        let latest = plan_new_leases(&merge(), &finished, InitialPosition::Latest);
        assert_eq!(
            latest
                .iter()
                .map(|l| (l.shard_id.clone(), l.checkpoint.clone()))
                .collect::<Vec<_>>(),
            [(id(1), ExtendedSequenceNumber::LATEST), (id(2), th())]
        );
    }

    /// R(0) → A(1) → B(2) → C(3, open), each a one-child reshard of the whole range.
    fn chain() -> Vec<ShardInfo> {
        vec![
            shard(0, range(0, u128::MAX), 1, Some(9), &[]),
            shard(1, range(0, u128::MAX), 10, Some(19), &[0]),
            shard(2, range(0, u128::MAX), 20, Some(29), &[1]),
            shard(3, range(0, u128::MAX), 30, None, &[2]),
        ]
    }

    #[test]
    fn chains() {
        let trim = plan_new_leases(&chain(), &[], InitialPosition::TrimHorizon);
        assert_eq!(ids(&trim), names(&[0]));
        let latest = plan_new_leases(&chain(), &[], InitialPosition::Latest);
        assert_eq!(ids(&latest), names(&[3]));

        // A lease in the middle: nothing below it until it ends, one level at a time.
        let middle = [lease(1, numbered("15"), &[0])];
        for position in [InitialPosition::Latest, InitialPosition::TrimHorizon] {
            assert!(plan_new_leases(&chain(), &middle, position).is_empty());
        }
        let ended = [lease(1, ExtendedSequenceNumber::SHARD_END, &[0])];
        let planned = plan_new_leases(&chain(), &ended, InitialPosition::Latest);
        assert_eq!(ids(&planned), names(&[2]));
        assert_eq!(planned[0].checkpoint, th());
    }

    #[test]
    fn expired_parents_are_ignored() {
        // Shard 0 expired from the stream; its children 1 and 2 are the oldest listed.
        let shards = &split()[1..];
        let trim = plan_new_leases(shards, &[], InitialPosition::TrimHorizon);
        assert_eq!(ids(&trim), names(&[1, 2]));
        assert_eq!(
            at(1, &trim).parent_shard_ids,
            names(&[0]).into_iter().collect()
        );
        assert_eq!(
            bootstrap_leases(shards, InitialPosition::TrimHorizon).len(),
            2
        );
    }

    #[test]
    fn inconsistent_listing_is_skipped() {
        // Shard 0 still open while its children are listed (mid-reshard).
        let mut shards = split();
        shards[0].ending_sequence_number = None;
        assert_eq!(
            inconsistent_shards(&shards),
            names(&[1, 2]).into_iter().collect()
        );
        let planned = plan_new_leases(&shards, &[lease(7, th(), &[])], InitialPosition::Latest);
        assert_eq!(ids(&planned), names(&[0]));
        assert!(inconsistent_shards(&split()).is_empty());
    }

    #[test]
    fn bootstrap_follows_the_initial_position() {
        let shards = java_example();
        let trim = bootstrap_leases(&shards, InitialPosition::TrimHorizon);
        assert_eq!(ids(&trim), names(&[0, 1, 2, 3, 4, 5]));
        assert!(trim.iter().all(|l| l.checkpoint == th()));
        let latest = bootstrap_leases(&shards, InitialPosition::Latest);
        assert_eq!(
            latest
                .iter()
                .map(|l| l.shard_id.clone())
                .collect::<Vec<_>>(),
            [4, 8, 9, 10].map(id)
        );
        assert!(
            latest
                .iter()
                .all(|l| l.checkpoint == ExtendedSequenceNumber::LATEST)
        );
        let ts = bootstrap_leases(&shards, timestamp());
        assert_eq!(ids(&ts), names(&[0, 1, 2, 3, 4, 5]));
        assert!(
            ts.iter()
                .all(|l| l.checkpoint == ExtendedSequenceNumber::AT_TIMESTAMP)
        );
        // The filters are idempotent: applied to their own output, nothing changes.
        for position in [InitialPosition::Latest, InitialPosition::TrimHorizon] {
            let once: Vec<ShardInfo> = shards_at_initial_position(&shards, position)
                .into_iter()
                .cloned()
                .collect();
            assert_eq!(
                shards_at_initial_position(&once, position).len(),
                once.len()
            );
            assert!(is_hash_range_complete(&once));
        }
    }

    #[test]
    fn hash_range_completeness() {
        let whole = shard(0, range(0, u128::MAX), 1, None, &[]);
        assert!(is_hash_range_complete([&whole]));
        assert!(is_hash_range_complete(&split()[1..]));
        assert!(!is_hash_range_complete(&split())); // overlap
        assert!(!is_hash_range_complete(&split()[1..2])); // no top
        assert!(!is_hash_range_complete(&split()[2..])); // no bottom
        let gap = [
            shard(1, range(0, 10), 1, None, &[]),
            shard(2, range(12, u128::MAX), 1, None, &[]),
        ];
        assert!(!is_hash_range_complete(&gap));
        assert!(!is_hash_range_complete(&[]));
    }

    #[test]
    fn child_leases_and_keys() {
        let child = ChildShard {
            shard_id: id(2),
            parent_shard_ids: vec![id(0), id(1)],
            hash_key_range: Some(range(0, u128::MAX)),
        };
        let new = NewLease::for_child(&child).unwrap();
        assert_eq!(new.checkpoint, th());
        let stream = StreamIdentifier::new("123456789012", "orders", 1_700_000_000).unwrap();
        let lease = new.clone().into_lease(Some(&stream));
        assert_eq!(
            lease.lease_key,
            format!("123456789012:orders:1700000000:{}", id(2))
        );
        assert_eq!(lease.shard_id(), id(2));
        assert_eq!(lease.parent_shard_ids, names(&[0, 1]).into_iter().collect());
        assert_eq!(lease.hash_key_range, Some(range(0, u128::MAX)));
        assert_eq!(sibling_lease_key(&lease, &id(0)), stream.lease_key(&id(0)));
        let single = new.into_lease(None);
        assert_eq!(single.lease_key, id(2));
        assert_eq!(sibling_lease_key(&single, &id(0)), id(0));

        let orphan = ChildShard {
            shard_id: id(3),
            parent_shard_ids: vec![],
            hash_key_range: None,
        };
        assert!(matches!(
            NewLease::for_child(&orphan),
            Err(Error::InvalidValue { .. })
        ));
    }

    #[test]
    fn multi_stream_planning_uses_shard_ids() {
        let stream = StreamIdentifier::new("123456789012", "orders", 1_700_000_000).unwrap();
        let parent =
            Lease::new_multi_stream(stream.clone(), id(0), ExtendedSequenceNumber::SHARD_END);
        let planned = plan_new_leases(&split(), &[parent], InitialPosition::Latest);
        assert_eq!(ids(&planned), names(&[1, 2]));
        let keys: Vec<String> = planned
            .into_iter()
            .map(|l| l.into_lease(Some(&stream)).lease_key)
            .collect();
        assert_eq!(keys, [stream.lease_key(&id(1)), stream.lease_key(&id(2))]);
    }

    #[test]
    fn processing_waits_for_every_parent() {
        let parent_a = lease(0, numbered("10"), &[]);
        let parent_b = lease(1, ExtendedSequenceNumber::SHARD_END, &[]);
        let child = lease(2, th(), &[0, 1]);
        let leases = [parent_a.clone(), parent_b.clone(), child.clone()];
        let lineage = LeaseLineage::new(&leases);
        assert!(lineage.may_process(&parent_a));
        assert!(lineage.may_process(&parent_b));
        assert!(!lineage.may_process(&child));
        assert_eq!(
            lineage
                .blocking_parents(&child)
                .iter()
                .map(|l| l.lease_key.clone())
                .collect::<Vec<_>>(),
            [id(0)]
        );
        let id2 = id(2);
        let id0 = id(0);
        assert_eq!(
            lineage.waiting(),
            BTreeMap::from([(id2.as_str(), vec![id0.as_str()])])
        );

        // Parent 0 finishes: the merge child may go.
        let mut done = parent_a;
        done.checkpoint = ExtendedSequenceNumber::SHARD_END;
        let leases = [done, parent_b, child.clone()];
        assert!(LeaseLineage::new(&leases).may_process(&child));
        assert!(LeaseLineage::new(&leases).waiting().is_empty());

        // Parents deleted (cleaned up) or never leased: not blocking.
        let alone = [child.clone()];
        assert!(LeaseLineage::new(&alone).may_process(&child));
    }

    #[test]
    fn chains_block_one_level_at_a_time() {
        let leases = [
            lease(0, numbered("5"), &[]),
            lease(1, th(), &[0]),
            lease(2, th(), &[1]),
        ];
        let lineage = LeaseLineage::new(&leases);
        let waiting = lineage.waiting();
        assert_eq!(waiting.len(), 2);
        let (k1, k0) = (id(1), id(0));
        assert_eq!(waiting[k1.as_str()], [k0.as_str()]);
        assert_eq!(
            lineage.get(&id(2)).map(|l| lineage.may_process(l)),
            Some(false)
        );
    }

    #[test]
    fn multi_stream_lineage_uses_the_streams_keys() {
        let orders = StreamIdentifier::new("123456789012", "orders", 1).unwrap();
        let parent = Lease::new_multi_stream(orders.clone(), id(0), numbered("3"));
        let mut child = Lease::new_multi_stream(orders.clone(), id(1), th());
        child.parent_shard_ids = names(&[0]).into_iter().collect();
        // A single-stream lease with the parent's shard id must not count as the parent.
        let unrelated = Lease::new(id(0), ExtendedSequenceNumber::SHARD_END);
        let leases = [parent.clone(), child.clone(), unrelated];
        let lineage = LeaseLineage::new(&leases);
        assert_eq!(lineage.blocking_parents(&child), vec![&leases[0]]);
        let leases = [Lease::new(id(0), numbered("3")), child.clone()];
        assert!(LeaseLineage::new(&leases).may_process(&child));
    }

    fn deleted(plan: &[LeaseDeletion]) -> Vec<(String, CleanupReason)> {
        plan.iter()
            .map(|d| (d.lease_key.clone(), d.reason))
            .collect()
    }

    #[test]
    fn finished_parent_goes_once_all_children_started() {
        let shards = split();
        let parent = lease(0, ExtendedSequenceNumber::SHARD_END, &[]);
        let started = lease(1, numbered("60"), &[0]);
        let done = lease(2, ExtendedSequenceNumber::SHARD_END, &[0]);
        let waiting = lease(2, th(), &[0]);

        let plan = leases_to_delete(&[parent.clone(), started.clone(), done.clone()], &shards);
        assert_eq!(deleted(&plan), [(id(0), CleanupReason::Completed)]);

        assert!(leases_to_delete(&[parent.clone(), started.clone(), waiting], &shards).is_empty());
        // A child without a lease yet keeps the parent.
        assert!(leases_to_delete(&[parent.clone(), started.clone()], &shards).is_empty());
        // AT_TIMESTAMP has not started either; LATEST has (as Java).
        let at_ts = lease(2, ExtendedSequenceNumber::AT_TIMESTAMP, &[0]);
        assert!(leases_to_delete(&[parent.clone(), started.clone(), at_ts], &shards).is_empty());
        let latest = lease(2, ExtendedSequenceNumber::LATEST, &[0]);
        assert_eq!(
            leases_to_delete(&[parent.clone(), started.clone(), latest], &shards).len(),
            1
        );
        // An unfinished parent never goes.
        let unfinished = lease(0, numbered("40"), &[]);
        assert!(leases_to_delete(&[unfinished, started, done], &shards).is_empty());
    }

    #[test]
    fn recorded_children_count_even_when_unlisted() {
        let mut parent = lease(0, ExtendedSequenceNumber::SHARD_END, &[]);
        parent.child_shard_ids = names(&[1, 2]).into_iter().collect();
        let one = lease(1, numbered("60"), &[0]);
        // No listing at all (unknown): children come from childShardIds only.
        assert!(leases_to_delete(&[parent.clone(), one.clone()], &[]).is_empty());
        let two = lease(2, numbered("61"), &[0]);
        assert_eq!(
            deleted(&leases_to_delete(&[parent, one, two], &[])),
            [(id(0), CleanupReason::Completed)]
        );
    }

    #[test]
    fn lineage_is_cut_from_the_oldest_end_within_one_pass() {
        let shards = chain();
        let leases = [
            lease(0, ExtendedSequenceNumber::SHARD_END, &[]),
            lease(1, ExtendedSequenceNumber::SHARD_END, &[0]),
            lease(2, numbered("25"), &[1]),
        ];
        assert_eq!(
            deleted(&leases_to_delete(&leases, &shards)),
            [
                (id(0), CleanupReason::Completed),
                (id(1), CleanupReason::Completed)
            ]
        );
        // A finished lease whose parent lease is still unfinished stays.
        let leases = [
            lease(0, numbered("5"), &[]),
            lease(1, ExtendedSequenceNumber::SHARD_END, &[0]),
            lease(2, numbered("25"), &[1]),
        ];
        assert!(leases_to_delete(&leases, &shards).is_empty());
    }

    #[test]
    fn merge_parents_both_go_when_the_child_started() {
        let leases = [
            lease(0, ExtendedSequenceNumber::SHARD_END, &[]),
            lease(1, ExtendedSequenceNumber::SHARD_END, &[]),
            lease(2, numbered("70"), &[0, 1]),
        ];
        assert_eq!(
            deleted(&leases_to_delete(&leases, &merge())),
            [
                (id(0), CleanupReason::Completed),
                (id(1), CleanupReason::Completed)
            ]
        );
        let leases = [
            lease(0, ExtendedSequenceNumber::SHARD_END, &[]),
            lease(1, numbered("40"), &[]),
            lease(2, th(), &[0, 1]),
        ];
        assert!(leases_to_delete(&leases, &merge()).is_empty());
    }

    #[test]
    fn trimmed_leases_go_when_finished() {
        // Shard 0 has left the stream; only its children are listed.
        let shards = &split()[1..];
        let gone = lease(0, ExtendedSequenceNumber::SHARD_END, &[]);
        let c1 = lease(1, numbered("60"), &[0]);
        let c2 = lease(2, numbered("61"), &[0]);
        assert_eq!(
            deleted(&leases_to_delete(&[gone.clone(), c1.clone(), c2], shards)),
            [(id(0), CleanupReason::Trimmed)]
        );
        // A listed child without a lease keeps it.
        assert!(leases_to_delete(&[gone.clone(), c1], shards).is_empty());
        // Unknown children and gone: deleted; unfinished and gone: kept.
        let stray = lease(9, ExtendedSequenceNumber::SHARD_END, &[]);
        assert_eq!(
            deleted(&leases_to_delete(&[stray], shards)),
            [(id(9), CleanupReason::Trimmed)]
        );
        let unfinished = lease(9, numbered("5"), &[]);
        assert!(leases_to_delete(&[unfinished], shards).is_empty());
        // Without a listing nothing counts as gone.
        let stray = lease(9, ExtendedSequenceNumber::SHARD_END, &[]);
        assert!(leases_to_delete(&[stray], &[]).is_empty());
        // Listed, finished, children unknown: kept (the listing is inconsistent).
        let lonely = [shard(5, range(0, u128::MAX), 1, Some(2), &[])];
        let finished = lease(5, ExtendedSequenceNumber::SHARD_END, &[]);
        assert!(leases_to_delete(&[finished], &lonely).is_empty());
        // Gone with its child gone too: nothing left to wait for.
        let mut old = lease(7, ExtendedSequenceNumber::SHARD_END, &[]);
        old.child_shard_ids = names(&[8]).into_iter().collect();
        assert_eq!(
            deleted(&leases_to_delete(&[old], shards)),
            [(id(7), CleanupReason::Trimmed)]
        );
    }

    #[test]
    fn multi_stream_clean_up_uses_the_streams_keys() {
        let s = StreamIdentifier::new("123456789012", "orders", 1).unwrap();
        let parent = Lease::new_multi_stream(s.clone(), id(0), ExtendedSequenceNumber::SHARD_END);
        let mut c1 = Lease::new_multi_stream(s.clone(), id(1), numbered("60"));
        c1.parent_shard_ids = names(&[0]).into_iter().collect();
        let mut c2 = Lease::new_multi_stream(s.clone(), id(2), th());
        c2.parent_shard_ids = names(&[0]).into_iter().collect();
        // A single-stream lease named like the child does not count as the child.
        let decoy = lease(2, numbered("99"), &[0]);
        assert!(
            leases_to_delete(&[parent.clone(), c1.clone(), c2.clone(), decoy], &split()).is_empty()
        );
        c2.checkpoint = numbered("61");
        assert_eq!(
            deleted(&leases_to_delete(&[parent, c1, c2], &split())),
            [(s.lease_key(&id(0)), CleanupReason::Completed)]
        );
    }

    #[test]
    fn shard_info_parents() {
        let s = shard(3, range(0, 1), 1, None, &[1, 1]);
        assert_eq!(s.parent_shard_ids().collect::<Vec<_>>(), [id(1)]);
        let s = shard(3, range(0, 1), 1, None, &[1, 2]);
        assert_eq!(s.parent_shard_ids().collect::<Vec<_>>(), [id(1), id(2)]);
        assert!(
            shard(3, range(0, 1), 1, None, &[])
                .parent_shard_ids()
                .next()
                .is_none()
        );
    }
}
