//! The demo end to end on the test bed: its library entry and the built `demo` binary (every
//! flag: embedded servers, endpoints, `--aws`, progress lines, `--keep`, errors). The `worker`
//! binary's tests are in `worker.rs`.

mod support;

use clap::Parser;
use kinesis_examples::Connection;
use kinesis_examples::demo::{self, DemoArgs};
use kinesis_integration::TestBed;
use support::{TestResult, assert_one_error_line, bounded};
use tokio::process::Command;

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

/// A command for the built `demo`, with the connection variables cleared so the flags alone
/// decide where it connects.
fn command(binary: &str) -> Command {
    support::command(binary, None)
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
        // --no-progress: no progress lines, no pointers.
        assert!(
            !stderr.lines().any(|l| l.starts_with("progress ")),
            "{stderr}"
        );
        assert!(!stderr.contains("examples/src/demo/mod.rs"), "{stderr}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_binary_prints_plain_progress_lines_when_not_on_a_terminal() -> TestResult {
    bounded(async {
        // Standard output and error are pipes here: plain lines, no bars.
        let output = command(env!("CARGO_BIN_EXE_demo"))
            .args([
                "--embedded",
                "--records",
                "2000",
                "--keys",
                "50",
                "--shards",
                "2",
                "--workers",
                "3",
                "--failover-ms",
                "2000",
                "--idle-ms",
                "50",
                "--timeout",
                "120",
            ])
            .output()
            .await?;
        let stdout = String::from_utf8(output.stdout)?;
        let stderr = String::from_utf8(output.stderr)?;
        assert!(
            output.status.success(),
            "status {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        for field in [
            "(2 shards) on embedded servers",
            "records produced:   2000 of 2000 over 50 keys (0 failed puts)",
            "records lost:       0",
            "worker-3:",
            "result:             OK",
        ] {
            assert!(stdout.contains(field), "missing {field:?} in\n{stdout}");
        }
        let progress: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("progress "))
            .collect();
        let last = progress
            .last()
            .ok_or_else(|| format!("no progress line\n{stderr}"))?;
        assert!(
            last.contains("produced 2000/2000 (") && last.contains("consumed 2000 ("),
            "{last}"
        );
        for worker in ["; worker-1: ", "; worker-2: ", "; worker-3: "] {
            assert!(last.contains(worker), "{last}");
        }
        // No bar drawing: no carriage returns, no escape sequences.
        assert!(
            !stderr.contains('\r') && !stderr.contains('\x1b'),
            "{stderr:?}"
        );
        // Where to read on.
        assert!(stderr.contains("examples/src/demo/mod.rs"), "{stderr}");
        assert!(stderr.contains("\"A worker\" in README.md"), "{stderr}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_demo_help_points_to_its_source_and_the_readme_worker() -> TestResult {
    let output = command(env!("CARGO_BIN_EXE_demo"))
        .arg("--help")
        .output()
        .await?;
    let help = String::from_utf8(output.stdout)?;
    assert!(output.status.success(), "{help}");
    for text in [
        "examples/src/demo/mod.rs",
        "\"A worker\" in README.md",
        "--embedded",
        "one plain `progress` line",
    ] {
        assert!(help.contains(text), "missing {text:?} in\n{help}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_binary_keeps_what_it_used_with_keep() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let (Some(kinesis), Some(dynamodb)) = (bed.kinesis_endpoint(), bed.dynamodb_endpoint())
        else {
            return Ok(());
        };
        let stream = kinesis_integration::unique_name("kept");
        let application = bed.unique_table_name();
        let output = support::command(env!("CARGO_BIN_EXE_demo"), Some(&bed))
            .args([
                "--kinesis-endpoint",
                kinesis,
                "--dynamodb-endpoint",
                dynamodb,
                "--region",
                "eu-west-1",
                "--stream",
                &stream,
                "--application",
                &application,
                "--shards",
                "1",
                "--records",
                "300",
                "--no-progress",
                "--keep",
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
        assert!(stdout.contains("records lost:       0"), "{stdout}");
        // --keep: the stream it created is still there, ACTIVE; --application: the lease table
        // is the one named, with the stream's one lease.
        let summary = bed
            .kinesis()
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await?;
        assert_eq!(
            summary
                .stream_description_summary()
                .map(|s| s.stream_status().clone()),
            Some(aws_sdk_kinesis::types::StreamStatus::Active)
        );
        let leases = kinesis_kcl::lease::LeaseTable::new(bed.dynamodb().clone(), &application)
            .list_leases()
            .await?;
        assert_eq!(leases.len(), 1, "{leases:?}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_binary_runs_on_the_default_aws_configuration_with_aws() -> TestResult {
    bounded(async {
        let bed = TestBed::start().await?;
        let (Some(kinesis), Some(dynamodb)) = (bed.kinesis_endpoint(), bed.dynamodb_endpoint())
        else {
            return Ok(());
        };
        // --aws takes the SDK's own configuration: here, endpoints and dummy credentials from
        // the environment, as the SDK reads them.
        let output = support::command(env!("CARGO_BIN_EXE_demo"), Some(&bed))
            .env("AWS_ENDPOINT_URL_KINESIS", kinesis)
            .env("AWS_ENDPOINT_URL_DYNAMODB", dynamodb)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .args([
                "--aws",
                "--shards",
                "1",
                "--records",
                "300",
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
        assert!(stdout.contains("(1 shards) on AWS"), "{stdout}");
        assert!(stdout.contains("records lost:       0"), "{stdout}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_binary_prints_one_error_line_when_it_cannot_run() -> TestResult {
    bounded(async {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dead = format!("http://127.0.0.1:{port}");
        let output = command(env!("CARGO_BIN_EXE_demo"))
            .args([
                "--kinesis-endpoint",
                &dead,
                "--dynamodb-endpoint",
                &dead,
                "--stream",
                "unreachable",
                "--records",
                "10",
            ])
            .output()
            .await?;
        let out = support::Output {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout)?,
            stderr: String::from_utf8(output.stderr)?,
        };
        assert_eq!(out.code, Some(2), "{out}");
        assert_one_error_line(
            &out,
            &["DescribeStreamSummary unreachable", "dispatch failure"],
        );
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
    for conflicting in [
        &["--aws", "--embedded"][..],
        &["--embedded", "--kinesis-endpoint", "http://127.0.0.1:1"],
    ] {
        let output = command(env!("CARGO_BIN_EXE_demo"))
            .args(conflicting)
            .output()
            .await?;
        assert_eq!(output.status.code(), Some(2), "{conflicting:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("cannot be used with"),
            "{conflicting:?}"
        );
    }
    Ok(())
}
