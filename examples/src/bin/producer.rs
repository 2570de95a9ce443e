//! Puts records to a stream through `kinesis-kpl`: each line of standard input, or a synthetic
//! load at a given rate. Prints a summary of what was stored and what failed; exits 1 when a
//! put failed or on an error (printed as one line on standard error, with its causes).
//!
//! ```text
//! printf 'a\nb\n' | cargo run -p kinesis-examples --bin producer -- --kinesis-endpoint http://127.0.0.1:4566 --create-shards 2 --stream demo
//! cargo run -p kinesis-examples --bin producer -- --stream orders --synthetic 10000 --rate 2000
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use kinesis_examples::{ConnectArgs, error_line};
use kinesis_kpl::{Producer, ProducerConfig, PutResult, UserRecord};
use tokio::io::AsyncBufReadExt;

/// Put records to a Kinesis stream through the kinesis-kpl producer.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Stream name or ARN.
    #[arg(long)]
    stream: String,
    /// Create the stream with this many shards first (and wait until it is ACTIVE).
    #[arg(long)]
    create_shards: Option<u32>,
    /// Put this many synthetic records instead of reading standard input.
    #[arg(long)]
    synthetic: Option<u64>,
    /// Synthetic records per second (0: as fast as the producer takes them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Distinct partition keys of the synthetic load.
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Partition key for stdin lines (default: the line number).
    #[arg(long)]
    partition_key: Option<String>,
    /// Write one line per stored record to this file, tab-separated: the record's number (in
    /// put order), partition key, shard, sequence number, sub-sequence number (never the data).
    #[arg(long)]
    result_log: Option<std::path::PathBuf>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_failed) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("{}", error_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Puts the records; how many puts failed.
async fn run(args: Args) -> Result<u64, BoxError> {
    let connection = args.connect.connect().await?;
    eprintln!("connected to {}", connection.description);
    if let Some(shards) = args.create_shards {
        kinesis_integration::stream::create_stream(
            &connection.kinesis,
            &args.stream,
            shards,
            kinesis_integration::RESOURCE_TIMEOUT,
        )
        .await?;
        eprintln!("created stream {} with {shards} shards", args.stream);
    }
    let producer = Producer::new(
        connection.kinesis.clone(),
        &args.stream,
        ProducerConfig::default(),
    )
    .await?;
    let started = Instant::now();
    let (done, mut results) = tokio::sync::mpsc::unbounded_channel::<(
        u64,
        String,
        Result<PutResult, kinesis_kpl::PutError>,
    )>();
    // Results are written (or counted) as they come, so that a long run holds only the
    // records in flight, not every result until the end.
    let mut log = match &args.result_log {
        Some(path) => Some(std::io::BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };
    let collector = tokio::spawn(async move {
        let (mut stored, mut failed) = (0u64, 0u64);
        while let Some((n, key, result)) = results.recv().await {
            match result {
                Ok(result) => {
                    stored += 1;
                    if let Some(log) = &mut log {
                        let key = key.replace(['\t', '\n', '\r'], " ");
                        writeln!(
                            log,
                            "{n}\t{key}\t{}\t{}\t{}",
                            result.shard_id, result.sequence_number, result.sub_sequence_number
                        )?;
                    }
                }
                Err(error) => {
                    failed += 1;
                    if failed <= 10 {
                        eprintln!(
                            "failed: {}",
                            error_line(&error).trim_start_matches("error: ")
                        );
                    }
                }
            }
        }
        if let Some(mut log) = log {
            log.flush()?;
        }
        Ok::<_, std::io::Error>((stored, failed))
    });

    let mut put = 0u64;
    match args.synthetic {
        Some(count) => {
            for n in 0..count {
                if args.rate > 0 {
                    let at = started + Duration::from_secs_f64(n as f64 / args.rate as f64);
                    tokio::time::sleep_until(at.into()).await;
                }
                let key = format!("key-{}", n % args.keys.max(1));
                let future =
                    producer.put_record(UserRecord::new(key.clone(), format!("record-{n}")));
                let done = done.clone();
                tokio::spawn(async move {
                    let _ = done.send((n, key, future.await));
                });
                put += 1;
            }
        }
        None => {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Some(line) = lines.next_line().await? {
                let key = args
                    .partition_key
                    .clone()
                    .unwrap_or_else(|| put.to_string());
                let future = producer.put_record(UserRecord::new(key.clone(), line));
                let done = done.clone();
                let n = put;
                tokio::spawn(async move {
                    let _ = done.send((n, key, future.await));
                });
                put += 1;
            }
        }
    }
    drop(done);
    producer.shutdown().await;
    let (stored, failed) = collector.await??;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "put {put} records: {stored} stored, {failed} failed in {seconds:.2} s ({:.0} records/s)",
        stored as f64 / seconds.max(1e-9)
    );
    Ok(failed)
}
