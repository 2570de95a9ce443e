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
//! queues), `calls` (the calls in flight, within the producer's connection budget), `refresh`
//! (the shard map, its listings, the parked records) and `flush` (the flushes waiting). This
//! module runs the task and routes records between them; `settle` decides what each call's
//! results mean for its records.
//!
//! A user record is `Ok` only once stored on a shard whose hash-key range holds its key, as the
//! KPL's retrier checks ("Wrong Shard"): an aggregate built for a shard that has just split can
//! land on a child that does not hold all of its records. Such an aggregate is sent again, every
//! record of it, re-routed with a map listed after it landed (the Java KCL drops a mixed
//! aggregate whole, so even its in-range records would be lost to a standard consumer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kinesis_aggregation::HashKeyRange;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::PutError;
use crate::aggregator::Entry;
use crate::clock::later;
use crate::config::{Ordering, ProducerConfig};
use crate::metrics::Metrics;
use crate::pending::Pending;
use crate::sender::{put_records, request_entries};
use crate::shard_map::{Scope, ShardMap, StreamId};
use crate::strict::Blocks;

use self::calls::{Calls, Finished};
use self::collect::Limits;
use self::flush::Flushes;
use self::refresh::MapRefresh;
use self::shards::{ShardQueues, ShardState};

mod calls;
mod collect;
mod flush;
mod refresh;
mod settle;
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
