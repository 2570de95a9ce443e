//! One producer for many streams (the KPL's `addUserRecord(stream, …)`): each record goes to
//! the stream it names or the producer's own, every stream's records only there and on the
//! shard holding their key; the memory bounds and the connection budget are the producer's,
//! shared by all its streams; a stream that cannot be listed fails only its own records.

#[path = "support/readback.rs"]
mod readback;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::retry::RetryConfig;
use bytes::Bytes;
use kinesis_integration::TestBed;
use kinesis_integration::faults::service::ServiceCall;
use kinesis_integration::faults::{Service, ServiceFaults, ServicePlan};
use kinesis_kpl::{Error, Producer, PutError, UserRecord};
use readback::{by_data, read_all};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_producer_puts_each_record_to_its_own_stream() -> TestResult {
    let bed = TestBed::start().await?;
    let own = bed.create_stream(2).await?;
    let named = bed.create_stream(3).await?;
    let by_arn_name = bed.create_stream(1).await?;
    let by_arn = bed.stream_arn(&by_arn_name).await?;
    let producer = Producer::builder(bed.kinesis().clone(), &own)
        .record_max_buffered_time(Duration::from_millis(20))
        .build()
        .await?;

    // Interleaved: the producer's own stream, a stream by name, a stream by ARN.
    let records = bed.scaled(6_000);
    let targets = [None, Some(named.clone()), Some(by_arn.clone())];
    let mut puts = Vec::with_capacity(records);
    for n in 0..records {
        let mut record = UserRecord::new(format!("key-{}", n % 97), format!("record-{n}"));
        if let Some(stream) = &targets[n % 3] {
            record = record.stream(stream.clone());
        }
        puts.push(producer.put_record(record));
    }
    let mut results = Vec::with_capacity(records);
    for put in puts {
        results.push(put.await?);
    }
    producer.shutdown().await;
    assert_eq!(producer.outstanding_records(), 0);

    for (target, stream) in [(0, &own), (1, &named), (2, &by_arn_name)] {
        let stored = by_data(read_all(bed.kinesis(), stream).await?);
        let expected: Vec<usize> = (0..records).filter(|n| n % 3 == target).collect();
        assert_eq!(
            stored.len(),
            expected.len(),
            "{stream}: its records once each, no other stream's"
        );
        for n in expected {
            let read = stored
                .get(&Bytes::from(format!("record-{n}")))
                .ok_or_else(|| format!("record-{n} missing from {stream}"))?;
            assert!(
                (read.range.0..=read.range.1).contains(&read.hash_key),
                "record-{n} on a shard holding its key"
            );
            let result = &results[n];
            assert_eq!(
                (&result.shard_id, &result.sequence_number),
                (&read.shard_id, &read.sequence_number),
                "record-{n}: the result says where it is"
            );
        }
    }
    Ok(())
}

/// The buffers are bounded per producer, not per stream: records waiting for two streams
/// fill the bound a third stream's record then finds full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_bound_is_shared_by_every_stream() -> TestResult {
    let bed = TestBed::start().await?;
    let streams = [
        bed.create_stream(1).await?,
        bed.create_stream(1).await?,
        bed.create_stream(1).await?,
    ];
    let producer = Producer::multi_stream(bed.kinesis().clone())
        .max_buffered_records(100)
        // Records wait in their aggregates until the flush below.
        .record_max_buffered_time(Duration::from_secs(60))
        .build()
        .await?;
    let mut accepted = Vec::new();
    for n in 0..100 {
        let record = UserRecord::new(format!("key-{n}"), "x").stream(&streams[n % 2]);
        accepted.push(producer.try_put_record(record)?);
    }
    assert_eq!(producer.outstanding_records(), 100);
    match producer.try_put_record(UserRecord::new("key-third", "x").stream(&streams[2])) {
        Err(PutError::Full {
            max_records,
            record,
            ..
        }) => {
            assert_eq!(max_records, 100);
            assert_eq!(record.stream.as_deref(), Some(streams[2].as_str()));
        }
        Err(other) => return Err(format!("expected Full, got {other}").into()),
        Ok(_) => return Err("a third stream got room beyond the producer's bound".into()),
    }
    producer.flush().await;
    for put in accepted {
        put.await?;
    }
    // Room again, for the third stream too.
    let third = producer.put_record(UserRecord::new("key-third", "x").stream(&streams[2]));
    producer.flush().await;
    third.await?;
    producer.shutdown().await;
    Ok(())
}

/// The PutRecords calls in flight at once, over every stream, from a call log.
fn most_calls_at_once(calls: &[ServiceCall]) -> usize {
    let mut edges: Vec<(Instant, i64)> = Vec::new();
    for call in calls.iter().filter(|c| c.operation == "PutRecords") {
        let Some(ended) = call.ended else { continue };
        edges.push((call.started, 1));
        edges.push((ended, -1));
    }
    // Ends before starts at the same instant: touching calls do not overlap.
    edges.sort();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most as usize
}

/// How many PutRecords calls each stream made, from a call log.
fn calls_per_stream(calls: &[ServiceCall], streams: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for call in calls.iter().filter(|c| c.operation == "PutRecords") {
        let body = String::from_utf8_lossy(call.request.as_deref().unwrap_or_default());
        for stream in streams {
            if body.contains(&format!("\"{stream}\"")) {
                *counts.entry(stream.clone()).or_default() += 1;
            }
        }
    }
    counts
}

