//! Lease items in the layout the Java KCL itself produces, read and written by this crate.
//!
//! The fixtures are not our own output: each is derived from the Java KCL's serializer source
//! and its own tests (facts taken from them, no code), reusing the literal values of those
//! tests where they have any. All sources are in `awslabs/amazon-kinesis-client`:
//!
//! - 3.x: tag `v3.5.1` (commit `024eb86e2163a3d211cacf21f44f5411b6c41c53`). Paths written
//!   `main:…` / `test:…` are below `amazon-kinesis-client/src/main/java/software/amazon/kinesis/`
//!   and `amazon-kinesis-client/src/test/java/software/amazon/kinesis/`. `entityType` appears in
//!   `v3.5.0` (commit `954119a2858f895f93e931bb12c2bfa2a0fa5315`, from a32fa584 "Introduce
//!   single-table migration for KCL metadata"); 3.0–3.4 (checked at `v3.4.3`) do not write it.
//! - 2.x: tag `v2.6.0` (commit `89a90e34e2633b6966cb4433c16b21c303cd056c`), same paths.
//! - 1.x: tag `v1.13.3` (commit `74fc856dabd9894fd6648033a2fb3c4474e91bf1`), paths
//!   `src/{main,test}/java/com/amazonaws/services/kinesis/leases/impl/`.
//!
//! The serializer facts (`main:leases/dynamodb/DynamoDBLeaseSerializer.java`):
//!
//! - `toDynamoRecord` always writes `leaseKey` (S), `leaseCounter` (N),
//!   `ownerSwitchesSinceCheckpoint` (N), `checkpoint` (S: the digits, or `TRIM_HORIZON` /
//!   `LATEST` / `AT_TIMESTAMP` / `SHARD_END`) and `checkpointSubSequenceNumber` (N); and only
//!   when set: `leaseOwner` (S), `parentShardId` and `childShardIds` (SS, left out when
//!   empty), `pendingCheckpoint` (S) with `pendingCheckpointSubSequenceNumber` (N),
//!   `pendingCheckpointState`, `startingHashKey` / `endingHashKey` (S, the decimal
//!   `BigInteger` form, `main:common/HashKeyRangeForLease.java`), and in 3.x `throughputKBps`
//!   (N, `Double.toString`) and `checkpointOwner` (S). Since 3.5.0 it also always writes
//!   `entityType` (S) = `LEASE` (`Lease.getEntityType`, `main:leases/EntityType.java`).
//! - `main:leases/DynamoUtils.java` refuses to build an empty or null S and an empty SS, so
//!   Java never writes empty strings or sets: it leaves the attribute out.
//! - `fromDynamoRecord` reads an item without `entityType` or with `LEASE` as a lease and
//!   returns null for any other value (3.5); reads a pending checkpoint only when
//!   `pendingCheckpoint` is non-empty; defaults absent sub-sequence numbers to 0
//!   (`main:retrieval/kpl/ExtendedSequenceNumber.java`); reads a hash range only when both keys
//!   are non-empty; reads `pendingCheckpointState` as B.
//! - `main:leases/dynamodb/DynamoDBMultiStreamLeaseSerializer.java` adds `streamName` (S, the
//!   whole serialized `<account>:<stream>:<epoch>` identifier) and `shardId` (S) to both
//!   `toDynamoRecord` and `getDynamoUpdateLeaseUpdate`; the key is
//!   `<streamIdentifier>:<shardId>` (`main:leases/MultiStreamLease.getLeaseKey`).
//!
//! Numbers are shown as DynamoDB stores them: it normalises an N, so the `100.0` Java sends for
//! a `Double` comes back as `100`.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_kcl::Error;
use kinesis_kcl::lease::{
    ExtendedSequenceNumber, HashKeyRange, Item, Lease, SequencePosition, StreamIdentifier,
};

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}
fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_owned())
}
fn ss(v: &[&str]) -> AttributeValue {
    AttributeValue::Ss(v.iter().map(|x| (*x).to_owned()).collect())
}
fn b(v: &[u8]) -> AttributeValue {
    AttributeValue::B(Blob::new(v.to_vec()))
}
fn item(attrs: &[(&str, AttributeValue)]) -> Item {
    attrs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}
fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}
/// `base` with `attrs` put (replaced or added).
fn with(mut base: Item, attrs: &[(&str, AttributeValue)]) -> Item {
    for (k, v) in attrs {
        base.insert((*k).to_owned(), v.clone());
    }
    base
}
/// `base` without the attributes `names`.
fn without(mut base: Item, names: &[&str]) -> Item {
    for k in names {
        base.remove(*k);
    }
    base
}
fn seq(digits: &str, sub: u64) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::parse(digits, sub).unwrap()
}

/// Compares items, treating string sets as sets (DynamoDB does not keep their order).
fn assert_same_item(actual: &Item, expected: &Item) {
    let norm = |i: &Item| -> HashMap<String, AttributeValue> {
        i.iter()
            .map(|(k, v)| {
                let v = match v {
                    AttributeValue::Ss(xs) => {
                        let mut xs = xs.clone();
                        xs.sort();
                        AttributeValue::Ss(xs)
                    }
                    other => other.clone(),
                };
                (k.clone(), v)
            })
            .collect()
    };
    let (a, e) = (norm(actual), norm(expected));
    let mut keys: Vec<_> = a.keys().chain(e.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        assert_eq!(a.get(k), e.get(k), "attribute {k}");
    }
}

/// 2^128 - 1 (`test:leases/ShardObjectHelper.MAX_HASH_KEY`,
/// `main:coordinator/PeriodicShardSyncManager.MAX_HASH_KEY`); the minimum is `0`.
const MAX_HASH_KEY: &str = "340282366920938463463374607431768211455";
/// A Kinesis sequence number (56 digits). The Java tests that checkpoint mid-record use random
/// ones (`test:lifecycle/ProcessTaskTest`), so this one is ours.
const SEQUENCE: &str = "49590338271490256608559692538361571095921575989136588898";

/// Java 3.5+ `toDynamoRecord` output: `base` plus `entityType` = `LEASE`
/// (`test:leases/dynamodb/DynamoDBLeaseSerializerTest.toDynamoRecord_includesEntityTypeAttribute`).
fn java_3_5(base: Item) -> Item {
    with(base, &[("entityType", s("LEASE"))])
}

