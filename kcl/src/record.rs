//! The record handed to an application: [`Record`].
//!
//! A Kinesis record either is one user record, or (when a KPL producer aggregated it) holds
//! several user records. Retrieval deaggregates every Kinesis record it reads, so an application
//! only ever sees user records: each carries its Kinesis record's sequence number plus a
//! sub-sequence number (its index in the aggregate, `0` for a plain record), and the pair,
//! [`Record::extended_sequence_number`], is what a checkpoint stores.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use kinesis_aggregation::SubRecord;

use crate::sequence::{ExtendedSequenceNumber, SequenceNumber};

/// One user record, as delivered to an application (the Java KCL's `KinesisClientRecord`).
///
/// Cheap to clone: the data is reference-counted, and the sub-records of one aggregate share
/// their Kinesis record's buffer, key tables and sequence number.
///
/// `Debug` shows the data's length, never the data itself.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use kinesis_kcl::Record;
/// use kinesis_kcl::{ExtendedSequenceNumber, SequenceNumber};
///
/// let sequence_number = SequenceNumber::new("49590338271490256608559692538361571095921575989136588898")?;
/// let arrival = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// let record = Record::new(sequence_number.clone(), "user-17", &b"clicked"[..])
///     .with_approximate_arrival_timestamp(arrival);
///
/// assert_eq!(record.partition_key(), "user-17");
/// assert_eq!(&record.data()[..], b"clicked");
/// assert_eq!(record.sub_sequence_number(), 0);
/// assert!(!record.is_aggregated());
/// assert_eq!(record.extended_sequence_number(), ExtendedSequenceNumber::new(sequence_number, 0));
/// assert_eq!(record.approximate_arrival_timestamp(), Some(arrival));
/// assert!(format!("{record:?}").contains("data_len: 7"));
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    sequence_number: Arc<SequenceNumber>,
    approximate_arrival_timestamp: Option<SystemTime>,
    body: Body,
}

/// Where the keys and the data live.
#[derive(Clone, PartialEq, Eq)]
enum Body {
    /// A plain Kinesis record (or a test-built record).
    Plain {
        partition_key: String,
        explicit_hash_key: Option<String>,
        data: Bytes,
        sub_sequence_number: u64,
        aggregated: bool,
    },
    /// A user record taken out of an aggregate (keys shared with its siblings).
    Sub(SubRecord),
}

