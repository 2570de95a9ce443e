//! Enhanced fan-out retrieval against the test bed's real Kinesis server (ferrokinesis serves
//! `SubscribeToShard`): consumer registration and reuse, positions, deaggregation, renewal
//! without gap or duplicate, retried subscription errors, shard end with children, the
//! prefetch bound, deregistration on shutdown, and a polling and a fan-out application reading
//! one stream side by side.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::{ErrorMetadata, ProvideErrorMetadata};
use aws_sdk_kinesis::operation::subscribe_to_shard::{
    SubscribeToShardError, SubscribeToShardInput,
};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ConsumerStatus;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, Error as ErasedError, FinalizerInterceptorContextMut,
};
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use bytes::Bytes;
use kinesis_integration::{BedOptions, KinesisTransport, TestBed};
use kinesis_kcl::ShardContext;
use kinesis_kcl::metrics as names;
use kinesis_kcl::retrieval::{
    FanOutConfig, FanOutConfigBuilder, FanOutRetriever, ShardReader, StartingPosition,
};
use kinesis_kcl::{
    Checkpointer, InitialPosition, LeaseConfig, PollingConfig, ProcessRecordsInput, ProcessorError,
    Record, Retrieval, ShardRecordProcessor, Worker,
};
use kinesis_kpl::{Producer, UserRecord};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Every bed of this suite serves Kinesis over TLS + HTTP/2 (a generated test CA), the
/// transport AWS serves SubscribeToShard on, on the embedded and the emulators backends alike.
fn h2() -> BedOptions {
    BedOptions::default().kinesis_transport(KinesisTransport::TlsHttp2)
}

type TestResult = Result<(), BoxError>;

const SHARD: &str = "shardId-000000000000";
/// Generous bound for anything that should happen promptly.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Fast pacing for tests: quick registration polls, short backoff and subscription spacing.
fn fast(name: &str) -> FanOutConfigBuilder {
    // `RUST_LOG=kinesis_kcl=debug` shows the subscriptions.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    FanOutConfig::builder()
        .consumer_name(name)
        .registration_retry_delay(Duration::from_millis(50))
        .min_time_between_subscribes(Duration::from_millis(50))
        .retry_min_delay(Duration::from_millis(20))
        .retry_max_delay(Duration::from_millis(100))
}

