//! Flush tracking: one-shot flushes, each answered once every record put before it has
//! resolved.
//!
//! Records are counted per flush *generation*: a flush closes the current generation and waits
//! until no generation up to its own has an unresolved record left. What is put after a flush
//! belongs to the next generation and does not hold it back.

use std::collections::BTreeMap;

use tokio::sync::oneshot;

/// The flushes waiting, and the unresolved records they wait for.
#[derive(Default)]
pub(super) struct Flushes {
    /// The generation records put now belong to.
    generation: u64,
    /// Unresolved records per generation (generations with none are absent).
    unresolved: BTreeMap<u64, usize>,
    /// Each waiting flush, with the last generation it waits for.
    waiters: Vec<(u64, oneshot::Sender<()>)>,
}

impl Flushes {
    /// Counts a record just put; returns its generation, to hand back to [`Flushes::resolved`].
    pub(super) fn accepted(&mut self) -> u64 {
        *self.unresolved.entry(self.generation).or_default() += 1;
        self.generation
    }

    /// A record of `generation` has resolved.
    pub(super) fn resolved(&mut self, generation: u64) {
        if let Some(count) = self.unresolved.get_mut(&generation) {
            *count -= 1;
            if *count == 0 {
                self.unresolved.remove(&generation);
            }
        }
    }

    /// A flush: `done` is answered once every record put so far has resolved (by a later
    /// [`Flushes::settle`]).
    pub(super) fn wait(&mut self, done: oneshot::Sender<()>) {
        self.waiters.push((self.generation, done));
        self.generation += 1;
    }

    /// Answers the flushes whose records have all resolved.
    pub(super) fn settle(&mut self) {
        let oldest_unresolved = self.unresolved.keys().next().copied();
        let mut index = 0;
        while index < self.waiters.len() {
            let generation = self.waiters[index].0;
            if oldest_unresolved.is_none_or(|oldest| oldest > generation) {
                let (_, waiter) = self.waiters.swap_remove(index);
                let _ = waiter.send(());
            } else {
                index += 1;
            }
        }
    }

    /// Answers every flush still waiting (the pipeline is ending).
    pub(super) fn release_all(&mut self) {
        for (_, waiter) in self.waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot::error::TryRecvError;

    fn flush(flushes: &mut Flushes) -> oneshot::Receiver<()> {
        let (done, answered) = oneshot::channel();
        flushes.wait(done);
        answered
    }

    #[test]
    fn a_flush_with_nothing_unresolved_is_answered_at_once() {
        let mut flushes = Flushes::default();
        let mut answered = flush(&mut flushes);
        flushes.settle();
        assert_eq!(answered.try_recv(), Ok(()));
    }

    #[test]
    fn a_flush_waits_for_every_record_put_before_it() {
        let mut flushes = Flushes::default();
        let first = flushes.accepted();
        let second = flushes.accepted();
        let mut answered = flush(&mut flushes);
        flushes.resolved(second);
        flushes.settle();
        assert_eq!(answered.try_recv(), Err(TryRecvError::Empty));
        flushes.resolved(first);
        flushes.settle();
        assert_eq!(answered.try_recv(), Ok(()));
    }

    #[test]
    fn records_put_after_a_flush_do_not_hold_it_back() {
        let mut flushes = Flushes::default();
        let before = flushes.accepted();
        let mut first = flush(&mut flushes);
        let after = flushes.accepted();
        let mut second = flush(&mut flushes);
        flushes.resolved(before);
        flushes.settle();
        assert_eq!(first.try_recv(), Ok(()));
        assert_eq!(second.try_recv(), Err(TryRecvError::Empty));
        flushes.resolved(after);
        flushes.settle();
        assert_eq!(second.try_recv(), Ok(()));
    }

    #[test]
    fn a_later_flush_waits_for_records_of_earlier_generations() {
        let mut flushes = Flushes::default();
        let early = flushes.accepted();
        let mut first = flush(&mut flushes);
        let mut second = flush(&mut flushes);
        flushes.settle();
        assert_eq!(first.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(second.try_recv(), Err(TryRecvError::Empty));
        flushes.resolved(early);
        flushes.settle();
        assert_eq!(first.try_recv(), Ok(()));
        assert_eq!(second.try_recv(), Ok(()));
    }

    #[test]
    fn ending_answers_every_waiting_flush() {
        let mut flushes = Flushes::default();
        flushes.accepted();
        let mut answered = flush(&mut flushes);
        flushes.release_all();
        assert_eq!(answered.try_recv(), Ok(()));
    }
}