/// `test:leases/dynamodb/DynamoDBLeaseSerializerTest.createMinimalDynamoRecord("shard-001")`:
/// the five attributes Java always writes (no owner, counter 0, owner switches 0,
/// `TRIM_HORIZON`, sub-sequence 0) and no `entityType`, an item written before 3.5
/// (`fromDynamoRecord_withNoEntityType_deserializesAsLease`). It is also exactly what
/// 2.x / 3.0–3.4 `toDynamoRecord` makes of that test's `createMinimalLease("shard-001")`.
fn java_minimal_record() -> Item {
    item(&[
        ("leaseKey", s("shard-001")),
        ("leaseCounter", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("TRIM_HORIZON")),
        ("checkpointSubSequenceNumber", n("0")),
    ])
}

/// `DynamoDBLeaseSerializerTest.roundTrip_serializeDeserialize_preservesLeaseFields`: 3.5
/// `toDynamoRecord` of `createMinimalLease("shard-round-trip")` with owner `test-owner` and
/// counter 42, `entityType` included.
fn java_3_5_round_trip_record() -> Item {
    java_3_5(item(&[
        ("leaseKey", s("shard-round-trip")),
        ("leaseOwner", s("test-owner")),
        ("leaseCounter", n("42")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("TRIM_HORIZON")),
        ("checkpointSubSequenceNumber", n("0")),
    ]))
}

/// `main:leases/HierarchicalShardSyncer.newKCLLease` for a root shard (no parents, the whole
/// hash key range) given the `TRIM_HORIZON` initial position, as 2.3–3.4 `toDynamoRecord`
/// writes it: no `leaseOwner`, the `Lease` default counter 0, owner switches 0, no
/// `parentShardId` (the empty set is left out), the range as decimal strings. Shard id as in
/// `test:leases/HierarchicalShardSyncerTest` (`shardId-0`).
fn shard_sync_root_lease() -> Item {
    item(&[
        ("leaseKey", s("shardId-0")),
        ("leaseCounter", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("TRIM_HORIZON")),
        ("checkpointSubSequenceNumber", n("0")),
        ("startingHashKey", s("0")),
        ("endingHashKey", s(MAX_HASH_KEY)),
    ])
}

/// KCL 1.x (`v1.13.3`) `KinesisClientLeaseSerializer.toDynamoRecord` over
/// `LeaseSerializer.toDynamoRecord`: `leaseKey`, `leaseCounter`, `leaseOwner` when set,
/// `ownerSwitchesSinceCheckpoint`, `checkpoint`, `checkpointSubSequenceNumber`, and
/// `parentShardId` when non-empty; no hash keys and no `childShardIds` (both arrived in 1.14.x),
/// never a pending checkpoint state. Values from the 1.x `TestHarnessBuilder.createLease` as
/// `LeaseRenewerIntegrationTest` calls it (`withLease("1", "foo")`: owner `foo`, counter 0,
/// switches 0, parent `parentShardId`); that test's checkpoint literal (`checkpoint`) is not a
/// sequence number, so the checkpoint here is `LATEST`.
fn kcl_1x_lease() -> Item {
    item(&[
        ("leaseKey", s("1")),
        ("leaseOwner", s("foo")),
        ("leaseCounter", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("LATEST")),
        ("checkpointSubSequenceNumber", n("0")),
        ("parentShardId", ss(&["parentShardId"])),
    ])
}

/// A split child in mid-stream (2.x / 3.0–3.4). Created by `ShutdownTask` through
/// `HierarchicalShardSyncer.newKCLLeaseForChildShard` (parent set, `TRIM_HORIZON`, switches 0,
/// the child's range) for the left child of `test:lifecycle/ShutdownTaskTest.constructChildrenFromSplit`
/// (`ShardId-1`, parent `shardId-0`, hash keys 0–49); taken by `leaseOwner` (that test's
/// owner); checkpointed by `DynamoDBCheckpointer.setCheckpoint` (which resets the owner
/// switches to 0) through `updateLease` at sub-sequence 2 (`ProcessTaskTest`'s last user
/// record of an aggregated record); then taken by `newOwner`
/// (`DynamoDBLeaseRefresherTest.takeLease_removesCheckpointOwner`): `getDynamoTakeLeaseUpdate`
/// adds 1 to `ownerSwitchesSinceCheckpoint` because the owner changed.
fn split_child_mid_stream() -> Item {
    item(&[
        ("leaseKey", s("ShardId-1")),
        ("leaseOwner", s("newOwner")),
        ("leaseCounter", n("17")),
        ("ownerSwitchesSinceCheckpoint", n("1")),
        ("checkpoint", s(SEQUENCE)),
        ("checkpointSubSequenceNumber", n("2")),
        ("parentShardId", ss(&["shardId-0"])),
        ("startingHashKey", s("0")),
        ("endingHashKey", s("49")),
    ])
}

/// The parent of that split at its end (2.3+): `ShutdownTask` writes `childShardIds` (SS)
/// through `updateLeaseWithMetaInfo(CHILD_SHARDS)`, then the processor's `SHARD_END`
/// checkpoint goes through `updateLease`. Values from `ShutdownTaskTest`: `shardId-0` owned by
/// `leaseOwner`, children `ShardId-1` (0–49) and `ShardId-2` (50–99), so the parent spans 0–99.
fn shard_end_with_children() -> Item {
    item(&[
        ("leaseKey", s("shardId-0")),
        ("leaseOwner", s("leaseOwner")),
        ("leaseCounter", n("88")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("SHARD_END")),
        ("checkpointSubSequenceNumber", n("0")),
        ("childShardIds", ss(&["ShardId-1", "ShardId-2"])),
        ("startingHashKey", s("0")),
        ("endingHashKey", s("99")),
    ])
}

/// A merge child as `newKCLLeaseForChildShard` creates it, written by 3.5:
/// `ShutdownTaskTest.constructChildFromMerge` (`shardId-2`, parents `shardId-0` and
/// `shardId-1` in one `parentShardId` set, hash keys 0–49), unowned, `TRIM_HORIZON`.
fn merge_child() -> Item {
    java_3_5(item(&[
        ("leaseKey", s("shardId-2")),
        ("leaseCounter", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("TRIM_HORIZON")),
        ("checkpointSubSequenceNumber", n("0")),
        ("parentShardId", ss(&["shardId-0", "shardId-1"])),
        ("startingHashKey", s("0")),
        ("endingHashKey", s("49")),
    ]))
}

