//! Starting kinesis-mock and DynamoDB Local on free loopback ports and waiting until they answer.
//!
//! A start is successful when (1) the child reports in its log, through the loopback preload or
//! shim, that it bound `127.0.0.1` on every port it was given, and (2) it answers a real SDK call
//! (`ListStreams` / `ListTables`). The first proves the answering server is ours and not another
//! process that took the port between our choice and the child's bind; when a port was taken the
//! child fails to bind (and exits), and the start is retried on new ports.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};

use super::child::ChildProcess;
use super::install::Installation;
use crate::tls::TestPki;

/// How long one engine may take from spawn to its first answer. DynamoDB Local needs ~3 s on
/// an idle 2-core machine; the margin is for machines busy compiling.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Starts retried on new ports after a port was taken under us.
const PORT_ATTEMPTS: usize = 3;
/// Pause between two readiness checks.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Lines of a child's log quoted in an error.
const LOG_TAIL_LINES: usize = 30;
/// Every kinesis-mock `*_DURATION` (how long a stream or consumer stays in a transitional
/// state): all zero, so streams are ACTIVE at once, as with the embedded backend.
const KINESIS_MOCK_DURATIONS: [&str; 10] = [
    "CREATE_STREAM_DURATION",
    "DELETE_STREAM_DURATION",
    "REGISTER_STREAM_CONSUMER_DURATION",
    "DEREGISTER_STREAM_CONSUMER_DURATION",
    "START_STREAM_ENCRYPTION_DURATION",
    "STOP_STREAM_ENCRYPTION_DURATION",
    "MERGE_SHARDS_DURATION",
    "SPLIT_SHARD_DURATION",
    "UPDATE_SHARD_COUNT_DURATION",
    "UPDATE_STREAM_MODE_DURATION",
];
/// `.run/certs/`: kinesis-mock's certificate files while it starts.
const CERTS_DIR: &str = "certs";
/// Environment the children must not see (they need no real credentials).
const HIDDEN_ENV: [&str; 4] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
];

/// kinesis-mock (npm `kinesis-local`) under `node`.
pub(super) struct KinesisMock {
    pub(super) process: ChildProcess,
    pub(super) plain_port: u16,
    pub(super) tls_port: u16,
    pub(super) started_in: Duration,
}

/// AWS DynamoDB Local under `java`.
pub(super) struct DynamoDbLocal {
    pub(super) process: ChildProcess,
    pub(super) port: u16,
    pub(super) started_in: Duration,
}

impl KinesisMock {
    /// Starts kinesis-mock with `pki`'s server certificate on its TLS port and waits until it
    /// answers `ListStreams`.
    pub(super) async fn start(install: &Installation, pki: &TestPki) -> Result<Self, String> {
        let started = Instant::now();
        // kinesis-mock reads its certificate once, while starting its TLS server (before it
        // listens), so the file is removed as soon as the start is over, however it ended.
        let cert = CertFile::write(install, pki)?;
        let mut last_conflict = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let [plain_port, tls_port] = free_loopback_ports()?;
            let process = ChildProcess::spawn(
                "kinesis-mock",
                kinesis_mock_command(install, plain_port, tls_port, &cert.path),
                log_file(install, "kinesis-mock"),
            )
            .await?;
            let client = kinesis_probe_client(plain_port);
            let probe = async || {
                client
                    .list_streams()
                    .limit(1)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())
            };
            match wait_until_ready(&process, "loopback-preload", &[plain_port, tls_port], probe)
                .await
            {
                Ok(()) => {
                    return Ok(Self {
                        process,
                        plain_port,
                        tls_port,
                        started_in: started.elapsed(),
                    });
                }
                Err(NotReady::PortTaken(message)) => {
                    tracing::warn!(%message, "kinesis-mock lost its port; retrying on new ports");
                    last_conflict = message;
                }
                Err(NotReady::Failed(message)) => return Err(message),
            }
        }
        Err(last_conflict)
    }
}

