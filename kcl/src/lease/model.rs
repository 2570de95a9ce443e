//! The lease record and the value types inside it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::error::{Error, Result};
use crate::sequence::ExtendedSequenceNumber;

pub use kinesis_aggregation::HashKeyRange;

/// A stream identity in multi-stream mode: `<accountId>:<streamName>:<creationEpoch>`.
///
/// The Java KCL (2.3+) stores this serialized form in a lease's `streamName` attribute (the
/// name is historical: it holds the whole identifier, not just the name) and prefixes it to
/// the shard id to form the lease key. The format follows the Java
/// `StreamIdentifier.multiStreamInstance(String)` pattern: digits, a name without `:`, and a
/// positive decimal epoch (seconds).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamIdentifier {
    account_id: String,
    stream_name: String,
    creation_epoch: u64,
}

impl StreamIdentifier {
    /// A multi-stream identifier.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] if the account id is not all digits, the stream name is empty
    /// or contains `:`, or the epoch is 0.
    pub fn new(
        account_id: impl Into<String>,
        stream_name: impl Into<String>,
        creation_epoch: u64,
    ) -> Result<Self> {
        let account_id = account_id.into();
        let stream_name = stream_name.into();
        if account_id.is_empty() || !account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid_value(
                "account id",
                &account_id,
                "expected decimal digits",
            ));
        }
        if stream_name.is_empty() || stream_name.contains(':') {
            return Err(Error::invalid_value(
                "stream name",
                &stream_name,
                "expected a non-empty name without ':'",
            ));
        }
        if creation_epoch == 0 {
            return Err(Error::invalid_value(
                "stream creation epoch",
                "0",
                "the creation epoch must be positive",
            ));
        }
        Ok(StreamIdentifier {
            account_id,
            stream_name,
            creation_epoch,
        })
    }

    /// Parses `<accountId>:<streamName>:<creationEpoch>`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] if the string does not have that shape.
    pub fn parse(serialized: &str) -> Result<Self> {
        let bad = || {
            Error::invalid_value(
                "stream identifier",
                serialized,
                "expected <accountId>:<streamName>:<creationEpoch>",
            )
        };
        let mut parts = serialized.split(':');
        let (Some(account), Some(name), Some(epoch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let epoch: u64 = epoch.parse().map_err(|_| bad())?;
        StreamIdentifier::new(account, name, epoch).map_err(|_| bad())
    }

    /// The AWS account id.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The stream name.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
    }

    /// The stream's creation time, in seconds since the Unix epoch.
    pub fn creation_epoch(&self) -> u64 {
        self.creation_epoch
    }

    /// The lease key of `shard_id` of this stream:
    /// `<accountId>:<streamName>:<creationEpoch>:<shardId>`.
    pub fn lease_key(&self, shard_id: &str) -> String {
        format!("{self}:{shard_id}")
    }
}

impl fmt::Display for StreamIdentifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.account_id, self.stream_name, self.creation_epoch
        )
    }
}

impl FromStr for StreamIdentifier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        StreamIdentifier::parse(s)
    }
}

/// The multi-stream identity of a lease: which stream and which shard.
///
/// Stored in the `streamName` and `shardId` attributes by the Java
/// `DynamoDBMultiStreamLeaseSerializer`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MultiStreamShard {
    /// The stream (`streamName` attribute).
    pub stream: StreamIdentifier,
    /// The shard id (`shardId` attribute), e.g. `shardId-000000000000`.
    pub shard_id: String,
}

impl MultiStreamShard {
    /// The lease key the Java KCL uses for this shard.
    pub fn lease_key(&self) -> String {
        self.stream.lease_key(&self.shard_id)
    }
}

