//! Multi-stream applications at their edges: a rolling deploy that adds a stream, stream
//! identifiers the application supplies, and a fleet starting together against the
//! `DescribeStreamSummary` limit.

#[path = "support/quick_worker.rs"]
mod quick_worker;
#[path = "support/timing.rs"]
mod timing;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use kinesis_integration::TestBed;
use kinesis_integration::faults::{Service, ServiceFaults, ServicePlan};
use kinesis_kcl::ShardContext;
use kinesis_kcl::lease::{LeaseTable, StreamIdentifier};
use kinesis_kcl::{
    Checkpointer, ConfigError, InitialPosition, ProcessRecordsInput, ProcessorError,
    ShardRecordProcessor, Worker, WorkerBuilder, WorkerHandle,
};
use quick_worker::quick;
use timing::{BoxError, TestResult, bounded, wait_for};
use tokio::task::JoinHandle;

const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// (worker, lease key) of every batch with records.
type Seen = Arc<Mutex<BTreeSet<(String, String)>>>;

struct Recorder {
    worker: String,
    lease: String,
    seen: Seen,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        if !input.records.is_empty() {
            self.seen
                .lock()
                .unwrap()
                .insert((self.worker.clone(), self.lease.clone()));
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

async fn put_some(bed: &TestBed, stream: &str) -> TestResult {
    for i in 0..20 {
        bed.kinesis()
            .put_record()
            .stream_name(stream)
            .partition_key(format!("key-{i}"))
            .data(Blob::new(i.to_string()))
            .send()
            .await?;
    }
    Ok(())
}

/// The stream's identifier as `DescribeStreamSummary` gives it (what the worker derives).
async fn described(bed: &TestBed, stream: &str) -> Result<StreamIdentifier, BoxError> {
    let out = bed
        .kinesis()
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await?;
    let summary = out.stream_description_summary().ok_or("no summary")?;
    let account = summary.stream_arn().split(':').nth(4).ok_or("arn")?;
    let epoch = u64::try_from(summary.stream_creation_timestamp().secs())?.max(1);
    Ok(StreamIdentifier::new(account, stream, epoch)?)
}

fn builder(
    bed: &TestBed,
    application: &str,
    worker_id: &str,
    seen: &Seen,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
) -> Result<WorkerBuilder, BoxError> {
    let _ = bed;
    let (worker, seen) = (worker_id.to_owned(), Arc::clone(seen));
    let factory = move |shard: &ShardContext| Recorder {
        worker: worker.clone(),
        lease: shard.lease_key.clone(),
        seen: Arc::clone(&seen),
    };
    quick(
        Worker::builder(application, kinesis, dynamodb, factory)
            .worker_id(worker_id)
            .multi_stream(true),
    )
}

fn run(
    builder: WorkerBuilder,
) -> Result<(WorkerHandle, JoinHandle<kinesis_kcl::Result<()>>), BoxError> {
    let worker = builder.build()?;
    let handle = worker.handle();
    Ok((handle, tokio::spawn(worker.run())))
}

/// A rolling deploy adds stream B to an application consuming A. A worker of the old
/// deploy must never take B's leases (it would hold them and process nothing); the new
/// deploy's workers process B. Watched over the whole window: from the moment B's leases
/// exist, through several scans of the old worker, until the new worker has processed B.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_deploy_adding_a_stream_leaves_its_leases_to_the_workers_that_know_it()
-> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = TestBed::start().await?;
        let (a, b) = (bed.create_stream(2).await?, bed.create_stream(2).await?);
        put_some(&bed, &a).await?;
        put_some(&bed, &b).await?;
        let (id_a, id_b) = (described(&bed, &a).await?, described(&bed, &b).await?);
        let application = bed.unique_table_name();
        let seen: Seen = Arc::default();

        // The old worker's DynamoDB calls are counted, to know how many scans it made.
        let counted = ServiceFaults::new(Service::DynamoDb, ServicePlan::seeded(1));
        let old_dynamodb =
            aws_sdk_dynamodb::Client::from_conf(counted.dynamodb_config(&bed).build());
        let scans = || {
            counted
                .stats()
                .by_operation
                .get("Scan")
                .map_or(0, |c| c.calls)
        };
        let (old, old_task) = run(builder(
            &bed,
            &application,
            "old",
            &seen,
            bed.kinesis().clone(),
            old_dynamodb,
        )?
        .stream(&a))?;
        let a_leases: Vec<String> = (0..2)
            .map(|i| format!("{id_a}:shardId-00000000000{i}"))
            .collect();
        wait_for(
            Duration::from_secs(30),
            "the old worker processing A",
            || {
                let seen = seen.lock().unwrap();
                a_leases
                    .iter()
                    .all(|l| seen.contains(&("old".to_owned(), l.clone())))
            },
        )
        .await?;

        // Watch every lease of B from now on.
        let table = LeaseTable::new(bed.dynamodb().clone(), &application);
        let b_prefix = format!("{id_b}:");
        let stop = Arc::new(tokio::sync::Notify::new());
        let watcher = {
            let (table, b_prefix, stop) = (table.clone(), b_prefix.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut taken_by_old = BTreeSet::new();
                let mut scans = 0u32;
                loop {
                    if let Ok(leases) = table.list_leases().await {
                        scans += 1;
                        for l in leases {
                            if l.lease_key.starts_with(&b_prefix)
                                && l.lease_owner.as_deref() == Some("old")
                            {
                                taken_by_old.insert(l.lease_key);
                            }
                        }
                    }
                    tokio::select! {
                        () = stop.notified() => return (taken_by_old, scans),
                        () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            })
        };

        // The new deploy's first worker syncs B's shards into leases; the old worker scans
        // the table several times while they are there, before the new one has taken them
        // all (it is paused until then: it only syncs).
        let b_leases: Vec<String> = (0..2)
            .map(|i| format!("{id_b}:shardId-00000000000{i}"))
            .collect();
        let syncer = kinesis_kcl::shard::ShardSyncer::new(
            bed.kinesis().clone(),
            table.clone(),
            kinesis_kcl::shard::StreamTarget::parse(&b),
            InitialPosition::TrimHorizon,
        )
        .with_stream_identifier(id_b.clone());
        syncer.sync().await?;
        let at_sync = scans();
        wait_for(
            Duration::from_secs(30),
            "five scans of the old worker",
            || scans() >= at_sync + 5,
        )
        .await?;

        let (new, new_task) = run(builder(
            &bed,
            &application,
            "new",
            &seen,
            bed.kinesis().clone(),
            bed.dynamodb().clone(),
        )?
        .streams([&a, &b]))?;
        wait_for(
            Duration::from_secs(30),
            "the new worker processing B",
            || {
                let seen = seen.lock().unwrap();
                b_leases
                    .iter()
                    .all(|l| seen.contains(&("new".to_owned(), l.clone())))
            },
        )
        .await?;
        stop.notify_one();
        let (taken_by_old, watched) = watcher.await?;
        assert!(watched > 10, "the watcher scanned only {watched} times");
        assert!(
            taken_by_old.is_empty(),
            "the old worker took leases of a stream it does not process: {taken_by_old:?}"
        );
        assert!(
            !seen
                .lock()
                .unwrap()
                .iter()
                .any(|(w, l)| w == "old" && l.starts_with(&b_prefix)),
        );
        for (handle, task) in [(new, new_task), (old, old_task)] {
            handle.shutdown().await;
            task.await??;
        }
        Ok(())
    })
    .await
}

