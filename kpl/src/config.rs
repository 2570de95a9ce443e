//! Producer configuration: a builder whose defaults are the KPL's own.

use std::time::Duration;

use crate::ConfigError;

/// The Kinesis limit on entries in one PutRecords call.
pub(crate) const PUT_RECORDS_MAX_ENTRIES: usize = 500;
/// The Kinesis limit on the bytes (data + partition keys) of one PutRecords call: 5 MiB.
pub(crate) const PUT_RECORDS_MAX_BYTES: usize = 5 * 1024 * 1024;
/// The longest partition key Kinesis accepts, in characters as the API counts them (UTF-16
/// code units).
pub const MAX_PARTITION_KEY_CHARS: usize = 256;
/// Kinesis's default maximum record size (data + partition key): 1 MiB.
pub(crate) const DEFAULT_MAX_RECORD_SIZE: usize = 1024 * 1024;
/// The bookkeeping memory of one buffered user record besides its key and data (see
/// [`ProducerConfig::memory_bound`]): measured at 0.9 KiB per record with the buffers full through an
/// outage (`kpl/tests/memory.rs`: the record's slot in its aggregate's list, its future's
/// channel, its attempts, allocator slack), with headroom for the growth of those lists.
pub(crate) const RECORD_OVERHEAD: usize = 1280;
/// Copies of the bytes in flight held during a call, in tenths: the SDK's entries (1) and the
/// JSON body with base64 data (4/3), rounded up.
const IN_FLIGHT_COPIES_TENTHS: usize = 25;

/// How the producer orders the records of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ordering {
    /// As the KPL: several requests per shard may be in flight and a failed entry is retried
    /// while later records go ahead, so records of one partition key can be stored out of order
    /// after a retry.
    #[default]
    Unordered,
    /// Beyond the KPL: at most one request in flight per shard, holding at most one entry for
    /// that shard, and a failed entry is retried before anything after it for that shard. Records
    /// of one partition key are stored in the order they were put, even across retries. Costs
    /// per-shard throughput (one aggregate per round trip).
    PerShardStrict,
}

/// How the producer behaves. Build one with [`ProducerConfig::builder`]; the defaults are the KPL's
/// (`default_config.properties` of the KPL) where the KPL has the setting.
///
/// ```
/// use std::time::Duration;
/// use kinesis_kpl::ProducerConfig;
///
/// let config = ProducerConfig::builder()
///     .record_max_buffered_time(Duration::from_millis(50))
///     .record_ttl(Duration::from_secs(60))
///     .build()?;
/// assert_eq!(config.collection_max_count(), 500);
/// # Ok::<(), kinesis_kpl::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ProducerConfig {
    aggregation_enabled: bool,
    aggregation_max_count: usize,
    aggregation_max_size: usize,
    collection_max_count: usize,
    collection_max_size: usize,
    record_max_buffered_time: Duration,
    record_ttl: Duration,
    rate_limit: u32,
    max_connections: usize,
    request_timeout: Duration,
    fail_if_throttled: bool,
    max_record_size: usize,
    max_buffered_records: usize,
    max_buffered_bytes: usize,
    ordering: Ordering,
    min_backoff: Duration,
    max_backoff: Duration,
    shard_map_refresh_interval: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            aggregation_enabled: true,
            aggregation_max_count: u32::MAX as usize,
            aggregation_max_size: 51_200,
            collection_max_count: PUT_RECORDS_MAX_ENTRIES,
            collection_max_size: PUT_RECORDS_MAX_BYTES,
            record_max_buffered_time: Duration::from_millis(100),
            record_ttl: Duration::from_millis(30_000),
            rate_limit: 150,
            max_connections: 24,
            request_timeout: Duration::from_millis(6_000),
            fail_if_throttled: false,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            max_buffered_records: 100_000,
            max_buffered_bytes: 256 * 1024 * 1024,
            ordering: Ordering::Unordered,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            shard_map_refresh_interval: Duration::from_secs(1),
        }
    }
}

