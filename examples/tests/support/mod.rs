//! What the binary tests share: running a built binary against the test bed (a command with
//! a clean environment, a run to the end with its output, a spawned child's standard error as
//! it comes, the shape of an error), waiting for a condition with a deadline, putting records,
//! and reading a stream back.

#![allow(dead_code)] // each test file uses its part

pub(crate) mod local;

use std::future::Future;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, deaggregate};
use kinesis_integration::{Backend, TestBed};
use kinesis_kpl::{Producer, UserRecord};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type TestResult = Result<(), BoxError>;

/// Every test body runs under this bound, so a hang fails instead of blocking the suite.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(240);

/// Generous bound for anything that should happen promptly.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) async fn bounded(body: impl Future<Output = TestResult>) -> TestResult {
    bounded_by(TEST_TIMEOUT, body).await
}

/// [`bounded`] with another bound.
pub(crate) async fn bounded_by(
    limit: Duration,
    body: impl Future<Output = TestResult>,
) -> TestResult {
    tokio::time::timeout(limit, body)
        .await
        .map_err(|_| format!("test did not finish within {limit:?}"))?
}

/// Waits until `condition` holds, checking every 50 ms, for at most [`PATIENCE`].
pub(crate) async fn wait_until<F, Fut>(what: &str, mut condition: F) -> TestResult
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, BoxError>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if condition().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {PATIENCE:?} waiting for: {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A command for a built binary of this package: the connection variables and `RUST_LOG`
/// cleared so that the flags alone decide where it connects and what it logs; with a bed that
/// signs with dummy credentials (every backend but `endpoint`), the credentials in the
/// environment hidden so that the binary signs with the same dummy ones.
pub(crate) fn command(binary: &str, bed: Option<&TestBed>) -> Command {
    let mut command = Command::new(binary);
    command
        .env_remove("KINESIS_ENDPOINT")
        .env_remove("DYNAMODB_ENDPOINT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if bed.is_some_and(|bed| bed.backend() != Backend::Endpoint) {
        for variable in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        ] {
            command.env_remove(variable);
        }
    }
    command
}

/// The connection flags pointing a binary at the bed; `None` for a bed on real AWS (whose
/// tests need endpoints and return early).
pub(crate) fn endpoint_flags(bed: &TestBed) -> Option<Vec<String>> {
    Some(vec![
        "--kinesis-endpoint".to_owned(),
        bed.kinesis_endpoint()?.to_owned(),
        "--dynamodb-endpoint".to_owned(),
        bed.dynamodb_endpoint()?.to_owned(),
    ])
}

/// What a finished binary printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to the end with `stdin` as its standard input.
pub(crate) async fn run(mut command: Command, stdin: &[u8]) -> Result<Output, BoxError> {
    let mut child = command.stdin(Stdio::piped()).spawn()?;
    let mut input = child.stdin.take().ok_or("no stdin")?;
    input.write_all(stdin).await?;
    drop(input);
    let output = child.wait_with_output().await?;
    Ok(Output {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout)?,
        stderr: String::from_utf8(output.stderr)?,
    })
}

