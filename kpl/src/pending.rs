//! A user record inside the pipeline, from acceptance until its put resolves.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::result::{Attempt, MAX_ATTEMPTS_KEPT, PutResult};
use crate::{PutError, UserRecord};

/// The room a record takes in the producer's bounded buffers; given back when it is dropped,
/// which happens right after its put resolves.
pub(crate) struct Room {
    pub(crate) records: Option<OwnedSemaphorePermit>,
    pub(crate) bytes: Option<OwnedSemaphorePermit>,
    pub(crate) outstanding: Arc<AtomicUsize>,
    /// Told once the room is given back, so that records waiting in line are let in.
    pub(crate) released: Option<Arc<tokio::sync::Notify>>,
}

impl Drop for Room {
    fn drop(&mut self) {
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        // The permits go back first: whoever is told must find the room free.
        drop(self.records.take());
        drop(self.bytes.take());
        if let Some(released) = &self.released {
            released.notify_one();
        }
    }
}

/// One attempt of a call, shared by every user record of the entry it carried: an aggregate's
/// records hold one pointer each, not one copy each.
pub(crate) struct Tried {
    pub(crate) started: Instant,
    pub(crate) duration: Duration,
    /// Code and message of the failure, `None` on success; shared by the whole call.
    pub(crate) error: Option<(Arc<str>, Arc<str>)>,
}

impl Tried {
    pub(crate) fn new(
        started: Instant,
        duration: Duration,
        error: Option<(&Arc<str>, &Arc<str>)>,
    ) -> Arc<Self> {
        Arc::new(Self {
            started,
            duration,
            error: error.map(|(code, message)| (code.clone(), message.clone())),
        })
    }

    fn end(&self) -> Instant {
        self.started + self.duration
    }
}

/// A user record being put.
pub(crate) struct Pending {
    pub(crate) record: UserRecord,
    /// The hash key Kinesis routes by.
    pub(crate) hash_key: u128,
    pub(crate) arrived: Instant,
    /// After this, the put resolves to [`PutError::Expired`].
    pub(crate) deadline: Instant,
    /// The attempts kept, oldest first: the first and the latest (see [`MAX_ATTEMPTS_KEPT`]).
    attempts: Vec<Arc<Tried>>,
    /// The end of the latest attempt dropped from between the first and the others, so that
    /// the delay before the next kept one is still measured from its true predecessor.
    dropped_end: Option<Instant>,
    /// The flush generation it arrived in (see the pipeline's flush tracking).
    pub(crate) generation: u64,
    pub(crate) reply: oneshot::Sender<Result<PutResult, PutError>>,
    pub(crate) _room: Room,
}

impl Pending {
    pub(crate) fn new(
        record: UserRecord,
        hash_key: u128,
        arrived: Instant,
        deadline: Instant,
        reply: oneshot::Sender<Result<PutResult, PutError>>,
        room: Room,
    ) -> Self {
        Self {
            record,
            hash_key,
            arrived,
            deadline,
            attempts: Vec::new(),
            dropped_end: None,
            generation: 0,
            reply,
            _room: room,
        }
    }

    /// The record, to hand back in its put's error: moved out (an empty record is left, which
    /// allocates nothing), never copied.
    pub(crate) fn take_record(&mut self) -> Box<UserRecord> {
        let empty = UserRecord::new(String::new(), bytes::Bytes::new());
        Box::new(std::mem::replace(&mut self.record, empty))
    }

    /// Whether no attempt was made yet.
    pub(crate) fn untried(&self) -> bool {
        self.attempts.is_empty()
    }

    /// Records one attempt. Past [`MAX_ATTEMPTS_KEPT`] the oldest but the first is dropped.
    pub(crate) fn record_attempt(&mut self, tried: &Arc<Tried>) {
        if self.attempts.len() >= MAX_ATTEMPTS_KEPT {
            let dropped = self.attempts.remove(1);
            self.dropped_end = Some(dropped.end());
        }
        self.attempts.push(tried.clone());
    }

    /// The attempts made, oldest first, as the user sees them.
    pub(crate) fn take_attempts(&mut self) -> Vec<Attempt> {
        let mut previous_end = self.arrived;
        let attempts = std::mem::take(&mut self.attempts);
        attempts
            .iter()
            .enumerate()
            .map(|(index, tried)| {
                if index == 1
                    && let Some(end) = self.dropped_end
                {
                    previous_end = end;
                }
                let attempt = Attempt {
                    delay: tried.started.saturating_duration_since(previous_end),
                    duration: tried.duration,
                    error_code: tried.error.as_ref().map(|(code, _)| code.clone()),
                    error_message: tried.error.as_ref().map(|(_, message)| message.clone()),
                    success: tried.error.is_none(),
                };
                previous_end = tried.end();
                attempt
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Semaphore;

    fn pending(arrived: Instant) -> Pending {
        let permits = Arc::new(Semaphore::new(2));
        let room = Room {
            records: Some(permits.clone().try_acquire_owned().unwrap()),
            bytes: Some(permits.try_acquire_owned().unwrap()),
            outstanding: Arc::new(AtomicUsize::new(1)),
            released: None,
        };
        let (reply, _) = oneshot::channel();
        Pending::new(UserRecord::new("k", "v"), 0, arrived, arrived, reply, room)
    }

    #[test]
    fn a_record_keeps_its_first_and_latest_attempts_with_true_delays() {
        let start = Instant::now();
        let mut record = pending(start);
        let code: Arc<str> = Arc::from("ProvisionedThroughputExceededException");
        let message: Arc<str> = Arc::from("Rate exceeded");
        // Attempt n starts at 10n ms and takes 1 ms.
        let at = |n: u64| start + Duration::from_millis(10 * n);
        for n in 1..=100 {
            let error = (n < 100).then_some((&code, &message));
            record.record_attempt(&Tried::new(at(n), Duration::from_millis(1), error));
        }
        let attempts = record.take_attempts();
        assert_eq!(attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(
            attempts[0].delay,
            Duration::from_millis(10),
            "first: since the put"
        );
        for attempt in &attempts[1..] {
            // Every kept attempt's delay is from the end of the one made just before it, kept
            // or not: 10 ms apart, 1 ms long.
            assert_eq!(attempt.delay, Duration::from_millis(9));
        }
        assert!(attempts.last().unwrap().success);
        assert!(attempts[..MAX_ATTEMPTS_KEPT - 1].iter().all(|a| !a.success
            && a.error_code.as_deref() == Some("ProvisionedThroughputExceededException")));
        // One message, shared: the record holds pointers, not copies.
        assert!(Arc::ptr_eq(
            attempts[0].error_message.as_ref().unwrap(),
            &message
        ));
    }
}
