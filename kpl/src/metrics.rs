//! The producer's metrics, through the `metrics` facade (install any exporter to see them);
//! their names are the constants below.
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

/// Counter: user records stored.
pub const USER_RECORDS_PUT: &str = "kinesis_kpl_user_records_put_total";
/// Counter: user records failed for good, labelled `reason` (`expired`, `throttled`,
/// `rejected`, `unknown_outcome`).
pub const USER_RECORDS_FAILED: &str = "kinesis_kpl_user_records_failed_total";
/// Counter: Kinesis records (aggregates and lone records) stored.
pub const KINESIS_RECORDS_PUT: &str = "kinesis_kpl_kinesis_records_put_total";
/// Histogram: user records per Kinesis record stored (the aggregation ratio).
pub const USER_RECORDS_PER_KINESIS_RECORD: &str = "kinesis_kpl_user_records_per_kinesis_record";
/// Counter: entries retried.
pub const RETRIES: &str = "kinesis_kpl_retries_total";
/// Counter: entries throttled.
pub const THROTTLES: &str = "kinesis_kpl_throttles_total";
/// Counter: user records sent again because their aggregate landed on a shard not holding all
/// of them (a reshard).
pub const WRONG_SHARD_RECORDS: &str = "kinesis_kpl_wrong_shard_records_total";
/// Histogram: seconds from put to first send.
pub const BUFFERED_TIME_SECONDS: &str = "kinesis_kpl_buffered_time_seconds";
/// Histogram: seconds per PutRecords call.
pub const REQUEST_DURATION_SECONDS: &str = "kinesis_kpl_request_duration_seconds";
/// Counter: shard map refreshes that changed the map.
pub const SHARD_MAP_REFRESHES: &str = "kinesis_kpl_shard_map_refreshes_total";

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
            user_records_put: counter!(USER_RECORDS_PUT, "stream" => label.clone()),
            kinesis_records_put: counter!(KINESIS_RECORDS_PUT, "stream" => label.clone()),
            user_records_per_kinesis_record: histogram!(USER_RECORDS_PER_KINESIS_RECORD, "stream" => label.clone()),
            retries: counter!(RETRIES, "stream" => label.clone()),
            throttles: counter!(THROTTLES, "stream" => label.clone()),
            wrong_shard_records: counter!(WRONG_SHARD_RECORDS, "stream" => label.clone()),
            buffered_time: histogram!(BUFFERED_TIME_SECONDS, "stream" => label.clone()),
            request_duration: histogram!(REQUEST_DURATION_SECONDS, "stream" => label.clone()),
            shard_map_refreshes: counter!(SHARD_MAP_REFRESHES, "stream" => label.clone()),
            stream: label,
        }
    }

    /// Counts a user record that failed for good.
    pub(crate) fn failed(&self, reason: &'static str) {
        counter!(USER_RECORDS_FAILED, "stream" => self.stream.clone(), "reason" => reason)
            .increment(1);
    }
}
