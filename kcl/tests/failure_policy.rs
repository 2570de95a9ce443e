//! The failure policy on real servers: a poison pill among 10 000 records on 4 shards is
//! isolated by bisection, given up after three attempts and handed to the destination with
//! its metadata, while every other record is processed once and the checkpoint passes the
//! pill; with unlimited retries (the default), the shard holds at the pill, checkpointed right
//! before it through a partial failure, and the other shards go on.

#[path = "support/quick_worker.rs"]
mod quick_worker;
#[path = "support/timing.rs"]
mod timing;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesis_integration::TestBed;
use kinesis_kcl::lease::{ExtendedSequenceNumber, LeaseTable};
use kinesis_kcl::{
    Checkpointer, FailedRecords, FailurePolicy, GiveUpReason, ProcessRecordsInput, ProcessorError,
    RecordFailed, ShardRecordProcessor, ShardState, Worker,
};
use quick_worker::quick;
use timing::{BoxError, TestResult, bounded, wait_for};

const RECORDS: usize = 10_000;
const PILL: usize = 4_242;
const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Where each record was stored: `(shard id, sequence number)` by record number.
type Stored = Vec<(String, String)>;

/// Puts records `0..RECORDS` (data: the number; 100 partition keys) on a fresh 4-shard stream.
async fn stream_with_records(bed: &TestBed) -> Result<(String, Stored), BoxError> {
    stream_with(bed, 4, RECORDS).await
}

