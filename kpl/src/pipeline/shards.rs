//! Shard queues: per predicted shard, its open aggregate, its finished Kinesis records waiting
//! to go, its retries waiting out a backoff, its token buckets and its calls in flight; with the
//! order shards are visited in and the count of what is queued.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::aggregator::{Entry, ShardAggregator};
use crate::limiter::ShardLimiter;

/// One shard's queues and limits.
pub(super) struct ShardState {
    pub(super) aggregator: ShardAggregator,
    /// Finished Kinesis records, oldest first. In strict order mode, retries go back to the
    /// front of this queue.
    pub(super) queue: VecDeque<Entry>,
    /// Entries waiting out a backoff (unordered mode only), by `not_before`.
    pub(super) retries: VecDeque<Entry>,
    pub(super) limiter: ShardLimiter,
    /// Not to be sent to before this (rate limit).
    pub(super) blocked_until: Option<Instant>,
    pub(super) in_flight: usize,
}

impl ShardState {
    pub(super) fn is_empty(&self) -> bool {
        self.aggregator.is_empty() && self.queue.is_empty() && self.retries.is_empty()
    }
}

/// Every shard's state, created on first use.
pub(super) struct ShardQueues {
    states: HashMap<Arc<str>, ShardState>,
    /// Shard visiting order, rotated so that no shard is always served first.
    rotation: VecDeque<Arc<str>>,
    /// Entries in `queue`s, and their bytes: a full request's worth is sent without waiting.
    queued_entries: usize,
    queued_bytes: usize,
    aggregation_max_size: usize,
    aggregation_max_count: usize,
    /// Percent of each shard's limits to send at.
    rate_limit: u32,
}

impl ShardQueues {
    pub(super) fn new(
        aggregation_max_size: usize,
        aggregation_max_count: usize,
        rate_limit: u32,
    ) -> Self {
        Self {
            states: HashMap::new(),
            rotation: VecDeque::new(),
            queued_entries: 0,
            queued_bytes: 0,
            aggregation_max_size,
            aggregation_max_count,
            rate_limit,
        }
    }

    /// The state of `shard`, created (last in the rotation) if it has none.
    pub(super) fn state(&mut self, shard: &Arc<str>) -> &mut ShardState {
        if !self.states.contains_key(shard) {
            self.rotation.push_back(shard.clone());
            self.states.insert(
                shard.clone(),
                ShardState {
                    aggregator: ShardAggregator::new(
                        self.aggregation_max_size,
                        self.aggregation_max_count,
                    ),
                    queue: VecDeque::new(),
                    retries: VecDeque::new(),
                    limiter: ShardLimiter::new(self.rate_limit, Instant::now()),
                    blocked_until: None,
                    in_flight: 0,
                },
            );
        }
        self.states
            .get_mut(shard)
            .expect("the shard state was just inserted")
    }

    pub(super) fn get(&self, shard: &str) -> Option<&ShardState> {
        self.states.get(shard)
    }

    pub(super) fn get_mut(&mut self, shard: &str) -> Option<&mut ShardState> {
        self.states.get_mut(shard)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &ShardState)> {
        self.states.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&Arc<str>, &mut ShardState)> {
        self.states.iter_mut()
    }

    /// The shards that have a state.
    pub(super) fn ids(&self) -> Vec<Arc<str>> {
        self.states.keys().cloned().collect()
    }

    /// Whether nothing waits in any shard (calls in flight aside).
    pub(super) fn all_empty(&self) -> bool {
        self.states.values().all(ShardState::is_empty)
    }

    /// Queues `entry` last for its shard.
    pub(super) fn enqueue(&mut self, entry: Entry) {
        self.queued_entries += 1;
        self.queued_bytes += entry.size();
        let shard = entry.shard.clone();
        self.state(&shard).queue.push_back(entry);
    }

    /// Queues `entry` first for its shard (a retry in strict order).
    pub(super) fn enqueue_first(&mut self, entry: Entry) {
        self.queued_entries += 1;
        self.queued_bytes += entry.size();
        let shard = entry.shard.clone();
        self.state(&shard).queue.push_front(entry);
    }

    /// Puts `entry` among its shard's retries, sorted by when they may go, so that a long
    /// backoff holds back no shorter one.
    pub(super) fn add_retry(&mut self, entry: Entry) {
        let shard = entry.shard.clone();
        let retries = &mut self.state(&shard).retries;
        let at = retries.partition_point(|e| e.not_before <= entry.not_before);
        retries.insert(at, entry);
    }

