//! Shard discovery, lease creation along the lineage, and lease clean-up against real Kinesis
//! and DynamoDB wire-protocol servers (the test bed: ferrokinesis and dynoxide in-process by
//! default).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::config::interceptors::FinalizerInterceptorContextMut;
use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_kinesis::error::{ErrorMetadata, ProvideErrorMetadata};
use aws_sdk_kinesis::operation::list_shards::ListShardsError;
use aws_smithy_runtime_api::client::interceptors::context::Error as ErasedError;
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;

use kinesis_integration::TestBed;
use kinesis_kcl::Error;
use kinesis_kcl::lease::{
    ExtendedSequenceNumber, Lease, LeaseTable, RetryPolicy, StreamIdentifier, TableOptions,
    WriteOutcome,
};
use kinesis_kcl::shard::{
    ChildLeases, ChildShard, CleanupReason, InitialPosition, LeaseLineage, ShardInfo, ShardSyncer,
};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every test body runs under this bound, so a hang fails instead of blocking the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn bounded(body: impl Future<Output = TestResult>) -> TestResult {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .map_err(|_| format!("test did not finish within {TEST_TIMEOUT:?}"))?
}

/// A bed, a stream with `shards` shards, and a fresh lease table.
async fn setup(shards: u32) -> Result<(TestBed, String, LeaseTable), BoxError> {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(shards).await?;
    let table = fresh_table(&bed).await?;
    Ok((bed, stream, table))
}

async fn fresh_table(bed: &TestBed) -> Result<LeaseTable, BoxError> {
    let table = LeaseTable::new(bed.dynamodb().clone(), bed.unique_table_name());
    table
        .ensure_table(&TableOptions::default().poll_interval(Duration::from_millis(20)))
        .await?;
    Ok(table)
}

fn syncer(
    bed: &TestBed,
    table: &LeaseTable,
    stream: &str,
    position: InitialPosition,
) -> ShardSyncer {
    ShardSyncer::new(bed.kinesis().clone(), table.clone(), stream, position)
        .with_listing_retries(3, Duration::from_millis(50))
}

fn shard_id(n: u32) -> String {
    format!("shardId-{n:012}")
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

fn sequence(n: u64) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::parse(
        &format!("4959033827149025660855969253836157109592157598913658{n:04}"),
        0,
    )
    .unwrap()
}

async fn leases_by_key(table: &LeaseTable) -> Result<BTreeMap<String, Lease>, BoxError> {
    Ok(table
        .list_leases()
        .await?
        .into_iter()
        .map(|l| (l.lease_key.clone(), l))
        .collect())
}

/// Splits `parent` in the middle of its hash range; returns the two children's ids.
async fn split(
    bed: &TestBed,
    sync: &ShardSyncer,
    stream: &str,
    parent: &str,
) -> Result<Vec<String>, BoxError> {
    let shards = sync.list_shards().await?;
    let range = shards
        .iter()
        .find(|s| s.shard_id == parent)
        .ok_or("no such shard")?
        .hash_key_range;
    let middle = range.start() / 2 + range.end() / 2;
    bed.kinesis()
        .split_shard()
        .stream_name(stream)
        .shard_to_split(parent)
        .new_starting_hash_key(middle.to_string())
        .send()
        .await?;
    bed.wait_for_stream_active(stream).await?;
    children_of(sync, parent).await
}

/// Merges two adjacent shards; returns the child's id.
async fn merge(
    bed: &TestBed,
    sync: &ShardSyncer,
    stream: &str,
    a: &str,
    b: &str,
) -> Result<String, BoxError> {
    bed.kinesis()
        .merge_shards()
        .stream_name(stream)
        .shard_to_merge(a)
        .adjacent_shard_to_merge(b)
        .send()
        .await?;
    bed.wait_for_stream_active(stream).await?;
    let children = children_of(sync, a).await?;
    assert_eq!(children.len(), 1, "a merge has one child");
    Ok(children[0].clone())
}

async fn children_of(sync: &ShardSyncer, parent: &str) -> Result<Vec<String>, BoxError> {
    Ok(sync
        .list_shards()
        .await?
        .into_iter()
        .filter(|s| s.parent_shard_ids().any(|p| p == parent))
        .map(|s| s.shard_id)
        .collect())
}

