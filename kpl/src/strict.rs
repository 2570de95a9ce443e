//! What holds a shard back in [`Ordering::PerShardStrict`](crate::Ordering::PerShardStrict)
//! beyond its own call in flight: an earlier record of one of its keys still unresolved
//! elsewhere. That is a call in flight to a shard no longer open (its keys now belong to the
//! children), or a record waiting for a fresh shard map after landing on the wrong shard. While
//! such a record is unresolved, no shard whose range holds its key may send, so nothing of a
//! key is stored before an earlier record of that key, across retries, splits and merges.

use kinesis_aggregation::HashKeyRange;

/// Hash-key ranges and single hash keys that block the shards overlapping them.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    ranges: Vec<HashKeyRange>,
    /// Sorted.
    keys: Vec<u128>,
}

impl Blocks {
    /// Blocks built from the ranges of closed shards with calls in flight and the hash keys of
    /// records waiting for a fresh map.
    pub(crate) fn new(ranges: Vec<HashKeyRange>, mut keys: Vec<u128>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        Self { ranges, keys }
    }

    /// Whether nothing blocks anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.keys.is_empty()
    }

    /// Whether a shard with hash-key range `range` must wait.
    pub(crate) fn holds_back(&self, range: HashKeyRange) -> bool {
        let (start, end) = (range.start(), range.end());
        if self
            .ranges
            .iter()
            .any(|r| r.start() <= end && start <= r.end())
        {
            return true;
        }
        let first_at_or_after = self.keys.partition_point(|&k| k < start);
        self.keys.get(first_at_or_after).is_some_and(|&k| k <= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u128, end: u128) -> HashKeyRange {
        HashKeyRange::new(start, end).unwrap()
    }

    #[test]
    fn a_closed_parent_in_flight_holds_back_its_children_only() {
        let blocks = Blocks::new(vec![r(0, 99)], Vec::new());
        assert!(blocks.holds_back(r(0, 49)));
        assert!(blocks.holds_back(r(50, 99)));
        assert!(blocks.holds_back(r(99, 200)), "inclusive ends");
        assert!(!blocks.holds_back(r(100, 200)));
    }

    #[test]
    fn a_waiting_record_holds_back_the_shard_holding_its_key() {
        let blocks = Blocks::new(Vec::new(), vec![70, 10, 10]);
        assert!(blocks.holds_back(r(0, 10)));
        assert!(blocks.holds_back(r(60, 80)));
        assert!(!blocks.holds_back(r(11, 69)));
        assert!(!blocks.holds_back(r(71, u128::MAX)));
        assert!(Blocks::default().is_empty());
        assert!(!Blocks::default().holds_back(r(0, u128::MAX)));
    }
}
