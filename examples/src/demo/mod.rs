//! The demo: a `kinesis-kpl` producer and `kinesis-kcl` workers on one stream, checked record
//! by record.
//!
//! [`run`] creates a stream (4 shards by default), starts the workers (2 by default, reading
//! from `TRIM_HORIZON` and checkpointing after every batch), puts the records through the
//! producer (aggregation on, the KPL's defaults) while the workers consume them, waits until
//! every stored record has been delivered (or the timeout), shuts the workers down gracefully
//! and returns a [`Summary`]. The binary `demo` prints it and exits non-zero unless
//! [`Summary::ok`].
//!
//! Every record's data is `<run id>:<n>` and its partition key `key-<n % keys>`, so the
//! [`Tracker`](tracker::Tracker) knows which records arrived, how often, and in which order per
//! key, without keeping the payloads.

pub mod progress;
pub mod summary;
pub mod tracker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kinesis_kcl::ShardContext;
use kinesis_kcl::lease::LeaseTable;
use kinesis_kcl::{
    Checkpointer, InitialPosition, LeaseConfig, PollingConfig, ProcessRecordsInput, ProcessorError,
    Retrieval, ShardRecordProcessor, Worker, WorkerHandle,
};
use kinesis_kpl::{Producer, UserRecord};
use tokio::task::JoinSet;

use crate::{ConnectArgs, Connection};
use progress::{Bars, Monitor, ProgressMode};
pub use summary::{Summary, WorkerShare};
use tracker::Tracker;

/// The error type of the demo.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Most put futures awaited at once: well under the producer's default buffer bound
/// (100 000 records), so every put is accepted when made and records of one key enter the
/// producer in the order they are numbered.
const MAX_IN_FLIGHT: usize = 20_000;

/// How many put errors the summary lists.
const PUT_ERRORS_SHOWN: usize = 5;

/// Where to read on, printed after the run and in `--help`.
pub const NEXT_STEPS: &str = "\
The demo's code: examples/src/demo/mod.rs (the binary: examples/src/bin/demo.rs). A worker of \
your own is about 35 lines: see \"A worker\" in README.md, or run examples/src/bin/worker.rs \
(`cargo run -p kinesis-examples --bin worker -- --help`).";

const TIMING_HELP: &str = "\
Without --kinesis-endpoint/--dynamodb-endpoint or --aws the demo starts the embedded Kinesis \
and DynamoDB servers in-process (as --embedded does): no AWS account, Docker or network needed.

Progress: live progress bars on standard error when standard output and standard error are \
terminals; otherwise one plain `progress` line on standard error every 5 seconds and one at \
the end; none with --no-progress. The summary goes to standard output.

Timing: the workers use a 3 s lease failover (--failover-ms; renewals every 1 s, lease table \
scans every 300 ms; the KCL's default failover is 10 s) and poll a shard with nothing new again \
after 100 ms (--idle-ms; the KCL's default is 1.5 s), so that the two workers share the shards \
within seconds and the run ends shortly after the last record is put. At most 5 GetRecords \
calls per shard and second are made either way (200 ms between calls, as the KCL).

Exit status: 0 when every stored record was consumed and every put succeeded; 1 when records \
were lost (never consumed before --timeout) or puts failed; 2 when the demo could not run \
(the error is printed as one line on standard error).";

/// Produce records through kinesis-kpl, consume them with kinesis-kcl workers, and report what
/// arrived.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "demo", after_help = format!("{TIMING_HELP}\n\n{NEXT_STEPS}"))]
pub struct DemoArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub connect: ConnectArgs,
    /// Start in-process Kinesis and DynamoDB servers (ferrokinesis, dynoxide) and run on them:
    /// the default without endpoints or --aws. They vanish with the run.
    #[arg(long, conflicts_with_all = ["kinesis_endpoint", "dynamodb_endpoint"])]
    pub embedded: bool,
    /// Use real AWS (the default credential chain and region) instead of the embedded servers.
    #[arg(long, conflicts_with_all = ["embedded", "kinesis_endpoint", "dynamodb_endpoint"])]
    pub aws: bool,
    /// Records to produce.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub records: u64,
    /// Distinct partition keys.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Shards of the stream created.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub shards: u32,
    /// Workers consuming the stream.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Stream name (default: a fresh `demo-…` name). An existing stream is used as it is;
    /// records of earlier runs in it are counted apart.
    #[arg(long)]
    pub stream: Option<String>,
    /// Application name, also the lease table's (default: `<stream>-app`).
    #[arg(long)]
    pub application: Option<String>,
    /// No progress bars or lines (for CI and tests); the summary is printed all the same.
    #[arg(long)]
    pub no_progress: bool,
    /// Seconds to wait for every record before counting the missing ones as lost.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Lease failover time of the workers, in milliseconds (see Timing below).
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(300..))]
    pub failover_ms: u64,
    /// Pause before polling a shard with nothing new again, in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub idle_ms: u64,
    /// Keep the stream and lease table the demo created (on endpoints or AWS; embedded
    /// servers vanish with the run anyway).
    #[arg(long)]
    pub keep: bool,
}

