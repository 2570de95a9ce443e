//! The built `worker` binary against the test bed: counting and printing, exiting after N
//! records, Prometheus metrics, progress lines, each initial position (AT_TIMESTAMP included),
//! enhanced fan-out with a default and a named consumer, and its errors.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ConsumerStatus;
use kinesis_examples::timestamp::format_rfc3339;
use kinesis_integration::TestBed;
use kinesis_kcl::lease::LeaseTable;
use kinesis_kcl::metrics::{LEASES_HELD, RECORDS_PROCESSED};
use support::{
    BoxError, Output, PATIENCE, TestResult, assert_one_error_line, bounded, collect_stderr,
    command, endpoint_flags, produce, read_stream, run, run_in_background, wait_until,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How records are fetched, with the flags each needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fetch {
    /// `--retrieval polling --idle-ms 100` (polling is also the default: `Default` passes no
    /// `--retrieval`).
    Polling,
    Default,
    /// `--retrieval fan-out`.
    FanOut,
}

/// The worker binary against the bed's endpoints: quick failover, and quick polling when
/// polling.
fn worker(
    bed: &TestBed,
    stream: &str,
    application: &str,
    fetch: Fetch,
) -> Result<Command, BoxError> {
    let mut command = command(env!("CARGO_BIN_EXE_worker"), Some(bed));
    command
        .args(endpoint_flags(bed).ok_or("the bed has no Kinesis or no DynamoDB endpoint")?)
        .args([
            "--stream",
            stream,
            "--application",
            application,
            "--failover-ms",
            "3000",
        ]);
    match fetch {
        Fetch::Polling => command.args(["--retrieval", "polling", "--idle-ms", "100"]),
        Fetch::Default => command.args(["--idle-ms", "100"]),
        Fetch::FanOut => command.args(["--retrieval", "fan-out"]),
    };
    Ok(command)
}

/// The `--print` lines of a run: (shard, sequence number), checked for their shape (five
/// tab-separated fields, the data's size but never the data).
fn printed(out: &Output) -> Result<Vec<(String, String)>, BoxError> {
    let mut records = Vec::new();
    for line in out.stdout.lines().filter(|l| l.contains('\t')) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields.len(), 5, "{line}");
        assert!(fields[0].starts_with("shardId-"), "{line}");
        assert!(fields[3].starts_with("key-"), "{line}");
        assert!(fields[4].parse::<usize>()? <= 3, "{line}");
        records.push((fields[0].to_owned(), fields[1].to_owned()));
    }
    Ok(records)
}

fn assert_processed(out: &Output, n: u64) {
    assert_eq!(out.code, Some(0), "{out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == format!("processed {n} records")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_counts_and_exits_after_n_records() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        if bed.kinesis_endpoint().is_none() {
            // Real AWS (endpoint backend without endpoints): the binary needs endpoints here.
            return Ok(());
        }
        let stream = bed.create_stream(2).await?;
        let n = 500;
        produce(&bed, &stream, 0..n).await?;
        let application = bed.unique_table_name();
        let mut command = worker(&bed, &stream, &application, Fetch::Polling)?;
        command.args([
            "--initial-position",
            "trim-horizon",
            "--exit-after",
            &n.to_string(),
            "--print",
            "--worker-id",
            "worker-count",
            "--report-every",
            "0",
        ]);
        let out = run(command, b"").await?;
        assert_processed(&out, n);
        assert!(
            out.stderr
                .contains(&format!("worker worker-count consuming {stream}")),
            "{out}"
        );
        // --report-every 0: no progress lines.
        assert!(!out.stderr.contains("records/s"), "{out}");
        // --print: one line per record, its size but never its data.
        assert_eq!(printed(&out)?.len() as u64, n);
        // It checkpointed and handed its leases back on the way out.
        let table = LeaseTable::new(bed.dynamodb().clone(), &application);
        let leases = table.list_leases().await?;
        assert_eq!(leases.len(), 2);
        for lease in &leases {
            assert_eq!(lease.lease_owner, None, "released: {lease:?}");
            assert!(
                !lease.checkpoint.position.is_sentinel(),
                "checkpointed: {lease:?}"
            );
        }
        Ok(())
    })
    .await
}

