//! The demo and the worker binary end to end on the test bed: the demo's library entry, the
//! built `demo` binary, and the built `worker` binary (counting, exiting after N records,
//! serving Prometheus metrics).

use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use kinesis_examples::Connection;
use kinesis_examples::demo::{self, DemoArgs};
use kinesis_integration::TestBed;
use kinesis_kpl::{Producer, UserRecord};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type TestResult = Result<(), BoxError>;

/// Every test body runs under this bound, so a hang fails instead of blocking the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(240);

async fn bounded(body: impl Future<Output = TestResult>) -> TestResult {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .map_err(|_| format!("test did not finish within {TEST_TIMEOUT:?}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_loses_nothing_and_reports_every_field() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        // 5 000 records (fewer on the slow emulators backend).
        let records = bed.scaled(5000) as u64;
        let count = records.to_string();
        let connection = Connection {
            kinesis: bed.kinesis().clone(),
            dynamodb: bed.dynamodb().clone(),
            description: format!("test bed ({:?})", bed.backend()),
            bed: Some(bed),
        };
        let args = DemoArgs::parse_from([
            "demo",
            "--records",
            &count,
            "--keys",
            "100",
            "--workers",
            "2",
            "--no-progress",
            "--timeout",
            "120",
        ]);
        let summary = demo::run_on(&connection, &args).await?;
        eprintln!("{summary}");
        let counts = &summary.counts;
        assert_eq!(counts.failed_puts, 0, "{summary}");
        assert_eq!(counts.produced, records, "{summary}");
        assert_eq!(counts.lost, 0, "{summary}");
        assert!(counts.consumed >= counts.produced, "{summary}");
        assert_eq!(counts.duplicates, counts.deliveries - counts.consumed);
        assert_eq!(counts.foreign + counts.malformed, 0, "{summary}");
        assert!(!summary.timed_out);
        assert!(summary.ok());
        assert_eq!(summary.shards, 4);
        // The KPL aggregated: fewer Kinesis records than user records.
        assert!(counts.kinesis_records > 0);
        assert!(
            summary.aggregation_ratio() > 1.0,
            "aggregation ratio {}",
            summary.aggregation_ratio()
        );
        // Two workers, every delivery attributed to one of them, the 4 leases held at the end.
        assert_eq!(summary.workers.len(), 2);
        assert_eq!(
            summary.workers.iter().map(|w| w.records).sum::<u64>(),
            counts.deliveries
        );
        assert_eq!(
            summary.workers.iter().map(|w| w.leases).sum::<usize>() + summary.unowned_leases,
            4
        );
        assert!(summary.produce_throughput() > 0.0);
        assert!(summary.end_to_end_throughput() > 0.0);
        let text = summary.to_string();
        for field in [
            &format!("records produced:   {records} of {records} over 100 keys (0 failed puts)"),
            "records lost:       0",
            "duplicates:",
            "aggregation ratio:",
            "lease distribution: worker-1:",
            "result:             OK",
        ] {
            assert!(text.contains(field), "missing {field:?} in\n{text}");
        }
        Ok(())
    })
    .await
}