impl DemoArgs {
    /// Whether the demo runs on embedded servers: with `--embedded`, or unless endpoints or
    /// `--aws` say otherwise.
    pub fn uses_embedded(&self) -> bool {
        self.embedded
            || (!self.aws
                && self.connect.kinesis_endpoint.is_none()
                && self.connect.dynamodb_endpoint.is_none())
    }

    /// How progress is shown: bars when standard output and standard error are terminals,
    /// plain lines otherwise, nothing with `--no-progress`.
    pub fn progress_mode(&self) -> ProgressMode {
        use std::io::IsTerminal;
        if self.no_progress {
            ProgressMode::Off
        } else if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            ProgressMode::Bars
        } else {
            ProgressMode::Lines
        }
    }
}

/// Connects as the flags say and runs the demo.
///
/// # Errors
///
/// When the servers cannot be reached or started, the stream cannot be created, or a worker
/// stops on its own. Lost records are no error: they are in the [`Summary`].
pub async fn run(args: &DemoArgs) -> Result<Summary, Error> {
    let connection = if args.uses_embedded() {
        Connection::embedded().await?
    } else {
        args.connect.connect().await?
    };
    if !args.no_progress {
        eprintln!("connected to {}", connection.description);
    }
    run_on(&connection, args).await
}

/// Runs the demo on an open connection (its `bed`, when present, marks embedded servers).
///
/// # Errors
///
/// As [`run`].
pub async fn run_on(connection: &Connection, args: &DemoArgs) -> Result<Summary, Error> {
    let run_id = run_id();
    let stream = args
        .stream
        .clone()
        .unwrap_or_else(|| format!("demo-{run_id}"));
    let (application, own_table) = match &args.application {
        Some(app) => (app.clone(), false),
        None => (format!("{stream}-app"), true),
    };
    let created = ensure_stream(&connection.kinesis, &stream, args.shards).await?;
    let shards = open_shards(&connection.kinesis, &stream).await?;
    tracing::info!(%stream, shards, created, %application, "demo stream ready");

    let ids: Vec<String> = (1..=args.workers).map(|i| format!("worker-{i}")).collect();
    let tracker = Arc::new(Tracker::new(&run_id, args.records, args.keys, ids.len()));
    let table = LeaseTable::new(connection.dynamodb.clone(), &application);
    let monitor = Monitor::start(
        table.clone(),
        Arc::clone(&tracker),
        ids.clone(),
        Bars::new(args.records, &ids, args.progress_mode()),
    );
    let mut workers = Workers::default();
    let outcome = async {
        for (i, id) in ids.iter().enumerate() {
            workers.start(connection, args, &stream, &application, id, i, &tracker)?;
        }
        drive(connection, args, &stream, &tracker, &mut workers).await
    }
    .await;
    // Leases per worker while every worker still runs (shutting down releases them).
    let leases = table.list_leases().await;
    let stopped = workers.shut_down().await;
    let watch = monitor.stop().await;
    if !args.keep && connection.bed.is_none() {
        clean_up(connection, &stream, created, &application, own_table).await;
    }
    let run = outcome?;
    stopped?;

    let mut held: BTreeMap<&str, usize> = BTreeMap::new();
    let mut unowned = 0;
    for lease in leases.iter().flatten() {
        match &lease.lease_owner {
            Some(owner) => *held.entry(owner.as_str()).or_insert(0) += 1,
            None => unowned += 1,
        }
    }
    Ok(Summary {
        stream,
        shards,
        target: connection.description.clone(),
        records: args.records,
        keys: args.keys,
        counts: tracker.counts(),
        produce_time: run.produce_time,
        end_to_end_time: run.end_to_end_time,
        timed_out: run.timed_out,
        workers: ids
            .iter()
            .enumerate()
            .map(|(i, id)| WorkerShare {
                worker: id.clone(),
                leases: held.get(id.as_str()).copied().unwrap_or(0),
                records: tracker.delivered_to(i),
            })
            .collect(),
        unowned_leases: unowned,
        lease_moves: watch.moves,
        put_errors: run.put_errors,
    })
}

