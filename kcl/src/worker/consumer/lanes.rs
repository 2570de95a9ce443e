//! A shard processed in parallel lanes: its records spread over the lanes by partition key,
//! each lane a task running its own processor over its records in order, and the consumer
//! waiting for every lane at the shard's end and when processing must stop.
//!
//! The consumer hands records out in shard order (recording each in the shard's
//! [`LaneProgress`], whose low watermark is what the shard's checkpoint may reach) and never
//! processes any itself. A lane ends when its queue closes (the shard ended or the reader
//! failed: its processor has heard no ending yet and comes back to the consumer), or when
//! processing must stop (it tells its processor why, as a single consumer would).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};

use super::{Consumer, Exit, Failure, Interrupt, Lane};
use crate::checkpoint::lanes::LaneProgress;
use crate::record::Record;
use crate::retrieval::ShardReader;
use crate::shard::ChildShard;

/// How many batches may wait for a lane besides the one it processes: enough that a lane
/// never waits for the reader, few enough that a lane holding at a failing record stops
/// the reading soon.
const LANE_QUEUE: usize = 2;

/// Records for one lane, from one batch of the shard.
struct LaneBatch {
    records: Vec<Record>,
    millis_behind_latest: Option<u64>,
}

/// How a lane's task ended.
enum LaneEnd {
    /// Its queue closed after its last batch: its processor has heard no ending yet.
    Drained(Lane),
    /// Processing had to stop; its processor heard why.
    Stopped,
}

/// Which lane each partition key's records go to: the lane that has records of the key
/// to process, else the lane with the fewest records to process.
struct KeyLanes {
    /// Per lane, records handed to it.
    sent: Vec<u64>,
    /// Per lane, records it is done with (counted by the lane).
    done: Vec<Arc<AtomicU64>>,
    /// Per key, its lane and the lane's `sent` count after its last record there.
    keys: HashMap<String, (usize, u64)>,
    /// Where the search for the least busy lane starts: ties rotate over the lanes, so that
    /// a trickle of records reaches every lane in turn (and a lane's processor that
    /// checkpoints every N records or T seconds gets calls).
    cursor: usize,
}

/// Keys remembered beyond which the ones with nothing left to process are forgotten.
const KEYS_REMEMBERED: usize = 10_000;

impl KeyLanes {
    fn new(lanes: usize) -> Self {
        KeyLanes {
            sent: vec![0; lanes],
            done: (0..lanes).map(|_| Arc::new(AtomicU64::new(0))).collect(),
            keys: HashMap::new(),
            cursor: 0,
        }
    }

    fn waiting(&self, lane: usize) -> u64 {
        self.sent[lane].saturating_sub(self.done[lane].load(Ordering::Acquire))
    }

    /// The lane for the next record of `key`.
    fn lane_for(&mut self, key: &str) -> usize {
        if let Some((lane, last)) = self.keys.get_mut(key)
            && self.done[*lane].load(Ordering::Acquire) < *last
        {
            self.sent[*lane] += 1;
            *last = self.sent[*lane];
            return *lane;
        }
        let lanes = self.sent.len();
        let lane = (0..lanes)
            .map(|i| (self.cursor + i) % lanes)
            .min_by_key(|&lane| self.waiting(lane))
            .unwrap_or(0);
        self.cursor = (lane + 1) % lanes;
        self.sent[lane] += 1;
        self.keys.insert(key.to_owned(), (lane, self.sent[lane]));
        lane
    }

    /// Forgets the keys with nothing left to process, once there are many.
    fn forget_idle(&mut self) {
        if self.keys.len() > KEYS_REMEMBERED {
            let done: Vec<u64> = self
                .done
                .iter()
                .map(|d| d.load(Ordering::Acquire))
                .collect();
            self.keys.retain(|_, (lane, last)| done[*lane] < *last);
        }
    }
}

/// The running lanes of one shard.
struct Lanes {
    tasks: JoinSet<(usize, LaneEnd)>,
    /// The lanes' queues, by lane; empty once closed.
    queues: Vec<mpsc::Sender<LaneBatch>>,
}