/// The application supplies the identifier (here in its serialized form, with an epoch of
/// its choosing): the lease keys use it as given and `DescribeStreamSummary` is not called.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_supplied_stream_identifier_keys_the_leases_and_skips_describe() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(1).await?;
        put_some(&bed, &stream).await?;
        let account = described(&bed, &stream).await?.account_id().to_owned();
        let id: StreamIdentifier = format!("{account}:{stream}:1234567890").parse()?;
        let counted = ServiceFaults::new(Service::Kinesis, ServicePlan::seeded(1));
        let kinesis = aws_sdk_kinesis::Client::from_conf(counted.kinesis_config(&bed).build());
        let application = bed.unique_table_name();
        let seen: Seen = Arc::default();
        let (handle, task) = run(builder(
            &bed,
            &application,
            "w",
            &seen,
            kinesis,
            bed.dynamodb().clone(),
        )?
        .stream_with_identifier(&stream, id.clone()))?;
        let key = format!("{account}:{stream}:1234567890:shardId-000000000000");
        wait_for(Duration::from_secs(30), "the shard processed", || {
            seen.lock()
                .unwrap()
                .contains(&("w".to_owned(), key.clone()))
        })
        .await?;
        let keys: Vec<String> = LeaseTable::new(bed.dynamodb().clone(), &application)
            .list_leases()
            .await?
            .into_iter()
            .map(|l| l.lease_key)
            .collect();
        assert_eq!(keys, [key]);
        assert_eq!(
            counted
                .stats()
                .by_operation
                .get("DescribeStreamSummary")
                .map(|c| c.calls),
            None,
            "DescribeStreamSummary was called although the identifier was supplied"
        );
        handle.shutdown().await;
        task.await??;
        Ok(())
    })
    .await
}

