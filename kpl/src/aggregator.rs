//! Per-shard aggregation: packs the user records predicted for one shard into KPL aggregates
//! and hands out finished Kinesis records ([`Entry`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::pending::Pending;
use kinesis_aggregation::AggregateBuilder;

/// The partition key of every aggregate, as the KPL's: one byte, the least Kinesis counts in a
/// record's size. Kinesis routes an aggregate by its explicit hash key; consumers read each
/// user record's own key from inside the aggregate.
pub(crate) const AGGREGATE_PARTITION_KEY: &str = "a";

/// One Kinesis record on its way: a lone user record or an aggregate of several.
pub(crate) struct Entry {
    /// The shard it was aggregated for (predicted).
    pub(crate) shard: Arc<str>,
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) data: Bytes,
    /// Whether `data` is a KPL aggregate (sub-sequence numbers are positions in it).
    pub(crate) aggregated: bool,
    /// The user records it carries, in aggregate order.
    pub(crate) records: Vec<Pending>,
    /// When it should be sent at the latest (earliest arrival + `record_max_buffered_time`), or
    /// for a retry, when its backoff ends.
    pub(crate) due: Instant,
    /// Not to be sent before this (backoff after a failed attempt).
    pub(crate) not_before: Instant,
    /// Failed attempts so far: the position in the backoff schedule.
    pub(crate) retries: u32,
}

impl Entry {
    /// The bytes Kinesis counts: data + partition key.
    pub(crate) fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }

    /// A lone user record, sent as it was put.
    pub(crate) fn single(shard: Arc<str>, pending: Pending, due: Instant) -> Self {
        Self {
            shard,
            partition_key: pending.record.partition_key.clone(),
            explicit_hash_key: pending.record.explicit_hash_key.clone(),
            data: pending.record.data.clone(),
            aggregated: false,
            due,
            not_before: pending.arrived,
            retries: 0,
            records: vec![pending],
        }
    }
}

/// The open aggregate of one shard.
pub(crate) struct ShardAggregator {
    builder: AggregateBuilder,
    records: Vec<Pending>,
}

impl ShardAggregator {
    pub(crate) fn new(max_size: usize, max_count: usize) -> Self {
        Self {
            builder: AggregateBuilder::new(max_size, max_count),
            records: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// When the open aggregate must be sent: its first record's arrival + the buffered-time
    /// limit.
    pub(crate) fn first_arrival(&self) -> Option<Instant> {
        self.records.first().map(|p| p.arrived)
    }

    /// Adds a record; pushes to `out` whatever it completes: the previous aggregate when the
    /// record does not fit in it, and the record itself when it is too large for any aggregate.
    pub(crate) fn push(
        &mut self,
        shard: &Arc<str>,
        pending: Pending,
        max_buffered: std::time::Duration,
        out: &mut Vec<Entry>,
    ) {
        let record = &pending.record;
        match self.builder.try_push(
            &record.partition_key,
            record.explicit_hash_key.as_deref(),
            &record.data,
        ) {
            Ok(()) => self.records.push(pending),
            Err(rejected) if rejected.fits_in_empty_aggregate() => {
                out.extend(self.take(shard, max_buffered));
                let record = &pending.record;
                let pushed = self.builder.try_push(
                    &record.partition_key,
                    record.explicit_hash_key.as_deref(),
                    &record.data,
                );
                debug_assert!(pushed.is_ok(), "a record that fits an empty aggregate");
                if pushed.is_ok() {
                    self.records.push(pending);
                } else {
                    let due = crate::clock::later(pending.arrived, max_buffered);
                    out.push(Entry::single(shard.clone(), pending, due));
                }
            }
            Err(_too_large) => {
                // Larger than any aggregate: it goes alone, after what is already open so the
                // shard's order is kept.
                out.extend(self.take(shard, max_buffered));
                let due = crate::clock::later(pending.arrived, max_buffered);
                out.push(Entry::single(shard.clone(), pending, due));
            }
        }
    }

    /// Closes the open aggregate, if any. A lone record is sent unaggregated, as the KPL does.
    pub(crate) fn take(
        &mut self,
        shard: &Arc<str>,
        max_buffered: std::time::Duration,
    ) -> Option<Entry> {
        let first = self.records.first()?;
        let due = crate::clock::later(first.arrived, max_buffered);
        if self.records.len() == 1 {
            self.builder.clear();
            let pending = self.records.pop()?;
            return Some(Entry::single(shard.clone(), pending, due));
        }
        let data = self.builder.take_aggregate()?;
        let records = std::mem::take(&mut self.records);
        let first = &records[0];
        Some(Entry {
            shard: shard.clone(),
            partition_key: AGGREGATE_PARTITION_KEY.to_owned(),
            // Route the aggregate by its first record's hash key: inside the predicted shard.
            explicit_hash_key: Some(first.hash_key.to_string()),
            data,
            aggregated: true,
            due,
            not_before: first.arrived,
            retries: 0,
            records,
        })
    }

    /// The records of the open aggregate, in order.
    pub(crate) fn records(&self) -> &[Pending] {
        &self.records
    }

    /// Hands back every record of the open aggregate, in order.
    pub(crate) fn drain(&mut self) -> Vec<Pending> {
        self.builder.clear();
        std::mem::take(&mut self.records)
    }
}
