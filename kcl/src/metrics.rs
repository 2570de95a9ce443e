//! Every metric this crate reports through the [`metrics`] facade: this is the crate's one
//! list (the producer's is `kinesis_kpl::metrics`), with each name as a constant.
//!
//! No exporter is installed by the crate: install one (for example
//! `metrics-exporter-prometheus`) in your application to collect them.
//!
//! | name | kind | unit | labels | meaning |
//! |---|---|---|---|---|
//! | `kinesis_kcl_leases_held` | gauge | leases | — | leases this worker holds |
//! | `kinesis_kcl_lease_target` | gauge | leases | — | the per-worker target of the last assignment |
//! | `kinesis_kcl_lease_spillover` | gauge | leases | — | how far `max_leases_for_worker` lowered the target |
//! | `kinesis_kcl_lease_taker_rounds_total` | counter | rounds | — | taker rounds completed |
//! | `kinesis_kcl_lease_scans_total` | counter | scans | — | successful lease table scans |
//! | `kinesis_kcl_lease_table_items_skipped_total` | counter | items | `reason` (`not_a_lease`, `unreadable`) | lease table items a scan skipped: another kind of item (`entityType` not `LEASE`), or not parseable as a lease; never touched |
//! | `kinesis_kcl_leases_not_consumable` | gauge | leases | — | leases of the last scan that belong to streams this worker does not process (never taken by it) |
//! | `kinesis_kcl_lease_renewals_total` | counter | writes | — | renewal attempts |
//! | `kinesis_kcl_lease_takes_total` | counter | leases | — | leases taken (unowned, expired, reclaimed, handed over) |
//! | `kinesis_kcl_lease_steals_total` | counter | leases | — | graceful hand-offs started towards this worker |
//! | `kinesis_kcl_lease_take_conflicts_total` | counter | writes | — | takes and steals that lost a race |
//! | `kinesis_kcl_duplicate_worker_id_total` | counter | detections | — | another live process renews leases under this worker id; this worker stopped taking (it logs an error naming the id) |
//! | `kinesis_kcl_leases_lost_total` | counter | leases | — | leases lost (taken away or not renewed in time) |
//! | `kinesis_kcl_checkpoints_total` | counter | writes | — | checkpoints written |
//! | `kinesis_kcl_checkpoints_prepared_total` | counter | writes | — | two-phase checkpoints prepared |
//! | `kinesis_kcl_records_processed_total` | counter | records | `stream` | user records processed successfully |
//! | `kinesis_kcl_bytes_processed_total` | counter | bytes | `stream` | payload bytes processed successfully |
//! | `kinesis_kcl_process_records_seconds` | histogram | seconds | `stream` | time in `process_records` per batch |
//! | `kinesis_kcl_processing_retries_total` | counter | calls | `stream` | failed `process_records` calls retried in place by the [`FailurePolicy`](crate::FailurePolicy) |
//! | `kinesis_kcl_partial_batch_failures_total` | counter | calls | `stream` | `process_records` calls that reported a failed record ([`RecordFailed`](crate::RecordFailed)) |
//! | `kinesis_kcl_process_records_timeouts_total` | counter | calls | `stream` | `process_records` calls dropped at the failure policy's `batch_timeout` (counted as failed) |
//! | `kinesis_kcl_batch_bisections_total` | counter | splits | `stream` | failing batches split in halves (`bisect_on_error`) |
//! | `kinesis_kcl_records_given_up_total` | counter | user records | `stream`, `reason` (`attempts`, `record_age`) | records the failure policy gave up on, accepted by its destination |
//! | `kinesis_kcl_failure_destination_errors_total` | counter | calls | `stream` | failure destination calls that did not accept the records (retried) |
//! | `kinesis_kcl_processor_restarts_total` | counter | restarts | — | shard consumers restarted after a panic or a retrieval failure |
//! | `kinesis_kcl_processor_calls_abandoned_total` | counter | calls | `call` (`initialize`, `process_records`, `shard_ended`, `lease_lost`, `shutdown_requested`) | processor calls still running when the stop timeout ran out after processing had to stop (lost lease, hand-off, shutdown), dropped |
//! | `kinesis_kcl_shard_end_not_checkpointed_total` | counter | calls | — | `shard_ended` calls that did not checkpoint `SHARD_END` |
//! | `kinesis_kcl_shard_syncs_total` | counter | syncs | `stream` | shard syncs (ListShards + lease creation) |
//! | `kinesis_kcl_get_records_duration_seconds` | histogram | seconds | `stream`, `shard_id`, `outcome` (`ok`, `throttled`, `expired`, `error`) | latency of each `GetRecords` call |
//! | `kinesis_kcl_get_records_throttled_total` | counter | calls | `stream`, `shard_id` | `GetRecords` calls refused with `ProvisionedThroughputExceededException` |
//! | `kinesis_kcl_get_records_retries_total` | counter | calls | `stream`, `shard_id`, `code` | transient `GetRecords`/`GetShardIterator` failures retried (5xx, timeouts, KMS throttling) |
//! | `kinesis_kcl_expired_iterators_total` | counter | iterators | `stream`, `shard_id` | `ExpiredIteratorException`s recovered from |
//! | `kinesis_kcl_records_fetched_total` | counter | Kinesis records | `stream`, `shard_id` | Kinesis records returned by `GetRecords` |
//! | `kinesis_kcl_bytes_fetched_total` | counter | bytes | `stream`, `shard_id` | their data bytes |
//! | `kinesis_kcl_user_records_delivered_total` | counter | user records | `stream`, `shard_id` | user records handed to the reader (after deaggregation and filtering) |
//! | `kinesis_kcl_millis_behind_latest` | gauge | milliseconds | `stream`, `shard_id` | `MillisBehindLatest` of the last response |
//! | `kinesis_kcl_out_of_range_records_total` | counter | user records | `stream`, `shard_id`, `action` (`delivered`, `dropped`) | aggregated user records whose hash key is outside the shard's range |
//! | `kinesis_kcl_aggregates_passed_through_total` | counter | Kinesis records | `stream`, `shard_id`, `reason` ([`PassThroughReason::as_str`](kinesis_aggregation::PassThroughReason::as_str)) | records with the aggregation magic that could not be deaggregated, delivered whole |
//! | `kinesis_kcl_prefetch_batches` | gauge | batches | `stream`, `shard_id` | batches fetched and not yet dropped by the consumer |
//! | `kinesis_kcl_prefetch_records` | gauge | user records | `stream`, `shard_id` | their user records |
//! | `kinesis_kcl_prefetch_bytes` | gauge | bytes | `stream`, `shard_id` | their data bytes |
//!
//! Enhanced fan-out ([`Retrieval::FanOut`](crate::Retrieval::FanOut)) adds, labelled `stream`
//! and `shard_id` (it also reports `kinesis_kcl_millis_behind_latest`,
//! `kinesis_kcl_records_fetched_total`, `kinesis_kcl_bytes_fetched_total`,
//! `kinesis_kcl_user_records_delivered_total` and the prefetch gauges above, from each event):
//!
//! | name | kind | unit | labels | meaning |
//! |---|---|---|---|---|
//! | `kinesis_kcl_fanout_subscriptions_total` | counter | calls | `stream`, `shard_id` | successful `SubscribeToShard` calls (first ones, renewals and retries) |
//! | `kinesis_kcl_fanout_subscription_renewals_total` | counter | subscriptions | `stream`, `shard_id` | subscriptions the server ended normally (after ~5 minutes), renewed from the last `ContinuationSequenceNumber` |
//! | `kinesis_kcl_fanout_errors_total` | counter | errors | `stream`, `shard_id`, `kind` (`resource_in_use`, `limit_exceeded`, `throttled`, `internal_failure`, `kms_throttling`, `timeout`, `connection`, `idle`, `not_found`, `fatal`) | failed subscriptions and broken event streams |
//! | `kinesis_kcl_fanout_event_latency_seconds` | histogram | seconds | `stream`, `shard_id` | from the `ApproximateArrivalTimestamp` of an event's newest record to the event's hand-over to the reader (put → delivery, on the server's clock) |
//! | `kinesis_kcl_fanout_records_skipped_total` | counter | Kinesis records | `stream`, `shard_id` | records dropped as repeats (at or before the last one delivered, after a resubscription) or before the requested position (on servers that ignore it) |