/// `GET path` over plain HTTP/1.1; the whole response.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String, BoxError> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// The value of the first sample of `name` in a Prometheus text response.
fn sample(response: &str, name: &str) -> Option<f64> {
    response
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_binary_serves_prometheus_metrics() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        if bed.kinesis_endpoint().is_none() {
            return Ok(());
        }
        let stream = bed.create_stream(1).await?;
        let n = 300;
        produce(&bed, &stream, 0..n).await?;
        let application = bed.unique_table_name();
        let mut child: Child = worker(&bed, &stream, &application, Fetch::Default)?
            .args([
                "--initial-position",
                "trim-horizon",
                "--metrics-addr",
                "127.0.0.1:0",
                "--worker-id",
                "worker-metrics",
                "--report-every",
                "1",
            ])
            .spawn()?;
        let stderr = collect_stderr(&mut child)?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next_line()
            .await?
            .ok_or("the worker printed nothing")?;
        let url = first
            .strip_prefix("metrics: http://")
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .ok_or_else(|| format!("unexpected first line {first:?}"))?;
        let addr: SocketAddr = url.parse()?;
        assert_ne!(addr.port(), 0, "the bound port is printed");

        // The counter reaches n once the worker processed every record.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = String::new();
        let processed = loop {
            let response = http_get(addr, "/metrics").await?;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            if let Some(value) = sample(&response, RECORDS_PROCESSED)
                && value >= n as f64
            {
                break value;
            }
            last = response;
            if Instant::now() >= deadline {
                return Err(format!("no {RECORDS_PROCESSED} of {n}:\n{last}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(processed, n as f64, "every record once: {last}");
        let response = http_get(addr, "/metrics").await?;
        assert!(
            response.contains(&format!("{RECORDS_PROCESSED}{{stream=\"{stream}\"}} {n}")),
            "{response}"
        );
        assert!(sample(&response, LEASES_HELD) == Some(1.0), "{response}");
        // --worker-id: the lease is held under that id.
        let table = LeaseTable::new(bed.dynamodb().clone(), &application);
        let leases = table.list_leases().await?;
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].lease_owner.as_deref(), Some("worker-metrics"));
        // --report-every 1: a progress line each second, with the final count.
        let expected = format!("processed {n} records (");
        wait_until("a progress line with every record", || {
            let found =
                stderr.lock().unwrap().iter().any(|l| {
                    l.starts_with(&expected) && l.ends_with("records/s), 1 shards leased")
                });
            async move { Ok(found) }
        })
        .await?;
        child.kill().await?;
        Ok(())
    })
    .await
}