/// What joining the lanes found.
struct Joined {
    /// The lanes back from their tasks with no ending heard, by lane.
    drained: Vec<(usize, Lane)>,
    /// Whether some lane stopped because processing must stop.
    stopped: bool,
    /// A lane's task that panicked or was cancelled, if any.
    failed: Option<Failure>,
}

impl Lanes {
    /// Closes the queues and waits for every lane (until `deadline`, if given; lanes still
    /// running then are aborted).
    async fn join(mut self, deadline: Option<Instant>) -> Joined {
        self.queues.clear();
        let mut joined = Joined {
            drained: Vec::new(),
            stopped: false,
            failed: None,
        };
        loop {
            let next = match deadline {
                None => self.tasks.join_next().await,
                Some(at) => {
                    match tokio::time::timeout_at(at.into(), self.tasks.join_next()).await {
                        Ok(next) => next,
                        Err(_) => {
                            tracing::error!(
                                lanes = self.tasks.len(),
                                "lanes did not end within the stop timeout; aborting them"
                            );
                            self.tasks.shutdown().await;
                            joined.stopped = true;
                            break;
                        }
                    }
                }
            };
            match next {
                None => break,
                Some(result) => joined.add(result),
            }
        }
        joined.drained.sort_by_key(|(index, _)| *index);
        joined
    }
}

impl Joined {
    fn add(&mut self, result: Result<(usize, LaneEnd), JoinError>) {
        match result {
            Ok((index, LaneEnd::Drained(lane))) => self.drained.push((index, lane)),
            Ok((_, LaneEnd::Stopped)) => self.stopped = true,
            Err(e) if e.is_panic() => self.failed = Some(Failure::Panicked),
            Err(_) => self.failed = self.failed.take().or(Some(Failure::Cancelled)),
        }
    }
}

