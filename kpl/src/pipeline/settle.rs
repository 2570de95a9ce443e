//! Settling a call's results: what each entry's outcome means for its records. Stored on a
//! shard holding every record's key: resolved `Ok`. Stored on a shard that does not (a reshard
//! under a stale map): sent again, re-routed by a fresh map. Stored on a shard not yet known:
//! parked until the map is listed again. Failed: retried after a backoff, or resolved with the
//! typed error when no retry can help; a call refused as malformed is split until the entry at
//! fault is found. Records past their deadline expire wherever they wait.
//!
//! The rules that need no pipeline state are the pure functions at the end ([`placement`],
//! [`verdict`]), unit-tested below.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinesis_aggregation::HashKeyRange;

use super::refresh::{Parked, StoredAt};
use super::{CALL_LOST, THROUGHPUT_EXCEEDED, UNPREDICTED, WRONG_SHARD};
use crate::PutError;
use crate::aggregator::{Entry, ShardAggregator};
use crate::clock::later;
use crate::config::Ordering;
use crate::pending::{Pending, Tried};
use crate::result::PutResult;
use crate::retrier::{Failure, FailureKind, backoff};
use crate::sender::{Completed, EntryOutcome};
use crate::shard_map::Scope;

impl super::Pipeline {
    /// A PutRecords task died without an answer (a panic, in user code such as an interceptor):
    /// its records may or may not be stored, and say so.
    pub(super) fn lost(&mut self, entries: Vec<Entry>, join_error: tokio::task::JoinError) {
        tracing::error!(%join_error, "a PutRecords task failed");
        let now = Instant::now();
        let code: Arc<str> = Arc::from(CALL_LOST);
        let message: Arc<str> = Arc::from(format!(
            "the PutRecords call ended without an answer: {join_error}"
        ));
        let tried = Tried::new(now, Duration::ZERO, Some((&code, &message)));
        for entry in entries {
            if let Some(state) = self.shards.get_mut(&entry.shard) {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
            for mut pending in entry.records {
                pending.record_attempt(&tried);
                self.metrics.failed("unknown_outcome");
                let (attempts, record) = (pending.take_attempts(), pending.take_record());
                self.resolve(pending, Err(PutError::UnknownOutcome { attempts, record }));
            }
        }
        self.flushes.settle();
    }

    /// Settles a finished call: resolves what was stored on the right shard or failed for good,
    /// parks what landed on the wrong shard (or one not yet known), schedules retries.
    pub(super) fn complete(&mut self, entries: Vec<Entry>, completed: Completed) {
        self.metrics
            .request_duration
            .record(completed.duration.as_secs_f64());
        let now = Instant::now();
        let Completed {
            outcomes,
            started,
            duration,
        } = completed;
        if let Some(EntryOutcome::Failed(failure)) = outcomes.first()
            && failure.is_malformed_call()
        {
            let failure = failure.clone();
            self.isolate(entries, &failure, started, duration);
            self.flushes.settle();
            return;
        }
        // One attempt per outcome of the call, shared by every record it concerns.
        let succeeded = Tried::new(started, duration, None);
        let mut failed: Vec<(Failure, Arc<Tried>)> = Vec::new();
        for (mut entry, outcome) in entries.into_iter().zip(outcomes) {
            if let Some(state) = self.shards.get_mut(&entry.shard) {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
            match outcome {
                EntryOutcome::Stored {
                    shard_id,
                    sequence_number,
                } => {
                    if *shard_id != *entry.shard {
                        // Landed elsewhere than predicted: the map is stale (a reshard).
                        self.refresh.want();
                    }
                    self.metrics.kinesis_records_put.increment(1);
                    let stored = StoredAt {
                        shard_id,
                        sequence_number,
                        started,
                        duration,
                        succeeded: succeeded.clone(),
                    };
                    if !entry.aggregated {
                        // Kinesis routed it by its own key: wherever it is, it is right.
                        self.stored(entry.records, false, stored);
                        continue;
                    }
                    let range = self.refresh.map().range_of(&stored.shard_id);
                    match placement(range, entry.records.iter().map(|p| p.hash_key)) {
                        Placement::Right => self.stored(entry.records, true, stored),
                        Placement::Wrong => {
                            let records = self.wrong_shard(entry.records, &stored);
                            self.refresh.park(records, None, entry.retries);
                        }
                        Placement::Unknown => {
                            self.refresh
                                .park(entry.records, Some(stored), entry.retries)
                        }
                    }
                }
                EntryOutcome::Failed(failure) => {
                    let tried = shared_attempt(&mut failed, &failure, started, duration);
                    for pending in &mut entry.records {
                        pending.record_attempt(&tried);
                    }
                    let throttled = failure.kind == FailureKind::Throttled;
                    if throttled {
                        self.metrics.throttles.increment(1);
                    }
                    let verdict =
                        verdict(failure.kind, &failure.code, self.config.fail_if_throttled());
                    if verdict != Verdict::Retry {
                        tracing::debug!(code = %failure.code, records = entry.records.len(), "entry failed for good");
                        for mut pending in entry.records.drain(..) {
                            let (attempts, record) =
                                (pending.take_attempts(), pending.take_record());
                            let source = failure.source.clone();
                            let error = if verdict == Verdict::Reject {
                                self.metrics.failed("rejected");
                                PutError::Rejected {
                                    attempts,
                                    source,
                                    record,
                                }
                            } else {
                                self.metrics.failed("throttled");
                                PutError::Throttled {
                                    attempts,
                                    source,
                                    record,
                                }
                            };
                            self.resolve(pending, Err(error));
                        }
                    } else {
                        self.metrics.retries.increment(1);
                        self.schedule_retry(entry, now);
                    }
                }
            }
        }
        self.flushes.settle();
    }

    /// A call refused as a whole as malformed (`ValidationException` and the like): the fault
    /// may be one entry's, so the good ones must not fail with it. Several entries: the call is
    /// split in halves, each sent as its own call (their entries stay in flight for their
    /// shards). One aggregate: its records go again on their own. One lone record: it is the one
    /// at fault, rejected.
    fn isolate(
        &mut self,
        mut entries: Vec<Entry>,
        failure: &Failure,
        started: Instant,
        duration: Duration,
    ) {
        let tried = Tried::new(started, duration, Some((&failure.code, &failure.message)));
        for entry in &mut entries {
            for pending in &mut entry.records {
                pending.record_attempt(&tried);
            }
        }
        if entries.len() > 1 {
            let second = entries.split_off(entries.len() / 2);
            self.calls.isolate(entries);
            self.calls.isolate(second);
            return;
        }
        let Some(entry) = entries.pop() else { return };
        if let Some(state) = self.shards.get_mut(&entry.shard) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
        if entry.aggregated && entry.records.len() > 1 {
            let shard = entry.shard.clone();
            let now = Instant::now();
            let mut singles: Vec<Entry> = entry
                .records
                .into_iter()
                .map(|pending| {
                    let mut single = Entry::single(shard.clone(), pending, now);
                    single.not_before = now;
                    single.retries = entry.retries;
                    single
                })
                .collect();
            // In strict order they go to the queue front, one call each, in order.
            if self.config.ordering() == Ordering::PerShardStrict {
                singles.reverse();
            }
            for single in singles {
                self.requeue(single);
            }
            return;
        }
        tracing::debug!(code = %failure.code, "a record refused as malformed");
        for mut pending in entry.records {
            self.metrics.failed("rejected");
            let (attempts, record) = (pending.take_attempts(), pending.take_record());
            let source = failure.source.clone();
            self.resolve(
                pending,
                Err(PutError::Rejected {
                    attempts,
                    source,
                    record,
                }),
            );
        }
    }

    /// Resolves `records` as stored where `stored` says (sub-sequence numbers are positions in
    /// the aggregate when `aggregated`).
    fn stored(&mut self, records: Vec<Pending>, aggregated: bool, stored: StoredAt) {
        self.metrics
            .user_records_per_kinesis_record
            .record(records.len() as f64);
        for (index, mut pending) in records.into_iter().enumerate() {
            pending.record_attempt(&stored.succeeded);
            let result = PutResult {
                shard_id: stored.shard_id.clone(),
                sequence_number: stored.sequence_number.clone(),
                sub_sequence_number: if aggregated { index as u64 } else { 0 },
                attempts: pending.take_attempts(),
            };
            self.metrics.user_records_put.increment(1);
            self.resolve(pending, Ok(result));
        }
    }

    /// Records the attempt that stored `records`' aggregate on a shard not holding all of them
    /// as failed ("WrongShard"), to send them all again.
    fn wrong_shard(&mut self, mut records: Vec<Pending>, stored: &StoredAt) -> Vec<Pending> {
        tracing::debug!(
            shard = %stored.shard_id,
            records = records.len(),
            "aggregate stored on a shard not holding all of its records; sending them again"
        );
        self.metrics
            .wrong_shard_records
            .increment(records.len() as u64);
        self.refresh.want();
        let code: Arc<str> = Arc::from(WRONG_SHARD);
        let message: Arc<str> = Arc::from(format!(
            "stored on {} (sequence number {}), whose hash-key range does not hold every record \
             of the aggregate",
            stored.shard_id, stored.sequence_number
        ));
        let tried = Tried::new(stored.started, stored.duration, Some((&code, &message)));
        for pending in &mut records {
            pending.record_attempt(&tried);
        }
        records
    }

    /// After listing number `number` (of `scope`), settles the parked records waiting for it:
    /// stored on a shard now known, they resolve `Ok` or go again; landed on the wrong shard,
    /// they are re-routed by the new map.
    pub(super) fn release_parked(&mut self, number: u64, scope: Scope) {
        let now = Instant::now();
        for parked in self.refresh.take_parked() {
            if parked.after_refresh > number {
                self.refresh.keep_parked(parked);
                continue;
            }
            let Parked {
                records,
                stored,
                retries,
                ..
            } = parked;
            let Some(stored) = stored else {
                self.reaggregate(records, now, retries);
                continue;
            };
            let range = self.refresh.map().range_of(&stored.shard_id);
            match placement(range, records.iter().map(|p| p.hash_key)) {
                Placement::Right => self.stored(records, true, stored),
                Placement::Wrong => {
                    let records = self.wrong_shard(records, &stored);
                    self.reaggregate(records, now, retries);
                }
                Placement::Unknown if scope == Scope::All => {
                    // Not even listed among the closed shards: where it landed cannot be
                    // checked, so it is sent again.
                    let records = self.wrong_shard(records, &stored);
                    self.reaggregate(records, now, retries);
                }
                Placement::Unknown => {
                    self.refresh.want_all();
                    self.refresh.park(records, Some(stored), retries);
                }
            }
        }
        self.flushes.settle();
    }

    /// Puts a failed entry back after its next backoff delay, but never later than its earliest
    /// record's deadline (a record expires at its deadline, not at the last retry before it).
    fn schedule_retry(&mut self, mut entry: Entry, now: Instant) {
        let delay = backoff(self.config.min_backoff(), self.config.max_backoff())
            .nth(entry.retries as usize)
            .unwrap_or(self.config.max_backoff());
        entry.retries = entry.retries.saturating_add(1);
        let before = entry.records.len();
        let (keep, expired): (Vec<Pending>, Vec<Pending>) = entry
            .records
            .drain(..)
            .partition(|pending| pending.deadline > now);
        for pending in expired {
            self.expire(pending);
        }
        let Some(earliest_deadline) = keep.iter().map(|p| p.deadline).min() else {
            return;
        };
        let retry_at = later(now, delay).min(earliest_deadline);
        let moved = keep
            .iter()
            .any(|p| self.refresh.map().predict(p.hash_key).map(|s| &s.id) != Some(&entry.shard));
        if keep.len() != before || moved {
            // Some records are gone or belong elsewhere now: rebuild from what remains.
            self.reaggregate(keep, retry_at, entry.retries);
            return;
        }
        entry.records = keep;
        entry.not_before = retry_at;
        entry.due = retry_at;
        self.requeue(entry);
    }

    fn requeue(&mut self, entry: Entry) {
        let strict = self.config.ordering() == Ordering::PerShardStrict;
        if strict {
            self.shards.enqueue_first(entry);
        } else {
            self.shards.add_retry(entry);
        }
    }

    /// Packs `records` (in order) into entries for `shard`: aggregates when aggregating (and the
    /// shard is predicted), else one entry each; sent no earlier than `not_before`.
    fn pack(
        &self,
        shard: &Arc<str>,
        records: Vec<Pending>,
        not_before: Instant,
        retries: u32,
    ) -> Vec<Entry> {
        let max_buffered = self.config.record_max_buffered_time();
        let mut out = Vec::new();
        if self.config.aggregation_enabled() && **shard != *UNPREDICTED {
            let mut aggregator = ShardAggregator::new(
                self.config.aggregation_max_size(),
                self.config.aggregation_max_count(),
            );
            for pending in records {
                aggregator.push(shard, pending, max_buffered, &mut out);
            }
            out.extend(aggregator.take(shard, max_buffered));
        } else {
            for pending in records {
                let due = later(pending.arrived, max_buffered);
                out.push(Entry::single(shard.clone(), pending, due));
            }
        }
        for entry in &mut out {
            entry.not_before = not_before;
            entry.due = not_before;
            entry.retries = retries;
        }
        out
    }

    /// Rebuilds entries from records (in order), routed by the current map, to be sent no
    /// earlier than `not_before`. In strict order they go to the front of their shards' queues.
    pub(super) fn reaggregate(&mut self, records: Vec<Pending>, not_before: Instant, retries: u32) {
        let mut groups: Vec<(Arc<str>, Vec<Pending>)> = Vec::new();
        for pending in records {
            let shard = match self.refresh.map().predict(pending.hash_key) {
                Some(shard) => shard.id.clone(),
                None => {
                    self.refresh.want();
                    Arc::from(UNPREDICTED)
                }
            };
            match groups.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, group)) => group.push(pending),
                None => groups.push((shard, vec![pending])),
            }
        }
        let mut rebuilt = Vec::new();
        for (shard, group) in groups {
            rebuilt.extend(self.pack(&shard, group, not_before, retries));
        }
        let strict = self.config.ordering() == Ordering::PerShardStrict;
        // In strict mode entries go to the queue front: push in reverse to keep their order.
        if strict {
            rebuilt.reverse();
        }
        for entry in rebuilt {
            self.requeue(entry);
        }
    }

    /// Expires every buffered record whose deadline has passed: queued, waiting out a backoff,
    /// in an open aggregate, or parked. What remains of a partly expired entry is rebuilt in its
    /// place, so the shard's order is kept.
    pub(super) fn expire_waiting(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let late = |p: &Pending| p.deadline <= now;
        let shards: Vec<Arc<str>> = self.shards.ids();
        for shard in shards {
            let Some(state) = self.shards.get_mut(&shard) else {
                continue;
            };
            let open_late = state.aggregator.records().iter().any(late);
            let queues_late = [&state.queue, &state.retries]
                .iter()
                .any(|q| q.iter().any(|e| e.records.iter().any(late)));
            if !open_late && !queues_late {
                continue;
            }
            if open_late {
                let (gone, live): (Vec<Pending>, Vec<Pending>) =
                    state.aggregator.drain().into_iter().partition(late);
                expired.extend(gone);
                let max_buffered = self.config.record_max_buffered_time();
                let mut finished = Vec::new();
                for pending in live {
                    state
                        .aggregator
                        .push(&shard, pending, max_buffered, &mut finished);
                }
                for entry in finished {
                    state.queue.push_back(entry);
                }
            }
            let queue = std::mem::take(&mut state.queue);
            let retries = std::mem::take(&mut state.retries);
            let mut rebuilt = [VecDeque::new(), VecDeque::new()];
            for (index, list) in [queue, retries].into_iter().enumerate() {
                for mut entry in list {
                    if !entry.records.iter().any(late) {
                        rebuilt[index].push_back(entry);
                        continue;
                    }
                    let (gone, live): (Vec<Pending>, Vec<Pending>) =
                        entry.records.drain(..).partition(late);
                    expired.extend(gone);
                    if !live.is_empty() {
                        let due = entry.due;
                        for mut packed in self.pack(&shard, live, entry.not_before, entry.retries) {
                            packed.due = due;
                            rebuilt[index].push_back(packed);
                        }
                    }
                }
            }
            let [queue, retries] = rebuilt;
            let state = self.shards.get_mut(&shard).expect("still there");
            state.queue = queue;
            state.retries = retries;
        }
        for parked in self.refresh.take_parked() {
            if !parked.records.iter().any(late) {
                self.refresh.keep_parked(parked);
                continue;
            }
            let Parked {
                records,
                stored,
                after_refresh,
                retries,
            } = parked;
            if stored.is_some() {
                // Stored, but on a shard not yet listed: whether that shard holds every record
                // of the aggregate (so that a consumer delivers them) cannot be told.
                for mut pending in records {
                    self.metrics.failed("unknown_outcome");
                    let (attempts, record) = (pending.take_attempts(), pending.take_record());
                    self.resolve(pending, Err(PutError::UnknownOutcome { attempts, record }));
                }
                continue;
            }
            let (gone, live): (Vec<Pending>, Vec<Pending>) = records.into_iter().partition(late);
            expired.extend(gone);
            if !live.is_empty() {
                self.refresh.keep_parked(Parked {
                    records: live,
                    stored,
                    after_refresh,
                    retries,
                });
            }
        }
        self.shards.recount();
        for pending in expired {
            self.expire(pending);
        }
        self.flushes.settle();
    }

    fn expire(&mut self, mut pending: Pending) {
        self.metrics.failed("expired");
        let (attempts, record) = (pending.take_attempts(), pending.take_record());
        self.resolve(pending, Err(PutError::Expired { attempts, record }));
    }

    fn resolve(&mut self, pending: Pending, result: Result<PutResult, PutError>) {
        self.flushes.resolved(pending.generation);
        // The caller may have dropped its future; the record was still put.
        let _ = pending.reply.send(result);
    }
}