fn consumer_name() -> String {
    kinesis_integration::unique_name("consumer")
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

/// Puts `values` as user records through the KPL (aggregated), key `key-{v % keys}`.
async fn produce(
    bed: &TestBed,
    stream: &str,
    values: std::ops::Range<u64>,
    keys: u64,
) -> TestResult {
    let producer = Producer::new(
        bed.kinesis().clone(),
        stream,
        kinesis_kpl::ProducerConfig::default(),
    )
    .await?;
    let mut pending = Vec::new();
    for v in values {
        pending.push(producer.put_record(UserRecord::new(
            format!("key-{}", v % keys),
            Bytes::from(v.to_string()),
        )));
    }
    for p in pending {
        p.await?;
    }
    producer.shutdown().await;
    Ok(())
}

/// Reads batches until `count` user records arrived (or the shard ended).
async fn read_records(reader: &mut ShardReader, count: usize) -> Result<Vec<Record>, BoxError> {
    let mut records = Vec::new();
    while records.len() < count {
        let batch = tokio::time::timeout(PATIENCE, reader.next())
            .await
            .map_err(|_| format!("only {} of {count} records arrived", records.len()))?
            .ok_or("reader ended early")??;
        let end = batch.is_shard_end();
        records.extend(batch.records.iter().cloned());
        if end {
            break;
        }
    }
    Ok(records)
}

fn values(records: &[Record]) -> Result<Vec<u64>, BoxError> {
    records
        .iter()
        .map(|r| Ok(std::str::from_utf8(r.data())?.parse()?))
        .collect()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) -> TestResult {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .map_err(|_| format!("timed out waiting until {what}").into())
}

/// Whether `condition` stays false for `window` (a bounded wait for something that must not
/// happen).
async fn stays_false(window: Duration, mut condition: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(window, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .is_err()
}

/// The consumer's status, `None` once it is gone.
async fn consumer_status(
    bed: &TestBed,
    stream: &str,
    name: &str,
) -> Result<Option<ConsumerStatus>, BoxError> {
    let arn = bed.stream_arn(stream).await?;
    match bed
        .kinesis()
        .describe_stream_consumer()
        .stream_arn(arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .consumer_description()
            .map(|d| d.consumer_status().clone())),
        Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The starting position of a `SubscribeToShard` call: type and sequence number.
type Position = (String, Option<String>);

/// Counts `SubscribeToShard` calls and replaces chosen outcomes with an injected error code.
#[derive(Clone)]
struct Probe {
    subscribes: Arc<AtomicU64>,
    positions: Arc<Mutex<Vec<Position>>>,
    inject: Arc<dyn Fn(u64) -> Option<&'static str> + Send + Sync>,
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
    fn new(inject: impl Fn(u64) -> Option<&'static str> + Send + Sync + 'static) -> Self {
        Probe {
            subscribes: Arc::default(),
            positions: Arc::default(),
            inject: Arc::new(inject),
        }
    }

    fn subscribes(&self) -> u64 {
        self.subscribes.load(Ordering::SeqCst)
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
        if let Some(input) = context.input().downcast_ref::<SubscribeToShardInput>() {
            if let Some(position) = &input.starting_position {
                self.positions.lock().unwrap().push((
                    position.r#type().as_str().to_owned(),
                    position.sequence_number().map(str::to_owned),
                ));
            }
            let call = self.subscribes.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(code) = (self.inject)(call) {
                cfg.interceptor_state().store_put(Inject(code));
            }
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
        if let Some(Inject(code)) = cfg.load::<Inject>().cloned() {
            let error = SubscribeToShardError::generic(
                ErrorMetadata::builder()
                    .code(code)
                    .message("injected by the test")
                    .build(),
            );
            // The subscription the server opened is dropped with the replaced output.
            *outcome = Err(OrchestratorError::operation(ErasedError::erase(error)));
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
// Registration
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_consumer_is_registered_once_and_reused() -> TestResult {
    let bed = TestBed::start_with_options(h2()).await?;
    let stream = bed.create_stream(1).await?;
    let name = consumer_name();
    assert_eq!(consumer_status(&bed, &stream, &name).await?, None);

    // Three workers start at once: one registers, the others find it; all agree on the ARN.
    let config = fast(&name).build()?;
    let (a, b, c) = tokio::join!(
        FanOutRetriever::register(bed.kinesis().clone(), &stream, config.clone()),
        FanOutRetriever::register(bed.kinesis().clone(), &stream, config.clone()),
        FanOutRetriever::register(bed.kinesis().clone(), &stream, config.clone()),
    );
    let (a, b, c) = (a?, b?, c?);
    assert_eq!(a.consumer_arn(), b.consumer_arn());
    assert_eq!(a.consumer_arn(), c.consumer_arn());
    assert_eq!(
        consumer_status(&bed, &stream, &name).await?,
        Some(ConsumerStatus::Active)
    );
    let listed = bed
        .kinesis()
        .list_stream_consumers()
        .stream_arn(bed.stream_arn(&stream).await?)
        .send()
        .await?;
    assert_eq!(listed.consumers().len(), 1, "one consumer, not three");

    // A restart reuses it.
    let again = FanOutRetriever::register(bed.kinesis().clone(), &stream, config.clone()).await?;
    assert_eq!(again.consumer_arn(), a.consumer_arn());

    // A given ARN is used as is.
    let by_arn = FanOutRetriever::register(
        bed.kinesis().clone(),
        &stream,
        FanOutConfig::builder()
            .consumer_arn(a.consumer_arn())
            .build()?,
    )
    .await?;
    assert_eq!(by_arn.consumer_arn(), a.consumer_arn());

    // Neither a name nor an ARN: a configuration error, no call.
    assert!(matches!(
        FanOutRetriever::register(bed.kinesis().clone(), &stream, FanOutConfig::default()).await,
        Err(kinesis_kcl::Error::Config(_))
    ));

    // Deregistered: gone (after DELETING); registering the name again makes a new one.
    a.deregister().await?;
    let status = consumer_status(&bed, &stream, &name).await?;
    assert!(
        matches!(status, None | Some(ConsumerStatus::Deleting)),
        "{status:?}"
    );
    let fresh = FanOutRetriever::register(bed.kinesis().clone(), &stream, config).await?;
    assert_eq!(
        consumer_status(&bed, &stream, &name).await?,
        Some(ConsumerStatus::Active)
    );
    fresh.deregister().await?;
    // Deregistering twice is fine.
    fresh.deregister().await?;
    Ok(())
}

#[tokio::test]
async fn an_unknown_stream_fails_registration() -> TestResult {
    let bed = TestBed::start_with_options(h2()).await?;
    let result = FanOutRetriever::register(
        bed.kinesis().clone(),
        "no-such-stream",
        fast(&consumer_name()).build()?,
    )
    .await;
    assert!(
        matches!(result, Err(kinesis_kcl::Error::Kinesis { .. })),
        "{result:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Positions and deaggregation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn positions_deaggregation_and_sub_sequence_resume() -> TestResult {
    let bed = TestBed::start_with_options(h2()).await?;
    let stream = bed.create_stream(1).await?;
    let n = 500;
    produce(&bed, &stream, 0..n, 7).await?;
    let retriever = FanOutRetriever::register(
        bed.kinesis().clone(),
        &stream,
        fast(&consumer_name()).build()?,
    )
    .await?;

    // TRIM_HORIZON: everything, in order, deaggregated.
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let all = read_records(&mut reader, n as usize).await?;
    reader.close().await;
    assert_eq!(values(&all)?, (0..n).collect::<Vec<_>>());
    assert!(all.iter().any(Record::is_aggregated), "the KPL aggregated");
    let positions: Vec<_> = all.iter().map(Record::extended_sequence_number).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "strictly in order"
    );

    // After a checkpoint inside an aggregate: exactly the rest.
    let cut = all
        .iter()
        .position(|r| r.is_aggregated() && r.sub_sequence_number() > 0)
        .ok_or("a record inside an aggregate")?;
    let checkpoint = &all[cut];
    let mut resumed = retriever
        .start(
            SHARD,
            None,
            StartingPosition::AfterCheckpoint {
                sequence_number: checkpoint.sequence_number().clone(),
                sub_sequence_number: checkpoint.sub_sequence_number(),
            },
        )
        .await?;
    let rest = read_records(&mut resumed, all.len() - cut - 1).await?;
    resumed.close().await;
    assert_eq!(values(&rest)?, values(&all[cut + 1..])?);

    // AT_SEQUENCE_NUMBER of a plain record includes it; AFTER excludes it.
    let first = put(&bed, &stream, "plain", b"1000").await?;
    put(&bed, &stream, "plain", b"1001").await?;
    let seq = kinesis_kcl::lease::SequenceNumber::new(first)?;
    let mut at = retriever
        .start(SHARD, None, StartingPosition::AtSequenceNumber(seq.clone()))
        .await?;
    assert_eq!(values(&read_records(&mut at, 2).await?)?, [1000, 1001]);
    at.close().await;
    let mut after = retriever
        .start(SHARD, None, StartingPosition::AfterSequenceNumber(seq))
        .await?;
    assert_eq!(values(&read_records(&mut after, 1).await?)?, [1001]);
    after.close().await;

    // LATEST: only what is put after `start` returned.
    let mut latest = retriever
        .start(SHARD, None, StartingPosition::Latest)
        .await?;
    put(&bed, &stream, "plain", b"2000").await?;
    assert_eq!(values(&read_records(&mut latest, 1).await?)?, [2000]);
    latest.close().await;

    // AT_TIMESTAMP: from the first record at or after it. The embedded server records arrival
    // times in whole seconds: take the next whole second, and put once the clock passed it.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?;
    let mark = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs() + 1);
    wait_until("the clock passes the timestamp", || {
        SystemTime::now() > mark
    })
    .await?;
    put(&bed, &stream, "plain", b"3000").await?;
    let mut at_time = retriever
        .start(SHARD, None, StartingPosition::AtTimestamp(mark))
        .await?;
    let got = values(&read_records(&mut at_time, 1).await?)?;
    at_time.close().await;
    assert_eq!(got, [3000]);
    retriever.deregister().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Renewal
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn renewal_has_no_gap_and_no_duplicate() -> TestResult {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // Subscriptions end after 400 ms: many renewals while records keep arriving.
    let bed =
        TestBed::start_with_options(h2().subscribe_to_shard_session(Duration::from_millis(400)))
            .await?;
    let stream = bed.create_stream(1).await?;
    let probe = Probe::new(|_| None);
    let retriever =
        FanOutRetriever::register(probe.client(&bed), &stream, fast(&consumer_name()).build()?)
            .await?;
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let n = 400u64;
    let started = Instant::now();
    let mut got = Vec::new();
    let mut next = 0u64;
    // Put records steadily (a few per 10 ms) while reading, for several subscription lifetimes.
    while (got.len() as u64) < n {
        if next < n {
            for _ in 0..4 {
                put(
                    &bed,
                    &stream,
                    &format!("k{next}"),
                    next.to_string().as_bytes(),
                )
                .await?;
                next += 1;
            }
        }
        match tokio::time::timeout(Duration::from_millis(10), reader.next()).await {
            Ok(Some(batch)) => got.extend(values(&batch?.records)?),
            Ok(None) => return Err("reader ended".into()),
            Err(_) => {}
        }
        if started.elapsed() > PATIENCE {
            return Err(format!("only {} of {n} records after {PATIENCE:?}", got.len()).into());
        }
    }
    // Nothing more arrives: no duplicate after the last one either.
    assert!(
        stays_false(Duration::from_millis(1_000), || reader.prefetched().records
            > 0)
        .await,
        "a record arrived twice"
    );
    // Close just after a renewal, 400 ms from the next one: a close in the middle of a
    // renewal's `SubscribeToShard` call would leave a position the probe saw without its
    // subscription (`a_renewal_is_counted_when_its_successor_subscription_is_made` closes while
    // renewing).
    let renewed = recorder.counter(names::FANOUT_RENEWALS, &[]);
    wait_until("a renewal", || {
        recorder.counter(names::FANOUT_RENEWALS, &[]) > renewed
    })
    .await?;
    reader.close().await;
    let renewals = recorder.counter(names::FANOUT_RENEWALS, &[]);
    let subscriptions = recorder.counter(names::FANOUT_SUBSCRIPTIONS, &[]);
    // ferrokinesis ignores the position's sequence number: each renewal starts over at
    // TRIM_HORIZON and the repeats are dropped (Kinesis repeats nothing).
    let skipped = recorder.counter(names::FANOUT_RECORDS_SKIPPED, &[]);
    eprintln!(
        "REPORT fan-out renewal: {n} records in {:?} over {subscriptions} subscriptions \
         ({renewals} renewals), {skipped} repeated records dropped",
        started.elapsed()
    );
    assert_eq!(got, (0..n).collect::<Vec<_>>(), "no gap, no duplicate");
    assert!(renewals >= 2, "the test ran across renewals: {renewals}");
    // Every renewal subscribes again, once: the first subscription plus one per renewal (a
    // renewal is counted when its successor subscription is accepted, so a subscription the
    // server ended just before `close` counts no renewal).
    assert_eq!(
        subscriptions,
        renewals + 1,
        "{subscriptions} subscriptions for {renewals} renewals"
    );
    // Each renewal asked for the records after the last ContinuationSequenceNumber, which
    // only moves forward.
    let positions = probe.positions.lock().unwrap().clone();
    assert_eq!(positions.len() as u64, subscriptions);
    assert_eq!(positions[0], ("TRIM_HORIZON".to_owned(), None));
    let mut previous: Option<kinesis_kcl::lease::SequenceNumber> = None;
    for (kind, seq) in &positions[1..] {
        assert_eq!(kind, "AFTER_SEQUENCE_NUMBER", "{positions:?}");
        let seq = kinesis_kcl::lease::SequenceNumber::new(seq.clone().ok_or("no sequence")?)?;
        assert!(previous.as_ref().is_none_or(|p| *p <= seq), "{positions:?}");
        previous = Some(seq);
    }
    Ok(())
}

/// A renewal is counted when its successor subscription is made: a reader closed after the
/// server ended its subscription, before the next one, counts no renewal.
#[tokio::test(flavor = "current_thread")]
async fn a_renewal_is_counted_when_its_successor_subscription_is_made() -> TestResult {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    // Subscriptions end after 300 ms; the next one waits for the 2 s spacing.
    let bed =
        TestBed::start_with_options(h2().subscribe_to_shard_session(Duration::from_millis(300)))
            .await?;
    let stream = bed.create_stream(1).await?;
    let probe = Probe::new(|_| None);
    let config = fast(&consumer_name())
        .min_time_between_subscribes(Duration::from_secs(2))
        .build()?;
    let retriever = FanOutRetriever::register(probe.client(&bed), &stream, config).await?;
    let counts = || {
        (
            recorder.counter(names::FANOUT_SUBSCRIPTIONS, &[]),
            recorder.counter(names::FANOUT_RENEWALS, &[]),
        )
    };
    let reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    // The first subscription ended (at ~300 ms); its successor waits for the spacing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(probe.subscribes(), 1);
    assert_eq!(counts(), (1, 0), "(subscriptions, renewals) while renewing");
    wait_until("the renewal is made", || counts() == (2, 1)).await?;
    assert_eq!(probe.subscribes(), 2);
    // The second subscription ends too; close while its successor waits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    reader.close().await;
    assert_eq!(probe.subscribes(), 2);
    assert_eq!(counts(), (2, 1), "(subscriptions, renewals) after close");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "current_thread")]
async fn subscription_errors_are_retried_with_backoff_and_lose_nothing() -> TestResult {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let bed =
        TestBed::start_with_options(h2().subscribe_to_shard_session(Duration::from_millis(500)))
            .await?;
    let stream = bed.create_stream(1).await?;
    for i in 0..20u64 {
        put(&bed, &stream, "k", i.to_string().as_bytes()).await?;
    }
    // The first subscription: ResourceInUse, then LimitExceeded, then InternalFailure, then
    // it works. After the first renewal, two more failures.
    let probe = Probe::new(|call| match call {
        1 => Some("ResourceInUseException"),
        2 => Some("LimitExceededException"),
        3 => Some("InternalFailure"),
        5 => Some("ResourceInUseException"),
        6 => Some("KMSThrottlingException"),
        _ => None,
    });
    let client = probe.client(&bed);
    let min_gap = Duration::from_millis(100);
    let retriever = FanOutRetriever::register(
        client,
        &stream,
        fast(&consumer_name())
            .min_time_between_subscribes(min_gap)
            .build()?,
    )
    .await?;
    let started = Instant::now();
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    assert_eq!(probe.subscribes(), 4, "three failures, then a subscription");
    assert!(
        started.elapsed() >= min_gap * 3,
        "subscriptions are paced: {:?}",
        started.elapsed()
    );
    let first = read_records(&mut reader, 20).await?;
    assert_eq!(values(&first)?, (0..20).collect::<Vec<_>>());
    // Across the failing renewal, more records, none lost or repeated.
    wait_until("the failing renewal", || probe.subscribes() >= 7).await?;
    for i in 20..30u64 {
        put(&bed, &stream, "k", i.to_string().as_bytes()).await?;
    }
    let second = read_records(&mut reader, 10).await?;
    assert_eq!(values(&second)?, (20..30).collect::<Vec<_>>());
    reader.close().await;
    for (kind, count) in [
        ("resource_in_use", 2),
        ("limit_exceeded", 1),
        ("internal_failure", 1),
        ("kms_throttling", 1),
    ] {
        assert_eq!(
            recorder.counter(names::FANOUT_ERRORS, &[&format!("kind={kind}")]),
            count,
            "{kind}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_silent_connection_is_replaced_without_gap_or_duplicate() -> TestResult {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let bed = TestBed::start_with_options(h2()).await?;
    let stream = bed.create_stream(1).await?;
    // ferrokinesis sends an event at once, then one every 200 ms: with a 100 ms idle timeout
    // every subscription is given up as dropped after its first event, and replaced.
    let retriever = FanOutRetriever::register(
        bed.kinesis().clone(),
        &stream,
        fast(&consumer_name())
            .idle_timeout(Duration::from_millis(100))
            .build()?,
    )
    .await?;
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let mut got = Vec::new();
    for i in 0..30u64 {
        put(&bed, &stream, "k", i.to_string().as_bytes()).await?;
        if i % 10 == 9 {
            got.extend(values(&read_records(&mut reader, 10).await?)?);
        }
    }
    reader.close().await;
    assert_eq!(got, (0..30).collect::<Vec<_>>(), "no gap, no duplicate");
    let idle = recorder.counter(names::FANOUT_ERRORS, &["kind=idle"]);
    assert!(idle >= 2, "the connections were replaced: {idle}");
    assert!(recorder.counter(names::FANOUT_SUBSCRIPTIONS, &[]) > idle);
    Ok(())
}

#[tokio::test]
async fn a_missing_shard_ends_at_once_and_errors_past_the_budget_end_the_reader() -> TestResult {
    let bed = TestBed::start_with_options(h2()).await?;
    let stream = bed.create_stream(1).await?;
    let retriever = FanOutRetriever::register(
        bed.kinesis().clone(),
        &stream,
        fast(&consumer_name()).build()?,
    )
    .await?;
    // No such shard (`ResourceNotFoundException`: trimmed, as the Java KCL reads it): the
    // shard's end at once, with no children known, not retried.
    let started = Instant::now();
    let mut gone = retriever
        .start("shardId-000000000042", None, StartingPosition::TrimHorizon)
        .await?;
    let batch = tokio::time::timeout(PATIENCE, gone.next())
        .await?
        .ok_or("the reader ended without a shard end")??;
    assert!(batch.records.is_empty());
    assert_eq!(batch.shard_end, Some(Vec::new()), "shard end, no children");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Retried errors past the budget end the reader with the error.
    let probe = Probe::new(|call| (call > 1).then_some("InternalFailure"));
    let bed2 =
        TestBed::start_with_options(h2().subscribe_to_shard_session(Duration::from_millis(300)))
            .await?;
    let stream2 = bed2.create_stream(1).await?;
    let retriever2 = FanOutRetriever::register(
        probe.client(&bed2),
        &stream2,
        fast(&consumer_name())
            .retry_budget(Duration::from_millis(500))
            .build()?,
    )
    .await?;
    let mut reader = retriever2
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let end = tokio::time::timeout(PATIENCE, async {
        loop {
            match reader.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await?;
    assert!(
        matches!(end, Some(kinesis_kcl::Error::Kinesis { .. })),
        "{end:?}"
    );
    assert!(reader.next().await.is_none(), "the error is returned once");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shard end, flow control
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_closed_shard_ends_with_its_children() -> TestResult {
    let bed = TestBed::start_with_options(h2()).await?;
    let stream = bed.create_stream(1).await?;
    for i in 0..10u64 {
        put(&bed, &stream, &format!("k{i}"), i.to_string().as_bytes()).await?;
    }
    let retriever = FanOutRetriever::register(
        bed.kinesis().clone(),
        &stream,
        fast(&consumer_name()).build()?,
    )
    .await?;
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let before = read_records(&mut reader, 10).await?;
    assert_eq!(values(&before)?, (0..10).collect::<Vec<_>>());
    bed.kinesis()
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(SHARD)
        .new_starting_hash_key((1u128 << 127).to_string())
        .send()
        .await?;
    bed.wait_for_stream_active(&stream).await?;
    let batch = tokio::time::timeout(PATIENCE, async {
        loop {
            match reader.next().await {
                Some(Ok(batch)) if batch.is_shard_end() => return Ok(batch),
                Some(Ok(batch)) => assert!(batch.records.is_empty(), "no new records"),
                Some(Err(e)) => return Err(e),
                None => panic!("the reader ended without a shard end"),
            }
        }
    })
    .await??;
    let children: BTreeSet<String> = batch
        .shard_end
        .as_ref()
        .map(|c| c.iter().map(|c| c.shard_id.clone()).collect())
        .unwrap_or_default();
    let listed: BTreeSet<String> = bed
        .kinesis()
        .list_shards()
        .stream_name(&stream)
        .send()
        .await?
        .shards()
        .iter()
        .filter(|s| s.parent_shard_id() == Some(SHARD))
        .map(|s| s.shard_id().to_owned())
        .collect();
    assert_eq!(children.len(), 2, "{children:?}");
    assert_eq!(children, listed);
    assert!(reader.next().await.is_none(), "nothing after the end");
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn a_slow_processor_stops_the_reading() -> TestResult {
    let recorder = TestRecorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let bed = TestBed::start_with_options(h2()).await?;
    let stream = bed.create_stream(1).await?;
    let retriever = FanOutRetriever::register(
        bed.kinesis().clone(),
        &stream,
        fast(&consumer_name()).max_pending_batches(2).build()?,
    )
    .await?;
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::Latest)
        .await?;
    // Records arrive one event at a time (ferrokinesis pushes every 200 ms): put one per event.
    let fetched = || recorder.counter(names::RECORDS_FETCHED, &[]);
    let mut put_count = 0u64;
    while reader.prefetched().batches < 2 {
        put(&bed, &stream, "k", put_count.to_string().as_bytes()).await?;
        put_count += 1;
        let target = put_count;
        wait_until("the record is fetched", || {
            fetched() >= target || reader.prefetched().batches >= 2
        })
        .await?;
    }
    // Full. More records are put; the reader reads no event while the processor holds them.
    let held_at = fetched();
    for i in 0..20u64 {
        put(&bed, &stream, "k", (put_count + i).to_string().as_bytes()).await?;
    }
    let total = put_count + 20;
    assert!(
        stays_false(Duration::from_millis(800), || fetched() > held_at).await,
        "read on while full: {} > {held_at}",
        fetched()
    );
    assert!(reader.prefetched().batches <= 2);
    // The processor catches up: every record arrives, in order.
    let all = read_records(&mut reader, total as usize).await?;
    assert_eq!(values(&all)?, (0..total).collect::<Vec<_>>());
    reader.close().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------------------------

/// Records what it sees, checkpoints every batch.
struct Collect {
    seen: Arc<Mutex<Vec<(u64, Duration)>>>,
    epoch: Instant,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Collect {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        let at = self.epoch.elapsed();
        {
            let mut seen = self.seen.lock().unwrap();
            for record in &input.records {
                seen.push((std::str::from_utf8(record.data())?.parse()?, at));
            }
        }
        checkpointer.checkpoint().await?;
        Ok(())
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
    retrieval: Retrieval,
    seen: Arc<Mutex<Vec<(u64, Duration)>>>,
) -> Result<
    (
        kinesis_kcl::WorkerHandle,
        tokio::task::JoinHandle<kinesis_kcl::Result<()>>,
    ),
    BoxError,
> {
    let epoch = Instant::now();
    let worker = Worker::builder(
        application,
        bed.kinesis().clone(),
        bed.dynamodb().clone(),
        move |_: &ShardContext| Collect {
            seen: Arc::clone(&seen),
            epoch,
        },
    )
    .stream(stream)
    .initial_position(InitialPosition::TrimHorizon)
    .lease_config(
        LeaseConfig::builder()
            .failover_time(Duration::from_secs(2))
            .build()?,
    )
    .retrieval(retrieval)
    .shard_sync_interval(Duration::from_millis(500))
    .parent_shard_poll_interval(Duration::from_millis(100))
    .build()?;
    let handle = worker.handle();
    Ok((handle, tokio::spawn(worker.run())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_polling_and_a_fan_out_application_each_see_every_record() -> TestResult {
    let bed = TestBed::start_with_options(h2()).await?;
    let stream = bed.create_stream(3).await?;
    let n = 3_000u64;
    let polling_seen = Arc::new(Mutex::new(Vec::new()));
    let fan_out_seen = Arc::new(Mutex::new(Vec::new()));
    let polling_app = bed.unique_table_name();
    let fan_out_app = bed.unique_table_name();
    let (polling, polling_task) = start_worker(
        &bed,
        &polling_app,
        &stream,
        Retrieval::Polling(
            PollingConfig::builder()
                .idle_time_between_reads(Duration::from_millis(50))
                .build()?,
        ),
        Arc::clone(&polling_seen),
    )?;
    let (fan_out, fan_out_task) = start_worker(
        &bed,
        &fan_out_app,
        &stream,
        Retrieval::FanOut(
            FanOutConfig::builder()
                .registration_retry_delay(Duration::from_millis(50))
                .deregister_on_shutdown(true)
                .build()?,
        ),
        Arc::clone(&fan_out_seen),
    )?;
    produce(&bed, &stream, 0..n, 100).await?;
    let distinct = |seen: &Arc<Mutex<Vec<(u64, Duration)>>>| {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(v, _)| *v)
            .collect::<BTreeSet<u64>>()
    };
    wait_until("both applications saw every record", || {
        distinct(&polling_seen).len() as u64 == n && distinct(&fan_out_seen).len() as u64 == n
    })
    .await?;
    assert_eq!(distinct(&polling_seen), (0..n).collect());
    assert_eq!(distinct(&fan_out_seen), (0..n).collect());
    // The fan-out application's consumer is named after it.
    assert_eq!(
        consumer_status(&bed, &stream, &fan_out_app).await?,
        Some(ConsumerStatus::Active)
    );
    assert_eq!(consumer_status(&bed, &stream, &polling_app).await?, None);
    polling.shutdown().await;
    fan_out.shutdown().await;
    polling_task.await??;
    fan_out_task.await??;
    // Deregistered on shutdown, as configured.
    let status = consumer_status(&bed, &stream, &fan_out_app).await?;
    assert!(
        matches!(status, None | Some(ConsumerStatus::Deleting)),
        "{status:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HTTP/2
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_ride_http2_through_renewals() -> TestResult {
    let bed =
        TestBed::start_with_options(h2().subscribe_to_shard_session(Duration::from_millis(500)))
            .await?;
    let stream = bed.create_stream(1).await?;
    // The SDK's HTTPS client, negotiating HTTP/2 with the bed's TLS endpoint as with AWS.
    let client = aws_sdk_kinesis::Client::from_conf(bed.kinesis_h2_config()?.build());
    let retriever =
        FanOutRetriever::register(client, &stream, fast(&consumer_name()).build()?).await?;
    let mut reader = retriever
        .start(SHARD, None, StartingPosition::TrimHorizon)
        .await?;
    let subscribes = || {
        bed.http_versions()
            .into_iter()
            .filter(|c| c.operation == "SubscribeToShard")
            .collect::<Vec<_>>()
    };
    for i in 0..20u64 {
        put(&bed, &stream, "k", i.to_string().as_bytes()).await?;
    }
    let first = read_records(&mut reader, 20).await?;
    // Through at least two renewals, then more records.
    let renewed = subscribes().len() + 2;
    wait_until("two renewals", || subscribes().len() >= renewed).await?;
    for i in 20..40u64 {
        put(&bed, &stream, "k", i.to_string().as_bytes()).await?;
    }
    let second = read_records(&mut reader, 20).await?;
    reader.close().await;
    let mut got = values(&first)?;
    got.extend(values(&second)?);
    assert_eq!(got, (0..40).collect::<Vec<_>>());
    let calls = subscribes();
    assert!(calls.len() >= 3, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.version == Some(kinesis_integration::tls::HttpVersion::Http2)),
        "every subscription over HTTP/2: {calls:?}"
    );
    Ok(())
}
