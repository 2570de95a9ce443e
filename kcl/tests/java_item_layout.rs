//! Lease items shaped exactly as the Java KCL writes them, read and written by this crate.
//!
//! Every fixture is built attribute by attribute as the named Java serializer
//! (`DynamoDBLeaseSerializer.toDynamoRecord` / `getDynamoUpdateLeaseUpdate`, or the 1.x
//! `KinesisClientLeaseSerializer`) leaves the item in DynamoDB, including which attributes
//! are absent rather than empty.

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

const MAX_HASH: &str = "340282366920938463463374607431768211455";
const MID_HASH: &str = "170141183460469231731687303715884105727";
const MID_HASH_PLUS_1: &str = "170141183460469231731687303715884105728";

// KCL 2.3+ / 3.x `DynamoDBLeaseSerializer.toDynamoRecord` of a lease created by the
// `HierarchicalShardSyncer` for a root shard at TRIM_HORIZON: no `leaseOwner` (never an empty
// string), counter 0, sub-sequence 0, owner switches 0, no `parentShardId` (empty sets are
// omitted), and the shard's hash key range as decimal strings.
fn fresh_trim_horizon_2x() -> Item {
    item(&[
        ("leaseKey", s("shardId-000000000000")),
        ("leaseCounter", n("0")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("TRIM_HORIZON")),
        ("checkpointSubSequenceNumber", n("0")),
        ("startingHashKey", s("0")),
        ("endingHashKey", s(MAX_HASH)),
    ])
}

// KCL 1.x `KinesisClientLeaseSerializer.toDynamoRecord` (1.x leases never carry a hash range
// at creation) after a 1.x worker took the lease: owner set, counter bumped.
fn fresh_latest_1x_owned() -> Item {
    item(&[
        ("leaseKey", s("shardId-000000000007")),
        (
            "leaseOwner",
            s("host-1:4a1b2c3d-aaaa-bbbb-cccc-0123456789ab"),
        ),
        ("leaseCounter", n("3")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("LATEST")),
        ("checkpointSubSequenceNumber", n("0")),
    ])
}

// KCL 2.x/3.x mid-stream lease: `DynamoDBCheckpointer.setCheckpoint` on a KPL-aggregated
// record wrote digits + sub-sequence 7 through `updateLease` (resetting the owner-switch count
// to 0), then two takes by other workers each did `ADD ownerSwitchesSinceCheckpoint 1`. The
// shard is a child of a split: one parent in the `parentShardId` string set.
fn mid_stream_with_sub_sequence() -> Item {
    item(&[
        ("leaseKey", s("shardId-000000000004")),
        ("leaseOwner", s("worker-b")),
        ("leaseCounter", n("1234")),
        ("ownerSwitchesSinceCheckpoint", n("2")),
        (
            "checkpoint",
            s("49590338271490256608559692538361571095921575989136588898"),
        ),
        ("checkpointSubSequenceNumber", n("7")),
        ("parentShardId", ss(&["shardId-000000000001"])),
        ("startingHashKey", s("0")),
        ("endingHashKey", s(MID_HASH)),
    ])
}

// KCL 2.3+ shard end: `ShutdownTask` writes `childShardIds` (string set) with the
// `SHARD_END` checkpoint; this lease came from a merge (two parents) and was then split
// (two children).
fn shard_end_with_children() -> Item {
    item(&[
        ("leaseKey", s("shardId-000000000006")),
        ("leaseOwner", s("worker-a")),
        ("leaseCounter", n("88")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("SHARD_END")),
        ("checkpointSubSequenceNumber", n("0")),
        (
            "parentShardId",
            ss(&["shardId-000000000002", "shardId-000000000003"]),
        ),
        (
            "childShardIds",
            ss(&["shardId-000000000009", "shardId-000000000010"]),
        ),
        ("startingHashKey", s(MID_HASH_PLUS_1)),
        ("endingHashKey", s(MAX_HASH)),
    ])
}