/// Records for two streams at once, every call slowed: with `max_connections` 1 the producer
/// never has two calls in flight, whichever streams they are for. The same load with a budget
/// of 2 does overlap calls, so the harness can see an overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_budget_is_shared_by_every_stream() -> TestResult {
    let bed = TestBed::start().await?;
    let streams = vec![bed.create_stream(2).await?, bed.create_stream(2).await?];
    let mut most = BTreeMap::new();
    for budget in [1usize, 2] {
        let slow = ServiceFaults::new(
            Service::Kinesis,
            ServicePlan {
                latency: 1.0,
                max_latency: Duration::from_millis(40),
                ..ServicePlan::seeded(budget as u64)
            }
            .operations(["PutRecords"]),
        );
        slow.log_calls(true);
        let client = aws_sdk_kinesis::Client::from_conf(
            slow.kinesis_config(&bed)
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        // Small calls, so that there are many of them.
        let producer = Producer::multi_stream(client)
            .max_connections(budget)
            .aggregation_enabled(false)
            .collection_max_count(10)
            .record_max_buffered_time(Duration::from_millis(5))
            .build()
            .await?;
        let mut puts = Vec::new();
        for n in 0..bed.scaled(2_000) {
            let stream = &streams[n % 2];
            let record =
                UserRecord::new(format!("key-{n}"), format!("{budget}-{n}")).stream(stream);
            puts.push(producer.put_record(record));
            if n % 50 == 49 {
                // A steady trickle, so that both streams keep calls coming.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        for put in puts {
            put.await?;
        }
        producer.shutdown().await;
        let calls = slow.calls();
        let per_stream = calls_per_stream(&calls, &streams);
        assert!(
            per_stream.len() == 2 && per_stream.values().all(|n| *n >= 5),
            "both streams made calls: {per_stream:?}"
        );
        most.insert(budget, most_calls_at_once(&calls));
    }
    println!("REPORT most PutRecords calls at once, by max_connections: {most:?}");
    assert_eq!(most[&1], 1, "one call at a time over both streams");
    assert_eq!(most[&2], 2, "the harness sees overlapping calls");
    Ok(())
}

/// A record naming a missing stream fails with the listing's error and its record back; the
/// others go on; once the stream exists, its records are put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_fails_only_its_own_records() -> TestResult {
    let bed = TestBed::start().await?;
    let own = bed.create_stream(1).await?;
    let missing = format!("{own}-not-yet");
    let producer = Producer::builder(bed.kinesis().clone(), &own)
        .record_max_buffered_time(Duration::from_millis(20))
        .build()
        .await?;
    let lost = producer.put_record(UserRecord::new("k", "to-missing").stream(&missing));
    let kept = producer.put_record(UserRecord::new("k", "to-own"));
    match lost.await {
        Err(error @ PutError::StreamUnavailable { .. }) => {
            assert!(!error.is_retryable(), "a missing stream: {error}");
            let PutError::StreamUnavailable { stream, source, .. } = &error else {
                unreachable!()
            };
            assert_eq!(stream, &missing);
            assert!(
                matches!(&**source, Error::ListShards { code, .. } if code == "ResourceNotFoundException"),
                "{source}"
            );
            let record = error.into_record().ok_or("the record comes back")?;
            assert_eq!(record.data, Bytes::from("to-missing"));
            assert_eq!(record.stream.as_deref(), Some(missing.as_str()));
        }
        other => return Err(format!("expected StreamUnavailable, got {other:?}").into()),
    }
    kept.await?;

    // Created now: within the retry interval the failure answers at once, then the stream is
    // listed again and put to.
    bed.kinesis()
        .create_stream()
        .stream_name(&missing)
        .shard_count(1)
        .send()
        .await?;
    bed.wait_for_stream_active(&missing).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match producer
            .put_record(UserRecord::new("k", "late").stream(&missing))
            .await
        {
            Ok(result) => {
                assert!(result.shard_id.starts_with("shardId-"));
                break;
            }
            Err(PutError::StreamUnavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    producer.shutdown().await;
    let stored = read_all(bed.kinesis(), &missing).await?;
    assert_eq!(stored.len(), 1, "the late record, once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_naming_no_stream_needs_a_producer_stream() -> TestResult {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(1).await?;
    let producer = Producer::multi_stream(bed.kinesis().clone())
        .build()
        .await?;
    match producer.put_record(UserRecord::new("k", "nowhere")).await {
        Err(error @ PutError::NoStream { .. }) => {
            assert!(!error.is_retryable());
            let record = error.into_record().ok_or("the record comes back")?;
            assert_eq!(record.data, Bytes::from("nowhere"));
        }
        other => return Err(format!("expected NoStream, got {other:?}").into()),
    }
    producer
        .put_record(UserRecord::new("k", "somewhere").stream(&stream))
        .await?;
    producer.shutdown().await;
    match producer
        .put_record(UserRecord::new("k", "late").stream(&stream))
        .await
    {
        Err(PutError::ShutDown {
            record: Some(record),
        }) => {
            assert_eq!(record.data, Bytes::from("late"))
        }
        other => return Err(format!("expected ShutDown, got {other:?}").into()),
    }
    Ok(())
}
