//! A shard processed in parallel lanes: the low watermark of what every lane has finished,
//! and the one writer that moves the shard's checkpoint to it.
//!
//! Records of one shard are handed to lanes in shard order; each lane finishes its own
//! records in order, but lanes run at their own pace. The shard's checkpoint may only reach
//! a record when it and every record before it, in every lane, is done: the highest position
//! below the first record not yet done (sub-sequence numbers included). A crash then
//! re-delivers only records after that position.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::lease::HeldLease;
use crate::sequence::ExtendedSequenceNumber;

/// The pure bookkeeping: which handed-out records are done, lane by lane.
#[derive(Debug)]
pub(crate) struct LowWatermark {
    /// The index of `positions[0]`.
    base: u64,
    /// Positions of the records handed out, in shard order, from the current watermark on.
    positions: VecDeque<ExtendedSequenceNumber>,
    /// Per lane, the indexes of its records not yet done, in order.
    undone: Vec<VecDeque<u64>>,
    /// The index the next record handed out gets.
    next: u64,
    /// Per lane, whether it checkpointed at the shard's end.
    ended: Vec<bool>,
}

impl LowWatermark {
    /// Bookkeeping for `lanes` lanes, nothing handed out.
    pub(crate) fn new(lanes: usize) -> Self {
        LowWatermark {
            base: 0,
            positions: VecDeque::new(),
            undone: vec![VecDeque::new(); lanes],
            next: 0,
            ended: vec![false; lanes],
        }
    }

    /// The record at `position` (the next in shard order) goes to `lane`.
    pub(crate) fn handed_out(&mut self, position: ExtendedSequenceNumber, lane: usize) {
        self.positions.push_back(position);
        self.undone[lane].push_back(self.next);
        self.next += 1;
    }

    /// `lane` is done with each of its records up to and including `position`.
    pub(crate) fn done_through(&mut self, lane: usize, position: &ExtendedSequenceNumber) {
        let (base, positions) = (self.base, &self.positions);
        let undone = &mut self.undone[lane];
        while let Some(&index) = undone.front() {
            let at = usize::try_from(index - base).unwrap_or(usize::MAX);
            match positions.get(at) {
                Some(p) if p <= position => {
                    undone.pop_front();
                }
                _ => break,
            }
        }
    }

    /// The highest position below which every record handed out is done, if any record
    /// is; positions below it are forgotten.
    pub(crate) fn watermark(&mut self) -> Option<ExtendedSequenceNumber> {
        let first_undone = self
            .undone
            .iter()
            .filter_map(|lane| lane.front().copied())
            .min()
            .unwrap_or(self.next);
        if first_undone == self.base {
            return None;
        }
        // Keep the watermark's own position: asked again, the answer is the same.
        let keep_from = first_undone - 1;
        while self.base < keep_from {
            self.positions.pop_front();
            self.base += 1;
        }
        self.positions.front().cloned()
    }

    /// `lane` checkpointed at the shard's end; true once every lane has.
    pub(crate) fn lane_ended(&mut self, lane: usize) -> bool {
        self.ended[lane] = true;
        self.ended.iter().all(|e| *e)
    }
}

/// The lanes of one shard: their shared watermark and the checkpoint written for it.
#[derive(Debug)]
pub(crate) struct LaneProgress {
    lease: Arc<HeldLease>,
    marks: Mutex<LowWatermark>,
    /// The checkpoint last written (the lease's at the start). Held across the write, so
    /// lanes checkpointing at once write in order and never backwards.
    written: tokio::sync::Mutex<ExtendedSequenceNumber>,
}

impl LaneProgress {
    /// Progress of `lanes` lanes of the shard of `lease`, whose checkpoint is `checkpoint`.
    pub(crate) fn new(
        lease: Arc<HeldLease>,
        lanes: usize,
        checkpoint: ExtendedSequenceNumber,
    ) -> Self {
        LaneProgress {
            lease,
            marks: Mutex::new(LowWatermark::new(lanes)),
            written: tokio::sync::Mutex::new(checkpoint),
        }
    }

