//! A dead-letter stream: records the failure policy gave up on, put to another Kinesis stream
//! through the `kinesis-kpl` producer, each wrapped in a [`DeadLetter`] envelope that says
//! where it came from and why it failed (feature `dead-letter-stream`).
//!
//! # The envelope (version 1)
//!
//! One Kinesis user record per failed record, with the failed record's partition key (so the
//! dead letters of one key stay in order) and this data:
//!
//! ```text
//! kinesis-dead-letter/1\n
//! {"stream":…,"shardId":…,"sequenceNumber":…,"subSequenceNumber":…,"partitionKey":…,
//!  "explicitHashKey":…|null,"approximateArrivalMillis":…|null,"reason":"attempts"|"record_age",
//!  "attempts":…,"error":…,"givenUpAtMillis":…}\n
//! <the record's data, unchanged>
//! ```
//!
//! The header is one line of JSON (UTF-8, no newline inside); times are milliseconds since
//! the Unix epoch. The data follows as is, so the envelope costs the header only (a few
//! hundred bytes): a failed record within that much of the stream's 1 MiB record limit cannot
//! be wrapped, and the destination refuses it (the shard then holds, as for any destination
//! failure). [`DeadLetter::decode`] reads an envelope back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{FailedRecords, FailureDestination};
use crate::processor::ProcessorError;
use crate::record::Record;

/// The first line of every envelope.
pub const DEAD_LETTER_MAGIC: &str = "kinesis-dead-letter/1";

/// One failed record as it travels in a dead-letter stream: its origin, why it failed, and its
/// data.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The stream it was read from (as the worker was configured).
    pub stream: String,
    /// The shard it was read from.
    pub shard_id: String,
    /// Its sequence number.
    pub sequence_number: String,
    /// Its sub-sequence number (its place in an aggregate; 0 if it was not aggregated).
    pub sub_sequence_number: u64,
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key, if it was put with one.
    pub explicit_hash_key: Option<String>,
    /// When Kinesis received it, if known.
    pub approximate_arrival: Option<SystemTime>,
    /// Why the policy gave up: `attempts` or `record_age`.
    pub reason: String,
    /// Failed `process_records` calls on it.
    pub attempts: u32,
    /// The last error, with its sources.
    pub error: String,
    /// When the policy gave up.
    pub given_up_at: SystemTime,
    /// The record's data.
    pub data: Bytes,
}

/// An envelope that could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The data does not start with [`DEAD_LETTER_MAGIC`] and a newline.
    #[error("not a dead-letter envelope (it does not start with `{DEAD_LETTER_MAGIC}`)")]
    NotAnEnvelope,
    /// The header line is missing or is not the JSON object described in the module docs.
    #[error("bad dead-letter header: {0}")]
    BadHeader(String),
}

impl DeadLetter {
    /// The envelope of `record`, one of `failed`, given up on at `now`.
    pub fn new(failed: &FailedRecords, record: &Record, now: SystemTime) -> Self {
        DeadLetter {
            stream: failed.stream.clone(),
            shard_id: failed.shard_id.clone(),
            sequence_number: record.sequence_number().as_str().to_owned(),
            sub_sequence_number: record.sub_sequence_number(),
            partition_key: record.partition_key().to_owned(),
            explicit_hash_key: record.explicit_hash_key().map(str::to_owned),
            approximate_arrival: record.approximate_arrival_timestamp(),
            reason: failed.reason.as_str().to_owned(),
            attempts: failed.attempts,
            error: failed.error.clone(),
            given_up_at: now,
            data: record.data().clone(),
        }
    }

