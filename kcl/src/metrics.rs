//! Every metric this crate reports through the [`metrics`] facade: this is the crate's one
//! list (the producer's is `kinesis_kpl::metrics`), with each name as a constant.
//!
//! No exporter is installed by the crate: install one (for example
//! `metrics-exporter-prometheus`) in your application to collect them.
//!
//! | name | kind | unit | labels | meaning |
//! |---|---|---|---|---|
//! | `kcl_leases_held` | gauge | leases | — | leases this worker holds |
//! | `kcl_lease_target` | gauge | leases | — | the per-worker target of the last assignment |
//! | `kcl_lease_spillover` | gauge | leases | — | how far `max_leases_for_worker` lowered the target |
//! | `kcl_lease_taker_rounds_total` | counter | rounds | — | taker rounds completed |
//! | `kcl_lease_scans_total` | counter | scans | — | successful lease table scans |
//! | `kcl_lease_table_items_skipped_total` | counter | items | `reason` (`not_a_lease`, `unreadable`) | lease table items a scan skipped: another kind of item (`entityType` not `LEASE`), or not parseable as a lease; never touched |
//! | `kcl_leases_not_consumable` | gauge | leases | — | leases of the last scan that belong to streams this worker does not process (never taken by it) |
//! | `kcl_lease_renewals_total` | counter | writes | — | renewal attempts |
//! | `kcl_lease_takes_total` | counter | leases | — | leases taken (unowned, expired, reclaimed, handed over) |
//! | `kcl_lease_steals_total` | counter | leases | — | graceful hand-offs started towards this worker |
//! | `kcl_lease_take_conflicts_total` | counter | writes | — | takes and steals that lost a race |
//! | `kcl_duplicate_worker_id_total` | counter | detections | — | another live process renews leases under this worker id; this worker stopped taking (it logs an error naming the id) |
//! | `kcl_leases_lost_total` | counter | leases | — | leases lost (taken away or not renewed in time) |
//! | `kcl_checkpoints_total` | counter | writes | — | checkpoints written |
//! | `kcl_checkpoints_prepared_total` | counter | writes | — | two-phase checkpoints prepared |
//! | `kcl_records_processed_total` | counter | records | `stream` | user records processed successfully |
//! | `kcl_bytes_processed_total` | counter | bytes | `stream` | payload bytes processed successfully |
//! | `kcl_process_records_seconds` | histogram | seconds | `stream` | time in `process_records` per batch |
//! | `kcl_processor_restarts_total` | counter | restarts | — | shard consumers restarted after a processor or retrieval failure |
//! | `kcl_processor_calls_abandoned_total` | counter | calls | `call` (`initialize`, `process_records`, `shard_ended`, `lease_lost`, `shutdown_requested`) | processor calls still running when the stop timeout ran out after processing had to stop (lost lease, hand-off, shutdown), dropped |
//! | `kcl_shard_end_not_checkpointed_total` | counter | calls | — | `shard_ended` calls that did not checkpoint `SHARD_END` |
//! | `kcl_shard_syncs_total` | counter | syncs | `stream` | shard syncs (ListShards + lease creation) |
//! | `kcl_get_records_duration_seconds` | histogram | seconds | `stream`, `shard_id`, `outcome` (`ok`, `throttled`, `expired`, `error`) | latency of each `GetRecords` call |
//! | `kcl_get_records_throttled_total` | counter | calls | `stream`, `shard_id` | `GetRecords` calls refused with `ProvisionedThroughputExceededException` |
//! | `kcl_get_records_retries_total` | counter | calls | `stream`, `shard_id`, `code` | transient `GetRecords`/`GetShardIterator` failures retried (5xx, timeouts, KMS throttling) |
//! | `kcl_expired_iterators_total` | counter | iterators | `stream`, `shard_id` | `ExpiredIteratorException`s recovered from |
//! | `kcl_records_fetched_total` | counter | Kinesis records | `stream`, `shard_id` | Kinesis records returned by `GetRecords` |
//! | `kcl_bytes_fetched_total` | counter | bytes | `stream`, `shard_id` | their data bytes |
//! | `kcl_user_records_delivered_total` | counter | user records | `stream`, `shard_id` | user records handed to the reader (after deaggregation and filtering) |
//! | `kcl_millis_behind_latest` | gauge | milliseconds | `stream`, `shard_id` | `MillisBehindLatest` of the last response |
//! | `kcl_out_of_range_records_total` | counter | user records | `stream`, `shard_id`, `action` (`delivered`, `dropped`) | aggregated user records whose hash key is outside the shard's range |
//! | `kcl_aggregates_passed_through_total` | counter | Kinesis records | `stream`, `shard_id`, `reason` ([`PassThroughReason::as_str`](kinesis_aggregation::PassThroughReason::as_str)) | records with the aggregation magic that could not be deaggregated, delivered whole |
//! | `kcl_prefetch_batches` | gauge | batches | `stream`, `shard_id` | batches fetched and not yet dropped by the consumer |
//! | `kcl_prefetch_records` | gauge | user records | `stream`, `shard_id` | their user records |
//! | `kcl_prefetch_bytes` | gauge | bytes | `stream`, `shard_id` | their data bytes |
//!
//! Enhanced fan-out ([`Retrieval::FanOut`](crate::Retrieval::FanOut)) adds, labelled `stream`
//! and `shard_id` (it also reports `kcl_millis_behind_latest`, `kcl_records_fetched_total`,
//! `kcl_bytes_fetched_total`, `kcl_user_records_delivered_total` and the prefetch gauges above,
//! from each event):
//!
//! | name | kind | unit | labels | meaning |
//! |---|---|---|---|---|
//! | `kcl_fanout_subscriptions_total` | counter | calls | `stream`, `shard_id` | successful `SubscribeToShard` calls (first ones, renewals and retries) |
//! | `kcl_fanout_subscription_renewals_total` | counter | subscriptions | `stream`, `shard_id` | subscriptions the server ended normally (after ~5 minutes), renewed from the last `ContinuationSequenceNumber` |
//! | `kcl_fanout_errors_total` | counter | errors | `stream`, `shard_id`, `kind` (`resource_in_use`, `limit_exceeded`, `throttled`, `internal_failure`, `kms_throttling`, `timeout`, `connection`, `idle`, `not_found`, `fatal`) | failed subscriptions and broken event streams |
//! | `kcl_fanout_event_latency_seconds` | histogram | seconds | `stream`, `shard_id` | from the `ApproximateArrivalTimestamp` of an event's newest record to the event's hand-over to the reader (put → delivery, on the server's clock) |
//! | `kcl_fanout_records_skipped_total` | counter | Kinesis records | `stream`, `shard_id` | records dropped as repeats (at or before the last one delivered, after a resubscription) or before the requested position (on servers that ignore it) |

