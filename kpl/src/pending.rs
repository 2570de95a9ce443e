//! A user record inside the pipeline, from acceptance until its put resolves.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::result::{Attempt, PutResult};
use crate::{Error, UserRecord};

/// The room a record takes in the producer's bounded buffers; given back when it is dropped,
/// which happens right after its put resolves.
pub(crate) struct Room {
    pub(crate) _records: OwnedSemaphorePermit,
    pub(crate) _bytes: OwnedSemaphorePermit,
    pub(crate) outstanding: Arc<AtomicUsize>,
}

impl Drop for Room {
    fn drop(&mut self) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A user record being put.
pub(crate) struct Pending {
    pub(crate) record: UserRecord,
    /// The hash key Kinesis routes by.
    pub(crate) hash_key: u128,
    pub(crate) arrived: Instant,
    /// After this, the put resolves to [`Error::Expired`].
    pub(crate) deadline: Instant,
    /// End of the previous attempt (or the arrival), for [`Attempt::delay`].
    pub(crate) last_attempt_end: Instant,
    pub(crate) attempts: Vec<Attempt>,
    /// The flush generation it arrived in (see the pipeline's flush tracking).
    pub(crate) generation: u64,
    pub(crate) reply: oneshot::Sender<Result<PutResult, Error>>,
    pub(crate) _room: Room,
}

impl Pending {
    /// Records one attempt that started at `started` and took `duration`.
    pub(crate) fn record_attempt(
        &mut self,
        started: Instant,
        duration: Duration,
        error: Option<(&str, &str)>,
    ) {
        self.attempts.push(Attempt {
            delay: started.saturating_duration_since(self.last_attempt_end),
            duration,
            error_code: error.map(|(code, _)| code.to_owned()),
            error_message: error.map(|(_, message)| message.to_owned()),
            success: error.is_none(),
        });
        self.last_attempt_end = started + duration;
    }
}