/// The lease of `pending_checkpoint_with_state` just before the prepare: `setCheckpoint("1")`
/// written through `updateLease`.
fn checkpointed_at_1() -> Item {
    item(&[
        ("leaseKey", s("myShardId")),
        ("leaseOwner", s("test-owner")),
        ("leaseCounter", n("2")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("1")),
        ("checkpointSubSequenceNumber", n("0")),
    ])
}

/// `test:checkpoint/CheckpointerTest.testInitialPrepareCheckpointWithApplicationState`: shard
/// `myShardId` checkpointed at `1`, then `prepareCheckpoint("99999", "applicationState")`.
/// `DynamoDBCheckpointer.prepareCheckpoint` goes through `updateLease`, whose
/// `getDynamoUpdateLeaseUpdate` PUTs `pendingCheckpoint` (S), `pendingCheckpointSubSequenceNumber`
/// (N) and `pendingCheckpointState` (B, the bytes) next to the committed checkpoint (the state
/// since 2.3.0; 1.x wrote the first two from 1.8.2). Owner as in `DynamoDBLeaseSerializerTest`.
fn pending_checkpoint_with_state() -> Item {
    with(
        checkpointed_at_1(),
        &[
            ("leaseCounter", n("3")),
            ("pendingCheckpoint", s("99999")),
            ("pendingCheckpointSubSequenceNumber", n("0")),
            ("pendingCheckpointState", b(b"applicationState")),
        ],
    )
}

/// `test:leases/dynamodb/DynamoDBLeaseRefresherTest.createDummyLease("lease1", "currentOwner")`
/// as 3.5 `createLeaseIfNotExists` (`toDynamoRecord`) writes it.
fn handoff_candidate() -> Item {
    java_3_5(item(&[
        ("leaseKey", s("lease1")),
        ("leaseOwner", s("currentOwner")),
        ("leaseCounter", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("TRIM_HORIZON")),
        ("checkpointSubSequenceNumber", n("0")),
    ]))
}

/// That lease after `DynamoDBLeaseRefresher.initiateGracefulLeaseHandoff(lease, "nextOwner")`
/// (`DynamoDBLeaseRefresherTest.initiateGracefulLeaseHandoff_sanity`): `leaseOwner` PUT to the
/// next owner, `checkpointOwner` PUT to the current one, the counter not bumped.
fn handoff_started() -> Item {
    with(
        handoff_candidate(),
        &[
            ("leaseOwner", s("nextOwner")),
            ("checkpointOwner", s("currentOwner")),
        ],
    )
}

/// [`handoff_started`] after one renewal by `currentOwner` before the hand-off: `renewLease`
/// PUTs counter + 1 and, when known, `throughputKBps` (N from `Double.toString`; `100.0` is a
/// `LeaseAssignmentManagerTest` value, stored by DynamoDB as `100`). Plus attributes no KCL
/// writes (a TTL, a map, a bool), as an operator or a newer KCL might add: they must survive
/// our writes.
fn handoff_with_unknown_attributes() -> Item {
    with(
        handoff_started(),
        &[
            ("leaseCounter", n("1")),
            ("throughputKBps", n("100")),
            ("expiresAt", n("1767225600")),
            (
                "annotations",
                AttributeValue::M(HashMap::from([("team".to_owned(), s("payments"))])),
            ),
            ("isPaused", AttributeValue::Bool(false)),
        ],
    )
}

/// `DynamoDBLeaseRefresherTest.createPendingCheckpointOwnerLease`: `createDummyLease("1",
/// "ownerA")` with `checkpointOwner` = `checkpointOwner`, written by 3.5 `toDynamoRecord`.
fn pending_checkpoint_owner_lease() -> Item {
    java_3_5(item(&[
        ("leaseKey", s("1")),
        ("leaseOwner", s("ownerA")),
        ("checkpointOwner", s("checkpointOwner")),
        ("leaseCounter", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("TRIM_HORIZON")),
        ("checkpointSubSequenceNumber", n("0")),
    ]))
}

/// `test:leases/dynamodb/DynamoDBMultiStreamLeaseSerializerTest`: stream identifier and shard.
const MS_STREAM: &str = "123456789012:test-stream:1";
const MS_SHARD: &str = "shardId-000000000000";
const MS_KEY: &str = "123456789012:test-stream:1:shardId-000000000000";

/// `DynamoDBMultiStreamLeaseSerializerTest.createMinimalMultiStreamDynamoRecord(LEASE_KEY)`:
/// the minimal single-stream attributes plus `streamName` (the serialized identifier) and
/// `shardId`; no `entityType` (`fromDynamoRecord_withNoEntityType_deserializesAsMultiStreamLease`).
fn java_multi_stream_minimal_record() -> Item {
    item(&[
        ("leaseKey", s(MS_KEY)),
        ("leaseCounter", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("TRIM_HORIZON")),
        ("checkpointSubSequenceNumber", n("0")),
        ("streamName", s(MS_STREAM)),
        ("shardId", s(MS_SHARD)),
    ])
}

/// `DynamoDBMultiStreamLeaseSerializerTest.roundTrip_serializeDeserialize_preservesMultiStreamFields`:
/// 3.5 `toDynamoRecord` of the minimal multi-stream lease with owner `test-owner` and counter
/// 42: the base record (with `entityType`) plus `streamName` and `shardId`.
fn java_3_5_multi_stream_round_trip_record() -> Item {
    java_3_5(with(
        java_multi_stream_minimal_record(),
        &[("leaseOwner", s("test-owner")), ("leaseCounter", n("42"))],
    ))
}

/// `test:common/StreamIdentifierTest`: account `123456789012`, stream `stream-name`, epoch
/// 1680616058.
const SI_STREAM: &str = "123456789012:stream-name:1680616058";

/// `HierarchicalShardSyncer.newKCLMultiStreamLease` for a root shard at `AT_TIMESTAMP`,
/// written by 3.5: key `<stream identifier>:shardId-0`, the whole hash key range,
/// `streamName` and `shardId`, `entityType`.
fn multi_stream_at_timestamp() -> Item {
    java_3_5(item(&[
        (
            "leaseKey",
            s("123456789012:stream-name:1680616058:shardId-0"),
        ),
        ("leaseCounter", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("AT_TIMESTAMP")),
        ("checkpointSubSequenceNumber", n("0")),
        ("startingHashKey", s("0")),
        ("endingHashKey", s(MAX_HASH_KEY)),
        ("streamName", s(SI_STREAM)),
        ("shardId", s("shardId-0")),
    ]))
}