    /// The envelope's bytes (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let header = json!({
            "stream": self.stream,
            "shardId": self.shard_id,
            "sequenceNumber": self.sequence_number,
            "subSequenceNumber": self.sub_sequence_number,
            "partitionKey": self.partition_key,
            "explicitHashKey": self.explicit_hash_key,
            "approximateArrivalMillis": self.approximate_arrival.map(millis),
            "reason": self.reason,
            "attempts": self.attempts,
            "error": self.error,
            "givenUpAtMillis": millis(self.given_up_at),
        })
        .to_string();
        let mut out =
            Vec::with_capacity(DEAD_LETTER_MAGIC.len() + header.len() + 2 + self.data.len());
        out.extend_from_slice(DEAD_LETTER_MAGIC.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(header.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&self.data);
        out
    }

    /// Reads an envelope.
    ///
    /// # Errors
    ///
    /// [`DeadLetterError`] if `envelope` is not one.
    pub fn decode(envelope: &[u8]) -> Result<Self, DeadLetterError> {
        let rest = envelope
            .strip_prefix(DEAD_LETTER_MAGIC.as_bytes())
            .and_then(|r| r.strip_prefix(b"\n"))
            .ok_or(DeadLetterError::NotAnEnvelope)?;
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| DeadLetterError::BadHeader("no end of the header line".into()))?;
        let header: Value = serde_json::from_slice(&rest[..end])
            .map_err(|e| DeadLetterError::BadHeader(e.to_string()))?;
        let text = |field: &str| {
            header[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| DeadLetterError::BadHeader(format!("`{field}` is not a string")))
        };
        let number = |field: &str| {
            header[field]
                .as_u64()
                .ok_or_else(|| DeadLetterError::BadHeader(format!("`{field}` is not a number")))
        };
        let time = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        Ok(DeadLetter {
            stream: text("stream")?,
            shard_id: text("shardId")?,
            sequence_number: text("sequenceNumber")?,
            sub_sequence_number: number("subSequenceNumber")?,
            partition_key: text("partitionKey")?,
            explicit_hash_key: header["explicitHashKey"].as_str().map(str::to_owned),
            approximate_arrival: header["approximateArrivalMillis"].as_u64().map(time),
            reason: text("reason")?,
            attempts: u32::try_from(number("attempts")?)
                .map_err(|e| DeadLetterError::BadHeader(format!("`attempts`: {e}")))?,
            error: text("error")?,
            given_up_at: time(number("givenUpAtMillis")?),
            data: Bytes::copy_from_slice(&rest[end + 1..]),
        })
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A [`FailureDestination`] that puts each given-up record, wrapped in a [`DeadLetter`]
/// envelope, to a Kinesis stream through a `kinesis-kpl` [`Producer`](kinesis_kpl::Producer)
/// (its retries, aggregation and rate limits included). It accepts the records once every one
/// is stored; if any put fails, it reports the failure and the worker calls it again with all
/// of them (a record stored by the failed attempt is then stored twice: the dead-letter stream
/// is at least once, like the stream it comes from).
///
/// ```no_run
/// use kinesis_kcl::{DeadLetterStream, FailurePolicy};
///
/// # async fn policy(kinesis: aws_sdk_kinesis::Client) -> Result<FailurePolicy, Box<dyn std::error::Error>> {
/// let producer = kinesis_kpl::Producer::new(
///     kinesis,
///     "orders-dead-letters",
///     kinesis_kpl::ProducerConfig::default(),
/// )
/// .await?;
/// let policy = FailurePolicy::builder()
///     .max_attempts(3)
///     .bisect_on_error(true)
///     .destination(DeadLetterStream::new(producer))
///     .build()?;
/// # Ok(policy) }
/// ```
#[derive(Clone, Debug)]
pub struct DeadLetterStream {
    producer: kinesis_kpl::Producer,
}

impl DeadLetterStream {
    /// Puts dead letters through `producer`, to its stream.
    pub fn new(producer: kinesis_kpl::Producer) -> Self {
        DeadLetterStream { producer }
    }
}

#[async_trait]
impl FailureDestination for DeadLetterStream {
    async fn accept(&self, failed: &FailedRecords) -> Result<(), ProcessorError> {
        let now = SystemTime::now();
        let puts: Vec<_> = failed
            .records
            .iter()
            .map(|record| {
                let letter = DeadLetter::new(failed, record, now);
                let mut user = kinesis_kpl::UserRecord::new(
                    letter.partition_key.clone(),
                    Bytes::from(letter.encode()),
                );
                if let Some(key) = &letter.explicit_hash_key {
                    user = user.explicit_hash_key(key.clone());
                }
                self.producer.put_record(user)
            })
            .collect();
        let mut first_error = None;
        for put in puts {
            if let Err(e) = put.await {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::GiveUpReason;
    use crate::sequence::SequenceNumber;

    fn failed(records: Vec<Record>) -> FailedRecords {
        FailedRecords {
            stream: "orders".into(),
            shard_id: "shardId-000000000003".into(),
            records,
            reason: GiveUpReason::RecordAge,
            attempts: 4,
            error: "bad \"json\"\nin two lines".into(),
        }
    }

    #[test]
    fn an_envelope_reads_back_as_written_data_untouched() {
        let arrival = UNIX_EPOCH + Duration::from_millis(1_765_000_000_123);
        let record = Record::new(
            SequenceNumber::new("49590338271490256608559692538361571095921575989136588898")
                .unwrap(),
            "key-7",
            Bytes::from_static(b"\x00\xffraw\nbytes"),
        )
        .with_sub_sequence_number(2)
        .with_explicit_hash_key("12345")
        .with_approximate_arrival_timestamp(arrival);
        let failed = failed(vec![record.clone()]);
        let now = UNIX_EPOCH + Duration::from_millis(1_765_000_100_000);
        let letter = DeadLetter::new(&failed, &record, now);
        let bytes = letter.encode();
        assert!(bytes.starts_with(b"kinesis-dead-letter/1\n{"));
        assert!(bytes.ends_with(b"\x00\xffraw\nbytes"));
        let back = DeadLetter::decode(&bytes).unwrap();
        assert_eq!(back, letter);
        assert_eq!(back.approximate_arrival, Some(arrival));
        assert_eq!(back.explicit_hash_key.as_deref(), Some("12345"));
        assert_eq!(back.sub_sequence_number, 2);
        assert_eq!(
            GiveUpReason::parse(&back.reason),
            Some(GiveUpReason::RecordAge)
        );
        assert_eq!(back.error, "bad \"json\"\nin two lines");
    }

    #[test]
    fn what_is_not_an_envelope_says_so() {
        assert!(matches!(
            DeadLetter::decode(b"plain data"),
            Err(DeadLetterError::NotAnEnvelope)
        ));
        assert!(matches!(
            DeadLetter::decode(b"kinesis-dead-letter/1\n{\"stream\":1}\n"),
            Err(DeadLetterError::BadHeader(_))
        ));
        assert!(matches!(
            DeadLetter::decode(b"kinesis-dead-letter/1\n{}"),
            Err(DeadLetterError::BadHeader(_))
        ));
    }
}
