//! Operations on a KCL application: list its leases and see which owners are alive, reset a
//! shard's checkpoint safely, and decode KPL-aggregated records.
//!
//! ```text
//! kinesis-ops leases --table my-app
//! kinesis-ops leases --table my-app --json
//! kinesis-ops leases --table my-app --watch
//! kinesis-ops lag --table my-app --stream orders
//! kinesis-ops rewind --table my-app --stream orders --to-timestamp 2024-05-01T12:00:00Z --dry-run
//! kinesis-ops reset-checkpoint --table my-app --shard shardId-000000000001 --to TRIM_HORIZON
//! kinesis-ops reset-checkpoint --table my-app --shard shardId-000000000001 --to 4959...0898 --sub 3
//! aws kinesis get-records ... | jq -r '.Records[].Data' | kinesis-ops decode --input base64
//! kinesis-ops decode --file record.bin
//! ```
//!
//! Exit status: 0 on success, 1 on an error, 2 for invalid arguments, 3 when a reset is refused
//! because a live owner renews the lease, 4 when the lease changed between read and write.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kinesis_examples::ConnectArgs;
use kinesis_examples::ops::reset::{self, ResetError, ResetOptions};
use kinesis_examples::ops::{decode, format_duration, lag, leases, parse_duration, rewind};
use kinesis_kcl::lease::LeaseTable;

/// Operations on Kinesis consumer applications: lease tables, checkpoints, aggregated records.
#[derive(Debug, Parser)]
#[command(
    name = "kinesis-ops",
    after_help = "Exit status: 0 success, 1 error, 2 invalid arguments, \
                  3 reset refused (live owner), 4 lease changed between read and write."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the leases of a lease table: owner, counter, checkpoint, and whether each counter
    /// moved between two reads (a live owner renews its leases, moving their counters).
    Leases(LeasesArgs),
    /// Set the checkpoint of one lease (also backwards). Refuses while a live owner renews the
    /// lease, unless --force; the write is always conditional on the lease counter just read.
    ///
    /// Stop the application first: a worker holding the lease would checkpoint over the reset.
    /// An owned lease is watched for --failover (re-read every --interval); if its counter
    /// moves, the owner is alive and the reset is refused (exit 3). If it stands still that
    /// long, the lease has expired by the KCL's own rule and the reset goes on. An unowned
    /// lease is written at once. The write is an UpdateItem conditional on the counter last
    /// read: if anything wrote the lease in between, nothing is written (exit 4). The new
    /// checkpoint also clears a pending checkpoint and the owner-switch count, as a
    /// checkpointer does; the owner is left as it is.
    ResetCheckpoint(ResetArgs),
    /// How far behind each shard's checkpoint is: owner, checkpoint, open or closed, parents
    /// and children, `MillisBehindLatest` read at the checkpoint and the checkpointed record's
    /// arrival time; then the number of shards, finished ones and the largest lag.
    Lag(LagArgs),
    /// Make the whole application resume at a time (or the oldest or newest records), across
    /// the lineage: shards open then resume at their first record at or after it, shards
    /// created later from their start after their parents, shards closed before it are
    /// finished. Refuses while any lease is being renewed (stop the application first), unless
    /// --force; every write is conditional on the lease counter read.
    Rewind(RewindArgs),
    /// Print the user records in a Kinesis record's data (a KPL aggregate) as JSON lines.
    Decode(DecodeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RewindTo {
    /// The oldest records the stream holds.
    TrimHorizon,
    /// After the newest records.
    Latest,
}

#[derive(Debug, clap::Args)]
struct RewindArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The lease table (the KCL application name, by default); single-stream tables only.
    #[arg(long)]
    table: String,
    /// The stream.
    #[arg(long)]
    stream: String,
    /// Resume at the first record that arrived at or after this time: RFC 3339
    /// (2024-05-01T12:00:00Z) or Unix epoch seconds or milliseconds.
    #[arg(long, value_parser = kinesis_examples::timestamp::parse_timestamp, required_unless_present = "to", conflicts_with = "to")]
    to_timestamp: Option<std::time::SystemTime>,
    /// Resume at the oldest records, or after the newest ones.
    #[arg(long, value_enum)]
    to: Option<RewindTo>,
    /// Print the plan; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write even if leases are being renewed (their owners lose them at their next renewal).
    #[arg(long)]
    force: bool,
    /// Time between the two reads of the table that tell whether a worker renews leases
    /// (more than a third of the application's failover time).
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    interval: Duration,
}