/// Where an aggregate was stored, for its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// On a shard holding every record's hash key: stored where a consumer reads them.
    Right,
    /// On a shard not holding them all (the map was stale): every record goes again.
    Wrong,
    /// On a shard the map does not know yet: to be decided after the next listing.
    Unknown,
}

/// Where records with these hash keys stand, stored together on a shard whose range is `range`
/// (`None`: a shard not listed yet). The Java KCL drops an aggregate holding any record outside
/// its shard's range, so one record outside makes the whole aggregate wrong.
fn placement(range: Option<HashKeyRange>, mut hash_keys: impl Iterator<Item = u128>) -> Placement {
    match range {
        None => Placement::Unknown,
        Some(range) if hash_keys.all(|key| range.contains(key)) => Placement::Right,
        Some(_) => Placement::Wrong,
    }
}

/// What a failed entry's records come to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Retried after a backoff.
    Retry,
    /// Resolved [`PutError::Rejected`]: no retry can help.
    Reject,
    /// Resolved [`PutError::Throttled`]: throughput throttling with `fail_if_throttled` set.
    FailThrottled,
}

/// The verdict on an entry that failed with `kind` and `code`. As the KPL, `fail_if_throttled`
/// is about the shard's throughput only (not, say, KMS throttling).
fn verdict(kind: FailureKind, code: &str, fail_if_throttled: bool) -> Verdict {
    if kind == FailureKind::Final {
        Verdict::Reject
    } else if fail_if_throttled && code == THROUGHPUT_EXCEEDED {
        Verdict::FailThrottled
    } else {
        Verdict::Retry
    }
}