/// What producing and waiting measured.
struct Run {
    produce_time: Duration,
    end_to_end_time: Duration,
    timed_out: bool,
    put_errors: Vec<String>,
}

/// Produces every record, then waits until every stored one was delivered.
async fn drive(
    connection: &Connection,
    args: &DemoArgs,
    stream: &str,
    tracker: &Tracker,
    workers: &mut Workers,
) -> Result<Run, Error> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let producer = Producer::new(
        connection.kinesis.clone(),
        stream,
        kinesis_kpl::ProducerConfig::default(),
    )
    .await?;
    let mut put_errors = Vec::new();
    let mut settle =
        |n: u64, result: Result<kinesis_kpl::PutResult, kinesis_kpl::PutError>| match result {
            Ok(stored) => tracker.stored(n, &stored.shard_id, &stored.sequence_number),
            Err(error) => {
                tracker.put_failed();
                if put_errors.len() < PUT_ERRORS_SHOWN {
                    put_errors.push(format!("record {n}: {error}"));
                }
            }
        };
    let mut in_flight = VecDeque::new();
    for n in 0..args.records {
        let put = producer.put_record(UserRecord::new(
            tracker.partition_key(n),
            tracker.payload(n),
        ));
        in_flight.push_back((n, put));
        if in_flight.len() >= MAX_IN_FLIGHT
            && let Some((n, put)) = in_flight.pop_front()
        {
            settle(n, put.await);
        }
    }
    producer.shutdown().await;
    for (n, put) in in_flight {
        settle(n, put.await);
    }
    let produce_time = started.elapsed();

    let timed_out = tokio::select! {
        () = tracker.wait_all_delivered() => false,
        () = tokio::time::sleep_until(deadline.into()) => true,
        stopped = workers.tasks.join_next() => {
            let (i, result) = match stopped {
                Some(Ok(ended)) => ended,
                Some(Err(e)) => return Err(format!("a worker task failed: {e}").into()),
                None => return Err("no worker is running".into()),
            };
            return Err(match result {
                Ok(()) => format!("worker-{} stopped on its own", i + 1).into(),
                Err(e) => format!("worker-{} stopped: {e}", i + 1).into(),
            });
        }
    };
    Ok(Run {
        produce_time,
        end_to_end_time: started.elapsed(),
        timed_out,
        put_errors,
    })
}

/// The running workers.
#[derive(Default)]
struct Workers {
    handles: Vec<WorkerHandle>,
    tasks: JoinSet<(usize, kinesis_kcl::Result<()>)>,
}

impl Workers {
    #[allow(clippy::too_many_arguments)]
    fn start(
        &mut self,
        connection: &Connection,
        args: &DemoArgs,
        stream: &str,
        application: &str,
        id: &str,
        index: usize,
        tracker: &Arc<Tracker>,
    ) -> Result<(), Error> {
        let tracker = Arc::clone(tracker);
        let factory = move |_: &ShardContext| Counter {
            tracker: Arc::clone(&tracker),
            worker: index,
        };
        let worker = Worker::builder(
            application,
            connection.kinesis.clone(),
            connection.dynamodb.clone(),
            factory,
        )
        .stream(stream)
        .worker_id(id)
        .initial_position(InitialPosition::TrimHorizon)
        .lease_config(
            LeaseConfig::builder()
                .failover_time(Duration::from_millis(args.failover_ms))
                .build()?,
        )
        .retrieval(Retrieval::Polling(
            PollingConfig::builder()
                .idle_time_between_reads(Duration::from_millis(args.idle_ms))
                .build()?,
        ))
        .build()?;
        self.handles.push(worker.handle());
        self.tasks.spawn(async move { (index, worker.run().await) });
        Ok(())
    }

