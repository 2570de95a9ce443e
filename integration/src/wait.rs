//! Polling a resource until it reaches a state, with a deadline.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use crate::BedError;

/// How often a resource's state is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Calls `reached` every [`POLL_INTERVAL`] until it returns `true`, or fails with
/// [`BedError::Timeout`] naming `what` and `state` after `timeout`.
pub(crate) async fn poll_until<F, Fut>(
    what: &str,
    state: &'static str,
    timeout: Duration,
    mut reached: F,
) -> Result<(), BedError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, BedError>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if reached().await? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BedError::Timeout {
                what: what.to_owned(),
                state,
                waited: timeout,
            });
        }
        sleep(POLL_INTERVAL).await;
    }
}
