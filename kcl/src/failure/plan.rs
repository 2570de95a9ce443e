//! Which records of a failing batch go to the processor next: a pure state machine over
//! record indexes that applies a [`FailurePolicy`] (retries with backoff, bisection, partial
//! failures, giving up by attempts or record age). The worker does the calls, the waits and
//! the hand-over to the destination; this only decides.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use backon::BackoffBuilder;

use super::{FailurePolicy, GiveUpReason};

/// The records still to process, in order, as consecutive parts of the batch.
#[derive(Debug)]
pub(crate) struct Plan {
    parts: VecDeque<Part>,
}

#[derive(Debug, Clone)]
struct Part {
    range: Range<usize>,
    /// Failed calls on this part since it last made progress.
    failures: u32,
    /// The first record of the part is known to be the one failing (a partial failure named
    /// it): giving up gives up that record alone.
    head_failed: bool,
    /// How long to wait before the next call.
    delay: Duration,
}

/// The next call: these records, after this wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Call {
    pub(crate) range: Range<usize>,
    pub(crate) delay: Duration,
}

/// What a failed call leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Call again with the same records (after a partial failure: from the failed one) after
    /// `delay`; `attempts` calls have failed so far.
    Retry { delay: Duration, attempts: u32 },
    /// The part was split in two halves, processed one after the other.
    Split,
    /// The policy gives up on these records: hand them to the destination, then
    /// [`Plan::given_up`].
    GiveUp {
        range: Range<usize>,
        reason: GiveUpReason,
        attempts: u32,
    },
}

impl Plan {
    /// A plan for a batch of `len` records.
    pub(crate) fn new(len: usize) -> Self {
        let mut parts = VecDeque::new();
        if len > 0 {
            parts.push_back(Part {
                range: 0..len,
                failures: 0,
                head_failed: false,
                delay: Duration::ZERO,
            });
        }
        Plan { parts }
    }

    /// The next call, or `None` when every record is processed or given up.
    pub(crate) fn next(&self) -> Option<Call> {
        self.parts.front().map(|p| Call {
            range: p.range.clone(),
            delay: p.delay,
        })
    }

    /// The last call succeeded.
    pub(crate) fn succeeded(&mut self) {
        self.parts.pop_front();
    }

    /// The last call failed. `failed_at`: the index of the record the processor reported as
    /// failed (every record before it in the call is done), if it reported one inside the
    /// call. `oldest_arrival(range)`: the earliest arrival time of those records, if known.
    pub(crate) fn failed(
        &mut self,
        policy: &FailurePolicy,
        failed_at: Option<usize>,
        oldest_arrival: impl Fn(Range<usize>) -> Option<SystemTime>,
        now: SystemTime,
    ) -> Verdict {
        let Some(part) = self.parts.front_mut() else {
            // Nothing was called: nothing to decide.
            return Verdict::Split;
        };
        match failed_at.filter(|i| part.range.contains(i)) {
            Some(at) if at > part.range.start => {
                // Progress: what came before is done, the failed record heads the rest.
                part.range.start = at;
                part.failures = 1;
                part.head_failed = true;
            }
            Some(_) => {
                part.failures += 1;
                part.head_failed = true;
            }
            None => {
                part.failures += 1;
                if policy.bisect_on_error && part.range.len() > 1 {
                    // A split does not count as a retry (as Lambda's): each half starts afresh.
                    let Part { range, .. } = self.parts.pop_front().expect("front exists");
                    let middle = range.start + range.len() / 2;
                    for half in [middle..range.end, range.start..middle] {
                        self.parts.push_front(Part {
                            range: half,
                            failures: 0,
                            head_failed: false,
                            delay: Duration::ZERO,
                        });
                    }
                    return Verdict::Split;
                }
            }
        }
        let part = self.parts.front_mut().expect("front exists");
        let culprit = if part.head_failed {
            part.range.start..part.range.start + 1
        } else {
            part.range.clone()
        };
        let reason = if policy
            .max_attempts
            .is_some_and(|max| part.failures >= max.get())
        {
            Some(GiveUpReason::Attempts)
        } else if policy.max_record_age.is_some_and(|max| {
            oldest_arrival(culprit.clone())
                .and_then(|arrived| now.duration_since(arrived).ok())
                .is_some_and(|age| age > max)
        }) {
            Some(GiveUpReason::RecordAge)
        } else {
            None
        };
        if let Some(reason) = reason {
            return Verdict::GiveUp {
                range: culprit,
                reason,
                attempts: part.failures,
            };
        }
        part.delay = policy.delay_before_retry(part.failures);
        Verdict::Retry {
            delay: part.delay,
            attempts: part.failures,
        }
    }

    /// The records of the last [`Verdict::GiveUp`] were accepted by the destination: the
    /// rest of their part (if any) goes on afresh.
    pub(crate) fn given_up(&mut self) {
        let Some(part) = self.parts.front_mut() else {
            return;
        };
        if part.head_failed && part.range.len() > 1 {
            part.range.start += 1;
            part.failures = 0;
            part.head_failed = false;
            part.delay = Duration::ZERO;
        } else {
            self.parts.pop_front();
        }
    }
}

impl FailurePolicy {
    /// The wait before the call after `failures` failed ones: `min_backoff` doubling up to
    /// `max_backoff`, with jitter (up to the delay again) so a fleet does not retry in step.
    pub(crate) fn delay_before_retry(&self, failures: u32) -> Duration {
        let n = failures.saturating_sub(1) as usize;
        backon::ExponentialBuilder::new()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .without_max_times()
            .with_jitter()
            .build()
            .nth(n)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff.saturating_mul(2))
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn policy(max_attempts: Option<u32>, bisect: bool) -> FailurePolicy {
        FailurePolicy {
            max_attempts: max_attempts.and_then(NonZeroU32::new),
            bisect_on_error: bisect,
            ..FailurePolicy::default()
        }
    }

