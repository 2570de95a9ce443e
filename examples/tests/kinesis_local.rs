//! The `kinesis-local` binary: local servers in a process of their own, which the other
//! binaries reach by endpoint, as a developer uses them. Every flag is exercised.

mod support;

use std::process::Stdio;

use support::local::{local_command, pointed_at, start, terminate};
use support::{TestResult, bounded, command, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_worker_binaries_run_against_kinesis_local() -> TestResult {
    bounded(async {
        let local = start(&["--create-stream", "orders:2", "--enforce-limits"]).await?;
        assert!(
            local.kinesis.starts_with("http://127.0.0.1:"),
            "{}",
            local.kinesis
        );
        assert!(
            local.dynamodb.starts_with("http://127.0.0.1:"),
            "{}",
            local.dynamodb
        );

        // The stream exists: the producer puts to it without creating it.
        let mut producer = pointed_at(env!("CARGO_BIN_EXE_producer"), &local);
        producer.args(["--stream", "orders", "--synthetic", "500", "--keys", "20"]);
        let out = run(producer, b"").await?;
        assert_eq!(out.code, Some(0), "{out}");

        // A worker consumes all of it, leasing through the local DynamoDB.
        let mut worker = pointed_at(env!("CARGO_BIN_EXE_worker"), &local);
        worker.args([
            "--stream",
            "orders",
            "--application",
            "orders-app",
            "--initial-position",
            "trim-horizon",
            "--exit-after",
            "500",
        ]);
        let out = run(worker, b"").await?;
        assert_eq!(out.code, Some(0), "{out}");

        let status = terminate(local).await?;
        assert!(status.success(), "SIGTERM ends it cleanly: {status}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_stream_flag_is_refused_with_the_value() -> TestResult {
    bounded(async {
        let mut command = local_command(&["--create-stream", "orders:zero"]);
        command.stdout(Stdio::piped());
        let out = run(command, b"").await?;
        assert_eq!(out.code, Some(2), "{out}");
        assert!(out.stderr.contains("\"zero\""), "{out}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_one_error_line() -> TestResult {
    bounded(async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = taken.local_addr()?.port().to_string();
        let mut command = command(env!("CARGO_BIN_EXE_kinesis-local"), None);
        command.args(["--kinesis-port", &port, "--dynamodb-port", "0"]);
        let out = run(command, b"").await?;
        assert_eq!(out.code, Some(1), "{out}");
        support::assert_one_error_line(&out, &["ferrokinesis"]);
        Ok(())
    })
    .await
}