impl ProducerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ProducerConfigBuilder {
        ProducerConfigBuilder {
            config: ProducerConfig::default(),
        }
    }

    /// Whether user records are packed into KPL aggregates. Default `true` (KPL
    /// `AggregationEnabled`).
    pub fn aggregation_enabled(&self) -> bool {
        self.aggregation_enabled
    }
    /// Most user records in one aggregate. Default 4 294 967 295 (KPL `AggregationMaxCount`).
    pub fn aggregation_max_count(&self) -> usize {
        self.aggregation_max_count
    }
    /// Largest aggregate in bytes, framing included. Default 51 200 (KPL `AggregationMaxSize`).
    /// An aggregate goes out as the KPL sends it: partition key `"a"` (1 byte, the least
    /// Kinesis counts) and its first record's hash key as explicit hash key, so it may be as
    /// large as `max_record_size` − 1. Measured against using the first record's key (36-byte
    /// keys): 0.07 % fewer bytes counted by Kinesis under load (full aggregates), 4.4 % for
    /// 100-byte records put at a pace that fills aggregates with about five records, 10 % for
    /// 10-byte records.
    pub fn aggregation_max_size(&self) -> usize {
        self.aggregation_max_size
    }
    /// Most entries in one PutRecords call. Default 500 (KPL `CollectionMaxCount`; the API limit).
    pub fn collection_max_count(&self) -> usize {
        self.collection_max_count
    }
    /// Most bytes (data + partition keys) in one PutRecords call. Default 5 MiB (KPL
    /// `CollectionMaxSize`; the API limit).
    pub fn collection_max_size(&self) -> usize {
        self.collection_max_size
    }
    /// Longest a user record waits in the producer's buffers before it is sent. Default 100 ms
    /// (KPL `RecordMaxBufferedTime`).
    pub fn record_max_buffered_time(&self) -> Duration {
        self.record_max_buffered_time
    }
    /// A user record's deadline: after this long without success its put resolves to
    /// [`PutError::Expired`](crate::PutError::Expired). Default 30 s (KPL `RecordTtl`).
    pub fn record_ttl(&self) -> Duration {
        self.record_ttl
    }
    /// Per-shard rate limit as a percentage of the shard's write limits (1 000 records/s,
    /// 1 MiB/s). Default 150 (KPL `RateLimit`): bursts above the limit are left to Kinesis to
    /// throttle and the retries absorb them.
    pub fn rate_limit(&self) -> u32 {
        self.rate_limit
    }
    /// Most PutRecords requests in flight at once, over every stream the producer puts to.
    /// Default 24 (KPL `MaxConnections`).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }
    /// Time limit of one PutRecords call; a call over it counts as a failed attempt and is
    /// retried. Default 6 000 ms (KPL `RequestTimeout`).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
    /// Fail a record at its first throttling instead of retrying it. Default `false` (KPL
    /// `FailIfThrottled`).
    pub fn fail_if_throttled(&self) -> bool {
        self.fail_if_throttled
    }
    /// Largest user record (partition key + data) in bytes. Default 1 MiB, Kinesis's default;
    /// raise it for streams configured with a larger maximum record size.
    pub fn max_record_size(&self) -> usize {
        self.max_record_size
    }
    /// Most user records buffered (put but not yet resolved) before `put_record` waits for room
    /// and `try_put_record` reports [`PutError::Full`](crate::PutError::Full). Default 100 000. The KPL has no bound (its
    /// buffers grow until the process runs out of memory); we bound memory by default.
    pub fn max_buffered_records(&self) -> usize {
        self.max_buffered_records
    }
    /// Most bytes of buffered user records, counting each record's partition key + data
    /// (+ explicit hash key) once, or twice when it may be aggregated (aggregation on and the
    /// record no larger than `aggregation_max_size`: its aggregate holds a second copy until
    /// it is stored). Default 256 MiB. The memory this and the other bounds
    /// add up to is [`ProducerConfig::memory_bound`].
    pub fn max_buffered_bytes(&self) -> usize {
        self.max_buffered_bytes
    }
    /// The most memory, in bytes, that the producer holds with its buffers full, whatever
    /// happens to the stream (an outage throttling every call included), allocator slack
    /// included. It adds up:
    ///
    /// - `max_buffered_bytes`: the records' keys and data, and their aggregates;
    /// - `max_buffered_records` × 1 280 bytes: each record's bookkeeping (its
    ///   future's channel, timestamps, up to [`MAX_ATTEMPTS_KEPT`](crate::MAX_ATTEMPTS_KEPT)
    ///   attempts; an error's code and message are held once per call and shared);
    /// - while calls are in flight, 2.5 × the bytes in flight (the SDK's copy of each entry and
    ///   the JSON body with its data in base64; estimated from the copies made), at most
    ///   `max_connections` × `collection_max_size` bytes in flight.
    ///
    /// With the defaults: 256 MiB + 100 000 × 1.25 KiB + 2.5 × 120 MiB ≈ 680 MiB. Measured in
    /// `kpl/tests/memory.rs` (records of 800 B, 40 000 records / 64 MiB, every call throttled
    /// for 20 s): resident memory grew 95 MiB against a bound of 123 MiB (before the bound
    /// counted the aggregate copy and attempts shared their errors: 238 MiB). To hold memory
    /// lower, lower `max_buffered_bytes` and `max_buffered_records`.
    pub fn memory_bound(&self) -> usize {
        let in_flight = self.max_buffered_bytes.min(
            self.max_connections
                .saturating_mul(self.collection_max_size),
        );
        self.max_buffered_bytes
            .saturating_add(self.max_buffered_records.saturating_mul(RECORD_OVERHEAD))
            .saturating_add(in_flight.saturating_mul(IN_FLIGHT_COPIES_TENTHS) / 10)
    }
    /// Ordering guarantee. Default [`Ordering::Unordered`], as the KPL.
    pub fn ordering(&self) -> Ordering {
        self.ordering
    }
    /// First retry delay; later retries back off exponentially with jitter. Default 100 ms (the
    /// KPL retries throttled records after about its `RecordMaxBufferedTime`).
    pub fn min_backoff(&self) -> Duration {
        self.min_backoff
    }
    /// Longest retry delay. Default 5 s.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }
    /// Shortest time between two ListShards refreshes of the shard map (refreshes happen when a
    /// record lands on a shard other than predicted, e.g. after a reshard). Default 1 s.
    pub fn shard_map_refresh_interval(&self) -> Duration {
        self.shard_map_refresh_interval
    }
}