pub use crate::retrieval::metrics::{
    AGGREGATES_PASSED_THROUGH, BYTES_FETCHED, EXPIRED_ITERATORS, GET_RECORDS_DURATION,
    GET_RECORDS_RETRIES, GET_RECORDS_THROTTLED, MILLIS_BEHIND_LATEST, OUT_OF_RANGE_RECORDS,
    PREFETCH_BATCHES, PREFETCH_BYTES, PREFETCH_RECORDS, RECORDS_FETCHED, USER_RECORDS_DELIVERED,
};

/// Gauge: leases this worker holds.
pub const LEASES_HELD: &str = "kcl_leases_held";
/// Gauge: the per-worker target of the last assignment.
pub const LEASE_TARGET: &str = "kcl_lease_target";
/// Gauge: how far `max_leases_for_worker` lowered the target.
pub const LEASE_SPILLOVER: &str = "kcl_lease_spillover";
/// Counter: taker rounds completed.
pub const LEASE_TAKER_ROUNDS: &str = "kcl_lease_taker_rounds_total";
/// Counter: successful lease table scans.
pub const LEASE_SCANS: &str = "kcl_lease_scans_total";
/// Counter: lease table items a scan skipped (label `reason`: `not_a_lease`, `unreadable`).
pub const LEASE_TABLE_ITEMS_SKIPPED: &str = "kcl_lease_table_items_skipped_total";
/// Gauge: leases of the last scan of streams this worker does not process.
pub const LEASES_NOT_CONSUMABLE: &str = "kcl_leases_not_consumable";
/// Counter: renewal attempts.
pub const LEASE_RENEWALS: &str = "kcl_lease_renewals_total";
/// Counter: leases taken.
pub const LEASE_TAKES: &str = "kcl_lease_takes_total";
/// Counter: graceful hand-offs started towards this worker.
pub const LEASE_STEALS: &str = "kcl_lease_steals_total";
/// Counter: takes and steals that lost a race.
pub const LEASE_TAKE_CONFLICTS: &str = "kcl_lease_take_conflicts_total";
/// Counter: another live process was found using this worker id.
pub const DUPLICATE_WORKER_ID: &str = "kcl_duplicate_worker_id_total";
/// Counter: leases lost.
pub const LEASES_LOST: &str = "kcl_leases_lost_total";
/// Counter: checkpoints written.
pub const CHECKPOINTS: &str = "kcl_checkpoints_total";
/// Counter: two-phase checkpoints prepared.
pub const CHECKPOINTS_PREPARED: &str = "kcl_checkpoints_prepared_total";
/// Counter: user records processed successfully.
pub const RECORDS_PROCESSED: &str = "kcl_records_processed_total";
/// Counter: payload bytes processed successfully.
pub const BYTES_PROCESSED: &str = "kcl_bytes_processed_total";
/// Histogram: seconds in `process_records` per batch.
pub const PROCESS_TIME: &str = "kcl_process_records_seconds";
/// Counter: shard consumers restarted after a failure.
pub const PROCESSOR_RESTARTS: &str = "kcl_processor_restarts_total";
/// Counter: processor calls abandoned at the stop timeout (label `call`).
pub const PROCESSOR_CALLS_ABANDONED: &str = "kcl_processor_calls_abandoned_total";
/// Counter: `shard_ended` calls that did not checkpoint `SHARD_END`.
pub const SHARD_END_NOT_CHECKPOINTED: &str = "kcl_shard_end_not_checkpointed_total";
/// Counter: shard syncs.
pub const SHARD_SYNCS: &str = "kcl_shard_syncs_total";
/// Counter: successful `SubscribeToShard` calls.
pub const FANOUT_SUBSCRIPTIONS: &str = "kcl_fanout_subscriptions_total";
/// Counter: subscriptions ended by the server and renewed.
pub const FANOUT_RENEWALS: &str = "kcl_fanout_subscription_renewals_total";
/// Counter: failed subscriptions and broken event streams, by `kind`.
pub const FANOUT_ERRORS: &str = "kcl_fanout_errors_total";
/// Histogram: seconds from a record's arrival in Kinesis to its event's hand-over to the reader.
pub const FANOUT_EVENT_LATENCY: &str = "kcl_fanout_event_latency_seconds";
/// Counter: records dropped as repeats or as before the requested position.
pub const FANOUT_RECORDS_SKIPPED: &str = "kcl_fanout_records_skipped_total";
