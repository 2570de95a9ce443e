//! Reading and writing lease items in the Java KCL's DynamoDB layout (see the
//! [module documentation](super) for the layout).

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::model::{HashKeyRange, Lease, MultiStreamShard, StreamIdentifier};
use crate::error::{Error, Result, truncate};
use crate::sequence::{ExtendedSequenceNumber, SequencePosition};
use kinesis_aggregation::HashKeyRangeError;

/// A DynamoDB item, as the SDK passes it.
pub type Item = HashMap<String, AttributeValue>;

/// The attribute names of the Java KCL lease table.
pub mod attr {
    /// `leaseKey` (S): the table's hash key.
    pub const LEASE_KEY: &str = "leaseKey";
    /// `leaseOwner` (S).
    pub const LEASE_OWNER: &str = "leaseOwner";
    /// `leaseCounter` (N).
    pub const LEASE_COUNTER: &str = "leaseCounter";
    /// `checkpoint` (S).
    pub const CHECKPOINT: &str = "checkpoint";
    /// `checkpointSubSequenceNumber` (N).
    pub const CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "checkpointSubSequenceNumber";
    /// `pendingCheckpoint` (S).
    pub const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
    /// `pendingCheckpointSubSequenceNumber` (N).
    pub const PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER: &str = "pendingCheckpointSubSequenceNumber";
    /// `pendingCheckpointState` (B).
    pub const PENDING_CHECKPOINT_STATE: &str = "pendingCheckpointState";
    /// `ownerSwitchesSinceCheckpoint` (N).
    pub const OWNER_SWITCHES_SINCE_CHECKPOINT: &str = "ownerSwitchesSinceCheckpoint";
    /// `parentShardId` (SS).
    pub const PARENT_SHARD_ID: &str = "parentShardId";
    /// `childShardIds` (SS).
    pub const CHILD_SHARD_IDS: &str = "childShardIds";
    /// `startingHashKey` (S).
    pub const STARTING_HASH_KEY: &str = "startingHashKey";
    /// `endingHashKey` (S).
    pub const ENDING_HASH_KEY: &str = "endingHashKey";
    /// `throughputKBps` (N).
    pub const THROUGHPUT_KBPS: &str = "throughputKBps";
    /// `checkpointOwner` (S).
    pub const CHECKPOINT_OWNER: &str = "checkpointOwner";
    /// `streamName` (S): the serialized multi-stream identifier.
    pub const STREAM_NAME: &str = "streamName";
    /// `shardId` (S): the shard id of a multi-stream lease.
    pub const SHARD_ID: &str = "shardId";

    /// `entityType` (S): Java KCL 3.5 writes it on every item it creates: [`LEASE_ENTITY`] on
    /// leases, other values on the leader, worker-metrics and migration items of its
    /// single-table layout. An item without it is a lease (one created before 3.5, as Java
    /// 3.5 reads it). [`Lease::to_item`](super::Lease::to_item) writes [`LEASE_ENTITY`], as
    /// Java 3.5's serializer does, so the leases this crate creates carry it; reading drops
    /// that marker (it is implied) and keeps any other value as an extra attribute. Updates
    /// never touch it, so a lease created before 3.5 stays without it, as under Java.
    pub const ENTITY_TYPE: &str = "entityType";
    /// The [`ENTITY_TYPE`] of a lease.
    pub const LEASE_ENTITY: &str = "LEASE";

    /// Every attribute name this crate models.
    pub const ALL: [&str; 17] = [
        LEASE_KEY,
        LEASE_OWNER,
        LEASE_COUNTER,
        CHECKPOINT,
        CHECKPOINT_SUB_SEQUENCE_NUMBER,
        PENDING_CHECKPOINT,
        PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER,
        PENDING_CHECKPOINT_STATE,
        OWNER_SWITCHES_SINCE_CHECKPOINT,
        PARENT_SHARD_ID,
        CHILD_SHARD_IDS,
        STARTING_HASH_KEY,
        ENDING_HASH_KEY,
        THROUGHPUT_KBPS,
        CHECKPOINT_OWNER,
        STREAM_NAME,
        SHARD_ID,
    ];