/// A stream holding `before` records put before a point in time and `after` records put
/// after it: the point, and the (shard, sequence number) of the later records.
async fn records_around_a_mark(
    bed: &TestBed,
    stream: &str,
    before: u64,
    after: u64,
) -> Result<(SystemTime, BTreeSet<(String, String)>), BoxError> {
    produce(bed, stream, 0..before).await?;
    let early = read_stream(bed, stream, before as usize).await?;
    let last_early = early
        .iter()
        .filter_map(|r| r.arrival)
        .max()
        .ok_or("no arrival timestamps")?;
    // The mark: the whole second after the last early arrival (arrival times may come in
    // whole seconds, as ferrokinesis gives them), and the later records put once the clock
    // has passed it.
    let mark =
        UNIX_EPOCH + Duration::from_secs(last_early.duration_since(UNIX_EPOCH)?.as_secs() + 1);
    wait_until("the clock passes the mark", || async move {
        Ok(SystemTime::now() > mark + Duration::from_millis(20))
    })
    .await?;
    let late: BTreeSet<(String, String)> = produce(bed, stream, before..before + after)
        .await?
        .into_iter()
        .collect();
    let all = read_stream(bed, stream, (before + after) as usize).await?;
    for record in &all {
        let arrival = record.arrival.ok_or("no arrival timestamp")?;
        let value: u64 = std::str::from_utf8(&record.data)?.parse()?;
        assert_eq!(
            arrival >= mark,
            value >= before,
            "record {value} arrived at {arrival:?}, the mark is {mark:?}"
        );
    }
    Ok((mark, late))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_timestamp_starts_at_the_first_record_at_or_after_an_rfc3339_time() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        if bed.kinesis_endpoint().is_none() {
            return Ok(());
        }
        let stream = bed.create_stream(2).await?;
        let (mark, late) = records_around_a_mark(&bed, &stream, 150, 120).await?;
        let mut command = worker(&bed, &stream, &bed.unique_table_name(), Fetch::Polling)?;
        command.args([
            "--initial-position",
            "at-timestamp",
            "--timestamp",
            &format_rfc3339(mark),
            "--exit-after",
            "120",
            "--print",
        ]);
        let out = run(command, b"").await?;
        assert_processed(&out, 120);
        let seen: BTreeSet<(String, String)> = printed(&out)?.into_iter().collect();
        assert_eq!(seen, late, "exactly the records put after the mark\n{out}");
        Ok(())
    })
    .await
}

