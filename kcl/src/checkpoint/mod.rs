//! Recording a shard's progress: the [`Checkpointer`] a processor is handed with each batch.
//!
//! A checkpoint is written to the shard's lease, conditional on this worker still holding
//! it (the lease counter), so a worker that lost the lease can never move it; and it never
//! moves backwards. After a restart or a lease move, processing resumes just after the last
//! checkpoint, to the user record inside an aggregate.
//!
//! With parallel lanes ([`WorkerBuilder::parallelization_factor`](crate::WorkerBuilder::parallelization_factor)),
//! each lane's checkpointer reports that lane's progress and the shard's checkpoint moves to
//! the low watermark of all lanes ([`lanes`]).

pub(crate) mod lanes;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::lease::HeldLease;
use crate::record::Record;
use crate::sequence::{ExtendedSequenceNumber, SequenceNumber};

use self::lanes::LaneProgress;

/// Checkpoints one shard. Handed to the processor by the worker; see
/// [`ShardRecordProcessor`](crate::ShardRecordProcessor).
///
/// # In a lane
///
/// When the stream is processed in parallel lanes
/// ([`WorkerBuilder::parallelization_factor`](crate::WorkerBuilder::parallelization_factor)),
/// each lane's processor has its own checkpointer, and a checkpoint says that *this lane* is
/// done with the records it was given up to that position. The shard's checkpoint moves to
/// the low watermark: the last position before the first record some lane has not finished.
/// So a checkpoint call may write nothing yet (another lane is behind), and a crash
/// re-delivers exactly the records after the watermark. Records a lane has not checkpointed
/// hold the shard's checkpoint for every lane: a lane that checkpoints every N records or T
/// seconds should also do so when it has been idle (new keys go to the lanes in turn, so a
/// lane is called again soon on a busy shard, but on a quiet one it may wait long). `SHARD_END` is written once every
/// lane's [`shard_ended`](crate::ShardRecordProcessor::shard_ended) checkpointed. Two-phase
/// checkpoints are refused in a lane ([`Error::InvalidValue`]): a pending checkpoint is one
/// position of the whole shard, which no single lane can vouch for.
///
/// Every method fails with:
/// - [`Error::LeaseLost`] when this worker no longer holds the lease (nothing written);
/// - [`Error::CheckpointRegression`] for a position before the current checkpoint;
/// - [`Error::CheckpointOutOfRange`] for a position past the last record delivered;
/// - [`Error::InvalidValue`] for a malformed sequence number;
/// - [`Error::DynamoDb`] when DynamoDB kept failing (throttling and server errors are retried
///   with backoff first).
#[derive(Debug)]
pub struct Checkpointer {
    lease: Arc<HeldLease>,
    last_delivered: Option<ExtendedSequenceNumber>,
    at_shard_end: bool,
    /// Set once `SHARD_END` is checkpointed through this checkpointer (for a lane: once the
    /// lane checkpointed at the end, whether or not the other lanes have).
    end_checkpointed: bool,
    /// The lane this checkpointer reports for, when the shard is processed in lanes.
    lane: Option<(Arc<LaneProgress>, usize)>,
}

impl Checkpointer {
    pub(crate) fn new(lease: Arc<HeldLease>) -> Self {
        Checkpointer {
            lease,
            last_delivered: None,
            at_shard_end: false,
            end_checkpointed: false,
            lane: None,
        }
    }

    /// The checkpointer of lane `lane` of a shard processed in lanes.
    pub(crate) fn for_lane(
        lease: Arc<HeldLease>,
        progress: Arc<LaneProgress>,
        lane: usize,
    ) -> Self {
        Checkpointer {
            lane: Some((progress, lane)),
            ..Checkpointer::new(lease)
        }
    }

    /// Whether `SHARD_END` was checkpointed through this checkpointer (see
    /// [`reached_shard_end`](Self::reached_shard_end)).
    pub(crate) fn end_checkpointed(&self) -> bool {
        self.end_checkpointed
    }

    /// Records that `position` is the last user record delivered to the processor.
    pub(crate) fn delivered(&mut self, position: ExtendedSequenceNumber) {
        self.last_delivered = Some(position);
    }

    /// Every record of the shard has been delivered; [`checkpoint`](Self::checkpoint) now
    /// writes `SHARD_END`.
    pub(crate) fn reached_shard_end(&mut self) {
        self.at_shard_end = true;
    }

    /// The lease key of the shard.
    pub fn lease_key(&self) -> &str {
        self.lease.lease_key()
    }

    /// The position of the last user record delivered to the processor, if any.
    pub fn last_delivered(&self) -> Option<&ExtendedSequenceNumber> {
        self.last_delivered.as_ref()
    }

    /// Checkpoints everything delivered so far: the last record delivered, or `SHARD_END` in
    /// [`shard_ended`](crate::ShardRecordProcessor::shard_ended). Does nothing if nothing was
    /// delivered yet.
    ///
    /// # Errors
    ///
    /// See the [type docs](Self).
    pub async fn checkpoint(&mut self) -> Result<()> {
        if self.at_shard_end {
            return self.write_shard_end().await;
        }
        match self.last_delivered.clone() {
            Some(last) => self.write(last).await,
            None => Ok(()),
        }
    }

    /// Checkpoints at `record` (it and everything before it are done).
    ///
    /// # Errors
    ///
    /// See the [type docs](Self).
    pub async fn checkpoint_record(&mut self, record: &Record) -> Result<()> {
        self.checkpoint_at(
            record.sequence_number().as_str(),
            record.sub_sequence_number(),
        )
        .await
    }

