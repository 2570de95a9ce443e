//! The conditional writes, checked against the Java `DynamoDBLeaseRefresher` /
//! `DynamoDBLeaseSerializer` (KCL 3.x) semantics and evaluated on in-memory items.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_kcl::lease::{
    Condition, ExtendedSequenceNumber, HashKeyRange, Lease, LeaseWrite, StreamIdentifier,
    UpdateAction,
};

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}
fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn owned(owner: &str, counter: u64) -> Lease {
    let mut lease = Lease::new(
        "shardId-000000000001",
        ExtendedSequenceNumber::parse("100", 0).unwrap(),
    );
    lease.lease_owner = Some(owner.into());
    lease.lease_counter = counter;
    lease
}

#[test]
fn renew_is_fenced_on_counter_and_absent_checkpoint_owner() {
    let lease = owned("a", 5);
    let w = lease.renew_write().unwrap();
    assert_eq!(
        w.conditions,
        [
            Condition::Equals {
                attribute: "leaseCounter",
                value: n(5)
            },
            Condition::NotExists {
                attribute: "checkpointOwner"
            },
        ]
    );
    assert_eq!(
        w.updates,
        [UpdateAction::Set {
            attribute: "leaseCounter",
            value: n(6)
        }]
    );
    let r = w.render();
    assert_eq!(
        r.condition_expression.as_deref(),
        Some("#a0 = :v0 AND attribute_not_exists(#a1)")
    );
    assert_eq!(r.update_expression, "SET #a0 = :v1");
    assert_eq!(r.expression_attribute_names["#a0"], "leaseCounter");
    assert_eq!(r.expression_attribute_names["#a1"], "checkpointOwner");
    assert_eq!(r.expression_attribute_values[":v0"], n(5));
    assert_eq!(r.expression_attribute_values[":v1"], n(6));
    assert_eq!(r.key["leaseKey"], s("shardId-000000000001"));

    // During a known hand-off the checkpointOwner condition is dropped. A throughput read
    // from the table (a Java 3.x owner measured it) is left as it is: this crate does not
    // measure it, and re-writing the old figure at every renewal would show a Java 3.x
    // leader's load balancing a stale load as current.
    let mut handoff = owned("next", 5);
    handoff.checkpoint_owner = Some("a".into());
    handoff.throughput_kbps = Some(12.5);
    let w = handoff.renew_write().unwrap();
    assert_eq!(w.conditions.len(), 1);
    assert_eq!(
        w.updates,
        [UpdateAction::Set {
            attribute: "leaseCounter",
            value: n(6)
        }]
    );
}

#[test]
fn take_sets_owner_bumps_counter_and_counts_switches() {
    // Unowned: no owner switch.
    let fresh = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
    let w = fresh.take_write("me").unwrap();
    assert_eq!(
        w.updates,
        [
            UpdateAction::Set {
                attribute: "leaseCounter",
                value: n(1)
            },
            UpdateAction::Set {
                attribute: "leaseOwner",
                value: s("me")
            },
            UpdateAction::Remove {
                attribute: "checkpointOwner"
            },
        ]
    );
    assert_eq!(
        w.render().update_expression,
        "SET #a0 = :v1, #a1 = :v2 REMOVE #a2"
    );

    // Stolen from another owner: ADD ownerSwitchesSinceCheckpoint 1.
    let w = owned("other", 9).take_write("me").unwrap();
    assert!(w.updates.contains(&UpdateAction::Add {
        attribute: "ownerSwitchesSinceCheckpoint",
        value: 1
    }));
    assert!(w.render().update_expression.ends_with("ADD #a3 :v3"));

    // Re-taking one's own expired lease: no switch.
    let w = owned("me", 9).take_write("me").unwrap();
    assert_eq!(w.updates.len(), 3);

    // Taking back a lease whose hand-off named us checkpoint owner: counts as a switch.
    let mut handoff = owned("next", 9);
    handoff.checkpoint_owner = Some("me".into());
    let w = handoff.take_write("me").unwrap();
    assert_eq!(w.updates.len(), 4);
}

#[test]
fn evict_is_fenced_on_owners_like_java() {
    let lease = owned("a", 3);
    let w = lease.evict_write().unwrap();
    assert_eq!(
        w.conditions,
        [
            Condition::Equals {
                attribute: "leaseOwner",
                value: s("a")
            },
            Condition::NotExists {
                attribute: "checkpointOwner"
            },
            Condition::Equals {
                attribute: "leaseKey",
                value: s("shardId-000000000001")
            },
        ]
    );
    assert_eq!(
        w.updates,
        [
            UpdateAction::Remove {
                attribute: "leaseOwner"
            },
            UpdateAction::Remove {
                attribute: "checkpointOwner"
            },
            UpdateAction::Add {
                attribute: "leaseCounter",
                value: 1
            },
        ]
    );
    // During a hand-off only checkpointOwner goes; the next owner keeps leaseOwner.
    let mut handoff = owned("next", 3);
    handoff.checkpoint_owner = Some("a".into());
    let w = handoff.evict_write().unwrap();
    assert!(!w.updates.contains(&UpdateAction::Remove {
        attribute: "leaseOwner"
    }));
}

