//! The producer's metrics, through the `metrics` facade (install any exporter to see them).
//!
//! | name | kind | unit | labels |
//! |---|---|---|---|
//! | `kinesis_kpl_user_records_put_total` | counter | records | `stream` |
//! | `kinesis_kpl_user_records_failed_total` | counter | records | `stream`, `reason` (`expired`, `throttled`, `rejected`, `unknown_outcome`) |
//! | `kinesis_kpl_kinesis_records_put_total` | counter | Kinesis records | `stream` |
//! | `kinesis_kpl_user_records_per_kinesis_record` | histogram | records (the aggregation ratio) | `stream` |
//! | `kinesis_kpl_retries_total` | counter | entries retried | `stream` |
//! | `kinesis_kpl_throttles_total` | counter | entries throttled | `stream` |
//! | `kinesis_kpl_wrong_shard_records_total` | counter | user records sent again because their aggregate landed on a shard not holding all of them (a reshard) | `stream` |
//! | `kinesis_kpl_buffered_time_seconds` | histogram | seconds from put to first send | `stream` |
//! | `kinesis_kpl_request_duration_seconds` | histogram | seconds per PutRecords call | `stream` |
//! | `kinesis_kpl_shard_map_refreshes_total` | counter | refreshes that changed the map | `stream` |

use metrics::{Counter, Histogram, counter, histogram};

pub(crate) struct Metrics {
    stream: String,
    pub(crate) user_records_put: Counter,
    pub(crate) kinesis_records_put: Counter,
    pub(crate) user_records_per_kinesis_record: Histogram,
    pub(crate) retries: Counter,
    pub(crate) throttles: Counter,
    pub(crate) wrong_shard_records: Counter,
    pub(crate) buffered_time: Histogram,
    pub(crate) request_duration: Histogram,
    pub(crate) shard_map_refreshes: Counter,
}

impl Metrics {
    pub(crate) fn new(stream: &str) -> Self {
        let label = stream.to_owned();
        Self {
            user_records_put: counter!("kinesis_kpl_user_records_put_total", "stream" => label.clone()),
            kinesis_records_put: counter!("kinesis_kpl_kinesis_records_put_total", "stream" => label.clone()),
            user_records_per_kinesis_record: histogram!("kinesis_kpl_user_records_per_kinesis_record", "stream" => label.clone()),
            retries: counter!("kinesis_kpl_retries_total", "stream" => label.clone()),
            throttles: counter!("kinesis_kpl_throttles_total", "stream" => label.clone()),
            wrong_shard_records: counter!("kinesis_kpl_wrong_shard_records_total", "stream" => label.clone()),
            buffered_time: histogram!("kinesis_kpl_buffered_time_seconds", "stream" => label.clone()),
            request_duration: histogram!("kinesis_kpl_request_duration_seconds", "stream" => label.clone()),
            shard_map_refreshes: counter!("kinesis_kpl_shard_map_refreshes_total", "stream" => label.clone()),
            stream: label,
        }
    }

    /// Counts a user record that failed for good.
    pub(crate) fn failed(&self, reason: &'static str) {
        counter!("kinesis_kpl_user_records_failed_total", "stream" => self.stream.clone(), "reason" => reason)
            .increment(1);
    }
}
