//! In-flight calls: the PutRecords calls running (a `JoinSet` of their tasks), the entries each
//! carries, kept here so that every record is settled whatever becomes of its task, and the
//! halves of calls refused as malformed, waiting to go as they are.
//!
//! Calls take their room from a connection budget (a semaphore of `max_connections` permits)
//! shared by every stream's pipeline of one producer: a call holds one permit from start to end.
//! A pipeline that has something to send but finds the budget spent is *starved* and waits for
//! a permit ([`Calls::wait_for_budget`]); the permit it then holds is spent on its next call or
//! given back ([`Calls::release_spare`]).
//!
//! What an answer means for its records is the pipeline's business; this only hands each
//! finished call back with its entries.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

/// The calls in flight, as many as the shared connection budget allows.
pub(super) struct Calls {
    /// The connection budget, shared with the producer's other pipelines.
    budget: Arc<Semaphore>,
    /// A permit taken for the next call.
    spare: Option<OwnedSemaphorePermit>,
    /// Asked for room and found the budget spent.
    starved: bool,
    tasks: JoinSet<Completed>,
    /// The entries of each call's task.
    carrying: HashMap<Id, Vec<Entry>>,
    /// Calls to send as they are: the halves of calls refused as malformed, to find the entry
    /// at fault without failing its neighbours.
    isolating: VecDeque<Vec<Entry>>,
}

impl Calls {
    /// Calls in flight while `budget` has permits (one per call).
    pub(super) fn new(budget: Arc<Semaphore>) -> Self {
        Self {
            budget,
            spare: None,
            starved: false,
            tasks: JoinSet::new(),
            carrying: HashMap::new(),
            isolating: VecDeque::new(),
        }
    }

    /// Whether another call may start: takes a permit from the budget for it if there is none
    /// yet; if the budget is spent, the calls are starved until [`Calls::wait_for_budget`].
    pub(super) fn has_room(&mut self) -> bool {
        if self.spare.is_none() {
            self.spare = self.budget.clone().try_acquire_owned().ok();
        }
        self.starved = self.spare.is_none();
        !self.starved
    }

    /// Whether the last ask for room found the budget spent (and no permit came since).
    pub(super) fn is_starved(&self) -> bool {
        self.starved
    }

    /// A handle on the budget, to wait for a permit with ([`Calls::wait_for_budget`]) while
    /// the calls are borrowed elsewhere.
    pub(super) fn budget(&self) -> Arc<Semaphore> {
        self.budget.clone()
    }

    /// Waits for a permit of `budget` (this one's, from [`Calls::budget`]). Cancel safe.
    pub(super) async fn wait_for_budget(budget: Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
        budget.acquire_owned().await.ok()
    }

    /// Keeps a permit waited for, for the next call; no longer starved.
    pub(super) fn give(&mut self, permit: Option<OwnedSemaphorePermit>) {
        if self.spare.is_none() {
            self.spare = permit;
        }
        self.starved = false;
    }

    /// Gives back the permit taken for a call that did not start, for other pipelines.
    pub(super) fn release_spare(&mut self) {
        self.spare = None;
    }

    /// Whether no call is in flight or waiting to go as it is.
    pub(super) fn is_idle(&self) -> bool {
        self.carrying.is_empty() && self.isolating.is_empty()
    }

    /// Starts `call`, which carries `entries`, on the permit [`Calls::has_room`] took (the call
    /// holds it until its task ends, whatever the end).
    pub(super) fn start(
        &mut self,
        entries: Vec<Entry>,
        call: impl Future<Output = Completed> + Send + 'static,
    ) {
        let permit = self.spare.take();
        debug_assert!(permit.is_some(), "a call started without room");
        let task = self.tasks.spawn(async move {
            let _permit = permit;
            call.await
        });
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
        if self.isolating.is_empty() || !self.has_room() {
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

    fn budget(permits: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(permits))
    }

    #[tokio::test]
    async fn calls_are_bounded_and_each_comes_back_once_finished() {
        let mut calls = Calls::new(budget(2));
        assert!(calls.is_idle() && calls.has_room());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        calls.start(Vec::new(), async {
            let _ = released.await;
            answer()
        });
        assert!(calls.has_room());
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
        let shared = budget(1);
        let mut calls = Calls::new(shared.clone());
        assert!(calls.has_room());
        calls.start(Vec::new(), async { panic!("an interceptor panicked") });
        assert!(matches!(calls.join_next().await, Some(Finished::Lost(_, e)) if e.is_panic()));
        assert!(calls.is_idle());
        assert_eq!(shared.available_permits(), 1, "the permit came back");
    }

    /// Two streams' pipelines of one producer share the budget: a call of one holds the room
    /// the other waits for, and a permit not spent is given back.
    #[tokio::test]
    async fn pipelines_share_one_connection_budget() {
        let shared = budget(1);
        let mut first = Calls::new(shared.clone());
        let mut second = Calls::new(shared.clone());
        assert!(first.has_room());
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        first.start(Vec::new(), async {
            let _ = released.await;
            answer()
        });
        assert!(!second.has_room() && second.is_starved());
        let waiting = tokio::spawn(async move {
            let permit = Calls::wait_for_budget(second.budget()).await;
            second.give(permit);
            second
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no room while the first call runs");
        let _ = release.send(());
        assert!(first.join_next().await.is_some());
        let mut second = waiting.await.expect("the waiting task");
        assert!(!second.is_starved() && second.has_room());
        assert!(!first.has_room(), "the second holds the one permit");
        second.release_spare();
        assert!(first.has_room());
    }

    #[test]
    fn isolated_calls_go_in_order_while_there_is_room() {
        let mut calls = Calls::new(budget(0));
        calls.isolate(Vec::new());
        assert!(!calls.is_idle());
        assert!(calls.next_isolated().is_none());
        let mut calls = Calls::new(budget(1));
        calls.isolate(Vec::new());
        calls.isolate(Vec::new());
        assert!(calls.next_isolated().is_some());
        assert!(calls.next_isolated().is_some());
        assert!(calls.next_isolated().is_none());
        assert!(calls.is_idle());
    }
}