    /// The attributes [`Lease::from_item`](crate::lease::Lease::from_item) always takes
    /// into the typed fields when present. The others (`pendingCheckpointSubSequenceNumber`
    /// without `pendingCheckpoint`, one hash key without the other, `shardId` without
    /// `streamName`) are ignored by the Java reader and kept as extra attributes here.
    pub(crate) const ALWAYS_MODELLED: [&str; 13] = [
        LEASE_KEY,
        LEASE_OWNER,
        LEASE_COUNTER,
        CHECKPOINT,
        CHECKPOINT_SUB_SEQUENCE_NUMBER,
        PENDING_CHECKPOINT,
        PENDING_CHECKPOINT_STATE,
        OWNER_SWITCHES_SINCE_CHECKPOINT,
        PARENT_SHARD_ID,
        CHILD_SHARD_IDS,
        THROUGHPUT_KBPS,
        CHECKPOINT_OWNER,
        STREAM_NAME,
    ];
}

/// The DynamoDB type tag of `value` (`S`, `N`, `B`, `SS`, …).
pub(crate) fn type_name(value: &AttributeValue) -> &'static str {
    match value {
        AttributeValue::S(_) => "S",
        AttributeValue::N(_) => "N",
        AttributeValue::B(_) => "B",
        AttributeValue::Ss(_) => "SS",
        AttributeValue::Ns(_) => "NS",
        AttributeValue::Bs(_) => "BS",
        AttributeValue::M(_) => "M",
        AttributeValue::L(_) => "L",
        AttributeValue::Bool(_) => "BOOL",
        AttributeValue::Null(_) => "NULL",
        _ => "unknown",
    }
}

/// A short rendering of `value` for error messages.
pub(crate) fn render(value: &AttributeValue) -> String {
    match value {
        AttributeValue::S(s) | AttributeValue::N(s) => truncate(s),
        other => truncate(&format!("{other:?}")),
    }
}

fn wrong_type(attribute: &'static str, expected: &'static str, value: &AttributeValue) -> Error {
    Error::AttributeType {
        attribute,
        expected,
        found: type_name(value),
        value: render(value),
    }
}

/// Reads the item while tracking which attributes were consumed.
struct Reader<'a> {
    item: &'a Item,
}