    fn no_age(_: Range<usize>) -> Option<SystemTime> {
        None
    }

    /// Runs `plan` against a processor that fails every call containing `pill` (reporting it
    /// as the failed record when `report`); returns the calls made and what was given up.
    fn run(
        policy: &FailurePolicy,
        len: usize,
        pill: usize,
        report: bool,
    ) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
        let mut plan = Plan::new(len);
        let (mut calls, mut given_up) = (Vec::new(), Vec::new());
        while let Some(call) = plan.next() {
            assert!(calls.len() < 1000, "runaway plan: {calls:?}");
            calls.push(call.range.clone());
            if !call.range.contains(&pill) {
                plan.succeeded();
                continue;
            }
            let at = report.then_some(pill);
            match plan.failed(policy, at, no_age, SystemTime::now()) {
                Verdict::GiveUp { range, .. } => {
                    given_up.push(range);
                    plan.given_up();
                }
                Verdict::Retry { .. } | Verdict::Split => {}
            }
        }
        (calls, given_up)
    }

    #[test]
    fn a_good_batch_is_one_call() {
        let mut plan = Plan::new(3);
        assert_eq!(
            plan.next(),
            Some(Call {
                range: 0..3,
                delay: Duration::ZERO
            })
        );
        plan.succeeded();
        assert_eq!(plan.next(), None);
        assert_eq!(Plan::new(0).next(), None);
    }

    #[test]
    fn without_limits_the_batch_is_retried_with_growing_waits() {
        let policy = FailurePolicy::default();
        let mut plan = Plan::new(4);
        let mut delays = Vec::new();
        for attempt in 1..=8 {
            match plan.failed(&policy, None, no_age, SystemTime::now()) {
                Verdict::Retry { delay, attempts } => {
                    assert_eq!(attempts, attempt);
                    delays.push(delay);
                }
                other => panic!("unlimited policy gave {other:?}"),
            }
            assert_eq!(plan.next().map(|c| c.range), Some(0..4), "the same records");
        }
        assert!(delays[0] >= Duration::from_secs(1), "{delays:?}");
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(60)),
            "{delays:?}"
        );
        assert!(delays[7] >= Duration::from_secs(30), "{delays:?}");
    }

    #[test]
    fn max_attempts_gives_the_whole_batch_up_without_bisection() {
        let (calls, given_up) = run(&policy(Some(3), false), 10, 4, false);
        assert_eq!(calls, vec![0..10, 0..10, 0..10]);
        assert_eq!(given_up, vec![0..10]);
    }

    #[test]
    fn bisection_isolates_the_pill_and_passes_every_other_record_once() {
        let (calls, given_up) = run(&policy(Some(3), true), 10, 7, false);
        assert_eq!(given_up, vec![7..8]);
        let mut processed = [0; 10];
        for call in &calls {
            if !call.contains(&7) {
                for i in call.clone() {
                    processed[i] += 1;
                }
            }
        }
        for (i, n) in processed.iter().enumerate() {
            assert_eq!(*n, if i == 7 { 0 } else { 1 }, "record {i}: {calls:?}");
        }
        // In order: every call starts where the previous successful one ended.
        let starts: Vec<usize> = calls.iter().map(|c| c.start).collect();
        assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{calls:?}");
        // The single pill was tried three times.
        assert_eq!(calls.iter().filter(|c| **c == (7..8)).count(), 3);
    }

    #[test]
    fn a_partial_failure_resumes_at_the_failed_record_and_gives_up_that_one_alone() {
        let (calls, given_up) = run(&policy(Some(2), false), 10, 6, true);
        assert_eq!(calls, vec![0..10, 6..10, 7..10]);
        assert_eq!(given_up, vec![6..7]);
    }

    #[test]
    fn unlimited_retries_hold_at_the_pill() {
        let policy = FailurePolicy::default();
        let mut plan = Plan::new(10);
        plan.failed(&policy, Some(5), no_age, SystemTime::now());
        for _ in 0..50 {
            assert!(matches!(
                plan.failed(&policy, Some(5), no_age, SystemTime::now()),
                Verdict::Retry { .. }
            ));
            assert_eq!(plan.next().map(|c| c.range), Some(5..10));
        }
    }

    #[test]
    fn records_older_than_the_age_limit_are_given_up_at_their_next_failure() {
        let policy = FailurePolicy {
            max_record_age: Some(Duration::from_secs(60)),
            ..FailurePolicy::default()
        };
        let now = SystemTime::now();
        let young = |_: Range<usize>| Some(now - Duration::from_secs(10));
        let old = |_: Range<usize>| Some(now - Duration::from_secs(61));
        let mut plan = Plan::new(3);
        assert!(matches!(
            plan.failed(&policy, None, young, now),
            Verdict::Retry { .. }
        ));
        assert_eq!(
            plan.failed(&policy, None, old, now),
            Verdict::GiveUp {
                range: 0..3,
                reason: GiveUpReason::RecordAge,
                attempts: 2
            }
        );
        // Unknown arrival times never age out.
        let mut plan = Plan::new(3);
        assert!(matches!(
            plan.failed(&policy, None, no_age, now),
            Verdict::Retry { .. }
        ));
    }

    #[test]
    fn a_failed_record_outside_the_call_counts_as_a_whole_failure() {
        let mut plan = Plan::new(4);
        let verdict = plan.failed(&policy(Some(1), false), Some(9), no_age, SystemTime::now());
        assert_eq!(
            verdict,
            Verdict::GiveUp {
                range: 0..4,
                reason: GiveUpReason::Attempts,
                attempts: 1
            }
        );
    }
}
