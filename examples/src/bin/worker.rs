//! A `kinesis-kcl` worker that counts the records of a stream, or prints one line per record
//! (shard, sequence number, sub-sequence number, partition key, size: never the data). It
//! checkpoints after every batch, shares the shards with the other workers of the same
//! `--application`, and shuts down gracefully (checkpoint, hand the leases back) on Ctrl-C or
//! after `--exit-after` records.
//!
//! ```text
//! cargo run -p kinesis-examples --bin worker -- --stream orders --application orders-audit
//! cargo run -p kinesis-examples --bin worker -- --kinesis-endpoint http://127.0.0.1:4566 \
//!     --dynamodb-endpoint http://127.0.0.1:4566 --stream demo --application demo-app \
//!     --initial-position trim-horizon --print --metrics-addr 127.0.0.1:9100
//! cargo run -p kinesis-examples --bin worker -- --stream orders --application orders-replay \
//!     --retrieval fan-out --initial-position at-timestamp --timestamp 2024-05-01T12:00:00Z
//! ```
//!
//! With `--metrics-addr` the worker serves the KCL's metrics (`kinesis_kcl_records_processed_total`,
//! `kinesis_kcl_leases_held`, …; see `kinesis_kcl::metrics`) in the Prometheus text format at
//! `http://ADDR/metrics`, and prints `metrics: http://ADDR/metrics` with the bound address
//! (so port 0 works).
//!
//! With `--retrieval fan-out` it reads through enhanced fan-out (SubscribeToShard) as the
//! stream consumer `--consumer-name` (default: the application name, as the Java KCL), which it
//! registers unless it exists and keeps after exiting unless `--deregister-consumer`.
//!
//! Errors are printed as one line on standard error, with their causes; the exit status is
//! then 1 (2 for invalid arguments).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use clap::{CommandFactory, Parser, ValueEnum};
use kinesis_examples::metrics_server::MetricsServer;
use kinesis_examples::processed_log::{ProcessedLog, end_line, init_line, record_line};
use kinesis_examples::timestamp::parse_timestamp;
use kinesis_examples::{ConnectArgs, error_line};
use kinesis_kcl::{
    Checkpointer, FanOutConfig, InitialPosition, InitializationInput, LeaseConfig, PollingConfig,
    ProcessRecordsInput, ProcessorError, Retrieval, ShardContext, ShardRecordProcessor, Worker,
};
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Consume a Kinesis stream with a kinesis-kcl worker: count or print its records.
#[derive(Debug, Parser)]
#[command(
    after_help = "Output: with --print one line per record on standard output, \
    tab-separated: shard, sequence number, sub-sequence number, partition key, data size in \
    bytes (the data itself is never printed). Progress goes to standard error every \
    --report-every seconds; at the end `processed N records` goes to standard output."
)]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Stream name or ARN.
    #[arg(long)]
    stream: String,
    /// Application name: the lease table, shared by every worker of the application.
    #[arg(long)]
    application: String,
    /// This worker's id (default: host name, process id and a random suffix).
    #[arg(long)]
    worker_id: Option<String>,
    /// Where shards without a checkpoint start.
    #[arg(long, value_enum, default_value_t = Position::Latest)]
    initial_position: Position,
    /// With `--initial-position at-timestamp`: the arrival time to start at, RFC 3339
    /// (2024-05-01T12:00:00Z, 2024-05-01T14:00:00.5+02:00) or Unix epoch seconds (1714564800)
    /// or milliseconds (1714564800000).
    #[arg(
        long,
        value_parser = parse_timestamp,
        required_if_eq("initial_position", "at-timestamp")
    )]
    timestamp: Option<SystemTime>,
    /// How records are fetched: `polling` (GetRecords) or `fan-out` (enhanced fan-out,
    /// SubscribeToShard).
    #[arg(long, value_enum, default_value_t = RetrievalKind::Polling)]
    retrieval: RetrievalKind,
    /// Fan-out: the stream consumer to read as (default: the application name). Registered
    /// unless it exists; it outlives the worker unless --deregister-consumer.
    #[arg(long)]
    consumer_name: Option<String>,
    /// Fan-out: deregister the stream consumer when the worker shuts down (the Java KCL never
    /// does; leave it when other workers of the application still run).
    #[arg(long)]
    deregister_consumer: bool,
    /// Print one line per record instead of only counting.
    #[arg(long)]
    print: bool,
    /// Shut down gracefully once this many records were processed.
    #[arg(long)]
    exit_after: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9100; port 0 picks one).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Seconds between progress lines on standard error (0: none).
    #[arg(long, default_value_t = 10)]
    report_every: u64,
    /// Lease failover time in milliseconds (default: the KCL's 10 000).
    #[arg(long)]
    failover_ms: Option<u64>,
    /// Polling: pause before polling a shard with nothing new again, in milliseconds
    /// (default: the KCL's 1 500).
    #[arg(long)]
    idle_ms: Option<u64>,
    /// Write what every processor did to this file: starts, each record processed (shard,
    /// sequence numbers, partition key, time; never the data) and ends, flushed before each
    /// checkpoint (the format: `kinesis_examples::processed_log`).
    #[arg(long)]
    processed_log: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Position {
    /// Only records put after the worker started (the KCL's default).
    Latest,
    /// The oldest records the stream holds.
    TrimHorizon,
    /// The first record that arrived at or after --timestamp.
    AtTimestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RetrievalKind {
    /// GetRecords polling.
    Polling,
    /// Enhanced fan-out (SubscribeToShard).
    FanOut,
}

impl Args {
    /// Combinations of flags clap cannot check by itself.
    fn check(&self) -> Result<(), &'static str> {
        let fan_out = self.retrieval == RetrievalKind::FanOut;
        if !fan_out && (self.consumer_name.is_some() || self.deregister_consumer) {
            return Err("--consumer-name and --deregister-consumer need --retrieval fan-out");
        }
        if fan_out && self.idle_ms.is_some() {
            return Err(
                "--idle-ms is a polling setting: it cannot be used with --retrieval fan-out",
            );
        }
        if self.timestamp.is_some() && !matches!(self.initial_position, Position::AtTimestamp) {
            return Err("--timestamp needs --initial-position at-timestamp");
        }
        Ok(())
    }

    /// The retrieval the flags ask for.
    fn retrieval(&self) -> Result<Retrieval, BoxError> {
        match self.retrieval {
            RetrievalKind::Polling => {
                let mut polling = PollingConfig::builder();
                if let Some(ms) = self.idle_ms {
                    polling = polling.idle_time_between_reads(Duration::from_millis(ms));
                }
                Ok(Retrieval::Polling(polling.build()?))
            }
            RetrievalKind::FanOut => {
                let mut fan_out =
                    FanOutConfig::builder().deregister_on_shutdown(self.deregister_consumer);
                if let Some(name) = &self.consumer_name {
                    fan_out = fan_out.consumer_name(name);
                }
                Ok(Retrieval::FanOut(fan_out.build()?))
            }
        }
    }

    fn initial_position(&self) -> Result<InitialPosition, BoxError> {
        Ok(match self.initial_position {
            Position::Latest => InitialPosition::Latest,
            Position::TrimHorizon => InitialPosition::TrimHorizon,
            Position::AtTimestamp => InitialPosition::AtTimestamp(
                self.timestamp
                    .ok_or("--initial-position at-timestamp needs --timestamp")?,
            ),
        })
    }

    fn lease_config(&self) -> Result<LeaseConfig, BoxError> {
        let mut config = LeaseConfig::builder();
        if let Some(ms) = self.failover_ms {
            config = config.failover_time(Duration::from_millis(ms));
        }
        Ok(config.build()?)
    }
}