// KCL 2.x/3.x `prepareCheckpoint(sequence, applicationState)` through `updateLease`
// (`getDynamoUpdateLeaseUpdate`): `pendingCheckpoint` (S) + `pendingCheckpointSubSequenceNumber`
// (N) + `pendingCheckpointState` (B) next to the last committed checkpoint. (1.8.1+ writes the
// first two; the binary state is a 2.x addition.)
fn pending_checkpoint_with_state() -> Item {
    item(&[
        ("leaseKey", s("shardId-000000000005")),
        ("leaseOwner", s("worker-c")),
        ("leaseCounter", n("57")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        (
            "checkpoint",
            s("49590338271490256608559692538361571095921575989136588000"),
        ),
        ("checkpointSubSequenceNumber", n("0")),
        (
            "pendingCheckpoint",
            s("49590338271490256608559692538361571095921575989136588999"),
        ),
        ("pendingCheckpointSubSequenceNumber", n("3")),
        ("pendingCheckpointState", b(b"\x00app-state\xff")),
    ])
}

// KCL 3.x lease in the middle of a graceful hand-off (`initiateGracefulLeaseHandoff`):
// `leaseOwner` already names the next owner, `checkpointOwner` the current one; the renewer
// reports `throughputKBps` (a Double, read back by DynamoDB in normalised decimal form).
// Plus attributes this crate does not model: a TTL someone added, a map and a bool — as a
// newer KCL or an operator might add; they must survive our writes.
fn handoff_with_unknown_attributes() -> Item {
    item(&[
        ("leaseKey", s("shardId-000000000002")),
        ("leaseOwner", s("worker-new")),
        ("checkpointOwner", s("worker-old")),
        ("leaseCounter", n("999")),
        ("ownerSwitchesSinceCheckpoint", n("1")),
        (
            "checkpoint",
            s("49590338271490256608559692538361571095921575989136588898"),
        ),
        ("checkpointSubSequenceNumber", n("0")),
        ("throughputKBps", n("123.456789")),
        ("expiresAt", n("1767225600")),
        (
            "annotations",
            AttributeValue::M(HashMap::from([("team".to_owned(), s("payments"))])),
        ),
        ("isPaused", AttributeValue::Bool(false)),
    ])
}

// KCL 2.3+ `DynamoDBMultiStreamLeaseSerializer`: key `<account>:<stream>:<epoch>:<shardId>`,
// the serialized stream identifier in `streamName` (historical name), the shard id in
// `shardId`; otherwise the single-stream layout. AT_TIMESTAMP initial position.
fn multi_stream_at_timestamp() -> Item {
    item(&[
        (
            "leaseKey",
            s("123456789012:orders:1700000000:shardId-000000000003"),
        ),
        ("leaseOwner", s("worker-a")),
        ("leaseCounter", n("12")),
        ("ownerSwitchesSinceCheckpoint", n("0")),
        ("checkpoint", s("AT_TIMESTAMP")),
        ("checkpointSubSequenceNumber", n("0")),
        ("startingHashKey", s("0")),
        ("endingHashKey", s(MAX_HASH)),
        ("streamName", s("123456789012:orders:1700000000")),
        ("shardId", s("shardId-000000000003")),
    ])
}

fn all_fixtures() -> Vec<(&'static str, Item)> {
    vec![
        ("fresh_trim_horizon_2x", fresh_trim_horizon_2x()),
        ("fresh_latest_1x_owned", fresh_latest_1x_owned()),
        (
            "mid_stream_with_sub_sequence",
            mid_stream_with_sub_sequence(),
        ),
        ("shard_end_with_children", shard_end_with_children()),
        (
            "pending_checkpoint_with_state",
            pending_checkpoint_with_state(),
        ),
        (
            "handoff_with_unknown_attributes",
            handoff_with_unknown_attributes(),
        ),
        ("multi_stream_at_timestamp", multi_stream_at_timestamp()),
    ]
}

#[test]
fn reads_fresh_trim_horizon_lease() {
    let lease = Lease::from_item(&fresh_trim_horizon_2x()).unwrap();
    assert_eq!(lease.lease_key, "shardId-000000000000");
    assert_eq!(lease.shard_id(), "shardId-000000000000");
    assert_eq!(lease.lease_owner, None);
    assert_eq!(lease.actual_owner(), None);
    assert_eq!(lease.lease_counter, 0);
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
    assert_eq!(lease.pending_checkpoint, None);
    assert_eq!(lease.owner_switches_since_checkpoint, 0);
    assert!(lease.parent_shard_ids.is_empty());
    assert!(lease.child_shard_ids.is_empty());
    assert_eq!(
        lease.hash_key_range,
        Some(HashKeyRange::new(0, u128::MAX).unwrap())
    );
    assert_eq!(lease.multi_stream, None);
    assert!(lease.extra_attributes.is_empty());
    // Equal to a lease built the way the shard syncer would build it.
    let mut expected = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
    expected.hash_key_range = Some(HashKeyRange::new(0, u128::MAX).unwrap());
    assert_eq!(lease, expected);
}

#[test]
fn reads_1x_lease() {
    let lease = Lease::from_item(&fresh_latest_1x_owned()).unwrap();
    assert_eq!(
        lease.lease_owner.as_deref(),
        Some("host-1:4a1b2c3d-aaaa-bbbb-cccc-0123456789ab")
    );
    assert_eq!(lease.lease_counter, 3);
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::LATEST);
    assert_eq!(lease.hash_key_range, None);
}

