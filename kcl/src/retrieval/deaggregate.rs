//! Turning the Kinesis records of a `GetRecords` response (or a `SubscribeToShard` event) into
//! user [`Record`]s: deaggregation, with the hash key range check.
//!
//! The format itself is read by [`kinesis_aggregation::deaggregate`], its one home; this module
//! only decides what becomes of each outcome.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, HashKeyCache, PassThroughReason, deaggregate};
use metrics::Counter;

use super::metrics::ShardLabels;
use crate::error::Result;
use crate::lease::HashKeyRange;
use crate::metrics::{AGGREGATES_PASSED_THROUGH, OUT_OF_RANGE_RECORDS};
use crate::record::Record;
use crate::sequence::SequenceNumber;

/// What to do with an aggregate holding user records whose hash key falls outside the range of
/// the shard it was read from.
///
/// That happens when a producer aggregated records for a shard map that a reshard has since
/// changed: the aggregate goes to the shard of its first record, and the others travel with it.
/// What the producer does next decides which policy delivers every record once:
///
/// - `kinesis-kpl` sends such an aggregate again whole, regrouped by the new shards, so every
///   record is stored again on the shard holding its key. Dropping the first copy whole
///   ([`DropAggregate`](Self::DropAggregate), the default) delivers every record once, on its
///   shard, in per-key order; delivering it would deliver its records twice, some of them on a
///   shard that does not hold their key, out of order with the key's later records.
/// - The C++ KPL resolves the in-range records of such an aggregate as stored and sends only the
///   others again. Dropping the aggregate then loses the in-range records (as it does with the
///   Java KCL); [`Deliver`](Self::Deliver) keeps them, at the price of delivering the others
///   twice.
///
/// ```
/// use kinesis_kcl::OutOfRangePolicy;
///
/// assert_eq!(OutOfRangePolicy::default(), OutOfRangePolicy::DropAggregate);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutOfRangePolicy {
    /// Deliver every user record, counting the out-of-range ones in
    /// `kinesis_kcl_out_of_range_records_total{action="delivered"}` and logging a warning (sequence
    /// number and counts only). Nothing is lost, but what the producer sent again is delivered
    /// twice.
    Deliver,
    /// Drop the whole aggregate when any of its user records is out of range (the default), as
    /// the Java KCL 2.x and later does (`AggregatorUtil`), counting every dropped user record
    /// in `kinesis_kcl_out_of_range_records_total{action="dropped"}`. Those records are delivered by
    /// the shard holding their key only if the producer sent them again, as `kinesis-kpl` does.
    #[default]
    DropAggregate,
}

impl OutOfRangePolicy {
    fn as_str(self) -> &'static str {
        match self {
            OutOfRangePolicy::Deliver => "deliver",
            OutOfRangePolicy::DropAggregate => "drop_aggregate",
        }
    }
}

/// Deaggregates the Kinesis records of one shard.
#[derive(Debug)]
pub(crate) struct Deaggregator {
    labels: ShardLabels,
    hash_key_range: Option<HashKeyRange>,
    policy: OutOfRangePolicy,
    out_of_range_delivered: Counter,
    out_of_range_dropped: Counter,
    /// Partition keys' hash keys, kept across aggregates (a shard's records repeat keys).
    hash_keys: HashKeyCache,
}

/// Partition keys whose hash keys one shard's reader remembers: at most ~300 KiB at the
/// 256-character key limit, a few tens of KiB for typical keys.
const HASH_KEY_CACHE_KEYS: usize = 1_024;

impl Deaggregator {
    /// A deaggregator for the shard of `labels`, which covers `hash_key_range` (no range check
    /// when `None`).
    pub(crate) fn new(
        labels: ShardLabels,
        hash_key_range: Option<HashKeyRange>,
        policy: OutOfRangePolicy,
    ) -> Self {
        Deaggregator {
            out_of_range_delivered: labels.counter_with(
                OUT_OF_RANGE_RECORDS,
                "action",
                "delivered",
            ),
            out_of_range_dropped: labels.counter_with(OUT_OF_RANGE_RECORDS, "action", "dropped"),
            labels,
            hash_key_range,
            policy,
            hash_keys: HashKeyCache::new(HASH_KEY_CACHE_KEYS),
        }
    }

