//! Where reading a shard starts: [`StartingPosition`], and the filter that makes a resumed read
//! start exactly after a checkpoint.

use std::time::SystemTime;

use aws_sdk_kinesis::types::ShardIteratorType;

use crate::error::{Error, Result};
use crate::record::Record;
use crate::sequence::{ExtendedSequenceNumber, SequenceNumber, SequencePosition};
use crate::shard::InitialPosition;

/// Where a [`ShardReader`](super::ShardReader) starts reading its shard.
///
/// A worker derives it from the lease's checkpoint with [`StartingPosition::from_checkpoint`].
///
/// # Resuming from a checkpoint
///
/// A checkpoint `(seq, sub)` means "every user record up to and including sub-record `sub` of
/// the Kinesis record `seq` is processed". [`StartingPosition::AfterCheckpoint`] resumes right
/// after it: the shard iterator is taken `AT_SEQUENCE_NUMBER` `seq`, and every user record
/// whose `(sequence number, sub-sequence number)` is `<=` the checkpoint is skipped.
///
/// Taking the iterator `AFTER_SEQUENCE_NUMBER` when `sub` is 0 would be wrong: a checkpoint
/// `(seq, 0)` is also what processing the *first* user record of an aggregate leaves, and
/// starting after `seq` would lose that aggregate's other user records. `AT` plus the skip is
/// right for plain records and aggregates alike, at the cost of reading the checkpointed
/// Kinesis record once more. The Java KCL does the same (its `IteratorBuilder` asks for
/// `AT_SEQUENCE_NUMBER` at a checkpoint, and its processing task drops the records up to it).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use kinesis_kcl::lease::{ExtendedSequenceNumber, SequenceNumber};
/// use kinesis_kcl::retrieval::StartingPosition;
/// use kinesis_kcl::shard::InitialPosition;
///
/// // A fresh lease starts at the application's initial position.
/// let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(
///     StartingPosition::from_checkpoint(&ExtendedSequenceNumber::AT_TIMESTAMP, InitialPosition::AtTimestamp(at))?,
///     Some(StartingPosition::AtTimestamp(at)),
/// );
/// assert_eq!(
///     StartingPosition::from_checkpoint(&ExtendedSequenceNumber::TRIM_HORIZON, InitialPosition::Latest)?,
///     Some(StartingPosition::TrimHorizon),
/// );
/// // A checkpointed lease resumes after its checkpoint.
/// let checkpoint = ExtendedSequenceNumber::new(SequenceNumber::new("4711")?, 3);
/// assert_eq!(
///     StartingPosition::from_checkpoint(&checkpoint, InitialPosition::Latest)?,
///     Some(StartingPosition::AfterCheckpoint {
///         sequence_number: SequenceNumber::new("4711")?,
///         sub_sequence_number: 3,
///     }),
/// );
/// // A finished shard has nothing left to read.
/// assert_eq!(StartingPosition::from_checkpoint(&ExtendedSequenceNumber::SHARD_END, InitialPosition::Latest)?, None);
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartingPosition {
    /// The oldest record still in the shard (`TRIM_HORIZON`).
    TrimHorizon,
    /// Just after the newest record when reading starts (`LATEST`).
    Latest,
    /// The first record that arrived at or after this time (`AT_TIMESTAMP`).
    AtTimestamp(SystemTime),
    /// The record with this sequence number, all its user records included
    /// (`AT_SEQUENCE_NUMBER`).
    AtSequenceNumber(SequenceNumber),
    /// The record after this sequence number, none of its user records included
    /// (`AFTER_SEQUENCE_NUMBER`).
    AfterSequenceNumber(SequenceNumber),
    /// Just after a checkpoint: `AT_SEQUENCE_NUMBER` `sequence_number`, skipping every user
    /// record at or before `(sequence_number, sub_sequence_number)` (see the type's
    /// documentation for why not `AFTER_SEQUENCE_NUMBER`).
    AfterCheckpoint {
        /// The checkpointed Kinesis record.
        sequence_number: SequenceNumber,
        /// The last processed user record inside it.
        sub_sequence_number: u64,
    },
}