impl Consumer {
    /// Processes the shard in `lanes`, whose checkpointers report to `progress`.
    pub(super) async fn process_in_lanes(
        &mut self,
        lanes: Vec<Lane>,
        progress: Arc<LaneProgress>,
        mut reader: ShardReader,
    ) -> Exit {
        let mut keys = KeyLanes::new(lanes.len());
        let mut running = Lanes {
            tasks: JoinSet::new(),
            queues: Vec::with_capacity(lanes.len()),
        };
        for (index, lane) in lanes.into_iter().enumerate() {
            let (queue, batches) = mpsc::channel(LANE_QUEUE);
            running.queues.push(queue);
            let consumer = Consumer {
                releases_lease: false,
                ..self.clone()
            };
            let done = Arc::clone(&keys.done[index]);
            running
                .tasks
                .spawn(async move { (index, consumer.run_lane(lane, batches, done).await) });
        }
        loop {
            let next = tokio::select! {
                biased;
                interrupt = self.interrupted() => {
                    reader.close().await;
                    return self.stop_lanes(running, interrupt).await;
                }
                ended = running.tasks.join_next() => {
                    reader.close().await;
                    return self.lane_ended_early(running, ended).await;
                }
                next = reader.next() => next,
            };
            let mut batch = match next {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    reader.close().await;
                    return self.restart_lanes(running, Failure::Retrieval(e)).await;
                }
                None => {
                    return self.restart_lanes(running, Failure::ReaderEndedEarly).await;
                }
            };
            // As for a single processor (see `process`): a batch read after the lease ran
            // past its deadline must not reach any lane.
            if self.lease.expire_if_due(Instant::now()) {
                reader.close().await;
                return self.stop_lanes(running, Interrupt::Lost).await;
            }
            let children = batch.shard_end.take();
            let records = std::mem::take(&mut batch.records);
            if records.is_empty() {
                if self.stream.deliver_empty_batches {
                    // A tick for every lane not already busy.
                    for queue in &running.queues {
                        let _ = queue.try_send(LaneBatch {
                            records: Vec::new(),
                            millis_behind_latest: batch.millis_behind_latest,
                        });
                    }
                }
            } else {
                let parts = spread(&mut keys, &progress, records, running.queues.len());
                for (index, records) in parts.into_iter().enumerate() {
                    if records.is_empty() {
                        continue;
                    }
                    let queue = running.queues[index].clone();
                    let sent = tokio::select! {
                        biased;
                        interrupt = self.interrupted() => {
                            reader.close().await;
                            return self.stop_lanes(running, interrupt).await;
                        }
                        ended = running.tasks.join_next() => {
                            reader.close().await;
                            return self.lane_ended_early(running, ended).await;
                        }
                        permit = queue.reserve() => permit.map(|permit| permit.send(LaneBatch {
                            records,
                            millis_behind_latest: batch.millis_behind_latest,
                        })),
                    };
                    if sent.is_err() {
                        // The lane's task ended: find out how.
                        reader.close().await;
                        let ended = running.tasks.join_next().await;
                        return self.lane_ended_early(running, ended).await;
                    }
                }
                keys.forget_idle();
            }
            drop(batch);
            if let Some(children) = children {
                reader.close().await;
                return self.end_lanes_at_shard_end(running, children).await;
            }
        }
    }

    /// Runs one lane: its processor over the batches of its queue, until the queue closes
    /// or processing must stop.
    async fn run_lane(
        self,
        mut lane: Lane,
        mut batches: mpsc::Receiver<LaneBatch>,
        done: Arc<AtomicU64>,
    ) -> LaneEnd {
        loop {
            let batch = tokio::select! {
                biased;
                interrupt = self.interrupted() => {
                    let deadline = Instant::now() + self.ctx.stop_timeout;
                    self.end(&mut *lane.processor, &mut lane.checkpointer, interrupt, deadline)
                        .await;
                    return LaneEnd::Stopped;
                }
                batch = batches.recv() => batch,
            };
            let Some(batch) = batch else {
                return LaneEnd::Drained(lane);
            };
            // As the dispatcher checks each batch it reads (see `process`): a lane that wakes
            // with queued records after the lease ran past its deadline must not process them.
            if self.lease.expire_if_due(Instant::now()) {
                let deadline = Instant::now() + self.ctx.stop_timeout;
                self.end(
                    &mut *lane.processor,
                    &mut lane.checkpointer,
                    Interrupt::Lost,
                    deadline,
                )
                .await;
                return LaneEnd::Stopped;
            }
            let count = batch.records.len() as u64;
            if self
                .deliver(&mut lane, batch.records, batch.millis_behind_latest)
                .await
                .is_err()
            {
                return LaneEnd::Stopped;
            }
            done.fetch_add(count, Ordering::Release);
        }
    }

    /// The shard ended: every lane finishes its records, then the shard's end is handled
    /// with all of them.
    async fn end_lanes_at_shard_end(&mut self, running: Lanes, children: Vec<ChildShard>) -> Exit {
        let joined = running.join(None).await;
        if let Some(failure) = joined.failed {
            return Exit::Failed(failure);
        }
        let mut lanes: Vec<Lane> = joined.drained.into_iter().map(|(_, lane)| lane).collect();
        if joined.stopped {
            let interrupt = self.why_stopped().await;
            let deadline = Instant::now() + self.ctx.stop_timeout;
            return self.end_all(&mut lanes, interrupt, deadline).await;
        }
        self.shard_end(&mut lanes, children).await
    }

    /// Processing must stop: every lane's processor hears why (each within the stop
    /// timeout), then the lease is released on a hand-off.
    async fn stop_lanes(&mut self, running: Lanes, interrupt: Interrupt) -> Exit {
        let deadline = Instant::now() + self.ctx.stop_timeout;
        let joined = running.join(Some(deadline + LANE_GRACE)).await;
        let mut lanes: Vec<Lane> = joined.drained.into_iter().map(|(_, lane)| lane).collect();
        // Lanes back with no ending heard were idle: they get their own stop timeout.
        let deadline = Instant::now() + self.ctx.stop_timeout;
        self.end_all(&mut lanes, interrupt, deadline).await
    }

    /// A lane's task ended while its queue was open: processing had to stop, or it panicked
    /// (then the shard restarts from its checkpoint; the other lanes are dropped).
    async fn lane_ended_early(
        &mut self,
        running: Lanes,
        ended: Option<Result<(usize, LaneEnd), JoinError>>,
    ) -> Exit {
        let mut first = Joined {
            drained: Vec::new(),
            stopped: false,
            failed: None,
        };
        if let Some(result) = ended {
            first.add(result);
        }
        if let Some(failure) = first.failed {
            tracing::error!(error = %failure, "a lane failed; restarting the shard from its checkpoint");
            // The other lanes finish their calls (and checkpoint writes) first.
            return self.restart_lanes(running, failure).await;
        }
        let interrupt = self.why_stopped().await;
        self.stop_lanes(running, interrupt).await
    }

    /// The reader failed: the lanes finish what they were given (within the stop timeout),
    /// then the shard restarts from its checkpoint.
    async fn restart_lanes(&mut self, running: Lanes, failure: Failure) -> Exit {
        let deadline = Instant::now() + self.ctx.stop_timeout;
        let joined = running.join(Some(deadline)).await;
        Exit::Failed(joined.failed.unwrap_or(failure))
    }

    /// Why a lane stopped on its own: the interrupt it saw (a lost lease if none shows).
    async fn why_stopped(&mut self) -> Interrupt {
        tokio::time::timeout(LANE_GRACE, self.interrupted())
            .await
            .unwrap_or(Interrupt::Lost)
    }
}