/// What the processors share.
#[derive(Debug)]
struct Shared {
    processed: AtomicU64,
    exit_after: Option<u64>,
    reached: Notify,
    print: bool,
    log: Option<ProcessedLog>,
    instances: AtomicU64,
}

struct Processor {
    shard: String,
    shared: Arc<Shared>,
    /// This processor's number in the processed log.
    instance: u64,
}

impl Processor {
    /// Writes `line` to the processed log, if there is one.
    fn log(&self, line: impl FnOnce() -> String) -> std::io::Result<()> {
        match &self.shared.log {
            Some(log) => log.write(&line()),
            None => Ok(()),
        }
    }

    /// Logs the processor's end.
    fn ended(&self, why: &str) {
        if let Err(error) = self.log(|| end_line(self.instance, &self.shard, why)) {
            tracing::error!(%error, "the processed log could not be written");
        }
    }
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Processor {
    async fn initialize(&mut self, _input: InitializationInput) {
        if let Err(error) = self.log(|| init_line(self.instance, &self.shard)) {
            tracing::error!(%error, "the processed log could not be written");
        }
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.log(|| {
            input
                .records
                .iter()
                .map(|record| {
                    record_line(
                        self.instance,
                        &self.shard,
                        record.sequence_number().as_str(),
                        record.sub_sequence_number(),
                        record.partition_key(),
                    )
                })
                .collect()
        })?;
        if self.shared.print {
            let mut out = std::io::stdout().lock();
            for record in &input.records {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    self.shard,
                    record.sequence_number(),
                    record.sub_sequence_number(),
                    record.partition_key(),
                    record.data().len()
                )?;
            }
            out.flush()?;
        }
        checkpointer.checkpoint().await?;
        let n = input.records.len() as u64;
        let total = self.shared.processed.fetch_add(n, Ordering::SeqCst) + n;
        if self.shared.exit_after.is_some_and(|limit| total >= limit) {
            self.shared.reached.notify_one();
        }
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.ended("lease_lost");
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        self.ended("shard_ended");
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        self.ended("shutdown_requested");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(message) = args.check() {
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), BoxError> {
    let retrieval = args.retrieval()?;
    let initial_position = args.initial_position()?;
    let lease_config = args.lease_config()?;
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let server = MetricsServer::install(addr).await?;
            println!("metrics: http://{}/metrics", server.local_addr());
            std::io::stdout().flush()?;
            Some(server)
        }
        None => None,
    };
    let connection = args.connect.connect().await?;
    eprintln!("connected to {}", connection.description);