/// Collects the lines a spawned child writes to standard error, as they come (for a child
/// the test talks to while it runs; [`run`] collects a child's output at its end).
pub(crate) fn collect_stderr(child: &mut Child) -> Result<Arc<Mutex<Vec<String>>>, BoxError> {
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    tokio::spawn(async move {
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    Ok(lines)
}

/// A binary running in the background, its output collected as it comes, for a test that
/// acts while the binary runs; [`InBackground::finish`] waits for it to exit.
#[derive(Debug)]
pub(crate) struct InBackground {
    child: Child,
    stdout: JoinHandle<std::io::Result<String>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Spawns `command`, collecting its standard output and error in the background.
pub(crate) fn run_in_background(mut command: Command) -> Result<InBackground, BoxError> {
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let stdout = tokio::spawn(async move {
        let mut text = String::new();
        BufReader::new(stdout)
            .read_to_string(&mut text)
            .await
            .map(|_| text)
    });
    let stderr = collect_stderr(&mut child)?;
    Ok(InBackground {
        child,
        stdout,
        stderr,
    })
}

impl InBackground {
    /// Waits at most `limit` for the binary to exit; what it printed (its standard error's
    /// lines joined with `\n`).
    pub(crate) async fn finish(mut self, limit: Duration) -> Result<Output, BoxError> {
        let status = tokio::time::timeout(limit, self.child.wait()).await??;
        Ok(Output {
            code: status.code(),
            stdout: self.stdout.await??,
            stderr: self.stderr.lock().unwrap().join("\n"),
        })
    }
}

/// Asserts that a failed run ended with exactly one error line, `error: …`, holding every
/// `needle`, and printed no `Debug` dump.
pub(crate) fn assert_one_error_line(out: &Output, needles: &[&str]) {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let errors: Vec<&&str> = lines.iter().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one `error: ` line\n{out}");
    let line = errors[0];
    assert_eq!(lines.last(), Some(line), "the error line comes last\n{out}");
    for needle in needles {
        assert!(
            line.contains(needle),
            "missing {needle:?} in the error line\n{out}"
        );
    }
    for dump in ["{ ", "Some(", "source:", "ErrorMetadata", "\\n"] {
        assert!(
            !out.stderr.contains(dump),
            "a Debug dump ({dump:?}) in\n{out}"
        );
    }
    assert!(
        line.len() < 600,
        "an error line of {} bytes\n{out}",
        line.len()
    );
}

/// Puts `values` (as decimal text) through the KPL with keys `key-<v % 17>`; returns the
/// (shard, sequence number) of each, in order.
pub(crate) async fn produce(
    bed: &TestBed,
    stream: &str,
    values: std::ops::Range<u64>,
) -> Result<Vec<(String, String)>, BoxError> {
    let producer = Producer::new(
        bed.kinesis().clone(),
        stream,
        kinesis_kpl::ProducerConfig::default(),
    )
    .await?;
    let puts: Vec<_> = values
        .map(|v| {
            producer.put_record(UserRecord::new(
                format!("key-{}", v % 17),
                Bytes::from(v.to_string()),
            ))
        })
        .collect();
    producer.shutdown().await;
    let mut stored = Vec::new();
    for put in puts {
        let result = put.await?;
        stored.push((result.shard_id, result.sequence_number));
    }
    Ok(stored)
}

/// A user record read back from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub shard: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    pub arrival: Option<std::time::SystemTime>,
}

/// Reads every user record of every shard of `stream` from `TRIM_HORIZON` (deaggregated),
/// until `expected` were read (or [`PATIENCE`] runs out).
pub(crate) async fn read_stream(
    bed: &TestBed,
    stream: &str,
    expected: usize,
) -> Result<Vec<Stored>, BoxError> {
    let kinesis = bed.kinesis();
    let shards = kinesis.list_shards().stream_name(stream).send().await?;
    let mut iterators = Vec::new();
    for shard in shards.shards() {
        let iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?;
        iterators.push((shard.shard_id().to_owned(), iterator.shard_iterator));
    }
    let mut stored = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while stored.len() < expected {
        if Instant::now() >= deadline {
            return Err(format!("read {} of {expected} records", stored.len()).into());
        }
        let mut empty = true;
        for (shard, iterator) in &mut iterators {
            let Some(current) = iterator.take() else {
                continue;
            };
            let page = kinesis.get_records().shard_iterator(current).send().await?;
            *iterator = page.next_shard_iterator().map(str::to_owned);
            for record in page.records() {
                empty = false;
                let arrival = record
                    .approximate_arrival_timestamp()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok());
                match deaggregate(Bytes::copy_from_slice(record.data().as_ref())) {
                    Deaggregated::Aggregated(records) => {
                        stored.extend(records.iter().map(|r| Stored {
                            shard: shard.clone(),
                            partition_key: r.partition_key().to_owned(),
                            data: r.data().to_vec(),
                            arrival,
                        }))
                    }
                    Deaggregated::PassThrough { data, .. } => stored.push(Stored {
                        shard: shard.clone(),
                        partition_key: record.partition_key().unwrap_or_default().to_owned(),
                        data: data.to_vec(),
                        arrival,
                    }),
                }
            }
        }
        if empty {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(stored)
}