fn all_fixtures() -> Vec<(&'static str, Item)> {
    vec![
        ("java_minimal_record", java_minimal_record()),
        ("java_3_5_round_trip_record", java_3_5_round_trip_record()),
        ("shard_sync_root_lease", shard_sync_root_lease()),
        (
            "shard_sync_root_lease (3.5)",
            java_3_5(shard_sync_root_lease()),
        ),
        ("kcl_1x_lease", kcl_1x_lease()),
        ("split_child_mid_stream", split_child_mid_stream()),
        ("shard_end_with_children", shard_end_with_children()),
        ("merge_child", merge_child()),
        ("checkpointed_at_1", checkpointed_at_1()),
        (
            "pending_checkpoint_with_state",
            pending_checkpoint_with_state(),
        ),
        ("handoff_candidate", handoff_candidate()),
        ("handoff_started", handoff_started()),
        (
            "handoff_with_unknown_attributes",
            handoff_with_unknown_attributes(),
        ),
        (
            "pending_checkpoint_owner_lease",
            pending_checkpoint_owner_lease(),
        ),
        (
            "java_multi_stream_minimal_record",
            java_multi_stream_minimal_record(),
        ),
        (
            "java_3_5_multi_stream_round_trip_record",
            java_3_5_multi_stream_round_trip_record(),
        ),
        ("multi_stream_at_timestamp", multi_stream_at_timestamp()),
    ]
}

/// `DynamoDBLeaseSerializerTest.fromDynamoRecord_withNoEntityType_deserializesAsLease`.
#[test]
fn reads_java_minimal_record() {
    let lease = Lease::from_item(&java_minimal_record()).unwrap();
    assert_eq!(lease.lease_key, "shard-001");
    assert_eq!(lease.shard_id(), "shard-001");
    assert_eq!(lease.lease_owner, None);
    assert_eq!(lease.actual_owner(), None);
    assert_eq!(lease.lease_counter, 0);
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
    assert_eq!(lease.pending_checkpoint, None);
    assert_eq!(lease.pending_checkpoint_state, None);
    assert_eq!(lease.owner_switches_since_checkpoint, 0);
    assert!(lease.parent_shard_ids.is_empty());
    assert!(lease.child_shard_ids.is_empty());
    assert_eq!(lease.hash_key_range, None);
    assert_eq!(lease.throughput_kbps, None);
    assert_eq!(lease.checkpoint_owner, None);
    assert_eq!(lease.multi_stream, None);
    assert!(lease.extra_attributes.is_empty());
    assert_eq!(
        lease,
        Lease::new("shard-001", ExtendedSequenceNumber::TRIM_HORIZON)
    );
}

/// `DynamoDBLeaseSerializerTest.fromDynamoRecord_withLeaseEntityType_deserializesAsLease` and
/// `roundTrip_serializeDeserialize_preservesLeaseFields`: a 3.5 lease reads like any other;
/// the `LEASE` marker is implied: the lease reads as the same item without it.
#[test]
fn reads_java_3_5_lease_with_entity_type() {
    let lease = Lease::from_item(&java_3_5_round_trip_record()).unwrap();
    assert_eq!(lease.lease_key, "shard-round-trip");
    assert_eq!(lease.lease_owner.as_deref(), Some("test-owner"));
    assert_eq!(lease.lease_counter, 42);
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
    // The `LEASE` marker is implied (`to_item` writes it again), so not an extra attribute.
    assert!(
        lease.extra_attributes.is_empty(),
        "{:?}",
        lease.extra_attributes
    );
    assert_eq!(
        lease,
        Lease::from_item(&without(java_3_5_round_trip_record(), &["entityType"])).unwrap()
    );

    // `fromDynamoRecord_withExistingLease_leaseEntityType_updatesLease` on the minimal record:
    // the same lease as without the marker.
    let lease = Lease::from_item(&java_3_5(java_minimal_record())).unwrap();
    assert_eq!(lease.lease_key, "shard-001");
    assert_eq!(lease, Lease::from_item(&java_minimal_record()).unwrap());
}

#[test]
fn reads_shard_sync_root_lease() {
    let lease = Lease::from_item(&shard_sync_root_lease()).unwrap();
    assert_eq!(lease.lease_key, "shardId-0");
    assert_eq!(lease.lease_owner, None);
    assert_eq!(lease.lease_counter, 0);
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
    assert!(lease.parent_shard_ids.is_empty());
    assert_eq!(
        lease.hash_key_range,
        Some(HashKeyRange::new(0, u128::MAX).unwrap())
    );
    assert!(lease.extra_attributes.is_empty());
    // Equal to a lease built the way the shard syncer builds it.
    let mut expected = Lease::new("shardId-0", ExtendedSequenceNumber::TRIM_HORIZON);
    expected.hash_key_range = Some(HashKeyRange::new(0, u128::MAX).unwrap());
    assert_eq!(lease, expected);
}

#[test]
fn reads_1x_lease() {
    let lease = Lease::from_item(&kcl_1x_lease()).unwrap();
    assert_eq!(lease.lease_key, "1");
    assert_eq!(lease.lease_owner.as_deref(), Some("foo"));
    assert_eq!(lease.lease_counter, 0);
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::LATEST);
    assert_eq!(lease.parent_shard_ids, set(&["parentShardId"]));
    assert!(lease.child_shard_ids.is_empty());
    assert_eq!(lease.hash_key_range, None);
}

#[test]
fn reads_mid_stream_lease_with_sub_sequence() {
    let lease = Lease::from_item(&split_child_mid_stream()).unwrap();
    assert_eq!(lease.lease_owner.as_deref(), Some("newOwner"));
    assert_eq!(lease.lease_counter, 17);
    assert_eq!(lease.checkpoint, seq(SEQUENCE, 2));
    assert_eq!(lease.owner_switches_since_checkpoint, 1);
    assert_eq!(lease.parent_shard_ids, set(&["shardId-0"]));
    assert_eq!(
        lease.hash_key_range,
        Some(HashKeyRange::new(0, 49).unwrap())
    );
    assert!(!lease.is_shard_end());
}

#[test]
fn reads_shard_end_lease_with_children() {
    let lease = Lease::from_item(&shard_end_with_children()).unwrap();
    assert!(lease.is_shard_end());
    assert_eq!(lease.checkpoint.position, SequencePosition::ShardEnd);
    assert!(lease.parent_shard_ids.is_empty());
    assert_eq!(lease.child_shard_ids, set(&["ShardId-1", "ShardId-2"]));
    assert_eq!(
        lease.hash_key_range,
        Some(HashKeyRange::new(0, 99).unwrap())
    );
}