/// The attempt of `failure` in a call, shared with every other entry of the call that failed
/// alike (`failed` holds the call's distinct failures so far; the sender shares their texts).
fn shared_attempt(
    failed: &mut Vec<(Failure, Arc<Tried>)>,
    failure: &Failure,
    started: Instant,
    duration: Duration,
) -> Arc<Tried> {
    if let Some((_, tried)) = failed.iter().find(|(seen, _)| {
        Arc::ptr_eq(&seen.code, &failure.code) && Arc::ptr_eq(&seen.message, &failure.message)
    }) {
        return tried.clone();
    }
    let tried = Tried::new(started, duration, Some((&failure.code, &failure.message)));
    failed.push((failure.clone(), tried.clone()));
    tried
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aggregate_is_right_only_where_every_key_lies() {
        let lower = HashKeyRange::new(0, 99).expect("a range");
        assert_eq!(
            placement(Some(lower), [0, 50, 99].into_iter()),
            Placement::Right
        );
        assert_eq!(
            placement(Some(lower), [50, 100].into_iter()),
            Placement::Wrong
        );
        assert_eq!(placement(None, [50].into_iter()), Placement::Unknown);
    }

    #[test]
    fn only_final_failures_and_throughput_throttling_when_asked_fail_for_good() {
        let throttled = "ProvisionedThroughputExceededException";
        assert_eq!(
            verdict(FailureKind::Final, "ValidationException", false),
            Verdict::Reject
        );
        assert_eq!(
            verdict(FailureKind::Throttled, throttled, false),
            Verdict::Retry
        );
        assert_eq!(
            verdict(FailureKind::Throttled, throttled, true),
            Verdict::FailThrottled
        );
        assert_eq!(
            verdict(FailureKind::Throttled, "KMSThrottlingException", true),
            Verdict::Retry,
            "KMS throttling is not the shard's throughput"
        );
        assert_eq!(
            verdict(FailureKind::Transient, "InternalFailure", true),
            Verdict::Retry
        );
    }
}
