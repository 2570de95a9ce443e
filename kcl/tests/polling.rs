//! Polling retrieval against the test bed's real Kinesis server: positions, deaggregation,
//! resuming inside an aggregate, recovery from expired iterators and throttling, shard end,
//! and the prefetch bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::{ErrorMetadata, ProvideErrorMetadata};
use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsInput};
use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorInput;
use aws_sdk_kinesis::primitives::Blob;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, Error as ErasedError, FinalizerInterceptorContextMut,
};
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use kinesis_aggregation::{AggregateBuilder, Finished};
use kinesis_integration::{Backend, BedOptions, TestBed};
use kinesis_kcl::Record;
use kinesis_kcl::lease::{HashKeyRange, SequenceNumber};
use kinesis_kcl::metrics as names;
use kinesis_kcl::retrieval::{
    OutOfRangePolicy, PollingConfig, PollingConfigBuilder, PollingRetriever, RecordBatch,
    ShardReader, StartingPosition,
};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

type TestResult = Result<(), BoxError>;

const SHARD: &str = "shardId-000000000000";
/// Generous bound for anything that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Fast pacing for tests: no minimum spacing, short idle time and backoff.
fn fast() -> PollingConfigBuilder {
    PollingConfig::builder()
        .idle_time_between_reads(Duration::from_millis(20))
        .min_time_between_reads(Duration::ZERO)
        .retry_min_delay(Duration::from_millis(5))
        .retry_max_delay(Duration::from_millis(50))
}

async fn put(bed: &TestBed, stream: &str, key: &str, data: &[u8]) -> Result<String, BoxError> {
    let out = bed
        .kinesis()
        .put_record()
        .stream_name(stream)
        .partition_key(key)
        .data(Blob::new(data))
        .send()
        .await?;
    Ok(out.sequence_number)
}

/// Puts one KPL aggregate of `entries` (partition key, explicit hash key, data); returns its
/// sequence number.
async fn put_aggregate(
    bed: &TestBed,
    stream: &str,
    entries: &[(String, Option<String>, Vec<u8>)],
) -> Result<String, BoxError> {
    let mut builder = AggregateBuilder::default();
    for (key, ehk, data) in entries {
        builder.try_push(key, ehk.as_deref(), data)?;
    }
    let Some(Finished::Aggregated {
        partition_key,
        explicit_hash_key,
        data,
        ..
    }) = builder.finish()
    else {
        return Err("expected an aggregate".into());
    };
    let out = bed
        .kinesis()
        .put_record()
        .stream_name(stream)
        .partition_key(partition_key)
        .set_explicit_hash_key(explicit_hash_key)
        .data(Blob::new(data.to_vec()))
        .send()
        .await?;
    Ok(out.sequence_number)
}

async fn put_many(bed: &TestBed, stream: &str, prefix: &str, n: usize) -> Result<(), BoxError> {
    for i in 0..n {
        put(
            bed,
            stream,
            &format!("{prefix}-{i}"),
            format!("{prefix} {i}").as_bytes(),
        )
        .await?;
    }
    Ok(())
}

/// Reads batches until `count` user records arrived (or the shard ended); returns the records and
/// the batches' sizes.
async fn read_records(
    reader: &mut ShardReader,
    count: usize,
) -> Result<(Vec<Record>, Vec<usize>), BoxError> {
    let mut records = Vec::new();
    let mut sizes = Vec::new();
    while records.len() < count {
        let batch = tokio::time::timeout(PATIENCE, reader.next())
            .await
            .map_err(|_| format!("only {} of {count} records arrived", records.len()))?
            .ok_or("reader ended early")??;
        sizes.push(batch.records.len());
        let end = batch.is_shard_end();
        records.extend(batch.records.iter().cloned());
        if end {
            break;
        }
    }
    Ok((records, sizes))
}

fn texts(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(r.data()).into_owned())
        .collect()
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix} {i}")).collect()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) -> Result<(), BoxError> {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .map_err(|_| format!("timed out waiting until {what}").into())
}

