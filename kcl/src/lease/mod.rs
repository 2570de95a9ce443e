//! The pure core of lease coordination: the Java-compatible lease item layout, the
//! conditional writes on it, expiry tracking and the assignment decision.
//!
//! Only [`LeaseTable`] performs I/O (see its module for the DynamoDB capacity each call
//! costs); everything else is pure. The DynamoDB layer reads items with [`Lease::from_item`],
//! writes them with [`Lease::to_item`] and the [`LeaseWrite`]s built by
//! [`Lease::renew_write`], [`Lease::take_write`], [`Lease::evict_write`] and
//! [`Lease::update_write`]; the coordinator feeds scans through an [`ExpiryTracker`] into
//! [`decide`].
//!
//! # Item layout
//!
//! The layout mirrors the Java `DynamoDBLeaseSerializer` (KCL 3.x, a superset of 1.x/2.x)
//! and `DynamoDBMultiStreamLeaseSerializer`:
//!
//! | attribute | type | written |
//! |---|---|---|
//! | `leaseKey` | S | always (table hash key) |
//! | `leaseCounter` | N | always |
//! | `leaseOwner` | S | only when owned (never empty; it is the KCL 3.x GSI hash key) |
//! | `ownerSwitchesSinceCheckpoint` | N | always |
//! | `checkpoint` | S | always: digits or `TRIM_HORIZON`/`LATEST`/`AT_TIMESTAMP`/`SHARD_END` |
//! | `checkpointSubSequenceNumber` | N | always |
//! | `parentShardId` | SS | only when non-empty |
//! | `childShardIds` | SS | only when non-empty |
//! | `pendingCheckpoint` | S | only with a pending checkpoint |
//! | `pendingCheckpointSubSequenceNumber` | N | only with a pending checkpoint |
//! | `pendingCheckpointState` | B | only with pending state |
//! | `startingHashKey`, `endingHashKey` | S | only with a hash key range (decimal strings) |
//! | `throughputKBps` | N | only when known (KCL 3.x) |
//! | `checkpointOwner` | S | only during a graceful hand-off (KCL 3.x) |
//! | `streamName`, `shardId` | S | multi-stream leases only |
//! | `entityType` | S | always `LEASE` on the leases this crate creates (as Java KCL 3.5); never updated |
//!
//! Reading is lenient where that is harmless: a missing sub-sequence number reads as 0, as in
//! Java; a missing owner-switch count reads as 0 too (Java 3.5 fails to read such an item and
//! its listing skips it); a `pendingCheckpointSubSequenceNumber` without `pendingCheckpoint`,
//! or one hash key without the other, is ignored by Java — here it is kept in
//! [`Lease::extra_attributes`] so it is not lost. It is strict where Java fails or misreads: a
//! missing `leaseKey` or `leaseCounter` (Java fails too), a missing `checkpoint` (Java reads a
//! null checkpoint it cannot write back), a wrong DynamoDB type (Java reads a mistyped string
//! as null), a malformed number or checkpoint. Those return an [`Error`](crate::Error) naming
//! the attribute and value, and a table listing skips such an item.
//!
//! One deliberate difference: for `pendingCheckpointState` the Java `toDynamoRecord` (used
//! only when creating a lease) writes the checkpoint's sub-sequence number, an `N` its own
//! reader cannot read back; [`Lease::to_item`] writes the bytes as `B`, as Java's update path
//! does, and [`Lease::from_item`] rejects an `N` there.
//!
//! # Conditional writes
//!
//! Each operation mirrors what the Java `DynamoDBLeaseRefresher` sends (KCL 3.x), so a Java
//! worker and ours fence each other correctly:
//!
//! | operation | condition | update |
//! |---|---|---|
//! | create | `leaseKey` absent | full item (`PutItem`) |
//! | renew | `leaseCounter = c`, and `checkpointOwner` absent unless we know a hand-off is under way | `leaseCounter := c+1` (`throughputKBps` untouched: not measured here) |
//! | take | `leaseCounter = c` | `leaseCounter := c+1`, `leaseOwner := me`, remove `checkpointOwner`, `ownerSwitchesSinceCheckpoint += 1` when the owner changes |
//! | evict | `leaseOwner` and `checkpointOwner` as last read (absent if absent), `leaseKey` exists | remove `leaseOwner` (unless a hand-off is under way), remove `checkpointOwner`, `leaseCounter += 1` |
//! | update (checkpoint, prepare) | `leaseCounter = c` | `leaseCounter := c+1`, checkpoint, owner switches, pending checkpoint and state (removed when absent), child shards and hash range when present, multi-stream identity |
//!
//! Java uses DynamoDB's legacy `Expected` / `AttributeUpdates` parameters; [`LeaseWrite::render`]
//! produces the equivalent `ConditionExpression` / `UpdateExpression` with placeholders. For
//! tests and in-memory tables, [`LeaseWrite::conditions_hold`] and [`LeaseWrite::apply_to`]
//! evaluate the same semantics on an [`Item`].

mod assignment;
pub mod coordinator;
mod expiry;
mod item;
mod model;
mod ops;
mod table;

pub use assignment::{Assignment, AssignmentConfig, LeaseState, LeaseToTake, TakeReason, decide};
pub use coordinator::{AcquiredLeases, CoordinatorStats, HeldLease, LeaseCoordinator, LeaseStatus};
pub use expiry::ExpiryTracker;
pub use item::{Item, attr};
pub use model::{HashKeyRange, Lease, MultiStreamShard, StreamIdentifier};
pub use ops::{
    CREATE_CONDITION_EXPRESSION, Condition, LeaseWrite, RenderedWrite, UpdateAction, lease_key_item,
};
pub use table::{Billing, LeaseTable, TableOptions, WriteOutcome};

pub use crate::aws::RetryPolicy;
// Checkpoint positions live in their own top-level module; re-exported here, where they were.
pub use crate::sequence::{ExtendedSequenceNumber, SequenceNumber, SequencePosition};
