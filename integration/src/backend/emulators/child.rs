//! Child processes that log to a file, are killed when dropped, and never outlive the test
//! process.
//!
//! Every child is forked by one dedicated thread that lives as long as the process, and sets
//! `PR_SET_PDEATHSIG = SIGKILL` before `exec`. The kernel sends that signal when the *thread*
//! that forked the child exits, which is why the fork cannot happen on a test's own thread
//! (cargo's harness runs each test on a short-lived thread) nor on a runtime worker. With the
//! long-lived spawner thread the signal fires exactly when the test process ends, however it
//! ends: normal exit, panic, `SIGKILL`, or a debugger stopping it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError, mpsc};

use tokio::sync::oneshot;

/// A running child process whose stdout and stderr go to one log file.
///
/// Dropping it kills the process (`SIGKILL`: the emulators keep everything in memory, there is
/// nothing to flush) and reaps it.
pub(super) struct ChildProcess {
    name: &'static str,
    pid: u32,
    child: Mutex<Child>,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `command` with its output appended to a new file at `log`.
    pub(super) async fn spawn(
        name: &'static str,
        mut command: Command,
        log: PathBuf,
    ) -> Result<Self, String> {
        let stdout = File::create(&log)
            .map_err(|e| format!("could not create the log file {}: {e}", log.display()))?;
        let stderr = stdout
            .try_clone()
            .map_err(|e| format!("could not share the log file {}: {e}", log.display()))?;
        command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        die_with_test_process(&mut command);
        let program = command.get_program().to_string_lossy().into_owned();
        let child = spawn_on_spawner_thread(command)
            .await
            .map_err(|e| format!("could not start {name} (`{program}`): {e}"))?;
        let pid = child.id();
        tracing::debug!(name, pid, log = %log.display(), "started child process");
        Ok(Self {
            name,
            pid,
            child: Mutex::new(child),
            log,
        })
    }

    /// The name given at spawn, for messages.
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// The process id.
    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// The log file.
    pub(super) fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if the process has exited (it is reaped then), `None` while it runs.
    pub(super) fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.try_wait().ok().flatten()
    }

    /// The whole log so far (lossy UTF-8). Meant for start-up, while the log is small.
    pub(super) fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the log, each cut to a readable width, for error messages.
    pub(super) fn log_tail(&self, lines: usize) -> String {
        const MAX_BYTES: u64 = 64 * 1024;
        const MAX_LINE: usize = 400;
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&self.log) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)));
            let _ = file.read_to_end(&mut bytes);
        }
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        if tail.is_empty() {
            return "    (the log is empty)".to_owned();
        }
        tail.iter()
            .map(|line| match line.char_indices().nth(MAX_LINE) {
                Some((cut, _)) => format!("    {}…", &line[..cut]),
                None => format!("    {line}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Resident memory of the process in KiB, from `/proc` (Linux only).
    pub(super) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Ok(None) = child.try_wait() {
            if let Err(error) = child.kill() {
                tracing::warn!(name = self.name, pid = self.pid, %error, "could not kill child process");
            }
            let _ = child.wait();
            tracing::debug!(name = self.name, pid = self.pid, "stopped child process");
        }
    }
}

/// Makes the kernel kill the child when the thread that forks it exits; see the module docs.
#[cfg(target_os = "linux")]
fn die_with_test_process(command: &mut Command) {
    use std::os::unix::process::CommandExt;

    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before `exec`; it only makes two
    // async-signal-safe system calls and builds errors without allocating.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: then nobody would kill us.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_test_process(_command: &mut Command) {}

/// A request to the spawner thread.
struct SpawnRequest {
    command: Command,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// The spawner thread's queue; the thread is started on first use and runs until the process
/// exits (this sender is never dropped).
static SPAWNER: Mutex<Option<mpsc::Sender<SpawnRequest>>> = Mutex::new(None);

/// Runs `command.spawn()` on the long-lived spawner thread.
async fn spawn_on_spawner_thread(command: Command) -> io::Result<Child> {
    let (reply, answer) = oneshot::channel();
    {
        let mut spawner = SPAWNER.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = match spawner.as_ref() {
            Some(sender) => sender.clone(),
            None => {
                let (sender, requests) = mpsc::channel::<SpawnRequest>();
                std::thread::Builder::new()
                    .name("emulators-spawner".to_owned())
                    .spawn(move || {
                        for SpawnRequest { mut command, reply } in requests {
                            let _ = reply.send(command.spawn());
                        }
                    })?;
                spawner.insert(sender).clone()
            }
        };
        sender
            .send(SpawnRequest { command, reply })
            .map_err(|_| io::Error::other("the emulators' spawner thread has stopped"))?;
    }
    answer
        .await
        .map_err(|_| io::Error::other("the emulators' spawner thread has stopped"))?
}