/// Asserts that `condition` stays false for `window` (a bounded wait for something that must
/// not happen).
async fn stays_false(window: Duration, mut condition: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(window, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .is_err()
}

/// Counts the reader's calls, remembers the iterator types asked for and the error codes the
/// server returned, and replaces chosen `GetRecords` outcomes with an injected error.
#[derive(Clone)]
struct Probe {
    state: Arc<Mutex<ProbeState>>,
    inject: Arc<dyn Fn(usize) -> Option<&'static str> + Send + Sync>,
}

#[derive(Default, Debug)]
struct ProbeState {
    get_records: usize,
    iterator_types: Vec<String>,
    server_errors: Vec<String>,
    injected: usize,
}

#[derive(Clone, Debug)]
struct Inject(&'static str);

impl Storable for Inject {
    type Storer = StoreReplace<Self>;
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").finish_non_exhaustive()
    }
}

impl Probe {
    fn new(inject: impl Fn(usize) -> Option<&'static str> + Send + Sync + 'static) -> Self {
        Probe {
            state: Arc::default(),
            inject: Arc::new(inject),
        }
    }

    fn passive() -> Self {
        Probe::new(|_| None)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get_records(&self) -> usize {
        self.lock().get_records
    }

    fn client(&self, bed: &TestBed) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::from_conf(
            bed.kinesis_config()
                .retry_config(RetryConfig::disabled())
                .interceptor(self.clone())
                .build(),
        )
    }
}

impl Intercept for Probe {
    fn name(&self) -> &'static str {
        "Probe"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        if input.downcast_ref::<GetRecordsInput>().is_some() {
            let call = {
                let mut state = self.lock();
                state.get_records += 1;
                state.get_records
            };
            if let Some(code) = (self.inject)(call) {
                cfg.interceptor_state().store_put(Inject(code));
            }
        } else if let Some(input) = input.downcast_ref::<GetShardIteratorInput>() {
            let kind = input
                .shard_iterator_type
                .as_ref()
                .map_or("-", |k| k.as_str())
                .to_owned();
            self.lock().iterator_types.push(kind);
        }
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(outcome) = context.output_or_error_mut() else {
            return Ok(());
        };
        if let Err(error) = outcome
            && let Some(code) = error
                .as_operation_error()
                .and_then(|e| e.downcast_ref::<GetRecordsError>())
                .and_then(|e| e.code())
        {
            self.lock().server_errors.push(code.to_owned());
        }
        if let Some(Inject(code)) = cfg.load::<Inject>().cloned() {
            let error = GetRecordsError::generic(
                ErrorMetadata::builder()
                    .code(code)
                    .message("injected by the test")
                    .build(),
            );
            *outcome = Err(OrchestratorError::operation(ErasedError::erase(error)));
            self.lock().injected += 1;
        }
        Ok(())
    }
}

/// A metrics recorder keeping counters and gauges in memory (installed thread-locally, so the
/// tests using it run on a current-thread runtime, where the reader's task runs too).
#[derive(Clone, Default)]
struct TestRecorder {
    values: Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>,
}

impl TestRecorder {
    fn slot(&self, key: &Key) -> Arc<AtomicU64> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(
            self.values
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(name)
                .or_default(),
        )
    }

    /// The sum of the counters named `name` whose labels include all of `labels`.
    fn counter(&self, name: &str, labels: &[&str]) -> u64 {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(key, _)| {
                key.starts_with(&format!("{name}{{")) && labels.iter().all(|l| key.contains(l))
            })
            .map(|(_, value)| value.load(Ordering::Relaxed))
            .sum()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.slot(key))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.slot(key))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

