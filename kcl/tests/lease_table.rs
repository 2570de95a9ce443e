//! The DynamoDB lease table layer against a real DynamoDB wire-protocol server (the test bed:
//! dynoxide in-process by default, DynamoDB Local with `KINESIS_TEST_BACKEND=emulators`).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::FinalizerInterceptorContextMut;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::{BoxError, ErrorMetadata, ProvideErrorMetadata};
use aws_sdk_dynamodb::operation::get_item::GetItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, BillingMode, KeyType};
use aws_smithy_runtime_api::client::interceptors::context::Error as ErasedError;
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use kinesis_integration::TestBed;
use kinesis_kcl::Error;
use kinesis_kcl::lease::{
    Billing, ExtendedSequenceNumber, HashKeyRange, Lease, LeaseTable, RetryPolicy,
    StreamIdentifier, TableOptions, WriteOutcome,
};
use tokio::sync::Barrier;
use tokio::time::Instant;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Every test body runs under this bound, so a hang fails instead of blocking the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

async fn bounded(body: impl Future<Output = TestResult>) -> TestResult {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .map_err(|_| format!("test did not finish within {TEST_TIMEOUT:?}"))?
}

/// A bed and a fresh, created lease table on it.
async fn fresh_table() -> Result<(TestBed, LeaseTable), Box<dyn std::error::Error + Send + Sync>> {
    let bed = TestBed::start().await?;
    let table = LeaseTable::new(bed.dynamodb().clone(), bed.unique_table_name());
    table
        .ensure_table(&TableOptions::default().poll_interval(Duration::from_millis(20)))
        .await?;
    Ok((bed, table))
}

fn seq(digits: &str) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::parse(digits, 0).unwrap()
}

/// Leases shaped as the Java KCL writes them, with every optional part somewhere.
fn java_shaped_leases() -> Vec<Lease> {
    let plain = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);

    let mut child = Lease::new("shardId-000000000003", ExtendedSequenceNumber::LATEST);
    child.parent_shard_ids = BTreeSet::from(["shardId-000000000000".to_owned()]);
    child.hash_key_range = Some(HashKeyRange::new(0, u128::MAX).unwrap());
    child.lease_owner = Some("worker-java".to_owned());
    child.lease_counter = 42;
    child.owner_switches_since_checkpoint = 3;
    child.throughput_kbps = Some(12.5);
    child.set_pending_checkpoint(
        ExtendedSequenceNumber::parse(
            "49590338271490256608559692538361571095921575989136588898",
            7,
        )
        .unwrap(),
        Some(vec![1, 2, 3]),
    );
    child.extra_attributes.insert(
        "applicationMetadata".to_owned(),
        AttributeValue::S("from a newer KCL".to_owned()),
    );
    child.extra_attributes.insert(
        "someBlob".to_owned(),
        AttributeValue::B(Blob::new(vec![9u8, 8])),
    );

    let mut closed = Lease::new("shardId-000000000001", ExtendedSequenceNumber::SHARD_END);
    closed.child_shard_ids = BTreeSet::from([
        "shardId-000000000004".to_owned(),
        "shardId-000000000005".to_owned(),
    ]);

    let multi = Lease::new_multi_stream(
        StreamIdentifier::new("123456789012", "orders", 1_700_000_000).unwrap(),
        "shardId-000000000002",
        seq("123"),
    );
    vec![plain, child, closed, multi]
}

fn applied(outcome: WriteOutcome) -> Result<Lease, String> {
    match outcome {
        WriteOutcome::Applied(lease) => Ok(lease),
        other => Err(format!("expected the write to apply, got {other:?}")),
    }
}

