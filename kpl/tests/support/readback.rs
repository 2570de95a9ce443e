//! Reads a whole stream back, as a consumer would, for the producer's tests.
//!
//! [`read_all`] reads every shard (open and closed) from `TRIM_HORIZON` and deaggregates, keeping
//! for each user record the shard it was read from, that shard's hash-key range and parents, and
//! whether its aggregate is one the Java KCL would deliver. [`java_kcl_view`] then applies the
//! Java KCL's rule (`AggregatorUtil.deaggregate`: an aggregate holding any sub-record whose hash
//! key lies outside the shard's range is dropped whole), so a test sees what a standard consumer
//! sees.

#![allow(dead_code)]

use std::collections::HashMap;

use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, deaggregate, effective_hash_key};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One user record as read back from the stream.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub(crate) shard_id: String,
    pub(crate) sequence_number: String,
    pub(crate) sub_sequence_number: u64,
    pub(crate) partition_key: String,
    pub(crate) data: Bytes,
    pub(crate) hash_key: u128,
    /// The hash-key range of the shard it was read from.
    pub(crate) range: (u128, u128),
    /// Whether it came inside a KPL aggregate.
    pub(crate) aggregated: bool,
    /// Whether every sub-record of its aggregate lies in the shard's range (always true for a
    /// record stored alone: Kinesis routed it by its own key).
    pub(crate) aggregate_in_range: bool,
    /// How many shards lie before the one it was read from in its lineage (0 for a shard the
    /// stream was created with): a key's records are stored in this order across a reshard.
    pub(crate) lineage_depth: usize,
}

impl Read {
    /// Storage order across a key's lineage: parents before children, then by sequence number
    /// (decimal strings without leading zeros: longer is later), then sub-sequence number.
    pub(crate) fn storage_order(&self) -> (usize, usize, &str, u64) {
        (
            self.lineage_depth,
            self.sequence_number.len(),
            &self.sequence_number,
            self.sub_sequence_number,
        )
    }
}

/// Reads every shard of the stream (open and closed) from TRIM_HORIZON, deaggregating.
pub(crate) async fn read_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<Read>, BoxError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let page = request.send().await?;
        shards.extend(page.shards().iter().cloned());
        match page.next_token() {
            Some(next) if !page.shards().is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    let parents: HashMap<String, Vec<String>> = shards
        .iter()
        .map(|s| {
            let mut parents: Vec<String> =
                s.parent_shard_id().map(str::to_owned).into_iter().collect();
            parents.extend(s.adjacent_parent_shard_id().map(str::to_owned));
            (s.shard_id().to_owned(), parents)
        })
        .collect();
    fn depth(id: &str, parents: &HashMap<String, Vec<String>>) -> usize {
        parents
            .get(id)
            .map(|ps| {
                ps.iter()
                    .filter(|p| parents.contains_key(*p))
                    .map(|p| 1 + depth(p, parents))
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }
    let mut out = Vec::new();
    for shard in &shards {
        let range = shard.hash_key_range().expect("shards have ranges");
        let range: (u128, u128) = (
            range.starting_hash_key().parse()?,
            range.ending_hash_key().parse()?,
        );
        let lineage_depth = depth(shard.shard_id(), &parents);
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        while let Some(current) = iterator {
            let page = client.get_records().shard_iterator(current).send().await?;
            for record in page.records() {
                let data = Bytes::copy_from_slice(record.data().as_ref());
                let read = |sub_sequence_number,
                            partition_key: &str,
                            data,
                            hash_key,
                            aggregated,
                            aggregate_in_range| Read {
                    shard_id: shard.shard_id().to_owned(),
                    sequence_number: record.sequence_number().to_owned(),
                    sub_sequence_number,
                    partition_key: partition_key.to_owned(),
                    data,
                    hash_key,
                    range,
                    aggregated,
                    aggregate_in_range,
                    lineage_depth,
                };
                match deaggregate(data) {
                    Deaggregated::Aggregated(subs) => {
                        let in_range = subs
                            .iter()
                            .all(|s| (range.0..=range.1).contains(&s.effective_hash_key()));
                        for sub in subs {
                            let (number, hash_key) =
                                (sub.sub_sequence_number(), sub.effective_hash_key());
                            let key = sub.partition_key().to_owned();
                            out.push(read(
                                number,
                                &key,
                                sub.into_data(),
                                hash_key,
                                true,
                                in_range,
                            ));
                        }
                    }
                    Deaggregated::PassThrough { data, .. } => {
                        let key = record.partition_key().unwrap_or_default();
                        let hash_key = effective_hash_key(key, None)?;
                        out.push(read(0, key, data, hash_key, false, true));
                    }
                }
            }
            iterator = if page.records().is_empty() {
                None
            } else {
                page.next_shard_iterator().map(str::to_owned)
            };
        }
    }
    Ok(out)
}

/// What the Java KCL delivers: every aggregate with a sub-record outside its shard's range is
/// dropped whole. Returns the records delivered and the number of aggregates dropped.
pub(crate) fn java_kcl_view(reads: Vec<Read>) -> (Vec<Read>, usize) {
    let mut dropped = std::collections::HashSet::new();
    let kept = reads
        .into_iter()
        .filter(|r| {
            if !r.aggregate_in_range {
                dropped.insert((r.shard_id.clone(), r.sequence_number.clone()));
            }
            r.aggregate_in_range
        })
        .collect();
    (kept, dropped.len())
}

/// Indexes records by data, asserting none is stored twice.
pub(crate) fn by_data(reads: Vec<Read>) -> HashMap<Bytes, Read> {
    let mut map = HashMap::with_capacity(reads.len());
    for read in reads {
        let data = read.data.clone();
        assert!(
            map.insert(data.clone(), read).is_none(),
            "{data:?} stored twice"
        );
    }
    map
}
