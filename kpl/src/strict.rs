//! What holds a shard back in [`Ordering::PerShardStrict`](crate::Ordering::PerShardStrict)
//! beyond its own call in flight: an earlier record of one of its keys still unresolved
//! elsewhere. That is a call in flight to a shard no longer open (its keys now belong to the
//! children), or a record waiting for a fresh shard map after landing on the wrong shard. While
//! such a record is unresolved, no shard whose range holds its key may send, so nothing of a
//! key is stored before an earlier record of that key, across retries, splits and merges.

/// Hash-key ranges and single hash keys that block the shards overlapping them.
#[derive(Debug, Default)]
pub(crate) struct Blocks {
    ranges: Vec<(u128, u128)>,
    /// Sorted.
    keys: Vec<u128>,
}

impl Blocks {
    /// Blocks built from the ranges of closed shards with calls in flight and the hash keys of
    /// records waiting for a fresh map.
    pub(crate) fn new(ranges: Vec<(u128, u128)>, mut keys: Vec<u128>) -> Self {
        keys.sort_unstable();
        keys.dedup();
        Self { ranges, keys }
    }

    /// Whether nothing blocks anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.keys.is_empty()
    }

    /// Whether a shard with hash-key range `range` (inclusive) must wait.
    pub(crate) fn holds_back(&self, (start, end): (u128, u128)) -> bool {
        if self.ranges.iter().any(|&(s, e)| s <= end && start <= e) {
            return true;
        }
        let first_at_or_after = self.keys.partition_point(|&k| k < start);
        self.keys.get(first_at_or_after).is_some_and(|&k| k <= end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_parent_in_flight_holds_back_its_children_only() {
        let blocks = Blocks::new(vec![(0, 99)], Vec::new());
        assert!(blocks.holds_back((0, 49)));
        assert!(blocks.holds_back((50, 99)));
        assert!(blocks.holds_back((99, 200)), "inclusive ends");
        assert!(!blocks.holds_back((100, 200)));
    }

    #[test]
    fn a_waiting_record_holds_back_the_shard_holding_its_key() {
        let blocks = Blocks::new(Vec::new(), vec![70, 10, 10]);
        assert!(blocks.holds_back((0, 10)));
        assert!(blocks.holds_back((60, 80)));
        assert!(!blocks.holds_back((11, 69)));
        assert!(!blocks.holds_back((71, u128::MAX)));
        assert!(Blocks::default().is_empty());
        assert!(!Blocks::default().holds_back((0, u128::MAX)));
    }
}