/// Creates `lease` and returns it as stored.
async fn created(
    table: &LeaseTable,
    lease: &Lease,
) -> Result<Lease, Box<dyn std::error::Error + Send + Sync>> {
    assert!(table.create_lease_if_absent(lease).await?);
    Ok(table
        .get_lease(&lease.lease_key)
        .await?
        .ok_or("lease vanished")?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn table_creation_is_idempotent_and_concurrent_creation_is_harmless() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let table = LeaseTable::new(bed.dynamodb().clone(), bed.unique_table_name());
        let options = TableOptions::default().poll_interval(Duration::from_millis(20));
        let barrier = Arc::new(Barrier::new(4));
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (table, options, barrier) = (table.clone(), options.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                table.ensure_table(&options).await
            }));
        }
        for task in tasks {
            task.await??;
        }
        // Again, on an existing table.
        table.ensure_table(&options).await?;

        let described = bed
            .dynamodb()
            .describe_table()
            .table_name(table.table_name())
            .send()
            .await?;
        let t = described.table().ok_or("no table description")?;
        let keys = t.key_schema();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].attribute_name(), "leaseKey");
        assert_eq!(keys[0].key_type(), &KeyType::Hash);
        if let Some(billing) = t.billing_mode_summary().and_then(|b| b.billing_mode()) {
            assert_eq!(billing, &BillingMode::PayPerRequest);
        }
        assert!(table.list_leases().await?.is_empty());

        // The table works after the race.
        let lease = Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON);
        assert!(table.create_lease_if_absent(&lease).await?);
        assert_eq!(table.list_leases().await?, [lease]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn table_options_apply_to_a_new_table() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let table = LeaseTable::new(bed.dynamodb().clone(), bed.unique_table_name());
        let options = TableOptions::default()
            .billing(Billing::Provisioned {
                read_capacity_units: 7,
                write_capacity_units: 3,
            })
            .tag("team", "streaming")
            .deletion_protection(true)
            .poll_interval(Duration::from_millis(20));
        table.ensure_table(&options).await?;
        let described = bed
            .dynamodb()
            .describe_table()
            .table_name(table.table_name())
            .send()
            .await?;
        let throughput = described
            .table()
            .and_then(|t| t.provisioned_throughput())
            .ok_or("no provisioned throughput")?;
        assert_eq!(throughput.read_capacity_units(), Some(7));
        assert_eq!(throughput.write_capacity_units(), Some(3));
        let t = described.table().ok_or("no table description")?;
        assert_eq!(t.deletion_protection_enabled(), Some(true));
        let listed = bed
            .dynamodb()
            .list_tags_of_resource()
            .resource_arn(t.table_arn().ok_or("no table ARN")?)
            .send()
            .await;
        match listed {
            Ok(tags) => {
                let tags: Vec<(&str, &str)> =
                    tags.tags().iter().map(|t| (t.key(), t.value())).collect();
                assert_eq!(tags, [("team", "streaming")]);
            }
            // DynamoDB Local accepts tags on CreateTable but cannot list them.
            Err(e) if e.code() == Some("UnknownOperationException") => {
                assert_eq!(
                    bed.backend(),
                    kinesis_integration::Backend::Emulators,
                    "{e:?}"
                );
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn create_list_get_round_trip_of_java_shaped_leases() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let leases = java_shaped_leases();
        for lease in &leases {
            assert!(
                table.create_lease_if_absent(lease).await?,
                "{}",
                lease.lease_key
            );
        }
        for lease in &leases {
            assert_eq!(
                table.get_lease(&lease.lease_key).await?.as_ref(),
                Some(lease)
            );
        }

        // Creating again writes nothing and reports it.
        let mut other = leases[0].clone();
        other.lease_owner = Some("intruder".to_owned());
        other.lease_counter = 99;
        assert!(!table.create_lease_if_absent(&other).await?);
        assert_eq!(
            table.get_lease(&other.lease_key).await?.as_ref(),
            Some(&leases[0])
        );

        let mut listed = table.list_leases().await?;
        listed.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
        let mut expected = leases.clone();
        expected.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
        assert_eq!(listed, expected);

        assert_eq!(table.get_lease("shardId-999999999999").await?, None);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn list_follows_every_scan_page() -> TestResult {
    bounded(async {
        let (bed, table) = fresh_table().await?;
        // ~2.3 KB of padding each: 600 leases are ~1.4 MB, more than one 1 MB scan page.
        let padding = AttributeValue::S("x".repeat(2_300));
        let mut keys = BTreeSet::new();
        for i in 0..600 {
            let mut lease = Lease::new(
                format!("shardId-{i:012}"),
                ExtendedSequenceNumber::TRIM_HORIZON,
            );
            lease
                .extra_attributes
                .insert("padding".to_owned(), padding.clone());
            assert!(table.create_lease_if_absent(&lease).await?);
            keys.insert(lease.lease_key);
        }
        // The server really pages the scan.
        let first_page = bed
            .dynamodb()
            .scan()
            .table_name(table.table_name())
            .consistent_read(true)
            .send()
            .await?;
        assert!(first_page.last_evaluated_key().is_some());
        assert!(first_page.items().len() < 600);
        let listed: BTreeSet<String> = table
            .list_leases()
            .await?
            .into_iter()
            .map(|l| l.lease_key)
            .collect();
        assert_eq!(listed, keys);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unknown_attributes_survive_renew_take_and_checkpoint() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let original = java_shaped_leases().swap_remove(1);
        let extras = original.extra_attributes.clone();
        assert!(!extras.is_empty());
        let lease = created(&table, &original).await?;

        let taken = applied(table.take(&lease, "worker-rust").await?)?;
        assert_eq!(taken.lease_owner.as_deref(), Some("worker-rust"));
        assert_eq!(taken.lease_counter, lease.lease_counter + 1);
        assert_eq!(taken.owner_switches_since_checkpoint, 4);
        assert_eq!(taken.extra_attributes, extras);

        let renewed = applied(table.renew(&taken).await?)?;
        assert_eq!(renewed.lease_counter, taken.lease_counter + 1);
        assert_eq!(renewed.extra_attributes, extras);

        let checkpoint = ExtendedSequenceNumber::parse(
            "49590338271490256608559692538361571095921575989136588899",
            0,
        )?;
        let checkpointed = applied(
            table
                .update_checkpoint(&renewed, checkpoint.clone())
                .await?,
        )?;
        assert_eq!(checkpointed.checkpoint, checkpoint);
        assert_eq!(checkpointed.pending_checkpoint, None);
        assert_eq!(checkpointed.pending_checkpoint_state, None);
        assert_eq!(checkpointed.owner_switches_since_checkpoint, 0);
        assert_eq!(checkpointed.extra_attributes, extras);
        // Parents, hash range and throughput were not touched either.
        assert_eq!(checkpointed.parent_shard_ids, original.parent_shard_ids);
        assert_eq!(checkpointed.hash_key_range, original.hash_key_range);
        assert_eq!(checkpointed.throughput_kbps, original.throughput_kbps);

        // What `apply` returns is what the table holds.
        assert_eq!(table.get_lease(&lease.lease_key).await?, Some(checkpointed));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn renew_with_a_stale_counter_fails_its_condition() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let lease = created(&table, &Lease::new("shardId-000000000000", seq("1"))).await?;
        let mine = applied(table.take(&lease, "worker-a").await?)?;
        let renewed = applied(table.renew(&mine).await?)?;
        assert_eq!(renewed.lease_counter, mine.lease_counter + 1);

        // Renewing from the copy before the last renewal: the counter has moved on.
        let outcome = table.renew(&mine).await?;
        let WriteOutcome::ConditionFailed { current } = outcome else {
            panic!("stale renewal applied: {outcome:?}");
        };
        assert_eq!(
            current.as_ref(),
            Some(&renewed),
            "the current lease comes back"
        );
        assert_eq!(table.get_lease(&lease.lease_key).await?, Some(renewed));

        // A write on a lease that does not exist fails its condition too (nothing is created).
        let ghost = Lease::new("shardId-000000000077", seq("1"));
        let outcome = table.renew(&ghost).await?;
        assert_eq!(outcome, WriteOutcome::ConditionFailed { current: None });
        assert_eq!(table.get_lease(&ghost.lease_key).await?, None);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn workers_racing_for_an_unowned_lease_exactly_one_wins() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        const WORKERS: usize = 8;
        for round in 0..10 {
            let key = format!("shardId-{round:012}");
            let lease = created(
                &table,
                &Lease::new(key.clone(), ExtendedSequenceNumber::TRIM_HORIZON),
            )
            .await?;
            assert_eq!(lease.lease_owner, None);
            let barrier = Arc::new(Barrier::new(WORKERS));
            let mut tasks = Vec::new();
            for w in 0..WORKERS {
                let (table, lease, barrier) = (table.clone(), lease.clone(), barrier.clone());
                tasks.push(tokio::spawn(async move {
                    let me = format!("worker-{w}");
                    barrier.wait().await;
                    table.take(&lease, &me).await.map(|outcome| (me, outcome))
                }));
            }
            let mut winners = Vec::new();
            let mut losers = Vec::new();
            for task in tasks {
                let (me, outcome) = task.await??;
                match outcome {
                    WriteOutcome::Applied(l) => winners.push((me, l)),
                    WriteOutcome::ConditionFailed { current } => losers.push((me, current)),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            assert_eq!(losers.len(), WORKERS - 1);
            let (winner, won) = winners.pop().unwrap();
            assert_eq!(won.lease_owner.as_deref(), Some(winner.as_str()));
            assert_eq!(won.lease_counter, lease.lease_counter + 1);
            for (loser, current) in &losers {
                assert_ne!(loser, &winner);
                let current = current
                    .as_ref()
                    .ok_or("condition failure without the lease")?;
                assert_eq!(
                    current.lease_owner.as_deref(),
                    Some(winner.as_str()),
                    "{loser}"
                );
            }
            assert_eq!(table.get_lease(&key).await?, Some(won));
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_zombie_whose_lease_was_taken_cannot_checkpoint_or_renew() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let lease = created(&table, &Lease::new("shardId-000000000000", seq("100"))).await?;
        let zombie = applied(table.take(&lease, "worker-a").await?)?;
        // worker-b saw the lease expire (worker-a stalled) and steals it.
        let seen_by_b = table.get_lease(&lease.lease_key).await?.ok_or("gone")?;
        let stolen = applied(table.take(&seen_by_b, "worker-b").await?)?;
        assert_eq!(stolen.lease_owner.as_deref(), Some("worker-b"));
        assert_eq!(stolen.owner_switches_since_checkpoint, 1);

        let outcome = table.update_checkpoint(&zombie, seq("500")).await?;
        assert!(outcome.is_condition_failed(), "{outcome:?}");
        assert!(table.renew(&zombie).await?.is_condition_failed());
        assert!(table.evict(&zombie).await?.is_condition_failed());

        let now = table.get_lease(&lease.lease_key).await?.ok_or("gone")?;
        assert_eq!(now, stolen, "the zombie changed nothing");
        assert_eq!(now.checkpoint, seq("100"));

        // The new owner checkpoints fine.
        let ok = applied(table.update_checkpoint(&stolen, seq("500")).await?)?;
        assert_eq!(ok.checkpoint, seq("500"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_checkpoint_never_moves_backwards() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let lease = created(
            &table,
            &Lease::new("shardId-000000000000", ExtendedSequenceNumber::TRIM_HORIZON),
        )
        .await?;
        let held = applied(table.take(&lease, "worker-a").await?)?;

        let at_200 = applied(table.update_checkpoint(&held, seq("200")).await?)?;
        assert_eq!(at_200.checkpoint, seq("200"));

        for behind in [
            seq("199"),
            seq("0"),
            ExtendedSequenceNumber::TRIM_HORIZON,
            ExtendedSequenceNumber::LATEST,
        ] {
            let err = table
                .update_checkpoint(&at_200, behind.clone())
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::CheckpointRegression { .. }),
                "{behind}: {err}"
            );
        }
        assert_eq!(
            table.get_lease(&lease.lease_key).await?,
            Some(at_200.clone())
        );

        // The same checkpoint again is allowed, so is a later sub-sequence of it.
        let same = applied(table.update_checkpoint(&at_200, seq("200")).await?)?;
        let sub = ExtendedSequenceNumber::parse("200", 4)?;
        let at_sub = applied(table.update_checkpoint(&same, sub.clone()).await?)?;
        assert_eq!(at_sub.checkpoint, sub);
        let err = table
            .update_checkpoint(&at_sub, seq("200"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CheckpointRegression { .. }), "{err}");

        // After SHARD_END nothing moves it.
        let ended = applied(
            table
                .update_checkpoint(&at_sub, ExtendedSequenceNumber::SHARD_END)
                .await?,
        )?;
        assert!(ended.is_shard_end());
        let err = table
            .update_checkpoint(&ended, seq("999999"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CheckpointRegression { .. }), "{err}");
        assert_eq!(table.get_lease(&lease.lease_key).await?, Some(ended));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn evict_releases_the_lease_for_others() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let lease = created(&table, &Lease::new("shardId-000000000000", seq("7"))).await?;
        let held = applied(table.take(&lease, "worker-a").await?)?;
        let renewed = applied(table.renew(&held).await?)?;

        let released = applied(table.evict(&renewed).await?)?;
        assert_eq!(released.lease_owner, None);
        assert_eq!(released.lease_counter, renewed.lease_counter + 1);
        assert_eq!(released.checkpoint, seq("7"));

        // Evicting again from the copy that still names worker-a fails: the owner is gone.
        assert!(table.evict(&renewed).await?.is_condition_failed());

        let taken = applied(table.take(&released, "worker-b").await?)?;
        assert_eq!(taken.lease_owner.as_deref(), Some("worker-b"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn delete_removes_a_lease() -> TestResult {
    bounded(async {
        let (_bed, table) = fresh_table().await?;
        let leases = java_shaped_leases();
        for lease in &leases {
            assert!(table.create_lease_if_absent(lease).await?);
        }
        table.delete_lease(&leases[2].lease_key).await?;
        assert_eq!(table.get_lease(&leases[2].lease_key).await?, None);
        assert_eq!(table.list_leases().await?.len(), leases.len() - 1);
        // Deleting a missing lease is fine.
        table.delete_lease(&leases[2].lease_key).await?;
        // A worker still holding a copy cannot resurrect it with a conditional write.
        assert!(table.renew(&leases[2]).await?.is_condition_failed());
        assert_eq!(table.get_lease(&leases[2].lease_key).await?, None);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_missing_table_is_an_error_at_once() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let table = LeaseTable::new(bed.dynamodb().clone(), bed.unique_table_name());
        let started = Instant::now();
        let err = table.list_leases().await.unwrap_err();
        let Error::DynamoDb {
            operation, source, ..
        } = &err
        else {
            panic!("unexpected error {err}");
        };
        assert_eq!(*operation, "Scan");
        assert_eq!(
            source.code(),
            Some("ResourceNotFoundException"),
            "{source:?}"
        );
        assert!(std::error::Error::source(&err).is_some());
        // Not retried for the whole budget.
        assert!(started.elapsed() < table.retry_policy().budget / 2);
        Ok(())
    })
    .await
}

/// Replaces the outcome of the first `throttle` GetItem attempts with a
/// `ThrottlingException`, counting attempts.
#[derive(Debug, Clone)]
struct ThrottleGets {
    throttle: usize,
    attempts: Arc<AtomicUsize>,
}

impl Intercept for ThrottleGets {
    fn name(&self) -> &'static str {
        "ThrottleGets"
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let n = self.attempts.fetch_add(1, Ordering::SeqCst);
        if n < self.throttle
            && let Some(outcome) = context.output_or_error_mut()
        {
            let error = GetItemError::generic(
                ErrorMetadata::builder()
                    .code("ThrottlingException")
                    .message("Rate exceeded (injected)")
                    .build(),
            );
            *outcome = Err(OrchestratorError::operation(ErasedError::erase(error)));
        }
        Ok(())
    }
}

fn throttled_table(
    bed: &TestBed,
    name: &str,
    throttle: usize,
    budget: Duration,
) -> (LeaseTable, Arc<AtomicUsize>) {
    let attempts = Arc::new(AtomicUsize::new(0));
    let client = aws_sdk_dynamodb::Client::from_conf(
        bed.dynamodb_config()
            .retry_config(RetryConfig::disabled())
            .interceptor(ThrottleGets {
                throttle,
                attempts: attempts.clone(),
            })
            .build(),
    );
    let table = LeaseTable::new(client, name).with_retry(RetryPolicy {
        budget,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
    });
    (table, attempts)
}

#[tokio::test]
async fn throttling_is_retried_within_the_budget() -> TestResult {
    bounded(async {
        let (bed, table) = fresh_table().await?;
        let lease = created(&table, &Lease::new("shardId-000000000000", seq("1"))).await?;

        let (flaky, attempts) =
            throttled_table(&bed, table.table_name(), 3, Duration::from_secs(5));
        assert_eq!(
            flaky.get_lease(&lease.lease_key).await?,
            Some(lease.clone())
        );
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            4,
            "3 throttled attempts, then success"
        );

        // Throttled for good: gives up once the budget is spent, with the SDK error.
        let budget = Duration::from_millis(300);
        let (stuck, attempts) = throttled_table(&bed, table.table_name(), usize::MAX, budget);
        let started = Instant::now();
        let err = stuck.get_lease(&lease.lease_key).await.unwrap_err();
        let elapsed = started.elapsed();
        let Error::DynamoDb {
            operation, source, ..
        } = &err
        else {
            panic!("unexpected error {err}");
        };
        assert_eq!(*operation, "GetItem");
        assert_eq!(source.code(), Some("ThrottlingException"));
        assert!(attempts.load(Ordering::SeqCst) > 2, "retried");
        assert!(
            elapsed < budget + Duration::from_secs(2),
            "bounded: {elapsed:?}"
        );
        Ok(())
    })
    .await
}

/// Items a lease table holds beside leases: what Java KCL 3.5 keeps there when an application
/// moves to its single-table layout (`entityType` other than `LEASE`), and what operators
/// leave behind (an item that is not a lease at all, a lease whose counter is corrupt).
fn foreign_items() -> Vec<(&'static str, Vec<(&'static str, AttributeValue)>)> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: &str| AttributeValue::N(v.to_owned());
    vec![
        (
            "worker metrics",
            vec![
                ("leaseKey", s("WORKER_METRIC_STATS#worker-1")),
                ("entityType", s("WORKER_METRIC_STATS")),
                ("lut", n("1733300000")),
            ],
        ),
        (
            "leader",
            vec![
                ("leaseKey", s("Leader")),
                ("entityType", s("LEADER")),
                ("leaseOwner", s("worker-1")),
                ("leaseCounter", n("7")),
            ],
        ),
        (
            "migration state",
            vec![
                ("leaseKey", s("Migration3.0")),
                ("entityType", s("CLIENT_VERSION_MIGRATION")),
                ("cv", s("CLIENT_VERSION_3X")),
            ],
        ),
        (
            "an operator's note",
            vec![("leaseKey", s("README")), ("note", s("do not delete"))],
        ),
        (
            "a corrupt lease",
            vec![
                ("leaseKey", s("shardId-000000000009")),
                ("leaseCounter", s("not a number")),
                ("checkpoint", s("TRIM_HORIZON")),
            ],
        ),
    ]
}

/// Used to fail the whole listing at the first item that did not parse, which stopped
/// taking, shard sync, clean-up and worker start-up.
#[tokio::test]
async fn listing_skips_items_that_are_not_readable_leases_and_leaves_them_untouched() -> TestResult
{
    bounded(async {
        let (bed, table) = fresh_table().await?;
        let leases = java_shaped_leases();
        for lease in &leases {
            table.create_lease_if_absent(lease).await?;
        }
        // A lease as Java 3.5 writes it, with its entity type.
        let mut typed = Lease::new("shardId-000000000042", ExtendedSequenceNumber::TRIM_HORIZON);
        typed.extra_attributes.insert(
            "entityType".to_owned(),
            AttributeValue::S("LEASE".to_owned()),
        );
        table.create_lease_if_absent(&typed).await?;
        let client = bed.dynamodb();
        for (_, item) in foreign_items() {
            client
                .put_item()
                .table_name(table.table_name())
                .set_item(Some(
                    item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                ))
                .send()
                .await?;
        }

        let mut listed = table.list_leases().await?;
        listed.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
        let mut expected = leases.clone();
        // The `LEASE` marker is implied: it reads as the same lease without it.
        typed.extra_attributes.remove("entityType");
        expected.push(typed);
        expected.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
        assert_eq!(listed, expected, "exactly the readable leases");
        // Every lease this crate created carries it in the table, as Java 3.5 creates them.
        for lease in &expected {
            let stored = client
                .get_item()
                .table_name(table.table_name())
                .key("leaseKey", AttributeValue::S(lease.lease_key.clone()))
                .consistent_read(true)
                .send()
                .await?;
            assert_eq!(
                stored.item().and_then(|i| i.get("entityType")),
                Some(&AttributeValue::S("LEASE".to_owned())),
                "{}",
                lease.lease_key
            );
        }

        // Nothing else was touched.
        for (what, item) in foreign_items() {
            let key = item[0].1.clone();
            let stored = client
                .get_item()
                .table_name(table.table_name())
                .key("leaseKey", key)
                .consistent_read(true)
                .send()
                .await?
                .item
                .ok_or(format!("{what} is gone"))?;
            let expected: std::collections::HashMap<String, AttributeValue> =
                item.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            assert_eq!(stored, expected, "{what} was rewritten");
        }
        Ok(())
    })
    .await
}

/// Used to report a lease lost (and a landed checkpoint as `LeaseLost`): a write whose answer
/// was lost after it landed was retried, and the retry failed its own condition.
#[tokio::test]
async fn a_write_that_landed_before_its_answer_was_lost_is_recovered() -> TestResult {
    use kinesis_integration::faults::{Service, ServiceFaults, ServicePlan};
    bounded(async {
        let (bed, table) = fresh_table().await?;
        let lease = created(&table, &java_shaped_leases()[0]).await?;
        let faults = ServiceFaults::new(
            Service::DynamoDb,
            ServicePlan {
                timeout: 0.4,
                timeout_after: Duration::from_millis(20),
                ..ServicePlan::seeded(17)
            }
            .operations(["UpdateItem"]),
        );
        let lossy = LeaseTable::new(
            aws_sdk_dynamodb::Client::from_conf(faults.dynamodb_config(&bed).build()),
            table.table_name(),
        );
        let mut mine = applied(lossy.take(&lease, "worker-a").await?)?;
        let start = mine.lease_counter;
        for round in 0..15u64 {
            mine =
                applied(lossy.renew(&mine).await?).map_err(|e| format!("renewal {round}: {e}"))?;
            if round % 3 == 0 {
                let checkpoint = seq(&format!("{}", 1_000 + round));
                mine = applied(lossy.update_checkpoint(&mine, checkpoint.clone()).await?)
                    .map_err(|e| format!("checkpoint {round}: {e}"))?;
                assert_eq!(mine.checkpoint, checkpoint);
            }
        }
        let lost = faults.stats().total.timed_out;
        assert!(lost > 0, "no answer was lost");
        // Each write landed exactly once: 15 renewals and 5 checkpoints after the take.
        assert_eq!(mine.lease_counter, start + 20);
        assert_eq!(table.get_lease(&mine.lease_key).await?, Some(mine.clone()));

        // A real loss is still a loss: another worker takes the lease, and our renewal fails
        // (the counter moved on, but not by our write).
        faults.set_enabled(false);
        applied(table.take(&mine, "worker-b").await?)?;
        assert!(lossy.renew(&mine).await?.is_condition_failed());
        eprintln!("REPORT ambiguous writes: 20 writes, {lost} answers lost, every write recovered");
        Ok(())
    })
    .await
}
