//! Deaggregating the records of an AWS Lambda Kinesis event (feature `lambda`).
//!
//! Lambda hands a function the Kinesis records of one shard as they are stored: a record a KPL
//! producer aggregated arrives as one record holding many. [`deaggregate_event`] turns an
//! [`aws_lambda_events`] [`KinesisEvent`] into the user records, with the same rules as
//! [`deaggregate`](crate::deaggregate): a record that is not an aggregate passes through as it
//! is, an aggregate whose digest or protobuf does not check out passes through whole (its
//! [`pass_through_reason`](LambdaRecord::pass_through_reason) says why), and every user record
//! of an aggregate carries the aggregate's sequence number and its own sub-sequence number.
//!
//! ```
//! use aws_lambda_events::event::kinesis::KinesisEvent;
//! use kinesis_aggregation::lambda::deaggregate_event;
//!
//! fn handle(event: KinesisEvent) {
//!     for record in deaggregate_event(event) {
//!         println!(
//!             "{} {}/{}: {} bytes",
//!             record.partition_key(),
//!             record.sequence_number(),
//!             record.sub_sequence_number(),
//!             record.data().len()
//!         );
//!     }
//! }
//! # handle(KinesisEvent::default());
//! ```
//!
//! Lambda does not say which hash-key range the shard covers, so no range check is made (the
//! KCL drops an aggregate holding a record outside its shard's range; `kinesis-kpl` sends such
//! an aggregate again, so a function may see those records twice after a reshard). For partial
//! batch responses (`ReportBatchItemFailures`), report
//! [`item_identifier`](LambdaRecord::item_identifier): Lambda retries from that Kinesis record,
//! so every user record of the same aggregate is delivered again.

use std::time::SystemTime;

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use bytes::Bytes;

use crate::deaggregate::{Deaggregated, PassThroughReason, deaggregate};

/// One user record of a Lambda Kinesis event: a Kinesis record as it was stored, or one user
/// record of an aggregate.
#[derive(Clone, PartialEq, Eq)]
pub struct LambdaRecord {
    partition_key: String,
    explicit_hash_key: Option<String>,
    data: Bytes,
    sequence_number: String,
    sub_sequence_number: Option<u64>,
    approximate_arrival_timestamp: SystemTime,
    event_id: Option<String>,
    event_source_arn: Option<String>,
    pass_through_reason: Option<PassThroughReason>,
}

impl LambdaRecord {
    /// The partition key: the user record's own key for a record of an aggregate.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The user record's explicit hash key, if its producer gave one (only records of an
    /// aggregate carry it: Lambda does not pass on a plain record's explicit hash key).
    pub fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key.as_deref()
    }

    /// The payload.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The payload, without copying it.
    pub fn into_data(self) -> Bytes {
        self.data
    }

    /// The sequence number of the Kinesis record that holds this one.
    pub fn sequence_number(&self) -> &str {
        &self.sequence_number
    }

    /// The position of this user record in its aggregate (0 for a record that is not part of
    /// one, as the KCL counts it).
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number.unwrap_or(0)
    }

    /// Whether this user record came out of an aggregate.
    pub fn is_aggregated(&self) -> bool {
        self.sub_sequence_number.is_some()
    }

    /// When Kinesis stored the Kinesis record that holds this one (second precision, as Lambda
    /// delivers it).
    pub fn approximate_arrival_timestamp(&self) -> SystemTime {
        self.approximate_arrival_timestamp
    }

    /// The event id Lambda gave the Kinesis record (`shardId-…:<sequence number>`).
    pub fn event_id(&self) -> Option<&str> {
        self.event_id.as_deref()
    }

    /// The ARN of the stream the record came from.
    pub fn event_source_arn(&self) -> Option<&str> {
        self.event_source_arn.as_deref()
    }

    /// What to report as a batch item failure for this record: the sequence number of the
    /// Kinesis record holding it.
    pub fn item_identifier(&self) -> &str {
        &self.sequence_number
    }

    /// Why a record that starts with the aggregation magic was delivered whole instead of
    /// deaggregated (a broken digest, a protobuf that does not parse, …); `None` for a
    /// record that is not an aggregate or was deaggregated.
    pub fn pass_through_reason(&self) -> Option<PassThroughReason> {
        self.pass_through_reason
    }
}

impl std::fmt::Debug for LambdaRecord {
    // The payload is left out: records are logged, payloads must not be.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaRecord")
            .field("partition_key", &self.partition_key)
            .field("explicit_hash_key", &self.explicit_hash_key)
            .field("data_len", &self.data.len())
            .field("sequence_number", &self.sequence_number)
            .field("sub_sequence_number", &self.sub_sequence_number)
            .field("pass_through_reason", &self.pass_through_reason)
            .finish_non_exhaustive()
    }
}

/// The user records of every Kinesis record of `event`, in order (see the [module](self)).
pub fn deaggregate_event(event: KinesisEvent) -> Vec<LambdaRecord> {
    let mut out = Vec::with_capacity(event.records.len());
    for record in event.records {
        deaggregate_record(record, &mut out);
    }
    out
}

/// Appends the user records of one Kinesis record of an event to `out`.
pub fn deaggregate_record(record: KinesisEventRecord, out: &mut Vec<LambdaRecord>) {
    let KinesisEventRecord {
        event_id,
        event_source_arn,
        mut kinesis,
        ..
    } = record;
    let data = Bytes::from(std::mem::take(&mut kinesis.data.0));
    let arrival = SystemTime::from(*kinesis.approximate_arrival_timestamp);
    match deaggregate(data) {
        Deaggregated::PassThrough { data, reason } => {
            out.push(LambdaRecord {
                partition_key: kinesis.partition_key,
                explicit_hash_key: None,
                data,
                sequence_number: kinesis.sequence_number,
                sub_sequence_number: None,
                approximate_arrival_timestamp: arrival,
                event_id,
                event_source_arn,
                pass_through_reason: Some(reason).filter(|r| r.is_malformed_aggregate()),
            });
        }
        Deaggregated::Aggregated(records) => {
            out.extend(records.into_iter().map(|sub| LambdaRecord {
                partition_key: sub.partition_key().to_owned(),
                explicit_hash_key: sub.explicit_hash_key().map(str::to_owned),
                sub_sequence_number: Some(sub.sub_sequence_number()),
                data: sub.into_data(),
                sequence_number: kinesis.sequence_number.clone(),
                approximate_arrival_timestamp: arrival,
                event_id: event_id.clone(),
                event_source_arn: event_source_arn.clone(),
                pass_through_reason: None,
            }));
        }
    }
}