impl<'a> Reader<'a> {
    fn get(&self, attribute: &'static str) -> Option<&'a AttributeValue> {
        self.item.get(attribute)
    }

    fn string(&self, attribute: &'static str) -> Result<Option<&'a str>> {
        match self.get(attribute) {
            None => Ok(None),
            Some(AttributeValue::S(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(attribute, "S", other)),
        }
    }

    /// A string attribute where an empty string means absent (as Java's
    /// `Strings.isNullOrEmpty` checks do).
    fn non_empty_string(&self, attribute: &'static str) -> Result<Option<&'a str>> {
        Ok(self.string(attribute)?.filter(|s| !s.is_empty()))
    }

    fn required_string(&self, attribute: &'static str) -> Result<&'a str> {
        self.string(attribute)?
            .ok_or(Error::MissingAttribute { attribute })
    }

    fn number(&self, attribute: &'static str) -> Result<Option<u64>> {
        match self.get(attribute) {
            None => Ok(None),
            Some(AttributeValue::N(n)) => parse_u64(attribute, n).map(Some),
            Some(other) => Err(wrong_type(attribute, "N", other)),
        }
    }

    fn float(&self, attribute: &'static str) -> Result<Option<f64>> {
        match self.get(attribute) {
            None => Ok(None),
            Some(AttributeValue::N(n)) => match n.trim().parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(Error::attribute_value(
                    attribute,
                    n,
                    "expected a finite decimal number",
                )),
            },
            Some(other) => Err(wrong_type(attribute, "N", other)),
        }
    }

    fn string_set(&self, attribute: &'static str) -> Result<BTreeSet<String>> {
        match self.get(attribute) {
            None => Ok(BTreeSet::new()),
            Some(AttributeValue::Ss(values)) => Ok(values.iter().cloned().collect()),
            Some(other) => Err(wrong_type(attribute, "SS", other)),
        }
    }

    fn bytes(&self, attribute: &'static str) -> Result<Option<Vec<u8>>> {
        match self.get(attribute) {
            None => Ok(None),
            Some(AttributeValue::B(blob)) => Ok(Some(blob.as_ref().to_vec())),
            Some(other) => Err(wrong_type(attribute, "B", other)),
        }
    }
}

fn parse_u64(attribute: &'static str, n: &str) -> Result<u64> {
    n.trim().parse::<u64>().map_err(|_| {
        Error::attribute_value(
            attribute,
            n,
            "expected a non-negative integer no larger than 2^64-1",
        )
    })
}

fn parse_position(attribute: &'static str, value: &str) -> Result<SequencePosition> {
    SequencePosition::parse(value).map_err(|e| e.in_attribute(attribute))
}

impl Lease {
    /// Reads a lease from an item shaped as the Java KCL writes it (single- or multi-stream).
    ///
    /// Unknown attributes are kept in [`Lease::extra_attributes`].
    ///
    /// # Errors
    ///
    /// [`Error::MissingAttribute`] without `leaseKey`, `leaseCounter` or `checkpoint`;
    /// [`Error::AttributeType`] when a known attribute has another DynamoDB type than the
    /// Java KCL writes; [`Error::AttributeValue`] for values the Java KCL would not write
    /// (non-numeric counters, malformed checkpoints, hash keys or stream identifiers).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use aws_sdk_dynamodb::types::AttributeValue;
    /// use kinesis_kcl::lease::{ExtendedSequenceNumber, Lease};
    ///
    /// let item = HashMap::from([
    ///     ("leaseKey".to_string(), AttributeValue::S("shardId-000000000001".into())),
    ///     ("leaseCounter".to_string(), AttributeValue::N("42".into())),
    ///     ("leaseOwner".to_string(), AttributeValue::S("worker-a".into())),
    ///     ("checkpoint".to_string(), AttributeValue::S("TRIM_HORIZON".into())),
    ///     ("checkpointSubSequenceNumber".to_string(), AttributeValue::N("0".into())),
    ///     ("ownerSwitchesSinceCheckpoint".to_string(), AttributeValue::N("0".into())),
    /// ]);
    /// let lease = Lease::from_item(&item)?;
    /// assert_eq!(lease.lease_owner.as_deref(), Some("worker-a"));
    /// assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
    /// # Ok::<(), kinesis_kcl::Error>(())
    /// ```
    pub fn from_item(item: &Item) -> Result<Lease> {
        let r = Reader { item };
        let mut consumed: Vec<&'static str> = Vec::with_capacity(attr::ALL.len());

        let lease_key = r.required_string(attr::LEASE_KEY)?;
        if lease_key.is_empty() {
            return Err(Error::attribute_value(
                attr::LEASE_KEY,
                lease_key,
                "the lease key is empty",
            ));
        }
        consumed.push(attr::LEASE_KEY);

        let lease_owner = r.non_empty_string(attr::LEASE_OWNER)?.map(str::to_owned);
        consumed.push(attr::LEASE_OWNER);

        let lease_counter = r
            .number(attr::LEASE_COUNTER)?
            .ok_or(Error::MissingAttribute {
                attribute: attr::LEASE_COUNTER,
            })?;
        consumed.push(attr::LEASE_COUNTER);

        let position = parse_position(attr::CHECKPOINT, r.required_string(attr::CHECKPOINT)?)?;
        let sub = r.number(attr::CHECKPOINT_SUB_SEQUENCE_NUMBER)?.unwrap_or(0);
        let checkpoint = ExtendedSequenceNumber::new(position, sub);
        consumed.extend([attr::CHECKPOINT, attr::CHECKPOINT_SUB_SEQUENCE_NUMBER]);

        let pending_checkpoint = match r.non_empty_string(attr::PENDING_CHECKPOINT)? {
            Some(p) => {
                let position = parse_position(attr::PENDING_CHECKPOINT, p)?;
                let sub = r
                    .number(attr::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER)?
                    .unwrap_or(0);
                consumed.push(attr::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER);
                Some(ExtendedSequenceNumber::new(position, sub))
            }
            None => None,
        };
        consumed.push(attr::PENDING_CHECKPOINT);

        let pending_checkpoint_state = r.bytes(attr::PENDING_CHECKPOINT_STATE)?;
        consumed.push(attr::PENDING_CHECKPOINT_STATE);

        let owner_switches_since_checkpoint = r
            .number(attr::OWNER_SWITCHES_SINCE_CHECKPOINT)?
            .unwrap_or(0);
        consumed.push(attr::OWNER_SWITCHES_SINCE_CHECKPOINT);

        let parent_shard_ids = r.string_set(attr::PARENT_SHARD_ID)?;
        let child_shard_ids = r.string_set(attr::CHILD_SHARD_IDS)?;
        consumed.extend([attr::PARENT_SHARD_ID, attr::CHILD_SHARD_IDS]);

        let hash_key_range = match (
            r.non_empty_string(attr::STARTING_HASH_KEY)?,
            r.non_empty_string(attr::ENDING_HASH_KEY)?,
        ) {
            (Some(start), Some(end)) => {
                consumed.extend([attr::STARTING_HASH_KEY, attr::ENDING_HASH_KEY]);
                Some(HashKeyRange::parse(start, end).map_err(|e| match e {
                    HashKeyRangeError::Start(e) => Error::attribute_value(
                        attr::STARTING_HASH_KEY,
                        &e.value,
                        e.problem.to_string(),
                    ),
                    HashKeyRangeError::End(e) => Error::attribute_value(
                        attr::ENDING_HASH_KEY,
                        &e.value,
                        e.problem.to_string(),
                    ),
                    other => Error::attribute_value(attr::ENDING_HASH_KEY, end, other.to_string()),
                })?)
            }
            _ => None,
        };

        let throughput_kbps = r.float(attr::THROUGHPUT_KBPS)?;
        consumed.push(attr::THROUGHPUT_KBPS);

        let checkpoint_owner = r
            .non_empty_string(attr::CHECKPOINT_OWNER)?
            .map(str::to_owned);
        consumed.push(attr::CHECKPOINT_OWNER);

        let multi_stream = match r.string(attr::STREAM_NAME)? {
            Some(stream) => {
                let stream = StreamIdentifier::parse(stream)
                    .map_err(|e| e.in_attribute(attr::STREAM_NAME))?;
                let shard_id = r.required_string(attr::SHARD_ID)?.to_owned();
                consumed.extend([attr::STREAM_NAME, attr::SHARD_ID]);
                Some(MultiStreamShard { stream, shard_id })
            }
            None => None,
        };

        // `entityType` = `LEASE` only says what the item is: `to_item` writes it again.
        let lease_marker = |name: &str, value: &AttributeValue| {
            name == attr::ENTITY_TYPE && *value == AttributeValue::S(attr::LEASE_ENTITY.to_owned())
        };
        let extra_attributes = item
            .iter()
            .filter(|(name, value)| {
                !consumed.contains(&name.as_str()) && !lease_marker(name, value)
            })
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();

        Ok(Lease {
            lease_key: lease_key.to_owned(),
            lease_owner,
            lease_counter,
            checkpoint,
            pending_checkpoint,
            pending_checkpoint_state,
            owner_switches_since_checkpoint,
            parent_shard_ids,
            child_shard_ids,
            hash_key_range,
            throughput_kbps,
            checkpoint_owner,
            multi_stream,
            extra_attributes,
        })
    }

    /// Writes the full item (for a `PutItem`), in the layout the Java KCL reads: the same
    /// names, types and omissions as the Java 3.5 `toDynamoRecord` (`entityType` = `LEASE`
    /// included, which older versions ignore), plus every preserved unknown attribute. Typed
    /// fields win over an extra attribute of the same name.
    ///
    /// # Errors
    ///
    /// [`Error::AttributeValue`] for values the Java KCL could not read back or DynamoDB
    /// would reject: an empty lease key, an empty owner, checkpoint owner, shard id or set
    /// member, or a non-finite throughput.
    pub fn to_item(&self) -> Result<Item> {
        let mut item: Item = self
            .extra_attributes
            .iter()
            .filter(|(name, _)| !attr::ALWAYS_MODELLED.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        for (name, value) in self.stored_attributes()? {
            item.insert(name.to_owned(), value);
        }
        item.entry(attr::ENTITY_TYPE.to_owned())
            .or_insert_with(|| AttributeValue::S(attr::LEASE_ENTITY.to_owned()));
        Ok(item)
    }

    /// The modelled attributes as the Java `toDynamoRecord` writes them.
    pub(crate) fn stored_attributes(&self) -> Result<Vec<(&'static str, AttributeValue)>> {
        let mut out = Vec::with_capacity(16);
        out.push((attr::LEASE_KEY, s_value(attr::LEASE_KEY, &self.lease_key)?));
        out.push((attr::LEASE_COUNTER, n_value(self.lease_counter)));
        if let Some(owner) = &self.lease_owner {
            out.push((attr::LEASE_OWNER, s_value(attr::LEASE_OWNER, owner)?));
        }
        out.push((
            attr::OWNER_SWITCHES_SINCE_CHECKPOINT,
            n_value(self.owner_switches_since_checkpoint),
        ));
        out.extend(self.checkpoint_attributes());
        if !self.parent_shard_ids.is_empty() {
            out.push((
                attr::PARENT_SHARD_ID,
                ss_value(attr::PARENT_SHARD_ID, &self.parent_shard_ids)?,
            ));
        }
        if !self.child_shard_ids.is_empty() {
            out.push((
                attr::CHILD_SHARD_IDS,
                ss_value(attr::CHILD_SHARD_IDS, &self.child_shard_ids)?,
            ));
        }
        if let Some(pending) = &self.pending_checkpoint {
            out.extend(pending_attributes(pending));
        }
        if let Some(state) = &self.pending_checkpoint_state {
            // Java's toDynamoRecord writes the checkpoint's sub-sequence number (an N) here, a
            // bug its own reader cannot read back; we write the bytes, as Java's update path does.
            out.push((attr::PENDING_CHECKPOINT_STATE, b_value(state)));
        }
        out.extend(self.hash_key_attributes());
        if let Some(kbps) = self.throughput_kbps {
            out.push((attr::THROUGHPUT_KBPS, f_value(kbps)?));
        }
        if let Some(owner) = &self.checkpoint_owner {
            out.push((
                attr::CHECKPOINT_OWNER,
                s_value(attr::CHECKPOINT_OWNER, owner)?,
            ));
        }
        out.extend(self.multi_stream_attributes()?);
        Ok(out)
    }

    pub(crate) fn checkpoint_attributes(&self) -> [(&'static str, AttributeValue); 2] {
        [
            (
                attr::CHECKPOINT,
                AttributeValue::S(self.checkpoint.position.as_str().to_owned()),
            ),
            (
                attr::CHECKPOINT_SUB_SEQUENCE_NUMBER,
                n_value(self.checkpoint.sub_sequence_number),
            ),
        ]
    }

    pub(crate) fn hash_key_attributes(&self) -> Vec<(&'static str, AttributeValue)> {
        match &self.hash_key_range {
            Some(range) => vec![
                (
                    attr::STARTING_HASH_KEY,
                    AttributeValue::S(range.start().to_string()),
                ),
                (
                    attr::ENDING_HASH_KEY,
                    AttributeValue::S(range.end().to_string()),
                ),
            ],
            None => Vec::new(),
        }
    }

    pub(crate) fn multi_stream_attributes(&self) -> Result<Vec<(&'static str, AttributeValue)>> {
        match &self.multi_stream {
            Some(ms) => Ok(vec![
                (attr::STREAM_NAME, AttributeValue::S(ms.stream.to_string())),
                (attr::SHARD_ID, s_value(attr::SHARD_ID, &ms.shard_id)?),
            ]),
            None => Ok(Vec::new()),
        }
    }
}

pub(crate) fn pending_attributes(
    pending: &ExtendedSequenceNumber,
) -> [(&'static str, AttributeValue); 2] {
    [
        (
            attr::PENDING_CHECKPOINT,
            AttributeValue::S(pending.position.as_str().to_owned()),
        ),
        (
            attr::PENDING_CHECKPOINT_SUB_SEQUENCE_NUMBER,
            n_value(pending.sub_sequence_number),
        ),
    ]
}

/// An `S` value; the Java KCL refuses to write empty strings.
pub(crate) fn s_value(attribute: &'static str, value: &str) -> Result<AttributeValue> {
    if value.is_empty() {
        return Err(Error::attribute_value(
            attribute,
            value,
            "the Java KCL never writes an empty string here",
        ));
    }
    Ok(AttributeValue::S(value.to_owned()))
}

/// An `N` value holding an integer.
pub(crate) fn n_value(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// An `N` value holding a finite float.
pub(crate) fn f_value(value: f64) -> Result<AttributeValue> {
    if !value.is_finite() {
        return Err(Error::attribute_value(
            attr::THROUGHPUT_KBPS,
            &value.to_string(),
            "DynamoDB numbers must be finite",
        ));
    }
    Ok(AttributeValue::N(value.to_string()))
}

/// A `B` value.
pub(crate) fn b_value(value: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(value.to_vec()))
}

/// An `SS` value; DynamoDB string sets hold non-empty strings.
pub(crate) fn ss_value(
    attribute: &'static str,
    values: &BTreeSet<String>,
) -> Result<AttributeValue> {
    if let Some(empty) = values.iter().find(|v| v.is_empty()) {
        return Err(Error::attribute_value(
            attribute,
            empty,
            "string set members must be non-empty",
        ));
    }
    Ok(AttributeValue::Ss(values.iter().cloned().collect()))
}

/// What one item of a lease table is, as a listing sees it.
#[derive(Debug)]
pub(crate) enum TableItem {
    /// A lease.
    Lease(Box<Lease>),
    /// An item of another kind (`entityType` present and not `LEASE`): left alone.
    NotALease,
    /// An item that should be a lease and does not parse: left alone, and reported.
    Unreadable(Error),
}

impl TableItem {
    pub(crate) fn classify(item: &Item) -> Self {
        match item.get(attr::ENTITY_TYPE) {
            Some(AttributeValue::S(kind)) if kind == attr::LEASE_ENTITY => {}
            Some(_) => return TableItem::NotALease,
            None => {}
        }
        match Lease::from_item(item) {
            Ok(lease) => TableItem::Lease(Box::new(lease)),
            Err(error) => TableItem::Unreadable(error),
        }
    }
}