    /// Checkpoints at a position: a Kinesis sequence number and the user record inside it
    /// (0 for a record that was not aggregated).
    ///
    /// # Errors
    ///
    /// See the [type docs](Self).
    pub async fn checkpoint_at(
        &mut self,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<()> {
        let position = self.in_range(sequence_number, sub_sequence_number)?;
        self.write(position).await
    }

    /// The first phase of a two-phase checkpoint at the last record delivered (`SHARD_END`
    /// at the shard's end): records it as `pendingCheckpoint` with optional application
    /// `state`, then [`PreparedCheckpoint::commit`] makes it the checkpoint. A new owner sees
    /// the pending checkpoint in [`InitializationInput`](crate::processor::InitializationInput).
    ///
    /// # Errors
    ///
    /// See the [type docs](Self); [`Error::CheckpointOutOfRange`] if nothing was delivered.
    pub async fn prepare_checkpoint(
        &mut self,
        state: Option<Vec<u8>>,
    ) -> Result<PreparedCheckpoint> {
        self.refuse_in_lane()?;
        let position = if self.at_shard_end {
            ExtendedSequenceNumber::SHARD_END
        } else {
            self.last_delivered
                .clone()
                .ok_or_else(|| Error::CheckpointOutOfRange {
                    lease_key: self.lease_key().to_owned(),
                    proposed: "the last delivered record".to_owned(),
                    reason: "nothing has been delivered yet".to_owned(),
                })?
        };
        self.prepare(position, state).await
    }

    /// [`prepare_checkpoint`](Self::prepare_checkpoint) at a given position.
    ///
    /// # Errors
    ///
    /// See the [type docs](Self).
    pub async fn prepare_checkpoint_at(
        &mut self,
        sequence_number: &str,
        sub_sequence_number: u64,
        state: Option<Vec<u8>>,
    ) -> Result<PreparedCheckpoint> {
        self.refuse_in_lane()?;
        let position = self.in_range(sequence_number, sub_sequence_number)?;
        self.prepare(position, state).await
    }

    async fn prepare(
        &mut self,
        position: ExtendedSequenceNumber,
        state: Option<Vec<u8>>,
    ) -> Result<PreparedCheckpoint> {
        self.lease
            .prepare_checkpoint(position.clone(), state)
            .await?;
        metrics::counter!(crate::metrics::CHECKPOINTS_PREPARED).increment(1);
        Ok(PreparedCheckpoint {
            lease: Arc::clone(&self.lease),
            position,
        })
    }

    /// Parses a position and checks it is not past the last record delivered.
    fn in_range(&self, sequence_number: &str, sub: u64) -> Result<ExtendedSequenceNumber> {
        let position = ExtendedSequenceNumber::new(SequenceNumber::new(sequence_number)?, sub);
        let allowed = match (&self.last_delivered, self.at_shard_end) {
            (_, true) => true,
            (Some(last), false) => position <= *last,
            (None, false) => false,
        };
        if !allowed {
            return Err(Error::CheckpointOutOfRange {
                lease_key: self.lease_key().to_owned(),
                proposed: position.to_string(),
                reason: match &self.last_delivered {
                    Some(last) => format!("the last record delivered is {last}"),
                    None => "nothing has been delivered yet".to_owned(),
                },
            });
        }
        Ok(position)
    }

    /// Two-phase checkpoints are one position of the whole shard: no lane can prepare one.
    fn refuse_in_lane(&self) -> Result<()> {
        match &self.lane {
            None => Ok(()),
            Some((_, lane)) => Err(Error::InvalidValue {
                what: "two-phase checkpoint",
                value: format!("lane {lane} of {}", self.lease_key()),
                reason: "a shard processed in parallel lanes cannot prepare a checkpoint: \
                         its checkpoint is the low watermark of all lanes"
                    .into(),
            }),
        }
    }

    async fn write(&mut self, position: ExtendedSequenceNumber) -> Result<()> {
        match &self.lane {
            Some((progress, lane)) => progress.done_through(*lane, &position).await,
            None => {
                self.lease.checkpoint(position).await?;
                metrics::counter!(crate::metrics::CHECKPOINTS).increment(1);
                Ok(())
            }
        }
    }

    async fn write_shard_end(&mut self) -> Result<()> {
        match &self.lane {
            Some((progress, lane)) => progress.lane_ended(*lane).await?,
            None => {
                self.lease
                    .checkpoint(ExtendedSequenceNumber::SHARD_END)
                    .await?;
                metrics::counter!(crate::metrics::CHECKPOINTS).increment(1);
            }
        }
        self.end_checkpointed = true;
        Ok(())
    }
}

/// A prepared (pending) checkpoint: [`commit`](Self::commit) it once the work it covers is
/// durable.
#[derive(Debug)]
#[must_use = "a prepared checkpoint does nothing until committed"]
pub struct PreparedCheckpoint {
    lease: Arc<HeldLease>,
    position: ExtendedSequenceNumber,
}

impl PreparedCheckpoint {
    /// The prepared position.
    pub fn position(&self) -> &ExtendedSequenceNumber {
        &self.position
    }

    /// Makes the prepared position the checkpoint (and clears the pending one).
    ///
    /// # Errors
    ///
    /// As [`Checkpointer::checkpoint`].
    pub async fn commit(self) -> Result<()> {
        self.lease.checkpoint(self.position).await?;
        metrics::counter!(crate::metrics::CHECKPOINTS).increment(1);
        Ok(())
    }
}