impl StartingPosition {
    /// The position a lease's checkpoint calls for: its sentinel (`TRIM_HORIZON`, `LATEST`,
    /// `AT_TIMESTAMP`) or [`StartingPosition::AfterCheckpoint`] for a sequence number. `None`
    /// for `SHARD_END`: the shard is fully processed and nothing is left to read.
    ///
    /// `initial` supplies the timestamp of an `AT_TIMESTAMP` checkpoint (the lease does not
    /// store it), as the Java KCL takes it from `InitialPositionInStreamExtended`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidValue`] for an `AT_TIMESTAMP` checkpoint when `initial` is not
    /// [`InitialPosition::AtTimestamp`]: there is no timestamp to start at.
    pub fn from_checkpoint(
        checkpoint: &ExtendedSequenceNumber,
        initial: InitialPosition,
    ) -> Result<Option<Self>> {
        Ok(Some(match &checkpoint.position {
            SequencePosition::TrimHorizon => StartingPosition::TrimHorizon,
            SequencePosition::Latest => StartingPosition::Latest,
            SequencePosition::AtTimestamp => match initial {
                InitialPosition::AtTimestamp(at) => StartingPosition::AtTimestamp(at),
                _ => {
                    return Err(Error::invalid_value(
                        "checkpoint",
                        SequencePosition::AT_TIMESTAMP,
                        "an AT_TIMESTAMP checkpoint needs InitialPosition::AtTimestamp to \
                         supply the timestamp",
                    ));
                }
            },
            SequencePosition::Sequence(seq) => StartingPosition::AfterCheckpoint {
                sequence_number: seq.clone(),
                sub_sequence_number: checkpoint.sub_sequence_number,
            },
            SequencePosition::ShardEnd => return Ok(None),
        }))
    }

    /// The position of a fresh lease: the application's initial position.
    ///
    /// ```
    /// use kinesis_kcl::retrieval::StartingPosition;
    /// use kinesis_kcl::shard::InitialPosition;
    ///
    /// assert_eq!(StartingPosition::from(InitialPosition::Latest), StartingPosition::Latest);
    /// ```
    pub fn from_initial(initial: InitialPosition) -> Self {
        match initial {
            InitialPosition::TrimHorizon => StartingPosition::TrimHorizon,
            InitialPosition::Latest => StartingPosition::Latest,
            InitialPosition::AtTimestamp(at) => StartingPosition::AtTimestamp(at),
        }
    }

    /// The `ShardIteratorType` of the `GetShardIterator` (or `SubscribeToShard`) call, and its
    /// sequence number or timestamp argument.
    pub(crate) fn iterator_request(&self) -> IteratorRequest<'_> {
        match self {
            StartingPosition::TrimHorizon => IteratorRequest {
                kind: ShardIteratorType::TrimHorizon,
                sequence_number: None,
                timestamp: None,
            },
            StartingPosition::Latest => IteratorRequest {
                kind: ShardIteratorType::Latest,
                sequence_number: None,
                timestamp: None,
            },
            StartingPosition::AtTimestamp(at) => IteratorRequest {
                kind: ShardIteratorType::AtTimestamp,
                sequence_number: None,
                timestamp: Some(*at),
            },
            StartingPosition::AtSequenceNumber(seq)
            | StartingPosition::AfterCheckpoint {
                sequence_number: seq,
                ..
            } => IteratorRequest {
                kind: ShardIteratorType::AtSequenceNumber,
                sequence_number: Some(seq),
                timestamp: None,
            },
            StartingPosition::AfterSequenceNumber(seq) => IteratorRequest {
                kind: ShardIteratorType::AfterSequenceNumber,
                sequence_number: Some(seq),
                timestamp: None,
            },
        }
    }

    /// The skip filter this position needs (only [`StartingPosition::AfterCheckpoint`] has one).
    pub(crate) fn resume_filter(&self) -> ResumeFilter {
        match self {
            StartingPosition::AfterCheckpoint {
                sequence_number,
                sub_sequence_number,
            } => ResumeFilter(Some((sequence_number.clone(), *sub_sequence_number))),
            _ => ResumeFilter(None),
        }
    }
}

impl From<InitialPosition> for StartingPosition {
    fn from(initial: InitialPosition) -> Self {
        StartingPosition::from_initial(initial)
    }
}

/// The arguments of a `GetShardIterator` call.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct IteratorRequest<'a> {
    pub(crate) kind: ShardIteratorType,
    pub(crate) sequence_number: Option<&'a SequenceNumber>,
    pub(crate) timestamp: Option<SystemTime>,
}

/// Drops the user records at or before a checkpoint, until the first Kinesis record after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ResumeFilter(Option<(SequenceNumber, u64)>);