impl DynamoDbLocal {
    /// Starts DynamoDB Local and waits until it answers `ListTables`.
    pub(super) async fn start(install: &Installation) -> Result<Self, String> {
        let started = Instant::now();
        let mut last_conflict = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let [port] = free_loopback_ports()?;
            let process = ChildProcess::spawn(
                "DynamoDB Local",
                dynamodb_local_command(install, port),
                log_file(install, "dynamodb-local"),
            )
            .await?;
            let client = dynamodb_probe_client(port);
            let probe = async || {
                client
                    .list_tables()
                    .limit(1)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
            };
            match wait_until_ready(&process, "loopback-bind", &[port], probe).await {
                Ok(()) => {
                    return Ok(Self {
                        process,
                        port,
                        started_in: started.elapsed(),
                    });
                }
                Err(NotReady::PortTaken(message)) => {
                    tracing::warn!(%message, "DynamoDB Local lost its port; retrying on a new port");
                    last_conflict = message;
                }
                Err(NotReady::Failed(message)) => return Err(message),
            }
        }
        Err(last_conflict)
    }
}

/// kinesis-mock's certificate file (`{"server": {"cert", "key"}}`, see
/// [`TestPki::kinesis_mock_cert_json`]) at `.run/certs/{pid}-kinesis-mock-{n}.json`, readable
/// by the owner only, removed when dropped (and by [`prune_run_files`] if the test process died
/// first).
struct CertFile {
    path: PathBuf,
}

