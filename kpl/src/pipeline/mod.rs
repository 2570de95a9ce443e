//! The producer's one background task: it owns every buffer, predicts shards, aggregates,
//! collects PutRecords calls under the per-shard rate limits, sends them, and settles each
//! record's future from the results.
//!
//! Everything here is plain state changed by one task, so no locks; the only concurrency is the
//! calls in flight and the shard-map listings (`JoinSet`s this task owns and drains before it
//! ends). The entries of a call stay here while it is in flight, so whatever becomes of its task,
//! every record is settled.
//!
//! The task's state is split into sub-states, each owned here and knowing none of the others:
//! `shards` (per-shard aggregators, queues, token buckets), `collect` (the next call from those
//! queues), `calls` (the calls in flight), `refresh` (the shard map, its listings, the parked
//! records) and `flush` (the flushes waiting). This module routes records between them and
//! decides what each call's results mean.
//!
//! A user record is `Ok` only once stored on a shard whose hash-key range holds its key, as the
//! KPL's retrier checks ("Wrong Shard"): an aggregate built for a shard that has just split can
//! land on a child that does not hold all of its records. Such an aggregate is sent again, every
//! record of it, re-routed with a map listed after it landed (the Java KCL drops a mixed
//! aggregate whole, so even its in-range records would be lost to a standard consumer).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kinesis_aggregation::HashKeyRange;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::PutError;
use crate::aggregator::{Entry, ShardAggregator};
use crate::clock::later;
use crate::config::{Ordering, ProducerConfig};
use crate::metrics::Metrics;
use crate::pending::{Pending, Tried};
use crate::result::PutResult;
use crate::retrier::{Failure, FailureKind, backoff};
use crate::sender::{Completed, EntryOutcome, put_records, request_entries};
use crate::shard_map::{Scope, ShardMap, StreamId};
use crate::strict::Blocks;

use self::calls::{Calls, Finished};
use self::collect::Limits;
use self::flush::Flushes;
use self::refresh::{MapRefresh, Parked, StoredAt};
use self::shards::{ShardQueues, ShardState};

mod calls;
mod collect;
mod flush;
mod refresh;
mod shards;

/// The shard key for records the map does not cover (a gap while a reshard is seen): they are
/// sent unaggregated, so Kinesis routes each by its own hash key, and the map is refreshed.
const UNPREDICTED: &str = "(unpredicted)";
/// How often records waiting in queues are checked against their deadlines.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// How many queued commands are taken per wake-up before the pipeline sends again.
const COMMAND_BATCH: usize = 4096;
/// The error code recorded for an attempt that stored an aggregate on a shard not holding all of
/// its records.
const WRONG_SHARD: &str = "WrongShard";
/// The attempt code of a call that ended without an answer.
const CALL_LOST: &str = "CallLost";
const THROUGHPUT_EXCEEDED: &str = "ProvisionedThroughputExceededException";

/// What the handle sends the pipeline.
pub(crate) enum Command {
    Put(Box<Pending>),
    /// Send everything now; answer when every record put before has resolved.
    Flush(oneshot::Sender<()>),
    /// Flush, stop accepting, finish, and end.
    Shutdown,
}

pub(crate) struct Pipeline {
    client: aws_sdk_kinesis::Client,
    stream: StreamId,
    config: ProducerConfig,
    /// Per shard: its aggregator, queues, limits and calls in flight.
    shards: ShardQueues,
    /// The PutRecords calls in flight, and those to send as they are.
    calls: Calls,
    /// The shard map, its refreshes, and the records parked until a fresh one.
    refresh: MapRefresh,
    /// Shutting down: everything buffered is due now, and the pipeline ends once idle.
    closing: bool,
    last_sweep: Instant,
    /// The one-shot flushes waiting for the records put before them.
    flushes: Flushes,
    metrics: Metrics,
}

impl Pipeline {
    pub(crate) fn new(
        client: aws_sdk_kinesis::Client,
        stream: StreamId,
        config: ProducerConfig,
        map: ShardMap,
        budget: Arc<Semaphore>,
    ) -> Self {
        let metrics = Metrics::new(stream.as_str());
        let shards = ShardQueues::new(
            config.aggregation_max_size(),
            config.aggregation_max_count(),
            config.rate_limit(),
        );
        let calls = Calls::new(budget);
        let refresh = MapRefresh::new(map, config.shard_map_refresh_interval(), Instant::now());
        Self {
            client,
            stream,
            config,
            shards,
            calls,
            refresh,
            closing: false,
            last_sweep: Instant::now(),
            flushes: Flushes::default(),
            metrics,
        }
    }

