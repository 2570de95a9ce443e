//! Aggregation and deaggregation throughput against the MD5 ceiling.
//!
//! `cargo bench -p kinesis-kpl --bench record_format` aggregates 1 000 000 user records with
//! distinct 20-character partition keys and 10 B, 100 B and 1 KiB of data into aggregates filled
//! to the KPL's default 51 200 bytes, then deaggregates them. Next to each it measures, in the same
//! run, plain MD5 over the same wire bytes: every aggregate's protobuf is hashed exactly once on
//! each side, so MD5 is the ceiling, and "% MD5" is MD5's time divided by the operation's time.
//! Each figure is the median of several runs. Without `--bench` (e.g. `cargo test --benches`) it
//! runs a quick smoke pass instead. Numbers after `--` pick data sizes: `-- 100`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_aggregation::{AggregateBuilder, Deaggregated, Finished, deaggregate};
use md5::{Digest, Md5};

struct Setup {
    records: usize,
    runs: usize,
}

fn main() {
    let setup = if std::env::args().any(|arg| arg == "--bench") {
        Setup {
            records: 1_000_000,
            runs: 5,
        }
    } else {
        Setup {
            records: 10_000,
            runs: 1,
        }
    };
    let keys: Vec<String> = (0..setup.records as u64)
        .map(|i| {
            format!(
                "{:020}",
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 10u64.pow(19)
            )
        })
        .collect();

    println!(
        "{} user records, distinct 20-character keys, aggregates up to {} bytes, median of {} runs",
        setup.records,
        AggregateBuilder::DEFAULT_MAX_SIZE,
        setup.runs
    );
    println!(
        "{:>6} {:<12} {:>12} {:>11} {:>11} {:>8} {:>10}",
        "data", "operation", "records/s", "data MB/s", "wire MB/s", "% MD5", "aggregates"
    );
    // `cargo bench --bench record_format -- 100` runs only the 100-byte case.
    let only: Vec<usize> = std::env::args()
        .filter_map(|arg| arg.parse().ok())
        .collect();
    for data_len in [10, 100, 1024] {
        if only.is_empty() || only.contains(&data_len) {
            run(&setup, &keys, data_len);
        }
    }
}

fn run(setup: &Setup, keys: &[String], data_len: usize) {
    let data: Vec<u8> = (0..data_len).map(|i| (i * 31 + 7) as u8).collect();

    // The input for deaggregation and MD5, made once.
    let mut aggregates = Vec::new();
    aggregate(keys, &data, |aggregate| aggregates.push(aggregate));
    let wire_bytes: usize = aggregates.iter().map(Bytes::len).sum();

    // Timed runs hand each aggregate on and drop it, as a producer does once it is sent, so the
    // allocator reuses memory instead of faulting in a gigabyte of fresh pages.
    let aggregate_time = median(setup.runs, || {
        let mut produced = 0;
        aggregate(keys, &data, |aggregate| {
            produced += black_box(aggregate).len()
        });
        assert_eq!(produced, wire_bytes);
    });

    let md5_time = median(setup.runs, || {
        for aggregate in &aggregates {
            black_box(Md5::digest(&aggregate[4..aggregate.len() - 16]));
        }
    });

    let mut seen = 0;
    let deaggregate_time = median(setup.runs, || {
        seen = deaggregate_all(&aggregates);
    });
    assert_eq!(seen, keys.len() * data_len, "deaggregation lost data");

    let user_bytes = (keys.len() * data_len) as f64;
    let size = if data_len >= 1024 {
        format!("{} KiB", data_len / 1024)
    } else {
        format!("{data_len} B")
    };
    let row = |operation: &str, time: Duration| {
        let secs = time.as_secs_f64();
        println!(
            "{:>6} {:<12} {:>10.2} M {:>11.1} {:>11.1} {:>7.0}% {:>10}",
            size,
            operation,
            keys.len() as f64 / secs / 1e6,
            user_bytes / secs / 1e6,
            wire_bytes as f64 / secs / 1e6,
            md5_time.as_secs_f64() / secs * 100.0,
            aggregates.len()
        );
    };
    row("md5 only", md5_time);
    row("aggregate", aggregate_time);
    row("deaggregate", deaggregate_time);
}

/// Aggregates every record into default-sized aggregates, as a producer would.
fn aggregate(keys: &[String], data: &[u8], mut sink: impl FnMut(Bytes)) {
    let mut builder = AggregateBuilder::default();
    let mut emit = |finished: Option<Finished>| match finished {
        Some(Finished::Aggregated { data, .. }) => sink(data),
        Some(Finished::Single { .. }) => panic!("benchmark aggregates are never single"),
        None => {}
    };
    for key in keys {
        if builder.try_push(key, None, data).is_err() {
            emit(builder.take());
            builder
                .try_push(key, None, data)
                .expect("fits an empty aggregate");
        }
    }
    emit(builder.take());
}

/// Deaggregates everything and returns the total user data length.
fn deaggregate_all(aggregates: &[Bytes]) -> usize {
    let mut total = 0;
    for aggregate in aggregates {
        match deaggregate(aggregate.clone()) {
            Deaggregated::Aggregated(records) => {
                for record in records {
                    total += black_box(record.data().len());
                }
            }
            Deaggregated::PassThrough { reason, .. } => panic!("not an aggregate: {reason}"),
        }
    }
    total
}

fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}
