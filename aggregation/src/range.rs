//! The hash-key range of a shard.

use crate::deaggregate::{SubRecord, count_outside_range};
use crate::hash_key::{
    HashKeyCache, HashKeyError, hash_key_for_partition_key, parse_explicit_hash_key,
};

/// The hash-key range of a shard: every hash key from `start` to `end`, both inclusive, as
/// Kinesis lists it (`HashKeyRange` of `ListShards`) and the Java KCL stores it in a lease
/// (`startingHashKey` / `endingHashKey`, decimal strings).
///
/// The Java KCL (`HashKeyRangeForLease`) requires `start < end`; this type accepts
/// `start <= end`, since a shard can in principle own a single hash key.
///
/// ```
/// use kinesis_aggregation::HashKeyRange;
///
/// let lower_half = HashKeyRange::new(0, u128::MAX / 2)?;
/// assert!(lower_half.contains(42));
/// assert!(!lower_half.contains(u128::MAX));
/// assert_eq!(HashKeyRange::parse("0", "170141183460469231731687303715884105727")?, lower_half);
/// assert!(HashKeyRange::new(2, 1).is_err());
/// # Ok::<(), kinesis_aggregation::HashKeyRangeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HashKeyRange {
    start: u128,
    end: u128,
}

impl HashKeyRange {
    /// The whole hash-key space, `0..=2^128 - 1`.
    pub const ALL: HashKeyRange = HashKeyRange {
        start: 0,
        end: u128::MAX,
    };

    /// The range from `start` to `end`, both inclusive.
    ///
    /// # Errors
    ///
    /// [`HashKeyRangeError::Inverted`] if `start > end`.
    pub fn new(start: u128, end: u128) -> Result<Self, HashKeyRangeError> {
        if start > end {
            return Err(HashKeyRangeError::Inverted { start, end });
        }
        Ok(HashKeyRange { start, end })
    }

    /// Parses the two decimal strings Kinesis and the lease table use.
    ///
    /// # Errors
    ///
    /// [`HashKeyRangeError::Start`] or [`HashKeyRangeError::End`] if that key is not a decimal
    /// integer in `0..2^128`, [`HashKeyRangeError::Inverted`] if `start > end`.
    pub fn parse(start: &str, end: &str) -> Result<Self, HashKeyRangeError> {
        let start = parse_explicit_hash_key(start).map_err(HashKeyRangeError::Start)?;
        let end = parse_explicit_hash_key(end).map_err(HashKeyRangeError::End)?;
        HashKeyRange::new(start, end)
    }

    /// The starting hash key (inclusive).
    pub fn start(&self) -> u128 {
        self.start
    }

    /// The ending hash key (inclusive).
    pub fn end(&self) -> u128 {
        self.end
    }

    /// Whether `hash_key` lies in the range.
    pub fn contains(&self, hash_key: u128) -> bool {
        (self.start..=self.end).contains(&hash_key)
    }

    /// How many of `records` have an [effective hash key](SubRecord::effective_hash_key)
    /// outside the range: user records an aggregator put in the wrong shard.
    ///
    /// Hashes each distinct partition key of an aggregate once, however many records share it
    /// (sub-records of one aggregate share its key table), so checking a whole aggregate costs
    /// one MD5 per distinct key rather than one per record.
    ///
    /// ```
    /// use kinesis_aggregation::{AggregateBuilder, Deaggregated, HashKeyRange, deaggregate, hash_key_for_partition_key};
    ///
    /// let mut builder = AggregateBuilder::new(51_200, 1_000);
    /// for key in ["a", "b", "a", "a"] {
    ///     builder.try_push(key, None, b"x").unwrap();
    /// }
    /// let Deaggregated::Aggregated(subs) = deaggregate(builder.take_aggregate().unwrap()) else { panic!() };
    /// let a = hash_key_for_partition_key("a");
    /// assert_eq!(HashKeyRange::new(a, a)?.count_outside(&subs), 1); // only "b" is outside
    /// assert_eq!(HashKeyRange::ALL.count_outside(&subs), 0);
    /// # Ok::<(), kinesis_aggregation::HashKeyRangeError>(())
    /// ```
    pub fn count_outside(&self, records: &[SubRecord]) -> usize {
        count_outside_range(records, self.start, self.end, hash_key_for_partition_key)
    }