impl ResumeFilter {
    /// Removes from `records` (in shard order) those at or before the checkpoint. Returns how
    /// many were removed.
    pub(crate) fn apply(&mut self, records: &mut Vec<Record>) -> usize {
        let Some((seq, sub)) = &self.0 else {
            return 0;
        };
        let before = records.len();
        let mut passed = false;
        records.retain(|record| {
            let record_seq = record.sequence_number();
            if record_seq > seq {
                passed = true;
            }
            passed || (record_seq == seq && record.sub_sequence_number() > *sub)
        });
        if passed {
            // Sequence numbers only grow from here: nothing more to skip.
            self.0 = None;
        }
        before - records.len()
    }

    /// Whether the filter still has records to skip.
    #[cfg(test)]
    pub(crate) fn is_active(&self) -> bool {
        self.0.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str) -> SequenceNumber {
        SequenceNumber::new(s).unwrap()
    }

    fn rec(s: &str, sub: Option<u64>) -> Record {
        let record = Record::new(seq(s), "pk", "d");
        match sub {
            Some(sub) => record.with_sub_sequence_number(sub),
            None => record,
        }
    }

    fn positions(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| r.extended_sequence_number().to_string())
            .collect()
    }

    #[test]
    fn sentinels_map_to_iterator_types() {
        let at = SystemTime::UNIX_EPOCH;
        let cases = [
            (
                ExtendedSequenceNumber::TRIM_HORIZON,
                ShardIteratorType::TrimHorizon,
            ),
            (ExtendedSequenceNumber::LATEST, ShardIteratorType::Latest),
            (
                ExtendedSequenceNumber::AT_TIMESTAMP,
                ShardIteratorType::AtTimestamp,
            ),
            (
                ExtendedSequenceNumber::new(seq("12"), 0),
                ShardIteratorType::AtSequenceNumber,
            ),
            (
                ExtendedSequenceNumber::new(seq("12"), 4),
                ShardIteratorType::AtSequenceNumber,
            ),
        ];
        for (checkpoint, kind) in cases {
            let position =
                StartingPosition::from_checkpoint(&checkpoint, InitialPosition::AtTimestamp(at))
                    .unwrap()
                    .unwrap();
            assert_eq!(position.iterator_request().kind, kind, "{checkpoint}");
        }
        let request = StartingPosition::AtTimestamp(at);
        assert_eq!(request.iterator_request().timestamp, Some(at));
        let after = StartingPosition::AfterSequenceNumber(seq("3"));
        assert_eq!(
            after.iterator_request().kind,
            ShardIteratorType::AfterSequenceNumber
        );
        assert!(!after.resume_filter().is_active());
    }

    #[test]
    fn at_timestamp_checkpoint_needs_a_timestamp() {
        let err = StartingPosition::from_checkpoint(
            &ExtendedSequenceNumber::AT_TIMESTAMP,
            InitialPosition::TrimHorizon,
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidValue { .. }), "{err}");
    }

    #[test]
    fn resume_filter_skips_up_to_the_checkpoint_inside_an_aggregate() {
        let position = StartingPosition::AfterCheckpoint {
            sequence_number: seq("10"),
            sub_sequence_number: 1,
        };
        let mut filter = position.resume_filter();
        let mut batch = vec![
            rec("10", Some(0)),
            rec("10", Some(1)),
            rec("10", Some(2)),
            rec("11", None),
        ];
        assert_eq!(filter.apply(&mut batch), 2);
        assert_eq!(positions(&batch), ["10/2", "11/0"]);
        assert!(!filter.is_active());
    }

    #[test]
    fn resume_filter_at_sub_zero_keeps_the_rest_of_the_aggregate() {
        let mut filter = StartingPosition::AfterCheckpoint {
            sequence_number: seq("10"),
            sub_sequence_number: 0,
        }
        .resume_filter();
        let mut batch = vec![rec("10", Some(0)), rec("10", Some(1))];
        assert_eq!(filter.apply(&mut batch), 1);
        assert_eq!(positions(&batch), ["10/1"]);
        // The filter stays on until a later sequence number shows up.
        assert!(filter.is_active());
        let mut next = vec![rec("12", None)];
        assert_eq!(filter.apply(&mut next), 0);
        assert!(!filter.is_active());
    }

    #[test]
    fn resume_filter_skips_a_plain_checkpointed_record() {
        let mut filter = StartingPosition::AfterCheckpoint {
            sequence_number: seq("10"),
            sub_sequence_number: 0,
        }
        .resume_filter();
        let mut batch = vec![rec("10", None), rec("11", None)];
        assert_eq!(filter.apply(&mut batch), 1);
        assert_eq!(positions(&batch), ["11/0"]);
    }
}