impl CertFile {
    fn write(install: &Installation, pki: &TestPki) -> Result<Self, String> {
        use std::io::Write as _;

        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = install.run_dir.join(CERTS_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        let path = dir.join(format!("{}-kinesis-mock-{n}.json", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options
            .open(&path)
            .and_then(|mut file| file.write_all(pki.kinesis_mock_cert_json().as_bytes()));
        // Constructed before checking, so a half-written file is removed too.
        let file = Self { path };
        written.map_err(|e| format!("could not write {}: {e}", file.path.display()))?;
        Ok(file)
    }
}

impl Drop for CertFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `node -r loopback-preload.cjs main.js` with kinesis-mock's configuration in the environment.
fn kinesis_mock_command(
    install: &Installation,
    plain_port: u16,
    tls_port: u16,
    cert: &std::path::Path,
) -> Command {
    let mut command = Command::new(&install.node);
    command
        .arg("-r")
        .arg(&install.node_preload)
        .arg(&install.kinesis_main)
        .current_dir(&install.run_dir)
        .env("KINESIS_MOCK_PLAIN_PORT", plain_port.to_string())
        .env("KINESIS_MOCK_TLS_PORT", tls_port.to_string())
        .env("KINESIS_MOCK_CERT_PATH", cert)
        .env("SHARD_LIMIT", "1000")
        .env("ON_DEMAND_STREAM_COUNT_LIMIT", "1000")
        .env("AWS_ACCOUNT_ID", "000000000000")
        .env("SHOULD_PERSIST_DATA", "false")
        .env("LOAD_DATA_IF_EXISTS", "false")
        // INFO logs every request; WARN still logs every failed one.
        .env("LOG_LEVEL", "WARN")
        .env("ROOT_LOG_LEVEL", "ERROR")
        .env_remove("INITIALIZE_STREAMS");
    for variable in KINESIS_MOCK_DURATIONS {
        command.env(variable, "0ms");
    }
    for variable in HIDDEN_ENV {
        command.env_remove(variable);
    }
    command
}

/// `java … -jar DynamoDBLocal.jar -inMemory -sharedDb -port P` under the loopback bind shim.
fn dynamodb_local_command(install: &Installation, port: u16) -> Command {
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(existing) if !existing.is_empty() => {
            format!("{}:{existing}", install.bind_shim.display())
        }
        _ => install.bind_shim.display().to_string(),
    };
    let mut command = Command::new(&install.java);
    command
        // C1 only: ~1.3 s faster start-up, and ample speed for tests.
        .arg("-XX:TieredStopAtLevel=1")
        .arg("-XX:+UseSerialGC")
        .arg("-Xmx512m")
        .arg(format!(
            "-Djava.library.path={}",
            install.dynamodb_lib.display()
        ))
        .arg("-jar")
        .arg(&install.dynamodb_jar)
        .arg("-inMemory")
        // One database for every access key and region, like one AWS account.
        .arg("-sharedDb")
        .arg("-disableTelemetry")
        .arg("-port")
        .arg(port.to_string())
        .current_dir(&install.run_dir)
        .env("LD_PRELOAD", preload);
    for variable in HIDDEN_ENV {
        command.env_remove(variable);
    }
    command
}

/// Why a child did not become ready.
enum NotReady {
    /// Another process took one of its ports: worth another try on new ports.
    PortTaken(String),
    /// Anything else.
    Failed(String),
}

/// Polls until the child has bound all `ports` on loopback (as reported by the line
/// `"{marker}: bound 127.0.0.1:{port}"` in its log) and `probe` succeeds.
async fn wait_until_ready(
    process: &ChildProcess,
    marker: &str,
    ports: &[u16],
    probe: impl AsyncFn() -> Result<(), String>,
) -> Result<(), NotReady> {
    let name = process.name();
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last_probe_error = None;
    loop {
        let exited = process.exit_status();
        let log = process.log();
        if log.contains(&format!("{marker}: failed")) {
            return Err(NotReady::PortTaken(describe(
                process,
                &format!("{name} could not bind its loopback port {ports:?}"),
            )));
        }
        if let Some(status) = exited {
            return Err(NotReady::Failed(describe(
                process,
                &format!("{name} exited ({status}) before it was ready"),
            )));
        }
        let bound = ports
            .iter()
            .all(|port| log.contains(&format!("{marker}: bound 127.0.0.1:{port}\n")));
        if bound {
            match probe().await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::trace!(name, %error, "not ready yet");
                    last_probe_error = Some(error);
                }
            }
        }
        if Instant::now() >= deadline {
            let state = match (&last_probe_error, bound) {
                (Some(error), _) => format!("its last answer was: {error}"),
                (None, true) => "it never answered".to_owned(),
                (None, false) => format!("it never reported listening on 127.0.0.1:{ports:?}"),
            };
            return Err(NotReady::Failed(describe(
                process,
                &format!("{name} was not ready after {START_TIMEOUT:?}; {state}"),
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// `what`, followed by the child's log file and the tail of its log.
fn describe(process: &ChildProcess, what: &str) -> String {
    format!(
        "{what}. Last lines of {}:\n{}",
        process.log_path().display(),
        process.log_tail(LOG_TAIL_LINES)
    )
}

/// `N` distinct ports that were free on 127.0.0.1 a moment ago (bound to port 0 together, so
/// the kernel hands out distinct ones, then released for the child to bind).
fn free_loopback_ports<const N: usize>() -> Result<[u16; N], String> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("could not find a free port on 127.0.0.1: {e}"))?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(|e| format!("could not read a bound port: {e}"))?
            .port();
    }
    Ok(ports)
}

/// `.run/logs/{pid}-{engine}-{n}.log`: one file per child; the pid lets a later process prune
/// the logs of processes that are gone (see [`prune_run_files`]).
fn log_file(install: &Installation, engine: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    install
        .run_dir
        .join("logs")
        .join(format!("{}-{engine}-{n}.log", std::process::id()))
}

/// Creates `.run/logs/` and `.run/certs/` and removes the files there of test processes that no
/// longer run (logs of a failed run stay until the next run starts, for reading).
pub(super) fn prune_run_files(install: &Installation) -> Result<(), String> {
    for dir in ["logs", CERTS_DIR] {
        prune_dir(&install.run_dir.join(dir))?;
    }
    Ok(())
}

/// Creates `dir` and removes its `{pid}-…` files whose process no longer runs.
fn prune_dir(dir: &std::path::Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for path in entries.filter_map(Result::ok).map(|entry| entry.path()) {
        let owner = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = owner
            && pid != std::process::id()
            && !PathBuf::from(format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

fn kinesis_probe_client(port: u16) -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(probe_credentials())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
        .timeout_config(probe_timeouts())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

fn dynamodb_probe_client(port: u16) -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(probe_credentials())
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .timeout_config(probe_timeouts())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

/// Dummy credentials: both emulators want a signed request and accept any key.
fn probe_credentials() -> Credentials {
    Credentials::new("test", "test", None, None, "kinesis-integration-probe")
}

fn probe_timeouts() -> aws_sdk_kinesis::config::timeout::TimeoutConfig {
    aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_timeout(Duration::from_secs(5))
        .build()
}