#[test]
fn reads_mid_stream_lease_with_sub_sequence() {
    let lease = Lease::from_item(&mid_stream_with_sub_sequence()).unwrap();
    assert_eq!(lease.lease_owner.as_deref(), Some("worker-b"));
    assert_eq!(lease.lease_counter, 1234);
    assert_eq!(
        lease.checkpoint,
        ExtendedSequenceNumber::parse(
            "49590338271490256608559692538361571095921575989136588898",
            7
        )
        .unwrap()
    );
    assert_eq!(lease.owner_switches_since_checkpoint, 2);
    assert_eq!(lease.parent_shard_ids, set(&["shardId-000000000001"]));
    assert_eq!(lease.hash_key_range.unwrap().end(), u128::MAX / 2);
    assert!(!lease.is_shard_end());
}

#[test]
fn reads_shard_end_lease_with_children() {
    let lease = Lease::from_item(&shard_end_with_children()).unwrap();
    assert!(lease.is_shard_end());
    assert_eq!(lease.checkpoint.position, SequencePosition::ShardEnd);
    assert_eq!(
        lease.parent_shard_ids,
        set(&["shardId-000000000002", "shardId-000000000003"])
    );
    assert_eq!(
        lease.child_shard_ids,
        set(&["shardId-000000000009", "shardId-000000000010"])
    );
    assert_eq!(lease.hash_key_range.unwrap().start(), u128::MAX / 2 + 1);
}

#[test]
fn reads_pending_checkpoint_and_state() {
    let lease = Lease::from_item(&pending_checkpoint_with_state()).unwrap();
    assert_eq!(
        lease.pending_checkpoint,
        Some(
            ExtendedSequenceNumber::parse(
                "49590338271490256608559692538361571095921575989136588999",
                3
            )
            .unwrap()
        )
    );
    assert_eq!(
        lease.pending_checkpoint_state.as_deref(),
        Some(&b"\x00app-state\xff"[..])
    );
    assert!(lease.pending_checkpoint > Some(lease.checkpoint.clone()));
}

#[test]
fn reads_handoff_and_keeps_unknown_attributes() {
    let lease = Lease::from_item(&handoff_with_unknown_attributes()).unwrap();
    assert_eq!(lease.lease_owner.as_deref(), Some("worker-new"));
    assert_eq!(lease.checkpoint_owner.as_deref(), Some("worker-old"));
    assert_eq!(lease.actual_owner(), Some("worker-old"));
    assert_eq!(lease.throughput_kbps, Some(123.456789));
    let extra: Vec<&str> = lease.extra_attributes.keys().map(String::as_str).collect();
    assert_eq!(extra, ["annotations", "expiresAt", "isPaused"]);
    assert_eq!(lease.extra_attributes["expiresAt"], n("1767225600"));
}

#[test]
fn reads_multi_stream_lease() {
    let lease = Lease::from_item(&multi_stream_at_timestamp()).unwrap();
    let ms = lease.multi_stream.as_ref().unwrap();
    assert_eq!(ms.stream.account_id(), "123456789012");
    assert_eq!(ms.stream.stream_name(), "orders");
    assert_eq!(ms.stream.creation_epoch(), 1_700_000_000);
    assert_eq!(ms.shard_id, "shardId-000000000003");
    assert_eq!(lease.shard_id(), "shardId-000000000003");
    assert_eq!(ms.lease_key(), lease.lease_key);
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::AT_TIMESTAMP);
    assert!(lease.extra_attributes.is_empty());
}

#[test]
fn every_fixture_round_trips_exactly() {
    for (name, fixture) in all_fixtures() {
        let lease = Lease::from_item(&fixture).unwrap_or_else(|e| panic!("{name}: {e}"));
        let written = lease.to_item().unwrap();
        assert_same_item(&written, &fixture);
        assert_eq!(Lease::from_item(&written).unwrap(), lease, "{name}");
    }
}

#[test]
fn writes_what_the_java_serializer_writes() {
    // Built in Rust, compared with the item Java's toDynamoRecord produces for the same lease.
    let mut lease = Lease::new("shardId-000000000006", ExtendedSequenceNumber::SHARD_END);
    lease.lease_owner = Some("worker-a".into());
    lease.lease_counter = 88;
    lease.parent_shard_ids = set(&["shardId-000000000002", "shardId-000000000003"]);
    lease.child_shard_ids = set(&["shardId-000000000009", "shardId-000000000010"]);
    lease.hash_key_range = Some(HashKeyRange::new(u128::MAX / 2 + 1, u128::MAX).unwrap());
    assert_same_item(&lease.to_item().unwrap(), &shard_end_with_children());

    let stream = StreamIdentifier::new("123456789012", "orders", 1_700_000_000).unwrap();
    let mut ms = Lease::new_multi_stream(
        stream,
        "shardId-000000000003",
        ExtendedSequenceNumber::AT_TIMESTAMP,
    );
    ms.lease_owner = Some("worker-a".into());
    ms.lease_counter = 12;
    ms.hash_key_range = Some(HashKeyRange::new(0, u128::MAX).unwrap());
    assert_same_item(&ms.to_item().unwrap(), &multi_stream_at_timestamp());
}