/// Builds a [`ProducerConfig`]; [`ProducerConfigBuilder::build`] checks every value against its limits.
#[derive(Clone, Debug)]
pub struct ProducerConfigBuilder {
    config: ProducerConfig,
}

/// Calls `$callback!` with every setting, as `/// doc  name: Type;` items: the one list the
/// setters of [`ProducerConfigBuilder`] and of [`ProducerBuilder`](crate::ProducerBuilder) are
/// generated from.
macro_rules! with_settings {
    ($callback:ident) => {
        $callback! {
            /// See [`ProducerConfig::aggregation_enabled`].
            aggregation_enabled: bool;
            /// See [`ProducerConfig::aggregation_max_count`].
            aggregation_max_count: usize;
            /// See [`ProducerConfig::aggregation_max_size`].
            aggregation_max_size: usize;
            /// See [`ProducerConfig::collection_max_count`].
            collection_max_count: usize;
            /// See [`ProducerConfig::collection_max_size`].
            collection_max_size: usize;
            /// See [`ProducerConfig::record_max_buffered_time`].
            record_max_buffered_time: ::std::time::Duration;
            /// See [`ProducerConfig::record_ttl`].
            record_ttl: ::std::time::Duration;
            /// See [`ProducerConfig::rate_limit`].
            rate_limit: u32;
            /// See [`ProducerConfig::max_connections`].
            max_connections: usize;
            /// See [`ProducerConfig::request_timeout`].
            request_timeout: ::std::time::Duration;
            /// See [`ProducerConfig::fail_if_throttled`].
            fail_if_throttled: bool;
            /// See [`ProducerConfig::max_record_size`].
            max_record_size: usize;
            /// See [`ProducerConfig::max_buffered_records`].
            max_buffered_records: usize;
            /// See [`ProducerConfig::max_buffered_bytes`].
            max_buffered_bytes: usize;
            /// See [`ProducerConfig::ordering`].
            ordering: $crate::Ordering;
            /// See [`ProducerConfig::min_backoff`].
            min_backoff: ::std::time::Duration;
            /// See [`ProducerConfig::max_backoff`].
            max_backoff: ::std::time::Duration;
            /// See [`ProducerConfig::shard_map_refresh_interval`].
            shard_map_refresh_interval: ::std::time::Duration;
        }
    };
}
pub(crate) use with_settings;

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config.$name = value;
                self
            }
        )*
    };
}

impl ProducerConfigBuilder {
    with_settings!(setters);