#[test]
fn reads_merge_child_with_two_parents() {
    let lease = Lease::from_item(&merge_child()).unwrap();
    assert_eq!(lease.parent_shard_ids, set(&["shardId-0", "shardId-1"]));
    assert!(lease.child_shard_ids.is_empty());
    assert_eq!(lease.lease_owner, None);
    assert_eq!(
        lease.hash_key_range,
        Some(HashKeyRange::new(0, 49).unwrap())
    );
}

#[test]
fn reads_pending_checkpoint_and_state() {
    let lease = Lease::from_item(&pending_checkpoint_with_state()).unwrap();
    assert_eq!(lease.checkpoint, seq("1", 0));
    assert_eq!(lease.pending_checkpoint, Some(seq("99999", 0)));
    assert_eq!(
        lease.pending_checkpoint_state.as_deref(),
        Some(&b"applicationState"[..])
    );
    assert!(lease.pending_checkpoint > Some(lease.checkpoint.clone()));
}

#[test]
fn reads_handoff_and_keeps_unknown_attributes() {
    let lease = Lease::from_item(&handoff_with_unknown_attributes()).unwrap();
    assert_eq!(lease.lease_owner.as_deref(), Some("nextOwner"));
    assert_eq!(lease.checkpoint_owner.as_deref(), Some("currentOwner"));
    // `Lease.actualOwner()`: the checkpoint owner while a hand-off is under way.
    assert_eq!(lease.actual_owner(), Some("currentOwner"));
    assert_eq!(lease.lease_counter, 1);
    assert_eq!(lease.throughput_kbps, Some(100.0));
    let extra: Vec<&str> = lease.extra_attributes.keys().map(String::as_str).collect();
    assert_eq!(extra, ["annotations", "expiresAt", "isPaused"]);
    assert_eq!(lease.extra_attributes["expiresAt"], n("1767225600"));
}

/// `Double.toString` form, as Java sends it (`DynamoUtils.createAttributeValue(Double)`), before
/// DynamoDB normalises it.
#[test]
fn reads_throughput_as_java_sends_it() {
    for (sent, value) in [("100.0", 100.0), ("0.0", 0.0), ("1000.5", 1000.5)] {
        let fixture = with(handoff_started(), &[("throughputKBps", n(sent))]);
        let lease = Lease::from_item(&fixture).unwrap();
        assert_eq!(lease.throughput_kbps, Some(value), "{sent}");
    }
}

/// `DynamoDBMultiStreamLeaseSerializerTest.fromDynamoRecord_withNoEntityType_deserializesAsMultiStreamLease`
/// and `fromDynamoRecord_withLeaseEntityType_deserializesAsMultiStreamLease`.
#[test]
fn reads_java_multi_stream_lease() {
    for fixture in [
        java_multi_stream_minimal_record(),
        java_3_5(java_multi_stream_minimal_record()),
    ] {
        let lease = Lease::from_item(&fixture).unwrap();
        assert_eq!(lease.lease_key, MS_KEY);
        let ms = lease.multi_stream.as_ref().unwrap();
        assert_eq!(ms.stream.to_string(), MS_STREAM);
        assert_eq!(ms.stream.account_id(), "123456789012");
        assert_eq!(ms.stream.stream_name(), "test-stream");
        assert_eq!(ms.stream.creation_epoch(), 1);
        assert_eq!(ms.shard_id, MS_SHARD);
        assert_eq!(lease.shard_id(), MS_SHARD);
        assert_eq!(ms.lease_key(), lease.lease_key);
        assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
    }

    // `roundTrip_serializeDeserialize_preservesMultiStreamFields`.
    let lease = Lease::from_item(&java_3_5_multi_stream_round_trip_record()).unwrap();
    assert_eq!(lease.lease_key, MS_KEY);
    assert_eq!(lease.shard_id(), MS_SHARD);
    assert_eq!(lease.lease_owner.as_deref(), Some("test-owner"));
    assert_eq!(lease.lease_counter, 42);
}

#[test]
fn reads_multi_stream_lease_at_timestamp() {
    let lease = Lease::from_item(&multi_stream_at_timestamp()).unwrap();
    let ms = lease.multi_stream.as_ref().unwrap();
    assert_eq!(ms.stream.account_id(), "123456789012");
    assert_eq!(ms.stream.stream_name(), "stream-name");
    assert_eq!(ms.stream.creation_epoch(), 1_680_616_058);
    assert_eq!(lease.shard_id(), "shardId-0");
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::AT_TIMESTAMP);
    assert_eq!(
        lease.hash_key_range,
        Some(HashKeyRange::new(0, u128::MAX).unwrap())
    );
    assert!(
        lease.extra_attributes.is_empty(),
        "{:?}",
        lease.extra_attributes
    );
}

#[test]
fn every_fixture_round_trips_exactly() {
    for (name, fixture) in all_fixtures() {
        let lease = Lease::from_item(&fixture).unwrap_or_else(|e| panic!("{name}: {e}"));
        // What Java 3.5's `toDynamoRecord` makes of it: the same item, with `entityType`.
        let written = lease.to_item().unwrap();
        assert_same_item(&written, &java_3_5(fixture));
        assert_eq!(Lease::from_item(&written).unwrap(), lease, "{name}");
    }
}