    /// Runs until shut down (or every handle is dropped) and everything put has resolved.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            self.drive(Instant::now());
            if self.closing && self.is_idle() {
                break;
            }
            let wake = self.next_wake(Instant::now());
            let budget = self.calls.budget();
            tokio::select! {
                command = commands.recv(), if !self.closing => {
                    match command {
                        Some(command) => {
                            self.handle(command);
                            for _ in 0..COMMAND_BATCH {
                                match commands.try_recv() {
                                    Ok(command) => self.handle(command),
                                    Err(_) => break,
                                }
                                if self.closing {
                                    break;
                                }
                            }
                        }
                        // Every handle is gone: finish what was put, then end.
                        None => self.begin_shutdown(),
                    }
                }
                // Something to send, and the connection budget (shared with the producer's other
                // streams) spent: wake when a permit comes back.
                permit = Calls::wait_for_budget(budget), if self.calls.is_starved() => {
                    self.calls.give(permit);
                }
                Some(finished) = self.calls.join_next() => match finished {
                    Finished::Answered(entries, completed) => self.complete(entries, completed),
                    Finished::Lost(entries, join_error) => self.lost(entries, join_error),
                },
                Some(refreshed) = self.refresh.join_next() => match refreshed {
                    Ok((number, scope, Ok(map))) => {
                        self.refresh.succeeded(Instant::now());
                        self.apply_map(map);
                        self.release_parked(number, scope);
                    }
                    Ok((_, scope, Err(error))) => {
                        tracing::warn!(%error, "shard map refresh failed; keeping the old map");
                        self.refresh.failed(scope, Instant::now());
                    }
                    Err(join_error) => {
                        tracing::error!(%join_error, "shard map refresh task failed");
                        self.refresh.failed(Scope::All, Instant::now());
                    }
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        // Reject what arrived after the shutdown began.
        commands.close();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Put(pending) => {
                    let mut pending = *pending;
                    let record = Some(pending.take_record());
                    let _ = pending.reply.send(Err(PutError::ShutDown { record }));
                }
                Command::Flush(done) => {
                    let _ = done.send(());
                }
                Command::Shutdown => {}
            }
        }
        self.flushes.release_all();
        self.refresh.abort();
        tracing::debug!("producer pipeline finished");
    }

    fn is_idle(&self) -> bool {
        self.calls.is_idle() && !self.refresh.has_parked() && self.shards.all_empty()
    }

    /// A PutRecords task died without an answer (a panic, in user code such as an interceptor):
    /// its records may or may not be stored, and say so.
    fn lost(&mut self, entries: Vec<Entry>, join_error: tokio::task::JoinError) {
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

    fn handle(&mut self, command: Command) {
        match command {
            Command::Put(pending) => {
                let mut pending = *pending;
                pending.generation = self.flushes.accepted();
                self.route(pending);
            }
            Command::Flush(done) => {
                self.flushes.wait(done);
                self.flush_now(Instant::now());
                self.flushes.settle();
            }
            Command::Shutdown => self.begin_shutdown(),
        }
    }

    fn begin_shutdown(&mut self) {
        self.closing = true;
    }

    /// A flush: closes the open aggregates and makes everything queued due now. One-shot: what
    /// is put afterwards is buffered as usual.
    fn flush_now(&mut self, now: Instant) {
        let max_buffered = self.config.record_max_buffered_time();
        let mut finished = Vec::new();
        for (shard, state) in self.shards.iter_mut() {
            for entry in &mut state.queue {
                entry.due = entry.due.min(now);
            }
            finished.extend(state.aggregator.take(shard, max_buffered));
        }
        for mut entry in finished {
            entry.due = entry.due.min(now);
            self.enqueue(entry);
        }
    }

    /// Puts a record into the aggregator (or queue) of its predicted shard.
    fn route(&mut self, pending: Pending) {
        let max_buffered = self.config.record_max_buffered_time();
        let shard: Arc<str> = match self.refresh.map().predict(pending.hash_key) {
            Some(shard) => shard.id.clone(),
            None => {
                self.refresh.want();
                let due = later(pending.arrived, max_buffered);
                self.enqueue(Entry::single(Arc::from(UNPREDICTED), pending, due));
                return;
            }
        };
        let aggregate = self.config.aggregation_enabled();
        let state = self.shards.state(&shard);
        let mut finished = Vec::new();
        if aggregate {
            state
                .aggregator
                .push(&shard, pending, max_buffered, &mut finished);
        } else {
            let due = later(pending.arrived, max_buffered);
            finished.push(Entry::single(shard.clone(), pending, due));
        }
        for entry in finished {
            self.enqueue(entry);
        }
    }

    fn enqueue(&mut self, entry: Entry) {
        self.shards.enqueue(entry);
    }

    /// Sends whatever may be sent now.
    fn drive(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) >= EXPIRY_SWEEP {
            self.last_sweep = now;
            self.expire_waiting(now);
        }
        self.close_due_aggregates(now);
        self.refresh.maybe_start(now, &self.client, &self.stream);
        while let Some(batch) = self.calls.next_isolated() {
            self.send(batch);
        }
        // Room is asked for only with something buffered, so that an idle stream takes no
        // permit of the budget it shares with the producer's other streams.
        while !self.shards.all_empty() && self.calls.has_room() {
            let batch = self.collect(now);
            if batch.is_empty() {
                break;
            }
            self.send(batch);
        }
        self.calls.release_spare();
    }

    /// In strict order, what holds shards back besides their own calls (see [`crate::strict`]).
    fn strict_blocks(&self) -> Blocks {
        if self.config.ordering() != Ordering::PerShardStrict {
            return Blocks::default();
        }
        let ranges = self
            .shards
            .iter()
            .filter(|(id, state)| state.in_flight > 0 && !self.refresh.map().contains(id))
            .map(|(id, _)| range_of(self.refresh.map(), id))
            .collect();
        let keys = self.refresh.parked_hash_keys().collect();
        Blocks::new(ranges, keys)
    }

    /// Closes aggregates whose first record has waited `record_max_buffered_time` (all of them
    /// while shutting down).
    fn close_due_aggregates(&mut self, now: Instant) {
        let max_buffered = self.config.record_max_buffered_time();
        let mut finished = Vec::new();
        for (shard, state) in self.shards.iter_mut() {
            let due = state
                .aggregator
                .first_arrival()
                .is_some_and(|first| self.closing || later(first, max_buffered) <= now);
            if due {
                finished.extend(state.aggregator.take(shard, max_buffered));
            }
        }
        for entry in finished {
            self.enqueue(entry);
        }
    }

    /// Picks the entries of the next PutRecords call, or none if nothing should go yet (see
    /// [`collect::collect`]).
    fn collect(&mut self, now: Instant) -> Vec<Entry> {
        let strict = self.config.ordering() == Ordering::PerShardStrict;
        let limits = Limits {
            max_count: self.config.collection_max_count(),
            max_bytes: self.config.collection_max_size(),
            strict,
        };
        let blocks = self.strict_blocks();
        let map = self.refresh.map();
        let held_back = |id: &str, state: &ShardState| held_back(strict, map, id, state, &blocks);
        collect::collect(&mut self.shards, &limits, self.closing, held_back, now)
    }

    fn send(&mut self, batch: Vec<Entry>) {
        let now = Instant::now();
        for entry in &batch {
            for pending in &entry.records {
                if pending.untried() {
                    self.metrics
                        .buffered_time
                        .record(now.saturating_duration_since(pending.arrived).as_secs_f64());
                }
            }
        }
        let client = self.client.clone();
        let stream = self.stream.clone();
        let timeout = self.config.request_timeout();
        let records = request_entries(&batch);
        let call = put_records(client, stream, records, batch.len(), timeout);
        self.calls.start(batch, call);
    }

    /// Settles a finished call: resolves what was stored on the right shard or failed for good,
    /// parks what landed on the wrong shard (or one not yet known), schedules retries.
    fn complete(&mut self, entries: Vec<Entry>, completed: Completed) {
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
                    match self.refresh.map().range_of(&stored.shard_id) {
                        Some(range) if all_within(&entry.records, range) => {
                            self.stored(entry.records, true, stored);
                        }
                        Some(_) => {
                            let records = self.wrong_shard(entry.records, &stored);
                            self.refresh.park(records, None, entry.retries);
                        }
                        None => self
                            .refresh
                            .park(entry.records, Some(stored), entry.retries),
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
                    // As the KPL, `fail_if_throttled` is about the shard's throughput only.
                    let throughput = &*failure.code == THROUGHPUT_EXCEEDED;
                    if failure.kind == FailureKind::Final
                        || (throughput && self.config.fail_if_throttled())
                    {
                        tracing::debug!(code = %failure.code, records = entry.records.len(), "entry failed for good");
                        for mut pending in entry.records.drain(..) {
                            let (attempts, record) =
                                (pending.take_attempts(), pending.take_record());
                            let source = failure.source.clone();
                            let error = if failure.kind == FailureKind::Final {
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
    fn release_parked(&mut self, number: u64, scope: Scope) {
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
            match self.refresh.map().range_of(&stored.shard_id) {
                Some(range) if all_within(&records, range) => self.stored(records, true, stored),
                Some(_) => {
                    let records = self.wrong_shard(records, &stored);
                    self.reaggregate(records, now, retries);
                }
                None if scope == Scope::All => {
                    // Not even listed among the closed shards: where it landed cannot be
                    // checked, so it is sent again.
                    let records = self.wrong_shard(records, &stored);
                    self.reaggregate(records, now, retries);
                }
                None => {
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
    fn reaggregate(&mut self, records: Vec<Pending>, not_before: Instant, retries: u32) {
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
    fn expire_waiting(&mut self, now: Instant) {
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

    /// Takes a new map and re-routes every buffered record whose shard changed. Records in
    /// flight stay where they are; in strict order the new shards wait for them (see
    /// [`crate::strict`]).
    fn apply_map(&mut self, map: ShardMap) {
        if !self.refresh.replace_map(map) {
            return;
        }
        tracing::info!(
            open_shards = self.refresh.map().len(),
            "shard map refreshed"
        );
        self.metrics.shard_map_refreshes.increment(1);
        let now = Instant::now();
        let shards: Vec<Arc<str>> = self.shards.ids();
        for shard in shards {
            let Some(state) = self.shards.get_mut(&shard) else {
                continue;
            };
            let map = self.refresh.map();
            let stale = |p: &Pending| map.predict(p.hash_key).map(|s| &s.id) != Some(&shard);
            let any_stale = state
                .queue
                .iter()
                .chain(state.retries.iter())
                .any(|e| e.records.iter().any(stale))
                || state.aggregator.records().iter().any(stale);
            if !any_stale {
                continue;
            }
            // Take everything of this shard out, in its sending order, and route it again.
            let mut records: Vec<Pending> = Vec::new();
            let retries: Vec<Entry> = state.retries.drain(..).collect();
            for entry in retries.into_iter().chain(state.queue.drain(..)) {
                records.extend(entry.records);
            }
            records.extend(state.aggregator.drain());
            self.reaggregate(records, now, 0);
        }
        self.shards.recount();
        // Forget shards that are closed and have nothing left.
        let map = self.refresh.map();
        self.shards
            .retain(|id, state| !state.is_empty() || state.in_flight > 0 || map.contains(id));
    }

    /// When the loop must wake up to send something, at the latest.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + EXPIRY_SWEEP;
        if let Some(at) = self.refresh.wake_at(now) {
            wake = wake.min(at);
        }
        if !self.calls.is_starved() {
            let max_buffered = self.config.record_max_buffered_time();
            let blocks = self.strict_blocks();
            let strict = self.config.ordering() == Ordering::PerShardStrict;
            for (id, state) in self.shards.iter() {
                if held_back(strict, self.refresh.map(), id, state, &blocks) {
                    continue;
                }
                let mut shard_wake = None::<Instant>;
                if let Some(first) = state.aggregator.first_arrival() {
                    shard_wake = Some(later(first, max_buffered));
                }
                if let Some(entry) = state.queue.front() {
                    let at = entry.due.max(entry.not_before);
                    shard_wake = Some(shard_wake.map_or(at, |w| w.min(at)));
                }
                if let Some(entry) = state.retries.front() {
                    let at = entry.not_before;
                    shard_wake = Some(shard_wake.map_or(at, |w| w.min(at)));
                }
                if let Some(at) = shard_wake {
                    let at = match state.blocked_until {
                        Some(until) => at.max(until),
                        None => at,
                    };
                    wake = wake.min(at);
                }
            }
        }
        // Never spin: something due now that could not go waits at least a millisecond.
        wake.max(now + Duration::from_millis(1))
    }
}

/// The hash-key range of a shard state: everything for the unpredicted records or a shard
/// never listed.
fn range_of(map: &ShardMap, shard: &str) -> HashKeyRange {
    if shard == UNPREDICTED {
        return HashKeyRange::ALL;
    }
    map.range_of(shard).unwrap_or(HashKeyRange::ALL)
}

/// Whether strict order holds this shard back now.
fn held_back(
    strict: bool,
    map: &ShardMap,
    shard: &str,
    state: &ShardState,
    blocks: &Blocks,
) -> bool {
    strict
        && (state.in_flight > 0 || (!blocks.is_empty() && blocks.holds_back(range_of(map, shard))))
}

/// Whether the hash-key range `(start, end)` holds the key of every record.
fn all_within(records: &[Pending], range: HashKeyRange) -> bool {
    records.iter().all(|p| range.contains(p.hash_key))
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