    let shared = Arc::new(Shared {
        processed: AtomicU64::new(0),
        exit_after: args.exit_after,
        reached: Notify::new(),
        print: args.print,
        log: args
            .processed_log
            .as_deref()
            .map(ProcessedLog::create)
            .transpose()?,
        instances: AtomicU64::new(0),
    });
    let factory = {
        let shared = Arc::clone(&shared);
        move |shard: &ShardContext| Processor {
            shard: shard.shard_id.clone(),
            instance: shared.instances.fetch_add(1, Ordering::SeqCst),
            shared: Arc::clone(&shared),
        }
    };
    let mut builder = Worker::builder(
        &args.application,
        connection.kinesis.clone(),
        connection.dynamodb.clone(),
        factory,
    )
    .stream(&args.stream)
    .initial_position(initial_position)
    .retrieval(retrieval)
    .lease_config(lease_config);
    if let Some(id) = &args.worker_id {
        builder = builder.worker_id(id);
    }
    let worker = builder.build()?;
    let handle = worker.handle();
    eprintln!(
        "worker {} consuming {} for application {}",
        handle.worker_id(),
        args.stream,
        args.application
    );

    let started = Instant::now();
    let report_every = Duration::from_secs(args.report_every.max(1));
    let mut report = tokio::time::interval_at((started + report_every).into(), report_every);
    // The worker runs until Ctrl-C or the record limit, then shuts down gracefully.
    let asked_to_stop = AtomicBool::new(false);
    let stop = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => eprintln!("interrupted: shutting down"),
            // `notify_one` keeps a permit when nobody waits yet, so a limit reached before
            // this is polled is not missed.
            () = shared.reached.notified(), if args.exit_after.is_some() => {}
        }
        asked_to_stop.store(true, Ordering::SeqCst);
    };
    let run = worker.run_until(stop);
    tokio::pin!(run);
    let ended = loop {
        tokio::select! {
            ended = &mut run => break ended,
            _ = report.tick(), if args.report_every > 0 => {
                let n = shared.processed.load(Ordering::SeqCst);
                eprintln!(
                    "processed {n} records ({:.0} records/s), {} shards leased",
                    n as f64 / started.elapsed().as_secs_f64(),
                    handle.shard_states().len()
                );
            }
        }
    };
    let result = match ended {
        Ok(()) if !asked_to_stop.load(Ordering::SeqCst) => {
            Err("the worker stopped on its own".into())
        }
        Ok(()) => Ok(()),
        Err(e) => Err(e.into()),
    };
    println!(
        "processed {} records",
        shared.processed.load(Ordering::SeqCst)
    );
    if let Some(server) = metrics {
        server.shutdown().await;
    }
    result
}