#[test]
fn omits_rather_than_empties() {
    let lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::LATEST);
    let item = lease.to_item().unwrap();
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "checkpoint",
            "checkpointSubSequenceNumber",
            "leaseCounter",
            "leaseKey",
            "ownerSwitchesSinceCheckpoint"
        ]
    );
}

#[test]
fn typed_fields_and_unknowns_both_survive_edits() {
    let mut lease = Lease::from_item(&handoff_with_unknown_attributes()).unwrap();
    lease.set_checkpoint(ExtendedSequenceNumber::parse("5", 1).unwrap());
    let item = lease.to_item().unwrap();
    assert_eq!(item["checkpoint"], s("5"));
    assert_eq!(item["checkpointSubSequenceNumber"], n("1"));
    assert_eq!(item["expiresAt"], n("1767225600"));
    assert_eq!(item["isPaused"], AttributeValue::Bool(false));
    assert!(matches!(item["annotations"], AttributeValue::M(_)));
}

#[test]
fn orphans_java_ignores_are_preserved() {
    // Java reads a hash key range only when both keys are present, and a pending
    // sub-sequence only with a pending checkpoint; we keep such orphans verbatim.
    let mut fixture = fresh_latest_1x_owned();
    fixture.insert("startingHashKey".into(), s("42"));
    fixture.insert("pendingCheckpointSubSequenceNumber".into(), n("9"));
    let lease = Lease::from_item(&fixture).unwrap();
    assert_eq!(lease.hash_key_range, None);
    assert_eq!(lease.pending_checkpoint, None);
    assert_eq!(lease.extra_attributes.len(), 2);
    assert_same_item(&lease.to_item().unwrap(), &fixture);
}

/// Java reads an empty `pendingCheckpoint` as none (`Strings.isNullOrEmpty`); we do the same
/// for owners, which Java never writes empty.
#[test]
fn empty_strings_read_as_absent() {
    let mut fixture = fresh_latest_1x_owned();
    fixture.insert("pendingCheckpoint".into(), s(""));
    fixture.insert("leaseOwner".into(), s(""));
    let lease = Lease::from_item(&fixture).unwrap();
    assert_eq!(lease.pending_checkpoint, None);
    assert_eq!(lease.lease_owner, None);
}

#[test]
fn missing_optional_numbers_default_to_zero() {
    let fixture = item(&[
        ("leaseKey", s("shardId-000000000000")),
        ("leaseCounter", n("1")),
        ("checkpoint", s("TRIM_HORIZON")),
    ]);
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
    let base = mid_stream_with_sub_sequence;

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
        i.insert("parentShardId".into(), s("shardId-000000000001"));
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

    // What Java's own toDynamoRecord writes for pendingCheckpointState (an N, a Java bug that
    // its reader cannot read either).
    let e = err_of(base(), |i| {
        i.insert("pendingCheckpointState".into(), n("0"));
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

    let e = err_of(multi_stream_at_timestamp(), |i| {
        i.insert("streamName".into(), s("orders"));
    });
    assert!(
        matches!(&e, Error::AttributeValue { attribute: "streamName", value, .. } if value == "orders")
    );

    let e = err_of(multi_stream_at_timestamp(), |i| {
        i.remove("shardId");
    });
    assert!(matches!(
        e,
        Error::MissingAttribute {
            attribute: "shardId"
        }
    ));
}

#[test]
fn refuses_to_write_what_java_cannot_read() {
    let mut lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::LATEST);
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
    lease.lease_key = "k".into();
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

#[test]
fn stream_identifier_parsing_follows_java_pattern() {
    let id = StreamIdentifier::parse("123456789012:my-stream:1700000000").unwrap();
    assert_eq!(id.to_string(), "123456789012:my-stream:1700000000");
    assert_eq!(
        id.lease_key("shardId-000000000001"),
        "123456789012:my-stream:1700000000:shardId-000000000001"
    );
    for bad in [
        "my-stream",
        "123:my-stream",
        "abc:my-stream:1",
        "123::1",
        "123:s:0",
        "123:s:1:extra",
        "123:s:-1",
    ] {
        assert!(StreamIdentifier::parse(bad).is_err(), "{bad}");
    }
}