    /// Appends the user records of one Kinesis record to `out`: itself, if it is not an
    /// aggregate (or is one that cannot be read, which is then counted and logged), else its
    /// user records in order, subject to the [`OutOfRangePolicy`].
    ///
    /// Returns the record's sequence number and data size.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`](crate::Error::InvalidValue) if the sequence number is not a string of digits (a broken
    /// server).
    pub(crate) fn push(
        &mut self,
        record: aws_sdk_kinesis::types::Record,
        out: &mut Vec<Record>,
    ) -> Result<(Arc<SequenceNumber>, usize)> {
        let aws_sdk_kinesis::types::Record {
            sequence_number,
            approximate_arrival_timestamp,
            data,
            partition_key,
            ..
        } = record;
        let sequence_number = Arc::new(SequenceNumber::new(sequence_number)?);
        let arrival = approximate_arrival_timestamp.and_then(|t| SystemTime::try_from(t).ok());
        let data = Bytes::from(data.into_inner());
        let size = data.len();
        // Kinesis leaves the partition key out for streams that distribute records themselves
        // (the `AUTO` record distribution strategy): there, hash keys say nothing about shards.
        let routed_by_key = partition_key.is_some();
        match deaggregate(data) {
            Deaggregated::PassThrough { data, reason } => {
                if reason.is_malformed_aggregate() {
                    self.passed_through(&sequence_number, reason);
                }
                out.push(Record::plain(
                    Arc::clone(&sequence_number),
                    arrival,
                    partition_key.unwrap_or_default(),
                    data,
                ));
            }
            Deaggregated::Aggregated(subs) => {
                let out_of_range = match self.hash_key_range {
                    Some(range) if routed_by_key => {
                        range.count_outside_cached(&subs, &mut self.hash_keys)
                    }
                    _ => 0,
                };
                if out_of_range > 0 {
                    tracing::warn!(
                        stream = %self.labels.stream,
                        shard_id = %self.labels.shard_id,
                        sequence_number = %sequence_number,
                        out_of_range,
                        user_records = subs.len(),
                        policy = self.policy.as_str(),
                        "aggregated record holds user records outside the shard's hash key range"
                    );
                    match self.policy {
                        OutOfRangePolicy::Deliver => {
                            self.out_of_range_delivered.increment(out_of_range as u64);
                        }
                        OutOfRangePolicy::DropAggregate => {
                            self.out_of_range_dropped.increment(subs.len() as u64);
                            return Ok((sequence_number, size));
                        }
                    }
                }
                out.extend(subs.into_iter().map(|sub| {
                    Record::from_sub_record(Arc::clone(&sequence_number), arrival, sub)
                }));
            }
        }
        Ok((sequence_number, size))
    }

