//! Local Kinesis and DynamoDB servers in one process, without Docker or a JVM: the test bed's
//! embedded servers (ferrokinesis and dynoxide, in memory) on loopback ports of your choice,
//! serving until interrupted (Ctrl-C or SIGTERM). Point any AWS SDK, the other example binaries
//! or your own service at them by endpoint; credentials and region can be anything.
//!
//! ```text
//! cargo run -p kinesis-examples --bin kinesis-local -- --create-stream orders:4
//! export KINESIS_ENDPOINT=http://127.0.0.1:4567 DYNAMODB_ENDPOINT=http://127.0.0.1:8000
//! cargo run -p kinesis-examples --bin producer -- --stream orders --synthetic 10000
//! cargo run -p kinesis-examples --bin worker -- --stream orders --application orders-app --initial-position trim-horizon
//! ```
//!
//! Everything is held in memory and gone when it stops. Standard output says where it listens,
//! one `KEY=value` line each (`KINESIS_ENDPOINT`, `DYNAMODB_ENDPOINT`), then `ready`.

use std::process::ExitCode;

use clap::Parser;
use kinesis_examples::error_line;
use kinesis_integration::{Backend, BedOptions, TestBed};

/// Serve local Kinesis and DynamoDB endpoints (in memory) until interrupted.
#[derive(Debug, Parser)]
struct Args {
    /// Loopback port of the Kinesis endpoint (0: any free port).
    #[arg(long, default_value_t = 4567)]
    kinesis_port: u16,
    /// Loopback port of the DynamoDB endpoint (0: any free port).
    #[arg(long, default_value_t = 8000)]
    dynamodb_port: u16,
    /// Create a stream at start, as NAME:SHARDS (repeatable).
    #[arg(long, value_name = "NAME:SHARDS", value_parser = parse_stream)]
    create_stream: Vec<(String, u32)>,
    /// Throttle writes per shard as Kinesis does (1 000 records/s and 1 MiB/s).
    #[arg(long)]
    enforce_limits: bool,
}

/// Parses `NAME:SHARDS`.
fn parse_stream(value: &str) -> Result<(String, u32), String> {
    let (name, shards) = value
        .rsplit_once(':')
        .ok_or_else(|| format!("{value:?} is not NAME:SHARDS"))?;
    if name.is_empty() {
        return Err(format!("{value:?} has no stream name"));
    }
    let shards: u32 = shards
        .parse()
        .map_err(|_| format!("{value:?}: the shard count {shards:?} is not a whole number"))?;
    if !(1..=1_000).contains(&shards) {
        return Err(format!(
            "{value:?}: the shard count {shards} is outside 1..=1000"
        ));
    }
    Ok((name.to_owned(), shards))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let options = BedOptions::default()
        .kinesis_port(args.kinesis_port)
        .dynamodb_port(args.dynamodb_port)
        .enforce_limits(args.enforce_limits);
    let bed = TestBed::start_with(Backend::Embedded, options).await?;
    for (name, shards) in &args.create_stream {
        bed.kinesis()
            .create_stream()
            .stream_name(name)
            .shard_count(*shards as i32)
            .send()
            .await
            .map_err(|e| format!("creating stream {name}: {e}"))?;
        bed.wait_for_stream_active(name).await?;
        eprintln!("stream {name}: {shards} shards");
    }
    println!(
        "KINESIS_ENDPOINT={}",
        bed.kinesis_endpoint().ok_or("no Kinesis endpoint")?
    );
    println!(
        "DYNAMODB_ENDPOINT={}",
        bed.dynamodb_endpoint().ok_or("no DynamoDB endpoint")?
    );
    println!("ready");
    shutdown_signal().await?;
    eprintln!("stopping");
    Ok(())
}

/// Resolves at Ctrl-C or SIGTERM (how containers and test harnesses stop a process).
async fn shutdown_signal() -> Result<(), BoxError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_stream;

    #[test]
    fn streams_are_name_colon_shards() {
        assert_eq!(parse_stream("orders:4"), Ok(("orders".to_owned(), 4)));
        assert_eq!(parse_stream("a:b:2"), Ok(("a:b".to_owned(), 2)));
        assert!(parse_stream("orders").unwrap_err().contains("NAME:SHARDS"));
        assert!(parse_stream(":2").unwrap_err().contains("no stream name"));
        assert!(parse_stream("x:two").unwrap_err().contains("\"two\""));
        assert!(parse_stream("x:0").unwrap_err().contains("1..=1000"));
    }
}
