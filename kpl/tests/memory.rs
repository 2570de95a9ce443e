//! The producer's memory at its bounds: held at full buffers through an outage that throttles
//! every call, its process's resident memory grows by no more than [`ProducerConfig::memory_bound`].
//!
//! Its own test binary, so that no other test shares the process whose memory is measured.
//! Linux only (it reads `/proc/self/status`).
#![cfg(target_os = "linux")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::retry::RetryConfig;
use bytes::Bytes;
use kinesis_integration::TestBed;
use kinesis_integration::faults::{
    FaultPlan, PutRecordsFaults, Service, ServiceFaults, ServicePlan,
};
use kinesis_kpl::{Producer, ProducerConfig, PutError, UserRecord};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SHARDS: u32 = 16;
const DATA_BYTES: usize = 800;
const KEYS: usize = 5_000;
const MAX_RECORDS: usize = 40_000;
const MAX_BYTES: usize = 64 << 20;
const OUTAGE: Duration = Duration::from_secs(20);

/// Resident memory of this process, in bytes.
fn resident() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Used to grow past any bound: every failed attempt copied the SDK's error text into every
/// user record (a whole-call error rendered with its context is a few hundred bytes, per
/// record, per attempt), the aggregate's copy of each record was not counted, and a record
/// kept every attempt for as long as it lived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_holds_the_producer_within_its_memory_bound() -> Result<(), BoxError> {
    let bed = TestBed::start().await?;
    let stream = bed.create_stream(SHARDS).await?;
    // Every call throttled: half as a whole by the transport, the rest entry by entry.
    let calls = ServiceFaults::new(
        Service::Kinesis,
        ServicePlan {
            throttle: 0.5,
            ..ServicePlan::seeded(11)
        }
        .operations(["PutRecords"]),
    );
    let entries = PutRecordsFaults::new(FaultPlan {
        entry_throttle: 1.0,
        ..FaultPlan::seeded(12)
    });
    let client = aws_sdk_kinesis::Client::from_conf(
        calls
            .kinesis_config(&bed)
            .retry_config(RetryConfig::disabled())
            .interceptor(entries.clone())
            .build(),
    );
    let config = ProducerConfig::builder()
        .max_buffered_records(MAX_RECORDS)
        .max_buffered_bytes(MAX_BYTES)
        .max_connections(4)
        .collection_max_size(1 << 20)
        .record_ttl(Duration::from_secs(600))
        .min_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(50))
        .build()?;
    let bound = config.memory_bound();
    let producer = Producer::new(client, &stream, config).await?;
    let baseline = resident();

    // Sample resident memory and buffered records all along.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let most_buffered = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (done, peak, most_buffered, producer) = (
            done.clone(),
            peak.clone(),
            most_buffered.clone(),
            producer.clone(),
        );
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                peak.fetch_max(resident(), Ordering::SeqCst);
                most_buffered.fetch_max(producer.outstanding_records(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // Keep the buffers full for the whole outage; each record owns its data, as a user's would.
    // The futures are dropped: an accepted record stays in the producer.
    let started = Instant::now();
    let (mut accepted, mut full) = (0usize, 0u64);
    while started.elapsed() < OUTAGE {
        let record = UserRecord::new(
            format!("key-{}", accepted % KEYS),
            Bytes::from(vec![b'x'; DATA_BYTES]),
        );
        match producer.try_put_record(record) {
            Ok(put) => {
                drop(put);
                accepted += 1;
            }
            Err(PutError::Full { .. }) => {
                full += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(other) => return Err(other.into()),
        }
    }
    done.store(true, Ordering::SeqCst);
    sampler.await?;
    let (peak, most_buffered) = (
        peak.load(Ordering::SeqCst),
        most_buffered.load(Ordering::SeqCst),
    );
    let grown = peak.saturating_sub(baseline);
    let put_stats = entries.stats();
    let call_stats = calls.stats().total;

    // The outage ends: everything buffered goes out.
    calls.set_enabled(false);
    entries.set_enabled(false);
    tokio::time::timeout(Duration::from_secs(120), producer.flush())
        .await
        .map_err(|_| "the producer did not drain after the outage")?;
    let left = producer.outstanding_records();
    producer.shutdown().await;

    let mib = |b: usize| b as f64 / f64::from(1 << 20);
    eprintln!(
        "REPORT memory: {SHARDS} shards, records of {DATA_BYTES} B, bounds {MAX_RECORDS} records \
         / {} MiB; outage {OUTAGE:?}: {accepted} records accepted, at most {most_buffered} \
         buffered, buffers full {full} times; PutRecords calls {} ({} throttled whole), entries \
         throttled {}; resident memory grew {:.1} MiB (baseline {:.1} MiB, peak {:.1} MiB) \
         against a bound of {:.1} MiB ({:.0} %)",
        mib(MAX_BYTES),
        call_stats.calls,
        call_stats.throttled,
        put_stats.entries_throttled,
        mib(grown),
        mib(baseline),
        mib(peak),
        mib(bound),
        100.0 * grown as f64 / bound as f64,
    );
    assert!(full > 0, "the buffers were held full");
    assert!(
        put_stats.entries_throttled > 0 && call_stats.throttled > 0,
        "every kind of throttling was drawn"
    );
    assert!(
        grown <= bound,
        "resident memory grew {grown} bytes, over the documented bound of {bound}"
    );
    assert_eq!(left, 0, "every record resolved once the outage ended");
    Ok(())
}