// ---------------------------------------------------------------------------------------------
// Positions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reads_everything_from_trim_horizon_across_batches() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    put_many(&bed, &stream, "plain", 23).await?;
    let entries: Vec<_> = (0..5)
        .map(|i| (format!("agg-{i}"), None, format!("agg {i}").into_bytes()))
        .collect();
    let aggregate_seq = put_aggregate(&bed, &stream, &entries).await?;
    put(&bed, &stream, "last", b"last").await?;

    let config = fast().max_records(4).build()?;
    let retriever = PollingRetriever::new(bed.kinesis().clone(), &stream, config);
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let (records, sizes) = read_records(&mut reader, 29).await?;

    let mut expected = numbered("plain", 0..23);
    expected.extend(numbered("agg", 0..5));
    expected.push("last".to_owned());
    assert_eq!(texts(&records), expected);
    assert!(sizes.len() >= 7, "several batches: {sizes:?}");
    // An aggregate is never split: at most 4 Kinesis records per call, so a batch holding it
    // holds its 5 user records.
    assert!(sizes.iter().all(|&n| n <= 4 + 4), "{sizes:?}");
    let subs: Vec<_> = records[23..28]
        .iter()
        .map(|r| {
            (
                r.sequence_number().as_str().to_owned(),
                r.sub_sequence_number(),
                r.is_aggregated(),
            )
        })
        .collect();
    let expected_subs: Vec<_> = (0..5).map(|i| (aggregate_seq.clone(), i, true)).collect();
    assert_eq!(subs, expected_subs);
    assert_eq!(records[23].partition_key(), "agg-0");
    assert!(!records[0].is_aggregated());
    assert!(records[0].approximate_arrival_timestamp().is_some());
    // Positions strictly increase.
    let positions: Vec<_> = records
        .iter()
        .map(Record::extended_sequence_number)
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(reader.shard_id(), SHARD);
    reader.close().await;
    Ok(())
}

#[tokio::test]
async fn latest_sees_only_records_put_after_start() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    put_many(&bed, &stream, "old", 5).await?;

    let retriever = PollingRetriever::new(bed.kinesis().clone(), &stream, fast().build()?);
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::Latest)
        .await?;
    put_many(&bed, &stream, "new", 5).await?;
    let (records, _) = read_records(&mut reader, 5).await?;
    assert_eq!(texts(&records), numbered("new", 0..5));
    reader.close().await;
    Ok(())
}

