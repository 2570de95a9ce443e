//! Bounding a test and waiting for a condition, shared by the worker-level test files
//! (included with `#[path = "support/timing.rs"] mod timing;`).

use std::future::Future;
use std::time::{Duration, Instant};

/// The error type of the test bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// What a test body returns.
pub(crate) type TestResult = Result<(), BoxError>;

/// How often [`wait_for`] checks its condition.
pub(crate) const SAMPLE: Duration = Duration::from_millis(20);

/// Runs a test body with a log subscriber (`RUST_LOG=kinesis_kcl=debug` shows what the
/// workers do), failing it if it runs longer than `limit`.
pub(crate) async fn bounded(limit: Duration, body: impl Future<Output = TestResult>) -> TestResult {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::time::timeout(limit, body)
        .await
        .map_err(|_| format!("test did not finish within {limit:?}"))?
}

/// Checks `condition` every [`SAMPLE`] until it holds, or fails after `limit`.
pub(crate) async fn wait_for(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> TestResult {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}").into());
        }
        tokio::time::sleep(SAMPLE).await;
    }
    Ok(())
}