#[test]
fn checkpoint_update_clears_pending_and_resets_switches() {
    let mut lease = owned("a", 41);
    lease.owner_switches_since_checkpoint = 3;
    lease.set_pending_checkpoint(
        ExtendedSequenceNumber::parse("150", 2).unwrap(),
        Some(b"st".to_vec()),
    );
    let prepared = lease.update_write().unwrap();
    assert!(prepared.updates.contains(&UpdateAction::Set {
        attribute: "pendingCheckpoint",
        value: s("150")
    }));
    assert!(prepared.updates.contains(&UpdateAction::Set {
        attribute: "pendingCheckpointState",
        value: AttributeValue::B(Blob::new(b"st".to_vec()))
    }));

    lease.set_checkpoint(ExtendedSequenceNumber::parse("150", 2).unwrap());
    let w = lease.update_write().unwrap();
    assert_eq!(w.conditions, lease.counter_expectation());
    for attribute in [
        "pendingCheckpoint",
        "pendingCheckpointSubSequenceNumber",
        "pendingCheckpointState",
    ] {
        assert!(w.updates.contains(&UpdateAction::Remove { attribute }));
    }
    assert!(w.updates.contains(&UpdateAction::Set {
        attribute: "ownerSwitchesSinceCheckpoint",
        value: n(0)
    }));
    assert!(w.updates.contains(&UpdateAction::Set {
        attribute: "checkpointSubSequenceNumber",
        value: n(2)
    }));
}

#[test]
fn shard_end_update_writes_children_and_multi_stream_identity() {
    let stream = StreamIdentifier::new("111122223333", "s", 1).unwrap();
    let mut lease = Lease::new_multi_stream(
        stream,
        "shardId-000000000000",
        ExtendedSequenceNumber::LATEST,
    );
    lease.lease_owner = Some("a".into());
    lease.hash_key_range = Some(HashKeyRange::new(0, 10).unwrap());
    lease.child_shard_ids.insert("shardId-000000000001".into());
    lease.set_checkpoint(ExtendedSequenceNumber::SHARD_END);
    let w = lease.update_write().unwrap();
    let sets: Vec<&str> = w
        .updates
        .iter()
        .filter_map(|u| match u {
            UpdateAction::Set { attribute, .. } => Some(*attribute),
            _ => None,
        })
        .collect();
    assert_eq!(
        sets,
        [
            "leaseCounter",
            "checkpoint",
            "checkpointSubSequenceNumber",
            "ownerSwitchesSinceCheckpoint",
            "childShardIds",
            "startingHashKey",
            "endingHashKey",
            "streamName",
            "shardId",
        ]
    );
}

/// A tiny in-memory table applying writes with DynamoDB's conditional semantics.
fn try_write(table: &mut kinesis_kcl::lease::Item, w: &LeaseWrite) -> bool {
    if !w.conditions_hold(Some(table)) {
        return false;
    }
    w.apply_to(table).unwrap();
    true
}

#[test]
fn writes_fence_each_other_on_an_item() {
    let stored = owned("a", 7);
    let mut table = stored.to_item().unwrap();

    // b read the lease at counter 7 and wants to steal it; a renews first.
    let b_take = stored.take_write("b").unwrap();
    assert!(try_write(&mut table, &stored.renew_write().unwrap()));
    assert!(!try_write(&mut table, &b_take), "stale take must fail");

    // b re-reads and takes.
    let current = Lease::from_item(&table).unwrap();
    assert_eq!(current.lease_counter, 8);
    assert!(try_write(&mut table, &current.take_write("b").unwrap()));
    let after = Lease::from_item(&table).unwrap();
    assert_eq!(after.lease_owner.as_deref(), Some("b"));
    assert_eq!(after.lease_counter, 9);
    assert_eq!(after.owner_switches_since_checkpoint, 1);
    assert_eq!(
        after,
        current.after(&current.take_write("b").unwrap()).unwrap()
    );

    // a's checkpoint, still fenced on counter 8, now fails.
    let mut a_view = current.clone();
    a_view.set_checkpoint(ExtendedSequenceNumber::parse("200", 0).unwrap());
    assert!(!try_write(&mut table, &a_view.update_write().unwrap()));

    // a's renewal fails too; its eviction (owner-fenced on "a") fails.
    assert!(!try_write(&mut table, &current.renew_write().unwrap()));
    assert!(!try_write(&mut table, &current.evict_write().unwrap()));

    // b evicts on shutdown: owner removed, counter bumped.
    assert!(try_write(&mut table, &after.evict_write().unwrap()));
    let released = Lease::from_item(&table).unwrap();
    assert_eq!(released.lease_owner, None);
    assert_eq!(released.lease_counter, 10);
}

#[test]
fn renew_fails_when_a_handoff_starts() {
    let stored = owned("a", 7);
    let mut table = stored.to_item().unwrap();
    // A KCL 3.x leader initiates a graceful hand-off (no counter change).
    table.insert("leaseOwner".into(), s("b"));
    table.insert("checkpointOwner".into(), s("a"));
    assert!(!try_write(&mut table, &stored.renew_write().unwrap()));
}

#[test]
fn create_condition_and_unknowns_survive_updates() {
    assert_eq!(
        kinesis_kcl::lease::CREATE_CONDITION_EXPRESSION,
        "attribute_not_exists(#k)"
    );
    let mut table = owned("a", 1).to_item().unwrap();
    table.insert("expiresAt".into(), n(99));
    let lease = Lease::from_item(&table).unwrap();
    assert!(try_write(&mut table, &lease.renew_write().unwrap()));
    assert!(try_write(
        &mut table,
        &lease
            .after(&lease.renew_write().unwrap())
            .unwrap()
            .take_write("z")
            .unwrap()
    ));
    assert_eq!(table["expiresAt"], n(99));
}