impl Record {
    /// A plain (not aggregated) record with sub-sequence number 0, no explicit hash key and no
    /// arrival timestamp; the `with_*` methods set the rest.
    pub fn new(
        sequence_number: SequenceNumber,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Self {
        Record {
            sequence_number: Arc::new(sequence_number),
            approximate_arrival_timestamp: None,
            body: Body::Plain {
                partition_key: partition_key.into(),
                explicit_hash_key: None,
                data: data.into(),
                sub_sequence_number: 0,
                aggregated: false,
            },
        }
    }

    /// A plain Kinesis record, as read.
    pub(crate) fn plain(
        sequence_number: Arc<SequenceNumber>,
        approximate_arrival_timestamp: Option<SystemTime>,
        partition_key: String,
        data: Bytes,
    ) -> Self {
        Record {
            sequence_number,
            approximate_arrival_timestamp,
            body: Body::Plain {
                partition_key,
                explicit_hash_key: None,
                data,
                sub_sequence_number: 0,
                aggregated: false,
            },
        }
    }

    /// A user record taken out of an aggregated Kinesis record.
    pub(crate) fn from_sub_record(
        sequence_number: Arc<SequenceNumber>,
        approximate_arrival_timestamp: Option<SystemTime>,
        sub: SubRecord,
    ) -> Self {
        Record {
            sequence_number,
            approximate_arrival_timestamp,
            body: Body::Sub(sub),
        }
    }

    /// Sets the arrival timestamp.
    pub fn with_approximate_arrival_timestamp(mut self, timestamp: SystemTime) -> Self {
        self.approximate_arrival_timestamp = Some(timestamp);
        self
    }

    /// Marks the record as a user record of an aggregate, at index `sub_sequence_number`.
    ///
    /// ```
    /// use kinesis_kcl::Record;
    /// use kinesis_kcl::SequenceNumber;
    ///
    /// let record = Record::new(SequenceNumber::new("7")?, "pk", "data").with_sub_sequence_number(3);
    /// assert!(record.is_aggregated());
    /// assert_eq!(record.extended_sequence_number().to_string(), "7/3");
    /// # Ok::<(), kinesis_kcl::Error>(())
    /// ```
    pub fn with_sub_sequence_number(mut self, sub_sequence_number: u64) -> Self {
        self.make_plain(|_, sub, aggregated| {
            *sub = sub_sequence_number;
            *aggregated = true;
        });
        self
    }

    /// Sets the explicit hash key.
    ///
    /// ```
    /// use kinesis_kcl::Record;
    /// use kinesis_kcl::SequenceNumber;
    ///
    /// let record = Record::new(SequenceNumber::new("7")?, "pk", "data").with_explicit_hash_key("42");
    /// assert_eq!(record.explicit_hash_key(), Some("42"));
    /// # Ok::<(), kinesis_kcl::Error>(())
    /// ```
    pub fn with_explicit_hash_key(mut self, explicit_hash_key: impl Into<String>) -> Self {
        let explicit_hash_key = explicit_hash_key.into();
        self.make_plain(|ehk, _, _| *ehk = Some(explicit_hash_key));
        self
    }

    /// Turns the body into a plain one (copying the keys of a sub-record), then lets `edit`
    /// change its explicit hash key, sub-sequence number and aggregated flag.
    fn make_plain(&mut self, edit: impl FnOnce(&mut Option<String>, &mut u64, &mut bool)) {
        if let Body::Sub(sub) = &self.body {
            self.body = Body::Plain {
                partition_key: sub.partition_key().to_owned(),
                explicit_hash_key: sub.explicit_hash_key().map(str::to_owned),
                data: sub.data().clone(),
                sub_sequence_number: sub.sub_sequence_number(),
                aggregated: true,
            };
        }
        if let Body::Plain {
            explicit_hash_key,
            sub_sequence_number,
            aggregated,
            ..
        } = &mut self.body
        {
            edit(explicit_hash_key, sub_sequence_number, aggregated);
        }
    }

    /// The record's partition key; empty when Kinesis returned none, which it does for
    /// streams with the `AUTO` record distribution strategy (it never stores an empty key
    /// otherwise: keys are 1 to 256 characters).
    pub fn partition_key(&self) -> &str {
        match &self.body {
            Body::Plain { partition_key, .. } => partition_key,
            Body::Sub(sub) => sub.partition_key(),
        }
    }

    /// The record's explicit hash key, if its producer set one. Only aggregated user records
    /// carry it: Kinesis does not return the explicit hash key of a plain record.
    pub fn explicit_hash_key(&self) -> Option<&str> {
        match &self.body {
            Body::Plain {
                explicit_hash_key, ..
            } => explicit_hash_key.as_deref(),
            Body::Sub(sub) => sub.explicit_hash_key(),
        }
    }

    /// The record's data.
    pub fn data(&self) -> &Bytes {
        match &self.body {
            Body::Plain { data, .. } => data,
            Body::Sub(sub) => sub.data(),
        }
    }

    /// The record's data, consuming the record (no copy).
    pub fn into_data(self) -> Bytes {
        match self.body {
            Body::Plain { data, .. } => data,
            Body::Sub(sub) => sub.into_data(),
        }
    }

    /// The sequence number of the Kinesis record this user record came in (shared by all the
    /// user records of an aggregate).
    pub fn sequence_number(&self) -> &SequenceNumber {
        &self.sequence_number
    }

    /// The record's index in its aggregate, from 0; 0 for a record that was not aggregated.
    pub fn sub_sequence_number(&self) -> u64 {
        match &self.body {
            Body::Plain {
                sub_sequence_number,
                ..
            } => *sub_sequence_number,
            Body::Sub(sub) => sub.sub_sequence_number(),
        }
    }

    /// The position to checkpoint once this record is processed: its sequence number and
    /// sub-sequence number.
    pub fn extended_sequence_number(&self) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(
            self.sequence_number.as_ref().clone(),
            self.sub_sequence_number(),
        )
    }