/// Puts records `0..records` (data: the number; 100 partition keys) on a fresh stream.
async fn stream_with(
    bed: &TestBed,
    shards: u32,
    records: usize,
) -> Result<(String, Stored), BoxError> {
    let stream = bed.create_stream(shards).await?;
    let mut stored = Vec::with_capacity(records);
    for chunk in (0..records).collect::<Vec<_>>().chunks(500) {
        let entries = chunk
            .iter()
            .map(|n| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("key-{}", n % 100))
                    .data(Blob::new(n.to_string()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = bed
            .kinesis()
            .put_records()
            .stream_name(&stream)
            .set_records(Some(entries))
            .send()
            .await?;
        assert_eq!(
            out.failed_record_count(),
            Some(0),
            "the bed throttled a put"
        );
        for entry in out.records() {
            stored.push((
                entry.shard_id().ok_or("no shard id")?.to_owned(),
                entry
                    .sequence_number()
                    .ok_or("no sequence number")?
                    .to_owned(),
            ));
        }
    }
    Ok((stream, stored))
}

/// What the processors saw, shared by all of them.
#[derive(Default)]
struct Seen {
    /// Times each record was processed successfully.
    processed: Mutex<HashMap<usize, u32>>,
    /// Calls that contained the pill.
    pill_calls: Mutex<u32>,
}

/// Fails every call holding the pill: the whole call, or (with `report`) naming the pill as
/// the failed record after processing the records before it. Checkpoints after every
/// successful call.
struct PillProcessor {
    seen: Arc<Seen>,
    report: bool,
}

fn number(data: &[u8]) -> usize {
    std::str::from_utf8(data)
        .expect("utf-8")
        .parse()
        .expect("a number")
}

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for PillProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let numbers: Vec<usize> = input.records.iter().map(|r| number(r.data())).collect();
        if let Some(at) = numbers.iter().position(|&n| n == PILL) {
            *self.seen.pill_calls.lock().unwrap() += 1;
            if !self.report {
                return Err("poison pill".into());
            }
            let mut processed = self.seen.processed.lock().unwrap();
            for n in &numbers[..at] {
                *processed.entry(*n).or_default() += 1;
            }
            return Err(RecordFailed::new(&input.records[at], "poison pill").into());
        }
        {
            let mut processed = self.seen.processed.lock().unwrap();
            for n in numbers {
                *processed.entry(n).or_default() += 1;
            }
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// The checkpoint of each lease, by shard id.
async fn checkpoints(
    bed: &TestBed,
    table: &str,
) -> Result<BTreeMap<String, ExtendedSequenceNumber>, BoxError> {
    Ok(LeaseTable::new(bed.dynamodb().clone(), table)
        .list_leases()
        .await?
        .into_iter()
        .map(|l| (l.lease_key, l.checkpoint))
        .collect())
}

fn position(sequence_number: &str) -> Result<ExtendedSequenceNumber, BoxError> {
    Ok(ExtendedSequenceNumber::parse(sequence_number, 0)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_pill_is_bisected_out_given_up_after_three_attempts_and_passed() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = TestBed::start().await?;
        let (stream, stored) = stream_with_records(&bed).await?;
        let application = bed.unique_table_name();
        let seen = Arc::new(Seen::default());
        let dead_letters: Arc<Mutex<Vec<FailedRecords>>> = Arc::default();
        let sink = Arc::clone(&dead_letters);
        let policy = FailurePolicy::builder()
            .max_attempts(3)
            .bisect_on_error(true)
            .backoff(Duration::from_millis(10), Duration::from_millis(100))
            .destination(move |failed: FailedRecords| {
                let sink = Arc::clone(&sink);
                async move {
                    sink.lock().unwrap().push(failed);
                    Ok::<(), ProcessorError>(())
                }
            })
            .build()?;
        let processors = Arc::clone(&seen);
        let worker = quick(
            Worker::builder(
                &application,
                bed.kinesis().clone(),
                bed.dynamodb().clone(),
                move |_| PillProcessor {
                    seen: Arc::clone(&processors),
                    report: false,
                },
            )
            .stream(&stream)
            .failure_policy(policy),
        )?
        .build()?;
        let handle = worker.handle();
        let running = tokio::spawn(worker.run());

        wait_for(Duration::from_secs(60), "every other record", || {
            seen.processed.lock().unwrap().len() == RECORDS - 1
        })
        .await?;
        wait_for(
            Duration::from_secs(10),
            "the pill at the destination",
            || !dead_letters.lock().unwrap().is_empty(),
        )
        .await?;
        // The checkpoint of the pill's shard passes it (the next successful call's checkpoint).
        let (pill_shard, pill_sequence) = stored[PILL].clone();
        let pill_position = position(&pill_sequence)?;
        let mut passed = false;
        for _ in 0..250 {
            let checkpoint = checkpoints(&bed, &application).await?[&pill_shard].clone();
            if checkpoint > pill_position {
                passed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            passed,
            "the checkpoint of {pill_shard} never passed the pill"
        );

        let processed = seen.processed.lock().unwrap().clone();
        for n in 0..RECORDS {
            let times = processed.get(&n).copied().unwrap_or(0);
            let expected = u32::from(n != PILL);
            assert_eq!(times, expected, "record {n} processed {times} times");
        }
        let letters = dead_letters.lock().unwrap().clone();
        assert_eq!(letters.len(), 1, "one hand-over: {letters:?}");
        let letter = &letters[0];
        assert_eq!(letter.records.len(), 1, "the pill alone");
        let pill = &letter.records[0];
        assert_eq!(number(pill.data()), PILL);
        assert_eq!(pill.sequence_number().as_str(), pill_sequence);
        assert_eq!(pill.partition_key(), format!("key-{}", PILL % 100));
        assert!(pill.approximate_arrival_timestamp().is_some());
        assert_eq!(letter.shard_id, pill_shard);
        assert_eq!(letter.stream, stream);
        assert_eq!(letter.reason, GiveUpReason::Attempts);
        assert_eq!(letter.attempts, 3);
        assert!(letter.error.contains("poison pill"), "{}", letter.error);
        // Bisection: the calls holding the pill are the halvings down to it plus its three
        // attempts alone; a batch holds at most 10 000 records, so at most 14 halvings.
        let pill_calls = *seen.pill_calls.lock().unwrap();
        assert!(
            (3..=3 + 14).contains(&pill_calls),
            "{pill_calls} calls held the pill"
        );

        handle.shutdown().await;
        running.await??;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unlimited_retries_hold_the_shard_at_the_pill_checkpointed_right_before_it() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = TestBed::start().await?;
        let (stream, stored) = stream_with_records(&bed).await?;
        let application = bed.unique_table_name();
        let seen = Arc::new(Seen::default());
        let processors = Arc::clone(&seen);
        let worker = quick(
            Worker::builder(
                &application,
                bed.kinesis().clone(),
                bed.dynamodb().clone(),
                move |_| PillProcessor {
                    seen: Arc::clone(&processors),
                    report: true,
                },
            )
            .stream(&stream)
            .failure_policy(
                FailurePolicy::builder()
                    .backoff(Duration::from_millis(10), Duration::from_millis(50))
                    .build()?,
            ),
        )?
        .build()?;
        let handle = worker.handle();
        let running = tokio::spawn(worker.run());

        let (pill_shard, pill_sequence) = stored[PILL].clone();
        let before_pill: Vec<usize> = (0..RECORDS)
            .filter(|&n| stored[n].0 == pill_shard && n < PILL)
            .collect();
        let elsewhere = (0..RECORDS).filter(|&n| stored[n].0 != pill_shard).count();
        wait_for(
            Duration::from_secs(60),
            "the other shards and the pill's shard up to the pill",
            || seen.processed.lock().unwrap().len() == elsewhere + before_pill.len(),
        )
        .await?;
        wait_for(Duration::from_secs(30), "ten calls on the pill", || {
            *seen.pill_calls.lock().unwrap() >= 10
        })
        .await?;
        let states = handle.shard_states();
        assert!(
            matches!(
                &states[&pill_shard],
                ShardState::RetryingRecords { attempts, reason }
                    if *attempts >= 9 && reason.contains("poison pill")
            ),
            "{states:?}"
        );
        // Nothing at or after the pill on its shard was processed; everything before it was,
        // once, and the worker checkpointed right before the pill.
        let processed = seen.processed.lock().unwrap().clone();
        for (n, (shard, _)) in stored.iter().enumerate() {
            let expected = u32::from(*shard != pill_shard || n < PILL);
            assert_eq!(
                processed.get(&n).copied().unwrap_or(0),
                expected,
                "record {n}"
            );
        }
        let last_before = before_pill.last().ok_or("no record before the pill")?;
        assert_eq!(
            checkpoints(&bed, &application).await?[&pill_shard],
            position(&stored[*last_before].1)?,
            "checkpointed right before the pill ({pill_sequence})"
        );

        handle.shutdown().await;
        running.await??;
        Ok(())
    })
    .await
}

/// Every user record in `stream` (every shard, from `TRIM_HORIZON`), deaggregated.
async fn read_stream(bed: &TestBed, stream: &str) -> Result<Vec<(String, bytes::Bytes)>, BoxError> {
    let kinesis = bed.kinesis();
    let shards = kinesis.list_shards().stream_name(stream).send().await?;
    let mut out = Vec::new();
    for shard in shards.shards() {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator()
            .map(str::to_owned);
        while let Some(it) = iterator {
            let page = kinesis.get_records().shard_iterator(it).send().await?;
            for record in page.records() {
                let data = bytes::Bytes::copy_from_slice(record.data().as_ref());
                match kinesis_aggregation::deaggregate(data) {
                    kinesis_aggregation::Deaggregated::Aggregated(subs) => {
                        for sub in subs {
                            out.push((sub.partition_key().to_owned(), sub.data().clone()));
                        }
                    }
                    kinesis_aggregation::Deaggregated::PassThrough { data, .. } => {
                        out.push((record.partition_key().unwrap_or_default().to_owned(), data));
                    }
                }
            }
            iterator = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator().map(str::to_owned)
            };
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_given_up_record_reaches_the_dead_letter_stream_in_its_envelope() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = TestBed::start().await?;
        let (stream, stored) = stream_with_records(&bed).await?;
        let dead_letters = bed.create_stream(1).await?;
        let producer = kinesis_kpl::Producer::new(
            bed.kinesis().clone(),
            &dead_letters,
            kinesis_kpl::ProducerConfig::default(),
        )
        .await?;
        let application = bed.unique_table_name();
        let seen = Arc::new(Seen::default());
        let processors = Arc::clone(&seen);
        let worker = quick(
            Worker::builder(
                &application,
                bed.kinesis().clone(),
                bed.dynamodb().clone(),
                move |_| PillProcessor {
                    seen: Arc::clone(&processors),
                    report: true,
                },
            )
            .stream(&stream)
            .failure_policy(
                FailurePolicy::builder()
                    .max_attempts(2)
                    .backoff(Duration::from_millis(10), Duration::from_millis(100))
                    .destination(kinesis_kcl::DeadLetterStream::new(producer.clone()))
                    .build()?,
            ),
        )?
        .build()?;
        let handle = worker.handle();
        let running = tokio::spawn(worker.run());
        wait_for(Duration::from_secs(60), "every other record", || {
            seen.processed.lock().unwrap().len() == RECORDS - 1
        })
        .await?;
        handle.shutdown().await;
        running.await??;
        producer.shutdown().await;

        let letters = read_stream(&bed, &dead_letters).await?;
        assert_eq!(letters.len(), 1, "one dead letter");
        let (key, data) = &letters[0];
        assert_eq!(
            *key,
            format!("key-{}", PILL % 100),
            "put with the record's key"
        );
        let letter = kinesis_kcl::DeadLetter::decode(data)?;
        let (pill_shard, pill_sequence) = &stored[PILL];
        assert_eq!(&letter.data[..], PILL.to_string().as_bytes());
        assert_eq!(letter.stream, stream);
        assert_eq!(&letter.shard_id, pill_shard);
        assert_eq!(&letter.sequence_number, pill_sequence);
        assert_eq!(letter.sub_sequence_number, 0);
        assert_eq!(letter.partition_key, *key);
        assert_eq!(letter.reason, "attempts");
        assert_eq!(letter.attempts, 2);
        assert!(letter.error.contains("poison pill"), "{}", letter.error);
        assert!(letter.approximate_arrival.is_some());
        assert!(letter.given_up_at >= letter.approximate_arrival.unwrap_or(std::time::UNIX_EPOCH));
        Ok(())
    })
    .await
}

/// Fails (or, with `hang`, never finishes) every call holding the pill, taking `pace` per call.
struct SlowPillProcessor {
    seen: Arc<Seen>,
    pace: Duration,
    hang: bool,
}

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for SlowPillProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        tokio::time::sleep(self.pace).await;
        let numbers: Vec<usize> = input.records.iter().map(|r| number(r.data())).collect();
        if numbers.contains(&PILL_SMALL) {
            *self.seen.pill_calls.lock().unwrap() += 1;
            if self.hang {
                std::future::pending::<()>().await;
            }
            return Err("poison pill".into());
        }
        {
            let mut processed = self.seen.processed.lock().unwrap();
            for n in numbers {
                *processed.entry(n).or_default() += 1;
            }
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

const SMALL: usize = 300;
const PILL_SMALL: usize = 123;

/// A one-shard stream of [`SMALL`] records and a worker with `policy` whose processors take
/// `pace` per call and fail (or hang on) the pill; returns what the destination got, each with
/// when it got it, once every other record is processed.
async fn run_slow(
    policy: kinesis_kcl::FailurePolicyBuilder,
    pace: Duration,
    hang: bool,
) -> Result<(Arc<Seen>, Vec<(FailedRecords, std::time::SystemTime)>), BoxError> {
    let bed = TestBed::start().await?;
    let (stream, _) = stream_with(&bed, 1, SMALL).await?;
    let seen = Arc::new(Seen::default());
    let letters: Arc<Mutex<Vec<(FailedRecords, std::time::SystemTime)>>> = Arc::default();
    let sink = Arc::clone(&letters);
    let policy = policy
        .destination(move |failed: FailedRecords| {
            let sink = Arc::clone(&sink);
            async move {
                sink.lock()
                    .unwrap()
                    .push((failed, std::time::SystemTime::now()));
                Ok::<(), ProcessorError>(())
            }
        })
        .build()?;
    let processors = Arc::clone(&seen);
    let worker = quick(
        Worker::builder(
            bed.unique_table_name(),
            bed.kinesis().clone(),
            bed.dynamodb().clone(),
            move |_| SlowPillProcessor {
                seen: Arc::clone(&processors),
                pace,
                hang,
            },
        )
        .stream(&stream)
        // Small batches, so the pill's call holds few records.
        .retrieval(kinesis_kcl::Retrieval::Polling(
            kinesis_kcl::PollingConfig::builder()
                .max_records(20)
                .idle_time_between_reads(Duration::from_millis(50))
                .build()?,
        ))
        .failure_policy(policy),
    )?
    .build()?;
    let handle = worker.handle();
    let running = tokio::spawn(worker.run());
    wait_for(Duration::from_secs(60), "every other record", || {
        seen.processed.lock().unwrap().len() == SMALL - 1 && !letters.lock().unwrap().is_empty()
    })
    .await?;
    handle.shutdown().await;
    running.await??;
    let letters = letters.lock().unwrap().clone();
    Ok((seen, letters))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_record_is_given_up_once_older_than_the_age_limit() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let age = Duration::from_secs(2);
        let (seen, letters) = run_slow(
            FailurePolicy::builder()
                .max_record_age(age)
                .bisect_on_error(true)
                .backoff(Duration::from_millis(50), Duration::from_millis(200)),
            Duration::from_millis(20),
            false,
        )
        .await?;
        assert_eq!(letters.len(), 1, "{letters:?}");
        let (letter, at) = &letters[0];
        assert_eq!(letter.reason, GiveUpReason::RecordAge);
        assert_eq!(letter.records.len(), 1);
        assert_eq!(number(letter.records[0].data()), PILL_SMALL);
        let arrived = letter.records[0]
            .approximate_arrival_timestamp()
            .ok_or("no arrival time")?;
        let held = at.duration_since(arrived)?;
        // Given up only once older than the limit, and at its first failure after that (a
        // call and a backoff of at most 200 ms later, on a loaded machine a few more).
        assert!(held > age, "given up after {held:?}");
        assert!(held < age * 3, "given up only after {held:?}");
        assert!(letter.attempts >= 2, "{} attempts", letter.attempts);
        let processed = seen.processed.lock().unwrap().clone();
        for n in (0..SMALL).filter(|&n| n != PILL_SMALL) {
            assert_eq!(processed.get(&n), Some(&1), "record {n}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_running_past_the_batch_timeout_is_a_failed_call() -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let (seen, letters) = run_slow(
            FailurePolicy::builder()
                .max_attempts(2)
                .bisect_on_error(true)
                .batch_timeout(Duration::from_millis(300))
                .backoff(Duration::from_millis(10), Duration::from_millis(50)),
            Duration::ZERO,
            true,
        )
        .await?;
        assert_eq!(letters.len(), 1, "{letters:?}");
        let (letter, _) = &letters[0];
        assert_eq!(letter.records.len(), 1);
        assert_eq!(number(letter.records[0].data()), PILL_SMALL);
        assert_eq!(letter.attempts, 2);
        assert!(
            letter.error.contains("did not return within 300ms"),
            "{}",
            letter.error
        );
        let processed = seen.processed.lock().unwrap().clone();
        for n in (0..SMALL).filter(|&n| n != PILL_SMALL) {
            assert_eq!(processed.get(&n), Some(&1), "record {n}");
        }
        Ok(())
    })
    .await
}

/// Records each record it processes as `(worker, number)`; with `fail_pill`, reports the pill
/// as failed (`RecordFailed`) after processing the records before it.
struct Recorder {
    worker: &'static str,
    log: Arc<Mutex<Vec<(&'static str, usize)>>>,
    fail_pill: bool,
    pill_calls: Arc<Mutex<u32>>,
}

#[kinesis_kcl::async_trait]
impl ShardRecordProcessor for Recorder {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        for record in &input.records {
            let n = number(record.data());
            if self.fail_pill && n == PILL_SMALL {
                *self.pill_calls.lock().unwrap() += 1;
                return Err(RecordFailed::new(record, "poison pill").into());
            }
            self.log.lock().unwrap().push((self.worker, n));
        }
        checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// A partial failure checkpoints right before the failed record, on both retrieval modes; a
/// worker started after the first one stopped resumes exactly there: the failed record is its
/// first, and nothing before it is delivered again.
async fn partial_failure_resumes_at_the_failed_record_across_a_restart(
    fan_out: bool,
) -> TestResult {
    bounded(TEST_TIMEOUT, async {
        let bed = if fan_out {
            TestBed::start_with_options(
                kinesis_integration::BedOptions::default()
                    .subscribe_to_shard_session(Duration::from_secs(3)),
            )
            .await?
        } else {
            TestBed::start().await?
        };
        let (stream, stored) = stream_with(&bed, 1, SMALL).await?;
        let application = bed.unique_table_name();
        let log: Arc<Mutex<Vec<(&'static str, usize)>>> = Arc::default();
        let pill_calls: Arc<Mutex<u32>> = Arc::default();
        let retrieval = if fan_out {
            kinesis_kcl::Retrieval::FanOut(
                kinesis_kcl::FanOutConfig::builder()
                    .registration_retry_delay(Duration::from_millis(50))
                    .min_time_between_subscribes(Duration::from_millis(200))
                    .retry_min_delay(Duration::from_millis(50))
                    .retry_max_delay(Duration::from_millis(500))
                    .build()?,
            )
        } else {
            kinesis_kcl::Retrieval::Polling(
                kinesis_kcl::PollingConfig::builder()
                    .max_records(50)
                    .idle_time_between_reads(Duration::from_millis(50))
                    .build()?,
            )
        };
        let start = |worker: &'static str, fail_pill: bool| -> Result<_, BoxError> {
            let (log, pill_calls) = (Arc::clone(&log), Arc::clone(&pill_calls));
            let built = quick(
                Worker::builder(
                    &application,
                    bed.kinesis().clone(),
                    bed.dynamodb().clone(),
                    move |_| Recorder {
                        worker,
                        log: Arc::clone(&log),
                        fail_pill,
                        pill_calls: Arc::clone(&pill_calls),
                    },
                )
                .stream(&stream)
                .worker_id(worker)
                .failure_policy(
                    FailurePolicy::builder()
                        .backoff(Duration::from_millis(10), Duration::from_millis(50))
                        .build()?,
                ),
            )?
            .retrieval(retrieval.clone())
            .build()?;
            let handle = built.handle();
            Ok((handle, tokio::spawn(built.run())))
        };

        let (first, running) = start("first", true)?;
        wait_for(Duration::from_secs(60), "three calls on the pill", || {
            *pill_calls.lock().unwrap() >= 3
        })
        .await?;
        let shard = &stored[PILL_SMALL].0;
        assert_eq!(
            checkpoints(&bed, &application).await?[shard],
            position(&stored[PILL_SMALL - 1].1)?,
            "checkpointed right before the pill"
        );
        first.shutdown().await;
        running.await??;

        let (second, running) = start("second", false)?;
        wait_for(Duration::from_secs(60), "every record", || {
            log.lock().unwrap().len() >= SMALL
        })
        .await?;
        second.shutdown().await;
        running.await??;

        let log = log.lock().unwrap().clone();
        let expected: Vec<(&str, usize)> = (0..SMALL)
            .map(|n| (if n < PILL_SMALL { "first" } else { "second" }, n))
            .collect();
        assert_eq!(
            log, expected,
            "each record once, the second worker from the pill on"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_failure_resumes_at_the_failed_record_across_a_restart_polling() -> TestResult {
    partial_failure_resumes_at_the_failed_record_across_a_restart(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_failure_resumes_at_the_failed_record_across_a_restart_fan_out() -> TestResult {
    partial_failure_resumes_at_the_failed_record_across_a_restart(true).await
}