/// Gauge: leases this worker holds.
pub const LEASES_HELD: &str = "kinesis_kcl_leases_held";
/// Gauge: the per-worker target of the last assignment.
pub const LEASE_TARGET: &str = "kinesis_kcl_lease_target";
/// Gauge: how far `max_leases_for_worker` lowered the target.
pub const LEASE_SPILLOVER: &str = "kinesis_kcl_lease_spillover";
/// Counter: taker rounds completed.
pub const LEASE_TAKER_ROUNDS: &str = "kinesis_kcl_lease_taker_rounds_total";
/// Counter: successful lease table scans.
pub const LEASE_SCANS: &str = "kinesis_kcl_lease_scans_total";
/// Counter: lease table items a scan skipped (label `reason`: `not_a_lease`, `unreadable`).
pub const LEASE_TABLE_ITEMS_SKIPPED: &str = "kinesis_kcl_lease_table_items_skipped_total";
/// Gauge: leases of the last scan of streams this worker does not process.
pub const LEASES_NOT_CONSUMABLE: &str = "kinesis_kcl_leases_not_consumable";
/// Counter: renewal attempts.
pub const LEASE_RENEWALS: &str = "kinesis_kcl_lease_renewals_total";
/// Counter: leases taken.
pub const LEASE_TAKES: &str = "kinesis_kcl_lease_takes_total";
/// Counter: graceful hand-offs started towards this worker.
pub const LEASE_STEALS: &str = "kinesis_kcl_lease_steals_total";
/// Counter: takes and steals that lost a race.
pub const LEASE_TAKE_CONFLICTS: &str = "kinesis_kcl_lease_take_conflicts_total";
/// Counter: another live process was found using this worker id.
pub const DUPLICATE_WORKER_ID: &str = "kinesis_kcl_duplicate_worker_id_total";
/// Counter: leases lost.
pub const LEASES_LOST: &str = "kinesis_kcl_leases_lost_total";
/// Counter: checkpoints written.
pub const CHECKPOINTS: &str = "kinesis_kcl_checkpoints_total";
/// Counter: two-phase checkpoints prepared.
pub const CHECKPOINTS_PREPARED: &str = "kinesis_kcl_checkpoints_prepared_total";
/// Counter: user records processed successfully.
pub const RECORDS_PROCESSED: &str = "kinesis_kcl_records_processed_total";
/// Counter: payload bytes processed successfully.
pub const BYTES_PROCESSED: &str = "kinesis_kcl_bytes_processed_total";
/// Histogram: seconds in `process_records` per batch.
pub const PROCESS_TIME: &str = "kinesis_kcl_process_records_seconds";
/// Counter: failed `process_records` calls retried in place (label `stream`).
pub const PROCESSING_RETRIES: &str = "kinesis_kcl_processing_retries_total";
/// Counter: `process_records` calls that reported a failed record (label `stream`).
pub const PARTIAL_BATCH_FAILURES: &str = "kinesis_kcl_partial_batch_failures_total";
/// Counter: `process_records` calls dropped at the failure policy's batch timeout (label
/// `stream`).
pub const PROCESS_RECORDS_TIMEOUTS: &str = "kinesis_kcl_process_records_timeouts_total";
/// Counter: failing batches split in halves (label `stream`).
pub const BATCH_BISECTIONS: &str = "kinesis_kcl_batch_bisections_total";
/// Counter: records given up on and accepted by the failure destination (labels `stream`,
/// `reason`).
pub const RECORDS_GIVEN_UP: &str = "kinesis_kcl_records_given_up_total";
/// Counter: failure destination calls that did not accept the records (label `stream`).
pub const FAILURE_DESTINATION_ERRORS: &str = "kinesis_kcl_failure_destination_errors_total";
/// Counter: shard consumers restarted after a failure.
pub const PROCESSOR_RESTARTS: &str = "kinesis_kcl_processor_restarts_total";
/// Counter: processor calls abandoned at the stop timeout (label `call`).
pub const PROCESSOR_CALLS_ABANDONED: &str = "kinesis_kcl_processor_calls_abandoned_total";
/// Counter: `shard_ended` calls that did not checkpoint `SHARD_END`.
pub const SHARD_END_NOT_CHECKPOINTED: &str = "kinesis_kcl_shard_end_not_checkpointed_total";
/// Counter: shard syncs.
pub const SHARD_SYNCS: &str = "kinesis_kcl_shard_syncs_total";
/// Histogram: latency of each `GetRecords` call, seconds (label `outcome`).
pub const GET_RECORDS_DURATION: &str = "kinesis_kcl_get_records_duration_seconds";
/// Counter: `GetRecords` calls throttled.
pub const GET_RECORDS_THROTTLED: &str = "kinesis_kcl_get_records_throttled_total";
/// Counter: transient `GetRecords`/`GetShardIterator` failures retried (label `code`).
pub const GET_RECORDS_RETRIES: &str = "kinesis_kcl_get_records_retries_total";
/// Counter: expired iterators recovered from.
pub const EXPIRED_ITERATORS: &str = "kinesis_kcl_expired_iterators_total";
/// Counter: Kinesis records fetched.
pub const RECORDS_FETCHED: &str = "kinesis_kcl_records_fetched_total";
/// Counter: data bytes fetched.
pub const BYTES_FETCHED: &str = "kinesis_kcl_bytes_fetched_total";
/// Counter: user records delivered to the reader.
pub const USER_RECORDS_DELIVERED: &str = "kinesis_kcl_user_records_delivered_total";
/// Gauge: `MillisBehindLatest` of the last response.
pub const MILLIS_BEHIND_LATEST: &str = "kinesis_kcl_millis_behind_latest";
/// Counter: aggregated user records outside the shard's hash key range (label `action`).
pub const OUT_OF_RANGE_RECORDS: &str = "kinesis_kcl_out_of_range_records_total";
/// Counter: records with the aggregation magic delivered whole (label `reason`).
pub const AGGREGATES_PASSED_THROUGH: &str = "kinesis_kcl_aggregates_passed_through_total";
/// Gauge: batches held by the prefetch and the consumer.
pub const PREFETCH_BATCHES: &str = "kinesis_kcl_prefetch_batches";
/// Gauge: user records held by the prefetch and the consumer.
pub const PREFETCH_RECORDS: &str = "kinesis_kcl_prefetch_records";
/// Gauge: data bytes held by the prefetch and the consumer.
pub const PREFETCH_BYTES: &str = "kinesis_kcl_prefetch_bytes";
/// Counter: successful `SubscribeToShard` calls.
pub const FANOUT_SUBSCRIPTIONS: &str = "kinesis_kcl_fanout_subscriptions_total";
/// Counter: subscriptions ended by the server and renewed.
pub const FANOUT_RENEWALS: &str = "kinesis_kcl_fanout_subscription_renewals_total";
/// Counter: failed subscriptions and broken event streams, by `kind`.
pub const FANOUT_ERRORS: &str = "kinesis_kcl_fanout_errors_total";
/// Histogram: seconds from a record's arrival in Kinesis to its event's hand-over to the reader.
pub const FANOUT_EVENT_LATENCY: &str = "kinesis_kcl_fanout_event_latency_seconds";
/// Counter: records dropped as repeats or as before the requested position.
pub const FANOUT_RECORDS_SKIPPED: &str = "kinesis_kcl_fanout_records_skipped_total";

#[cfg(test)]
mod tests {
    /// The names of the tables above and of the constants, from this file's source.
    fn names() -> (Vec<String>, Vec<String>) {
        let source = include_str!("metrics.rs");
        let table = source
            .lines()
            .filter_map(|l| l.strip_prefix("//! | `"))
            .filter_map(|l| l.split('`').next())
            .filter(|name| *name != "name")
            .map(str::to_owned)
            .collect();
        let constants = source
            .lines()
            .filter(|l| l.starts_with("pub const "))
            .filter_map(|l| l.split('"').nth(1))
            .map(str::to_owned)
            .collect();
        (table, constants)
    }

    #[test]
    fn every_name_is_a_documented_constant_with_the_crate_prefix() {
        let (mut table, mut constants) = names();
        assert_eq!(constants.len(), 46);
        table.sort();
        constants.sort();
        assert_eq!(table, constants, "the doc tables and the constants differ");
        for name in &constants {
            assert!(name.starts_with("kinesis_kcl_"), "{name}");
        }
        constants.dedup();
        assert_eq!(constants.len(), 46, "a name is used twice");
    }
}