    /// Checks every setting and returns the configuration, or a [`ConfigError`] naming the
    /// first bad setting, its value and its limit.
    pub fn build(self) -> Result<ProducerConfig, ConfigError> {
        let c = self.config;
        let bad = |setting: &'static str, value: String, limit: String| {
            Err(ConfigError {
                setting,
                value,
                limit,
            })
        };
        if c.aggregation_max_count == 0 {
            return bad("aggregation_max_count", "0".into(), "at least 1".into());
        }
        // An aggregate goes out under the partition key "a", which Kinesis counts in the
        // record's size.
        let largest_aggregate = if c.aggregation_enabled {
            c.max_record_size
                .saturating_sub(crate::aggregator::AGGREGATE_PARTITION_KEY.len())
        } else {
            c.max_record_size
        };
        if !(20..=largest_aggregate).contains(&c.aggregation_max_size) {
            return bad(
                "aggregation_max_size",
                c.aggregation_max_size.to_string(),
                format!(
                    "20..={largest_aggregate} (max_record_size minus 1 byte for the \
                     aggregate's partition key)"
                ),
            );
        }
        if !(1..=PUT_RECORDS_MAX_ENTRIES).contains(&c.collection_max_count) {
            return bad(
                "collection_max_count",
                c.collection_max_count.to_string(),
                format!("1..={PUT_RECORDS_MAX_ENTRIES}"),
            );
        }
        if !(c.max_record_size..=PUT_RECORDS_MAX_BYTES).contains(&c.collection_max_size) {
            return bad(
                "collection_max_size",
                c.collection_max_size.to_string(),
                format!(
                    "{}..={PUT_RECORDS_MAX_BYTES} (max_record_size..=5 MiB)",
                    c.max_record_size
                ),
            );
        }
        if c.max_record_size < 2 || c.max_record_size > 10 * 1024 * 1024 {
            return bad(
                "max_record_size",
                c.max_record_size.to_string(),
                "2..=10485760 (10 MiB, the largest record Kinesis accepts)".into(),
            );
        }
        if c.rate_limit == 0 {
            return bad("rate_limit", "0".into(), "at least 1 (percent)".into());
        }
        if c.max_connections == 0 {
            return bad("max_connections", "0".into(), "at least 1".into());
        }
        if c.max_buffered_records == 0 {
            return bad("max_buffered_records", "0".into(), "at least 1".into());
        }
        if c.max_buffered_bytes < c.max_record_size {
            return bad(
                "max_buffered_bytes",
                c.max_buffered_bytes.to_string(),
                format!("at least max_record_size ({})", c.max_record_size),
            );
        }
        if c.record_ttl.is_zero() {
            return bad("record_ttl", "0s".into(), "more than 0".into());
        }
        if c.request_timeout.is_zero() {
            return bad("request_timeout", "0s".into(), "more than 0".into());
        }
        if c.min_backoff.is_zero() || c.max_backoff < c.min_backoff {
            return bad(
                "min_backoff/max_backoff",
                format!("{:?}/{:?}", c.min_backoff, c.max_backoff),
                "0 < min_backoff <= max_backoff".into(),
            );
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_leave_room_for_their_partition_key() {
        // Found by fuzzing: an aggregate as large as the record limit plus its partition key
        // is a record Kinesis refuses.
        let full = ProducerConfig::builder()
            .max_record_size(4096)
            .aggregation_max_size(4096)
            .build();
        assert!(matches!(
            full,
            Err(ConfigError {
                setting: "aggregation_max_size",
                ..
            })
        ));
        let roomy = ProducerConfig::builder()
            .max_record_size(4096)
            .aggregation_max_size(4096 - 1)
            .build();
        assert!(roomy.is_ok());
        let unaggregated = ProducerConfig::builder()
            .aggregation_enabled(false)
            .max_record_size(4096)
            .aggregation_max_size(4096)
            .build();
        assert!(unaggregated.is_ok());
    }

    #[test]
    fn defaults_equal_the_kpl() {
        let c = ProducerConfig::default();
        assert!(c.aggregation_enabled());
        assert_eq!(c.aggregation_max_count(), 4_294_967_295);
        assert_eq!(c.aggregation_max_size(), 51_200);
        assert_eq!(c.collection_max_count(), 500);
        assert_eq!(c.collection_max_size(), 5_242_880);
        assert_eq!(c.record_max_buffered_time(), Duration::from_millis(100));
        assert_eq!(c.record_ttl(), Duration::from_millis(30_000));
        assert_eq!(c.rate_limit(), 150);
        assert_eq!(c.max_connections(), 24);
        assert_eq!(c.request_timeout(), Duration::from_millis(6_000));
        assert!(!c.fail_if_throttled());
        assert!(ProducerConfig::builder().build().is_ok());
    }

    #[test]
    fn bad_settings_name_the_value_and_the_limit() {
        let err = ProducerConfig::builder()
            .collection_max_count(501)
            .build()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("collection_max_count")
                && text.contains("501")
                && text.contains("1..=500"),
            "{text}"
        );
        let err = ProducerConfig::builder()
            .aggregation_max_size(2_000_000)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("aggregation_max_size"));
        assert!(ProducerConfig::builder().rate_limit(0).build().is_err());
        assert!(
            ProducerConfig::builder()
                .max_connections(0)
                .build()
                .is_err()
        );
        assert!(
            ProducerConfig::builder()
                .record_ttl(Duration::ZERO)
                .build()
                .is_err()
        );
    }
}