/// Leases built in Rust, compared with what Java 3.5's `toDynamoRecord` produces for the same
/// lease: `entityType` = `LEASE` included, on every one.
#[test]
fn writes_what_the_java_serializer_writes() {
    // `DynamoDBLeaseSerializerTest.createMinimalLease("shard-001")`.
    let lease = Lease::new("shard-001", ExtendedSequenceNumber::TRIM_HORIZON);
    assert_same_item(&lease.to_item().unwrap(), &java_3_5(java_minimal_record()));

    // `roundTrip_serializeDeserialize_preservesLeaseFields`.
    let mut lease = Lease::new("shard-round-trip", ExtendedSequenceNumber::TRIM_HORIZON);
    lease.lease_owner = Some("test-owner".into());
    lease.lease_counter = 42;
    assert_same_item(&lease.to_item().unwrap(), &java_3_5_round_trip_record());

    // `HierarchicalShardSyncer.newKCLLease`.
    let mut lease = Lease::new("shardId-0", ExtendedSequenceNumber::TRIM_HORIZON);
    lease.hash_key_range = Some(HashKeyRange::new(0, u128::MAX).unwrap());
    assert_same_item(
        &lease.to_item().unwrap(),
        &java_3_5(shard_sync_root_lease()),
    );

    // `newKCLLeaseForChildShard` for the merge child.
    let mut lease = Lease::new("shardId-2", ExtendedSequenceNumber::TRIM_HORIZON);
    lease.parent_shard_ids = set(&["shardId-0", "shardId-1"]);
    lease.hash_key_range = Some(HashKeyRange::new(0, 49).unwrap());
    assert_same_item(&lease.to_item().unwrap(), &merge_child());

    // A shard-end lease with children.
    let mut lease = Lease::new("shardId-0", ExtendedSequenceNumber::SHARD_END);
    lease.lease_owner = Some("leaseOwner".into());
    lease.lease_counter = 88;
    lease.child_shard_ids = set(&["ShardId-1", "ShardId-2"]);
    lease.hash_key_range = Some(HashKeyRange::new(0, 99).unwrap());
    assert_same_item(
        &lease.to_item().unwrap(),
        &java_3_5(shard_end_with_children()),
    );

    // `DynamoDBLeaseRefresherTest.createPendingCheckpointOwnerLease`.
    let mut lease = Lease::new("1", ExtendedSequenceNumber::TRIM_HORIZON);
    lease.lease_owner = Some("ownerA".into());
    lease.checkpoint_owner = Some("checkpointOwner".into());
    assert_same_item(&lease.to_item().unwrap(), &pending_checkpoint_owner_lease());

    // `DynamoDBMultiStreamLeaseSerializerTest.roundTrip_serializeDeserialize_preservesMultiStreamFields`.
    let stream = StreamIdentifier::parse(MS_STREAM).unwrap();
    let mut ms = Lease::new_multi_stream(stream, MS_SHARD, ExtendedSequenceNumber::TRIM_HORIZON);
    assert_eq!(ms.lease_key, MS_KEY);
    ms.lease_owner = Some("test-owner".into());
    ms.lease_counter = 42;
    assert_same_item(
        &ms.to_item().unwrap(),
        &java_3_5_multi_stream_round_trip_record(),
    );

    // `HierarchicalShardSyncer.newKCLMultiStreamLease`.
    let stream = StreamIdentifier::new("123456789012", "stream-name", 1_680_616_058).unwrap();
    let mut ms = Lease::new_multi_stream(stream, "shardId-0", ExtendedSequenceNumber::AT_TIMESTAMP);
    ms.hash_key_range = Some(HashKeyRange::new(0, u128::MAX).unwrap());
    assert_same_item(&ms.to_item().unwrap(), &multi_stream_at_timestamp());
}

/// An item Java 3.5 wrote keeps its `entityType` through our reads and writes.
#[test]
fn entity_type_of_java_3_5_leases_survives_our_writes() {
    let mut lease = Lease::from_item(&java_3_5_multi_stream_round_trip_record()).unwrap();
    lease.set_checkpoint(seq("100", 0));
    let written = lease.to_item().unwrap();
    assert_eq!(written["entityType"], s("LEASE"));
    assert_eq!(written["checkpoint"], s("100"));
    assert_eq!(written["streamName"], s(MS_STREAM));
}

/// Our writes on items Java created leave them as Java's own updates would, per
/// `DynamoDBLeaseSerializer.getDynamoTakeLeaseUpdate` / `getDynamoAssignLeaseUpdate` /
/// `getDynamoEvictLeaseUpdate` / `getDynamoUpdateLeaseUpdate`, the multi-stream
/// `getDynamoUpdateLeaseUpdate`, and `DynamoDBLeaseRefresher.initiateGracefulLeaseHandoff` /
/// `takeLease` / `updateLease` (which add `leaseCounter` := counter + 1). Attributes the
/// update does not name (`entityType`, unknown ones) stay as they are.
#[test]
fn our_writes_leave_java_items_as_java_updates_do() {
    fn applied(start: &Item, write: impl FnOnce(&Lease) -> kinesis_kcl::lease::LeaseWrite) -> Item {
        let lease = Lease::from_item(start).unwrap();
        let write = write(&lease);
        assert!(write.conditions_hold(Some(start)), "{write:?}");
        let mut item = start.clone();
        write.apply_to(&mut item).unwrap();
        item
    }

    // Take of an unowned lease: owner PUT, `checkpointOwner` DELETE, no owner switch.
    let after = applied(&shard_sync_root_lease(), |l| {
        l.take_write("newOwner").unwrap()
    });
    let expected = with(
        shard_sync_root_lease(),
        &[("leaseOwner", s("newOwner")), ("leaseCounter", n("1"))],
    );
    assert_same_item(&after, &expected);

    // `takeLease_removesCheckpointOwner`: the owner changes, so `ownerSwitchesSinceCheckpoint`
    // gets ADD 1, and the checkpoint owner goes.
    let after = applied(&pending_checkpoint_owner_lease(), |l| {
        l.take_write("newOwner").unwrap()
    });
    let expected = with(
        without(pending_checkpoint_owner_lease(), &["checkpointOwner"]),
        &[
            ("leaseOwner", s("newOwner")),
            ("leaseCounter", n("1")),
            ("ownerSwitchesSinceCheckpoint", n("1")),
        ],
    );
    assert_same_item(&after, &expected);

    // `evictLease_removesCheckpointOwner`: during a hand-off only `checkpointOwner` goes;
    // counter ADD 1.
    let after = applied(&pending_checkpoint_owner_lease(), |l| {
        l.evict_write().unwrap()
    });
    let expected = with(
        without(pending_checkpoint_owner_lease(), &["checkpointOwner"]),
        &[("leaseCounter", n("1"))],
    );
    assert_same_item(&after, &expected);

    // `evictLease_removesOwnerIfCheckpointOwnerIsNull`.
    let start = without(pending_checkpoint_owner_lease(), &["checkpointOwner"]);
    let after = applied(&start, |l| l.evict_write().unwrap());
    let expected = with(without(start, &["leaseOwner"]), &[("leaseCounter", n("1"))]);
    assert_same_item(&after, &expected);

    // `initiateGracefulLeaseHandoff_sanity`.
    let after = applied(&handoff_candidate(), |l| {
        l.handoff_write("nextOwner").unwrap()
    });
    assert_same_item(&after, &handoff_started());

    // `assignLease_alwaysRemoveCheckpointOwner`: assigning to the next owner removes
    // `checkpointOwner`; no owner switch (the owner does not change, and the new owner is not
    // the checkpoint owner). Java's assign ADDs 1 to the counter; the take PUTs counter + 1.
    let after = applied(&handoff_started(), |l| l.take_write("nextOwner").unwrap());
    let expected = with(
        without(handoff_started(), &["checkpointOwner"]),
        &[("leaseCounter", n("1"))],
    );
    assert_same_item(&after, &expected);

    // The checkpoint owner taking the lease back counts as an owner switch.
    let after = applied(&handoff_started(), |l| {
        l.take_write("currentOwner").unwrap()
    });
    let expected = with(
        without(handoff_started(), &["checkpointOwner"]),
        &[
            ("leaseOwner", s("currentOwner")),
            ("leaseCounter", n("1")),
            ("ownerSwitchesSinceCheckpoint", n("1")),
        ],
    );
    assert_same_item(&after, &expected);

    // `prepareCheckpoint` through `updateLease`: pending checkpoint and state PUT.
    let after = applied(&checkpointed_at_1(), |l| {
        let mut l = l.clone();
        l.set_pending_checkpoint(seq("99999", 0), Some(b"applicationState".to_vec()));
        l.update_write().unwrap()
    });
    assert_same_item(&after, &pending_checkpoint_with_state());

    // `setCheckpoint` through `updateLease`: pending checkpoint, its sub-sequence number and
    // state DELETEd, owner switches PUT to 0.
    let after = applied(&pending_checkpoint_with_state(), |l| {
        let mut l = l.clone();
        l.set_checkpoint(seq("99999", 0));
        l.update_write().unwrap()
    });
    let expected = with(
        checkpointed_at_1(),
        &[("leaseCounter", n("4")), ("checkpoint", s("99999"))],
    );
    assert_same_item(&after, &expected);

    // Multi-stream `updateLease` (checkpoint `100`, as in `DynamoDBLeaseRefresherTest`):
    // `streamName` and `shardId` PUT again with the same values, `entityType` untouched.
    let start = java_3_5_multi_stream_round_trip_record();
    let after = applied(&start, |l| {
        let mut l = l.clone();
        l.set_checkpoint(seq("100", 0));
        l.update_write().unwrap()
    });
    let expected = with(
        start,
        &[("leaseCounter", n("43")), ("checkpoint", s("100"))],
    );
    assert_same_item(&after, &expected);
}