    fn marks(&self) -> std::sync::MutexGuard<'_, LowWatermark> {
        self.marks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The records at these positions (the next in shard order) go to these lanes.
    pub(crate) fn handed_out(&self, records: Vec<(ExtendedSequenceNumber, usize)>) {
        let mut marks = self.marks();
        for (position, lane) in records {
            marks.handed_out(position, lane);
        }
    }

    /// `lane` is done up to `position`: moves the shard's checkpoint to the new watermark,
    /// if it moved.
    pub(crate) async fn done_through(
        &self,
        lane: usize,
        position: &ExtendedSequenceNumber,
    ) -> Result<()> {
        // As a checkpoint of a single processor would, refuse once the lease is lost, even
        // when the watermark does not move.
        self.lease.ensure_active()?;
        self.marks().done_through(lane, position);
        let mut written = self.written.lock().await;
        let Some(watermark) = self.marks().watermark() else {
            return Ok(());
        };
        if watermark <= *written {
            return Ok(());
        }
        self.lease.checkpoint(watermark.clone()).await?;
        metrics::counter!(crate::metrics::CHECKPOINTS).increment(1);
        *written = watermark;
        Ok(())
    }

    /// `lane` checkpointed at the shard's end; once every lane has, writes `SHARD_END`.
    pub(crate) async fn lane_ended(&self, lane: usize) -> Result<()> {
        self.lease.ensure_active()?;
        let all = self.marks().lane_ended(lane);
        if !all {
            return Ok(());
        }
        let mut written = self.written.lock().await;
        if *written == ExtendedSequenceNumber::SHARD_END {
            return Ok(());
        }
        self.lease
            .checkpoint(ExtendedSequenceNumber::SHARD_END)
            .await?;
        metrics::counter!(crate::metrics::CHECKPOINTS).increment(1);
        *written = ExtendedSequenceNumber::SHARD_END;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(n: u64, sub: u64) -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(
            crate::sequence::SequenceNumber::new(format!("{}", 1000 + n)).unwrap(),
            sub,
        )
    }

    #[test]
    fn the_watermark_waits_for_the_slowest_lane() {
        let mut marks = LowWatermark::new(2);
        for n in 0..6 {
            marks.handed_out(at(n, 0), (n % 2) as usize);
        }
        assert_eq!(marks.watermark(), None, "nothing done");
        marks.done_through(1, &at(5, 0)); // lane 1 finished 1, 3, 5
        assert_eq!(marks.watermark(), None, "record 0 (lane 0) is not done");
        marks.done_through(0, &at(2, 0)); // lane 0 finished 0, 2
        assert_eq!(marks.watermark(), Some(at(3, 0)), "4 is not done");
        assert_eq!(marks.watermark(), Some(at(3, 0)), "asked again");
        marks.done_through(0, &at(4, 0));
        assert_eq!(marks.watermark(), Some(at(5, 0)), "everything done");
    }

    #[test]
    fn sub_sequence_numbers_count() {
        let mut marks = LowWatermark::new(2);
        marks.handed_out(at(1, 0), 0);
        marks.handed_out(at(1, 1), 1);
        marks.handed_out(at(1, 2), 0);
        marks.done_through(0, &at(1, 2));
        assert_eq!(
            marks.watermark(),
            Some(at(1, 0)),
            "the user record 1/1 of the same aggregate is not done"
        );
        marks.done_through(1, &at(1, 1));
        assert_eq!(marks.watermark(), Some(at(1, 2)));
    }

    #[test]
    fn a_lane_done_past_its_records_is_done_with_all_of_them() {
        let mut marks = LowWatermark::new(3);
        marks.handed_out(at(0, 0), 2);
        marks.handed_out(at(1, 0), 0);
        marks.done_through(2, &at(1, 0));
        marks.done_through(0, &at(0, 0)); // before its only record: nothing
        assert_eq!(marks.watermark(), Some(at(0, 0)));
        marks.handed_out(at(2, 0), 1);
        marks.done_through(0, &at(9, 0));
        assert_eq!(marks.watermark(), Some(at(1, 0)));
        assert!(!marks.lane_ended(0));
        assert!(!marks.lane_ended(1));
        assert!(marks.lane_ended(2));
    }
}