#[tokio::test]
async fn at_timestamp_starts_at_the_first_record_at_or_after_it() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    put_many(&bed, &stream, "before", 4).await?;
    // A point strictly between the two groups' arrival times: the next whole second (the
    // embedded server records arrival times in whole seconds). Wait for the clock to pass it
    // before putting the second group.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() + 1);
    wait_until("the clock passes the timestamp", || SystemTime::now() > at).await?;
    put_many(&bed, &stream, "after", 4).await?;

    let retriever = PollingRetriever::new(bed.kinesis().clone(), &stream, fast().build()?);
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::AtTimestamp(at))
        .await?;
    let (records, _) = read_records(&mut reader, 4).await?;
    assert_eq!(texts(&records), numbered("after", 0..4));
    assert!(
        records
            .iter()
            .all(|r| r.approximate_arrival_timestamp().is_some_and(|t| t >= at))
    );
    reader.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Resuming inside an aggregate
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn resume_from_a_sub_sequence_checkpoint_delivers_exactly_the_rest() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    put(&bed, &stream, "first", b"first").await?;
    let entries: Vec<_> = (0..10)
        .map(|i| (format!("k{i}"), None, format!("sub {i}").into_bytes()))
        .collect();
    let seq = SequenceNumber::new(put_aggregate(&bed, &stream, &entries).await?)?;
    put(&bed, &stream, "last", b"last").await?;

    for (sub, expire_first_read) in [(3, false), (0, false), (9, false), (3, true)] {
        // Optionally make the first GetRecords fail with an expired iterator: the restart must
        // keep the checkpoint filter.
        let probe = Probe::new(move |call| {
            (expire_first_read && call == 1).then_some("ExpiredIteratorException")
        });
        let retriever =
            PollingRetriever::new(probe.client(&bed), &stream, fast().max_records(1).build()?);
        let position = StartingPosition::AfterCheckpoint {
            sequence_number: seq.clone(),
            sub_sequence_number: sub,
        };
        let mut reader = retriever.start(SHARD, None, position).await?;
        let remaining = 9 - sub as usize;
        let (records, _) = read_records(&mut reader, remaining + 1).await?;
        let mut expected = numbered("sub", sub as usize + 1..10);
        expected.push("last".to_owned());
        assert_eq!(texts(&records), expected, "checkpoint {seq}/{sub}");
        assert!(
            records[..remaining]
                .iter()
                .all(|r| r.sequence_number() == &seq)
        );
        let types = probe.lock().iterator_types.clone();
        let expected_types = if expire_first_read {
            vec!["AT_SEQUENCE_NUMBER"; 2]
        } else {
            vec!["AT_SEQUENCE_NUMBER"]
        };
        assert_eq!(types, expected_types);
        reader.close().await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Deaggregation policies
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn out_of_range_aggregates_are_dropped_by_default_and_delivered_on_request() -> TestResult {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    // Read the shard as if it covered only the lower half of the hash key space (as a child
    // after a split): an aggregate holding a key of the upper half is partly out of range.
    let lower_half = HashKeyRange::new(0, u128::MAX / 2)?;
    let high = (u128::MAX - 5).to_string();
    let entries = vec![
        ("a".to_owned(), Some("1".to_owned()), b"in 0".to_vec()),
        ("b".to_owned(), Some(high), b"out 1".to_vec()),
        ("c".to_owned(), Some("2".to_owned()), b"in 2".to_vec()),
    ];
    put_aggregate(&bed, &stream, &entries).await?;
    put(&bed, &stream, "plain", b"plain").await?;

    let deliver = PollingRetriever::new(
        bed.kinesis().clone(),
        &stream,
        fast().out_of_range(OutOfRangePolicy::Deliver).build()?,
    );
    let mut reader = deliver
        .start(SHARD, Some(lower_half), StartingPosition::TrimHorizon)
        .await?;
    let (records, _) = read_records(&mut reader, 4).await?;
    assert_eq!(texts(&records), ["in 0", "out 1", "in 2", "plain"]);
    reader.close().await;
    assert_eq!(
        recorder.counter(names::OUT_OF_RANGE_RECORDS, &["action=delivered"]),
        1
    );

    let java = PollingRetriever::new(bed.kinesis().clone(), &stream, fast().build()?);
    let mut reader = java
        .start(SHARD, Some(lower_half), StartingPosition::TrimHorizon)
        .await?;
    let (records, _) = read_records(&mut reader, 1).await?;
    assert_eq!(texts(&records), ["plain"], "the whole aggregate is dropped");
    reader.close().await;
    assert_eq!(
        recorder.counter(names::OUT_OF_RANGE_RECORDS, &["action=dropped"]),
        3
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn malformed_aggregate_is_delivered_whole_and_counted() -> TestResult {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let mut bogus = kinesis_aggregation::MAGIC.to_vec();
    bogus.extend_from_slice(&[0u8; 40]); // magic, then no valid MD5
    put(&bed, &stream, "bogus", &bogus).await?;

    let retriever = PollingRetriever::new(bed.kinesis().clone(), &stream, fast().build()?);
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let (records, _) = read_records(&mut reader, 1).await?;
    assert_eq!(&records[0].data()[..], &bogus[..]);
    assert!(!records[0].is_aggregated());
    reader.close().await;
    assert_eq!(
        recorder.counter(
            names::AGGREGATES_PASSED_THROUGH,
            &["reason=digest_mismatch"]
        ),
        1
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Failures
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn expired_iterator_is_replaced_without_gap_or_duplicate() -> TestResult {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    put_many(&bed, &stream, "r", 50).await?;

    let probe = Probe::new(|call| (call == 3).then_some("ExpiredIteratorException"));
    let config = fast().max_records(10).build()?;
    let retriever = PollingRetriever::new(probe.client(&bed), &stream, config);
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let (records, _) = read_records(&mut reader, 50).await?;
    assert_eq!(texts(&records), numbered("r", 0..50));
    assert_eq!(
        probe.lock().iterator_types,
        ["TRIM_HORIZON", "AFTER_SEQUENCE_NUMBER"]
    );
    assert_eq!(recorder.counter(names::EXPIRED_ITERATORS, &[]), 1);
    reader.close().await;
    Ok(())
}

#[tokio::test]
async fn iterator_expired_by_the_server_while_the_processor_holds_the_prefetch() -> TestResult {
    // Only the embedded server lets the bed shorten the iterator lifetime (to 1 s here; it is
    // 5 minutes elsewhere).
    if Backend::from_env()? != Backend::Embedded {
        return Ok(());
    }
    let bed =
        TestBed::start_with_options(BedOptions::default().iterator_ttl(Duration::from_secs(1)))
            .await?;
    let stream = bed.create_stream(1).await?;
    put_many(&bed, &stream, "r", 30).await?;

    let probe = Probe::passive();
    let config = fast().max_records(10).max_pending_batches(1).build()?;
    let retriever = PollingRetriever::new(probe.client(&bed), &stream, config);
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    wait_until("the first batch is fetched", || {
        reader.prefetched().batches == 1
    })
    .await?;
    assert_eq!(probe.get_records(), 1);
    // The fetcher now holds the next iterator and waits for room. Let it outlive its 1 s TTL:
    // the point of this test is real time passing, so this wait is the scenario itself.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(probe.get_records(), 1, "still waiting for room");

    let (records, _) = read_records(&mut reader, 30).await?;
    assert_eq!(texts(&records), numbered("r", 0..30));
    reader.close().await;
    let (server_errors, iterator_types) = {
        let state = probe.lock();
        (state.server_errors.clone(), state.iterator_types.clone())
    };
    assert!(
        server_errors
            .iter()
            .any(|c| c == "ExpiredIteratorException"),
        "the server expired the iterator: {server_errors:?}"
    );
    assert_eq!(iterator_types[0], "TRIM_HORIZON");
    assert!(
        iterator_types[1..]
            .iter()
            .all(|t| t == "AFTER_SEQUENCE_NUMBER")
    );
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn throttling_backs_off_and_loses_nothing() -> TestResult {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    put_many(&bed, &stream, "r", 40).await?;

    // Every odd call of the first eight is throttled (the server still answered; the client
    // sees the error): the four others fetch the 40 records.
    let probe = Probe::new(|call| {
        (call % 2 == 1 && call < 9).then_some("ProvisionedThroughputExceededException")
    });
    let config = fast().max_records(10).build()?;
    let retriever = PollingRetriever::new(probe.client(&bed), &stream, config);
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let (records, _) = read_records(&mut reader, 40).await?;
    assert_eq!(texts(&records), numbered("r", 0..40));
    reader.close().await;
    let injected = probe.lock().injected as u64;
    assert_eq!(injected, 4);
    assert_eq!(
        recorder.counter(names::GET_RECORDS_THROTTLED, &[]),
        injected
    );
    // The throttled iterator was retried as is: one iterator for the whole read.
    assert_eq!(probe.lock().iterator_types, ["TRIM_HORIZON"]);
    Ok(())
}

#[tokio::test]
async fn fatal_error_is_returned_once_then_the_reader_ends() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let probe = Probe::new(|call| (call == 1).then_some("AccessDeniedException"));
    let retriever = PollingRetriever::new(probe.client(&bed), &stream, fast().build()?);
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let first = tokio::time::timeout(PATIENCE, reader.next()).await?;
    match first {
        Some(Err(kinesis_kcl::Error::Kinesis { operation, .. })) => {
            assert_eq!(operation, "GetRecords")
        }
        other => panic!("expected a Kinesis error, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(PATIENCE, reader.next())
            .await?
            .is_none()
    );

    // A shard that does not exist (`ResourceNotFoundException`: trimmed, as the Java KCL
    // reads it) is not an error: its end comes at once, with no children known.
    let mut gone = retriever
        .start("shardId-000000000009", None, StartingPosition::TrimHorizon)
        .await?;
    let batch = tokio::time::timeout(PATIENCE, gone.next())
        .await?
        .ok_or("the reader ended without a shard end")??;
    assert!(batch.records.is_empty());
    assert_eq!(batch.shard_end, Some(Vec::new()), "shard end, no children");
    assert!(tokio::time::timeout(PATIENCE, gone.next()).await?.is_none());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shard end
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn closed_shard_ends_with_a_shard_end_batch() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    put_many(&bed, &stream, "parent", 7).await?;
    bed.kinesis()
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(SHARD)
        .new_starting_hash_key((1u128 << 127).to_string())
        .send()
        .await?;
    bed.wait_for_stream_active(&stream).await?;
    put_many(&bed, &stream, "child", 5).await?;

    let retriever = PollingRetriever::new(
        bed.kinesis().clone(),
        &stream,
        fast().max_records(3).build()?,
    );
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let mut records = Vec::new();
    let end: RecordBatch = loop {
        let batch = tokio::time::timeout(PATIENCE, reader.next())
            .await?
            .ok_or("the reader ended without a shard end")??;
        records.extend(batch.records.iter().cloned());
        if batch.is_shard_end() {
            break batch;
        }
    };
    assert_eq!(texts(&records), numbered("parent", 0..7));
    let children = end.shard_end.clone().unwrap_or_default();
    // ferrokinesis does not report ChildShards in GetRecords; Kinesis does.
    for child in &children {
        assert_eq!(child.parent_shard_ids, [SHARD]);
    }
    drop(end);
    assert!(
        tokio::time::timeout(PATIENCE, reader.next())
            .await?
            .is_none()
    );
    reader.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Prefetch bound
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn prefetch_stops_fetching_at_the_bound() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let payload = vec![b'x'; 1_000];
    for i in 0..60 {
        put(&bed, &stream, &format!("k{i}"), &payload).await?;
    }

    // (limit, max_records per call, calls until the bound is reached)
    let cases = [
        ("batches", fast().max_records(5).max_pending_batches(3), 3),
        (
            "records",
            fast()
                .max_records(5)
                .max_pending_batches(100)
                .max_pending_records(12),
            3,
        ),
        (
            "bytes",
            fast()
                .max_records(2)
                .max_pending_batches(100)
                .max_pending_bytes(5_000),
            3,
        ),
    ];
    for (limit, config, calls) in cases {
        let probe = Probe::passive();
        let retriever = PollingRetriever::new(probe.client(&bed), &stream, config.build()?);
        let mut reader = retriever
            .start(SHARD, None, StartingPosition::TrimHorizon)
            .await?;
        wait_until("the prefetch fills", || probe.get_records() >= calls).await?;
        assert!(
            stays_false(Duration::from_millis(300), || probe.get_records() > calls).await,
            "{limit}: fetched beyond the bound ({} calls)",
            probe.get_records()
        );
        let held = reader.prefetched();
        assert_eq!(held.batches, calls, "{limit}: {held:?}");

        // The processor takes a batch and keeps it: it still counts, nothing more is fetched.
        let batch = reader.next().await.ok_or("no batch")??;
        assert!(
            stays_false(Duration::from_millis(200), || probe.get_records() > calls).await,
            "{limit}: a held batch must still count"
        );
        // Done with it: room for exactly one more fetch.
        drop(batch);
        wait_until("one more fetch", || probe.get_records() == calls + 1).await?;
        assert!(
            stays_false(Duration::from_millis(200), || probe.get_records()
                > calls + 1)
            .await,
            "{limit}: one batch released, one fetched"
        );
        reader.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn closing_or_dropping_a_reader_stops_its_task() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let probe = Probe::passive();
    // An idle shard: the task sleeps between empty reads.
    let config = fast()
        .idle_time_between_reads(Duration::from_millis(10))
        .build()?;
    let retriever = PollingRetriever::new(probe.client(&bed), &stream, config);

    let reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    wait_until("polling runs", || probe.get_records() >= 2).await?;
    tokio::time::timeout(PATIENCE, reader.close()).await?;
    let after_close = probe.get_records();
    assert!(
        stays_false(Duration::from_millis(100), || probe.get_records()
            > after_close)
        .await
    );

    let probe = Probe::passive();
    let retriever = PollingRetriever::new(
        probe.client(&bed),
        &stream,
        fast()
            .idle_time_between_reads(Duration::from_millis(10))
            .build()?,
    );
    let reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    wait_until("polling runs", || probe.get_records() >= 2).await?;
    drop(reader);
    // An aborted task may finish the call in flight, then stops.
    let after_drop = probe.get_records();
    assert!(
        stays_false(Duration::from_millis(200), || probe.get_records()
            > after_drop + 1)
        .await
    );
    Ok(())
}