    /// When Kinesis accepted the Kinesis record this user record came in, if reported.
    pub fn approximate_arrival_timestamp(&self) -> Option<SystemTime> {
        self.approximate_arrival_timestamp
    }

    /// Whether the record came out of a KPL aggregate. A record that carried the aggregation
    /// magic but could not be read as an aggregate is delivered whole and is not aggregated.
    pub fn is_aggregated(&self) -> bool {
        match &self.body {
            Body::Plain { aggregated, .. } => *aggregated,
            Body::Sub(_) => true,
        }
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("sequence_number", &self.sequence_number.as_str())
            .field("sub_sequence_number", &self.sub_sequence_number())
            .field("partition_key", &self.partition_key())
            .field("explicit_hash_key", &self.explicit_hash_key())
            .field("data_len", &self.data().len())
            .field("aggregated", &self.is_aggregated())
            .field(
                "approximate_arrival_timestamp",
                &self.approximate_arrival_timestamp,
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use kinesis_aggregation::{AggregateBuilder, Deaggregated, Finished, deaggregate};

    use super::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::new(s).unwrap()
    }

    fn subs() -> Vec<SubRecord> {
        let mut builder = AggregateBuilder::default();
        builder.try_push("a", None, b"secret-one").unwrap();
        builder.try_push("b", Some("42"), b"secret-two").unwrap();
        let Some(Finished::Aggregated { data, .. }) = builder.finish() else {
            unreachable!()
        };
        let Deaggregated::Aggregated(subs) = deaggregate(data) else {
            unreachable!()
        };
        subs
    }

    #[test]
    fn sub_records_expose_their_keys_and_position() {
        let shared = Arc::new(seq("100"));
        let records: Vec<_> = subs()
            .into_iter()
            .map(|s| Record::from_sub_record(Arc::clone(&shared), None, s))
            .collect();
        assert_eq!(records[1].partition_key(), "b");
        assert_eq!(records[1].explicit_hash_key(), Some("42"));
        assert_eq!(&records[1].data()[..], b"secret-two");
        assert_eq!(records[1].sub_sequence_number(), 1);
        assert!(records[1].is_aggregated());
        assert_eq!(
            records[1].extended_sequence_number(),
            ExtendedSequenceNumber::new(seq("100"), 1)
        );
        assert_eq!(&records[0].clone().into_data()[..], b"secret-one");
    }

    #[test]
    fn debug_never_shows_the_payload() {
        let shared = Arc::new(seq("100"));
        for record in subs()
            .into_iter()
            .map(|s| Record::from_sub_record(Arc::clone(&shared), None, s))
            .chain([Record::new(seq("5"), "pk", &b"secret-three"[..])])
        {
            let text = format!("{record:?}");
            assert!(!text.contains("secret"), "{text}");
            assert!(text.contains("data_len: "), "{text}");
        }
    }

    #[test]
    fn builders_convert_a_sub_record_body_without_losing_fields() {
        let sub = subs().remove(1);
        let record =
            Record::from_sub_record(Arc::new(seq("9")), None, sub).with_explicit_hash_key("7");
        assert_eq!(record.partition_key(), "b");
        assert_eq!(record.explicit_hash_key(), Some("7"));
        assert_eq!(record.sub_sequence_number(), 1);
        assert!(record.is_aggregated());
        assert_eq!(&record.data()[..], b"secret-two");
    }
}