/// `DynamoUtils.createAttributeValue` refuses empty strings and collections, so Java leaves
/// out what it does not have: the minimal lease has exactly the five attributes
/// `toDynamoRecord` always writes, plus 3.5's `entityType`.
#[test]
fn omits_rather_than_empties() {
    let lease = Lease::new("shard-001", ExtendedSequenceNumber::TRIM_HORIZON);
    let item = lease.to_item().unwrap();
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort();
    let mut java: Vec<String> = java_3_5(java_minimal_record()).into_keys().collect();
    java.sort();
    assert_eq!(names, java);
    assert_eq!(
        names,
        [
            "checkpoint",
            "checkpointSubSequenceNumber",
            "entityType",
            "leaseCounter",
            "leaseKey",
            "ownerSwitchesSinceCheckpoint"
        ]
    );
}

#[test]
fn typed_fields_and_unknowns_both_survive_edits() {
    let mut lease = Lease::from_item(&handoff_with_unknown_attributes()).unwrap();
    lease.set_checkpoint(seq("5", 1));
    let item = lease.to_item().unwrap();
    assert_eq!(item["checkpoint"], s("5"));
    assert_eq!(item["checkpointSubSequenceNumber"], n("1"));
    assert_eq!(item["expiresAt"], n("1767225600"));
    assert_eq!(item["isPaused"], AttributeValue::Bool(false));
    assert!(matches!(item["annotations"], AttributeValue::M(_)));
    assert_eq!(item["entityType"], s("LEASE"));
}

/// `fromDynamoRecord` reads a hash key range only when both keys are non-empty, and a pending
/// sub-sequence number only with a non-empty `pendingCheckpoint`; we keep such orphans
/// verbatim.
#[test]
fn orphans_java_ignores_are_preserved() {
    let fixture = with(
        kcl_1x_lease(),
        &[
            ("startingHashKey", s("42")),
            ("pendingCheckpointSubSequenceNumber", n("9")),
        ],
    );
    let lease = Lease::from_item(&fixture).unwrap();
    assert_eq!(lease.hash_key_range, None);
    assert_eq!(lease.pending_checkpoint, None);
    assert_eq!(lease.extra_attributes.len(), 2);
    assert_same_item(&lease.to_item().unwrap(), &java_3_5(fixture));
}

/// `fromDynamoRecord` reads an empty `pendingCheckpoint` as none (`Strings.isNullOrEmpty`); we
/// do the same for owners, which Java never writes empty (`DynamoUtils.createAttributeValue`).
#[test]
fn empty_strings_read_as_absent() {
    let fixture = with(
        kcl_1x_lease(),
        &[("pendingCheckpoint", s("")), ("leaseOwner", s(""))],
    );
    let lease = Lease::from_item(&fixture).unwrap();
    assert_eq!(lease.pending_checkpoint, None);
    assert_eq!(lease.lease_owner, None);
}

/// `new ExtendedSequenceNumber(sequence, null)` has sub-sequence number 0, which is what
/// `fromDynamoRecord` builds when `checkpointSubSequenceNumber` is absent. (Java 3.5 fails on
/// an absent `ownerSwitchesSinceCheckpoint`; we read 0.)
#[test]
fn missing_optional_numbers_default_to_zero() {
    let fixture = without(
        java_minimal_record(),
        &[
            "checkpointSubSequenceNumber",
            "ownerSwitchesSinceCheckpoint",
        ],
    );
    let lease = Lease::from_item(&fixture).unwrap();
    assert_eq!(lease.checkpoint.sub_sequence_number, 0);
    assert_eq!(lease.owner_switches_since_checkpoint, 0);
}

fn err_of(mut base: Item, edit: impl FnOnce(&mut Item)) -> Error {
    edit(&mut base);
    Lease::from_item(&base).expect_err("should be rejected")
}

