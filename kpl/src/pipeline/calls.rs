//! In-flight calls: the PutRecords calls running (a `JoinSet` of their tasks), the entries each
//! carries, kept here so that every record is settled whatever becomes of its task, and the
//! halves of calls refused as malformed, waiting to go as they are.
//!
//! What an answer means for its records is the pipeline's business; this only hands each
//! finished call back with its entries.

use std::collections::{HashMap, VecDeque};
use std::future::Future;

use tokio::task::{Id, JoinError, JoinSet};

use crate::aggregator::Entry;
use crate::sender::Completed;

/// A call that ended, with the entries it carried (in call order).
pub(super) enum Finished {
    /// It answered.
    Answered(Vec<Entry>, Completed),
    /// Its task ended without an answer (a panic).
    Lost(Vec<Entry>, JoinError),
}

/// The calls in flight, at most `max` at a time.
pub(super) struct Calls {
    max: usize,
    tasks: JoinSet<Completed>,
    /// The entries of each call's task.
    carrying: HashMap<Id, Vec<Entry>>,
    /// Calls to send as they are: the halves of calls refused as malformed, to find the entry
    /// at fault without failing its neighbours.
    isolating: VecDeque<Vec<Entry>>,
}

impl Calls {
    /// At most `max` calls in flight at a time.
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            tasks: JoinSet::new(),
            carrying: HashMap::new(),
            isolating: VecDeque::new(),
        }
    }

    /// Whether another call may start.
    pub(super) fn has_room(&self) -> bool {
        self.carrying.len() < self.max
    }

    /// Whether no call is in flight or waiting to go as it is.
    pub(super) fn is_idle(&self) -> bool {
        self.carrying.is_empty() && self.isolating.is_empty()
    }

    /// Starts `call`, which carries `entries`.
    pub(super) fn start(
        &mut self,
        entries: Vec<Entry>,
        call: impl Future<Output = Completed> + Send + 'static,
    ) {
        let task = self.tasks.spawn(call);
        self.carrying.insert(task.id(), entries);
    }

    /// The next call to finish, with its entries (`None` at once if none is in flight).
    /// Cancel safe: a call is only taken out once finished.
    pub(super) async fn join_next(&mut self) -> Option<Finished> {
        let finished = match self.tasks.join_next_with_id().await? {
            Ok((id, completed)) => {
                Finished::Answered(self.carrying.remove(&id).unwrap_or_default(), completed)
            }
            Err(error) => {
                Finished::Lost(self.carrying.remove(&error.id()).unwrap_or_default(), error)
            }
        };
        Some(finished)
    }

    /// Holds `entries` to be sent again as one call, as they are.
    pub(super) fn isolate(&mut self, entries: Vec<Entry>) {
        self.isolating.push_back(entries);
    }

    /// The next call to send as it is, if there is room for it.
    pub(super) fn next_isolated(&mut self) -> Option<Vec<Entry>> {
        if !self.has_room() {
            return None;
        }
        self.isolating.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn answer() -> Completed {
        Completed {
            outcomes: Vec::new(),
            started: Instant::now(),
            duration: Duration::from_millis(5),
        }
    }

    #[tokio::test]
    async fn calls_are_bounded_and_each_comes_back_once_finished() {
        let mut calls = Calls::new(2);
        assert!(calls.is_idle() && calls.has_room());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        calls.start(Vec::new(), async {
            let _ = released.await;
            answer()
        });
        calls.start(Vec::new(), async { answer() });
        assert!(!calls.has_room() && !calls.is_idle());
        assert!(matches!(
            calls.join_next().await,
            Some(Finished::Answered(_, _))
        ));
        assert!(calls.has_room() && !calls.is_idle());
        let _ = release.send(());
        assert!(matches!(
            calls.join_next().await,
            Some(Finished::Answered(_, _))
        ));
        assert!(calls.is_idle());
        assert!(calls.join_next().await.is_none());
    }

    #[tokio::test]
    async fn a_call_whose_task_panics_comes_back_lost() {
        let mut calls = Calls::new(1);
        calls.start(Vec::new(), async { panic!("an interceptor panicked") });
        assert!(matches!(calls.join_next().await, Some(Finished::Lost(_, e)) if e.is_panic()));
        assert!(calls.is_idle());
    }

    #[test]
    fn isolated_calls_go_in_order_while_there_is_room() {
        let mut calls = Calls::new(0);
        calls.isolate(Vec::new());
        assert!(!calls.is_idle());
        assert!(calls.next_isolated().is_none());
        let mut calls = Calls::new(1);
        calls.isolate(Vec::new());
        calls.isolate(Vec::new());
        assert!(calls.next_isolated().is_some());
        assert!(calls.next_isolated().is_some());
        assert!(calls.next_isolated().is_none());
        assert!(calls.is_idle());
    }
}
