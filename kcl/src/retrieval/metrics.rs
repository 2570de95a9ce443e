//! The names of the metrics retrieval reports through the [`metrics`] facade, each
//! labelled `stream` and `shard_id`; units, kinds and extra labels are in the crate's one list,
//! [`crate::metrics`].

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// Histogram: latency of each `GetRecords` call, seconds.
pub const GET_RECORDS_DURATION: &str = "kcl_get_records_duration_seconds";
/// Counter: `GetRecords` calls throttled.
pub const GET_RECORDS_THROTTLED: &str = "kcl_get_records_throttled_total";
/// Counter: transient failures retried.
pub const GET_RECORDS_RETRIES: &str = "kcl_get_records_retries_total";
/// Counter: expired iterators recovered from.
pub const EXPIRED_ITERATORS: &str = "kcl_expired_iterators_total";
/// Counter: Kinesis records fetched.
pub const RECORDS_FETCHED: &str = "kcl_records_fetched_total";
/// Counter: data bytes fetched.
pub const BYTES_FETCHED: &str = "kcl_bytes_fetched_total";
/// Counter: user records delivered.
pub const USER_RECORDS_DELIVERED: &str = "kcl_user_records_delivered_total";
/// Gauge: `MillisBehindLatest` of the last response.
pub const MILLIS_BEHIND_LATEST: &str = "kcl_millis_behind_latest";
/// Counter: aggregated user records outside the shard's hash key range.
pub const OUT_OF_RANGE_RECORDS: &str = "kcl_out_of_range_records_total";
/// Counter: records with the aggregation magic delivered whole.
pub const AGGREGATES_PASSED_THROUGH: &str = "kcl_aggregates_passed_through_total";
/// Gauge: batches held by the prefetch and the consumer.
pub const PREFETCH_BATCHES: &str = "kcl_prefetch_batches";
/// Gauge: user records held by the prefetch and the consumer.
pub const PREFETCH_RECORDS: &str = "kcl_prefetch_records";
/// Gauge: data bytes held by the prefetch and the consumer.
pub const PREFETCH_BYTES: &str = "kcl_prefetch_bytes";

/// The labels of one shard's metrics.
#[derive(Clone, Debug)]
pub(crate) struct ShardLabels {
    pub(crate) stream: String,
    pub(crate) shard_id: String,
}

impl ShardLabels {
    pub(crate) fn new(stream: &str, shard_id: &str) -> Self {
        ShardLabels {
            stream: stream.to_owned(),
            shard_id: shard_id.to_owned(),
        }
    }

    pub(crate) fn counter(&self, name: &'static str) -> Counter {
        counter!(name, "stream" => self.stream.clone(), "shard_id" => self.shard_id.clone())
    }

    pub(crate) fn counter_with(
        &self,
        name: &'static str,
        label: &'static str,
        value: &'static str,
    ) -> Counter {
        counter!(name, "stream" => self.stream.clone(), "shard_id" => self.shard_id.clone(), label => value)
    }

    pub(crate) fn gauge(&self, name: &'static str) -> Gauge {
        gauge!(name, "stream" => self.stream.clone(), "shard_id" => self.shard_id.clone())
    }

    pub(crate) fn histogram_with(
        &self,
        name: &'static str,
        label: &'static str,
        value: &'static str,
    ) -> Histogram {
        histogram!(name, "stream" => self.stream.clone(), "shard_id" => self.shard_id.clone(), label => value)
    }
}