    /// Shuts every worker down (all at once, so none takes over the leases another releases)
    /// and waits for them.
    async fn shut_down(mut self) -> Result<(), Error> {
        for handle in &self.handles {
            handle.request_shutdown();
        }
        for handle in &self.handles {
            handle.wait_finished().await;
        }
        let mut first_error = None;
        while let Some(joined) = self.tasks.join_next().await {
            let error = match joined {
                Ok((_, Ok(()))) => continue,
                Ok((i, Err(e))) => format!("worker-{} failed: {e}", i + 1),
                Err(e) => format!("a worker task failed: {e}"),
            };
            first_error.get_or_insert(error);
        }
        first_error.map_or(Ok(()), |e| Err(e.into()))
    }
}

/// The demo's processor: records what it is handed, checkpoints after every batch.
struct Counter {
    tracker: Arc<Tracker>,
    worker: usize,
}

#[async_trait::async_trait]
impl ShardRecordProcessor for Counter {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.tracker.delivered(
            self.worker,
            input
                .records
                .iter()
                .map(|r| (r.partition_key(), r.data().as_ref())),
        );
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

/// Creates the stream unless it exists; whether it was created.
async fn ensure_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: u32,
) -> Result<bool, Error> {
    match kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
    {
        Ok(_) => {
            kinesis_integration::stream::wait_for_stream_active(
                kinesis,
                stream,
                kinesis_integration::RESOURCE_TIMEOUT,
            )
            .await?;
            Ok(false)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            kinesis_integration::stream::create_stream(
                kinesis,
                stream,
                shards,
                kinesis_integration::RESOURCE_TIMEOUT,
            )
            .await?;
            Ok(true)
        }
        Err(e) => Err(format!(
            "DescribeStreamSummary {stream}: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(e)
        )
        .into()),
    }
}

async fn open_shards(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Result<u32, Error> {
    let summary = kinesis
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| {
            format!(
                "DescribeStreamSummary {stream}: {}",
                aws_sdk_kinesis::error::DisplayErrorContext(e)
            )
        })?;
    Ok(summary
        .stream_description_summary()
        .map_or(0, |s| s.open_shard_count().max(0) as u32))
}

/// Deletes what the run created on endpoints or AWS; failures are reported, not fatal.
async fn clean_up(
    connection: &Connection,
    stream: &str,
    created: bool,
    application: &str,
    own_table: bool,
) {
    if created
        && let Err(e) = connection
            .kinesis
            .delete_stream()
            .stream_name(stream)
            .enforce_consumer_deletion(true)
            .send()
            .await
    {
        eprintln!(
            "could not delete stream {stream}: {}",
            aws_sdk_kinesis::error::DisplayErrorContext(e)
        );
    }
    if own_table
        && let Err(e) = connection
            .dynamodb
            .delete_table()
            .table_name(application)
            .send()
            .await
    {
        eprintln!(
            "could not delete lease table {application}: {}",
            aws_sdk_dynamodb::error::DisplayErrorContext(e)
        );
    }
}

/// A run id unique per process and call: time, process id and a counter.
fn run_id() -> String {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{millis:x}-{:x}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn no_connection_flags_means_the_embedded_servers() {
        let args = DemoArgs::parse_from(["demo"]);
        assert!(args.uses_embedded());
        assert_eq!(
            (args.records, args.keys, args.shards, args.workers),
            (100_000, 1000, 4, 2)
        );
        let aws = DemoArgs::parse_from(["demo", "--aws"]);
        assert!(!aws.uses_embedded());
        let endpoint =
            DemoArgs::parse_from(["demo", "--kinesis-endpoint", "http://127.0.0.1:4566"]);
        assert!(!endpoint.uses_embedded());
        assert!(DemoArgs::parse_from(["demo", "--embedded"]).uses_embedded());
        assert!(
            DemoArgs::try_parse_from([
                "demo",
                "--embedded",
                "--dynamodb-endpoint",
                "http://127.0.0.1:8000"
            ])
            .is_err()
        );
        assert!(DemoArgs::try_parse_from(["demo", "--aws", "--embedded"]).is_err());
        assert!(DemoArgs::try_parse_from(["demo", "--records", "0"]).is_err());
    }

    #[test]
    fn run_ids_differ_within_a_process() {
        assert_ne!(run_id(), run_id());
    }
}
