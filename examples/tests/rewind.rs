//! `kinesis-ops rewind --to-timestamp` against a real application: a worker consumes records
//! put before and after a time T, across a split and a merge made after T, and stops; the
//! rewind moves every lease; a new worker then delivers exactly the records that arrived at or
//! after T, each once, and none before it.

#[path = "../../kcl/tests/support/quick_worker.rs"]
mod quick_worker;
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kinesis_integration::TestBed;
use kinesis_kcl::{
    Checkpointer, ProcessRecordsInput, ProcessorError, ShardRecordProcessor, Worker, WorkerHandle,
};
use kinesis_kpl::{Producer, ProducerConfig, UserRecord};
use quick_worker::quick;
use support::{BoxError, TestResult, bounded, command, endpoint_flags, run, wait_until};
use tokio::task::JoinHandle;

/// Record number → how many times it was delivered.
type Seen = Arc<Mutex<BTreeMap<u64, usize>>>;

struct Recorder(Seen);

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        {
            let mut seen = self.0.lock().unwrap();
            for record in &input.records {
                let n: u64 = std::str::from_utf8(record.data())?.parse()?;
                *seen.entry(n).or_default() += 1;
            }
        }
        Ok(checkpointer.checkpoint().await?)
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        Ok(checkpointer.checkpoint().await?)
    }
}

fn start_worker(
    bed: &TestBed,
    application: &str,
    stream: &str,
    seen: &Seen,
) -> Result<(WorkerHandle, JoinHandle<kinesis_kcl::Result<()>>), BoxError> {
    let seen = seen.clone();
    let worker = quick(
        Worker::builder(
            application,
            bed.kinesis().clone(),
            bed.dynamodb().clone(),
            move |_| Recorder(seen.clone()),
        )
        .stream(stream),
    )?
    .build()?;
    let handle = worker.handle();
    Ok((handle, tokio::spawn(worker.run())))
}

async fn put(producer: &Producer, numbers: std::ops::Range<u64>) -> TestResult {
    let puts: Vec<_> = numbers
        .map(|n| producer.put_record(UserRecord::new(format!("k{}", n % 50), n.to_string())))
        .collect();
    producer.flush().await;
    for put in puts {
        put.await?;
    }
    Ok(())
}

async fn wait_active(bed: &TestBed, stream: &str) -> TestResult {
    Ok(bed.wait_for_stream_active(stream).await?)
}

fn distinct(seen: &Seen) -> usize {
    seen.lock().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewound_application_delivers_exactly_what_arrived_since_the_time() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let stream = bed.create_stream(2).await?;
        let application = bed.unique_table_name();
        let kinesis = bed.kinesis().clone();
        let producer = Producer::new(kinesis.clone(), &stream, ProducerConfig::default()).await?;

        // Before T: records 0..600 (aggregated by the producer).
        put(&producer, 0..600).await?;
        // T: the next whole second (arrival times are kept to the second by some servers).
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let t = UNIX_EPOCH + Duration::from_secs(now.as_secs() + 1);
        wait_until("the clock to pass T", || async {
            Ok(SystemTime::now() > t)
        })
        .await?;

        // After T: records 600..1500, with a split of the first shard and a merge of its upper
        // child with the second shard in between.
        put(&producer, 600..900).await?;
        let shards = kinesis.list_shards().stream_name(&stream).send().await?;
        let first = shards.shards()[0].clone();
        let range = first.hash_key_range().ok_or("no range")?;
        let (start, end): (u128, u128) = (
            range.starting_hash_key().parse()?,
            range.ending_hash_key().parse()?,
        );
        kinesis
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(first.shard_id())
            .new_starting_hash_key((start + (end - start) / 2).to_string())
            .send()
            .await?;
        wait_active(&bed, &stream).await?;
        put(&producer, 900..1200).await?;
        let listed = kinesis.list_shards().stream_name(&stream).send().await?;
        let upper_child = listed
            .shards()
            .iter()
            .find(|s| {
                s.parent_shard_id() == Some(first.shard_id())
                    && s.hash_key_range()
                        .is_some_and(|r| r.ending_hash_key() == range.ending_hash_key())
            })
            .ok_or("no upper child")?
            .shard_id()
            .to_owned();
        kinesis
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge(&upper_child)
            .adjacent_shard_to_merge(shards.shards()[1].shard_id())
            .send()
            .await?;
        wait_active(&bed, &stream).await?;
        put(&producer, 1200..1500).await?;
        producer.shutdown().await;

        // A first worker consumes everything, then stops (checkpointing, releasing).
        let first_run: Seen = Arc::default();
        let (handle, task) = start_worker(&bed, &application, &stream, &first_run)?;
        wait_until("the first worker to see every record", || async {
            Ok(distinct(&first_run) == 1500)
        })
        .await?;
        handle.shutdown().await;
        task.await??;

        let connect = endpoint_flags(&bed).ok_or("this test needs endpoints")?;
        let t_millis = t.duration_since(UNIX_EPOCH)?.as_millis().to_string();
        let rewind = |extra: &[&str]| {
            let mut c = command(env!("CARGO_BIN_EXE_kinesis-ops"), Some(&bed));
            c.args(["rewind", "--table", &application, "--stream", &stream])
                .args(["--to-timestamp", &t_millis, "--interval", "1s"])
                .args(extra)
                .args(&connect);
            c
        };

        // A dry run prints the plan and writes nothing.
        let out = run(rewind(&["--dry-run"]), b"").await?;
        assert_eq!(out.code, Some(0), "{out}");
        assert!(out.stdout.contains("dry run: nothing written"), "{out}");
        assert!(out.stdout.contains("SHARD_END/0 -> "), "{out}");

        let out = run(rewind(&[]), b"").await?;
        assert_eq!(out.code, Some(0), "{out}");
        // Two parents moved back from SHARD_END, three children back to their start.
        assert!(out.stdout.contains("5 leases written"), "{out}");

        // A second worker delivers exactly what arrived at or after T.
        let second_run: Seen = Arc::default();
        let (handle, task) = start_worker(&bed, &application, &stream, &second_run)?;
        wait_until("the second worker to see every record since T", || async {
            Ok(second_run.lock().unwrap().range(600..).count() == 900)
        })
        .await?;

        // While it runs, a rewind is refused.
        let out = run(rewind(&[]), b"").await?;
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains("being renewed"), "{out}");

        handle.shutdown().await;
        task.await??;
        let seen = second_run.lock().unwrap().clone();
        let before_t: Vec<u64> = seen.range(..600).map(|(n, _)| *n).collect();
        let twice: Vec<u64> = seen
            .iter()
            .filter(|(_, c)| **c > 1)
            .map(|(n, _)| *n)
            .collect();
        assert!(
            before_t.is_empty(),
            "records from before T delivered again: {before_t:?}"
        );
        assert!(twice.is_empty(), "records delivered twice: {twice:?}");
        assert_eq!(seen.len(), 900);
        Ok(())
    })
    .await
}