#[test]
fn errors_name_the_attribute_and_value() {
    // `DynamoDBLeaseRefresherTest.createAndPutBadLeaseEntryInTable`: an item with only
    // `leaseKey` = `badLeaseKey`, which Java fails to deserialize
    // (`listLeasesParallely_leaseWithFailingDeserialization_assertCorrectResponse`).
    let e = Lease::from_item(&item(&[("leaseKey", s("badLeaseKey"))])).unwrap_err();
    assert!(matches!(
        e,
        Error::MissingAttribute {
            attribute: "leaseCounter"
        }
    ));

    let base = split_child_mid_stream;

    let e = err_of(base(), |i| {
        i.remove("leaseKey");
    });
    assert!(matches!(
        e,
        Error::MissingAttribute {
            attribute: "leaseKey"
        }
    ));

    let e = err_of(base(), |i| {
        i.remove("checkpoint");
    });
    assert!(matches!(
        e,
        Error::MissingAttribute {
            attribute: "checkpoint"
        }
    ));

    let e = err_of(base(), |i| {
        i.remove("leaseCounter");
    });
    assert!(matches!(
        e,
        Error::MissingAttribute {
            attribute: "leaseCounter"
        }
    ));

    let e = err_of(base(), |i| {
        i.insert("leaseCounter".into(), s("12"));
    });
    match &e {
        Error::AttributeType {
            attribute,
            expected,
            found,
            value,
        } => {
            assert_eq!(
                (*attribute, *expected, *found, value.as_str()),
                ("leaseCounter", "N", "S", "12")
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("leaseCounter"));

    let e = err_of(base(), |i| {
        i.insert("leaseCounter".into(), n("-1"));
    });
    assert!(
        matches!(&e, Error::AttributeValue { attribute: "leaseCounter", value, .. } if value == "-1")
    );

    let e = err_of(base(), |i| {
        i.insert("checkpoint".into(), s("NOT_A_SEQUENCE"));
    });
    assert!(
        matches!(&e, Error::AttributeValue { attribute: "checkpoint", value, .. } if value == "NOT_A_SEQUENCE")
    );
    assert!(e.to_string().contains("NOT_A_SEQUENCE"));

    let e = err_of(base(), |i| {
        i.insert("pendingCheckpoint".into(), s("12x"));
    });
    assert!(matches!(
        &e,
        Error::AttributeValue {
            attribute: "pendingCheckpoint",
            ..
        }
    ));

    let e = err_of(base(), |i| {
        i.insert("parentShardId".into(), s("shardId-0"));
    });
    assert!(matches!(
        &e,
        Error::AttributeType {
            attribute: "parentShardId",
            expected: "SS",
            found: "S",
            ..
        }
    ));

    // What Java's own `toDynamoRecord` writes for `pendingCheckpointState` when it creates a
    // lease that has one: the checkpoint's sub-sequence number as an N (2.3 through 3.5.1).
    // Its reader (`DynamoUtils.safeGetByteArray`) cannot read that back either.
    let e = err_of(base(), |i| {
        i.insert("pendingCheckpointState".into(), n("2"));
    });
    assert!(matches!(
        &e,
        Error::AttributeType {
            attribute: "pendingCheckpointState",
            expected: "B",
            found: "N",
            ..
        }
    ));

    // `HashKeyRangeForLease.deserialize` refuses a start above the end.
    let e = err_of(base(), |i| {
        i.insert("endingHashKey".into(), s("1"));
        i.insert("startingHashKey".into(), s("2"));
    });
    assert!(matches!(
        &e,
        Error::AttributeValue {
            attribute: "endingHashKey",
            ..
        }
    ));

    let e = err_of(base(), |i| {
        i.insert("startingHashKey".into(), s("0x10"));
    });
    assert!(
        matches!(&e, Error::AttributeValue { attribute: "startingHashKey", value, .. } if value == "0x10")
    );

    let e = err_of(base(), |i| {
        i.insert("throughputKBps".into(), n("fast"));
    });
    assert!(matches!(
        &e,
        Error::AttributeValue {
            attribute: "throughputKBps",
            ..
        }
    ));

    let e = err_of(java_multi_stream_minimal_record(), |i| {
        i.insert("streamName".into(), s("test-stream"));
    });
    assert!(
        matches!(&e, Error::AttributeValue { attribute: "streamName", value, .. } if value == "test-stream")
    );

    let e = err_of(java_multi_stream_minimal_record(), |i| {
        i.remove("shardId");
    });
    assert!(matches!(
        e,
        Error::MissingAttribute {
            attribute: "shardId"
        }
    ));
}

/// `DynamoUtils.createAttributeValue` throws on an empty string or collection, so Java cannot
/// write these; neither do we.
#[test]
fn refuses_to_write_what_java_cannot_read() {
    let mut lease = Lease::new("shard-001", ExtendedSequenceNumber::LATEST);
    lease.lease_owner = Some(String::new());
    assert!(matches!(
        lease.to_item(),
        Err(Error::AttributeValue {
            attribute: "leaseOwner",
            ..
        })
    ));
    let mut lease = Lease::new("", ExtendedSequenceNumber::LATEST);
    assert!(matches!(
        lease.to_item(),
        Err(Error::AttributeValue {
            attribute: "leaseKey",
            ..
        })
    ));
    lease.lease_key = "shard-001".into();
    lease.throughput_kbps = Some(f64::NAN);
    assert!(matches!(
        lease.to_item(),
        Err(Error::AttributeValue {
            attribute: "throughputKBps",
            ..
        })
    ));
    lease.throughput_kbps = None;
    lease.child_shard_ids.insert(String::new());
    assert!(matches!(
        lease.to_item(),
        Err(Error::AttributeValue {
            attribute: "childShardIds",
            ..
        })
    ));
}

/// `main:common/StreamIdentifier.multiStreamInstance(String)`: the whole string must match
/// `<digits>:<no colon>:<digits>` and the epoch must be positive. The rejected strings are
/// those of `test:common/StreamIdentifierTest.testMultiStreamDeserializationFail`, plus a zero
/// epoch and an extra segment.
#[test]
fn stream_identifier_parsing_follows_java_pattern() {
    let id = StreamIdentifier::parse(SI_STREAM).unwrap();
    assert_eq!(id.to_string(), SI_STREAM);
    assert_eq!(
        id.lease_key("shardId-0"),
        "123456789012:stream-name:1680616058:shardId-0"
    );
    // Java does not require 12 digits (that check is commented out in its test).
    assert!(StreamIdentifier::parse("123456789:stream-name:123").is_ok());
    for bad in [
        ":stream-name:123",
        "123456789abc:stream-name:123",
        "123456789012::123",
        "123456789012:stream-name",
        "123456789012:stream-name:",
        "123456789012:stream-name:-123",
        "123456789012:stream-name:abc",
        "",
        "::",
        "123456789012:stream-name:0",
        "123456789012:stream-name:1:extra",
    ] {
        assert!(StreamIdentifier::parse(bad).is_err(), "{bad}");
    }
}