/// One row of the lease table, in the layout the Java KCL reads and writes.
///
/// Single-stream leases are keyed by the shard id (`shardId-000000000000`); multi-stream
/// leases by `<accountId>:<streamName>:<creationEpoch>:<shardId>` and also carry
/// [`multi_stream`](Self::multi_stream). Attributes this crate does not know are kept in
/// [`extra_attributes`](Self::extra_attributes) and written back unchanged by
/// [`to_item`](Self::to_item), so a lease written by a newer KCL survives our writes.
///
/// ```
/// use kinesis_kcl::lease::{ExtendedSequenceNumber, Lease};
///
/// let lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
/// let item = lease.to_item()?;
/// assert_eq!(Lease::from_item(&item)?, lease);
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Lease {
    /// `leaseKey` (S, the table's hash key).
    pub lease_key: String,
    /// `leaseOwner` (S): the worker id holding the lease; absent (not empty) when unowned.
    pub lease_owner: Option<String>,
    /// `leaseCounter` (N): bumped by every renew, take, evict and update; the optimistic
    /// lock all conditional writes check.
    pub lease_counter: u64,
    /// `checkpoint` (S) + `checkpointSubSequenceNumber` (N).
    pub checkpoint: ExtendedSequenceNumber,
    /// `pendingCheckpoint` (S) + `pendingCheckpointSubSequenceNumber` (N), written by a
    /// prepared (two-phase) checkpoint.
    pub pending_checkpoint: Option<ExtendedSequenceNumber>,
    /// `pendingCheckpointState` (B): application bytes stored with a prepared checkpoint.
    pub pending_checkpoint_state: Option<Vec<u8>>,
    /// `ownerSwitchesSinceCheckpoint` (N).
    pub owner_switches_since_checkpoint: u64,
    /// `parentShardId` (SS, omitted when empty). Despite the singular name it holds one
    /// parent (split) or two (merge).
    pub parent_shard_ids: BTreeSet<String>,
    /// `childShardIds` (SS, omitted when empty): set when the shard reaches its end.
    pub child_shard_ids: BTreeSet<String>,
    /// `startingHashKey` + `endingHashKey` (both S).
    pub hash_key_range: Option<HashKeyRange>,
    /// `throughputKBps` (N, KCL 3.x): the shard's recent throughput, reported by its owner.
    pub throughput_kbps: Option<f64>,
    /// `checkpointOwner` (S, KCL 3.x): during a graceful hand-off, the worker still allowed
    /// to checkpoint (the previous owner); `leaseOwner` then already names the next owner.
    pub checkpoint_owner: Option<String>,
    /// `streamName` (S) + `shardId` (S): present on multi-stream leases.
    pub multi_stream: Option<MultiStreamShard>,
    /// Every attribute not listed above, preserved verbatim.
    pub extra_attributes: BTreeMap<String, AttributeValue>,
}

impl Lease {
    /// A fresh, unowned single-stream lease for `shard_id` starting at `checkpoint` (usually
    /// a sentinel such as [`ExtendedSequenceNumber::TRIM_HORIZON`]).
    pub fn new(shard_id: impl Into<String>, checkpoint: ExtendedSequenceNumber) -> Self {
        Lease {
            lease_key: shard_id.into(),
            lease_owner: None,
            lease_counter: 0,
            checkpoint,
            pending_checkpoint: None,
            pending_checkpoint_state: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: BTreeSet::new(),
            child_shard_ids: BTreeSet::new(),
            hash_key_range: None,
            throughput_kbps: None,
            checkpoint_owner: None,
            multi_stream: None,
            extra_attributes: BTreeMap::new(),
        }
    }

    /// A fresh, unowned multi-stream lease for `shard_id` of `stream`, keyed
    /// `<accountId>:<streamName>:<creationEpoch>:<shardId>`.
    pub fn new_multi_stream(
        stream: StreamIdentifier,
        shard_id: impl Into<String>,
        checkpoint: ExtendedSequenceNumber,
    ) -> Self {
        let shard = MultiStreamShard {
            stream,
            shard_id: shard_id.into(),
        };
        let mut lease = Lease::new(shard.lease_key(), checkpoint);
        lease.multi_stream = Some(shard);
        lease
    }

    /// The shard this lease covers: the `shardId` attribute for multi-stream leases, the
    /// lease key otherwise.
    pub fn shard_id(&self) -> &str {
        match &self.multi_stream {
            Some(ms) => &ms.shard_id,
            None => &self.lease_key,
        }
    }

    /// The worker actually processing the lease: `checkpointOwner` while a KCL 3.x graceful
    /// hand-off is in progress, `leaseOwner` otherwise (the Java `Lease.actualOwner()`).
    pub fn actual_owner(&self) -> Option<&str> {
        self.checkpoint_owner
            .as_deref()
            .or(self.lease_owner.as_deref())
    }

    /// Whether the checkpoint is `SHARD_END`.
    pub fn is_shard_end(&self) -> bool {
        self.checkpoint.is_shard_end()
    }

    /// Records a final checkpoint the way the Java `DynamoDBCheckpointer.setCheckpoint`
    /// does before writing: sets the checkpoint, clears the pending checkpoint and its state,
    /// and resets the owner-switch count. Write it with [`update_write`](Self::update_write).
    pub fn set_checkpoint(&mut self, checkpoint: ExtendedSequenceNumber) {
        self.checkpoint = checkpoint;
        self.pending_checkpoint = None;
        self.pending_checkpoint_state = None;
        self.owner_switches_since_checkpoint = 0;
    }

    /// Records a prepared checkpoint the way the Java `DynamoDBCheckpointer.prepareCheckpoint`
    /// does before writing. Write it with [`update_write`](Self::update_write).
    pub fn set_pending_checkpoint(
        &mut self,
        pending: ExtendedSequenceNumber,
        state: Option<Vec<u8>>,
    ) {
        self.pending_checkpoint = Some(pending);
        self.pending_checkpoint_state = state;
    }
}