/// The `ChildShards` a `GetRecords` at the end of `parent` would report, built from a listing.
fn child_shards(shards: &[ShardInfo], parent: &str) -> Vec<ChildShard> {
    shards
        .iter()
        .filter(|s| s.parent_shard_ids().any(|p| p == parent))
        .map(|s| ChildShard {
            shard_id: s.shard_id.clone(),
            parent_shard_ids: s.parent_shard_ids().map(str::to_owned).collect(),
            hash_key_range: Some(s.hash_key_range),
        })
        .collect()
}

/// Moves the lease's checkpoint forward to `checkpoint`, from its current copy.
async fn checkpoint(
    table: &LeaseTable,
    key: &str,
    checkpoint: ExtendedSequenceNumber,
) -> TestResult {
    let lease = table.get_lease(key).await?.ok_or("no such lease")?;
    match table.update_checkpoint(&lease, checkpoint).await? {
        WriteOutcome::Applied(_) => Ok(()),
        other => Err(format!("checkpoint of {key} not applied: {other:?}").into()),
    }
}

#[tokio::test]
async fn a_new_stream_gets_one_lease_per_shard() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(4).await?;
        let sync = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon);
        let report = sync.sync().await?;
        assert!(report.bootstrap);
        assert_eq!(report.shards_seen, 4);
        assert_eq!(report.created, (0..4).map(shard_id).collect::<Vec<_>>());

        let shards = sync.list_shards().await?;
        let leases = leases_by_key(&table).await?;
        assert_eq!(leases.len(), 4);
        for shard in &shards {
            let lease = &leases[&shard.shard_id];
            assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
            assert!(lease.parent_shard_ids.is_empty());
            assert_eq!(lease.hash_key_range, Some(shard.hash_key_range));
            assert_eq!(lease.lease_owner, None);
            assert_eq!(lease.multi_stream, None);
        }

        let again = sync.sync().await?;
        assert!(!again.bootstrap);
        assert!(again.created.is_empty() && again.already_present.is_empty());
        assert_eq!(table.list_leases().await?.len(), 4);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_split_leases_the_children_once_the_parent_ends() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(4).await?;
        let sync = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon);
        sync.sync().await?;
        let parent = shard_id(0);
        let children = split(&bed, &sync, &stream, &parent).await?;
        assert_eq!(children.len(), 2);

        // The parent is still being read: its children get no lease yet (as the Java KCL).
        let report = sync.sync().await?;
        assert!(report.created.is_empty(), "{report:?}");

        checkpoint(&table, &parent, ExtendedSequenceNumber::SHARD_END).await?;
        let report = sync.sync().await?;
        assert_eq!(set(&report.created), set(&children));

        let shards = sync.list_shards().await?;
        let leases = leases_by_key(&table).await?;
        assert_eq!(leases.len(), 6);
        let scan: Vec<Lease> = leases.values().cloned().collect();
        let lineage = LeaseLineage::new(&scan);
        for child in &children {
            let lease = &leases[child];
            assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
            assert_eq!(lease.parent_shard_ids, BTreeSet::from([parent.clone()]));
            let listed = shards.iter().find(|s| &s.shard_id == child).unwrap();
            assert_eq!(lease.hash_key_range, Some(listed.hash_key_range));
            assert!(lineage.may_process(lease), "the parent is at SHARD_END");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn child_leases_from_the_shard_end_report() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(2).await?;
        let sync = syncer(&bed, &table, &stream, InitialPosition::Latest);
        sync.sync().await?;
        let parent_id = shard_id(1);
        let children = split(&bed, &sync, &stream, &parent_id).await?;
        let reported = child_shards(&sync.list_shards().await?, &parent_id);
        let parent = table
            .get_lease(&parent_id)
            .await?
            .ok_or("no parent lease")?;

        let ChildLeases::Created {
            created,
            already_present,
        } = sync.create_child_leases(&parent, &reported).await?
        else {
            panic!("a split is never deferred");
        };
        assert_eq!(set(&created), set(&children));
        assert!(already_present.is_empty());
        let leases = leases_by_key(&table).await?;
        for child in &children {
            assert_eq!(
                leases[child].checkpoint,
                ExtendedSequenceNumber::TRIM_HORIZON
            );
            assert_eq!(
                leases[child].parent_shard_ids,
                BTreeSet::from([parent_id.clone()])
            );
        }
        // The children wait for the parent, then may go.
        let scan: Vec<Lease> = leases.values().cloned().collect();
        assert!(!LeaseLineage::new(&scan).may_process(&leases[&children[0]]));
        assert_eq!(sync.blocking_parents(&leases[&children[0]]).await?.len(), 1);
        checkpoint(&table, &parent_id, ExtendedSequenceNumber::SHARD_END).await?;
        assert!(
            sync.blocking_parents(&leases[&children[0]])
                .await?
                .is_empty()
        );

        // Reported again (a retried shutdown, or another worker): nothing new.
        let again = sync.create_child_leases(&parent, &reported).await?;
        assert_eq!(
            again,
            ChildLeases::Created {
                created: vec![],
                already_present: reported.iter().map(|c| c.shard_id.clone()).collect()
            }
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_merge_leases_the_child_with_both_parents() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(4).await?;
        let sync = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon);
        sync.sync().await?;
        let (a, b) = (shard_id(1), shard_id(2));
        let child = merge(&bed, &sync, &stream, &a, &b).await?;

        assert!(sync.sync().await?.created.is_empty());
        checkpoint(&table, &a, ExtendedSequenceNumber::SHARD_END).await?;
        let report = sync.sync().await?;
        assert_eq!(report.created, std::slice::from_ref(&child));

        let lease = table.get_lease(&child).await?.ok_or("no child lease")?;
        assert_eq!(
            lease.parent_shard_ids,
            BTreeSet::from([a.clone(), b.clone()])
        );
        assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TRIM_HORIZON);
        // Blocked by the parent still being read, free once it ends too.
        let blocking: Vec<String> = sync
            .blocking_parents(&lease)
            .await?
            .into_iter()
            .map(|l| l.lease_key)
            .collect();
        assert_eq!(blocking, std::slice::from_ref(&b));
        checkpoint(&table, &b, ExtendedSequenceNumber::SHARD_END).await?;
        assert!(sync.blocking_parents(&lease).await?.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_merge_child_waits_for_the_other_parents_lease() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(2).await?;
        let sync = syncer(&bed, &table, &stream, InitialPosition::Latest);
        sync.sync().await?;
        let (a, b) = (shard_id(0), shard_id(1));
        let child = merge(&bed, &sync, &stream, &a, &b).await?;
        let reported = child_shards(&sync.list_shards().await?, &a);
        let parent = table.get_lease(&a).await?.ok_or("no lease")?;

        table.delete_lease(&b).await?;
        let outcome = sync.create_child_leases(&parent, &reported).await?;
        assert_eq!(
            outcome,
            ChildLeases::Deferred {
                child_shard_id: child.clone(),
                missing_parent_lease_key: b.clone()
            }
        );
        assert!(table.get_lease(&child).await?.is_none());

        // The periodic sync restores the other parent's lease (at the initial position, as
        // the Java KCL does for the other parent of a merge); then the child is created.
        let report = sync.sync().await?;
        assert_eq!(report.created, std::slice::from_ref(&b));
        assert_eq!(
            table.get_lease(&b).await?.map(|l| l.checkpoint),
            Some(ExtendedSequenceNumber::LATEST)
        );
        let outcome = sync.create_child_leases(&parent, &reported).await?;
        assert_eq!(
            outcome,
            ChildLeases::Created {
                created: vec![child.clone()],
                already_present: vec![]
            }
        );
        Ok(())
    })
    .await
}

