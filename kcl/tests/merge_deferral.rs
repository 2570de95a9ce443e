//! A shard that ends in a merge whose other parent has no lease (a Java fleet's table not yet
//! synced, say) must not reach `SHARD_END` before the merged child has a lease: a fleet
//! switched in then would find a finished parent and a child without a lease. The Java
//! `ShutdownTask` retries (`BlockedOnParentShardException`); so does the worker.

#[path = "support/quick_worker.rs"]
mod quick_worker;
#[path = "support/timing.rs"]
mod timing;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::config::interceptors::{
    BeforeSerializationInterceptorContextRef, FinalizerInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError as SdkBoxError;
use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use kinesis_integration::TestBed;
use kinesis_kcl::ShardContext;
use kinesis_kcl::lease::{ExtendedSequenceNumber, LeaseTable};
use kinesis_kcl::{
    Checkpointer, ProcessRecordsInput, ProcessorError, ShardRecordProcessor, ShardState, Worker,
};
use quick_worker::quick;
use timing::{TestResult, bounded, wait_for};

/// While `on`: `GetItem` finds no lease `hidden` (as if it did not exist), and the `PutItem`
/// creating lease `child` is refused (so nothing but the shard end could create it).
#[derive(Debug)]
struct MissingParent {
    on: Arc<AtomicBool>,
    hidden: String,
    child: String,
}

impl Intercept for MissingParent {
    fn name(&self) -> &'static str {
        "MissingParent"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), SdkBoxError> {
        if self.on.load(Ordering::SeqCst)
            && let Some(put) = context.input().downcast_ref::<PutItemInput>()
            && put
                .item()
                .and_then(|i| i.get("leaseKey"))
                .is_some_and(|k| *k == AttributeValue::S(self.child.clone()))
        {
            return Err("the child's lease cannot be created yet (test)".into());
        }
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), SdkBoxError> {
        if self.on.load(Ordering::SeqCst)
            && let Some(Ok(output)) = context.output_or_error_mut()
            && let Some(got) = output.downcast_mut::<GetItemOutput>()
            && got
                .item
                .as_ref()
                .and_then(|i| i.get("leaseKey"))
                .is_some_and(|k| *k == AttributeValue::S(self.hidden.clone()))
        {
            got.item = None;
        }
        Ok(())
    }
}

/// Shards that delivered records.
type Seen = Arc<Mutex<BTreeSet<String>>>;

struct Recorder(String, Seen);

#[async_trait::async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        if !input.records.is_empty() {
            self.1.lock().unwrap().insert(self.0.clone());
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

async fn put(bed: &TestBed, stream: &str, n: usize) -> TestResult {
    for i in 0..n {
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

/// Used to checkpoint `SHARD_END` at once, ignoring the deferral: the parents were finished
/// while the merged child had no lease, for as long as its creation was impossible.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_merge_with_a_parent_lacking_a_lease_holds_shard_end_until_the_child_has_a_lease()
-> TestResult {
    bounded(Duration::from_secs(120), async {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(2).await?;
        put(&bed, &stream, 40).await?;
        let (p0, p1, child) = (
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002",
        );
        let on = Arc::new(AtomicBool::new(false));
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            bed.dynamodb_config()
                .interceptor(MissingParent {
                    on: Arc::clone(&on),
                    hidden: p1.to_owned(),
                    child: child.to_owned(),
                })
                .build(),
        );
        let application = bed.unique_table_name();
        let seen: Seen = Arc::default();
        let factory = {
            let seen = Arc::clone(&seen);
            move |shard: &ShardContext| Recorder(shard.lease_key.clone(), Arc::clone(&seen))
        };
        let worker = quick(
            Worker::builder(&application, bed.kinesis().clone(), dynamodb, factory)
                .stream(&stream)
                .worker_id("w"),
        )?
        .build()?;
        let handle = worker.handle();
        let task = tokio::spawn(worker.run());
        wait_for(Duration::from_secs(30), "both parents processing", || {
            let seen = seen.lock().unwrap();
            seen.contains(p0) && seen.contains(p1)
        })
        .await?;

        // Watch the table from before the merge to the end: a finished parent must never
        // be seen while the child has no lease.
        let table = LeaseTable::new(bed.dynamodb().clone(), &application);
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (table, stop) = (table.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut violations = BTreeSet::new();
                let mut scans = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(leases) = table.list_leases().await {
                        scans += 1;
                        let has_child = leases.iter().any(|l| l.lease_key == child);
                        for l in &leases {
                            if (l.lease_key == p0 || l.lease_key == p1)
                                && l.checkpoint == ExtendedSequenceNumber::SHARD_END
                                && !has_child
                            {
                                violations.insert(l.lease_key.clone());
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (violations, scans)
            })
        };

        on.store(true, Ordering::SeqCst);
        bed.kinesis()
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge(p0)
            .adjacent_shard_to_merge(p1)
            .send()
            .await?;
        bed.wait_for_stream_active(&stream).await?;
        put(&bed, &stream, 20).await?;
        wait_for(Duration::from_secs(30), "the shard end deferred", || {
            handle
                .shard_states()
                .values()
                .any(|s| matches!(s, ShardState::ChildLeaseDeferred { .. }))
        })
        .await?;
        // A window in which the old code finished the parents without a child lease.
        tokio::time::sleep(Duration::from_secs(3)).await;
        on.store(false, Ordering::SeqCst);

        wait_for(
            Duration::from_secs(30),
            "the merged child processed",
            || seen.lock().unwrap().contains(child),
        )
        .await?;
        stop.store(true, Ordering::SeqCst);
        let (violations, scans) = watcher.await?;
        assert!(scans > 20, "the watcher scanned only {scans} times");
        assert!(
            violations.is_empty(),
            "parents at SHARD_END while the merged child had no lease: {violations:?}"
        );
        handle.shutdown().await;
        task.await??;
        Ok(())
    })
    .await
}
