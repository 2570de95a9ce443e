//! Running the `kinesis-local` binary and pointing other binaries at it.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{BoxError, command};

/// A running `kinesis-local` and the endpoints it printed.
pub(crate) struct Local {
    pub(crate) child: Child,
    pub(crate) kinesis: String,
    pub(crate) dynamodb: String,
}

/// Starts `kinesis-local` with `args` (on any free ports) and reads its endpoints from standard
/// output, up to `ready`.
pub(crate) async fn start(args: &[&str]) -> Result<Local, BoxError> {
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

pub(crate) fn local_command(args: &[&str]) -> Command {
    let mut command = command(env!("CARGO_BIN_EXE_kinesis-local"), None);
    command
        .args(["--kinesis-port", "0", "--dynamodb-port", "0"])
        .args(args);
    command
}

/// A command for another binary pointed at `local` through the environment variables it
/// printed (as the module docs of `kinesis-local` show).
pub(crate) fn pointed_at(binary: &str, local: &Local) -> Command {
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
pub(crate) async fn terminate(mut local: Local) -> Result<std::process::ExitStatus, BoxError> {
    let pid = local.child.id().ok_or("already exited")?;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(killed.success(), "kill -TERM {pid}");
    Ok(tokio::time::timeout(Duration::from_secs(30), local.child.wait()).await??)
}