    /// [`count_outside`](Self::count_outside), taking partition keys' hash keys from `cache`
    /// (and remembering new ones there): a reader of one shard keeps one cache across its
    /// aggregates, and hashes each key once.
    ///
    /// ```
    /// use kinesis_aggregation::{AggregateBuilder, Deaggregated, HashKeyCache, HashKeyRange, deaggregate, hash_key_for_partition_key};
    ///
    /// let mut cache = HashKeyCache::new(1_000);
    /// let a = HashKeyRange::new(hash_key_for_partition_key("a"), hash_key_for_partition_key("a"))?;
    /// for _ in 0..3 {
    ///     let mut builder = AggregateBuilder::new(51_200, 1_000);
    ///     for key in ["a", "b", "a"] {
    ///         builder.try_push(key, None, b"x").unwrap();
    ///     }
    ///     let Deaggregated::Aggregated(subs) = deaggregate(builder.take_aggregate().unwrap()) else { panic!() };
    ///     assert_eq!(a.count_outside_cached(&subs, &mut cache), 1);
    /// }
    /// assert_eq!(cache.len(), 2); // "a" and "b", hashed once each
    /// # Ok::<(), kinesis_aggregation::HashKeyRangeError>(())
    /// ```
    pub fn count_outside_cached(&self, records: &[SubRecord], cache: &mut HashKeyCache) -> usize {
        count_outside_range(records, self.start, self.end, |key| cache.hash_key(key))
    }
}

impl std::fmt::Display for HashKeyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..={}", self.start, self.end)
    }
}

/// A hash-key range that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashKeyRangeError {
    /// The starting hash key does not parse.
    #[error("starting hash key: {0}")]
    Start(#[source] HashKeyError),
    /// The ending hash key does not parse.
    #[error("ending hash key: {0}")]
    End(#[source] HashKeyError),
    /// The starting hash key is greater than the ending one.
    #[error("hash key range {start}..={end}: the starting hash key is greater than the ending one")]
    Inverted {
        /// The starting hash key.
        start: u128,
        /// The ending hash key.
        end: u128,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash_key::HashKeyProblem;

    #[test]
    fn a_single_key_range_is_a_range() {
        let one = HashKeyRange::new(7, 7).unwrap();
        assert!(one.contains(7));
        assert!(!one.contains(6) && !one.contains(8));
    }

    #[test]
    fn parse_names_the_bad_end_and_the_problem() {
        match HashKeyRange::parse("x", "1") {
            Err(HashKeyRangeError::Start(e)) => assert_eq!(e.problem, HashKeyProblem::NotDecimal),
            other => panic!("{other:?}"),
        }
        match HashKeyRange::parse("0", &"9".repeat(40)) {
            Err(HashKeyRangeError::End(e)) => assert_eq!(e.problem, HashKeyProblem::OutOfRange),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            HashKeyRange::parse("5", "4"),
            Err(HashKeyRangeError::Inverted { start: 5, end: 4 })
        );
        assert!(
            HashKeyRange::parse("5", "4")
                .unwrap_err()
                .to_string()
                .contains("5..=4")
        );
    }

    #[test]
    fn the_whole_space_holds_every_key() {
        assert!(HashKeyRange::ALL.contains(0) && HashKeyRange::ALL.contains(u128::MAX));
    }

    #[test]
    fn the_cached_count_equals_the_plain_one_whatever_the_capacity() {
        use crate::{AggregateBuilder, Deaggregated, deaggregate};
        let ranges = [
            HashKeyRange::ALL,
            HashKeyRange::new(0, u128::MAX / 3).unwrap(),
            HashKeyRange::new(u128::MAX / 2, u128::MAX / 2 + u128::MAX / 5).unwrap(),
        ];
        for capacity in [0, 1, 3, 1_000] {
            let mut cache = HashKeyCache::new(capacity);
            for round in 0..20u32 {
                let mut builder = AggregateBuilder::new(51_200, 1_000);
                for i in 0..50u32 {
                    let key = format!("key-{}", (i * 7 + round * 13) % 23);
                    let ehk = (i % 11 == 0).then(|| (u128::from(i) << 100).to_string());
                    builder.try_push(&key, ehk.as_deref(), b"x").unwrap();
                }
                let Deaggregated::Aggregated(subs) = deaggregate(builder.take_aggregate().unwrap())
                else {
                    panic!("not an aggregate");
                };
                for range in &ranges {
                    assert_eq!(
                        range.count_outside_cached(&subs, &mut cache),
                        range.count_outside(&subs),
                        "capacity {capacity}, round {round}, {range}"
                    );
                }
                assert!(cache.len() <= capacity);
            }
        }
    }
}