/// The status of the stream consumer `name`, `None` when there is none.
async fn consumer_status(
    bed: &TestBed,
    stream: &str,
    name: &str,
) -> Result<Option<ConsumerStatus>, BoxError> {
    let arn = bed.stream_arn(stream).await?;
    match bed
        .kinesis()
        .describe_stream_consumer()
        .stream_arn(arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(out) => Ok(out
            .consumer_description()
            .map(|c| c.consumer_status().clone())),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reads_every_record_as_a_consumer_named_after_the_application() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        if bed.kinesis_endpoint().is_none() {
            return Ok(());
        }
        let stream = bed.create_stream(2).await?;
        let n = 400;
        let stored: BTreeSet<(String, String)> =
            produce(&bed, &stream, 0..n).await?.into_iter().collect();
        let application = bed.unique_table_name();
        let mut command = worker(&bed, &stream, &application, Fetch::FanOut)?;
        command.args([
            "--initial-position",
            "trim-horizon",
            "--exit-after",
            &n.to_string(),
            "--print",
        ]);
        let out = run(command, b"").await?;
        assert_processed(&out, n);
        let seen: BTreeSet<(String, String)> = printed(&out)?.into_iter().collect();
        assert_eq!(seen, stored, "{out}");
        // The consumer is the application's, and outlives the worker (as the Java KCL's).
        assert_eq!(
            consumer_status(&bed, &stream, &application).await?,
            Some(ConsumerStatus::Active)
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_with_a_named_consumer_from_an_epoch_millis_timestamp_deregisters_it() -> TestResult
{
    bounded(async {
        let bed = TestBed::start().await?;
        if bed.kinesis_endpoint().is_none() {
            return Ok(());
        }
        let stream = bed.create_stream(2).await?;
        let (mark, late) = records_around_a_mark(&bed, &stream, 100, 80).await?;
        let millis = mark.duration_since(UNIX_EPOCH)?.as_millis().to_string();
        let consumer = kinesis_integration::unique_name("reader");
        let application = bed.unique_table_name();
        let mut command = worker(&bed, &stream, &application, Fetch::FanOut)?;
        command.args([
            "--consumer-name",
            &consumer,
            "--deregister-consumer",
            "--initial-position",
            "at-timestamp",
            "--timestamp",
            &millis,
            "--exit-after",
            "80",
            "--print",
        ]);
        let running = run_in_background(command)?;
        // Registered under the name given, not the application's.
        wait_until("the named consumer is active", || {
            let (bed, stream, consumer) = (&bed, &stream, &consumer);
            async move {
                Ok(consumer_status(bed, stream, consumer).await? == Some(ConsumerStatus::Active))
            }
        })
        .await?;
        let out = running.finish(PATIENCE).await?;
        assert_processed(&out, 80);
        let seen: BTreeSet<(String, String)> = printed(&out)?.into_iter().collect();
        assert_eq!(seen, late, "exactly the records put after the mark\n{out}");
        assert_eq!(consumer_status(&bed, &stream, &application).await?, None);
        // --deregister-consumer: gone (or going) once the worker is.
        let status = consumer_status(&bed, &stream, &consumer).await?;
        assert!(
            matches!(status, None | Some(ConsumerStatus::Deleting)),
            "{status:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_skips_the_records_put_before_the_worker_started() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        if bed.kinesis_endpoint().is_none() {
            return Ok(());
        }
        let stream = bed.create_stream(1).await?;
        let old: BTreeSet<(String, String)> =
            produce(&bed, &stream, 0..50).await?.into_iter().collect();
        let mut command = worker(&bed, &stream, &bed.unique_table_name(), Fetch::Polling)?;
        command.args([
            "--initial-position",
            "latest",
            "--exit-after",
            "20",
            "--print",
            "--region",
            "eu-west-1",
        ]);
        // Records keep coming while the worker runs: whichever it starts at, it sees 20 of
        // them and none of the old ones.
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let putter = {
            let kinesis = bed.kinesis().clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    kinesis
                        .put_record()
                        .stream_name(&stream)
                        .partition_key(format!("key-{n}"))
                        .data(Blob::new(format!("{}", n % 100)))
                        .send()
                        .await?;
                    n += 1;
                    tokio::select! {
                        _ = &mut stopped => return Ok::<u64, BoxError>(n),
                        () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    }
                }
            })
        };
        let out = run(command, b"").await?;
        let _ = stop.send(());
        let put = putter.await??;
        assert!(put >= 20, "{put} records put while the worker ran");
        assert_eq!(out.code, Some(0), "{out}");
        let seen = printed(&out)?;
        assert!(seen.len() >= 20, "{out}");
        for record in &seen {
            assert!(
                !old.contains(record),
                "an old record was read: {record:?}\n{out}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_one_error_line_with_its_cause() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        if bed.kinesis_endpoint().is_none() {
            return Ok(());
        }
        let stream = kinesis_integration::unique_name("missing");
        let out = run(
            worker(&bed, &stream, &bed.unique_table_name(), Fetch::Polling)?,
            b"",
        )
        .await?;
        assert_eq!(out.code, Some(1), "{out}");
        assert_one_error_line(&out, &[&stream, "ResourceNotFoundException"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bad_flag_combinations_are_refused_with_status_2() -> TestResult {
    let cases: [(&[&str], &str); 7] = [
        (&["--initial-position", "at-timestamp"], "--timestamp"),
        (
            &[
                "--initial-position",
                "at-timestamp",
                "--timestamp",
                "yesterday",
            ],
            "invalid timestamp \"yesterday\"",
        ),
        (
            &[
                "--initial-position",
                "at-timestamp",
                "--timestamp",
                "2024-02-30T00:00:00Z",
            ],
            "\"2024-02-30T00:00:00Z\"",
        ),
        (
            &[
                "--initial-position",
                "trim-horizon",
                "--timestamp",
                "1714564800",
            ],
            "--timestamp needs --initial-position at-timestamp",
        ),
        (
            &["--consumer-name", "reader"],
            "--consumer-name and --deregister-consumer need --retrieval fan-out",
        ),
        (
            &["--retrieval", "fan-out", "--idle-ms", "100"],
            "--idle-ms is a polling setting",
        ),
        (&["--embedded"], "--embedded"),
    ];
    for (args, expected) in cases {
        let mut command = command(env!("CARGO_BIN_EXE_worker"), None);
        command
            .args(["--stream", "s", "--application", "a"])
            .args(args);
        let out = run(command, b"").await?;
        assert_eq!(out.code, Some(2), "{args:?}\n{out}");
        assert!(
            out.stderr.contains(expected),
            "{args:?}: {expected:?}\n{out}"
        );
    }
    Ok(())
}
