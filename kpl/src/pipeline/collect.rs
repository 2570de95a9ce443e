//! The collector stage: builds the next PutRecords call from the shard queues, at most
//! `max_count` entries (500) and `max_bytes` (5 MiB), under each shard's token buckets, visiting
//! the shards in rotation so that none is always served first.

use std::time::Instant;

use super::shards::{ShardQueues, ShardState};
use crate::aggregator::Entry;
use crate::clock::later;

/// The bounds of one call, and whether strict order holds (one entry per shard per call).
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) max_count: usize,
    pub(super) max_bytes: usize,
    pub(super) strict: bool,
}

/// Picks the entries of the next PutRecords call, or none if nothing should go yet.
///
/// A call goes when a full call's worth is queued, when something queued is due, while
/// shutting down, or when a retry's backoff has ended. It is then filled with whatever the rate
/// limits allow, up to the collection limits.
pub(super) fn collect(
    shards: &mut ShardQueues,
    limits: &Limits,
    closing: bool,
    held_back: impl Fn(&str, &ShardState) -> bool,
    now: Instant,
) -> Vec<Entry> {
    let Limits {
        max_count,
        max_bytes,
        strict,
    } = *limits;
    let (queued_entries, queued_bytes) = shards.queued();
    let full_call_queued = queued_entries >= max_count || queued_bytes >= max_bytes;
    let something_due = full_call_queued
        || closing
        || shards.iter().any(|(id, s)| {
            !held_back(id, s)
                && (s
                    .queue
                    .front()
                    .is_some_and(|e| e.due <= now && e.not_before <= now)
                    || s.retries.front().is_some_and(|e| e.not_before <= now))
        });
    if !something_due {
        return Vec::new();
    }
    let held: Vec<bool> = shards
        .rotation()
        .map(|id| shards.get(id).is_none_or(|state| held_back(id, state)))
        .collect();

    let mut batch = Vec::new();
    let mut bytes = 0usize;
    let (mut taken_entries, mut taken_bytes) = (0, 0);
    for is_held in held {
        if batch.len() >= max_count {
            break;
        }
        let Some(shard) = shards.rotate() else {
            break;
        };
        let Some(state) = shards.get_mut(&shard) else {
            continue;
        };
        if is_held {
            continue;
        }
        if state.blocked_until.is_some_and(|until| until > now) {
            continue;
        }
        state.blocked_until = None;
        loop {
            if batch.len() >= max_count {
                break;
            }
            // Ready retries first, then queued entries in order.
            let from_retries = state.retries.front().is_some_and(|e| e.not_before <= now);
            let candidate = if from_retries {
                state.retries.front()
            } else {
                state.queue.front().filter(|e| e.not_before <= now)
            };
            let Some(candidate) = candidate else { break };
            let size = candidate.size();
            if bytes + size > max_bytes {
                break;
            }
            if let Err(wait) = state.limiter.try_take(size, now) {
                state.blocked_until = Some(later(now, wait));
                break;
            }
            let entry = if from_retries {
                state.retries.pop_front()
            } else {
                let entry = state.queue.pop_front();
                if let Some(entry) = &entry {
                    taken_entries += 1;
                    taken_bytes += entry.size();
                }
                entry
            };
            let Some(entry) = entry else { break };
            bytes += size;
            state.in_flight += 1;
            batch.push(entry);
            if strict {
                break;
            }
        }
    }
    shards.taken(taken_entries, taken_bytes);
    batch
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::shards::tests::entry;
    use super::*;

    const LIMITS: Limits = Limits {
        max_count: 500,
        max_bytes: 5 * 1024 * 1024,
        strict: false,
    };

    fn queues() -> ShardQueues {
        ShardQueues::new(51_200, 4_294_967_295, 150)
    }

    fn never_held(_: &str, _: &ShardState) -> bool {
        false
    }

    fn shards_of(batch: &[Entry]) -> Vec<&str> {
        batch.iter().map(|e| &*e.shard).collect()
    }

    #[test]
    fn nothing_goes_before_it_is_due_unless_closing() {
        let now = Instant::now();
        let mut shards = queues();
        let mut waiting = entry("a", 10, now);
        waiting.due = now + Duration::from_secs(1);
        shards.enqueue(waiting);
        assert!(collect(&mut shards, &LIMITS, false, never_held, now).is_empty());
        let batch = collect(&mut shards, &LIMITS, true, never_held, now);
        assert_eq!(shards_of(&batch), ["a"]);
        assert_eq!(shards.queued(), (0, 0));
        assert_eq!(shards.get("a").unwrap().in_flight, 1);
    }

    #[test]
    fn a_full_call_goes_at_once_bounded_by_count_and_bytes() {
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let mut shards = queues();
        for _ in 0..5 {
            let mut waiting = entry("a", 100, now);
            waiting.due = later;
            shards.enqueue(waiting);
        }
        let by_count = Limits {
            max_count: 3,
            ..LIMITS
        };
        assert_eq!(
            collect(&mut shards, &by_count, false, never_held, now).len(),
            3
        );
        assert_eq!(shards.queued(), (2, 200));
        let by_bytes = Limits {
            max_bytes: 150,
            ..LIMITS
        };
        assert_eq!(
            collect(&mut shards, &by_bytes, false, never_held, now).len(),
            1
        );
        assert_eq!(shards.queued(), (1, 100));
    }

    #[test]
    fn ready_retries_go_before_the_queue_and_backoffs_are_waited_out() {
        let now = Instant::now();
        let mut shards = queues();
        shards.enqueue(entry("a", 10, now));
        shards.add_retry(entry("a", 20, now));
        shards.add_retry(entry("a", 30, now + Duration::from_secs(1)));
        let batch = collect(&mut shards, &LIMITS, false, never_held, now);
        let sizes: Vec<usize> = batch.iter().map(Entry::size).collect();
        assert_eq!(sizes, [20, 10]);
        let batch = collect(
            &mut shards,
            &LIMITS,
            false,
            never_held,
            now + Duration::from_secs(1),
        );
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].size(), 30);
    }

    #[test]
    fn strict_order_takes_one_entry_per_shard_and_skips_held_shards() {
        let now = Instant::now();
        let mut shards = queues();
        for shard in ["a", "b", "a", "b", "c"] {
            shards.enqueue(entry(shard, 10, now));
        }
        let strict = Limits {
            strict: true,
            ..LIMITS
        };
        let held_c = |id: &str, _: &ShardState| id == "c";
        let batch = collect(&mut shards, &strict, false, held_c, now);
        assert_eq!(shards_of(&batch), ["a", "b"]);
        assert_eq!(shards.queued(), (3, 30));
    }

    #[test]
    fn shards_take_turns_being_served_first() {
        let now = Instant::now();
        let mut shards = queues();
        for shard in ["a", "b", "a", "b"] {
            shards.enqueue(entry(shard, 10, now));
        }
        let one = Limits {
            max_count: 1,
            ..LIMITS
        };
        let first = collect(&mut shards, &one, false, never_held, now);
        let second = collect(&mut shards, &one, false, never_held, now);
        assert_eq!([shards_of(&first), shards_of(&second)], [["a"], ["b"]]);
    }

    #[test]
    fn a_shard_out_of_tokens_waits_until_its_bucket_refills() {
        let now = Instant::now();
        let mut shards = queues();
        // 1 MiB of bytes per second at most: the second entry must wait.
        for _ in 0..2 {
            shards.enqueue(entry("a", 1024 * 1024, now));
        }
        let batch = collect(&mut shards, &LIMITS, false, never_held, now);
        assert_eq!(batch.len(), 1);
        let until = shards.get("a").unwrap().blocked_until;
        assert!(until.is_some_and(|until| until > now));
        assert!(collect(&mut shards, &LIMITS, false, never_held, now).is_empty());
    }
}