    fn passed_through(&self, sequence_number: &SequenceNumber, reason: PassThroughReason) {
        tracing::warn!(
            stream = %self.labels.stream,
            shard_id = %self.labels.shard_id,
            sequence_number = %sequence_number,
            reason = reason.as_str(),
            "record carries the KPL aggregation magic but cannot be deaggregated; delivered whole"
        );
        self.labels
            .counter_with(AGGREGATES_PASSED_THROUGH, "reason", reason.as_str())
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::{Blob, DateTime};
    use kinesis_aggregation::{AggregateBuilder, Finished, hash_key_for_partition_key};

    use super::*;
    use crate::Error;

    fn labels() -> ShardLabels {
        ShardLabels::new("s", "shardId-000000000000")
    }

    fn kinesis_record(seq: &str, pk: &str, data: Bytes) -> aws_sdk_kinesis::types::Record {
        record_builder(seq, data).partition_key(pk).build().unwrap()
    }

    /// A record as Kinesis returns it from a stream with the `AUTO` record distribution
    /// strategy: no partition key.
    fn keyless_record(seq: &str, data: Bytes) -> aws_sdk_kinesis::types::Record {
        record_builder(seq, data).build().unwrap()
    }

    fn record_builder(seq: &str, data: Bytes) -> aws_sdk_kinesis::types::builders::RecordBuilder {
        aws_sdk_kinesis::types::Record::builder()
            .sequence_number(seq)
            .data(Blob::new(data.to_vec()))
            .approximate_arrival_timestamp(DateTime::from_secs(1_700_000_000))
    }

    fn aggregate(entries: &[(&str, Option<&str>, &[u8])]) -> Bytes {
        let mut builder = AggregateBuilder::default();
        for (pk, ehk, data) in entries {
            builder.try_push(pk, *ehk, data).unwrap();
        }
        let Some(Finished::Aggregated { data, .. }) = builder.finish() else {
            unreachable!()
        };
        data
    }

    const LOW: &str = "1";
    const HIGH: &str = "340282366920938463463374607431768211450";

    fn low_half() -> HashKeyRange {
        HashKeyRange::new(0, u128::MAX / 2).unwrap()
    }

    #[test]
    fn plain_record_passes_through_with_sub_sequence_zero() {
        let mut d = Deaggregator::new(labels(), Some(low_half()), OutOfRangePolicy::DropAggregate);
        let mut out = Vec::new();
        let (seq, size) = d
            .push(
                kinesis_record("42", "pk", Bytes::from_static(b"hello")),
                &mut out,
            )
            .unwrap();
        assert_eq!((seq.as_str(), size), ("42", 5));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].partition_key(), "pk");
        assert_eq!(&out[0].data()[..], b"hello");
        assert_eq!(out[0].sub_sequence_number(), 0);
        assert!(!out[0].is_aggregated());
        assert_eq!(
            out[0].approximate_arrival_timestamp(),
            Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
        );
    }

    #[test]
    fn aggregate_becomes_its_user_records() {
        let mut d = Deaggregator::new(labels(), None, OutOfRangePolicy::Deliver);
        let mut out = Vec::new();
        let data = aggregate(&[
            ("a", None, b"1"),
            ("b", Some(HIGH), b"2"),
            ("c", None, b"3"),
        ]);
        d.push(kinesis_record("7", "a", data), &mut out).unwrap();
        let seen: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.partition_key(),
                    r.explicit_hash_key(),
                    r.sub_sequence_number(),
                    r.sequence_number().as_str(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a", None, 0, "7"),
                ("b", Some(HIGH), 1, "7"),
                ("c", None, 2, "7")
            ]
        );
        assert!(out.iter().all(Record::is_aggregated));
    }

    #[test]
    fn out_of_range_is_delivered_by_default_and_dropped_whole_on_request() {
        let data = aggregate(&[("a", Some(LOW), b"in"), ("b", Some(HIGH), b"out")]);
        let mut deliver = Deaggregator::new(labels(), Some(low_half()), OutOfRangePolicy::Deliver);
        let mut out = Vec::new();
        deliver
            .push(kinesis_record("7", "a", data.clone()), &mut out)
            .unwrap();
        assert_eq!(out.len(), 2);

        let mut drop =
            Deaggregator::new(labels(), Some(low_half()), OutOfRangePolicy::DropAggregate);
        let mut out = Vec::new();
        let (seq, _) = drop.push(kinesis_record("7", "a", data), &mut out).unwrap();
        assert!(out.is_empty(), "the whole aggregate is dropped, as Java");
        assert_eq!(seq.as_str(), "7", "the position still advances");

        // Partition keys count through their MD5.
        let pk = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| hash_key_for_partition_key(k) > u128::MAX / 2)
            .unwrap();
        let data = aggregate(&[("x", Some(LOW), b"in"), (&pk, None, b"out")]);
        let mut out = Vec::new();
        drop.push(kinesis_record("8", "x", data), &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_record_without_a_partition_key_is_delivered_with_an_empty_one() {
        let mut d = Deaggregator::new(labels(), Some(low_half()), OutOfRangePolicy::DropAggregate);
        let mut out = Vec::new();
        let (seq, size) = d
            .push(keyless_record("42", Bytes::from_static(b"hello")), &mut out)
            .unwrap();
        assert_eq!((seq.as_str(), size), ("42", 5));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].partition_key(), "");
        assert_eq!(&out[0].data()[..], b"hello");
        assert_eq!(out[0].extended_sequence_number().to_string(), "42/0");
    }

    #[test]
    fn an_aggregate_without_a_partition_key_is_not_range_checked() {
        // On an AUTO stream Kinesis ignores hash keys, so the aggregate's user records are on
        // the shard Kinesis chose: none is out of range, nothing is dropped.
        let data = aggregate(&[("a", Some(LOW), b"in"), ("b", Some(HIGH), b"out")]);
        let mut d = Deaggregator::new(labels(), Some(low_half()), OutOfRangePolicy::DropAggregate);
        let mut out = Vec::new();
        d.push(keyless_record("7", data), &mut out).unwrap();
        let keys: Vec<_> = out
            .iter()
            .map(|r| (r.partition_key(), r.sub_sequence_number()))
            .collect();
        assert_eq!(keys, [("a", 0), ("b", 1)]);
    }

    #[test]
    fn malformed_aggregate_is_delivered_whole() {
        let mut d = Deaggregator::new(labels(), Some(low_half()), OutOfRangePolicy::DropAggregate);
        let mut bad = aggregate(&[("a", None, b"1"), ("b", None, b"2")]).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // break the MD5
        let mut out = Vec::new();
        d.push(kinesis_record("9", "a", Bytes::from(bad.clone())), &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert!(!out[0].is_aggregated());
        assert_eq!(&out[0].data()[..], &bad[..]);
    }

    #[test]
    fn bad_sequence_number_is_an_error() {
        let mut d = Deaggregator::new(labels(), None, OutOfRangePolicy::Deliver);
        let err = d
            .push(kinesis_record("x1", "a", Bytes::new()), &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, Error::InvalidValue { .. }), "{err}");
    }
}