#[derive(Debug, clap::Args)]
struct LagArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The lease table (the KCL application name, by default).
    #[arg(long)]
    table: String,
    /// The stream (its leases in a multi-stream table are those of this stream name).
    #[arg(long)]
    stream: String,
    /// Print one JSON object per shard, then `{"total": …}`, instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct LeasesArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The lease table (the KCL application name, by default).
    #[arg(long)]
    table: String,
    /// Time between the two reads of the table (e.g. 500ms, 4s; 0 reads once). A KCL worker
    /// renews every third of its failover time (3.3 s at the default 10 s), so the default
    /// sees every live owner renew; with a longer failover time, raise it to match.
    #[arg(long, default_value = "4s", value_parser = parse_duration)]
    interval: Duration,
    /// Print one JSON object per lease instead of the table and summary.
    #[arg(long)]
    json: bool,
    /// Keep watching: read the table again and again (each view compares two reads
    /// --interval apart) and redraw it in place, until Ctrl-C. With --json, a listing per view,
    /// separated by an empty line.
    #[arg(long)]
    watch: bool,
}

#[derive(Debug, clap::Args)]
struct ResetArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The lease table (the KCL application name, by default).
    #[arg(long)]
    table: String,
    /// The lease key: the shard id (shardId-000000000001), or for a multi-stream application
    /// the full lease key (<accountId>:<streamName>:<creationEpoch>:<shardId>), used as given.
    #[arg(long)]
    shard: String,
    /// The new checkpoint: TRIM_HORIZON, LATEST, AT_TIMESTAMP (the application's configured
    /// initial timestamp) or a sequence number.
    #[arg(long)]
    to: String,
    /// Sub-sequence number with a sequence number: the user records of that aggregate up to
    /// and including this one count as processed.
    #[arg(long)]
    sub: Option<u64>,
    /// Reset even if an owner renews the lease. The owner then loses the lease at its next
    /// renewal; whoever takes it next starts from the new checkpoint.
    #[arg(long)]
    force: bool,
    /// How long an owned lease's counter must stand still before its owner counts as gone
    /// (the application's failover time). The lease is watched that long before writing.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    failover: Duration,
    /// How often the lease is re-read while watched.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Check and show what would be written, but write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum InputFormat {
    /// The record's data as raw bytes (one record).
    Raw,
    /// Base64 text, one record per line (as the Kinesis API and CLI print Data).
    Base64,
}

#[derive(Debug, clap::Args)]
struct DecodeArgs {
    /// Read the data from this file instead of standard input.
    #[arg(long, conflicts_with = "base64")]
    file: Option<std::path::PathBuf>,
    /// How the input (file or standard input) is encoded.
    #[arg(long, value_enum, default_value_t = InputFormat::Raw)]
    input: InputFormat,
    /// One record's data as a base64 string, instead of reading a file or standard input.
    #[arg(long, conflicts_with = "input")]
    base64: Option<String>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Prints an error with its causes to standard error, on one line.
fn report(error: &(dyn std::error::Error + 'static)) {
    eprintln!("{}", kinesis_examples::error_line(error));
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Leases(args) => run_leases(args).await,
        Command::ResetCheckpoint(args) => return run_reset(args).await,
        Command::Lag(args) => run_lag(args).await,
        Command::Rewind(args) => run_rewind(args).await,
        Command::Decode(args) => run_decode(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(error.as_ref());
            ExitCode::FAILURE
        }
    }
}

async fn run_leases(args: LeasesArgs) -> Result<(), BoxError> {
    let connection = args.connect.connect().await?;
    let table = LeaseTable::new(connection.dynamodb.clone(), &args.table);
    if args.watch && args.interval.is_zero() {
        return Err("--watch needs a non-zero --interval (each view compares two reads)".into());
    }
    if !args.interval.is_zero() && !args.json && !args.watch {
        eprintln!(
            "reading lease table {} twice, {} apart ({})",
            args.table,
            format_duration(args.interval),
            connection.description
        );
    }
    // One Ctrl-C listener for the whole watch: a listener made per view would miss a Ctrl-C
    // that comes while the view is written.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let listing = tokio::select! {
            listing = leases::observe(&table, args.interval) => listing?,
            _ = &mut interrupted, if args.watch => return Ok(()),
        };
        let mut out = std::io::stdout().lock();
        if args.json {
            for line in listing.json_lines() {
                writeln!(out, "{line}")?;
            }
        } else {
            if args.watch {
                // Clear the screen and go home: the view is redrawn in place.
                write!(out, "\x1b[2J\x1b[H")?;
                writeln!(
                    out,
                    "lease table {} ({}), every {}; Ctrl-C to stop",
                    args.table,
                    connection.description,
                    format_duration(args.interval)
                )?;
            }
            write!(out, "{}", listing.render_table())?;
            writeln!(out, "{}", listing.summary())?;
        }
        if !args.watch {
            return Ok(());
        }
        if args.json {
            writeln!(out)?;
        }
        out.flush()?;
    }
}