/// A command for a built binary of this package, with the connection variables cleared so
/// the flags alone decide where it connects.
fn command(binary: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .env_remove("KINESIS_ENDPOINT")
        .env_remove("DYNAMODB_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_binary_exits_zero_with_a_summary() -> TestResult {
    bounded(async {
        let output = command(env!("CARGO_BIN_EXE_demo"))
            .args(["--records", "2000", "--no-progress"])
            .output()
            .await?;
        let stdout = String::from_utf8(output.stdout)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        for field in [
            "demo summary",
            "(4 shards) on embedded servers",
            "records produced:   2000 of 2000 over 1000 keys (0 failed puts)",
            "records consumed:   2000",
            "records lost:       0",
            "aggregation ratio:",
            "lease distribution:",
            "result:             OK",
        ] {
            assert!(stdout.contains(field), "missing {field:?} in\n{stdout}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_binary_runs_against_endpoints_and_deletes_what_it_created() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let (Some(kinesis), Some(dynamodb)) = (bed.kinesis_endpoint(), bed.dynamodb_endpoint())
        else {
            // Real AWS (endpoint backend without endpoints): covered by the embedded runs.
            return Ok(());
        };
        let stream = kinesis_integration::unique_name("demo");
        let records = bed.scaled(1000).to_string();
        let output = command(env!("CARGO_BIN_EXE_demo"))
            .args([
                "--kinesis-endpoint",
                kinesis,
                "--dynamodb-endpoint",
                dynamodb,
                "--stream",
                &stream,
                "--shards",
                "2",
                "--records",
                &records,
                "--no-progress",
            ])
            .output()
            .await?;
        let stdout = String::from_utf8(output.stdout)?;
        assert!(
            output.status.success(),
            "status {:?}\nstdout:\n{stdout}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains(&format!("{stream} (2 shards) on Kinesis {kinesis}")),
            "{stdout}"
        );
        assert!(stdout.contains("records lost:       0"), "{stdout}");
        // The stream (deleting or gone) and the lease table `<stream>-app` were deleted.
        match bed
            .kinesis()
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await
        {
            Ok(summary) => assert_eq!(
                summary
                    .stream_description_summary()
                    .map(|s| s.stream_status().clone()),
                Some(aws_sdk_kinesis::types::StreamStatus::Deleting)
            ),
            Err(e) => assert!(
                e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()),
                "{e:?}"
            ),
        }
        match bed
            .dynamodb()
            .describe_table()
            .table_name(format!("{stream}-app"))
            .send()
            .await
        {
            Ok(table) => assert_eq!(
                table.table().and_then(|t| t.table_status().cloned()),
                Some(aws_sdk_dynamodb::types::TableStatus::Deleting),
                "lease table left behind"
            ),
            Err(e) => assert!(
                e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()),
                "{e:?}"
            ),
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_demo_binary_rejects_bad_flags() -> TestResult {
    let output = command(env!("CARGO_BIN_EXE_demo"))
        .args(["--records", "0"])
        .output()
        .await?;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--records"));
    Ok(())
}

/// Puts `n` records (values `0..n`) through the KPL.
async fn produce(bed: &TestBed, stream: &str, n: u64) -> TestResult {
    let producer = Producer::new(
        bed.kinesis().clone(),
        stream,
        kinesis_kpl::Config::default(),
    )
    .await?;
    let puts: Vec<_> = (0..n)
        .map(|v| {
            producer.put_record(UserRecord::new(
                format!("key-{}", v % 17),
                Bytes::from(v.to_string()),
            ))
        })
        .collect();
    producer.shutdown().await;
    for put in puts {
        put.await?;
    }
    Ok(())
}

/// The worker binary against the bed's endpoints.
fn worker(bed: &TestBed, stream: &str, application: &str) -> Result<Command, BoxError> {
    let mut command = command(env!("CARGO_BIN_EXE_worker"));
    command.args([
        "--kinesis-endpoint",
        bed.kinesis_endpoint()
            .ok_or("the bed has no Kinesis endpoint")?,
        "--dynamodb-endpoint",
        bed.dynamodb_endpoint()
            .ok_or("the bed has no DynamoDB endpoint")?,
        "--stream",
        stream,
        "--application",
        application,
        "--initial-position",
        "trim-horizon",
        "--idle-ms",
        "100",
        "--failover-ms",
        "3000",
    ]);
    Ok(command)
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
        produce(&bed, &stream, n).await?;
        let application = bed.unique_table_name();
        let output = worker(&bed, &stream, &application)?
            .args(["--exit-after", &n.to_string(), "--print"])
            .output()
            .await?;
        let stdout = String::from_utf8(output.stdout)?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "status {:?}\nstderr:\n{stderr}",
            output.status
        );
        assert!(
            stdout
                .lines()
                .any(|l| l == format!("processed {n} records")),
            "stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        // --print: one line per record, its size but never its data.
        let printed: Vec<&str> = stdout.lines().filter(|l| l.contains('\t')).collect();
        assert_eq!(printed.len() as u64, n);
        for line in &printed {
            let fields: Vec<&str> = line.split('\t').collect();
            assert_eq!(fields.len(), 5, "{line}");
            assert!(fields[0].starts_with("shardId-"), "{line}");
            assert!(fields[3].starts_with("key-"), "{line}");
            assert!(fields[4].parse::<usize>()? <= 3, "{line}");
        }
        // It checkpointed and handed its leases back on the way out.
        let table = kinesis_kcl::lease::LeaseTable::new(bed.dynamodb().clone(), &application);
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
        produce(&bed, &stream, n).await?;
        let mut child: Child = worker(&bed, &stream, &bed.unique_table_name())?
            .args(["--metrics-addr", "127.0.0.1:0"])
            .spawn()?;
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
            if let Some(value) = sample(&response, "kcl_records_processed_total")
                && value >= n as f64
            {
                break value;
            }
            last = response;
            if Instant::now() >= deadline {
                return Err(format!("no kcl_records_processed_total of {n}:\n{last}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(processed, n as f64, "every record once: {last}");
        let response = http_get(addr, "/metrics").await?;
        assert!(
            response.contains(&format!(
                "kcl_records_processed_total{{stream=\"{stream}\"}} {n}"
            )),
            "{response}"
        );
        assert!(
            sample(&response, "kcl_leases_held") == Some(1.0),
            "{response}"
        );
        child.kill().await?;
        Ok(())
    })
    .await
}