/// How long past the stop timeout the consumer waits for its lanes to end on their own.
const LANE_GRACE: Duration = Duration::from_secs(1);

/// Splits `records` over `lanes` lanes by partition key and records each, in shard order, in
/// `progress`.
fn spread(
    keys: &mut KeyLanes,
    progress: &LaneProgress,
    records: Vec<Record>,
    lanes: usize,
) -> Vec<Vec<Record>> {
    let mut parts: Vec<Vec<Record>> = (0..lanes).map(|_| Vec::new()).collect();
    let mut assigned = Vec::with_capacity(records.len());
    for record in records {
        let lane = keys.lane_for(record.partition_key());
        assigned.push((record.extended_sequence_number(), lane));
        parts[lane].push(record);
    }
    progress.handed_out(assigned);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_stays_in_its_lane_while_it_has_records_there() {
        let mut keys = KeyLanes::new(3);
        assert_eq!(keys.lane_for("a"), 0);
        assert_eq!(keys.lane_for("b"), 1);
        assert_eq!(keys.lane_for("a"), 0, "a has a record in lane 0");
        assert_eq!(keys.lane_for("c"), 2);
        assert_eq!(keys.lane_for("d"), 1, "lanes 1 and 2 have one record each");
        keys.done[0].store(2, Ordering::Release); // both of a's records are done
        assert_eq!(keys.lane_for("a"), 0, "lane 0 is now the least busy");
        assert_eq!(keys.lane_for("e"), 2, "ties rotate: lane 2 after lane 0");
        keys.done[1].store(2, Ordering::Release);
        assert_eq!(keys.lane_for("a"), 0, "still in flight in lane 0");
        assert_eq!(keys.lane_for("b"), 1, "b is done: the emptiest lane");
    }

    #[test]
    fn a_trickle_reaches_every_lane_in_turn() {
        let mut keys = KeyLanes::new(4);
        let mut seen = Vec::new();
        for n in 0..8u64 {
            let lane = keys.lane_for(&format!("k{n}"));
            keys.done[lane].fetch_add(1, Ordering::Release); // processed before the next
            seen.push(lane);
        }
        assert_eq!(seen, [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn idle_keys_are_forgotten_once_many() {
        let mut keys = KeyLanes::new(2);
        for n in 0..=KEYS_REMEMBERED {
            keys.lane_for(&format!("k{n}"));
        }
        keys.done[0].store(u64::MAX, Ordering::Release);
        keys.forget_idle();
        assert!(keys.keys.values().all(|(lane, _)| *lane == 1));
        assert_eq!(keys.keys.len(), KEYS_REMEMBERED.div_ceil(2));
    }
}