/// An identifier that names another stream, or another account than the ARN's, is refused
/// at build time with a typed error naming it.
#[tokio::test]
async fn a_supplied_identifier_must_name_the_stream() -> TestResult {
    let bed = TestBed::start().await?;
    let seen: Seen = Arc::default();
    let make = |stream: &str, id: &str| -> Result<Result<Worker, ConfigError>, BoxError> {
        Ok(builder(
            &bed,
            "app",
            "w",
            &seen,
            bed.kinesis().clone(),
            bed.dynamodb().clone(),
        )?
        .stream_with_identifier(stream, id.parse()?)
        .build())
    };
    match make("orders", "123456789012:payments:1700000000")? {
        Err(error) if error.field() == "stream_with_identifier" => {
            let reason = error.limit();
            assert_eq!(error.value(), "123456789012:payments:1700000000");
            assert!(
                reason.contains("payments") && reason.contains("orders"),
                "{reason}"
            );
        }
        other => panic!("expected a ConfigError for stream_with_identifier, got {other:?}"),
    }
    let arn = "arn:aws:kinesis:eu-west-1:111111111111:stream/orders";
    match make(arn, "222222222222:orders:1700000000")? {
        Err(error) if error.field() == "stream_with_identifier" => {
            let reason = error.limit();
            assert!(reason.contains("222222222222"), "{reason}");
        }
        other => panic!("expected a ConfigError for stream_with_identifier, got {other:?}"),
    }
    assert!(make(arn, "111111111111:orders:1700000000")?.is_ok());
    let refused = builder(
        &bed,
        "app",
        "w",
        &seen,
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
    )?
    .stream_with_identifier("orders", "1:orders:1".parse()?)
    .multi_stream(false)
    .build();
    assert!(
        matches!(&refused, Err(e) if e.field() == "multi_stream"),
        "{refused:?}"
    );
    Ok(())
}

/// Three workers of a two-stream application start at once while `DescribeStreamSummary`
/// is throttled most of the time (SDK retries off, so only the worker's own backoff
/// helps): every worker starts and the fleet processes every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_starting_together_rides_out_describe_stream_summary_throttling() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = TestBed::start().await?;
        let (a, b) = (bed.create_stream(1).await?, bed.create_stream(1).await?);
        put_some(&bed, &a).await?;
        put_some(&bed, &b).await?;
        let (id_a, id_b) = (described(&bed, &a).await?, described(&bed, &b).await?);
        let faults = ServiceFaults::new(
            Service::Kinesis,
            ServicePlan {
                throttle: 0.7,
                ..ServicePlan::seeded(11)
            }
            .operations(["DescribeStreamSummary"]),
        );
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            faults
                .kinesis_config(&bed)
                .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
                .build(),
        );
        let application = bed.unique_table_name();
        let seen: Seen = Arc::default();
        let mut workers = Vec::new();
        for w in ["w1", "w2", "w3"] {
            workers.push(run(builder(
                &bed,
                &application,
                w,
                &seen,
                kinesis.clone(),
                bed.dynamodb().clone(),
            )?
            .streams([&a, &b]))?);
        }
        let keys = [
            format!("{id_a}:shardId-000000000000"),
            format!("{id_b}:shardId-000000000000"),
        ];
        wait_for(Duration::from_secs(60), "both shards processed", || {
            let seen = seen.lock().unwrap();
            keys.iter().all(|k| seen.iter().any(|(_, l)| l == k))
        })
        .await?;
        let throttled = faults
            .stats()
            .by_operation
            .get("DescribeStreamSummary")
            .map_or(0, |c| c.throttled);
        assert!(throttled > 0, "no DescribeStreamSummary call was throttled");
        for (handle, task) in workers {
            assert!(!task.is_finished(), "worker {} stopped", handle.worker_id());
            handle.shutdown().await;
            task.await??;
        }
        Ok(())
    })
    .await
}
