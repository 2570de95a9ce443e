//! The `kinesis-local` binary: local servers in a process of their own, which the other
//! binaries reach by endpoint, as a developer uses them. Every flag is exercised.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::{BoxError, TestResult, bounded, command, run};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `kinesis-local` and the endpoints it printed.
struct Local {
    child: Child,
    kinesis: String,
    dynamodb: String,
}

/// Starts `kinesis-local` with `args` (on any free ports) and reads its endpoints from standard
/// output, up to `ready`.
async fn start(args: &[&str]) -> Result<Local, BoxError> {
    let mut child = local_command(args).spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let (mut kinesis, mut dynamodb) = (None, None);
    let ready = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("KINESIS_ENDPOINT=") {
                kinesis = Some(url.to_owned());
            } else if let Some(url) = line.strip_prefix("DYNAMODB_ENDPOINT=") {
                dynamodb = Some(url.to_owned());
            } else if line == "ready" {
                return Ok(());
            }
        }
        Err::<(), BoxError>("kinesis-local ended before it was ready".into())
    };
    tokio::time::timeout(Duration::from_secs(60), ready)
        .await
        .map_err(|_| "kinesis-local was not ready within 60 s")??;
    Ok(Local {
        child,
        kinesis: kinesis.ok_or("no KINESIS_ENDPOINT line")?,
        dynamodb: dynamodb.ok_or("no DYNAMODB_ENDPOINT line")?,
    })
}

fn local_command(args: &[&str]) -> Command {
    let mut command = command(env!("CARGO_BIN_EXE_kinesis-local"), None);
    command
        .args(["--kinesis-port", "0", "--dynamodb-port", "0"])
        .args(args);
    command
}

/// A command for another binary pointed at `local` through the environment variables it
/// printed (as the module docs of `kinesis-local` show).
fn pointed_at(binary: &str, local: &Local) -> Command {
    let mut command = command(binary, None);
    command
        .env("KINESIS_ENDPOINT", &local.kinesis)
        .env("DYNAMODB_ENDPOINT", &local.dynamodb)
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("AWS_REGION", "us-east-1");
    command
}

/// Sends SIGTERM and waits for the exit status.
async fn terminate(mut local: Local) -> Result<std::process::ExitStatus, BoxError> {
    let pid = local.child.id().ok_or("already exited")?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(killed.success(), "kill -TERM {pid}");
    Ok(tokio::time::timeout(Duration::from_secs(30), local.child.wait()).await??)
}

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