/// A 2-shard stream whose shard 0 was split: shard 0 closed, shards 1, 2 and 3 open.
async fn stream_with_a_closed_shard() -> Result<(TestBed, String, Vec<String>), BoxError> {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(2).await?;
    let table = fresh_table(&bed).await?;
    let lister = syncer(&bed, &table, &stream, InitialPosition::Latest);
    let children = split(&bed, &lister, &stream, &shard_id(0)).await?;
    Ok((bed, stream, children))
}

#[tokio::test]
async fn initial_positions_on_a_stream_with_closed_shards() -> TestResult {
    bounded(async {
        let (bed, stream, children) = stream_with_a_closed_shard().await?;
        let timestamp = SystemTime::now() - Duration::from_secs(3600);
        let cases = [
            // The oldest shards: the closed parent and the untouched shard.
            (
                InitialPosition::TrimHorizon,
                vec![shard_id(0), shard_id(1)],
                ExtendedSequenceNumber::TRIM_HORIZON,
            ),
            (
                InitialPosition::AtTimestamp(timestamp),
                vec![shard_id(0), shard_id(1)],
                ExtendedSequenceNumber::AT_TIMESTAMP,
            ),
            // Only the open shards.
            (
                InitialPosition::Latest,
                vec![shard_id(1), children[0].clone(), children[1].clone()],
                ExtendedSequenceNumber::LATEST,
            ),
        ];
        for (position, expected, start) in cases {
            let table = fresh_table(&bed).await?;
            let sync = syncer(&bed, &table, &stream, position);
            let report = sync.sync().await?;
            assert!(report.bootstrap);
            assert_eq!(set(&report.created), set(&expected), "{position:?}");
            let leases = table.list_leases().await?;
            assert!(
                leases.iter().all(|l| l.checkpoint == start),
                "{position:?}: {leases:?}"
            );
            // The non-empty rules agree: nothing more to create.
            assert!(sync.sync().await?.created.is_empty(), "{position:?}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_stream_new_to_a_busy_table_follows_the_non_empty_rules() -> TestResult {
    bounded(async {
        let (bed, stream, children) = stream_with_a_closed_shard().await?;
        let other = bed.create_stream(1).await?;
        let epoch = 1_700_000_000;
        let this_id = StreamIdentifier::new("123456789012", stream.clone(), epoch)?;
        let other_id = StreamIdentifier::new("123456789012", other.clone(), epoch)?;
        let table = fresh_table(&bed).await?;

        let other_sync = syncer(&bed, &table, &other, InitialPosition::Latest)
            .with_stream_identifier(other_id.clone());
        assert_eq!(
            other_sync.sync().await?.created,
            [other_id.lease_key(&shard_id(0))]
        );

        // TRIM_HORIZON: the oldest shards, keyed for this stream.
        let sync = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon)
            .with_stream_identifier(this_id.clone());
        let report = sync.sync().await?;
        assert!(
            report.bootstrap,
            "the other stream's leases are not this stream's"
        );
        assert_eq!(
            set(&report.created),
            set(&[
                this_id.lease_key(&shard_id(0)),
                this_id.lease_key(&shard_id(1))
            ])
        );
        let leases = sync.stream_leases().await?;
        assert_eq!(leases.len(), 2);
        for lease in &leases {
            let ms = lease
                .multi_stream
                .as_ref()
                .ok_or("not a multi-stream lease")?;
            assert_eq!(ms.stream, this_id);
            assert_eq!(lease.lease_key, this_id.lease_key(&ms.shard_id));
        }

        // The closed parent ends: its children get leases keyed for this stream.
        checkpoint(
            &table,
            &this_id.lease_key(&shard_id(0)),
            ExtendedSequenceNumber::SHARD_END,
        )
        .await?;
        let report = sync.sync().await?;
        assert!(!report.bootstrap);
        assert_eq!(
            set(&report.created),
            set(&children
                .iter()
                .map(|c| this_id.lease_key(c))
                .collect::<Vec<_>>())
        );
        let leases = sync.stream_leases().await?;
        let child = leases
            .iter()
            .find(|l| l.shard_id() == children[0])
            .ok_or("no child")?;
        assert_eq!(child.parent_shard_ids, BTreeSet::from([shard_id(0)]));
        assert!(LeaseLineage::new(&leases).may_process(child));

        // The other stream's leases are untouched, and a single-stream syncer sees none.
        assert_eq!(other_sync.stream_leases().await?.len(), 1);
        let single = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon);
        assert!(single.stream_leases().await?.is_empty());
        assert_eq!(table.list_leases().await?.len(), 5);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn racing_syncers_create_each_lease_once() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(8).await?;
        let one = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon);
        let two = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon).with_page_size(3);
        let (a, b) = tokio::join!(one.sync(), two.sync());
        let (a, b) = (a?, b?);
        let mut created = a.created.clone();
        created.extend(b.created.clone());
        assert_eq!(
            created.len(),
            8,
            "each lease created exactly once: {a:?} {b:?}"
        );
        assert_eq!(set(&created), (0..8).map(shard_id).collect());
        assert_eq!(a.created.len() + a.already_present.len(), 8);
        assert_eq!(b.created.len() + b.already_present.len(), 8);
        assert_eq!(table.list_leases().await?.len(), 8);

        // Racing at a shard's end too.
        let parent_id = shard_id(3);
        let children = split(&bed, &one, &stream, &parent_id).await?;
        checkpoint(&table, &parent_id, ExtendedSequenceNumber::SHARD_END).await?;
        let parent = table.get_lease(&parent_id).await?.ok_or("no lease")?;
        let reported = child_shards(&one.list_shards().await?, &parent_id);
        let (x, y, z) = tokio::join!(
            one.create_child_leases(&parent, &reported),
            two.sync(),
            two.create_child_leases(&parent, &reported)
        );
        let mut created = Vec::new();
        for outcome in [x?, z?] {
            let ChildLeases::Created { created: c, .. } = outcome else {
                panic!("not deferred")
            };
            created.extend(c);
        }
        created.extend(y?.created);
        assert_eq!(created.len(), 2, "{created:?}");
        assert_eq!(set(&created), set(&children));
        assert_eq!(table.list_leases().await?.len(), 10);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn listing_follows_every_page() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(7).await?;
        let whole = syncer(&bed, &table, &stream, InitialPosition::Latest);
        let children = split(&bed, &whole, &stream, &shard_id(2)).await?;
        let all = whole.list_shards().await?;
        assert_eq!(all.len(), 9);

        for page in [1, 2, 4, 9, 100] {
            let paged = syncer(&bed, &table, &stream, InitialPosition::Latest).with_page_size(page);
            assert_eq!(paged.list_shards().await?, all, "page size {page}");
        }
        let ids: Vec<String> = all.iter().map(|s| s.shard_id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        assert!(
            all.iter()
                .filter(|s| !s.is_open())
                .map(|s| &s.shard_id)
                .eq([&shard_id(2)])
        );

        let paged = syncer(&bed, &table, &stream, InitialPosition::Latest).with_page_size(2);
        let report = paged.sync().await?;
        assert_eq!(report.created.len(), 8);
        assert!(children.iter().all(|c| report.created.contains(c)));
        assert!(!report.created.contains(&shard_id(2)));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn clean_up_deletes_only_finished_parents_whose_children_started() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(2).await?;
        let sync = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon);
        sync.sync().await?;
        let parent = shard_id(0);
        let children = split(&bed, &sync, &stream, &parent).await?;

        // Nothing finished: nothing to do (and no listing needed).
        assert!(sync.clean_up().await?.deleted.is_empty());

        checkpoint(&table, &parent, ExtendedSequenceNumber::SHARD_END).await?;
        sync.sync().await?; // the children's leases
        assert!(
            sync.clean_up().await?.deleted.is_empty(),
            "children not started"
        );

        checkpoint(&table, &children[0], sequence(1)).await?;
        assert!(
            sync.clean_up().await?.deleted.is_empty(),
            "one child not started"
        );

        checkpoint(&table, &children[1], sequence(2)).await?;
        let report = sync.clean_up().await?;
        assert_eq!(report.deleted.len(), 1);
        assert_eq!(report.deleted[0].lease_key, parent);
        assert_eq!(report.deleted[0].reason, CleanupReason::Completed);
        let left: BTreeSet<String> = leases_by_key(&table).await?.into_keys().collect();
        assert_eq!(
            left,
            set(&[shard_id(1), children[0].clone(), children[1].clone()])
        );

        // With the parent gone, the children are free; a second pass deletes nothing.
        let scan = table.list_leases().await?;
        assert!(scan.iter().all(|l| LeaseLineage::new(&scan).may_process(l)));
        assert!(sync.clean_up().await?.deleted.is_empty());
        // Nor does a sync bring the parent back.
        assert!(sync.sync().await?.created.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn clean_up_deletes_finished_leases_of_shards_gone_from_the_stream() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(1).await?;
        let sync = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon);
        sync.sync().await?;
        // Leases of shards the stream no longer lists (trimmed after their retention).
        let gone_done = Lease::new(shard_id(40), ExtendedSequenceNumber::SHARD_END);
        let gone_unfinished = Lease::new(shard_id(41), sequence(7));
        assert!(table.create_lease_if_absent(&gone_done).await?);
        assert!(table.create_lease_if_absent(&gone_unfinished).await?);

        let report = sync.clean_up().await?;
        assert_eq!(report.shards_seen, 1);
        assert_eq!(report.deleted.len(), 1);
        assert_eq!(report.deleted[0].lease_key, shard_id(40));
        assert_eq!(report.deleted[0].reason, CleanupReason::Trimmed);
        let left: BTreeSet<String> = leases_by_key(&table).await?.into_keys().collect();
        assert_eq!(left, set(&[shard_id(0), shard_id(41)]));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_missing_stream_is_a_kinesis_error() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let table = fresh_table(&bed).await?;
        let sync = syncer(&bed, &table, "no-such-stream", InitialPosition::Latest);
        let error = sync.sync().await.expect_err("the stream does not exist");
        match error {
            Error::Kinesis {
                operation,
                stream,
                source,
            } => {
                assert_eq!(operation, "ListShards");
                assert_eq!(stream, "no-such-stream");
                assert!(
                    matches!(
                        *source,
                        aws_sdk_kinesis::Error::ResourceNotFoundException(_)
                    ),
                    "{source:?}"
                );
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(table.list_leases().await?.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_stream_given_by_arn() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(3).await?;
        let arn = bed.stream_arn(&stream).await?;
        let by_arn = syncer(&bed, &table, &arn, InitialPosition::TrimHorizon).with_page_size(1);
        assert_eq!(by_arn.target().stream_name(), Some(stream.as_str()));
        let by_name = syncer(&bed, &table, &stream, InitialPosition::TrimHorizon);
        assert_eq!(by_arn.list_shards().await?, by_name.list_shards().await?);
        let report = by_arn.sync().await?;
        assert_eq!(report.created, (0..3).map(shard_id).collect::<Vec<_>>());
        Ok(())
    })
    .await
}

/// Replaces the outcome of the first `throttle` Kinesis attempts with a
/// `LimitExceededException`, counting attempts.
#[derive(Debug, Clone)]
struct ThrottleKinesis {
    throttle: usize,
    attempts: Arc<AtomicUsize>,
}

impl Intercept for ThrottleKinesis {
    fn name(&self) -> &'static str {
        "ThrottleKinesis"
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        if n < self.throttle
            && let Some(outcome) = context.output_or_error_mut()
        {
            let error = ListShardsError::generic(
                ErrorMetadata::builder()
                    .code("LimitExceededException")
                    .message("Rate exceeded for stream (injected)")
                    .build(),
            );
            *outcome = Err(OrchestratorError::operation(ErasedError::erase(error)));
        }
        Ok(())
    }
}

/// A syncer whose Kinesis client (without SDK retries) is throttled `throttle` times.
fn throttled_syncer(
    bed: &TestBed,
    table: &LeaseTable,
    stream: &str,
    throttle: usize,
    budget: Duration,
) -> (ShardSyncer, Arc<AtomicUsize>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let client = aws_sdk_kinesis::Client::from_conf(
        bed.kinesis_config()
            .retry_config(RetryConfig::disabled())
            .interceptor(ThrottleKinesis {
                throttle,
                attempts: attempts.clone(),
            })
            .build(),
    );
    let sync = ShardSyncer::new(client, table.clone(), stream, InitialPosition::TrimHorizon)
        .with_retry(RetryPolicy {
            budget,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        });
    (sync, attempts)
}

#[tokio::test]
async fn throttled_listings_are_retried_within_the_budget() -> TestResult {
    bounded(async {
        let (bed, stream, table) = setup(2).await?;
        let (flaky, attempts) = throttled_syncer(&bed, &table, &stream, 3, Duration::from_secs(5));
        assert_eq!(flaky.sync().await?.created.len(), 2);
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            4,
            "3 throttled attempts, then success"
        );

        let budget = Duration::from_millis(300);
        let (stuck, attempts) = throttled_syncer(&bed, &table, &stream, usize::MAX, budget);
        let started = tokio::time::Instant::now();
        let error = stuck.list_shards().await.expect_err("throttled for good");
        let Error::Kinesis {
            operation, source, ..
        } = &error
        else {
            panic!("unexpected error {error}");
        };
        assert_eq!(*operation, "ListShards");
        assert_eq!(source.code(), Some("LimitExceededException"));
        assert!(attempts.load(Ordering::SeqCst) > 2, "retried");
        assert!(
            started.elapsed() < budget + Duration::from_secs(2),
            "bounded"
        );
        Ok(())
    })
    .await
}