async fn run_rewind(args: RewindArgs) -> Result<(), BoxError> {
    let target = match (args.to_timestamp, args.to) {
        (Some(time), _) => rewind::Target::Time(time),
        (None, Some(RewindTo::TrimHorizon)) => rewind::Target::TrimHorizon,
        (None, Some(RewindTo::Latest)) => rewind::Target::Latest,
        (None, None) => return Err("--to-timestamp or --to is needed".into()),
    };
    let connection = args.connect.connect().await?;
    let table = LeaseTable::new(connection.dynamodb.clone(), &args.table);
    let steps = rewind::prepare(
        &table,
        &connection.kinesis,
        &args.stream,
        target,
        args.interval,
        args.force,
    )
    .await?;
    let mut out = std::io::stdout().lock();
    write!(out, "{}", rewind::describe(&steps))?;
    if args.dry_run {
        writeln!(out, "dry run: nothing written")?;
        return Ok(());
    }
    let written = rewind::apply(&table, &steps).await?;
    writeln!(out, "{written} leases written")?;
    Ok(())
}

async fn run_lag(args: LagArgs) -> Result<(), BoxError> {
    let connection = args.connect.connect().await?;
    let table = LeaseTable::new(connection.dynamodb.clone(), &args.table);
    let rows = lag::read(&table, &connection.kinesis, &args.stream).await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        write!(out, "{}", lag::render_json(&rows))?;
    } else {
        write!(out, "{}", lag::render_table(&rows))?;
    }
    Ok(())
}

async fn run_reset(args: ResetArgs) -> ExitCode {
    let target = match reset::parse_target(&args.to, args.sub) {
        Ok(target) => target,
        Err(error) => {
            report(&error);
            return ExitCode::from(2);
        }
    };
    let connection = match args.connect.connect().await {
        Ok(connection) => connection,
        Err(error) => {
            report(error.as_ref());
            return ExitCode::FAILURE;
        }
    };
    let table = LeaseTable::new(connection.dynamodb.clone(), &args.table);
    let options = ResetOptions {
        lease_key: args.shard.clone(),
        target,
        force: args.force,
        failover: args.failover,
        interval: args.interval,
    };
    let outcome = async {
        let plan = reset::prepare(&table, &options, |lease, window| {
            eprintln!(
                "lease {} is owned by {}: watching its counter for {} to see whether the owner \
                 is alive (--force skips this)",
                lease.lease_key,
                lease.actual_owner().unwrap_or("-"),
                format_duration(window)
            );
        })
        .await?;
        println!("{}", plan.describe());
        if args.dry_run {
            println!("dry run: nothing written");
            return Ok(());
        }
        let written = plan.apply(&table).await?;
        println!(
            "written: lease {} checkpoint {}, counter {}",
            written.lease_key, written.checkpoint, written.lease_counter
        );
        Ok::<(), ResetError>(())
    }
    .await;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report(&error);
            match error {
                ResetError::LiveOwner { .. } => ExitCode::from(3),
                ResetError::CounterChanged { .. } => ExitCode::from(4),
                ResetError::InvalidTarget(_) => ExitCode::from(2),
                ResetError::NotFound { .. } | ResetError::Lease(_) => ExitCode::FAILURE,
            }
        }
    }
}

fn run_decode(args: DecodeArgs) -> Result<(), BoxError> {
    let records: Vec<bytes::Bytes> = if let Some(text) = &args.base64 {
        vec![decode::decode_base64(text)?]
    } else {
        let mut input = Vec::new();
        match &args.file {
            Some(path) => input = std::fs::read(path)?,
            None => {
                std::io::stdin().lock().read_to_end(&mut input)?;
            }
        }
        match args.input {
            InputFormat::Raw => vec![input.into()],
            InputFormat::Base64 => {
                let text = String::from_utf8(input).map_err(|_| "base64 input is not text")?;
                decode::records_from_base64(&text)?
            }
        }
    };
    let mut out = std::io::stdout().lock();
    for (n, data) in records.into_iter().enumerate() {
        for line in decode::decode_record(data, n) {
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}
