//! The producer against real servers (the bed's backend; default: in-process ferrokinesis).

#[path = "support/readback.rs"]
mod readback;

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_kinesis::config::retry::RetryConfig;
use bytes::Bytes;
use kinesis_integration::TestBed;
use kinesis_integration::faults::{FaultPlan, PutRecordsFaults};
use kinesis_kpl::{
    ConfigError, Error, Ordering, Producer, ProducerConfig, PutError, PutResult, UserRecord,
};
use readback::{by_data, read_all};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn client_without_sdk_retries(
    bed: &TestBed,
    faults: Option<&PutRecordsFaults>,
) -> aws_sdk_kinesis::Client {
    let mut config = bed.kinesis_config().retry_config(RetryConfig::disabled());
    if let Some(faults) = faults {
        config = config.interceptor(faults.clone());
    }
    aws_sdk_kinesis::Client::from_conf(config.build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_records_arrive_once_on_their_predicted_shards() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(8).await?;
    let producer = Producer::new(bed.kinesis().clone(), &stream, ProducerConfig::default()).await?;

    let records = bed.scaled(100_000);
    let keys = bed.scaled(5_000).min(records / 2);
    let mut futures = Vec::with_capacity(records);
    for n in 0..records {
        let key = format!("key-{}", n % keys);
        futures.push(producer.put_record(UserRecord::new(key, format!("record-{n}"))));
    }
    let mut results: Vec<PutResult> = Vec::with_capacity(records);
    for future in futures {
        results.push(future.await?);
    }
    producer.shutdown().await;
    assert_eq!(producer.outstanding_records(), 0);

    let stored = by_data(read_all(bed.kinesis(), &stream).await?);
    assert_eq!(stored.len(), records, "every record stored exactly once");
    let mut aggregated = 0usize;
    for (n, result) in results.iter().enumerate() {
        let read = &stored[&Bytes::from(format!("record-{n}"))];
        assert_eq!(read.partition_key, format!("key-{}", n % keys));
        assert!(
            (read.range.0..=read.range.1).contains(&read.hash_key),
            "record-{n} on its predicted shard"
        );
        assert_eq!(
            (
                &result.shard_id,
                &result.sequence_number,
                result.sub_sequence_number
            ),
            (
                &read.shard_id,
                &read.sequence_number,
                read.sub_sequence_number
            ),
            "record-{n}: the future reports where it was stored"
        );
        assert_eq!(result.attempts.len(), 1);
        assert!(result.attempts[0].success);
        aggregated += usize::from(result.sub_sequence_number > 0);
    }
    assert!(
        aggregated > records / 2,
        "records were aggregated ({aggregated})"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_throttling_and_failures_lose_nothing() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(4).await?;
    let faults = PutRecordsFaults::new(FaultPlan {
        call_throttle: 0.05,
        call_internal_failure: 0.05,
        entry_throttle: 0.2,
        entry_internal_failure: 0.05,
        ..FaultPlan::seeded(42)
    });
    let client = client_without_sdk_retries(&bed, Some(&faults));
    // Small aggregates and calls: many calls, so every kind of fault is drawn.
    let config = ProducerConfig::builder()
        .aggregation_max_size(1_024)
        .collection_max_count(20)
        .min_backoff(Duration::from_millis(10))
        .max_backoff(Duration::from_millis(200))
        .build()?;
    let producer = Producer::new(client, &stream, config).await?;

    let records = bed.scaled(20_000);
    let futures: Vec<_> = (0..records)
        .map(|n| producer.put_record(UserRecord::new(format!("k{}", n % 300), format!("r{n}"))))
        .collect();
    let mut retried = 0;
    let mut results = Vec::new();
    for future in futures {
        let result = future.await?;
        if result.attempts.len() > 1 {
            retried += 1;
            assert!(
                result.attempts[..result.attempts.len() - 1]
                    .iter()
                    .all(|a| !a.success && a.error_code.is_some())
            );
        }
        results.push(result);
    }
    producer.shutdown().await;

    let stats = faults.stats();
    assert!(
        stats.entries_throttled + stats.calls_throttled > 0
            && stats.entries_internal_failure + stats.calls_internal_failure > 0,
        "{stats:?}"
    );
    assert!(retried > 0, "some records needed retries");
    let stored = by_data(read_all(bed.kinesis(), &stream).await?);
    assert_eq!(stored.len(), records, "no record lost or duplicated");
    for (n, result) in results.iter().enumerate() {
        let read = &stored[&Bytes::from(format!("r{n}"))];
        assert_eq!(
            (&result.sequence_number, result.sub_sequence_number),
            (&read.sequence_number, read.sub_sequence_number)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_at_their_deadline_with_every_attempt() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let faults = PutRecordsFaults::new(FaultPlan {
        entry_throttle: 1.0,
        ..FaultPlan::seeded(1)
    });
    let client = client_without_sdk_retries(&bed, Some(&faults));
    let config = ProducerConfig::builder()
        .record_ttl(Duration::from_millis(800))
        .min_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(100))
        .build()?;
    let producer = Producer::new(client, &stream, config).await?;
    let started = std::time::Instant::now();
    let futures: Vec<_> = (0..10)
        .map(|n| producer.put_record(UserRecord::new(format!("k{n}"), format!("r{n}"))))
        .collect();
    for future in futures {
        match future.await {
            Err(PutError::Expired { attempts, .. }) => {
                assert!(attempts.len() >= 2, "retried before expiring: {attempts:?}");
                assert!(attempts.iter().all(|a| !a.success
                    && a.error_code.as_deref() == Some("ProvisionedThroughputExceededException")));
            }
            other => panic!("expected Expired, got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    producer.shutdown().await;
    assert!(
        read_all(bed.kinesis(), &stream).await?.is_empty(),
        "nothing was stored"
    );
    Ok(())
}

/// The KPL's `ReturnUserRecordOnFailure`: a failed put hands its record back, so that it can be
/// put again without the caller keeping a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_record_comes_back_intact_and_puts_again() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(2).await?;
    let faults = PutRecordsFaults::new(FaultPlan {
        entry_throttle: 1.0,
        ..FaultPlan::seeded(21)
    });
    let client = client_without_sdk_retries(&bed, Some(&faults));
    let refused = Producer::builder(client.clone(), &stream)
        .collection_max_count(0)
        .build()
        .await
        .expect_err("a bad setting fails the build");
    assert!(
        matches!(
            &refused,
            Error::InvalidConfig(ConfigError {
                setting: "collection_max_count",
                ..
            })
        ),
        "{refused}"
    );
    assert!(!refused.is_retryable());
    let producer = Producer::builder(client, &stream)
        .record_ttl(Duration::from_millis(300))
        .min_backoff(Duration::from_millis(20))
        .max_backoff(Duration::from_millis(50))
        .build()
        .await?;
    let original = UserRecord::new("user-17", Bytes::from(vec![7u8; 3_000]))
        .explicit_hash_key(u128::MAX.to_string());
    let error = producer
        .put_record(original.clone())
        .await
        .expect_err("every entry is throttled until the record expires");
    assert!(
        matches!(&error, PutError::Expired { attempts, .. } if !attempts.is_empty()),
        "{error}"
    );
    assert!(error.is_retryable());
    assert_eq!(error.record(), Some(&original));
    let record = error.into_record().expect("an expired record comes back");
    assert_eq!(record, original, "intact: key, hash key and data");

    faults.set_enabled(false);
    let stored = producer.put_record(record).await?;
    producer.shutdown().await;
    let read = by_data(read_all(bed.kinesis(), &stream).await?);
    assert_eq!(read.len(), 1, "stored once, by the second put");
    let read = &read[&original.data];
    assert_eq!(read.partition_key, "user-17");
    assert_eq!(read.range.1, u128::MAX, "routed by its explicit hash key");
    assert_eq!(
        (read.shard_id.as_str(), read.sequence_number.as_str()),
        (stored.shard_id.as_str(), stored.sequence_number.as_str())
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_ordering_keeps_per_key_order_across_retries() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(2).await?;
    let faults = PutRecordsFaults::new(FaultPlan {
        entry_throttle: 0.3,
        call_internal_failure: 0.05,
        ..FaultPlan::seeded(9)
    });
    let client = client_without_sdk_retries(&bed, Some(&faults));
    let config = ProducerConfig::builder()
        .ordering(Ordering::PerShardStrict)
        .aggregation_max_size(2_048)
        .record_max_buffered_time(Duration::from_millis(5))
        .min_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(50))
        .build()?;
    let producer = Producer::new(client, &stream, config).await?;
    let records = bed.scaled(4_000);
    let futures: Vec<_> = (0..records)
        .map(|n| producer.put_record(UserRecord::new(format!("key-{}", n % 20), format!("{n}"))))
        .collect();
    for future in futures {
        future.await?;
    }
    producer.shutdown().await;
    assert!(faults.stats().entries_throttled > 0);

    // Read order per shard is storage order; per key it must be put order.
    let reads = read_all(bed.kinesis(), &stream).await?;
    assert_eq!(reads.len(), records);
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for read in reads {
        let n: i64 = std::str::from_utf8(&read.data)?.parse()?;
        let previous = last.insert(read.partition_key.clone(), n).unwrap_or(-1);
        assert!(
            n > previous,
            "{} stored {n} after {previous}",
            read.partition_key
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_bounds_the_buffers() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let config = ProducerConfig::builder()
        .max_buffered_records(100)
        .max_buffered_bytes(2 * 1024 * 1024)
        // Nothing is sent before the flush, so the buffers stay full until then.
        .record_max_buffered_time(Duration::from_secs(60))
        .build()?;
    let producer = Producer::new(bed.kinesis().clone(), &stream, config).await?;
    let mut accepted = Vec::new();
    for n in 0..100 {
        accepted.push(producer.try_put_record(UserRecord::new("k", format!("r{n}")))?);
    }
    assert_eq!(producer.outstanding_records(), 100);
    let full = producer.try_put_record(UserRecord::new("k", "one too many"));
    assert!(
        matches!(
            full,
            Err(PutError::Full {
                max_records: 100,
                ..
            })
        ),
        "{:?}",
        full.err()
    );
    let full = full.err().and_then(PutError::into_record);
    assert_eq!(
        full,
        Some(UserRecord::new("k", "one too many")),
        "a refused record comes back"
    );
    // A waiting put goes ahead once room frees up.
    let waiting = tokio::spawn(producer.put_record(UserRecord::new("k", "waited")));
    producer.flush().await;
    for future in accepted {
        future.await?;
    }
    // It is accepted once room frees, possibly just after a flush: flush until it resolves.
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        while !waiting.is_finished() {
            producer.flush().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        waiting.await
    })
    .await???;
    assert_eq!(waited.attempts.len(), 1);

    // The byte bound: 1 MiB records into a 2 MiB bound.
    let big = || UserRecord::new("k", vec![7u8; 1024 * 1024 - 1]);
    let first = producer.try_put_record(big())?;
    let second = producer.try_put_record(big())?;
    assert!(matches!(
        producer.try_put_record(big()),
        Err(PutError::Full { .. })
    ));
    producer.flush().await;
    first.await?;
    second.await?;
    assert_eq!(producer.outstanding_records(), 0);
    producer.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_disturbs_nothing() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(2).await?;
    let producer = Producer::new(bed.kinesis().clone(), &stream, ProducerConfig::default()).await?;
    let good: Vec<_> = (0..50)
        .map(|n| producer.put_record(UserRecord::new(format!("k{n}"), format!("good-{n}"))))
        .collect();
    let bad = [
        UserRecord::new("", "empty key"),
        UserRecord::new("x".repeat(257), "long key"),
        UserRecord::new("k", vec![0u8; 1024 * 1024]),
        UserRecord::new("k", "bad ehk")
            .explicit_hash_key("340282366920938463463374607431768211456"),
        UserRecord::new("k", "bad ehk").explicit_hash_key("12a"),
    ];
    let mut errors = Vec::new();
    for record in bad {
        errors.push(
            producer
                .put_record(record)
                .await
                .expect_err("bad input fails"),
        );
    }
    assert!(matches!(
        errors[0],
        PutError::EmptyPartitionKey { max: 256, .. }
    ));
    assert!(matches!(
        errors[1],
        PutError::PartitionKeyTooLong {
            chars: 257,
            max: 256,
            ..
        }
    ));
    assert!(matches!(
        errors[2],
        PutError::RecordTooLarge {
            size: 1_048_577,
            max: 1_048_576,
            ..
        }
    ));
    assert!(matches!(errors[3], PutError::InvalidExplicitHashKey { .. }));
    assert!(
        errors[3]
            .to_string()
            .contains("340282366920938463463374607431768211456")
    );
    assert!(matches!(errors[4], PutError::InvalidExplicitHashKey { .. }));
    // A record with an explicit hash key lands on the shard owning that key.
    let routed = producer
        .put_record(UserRecord::new("k", "routed").explicit_hash_key("0"))
        .await?;
    for future in good {
        future.await?;
    }
    producer.shutdown().await;
    let stored = by_data(read_all(bed.kinesis(), &stream).await?);
    assert_eq!(stored.len(), 51);
    assert_eq!(stored[&Bytes::from("routed")].shard_id, routed.shard_id);
    assert_eq!(stored[&Bytes::from("routed")].range.0, 0);
    assert!(matches!(
        producer.put_record(UserRecord::new("k", "late")).await,
        Err(PutError::ShutDown { .. })
    ));
    Ok(())
}

/// Panics in the first PutRecords call it sees (a bug in user code such as an interceptor).
#[derive(Debug, Default)]
struct PanicOnce {
    fired: std::sync::atomic::AtomicBool,
}

impl aws_sdk_kinesis::config::Intercept for PanicOnce {
    fn name(&self) -> &'static str {
        "PanicOnce"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_kinesis::config::interceptors::BeforeSerializationInterceptorContextRef<
            '_,
        >,
        _cfg: &mut aws_sdk_kinesis::config::ConfigBag,
    ) -> Result<(), aws_sdk_kinesis::error::BoxError> {
        let is_put = context
            .input()
            .downcast_ref::<aws_sdk_kinesis::operation::put_records::PutRecordsInput>()
            .is_some();
        if is_put && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            panic!("test: a PutRecords call panics");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_task_that_panics_reports_an_unknown_outcome_and_stalls_nothing() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let client = aws_sdk_kinesis::Client::from_conf(
        bed.kinesis_config()
            .interceptor(PanicOnce::default())
            .build(),
    );
    let config = ProducerConfig::builder()
        .ordering(Ordering::PerShardStrict)
        .record_max_buffered_time(Duration::from_millis(10))
        .record_ttl(Duration::from_secs(5))
        .build()?;
    let producer = Producer::new(client, &stream, config).await?;
    let lost = producer.put_record(UserRecord::new("k", "in the panicking call"));
    // A flush waiting on the lost record ends (it used to hang until the record's deadline).
    tokio::time::timeout(Duration::from_secs(2), producer.flush()).await?;
    let lost = lost.await;
    // Not ShutDown: the call may have reached Kinesis, so the record may be stored.
    match &lost {
        Err(PutError::UnknownOutcome { attempts, .. }) => {
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].error_code.as_deref(), Some("CallLost"));
        }
        other => panic!("expected UnknownOutcome, got {other:?}"),
    }
    // The shard's send slot was freed: the next record is sent and stored.
    let put = producer
        .put_record(UserRecord::new("k", "after the panic"))
        .await?;
    assert_eq!(put.shard_id, "shardId-000000000000");
    assert_eq!(put.attempts.len(), 1);
    producer.shutdown().await;
    Ok(())
}