    /// How many entries are queued, and their bytes.
    pub(super) fn queued(&self) -> (usize, usize) {
        (self.queued_entries, self.queued_bytes)
    }

    /// `entries` of `bytes` were taken out of the queues directly.
    pub(super) fn taken(&mut self, entries: usize, bytes: usize) {
        self.queued_entries -= entries;
        self.queued_bytes -= bytes;
    }

    /// Counts the queued entries again (after the queues were rebuilt in place).
    pub(super) fn recount(&mut self) {
        self.queued_entries = self.states.values().map(|s| s.queue.len()).sum();
        self.queued_bytes = self
            .states
            .values()
            .flat_map(|s| s.queue.iter())
            .map(Entry::size)
            .sum();
    }

    /// Keeps only the shards `keep` says to, in the rotation too.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Arc<str>, &ShardState) -> bool) {
        self.states.retain(|id, state| keep(id, state));
        let states = &self.states;
        self.rotation.retain(|id| states.contains_key(id));
    }

    /// The shards in visiting order, from the next one to serve.
    pub(super) fn rotation(&self) -> impl Iterator<Item = &Arc<str>> {
        self.rotation.iter()
    }

    /// The next shard to serve, moved to the back of the rotation.
    pub(super) fn rotate(&mut self) -> Option<Arc<str>> {
        let shard = self.rotation.pop_front()?;
        self.rotation.push_back(shard.clone());
        Some(shard)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    /// An entry for `shard` of `size` bytes (partition key included), carrying no records.
    pub(in crate::pipeline) fn entry(shard: &str, size: usize, not_before: Instant) -> Entry {
        Entry {
            shard: Arc::from(shard),
            partition_key: "k".to_owned(),
            explicit_hash_key: None,
            data: Bytes::from(vec![0; size - 1]),
            aggregated: false,
            records: Vec::new(),
            due: not_before,
            not_before,
            retries: 0,
        }
    }

    fn queues() -> ShardQueues {
        ShardQueues::new(51_200, 4_294_967_295, 150)
    }

    #[test]
    fn queued_entries_and_bytes_are_counted() {
        let now = Instant::now();
        let mut shards = queues();
        shards.enqueue(entry("a", 10, now));
        shards.enqueue_first(entry("b", 20, now));
        shards.add_retry(entry("a", 40, now));
        assert_eq!(shards.queued(), (2, 30));
        shards.taken(1, 10);
        assert_eq!(shards.queued(), (1, 20));
        shards.recount();
        assert_eq!(shards.queued(), (2, 30));
        assert!(!shards.all_empty());
    }

    #[test]
    fn strict_retries_go_first_and_others_by_when_they_may_go() {
        let now = Instant::now();
        let mut shards = queues();
        shards.enqueue(entry("a", 10, now));
        shards.enqueue_first(entry("a", 11, now));
        let sizes: Vec<usize> = shards
            .get("a")
            .unwrap()
            .queue
            .iter()
            .map(Entry::size)
            .collect();
        assert_eq!(sizes, [11, 10]);
        for (size, delay) in [(1, 30), (2, 10), (3, 20), (4, 10)] {
            shards.add_retry(entry("a", size + 1, now + Duration::from_millis(delay)));
        }
        let sizes: Vec<usize> = shards
            .get("a")
            .unwrap()
            .retries
            .iter()
            .map(Entry::size)
            .collect();
        assert_eq!(sizes, [3, 5, 4, 2]);
    }

    #[test]
    fn shards_rotate_in_order_of_first_use_and_are_forgotten_whole() {
        let now = Instant::now();
        let mut shards = queues();
        for shard in ["a", "b", "c"] {
            shards.enqueue(entry(shard, 10, now));
        }
        assert_eq!(shards.rotate().as_deref(), Some("a"));
        let order: Vec<&str> = shards.rotation().map(|id| &**id).collect();
        assert_eq!(order, ["b", "c", "a"]);
        shards.retain(|id, _| &**id != "c");
        let order: Vec<&str> = shards.rotation().map(|id| &**id).collect();
        assert_eq!(order, ["b", "a"]);
        assert!(shards.get("c").is_none());
    }
}
