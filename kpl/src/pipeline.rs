//! The producer's one background task: it owns every buffer, predicts shards, aggregates,
//! collects PutRecords calls under the per-shard rate limits, sends them, and settles each
//! record's future from the results.
//!
//! Everything here is plain state changed by one task, so no locks; the only concurrency is the
//! calls in flight (a `JoinSet` this task owns and drains before it ends).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use crate::Error;
use crate::aggregator::{Entry, ShardAggregator};
use crate::config::{Config, Ordering};
use crate::metrics::Metrics;
use crate::pending::Pending;
use crate::result::PutResult;
use crate::retrier::{FailureKind, backoff};
use crate::sender::{Completed, EntryOutcome, put_records};
use crate::shard_map::{ShardMap, StreamId};

/// The shard key for records the map does not cover (a gap while a reshard is seen): they are
/// still sent, routed by Kinesis through their hash key, and the map is refreshed.
const UNPREDICTED: &str = "(unpredicted)";
/// How often records waiting in queues are checked against their deadlines.
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);
/// How many queued commands are taken per wake-up before the pipeline sends again.
const COMMAND_BATCH: usize = 4096;

/// What the handle sends the pipeline.
pub(crate) enum Command {
    Put(Box<Pending>),
    /// Send everything now; answer when every record put before has resolved.
    Flush(oneshot::Sender<()>),
    /// Flush, stop accepting, finish, and end.
    Shutdown,
}

struct ShardState {
    aggregator: ShardAggregator,
    /// Finished Kinesis records, oldest first. In strict order mode, retries go back to the
    /// front of this queue.
    queue: VecDeque<Entry>,
    /// Entries waiting out a backoff (unordered mode only).
    retries: VecDeque<Entry>,
    limiter: crate::limiter::ShardLimiter,
    /// Not to be sent to before this (rate limit).
    blocked_until: Option<Instant>,
    in_flight: usize,
}

impl ShardState {
    fn is_empty(&self) -> bool {
        self.aggregator.is_empty() && self.queue.is_empty() && self.retries.is_empty()
    }
}

pub(crate) struct Pipeline {
    client: aws_sdk_kinesis::Client,
    stream: StreamId,
    config: Config,
    map: ShardMap,
    shards: HashMap<Arc<str>, ShardState>,
    /// Shard visiting order, rotated so that no shard is always served first.
    rotation: VecDeque<Arc<str>>,
    requests: JoinSet<Completed>,
    /// The predicted shard of each entry of each PutRecords task, to free the shards' send
    /// slots if a task dies without completing.
    request_shards: HashMap<tokio::task::Id, Vec<Arc<str>>>,
    in_flight: usize,
    refresh: JoinSet<Result<ShardMap, Error>>,
    last_refresh: Option<Instant>,
    refresh_wanted: bool,
    /// Entries in `queue`s, and their bytes: a full request's worth is sent without waiting.
    queued_entries: usize,
    queued_bytes: usize,
    /// Everything buffered is due now (a flush or the shutdown).
    flushing: bool,
    closing: bool,
    last_sweep: Instant,
    /// Unresolved records per flush generation, and the flushes waiting on them.
    generation: u64,
    unresolved: BTreeMap<u64, usize>,
    flush_waiters: Vec<(u64, oneshot::Sender<()>)>,
    metrics: Metrics,
}

impl Pipeline {
    pub(crate) fn new(
        client: aws_sdk_kinesis::Client,
        stream: StreamId,
        config: Config,
        map: ShardMap,
    ) -> Self {
        let metrics = Metrics::new(stream.as_str());
        Self {
            client,
            stream,
            config,
            map,
            shards: HashMap::new(),
            rotation: VecDeque::new(),
            requests: JoinSet::new(),
            request_shards: HashMap::new(),
            in_flight: 0,
            refresh: JoinSet::new(),
            last_refresh: Some(Instant::now()),
            refresh_wanted: false,
            queued_entries: 0,
            queued_bytes: 0,
            flushing: false,
            closing: false,
            last_sweep: Instant::now(),
            generation: 0,
            unresolved: BTreeMap::new(),
            flush_waiters: Vec::new(),
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
                Some(done) = self.requests.join_next_with_id() => match done {
                    Ok((id, completed)) => {
                        self.request_shards.remove(&id);
                        self.complete(completed);
                    }
                    Err(join_error) => {
                        // A panicking send task loses its entries' futures (their senders drop,
                        // so the futures resolve to ShutDown); never expected. Free the slots
                        // its entries held, or strict ordering would stall those shards.
                        self.in_flight -= 1;
                        for shard in self.request_shards.remove(&join_error.id()).unwrap_or_default() {
                            if let Some(state) = self.shards.get_mut(&shard) {
                                state.in_flight = state.in_flight.saturating_sub(1);
                            }
                        }
                        tracing::error!(%join_error, "a PutRecords task failed");
                    }
                },
                Some(refreshed) = self.refresh.join_next() => match refreshed {
                    Ok(Ok(map)) => self.apply_map(map),
                    Ok(Err(error)) => tracing::warn!(%error, "shard map refresh failed; keeping the old map"),
                    Err(join_error) => tracing::error!(%join_error, "shard map refresh task failed"),
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        // Reject what arrived after the shutdown began.
        commands.close();
        while let Ok(command) = commands.try_recv() {
            match command {
                Command::Put(pending) => {
                    let _ = pending.reply.send(Err(Error::ShutDown));
                }
                Command::Flush(done) => {
                    let _ = done.send(());
                }
                Command::Shutdown => {}
            }
        }
        for (_, waiter) in self.flush_waiters.drain(..) {
            let _ = waiter.send(());
        }
        self.refresh.abort_all();
        tracing::debug!("producer pipeline finished");
    }

    fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.shards.values().all(ShardState::is_empty)
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Put(pending) => {
                *self.unresolved.entry(self.generation).or_default() += 1;
                let mut pending = *pending;
                pending.generation = self.generation;
                self.route(pending);
            }
            Command::Flush(done) => {
                self.flush_waiters.push((self.generation, done));
                self.generation += 1;
                self.flushing = true;
                self.settle_flushes();
            }
            Command::Shutdown => self.begin_shutdown(),
        }
    }

    fn begin_shutdown(&mut self) {
        self.closing = true;
        self.flushing = true;
    }

    /// Puts a record into the aggregator (or queue) of its predicted shard.
    fn route(&mut self, pending: Pending) {
        let shard: Arc<str> = match self.map.predict(pending.hash_key) {
            Some(shard) => shard.id.clone(),
            None => {
                self.refresh_wanted = true;
                Arc::from(UNPREDICTED)
            }
        };
        let max_buffered = self.config.record_max_buffered_time();
        let aggregate = self.config.aggregation_enabled();
        let state = self.shard_state(&shard);
        let mut finished = Vec::new();
        if aggregate {
            state
                .aggregator
                .push(&shard, pending, max_buffered, &mut finished);
        } else {
            let due = pending.arrived + max_buffered;
            finished.push(Entry::single(shard.clone(), pending, due));
        }
        for entry in finished {
            self.enqueue(entry);
        }
    }

    fn shard_state(&mut self, shard: &Arc<str>) -> &mut ShardState {
        if !self.shards.contains_key(shard) {
            self.rotation.push_back(shard.clone());
            self.shards.insert(
                shard.clone(),
                ShardState {
                    aggregator: ShardAggregator::new(
                        self.config.aggregation_max_size(),
                        self.config.aggregation_max_count(),
                    ),
                    queue: VecDeque::new(),
                    retries: VecDeque::new(),
                    limiter: crate::limiter::ShardLimiter::new(
                        self.config.rate_limit(),
                        Instant::now(),
                    ),
                    blocked_until: None,
                    in_flight: 0,
                },
            );
        }
        self.shards
            .get_mut(shard)
            .expect("the shard state was just inserted")
    }

    fn enqueue(&mut self, entry: Entry) {
        self.queued_entries += 1;
        self.queued_bytes += entry.size();
        let shard = entry.shard.clone();
        self.shard_state(&shard).queue.push_back(entry);
    }

    /// Sends whatever may be sent now.
    fn drive(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_sweep) >= EXPIRY_SWEEP {
            self.last_sweep = now;
            self.expire_waiting(now);
        }
        self.close_due_aggregates(now);
        self.maybe_refresh(now);
        while self.in_flight < self.config.max_connections() {
            let batch = self.collect(now);
            if batch.is_empty() {
                break;
            }
            self.send(batch);
        }
        if self.flushing && !self.closing && self.shards.values().all(ShardState::is_empty) {
            self.flushing = false;
        }
    }

    /// Closes aggregates whose first record has waited `record_max_buffered_time` (all of them
    /// while flushing).
    fn close_due_aggregates(&mut self, now: Instant) {
        let max_buffered = self.config.record_max_buffered_time();
        let mut finished = Vec::new();
        for (shard, state) in &mut self.shards {
            let due = state
                .aggregator
                .first_arrival()
                .is_some_and(|first| self.flushing || first + max_buffered <= now);
            if due {
                finished.extend(state.aggregator.take(shard, max_buffered));
            }
        }
        for entry in finished {
            self.enqueue(entry);
        }
    }

    /// Picks the entries of the next PutRecords call, or none if nothing should go yet.
    ///
    /// A call goes when a full call's worth is queued, when something queued is due, while
    /// flushing, or when a retry's backoff has ended. It is then filled with whatever the rate
    /// limits allow, up to the collection limits.
    fn collect(&mut self, now: Instant) -> Vec<Entry> {
        let max_count = self.config.collection_max_count();
        let max_bytes = self.config.collection_max_size();
        let strict = self.config.ordering() == Ordering::PerShardStrict;
        let full_call_queued = self.queued_entries >= max_count || self.queued_bytes >= max_bytes;
        let something_due = full_call_queued
            || self.flushing
            || self.shards.values().any(|s| {
                !(strict && s.in_flight > 0)
                    && (s
                        .queue
                        .front()
                        .is_some_and(|e| e.due <= now && e.not_before <= now)
                        || s.retries.front().is_some_and(|e| e.not_before <= now))
            });
        if !something_due {
            return Vec::new();
        }

        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for _ in 0..self.rotation.len() {
            if batch.len() >= max_count {
                break;
            }
            let Some(shard) = self.rotation.pop_front() else {
                break;
            };
            self.rotation.push_back(shard.clone());
            let Some(state) = self.shards.get_mut(&shard) else {
                continue;
            };
            if strict && state.in_flight > 0 {
                continue;
            }
            if state.blocked_until.is_some_and(|until| until > now) {
                continue;
            }
            state.blocked_until = None;
            loop {
                if batch.len() >= max_count {
                    break;
                }
                // Ready retries first, then queued entries in order.
                let from_retries = state.retries.front().is_some_and(|e| e.not_before <= now);
                let candidate = if from_retries {
                    state.retries.front()
                } else {
                    state.queue.front().filter(|e| e.not_before <= now)
                };
                let Some(candidate) = candidate else { break };
                let size = candidate.size();
                if bytes + size > max_bytes {
                    break;
                }
                if let Err(wait) = state.limiter.try_take(size, now) {
                    state.blocked_until = Some(now + wait);
                    break;
                }
                let entry = if from_retries {
                    state.retries.pop_front()
                } else {
                    let entry = state.queue.pop_front();
                    if let Some(entry) = &entry {
                        self.queued_entries -= 1;
                        self.queued_bytes -= entry.size();
                    }
                    entry
                };
                let Some(entry) = entry else { break };
                bytes += size;
                state.in_flight += 1;
                batch.push(entry);
                if strict {
                    break;
                }
            }
        }
        batch
    }

    fn send(&mut self, batch: Vec<Entry>) {
        self.in_flight += 1;
        let now = Instant::now();
        for entry in &batch {
            for pending in &entry.records {
                if pending.attempts.is_empty() {
                    self.metrics
                        .buffered_time
                        .record(now.saturating_duration_since(pending.arrived).as_secs_f64());
                }
            }
        }
        let client = self.client.clone();
        let stream = self.stream.clone();
        let timeout = self.config.request_timeout();
        let shards = batch.iter().map(|e| e.shard.clone()).collect();
        let task = self
            .requests
            .spawn(put_records(client, stream, batch, timeout));
        self.request_shards.insert(task.id(), shards);
    }

    /// Settles a finished call: resolves what was stored or failed for good, schedules retries.
    fn complete(&mut self, completed: Completed) {
        self.in_flight -= 1;
        self.metrics
            .request_duration
            .record(completed.duration.as_secs_f64());
        let now = Instant::now();
        let Completed {
            entries,
            outcomes,
            started,
            duration,
        } = completed;
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
                        self.refresh_wanted = true;
                    }
                    self.metrics.kinesis_records_put.increment(1);
                    self.metrics
                        .user_records_per_kinesis_record
                        .record(entry.records.len() as f64);
                    let aggregated = entry.aggregated;
                    for (index, mut pending) in entry.records.drain(..).enumerate() {
                        pending.record_attempt(started, duration, None);
                        let result = PutResult {
                            shard_id: shard_id.clone(),
                            sequence_number: sequence_number.clone(),
                            sub_sequence_number: if aggregated { index as u64 } else { 0 },
                            attempts: std::mem::take(&mut pending.attempts),
                        };
                        self.metrics.user_records_put.increment(1);
                        self.resolve(pending, Ok(result));
                    }
                }
                EntryOutcome::Failed(failure) => {
                    for pending in &mut entry.records {
                        pending.record_attempt(
                            started,
                            duration,
                            Some((&failure.code, &failure.message)),
                        );
                    }
                    let throttled = failure.kind == FailureKind::Throttled;
                    if throttled {
                        self.metrics.throttles.increment(1);
                    }
                    if failure.kind == FailureKind::Final
                        || (throttled && self.config.fail_if_throttled())
                    {
                        tracing::debug!(code = %failure.code, records = entry.records.len(), "entry failed for good");
                        for mut pending in entry.records.drain(..) {
                            let attempts = std::mem::take(&mut pending.attempts);
                            let error = if failure.kind == FailureKind::Final {
                                self.metrics.failed("rejected");
                                Error::Rejected { attempts }
                            } else {
                                self.metrics.failed("throttled");
                                Error::Throttled { attempts }
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
        self.settle_flushes();
    }

    /// Puts a failed entry back after its next backoff delay. Records whose deadline falls
    /// before the retry expire now (no attempt could be made in time).
    fn schedule_retry(&mut self, mut entry: Entry, now: Instant) {
        let delay = backoff(self.config.min_backoff(), self.config.max_backoff())
            .nth(entry.retries as usize)
            .unwrap_or(self.config.max_backoff());
        entry.retries = entry.retries.saturating_add(1);
        let retry_at = now + delay;
        let before = entry.records.len();
        let (keep, expired): (Vec<Pending>, Vec<Pending>) = entry
            .records
            .drain(..)
            .partition(|pending| pending.deadline > retry_at);
        for pending in expired {
            self.expire(pending);
        }
        if keep.is_empty() {
            return;
        }
        let moved = keep
            .iter()
            .any(|p| self.map.predict(p.hash_key).map(|s| &s.id) != Some(&entry.shard));
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
        let shard = entry.shard.clone();
        if strict {
            self.queued_entries += 1;
            self.queued_bytes += entry.size();
            self.shard_state(&shard).queue.push_front(entry);
        } else {
            self.shard_state(&shard).retries.push_back(entry);
        }
    }

    /// Rebuilds entries from records (in order), routed by the current map, to be sent no
    /// earlier than `not_before`.
    fn reaggregate(&mut self, records: Vec<Pending>, not_before: Instant, retries: u32) {
        let max_buffered = self.config.record_max_buffered_time();
        let mut groups: Vec<(Arc<str>, ShardAggregator, Vec<Entry>)> = Vec::new();
        for pending in records {
            let shard: Arc<str> = self
                .map
                .predict(pending.hash_key)
                .map(|s| s.id.clone())
                .unwrap_or_else(|| Arc::from(UNPREDICTED));
            let index = match groups.iter().position(|(s, _, _)| *s == shard) {
                Some(index) => index,
                None => {
                    groups.push((
                        shard.clone(),
                        ShardAggregator::new(
                            self.config.aggregation_max_size(),
                            self.config.aggregation_max_count(),
                        ),
                        Vec::new(),
                    ));
                    groups.len() - 1
                }
            };
            let (shard, aggregator, out) = &mut groups[index];
            if self.config.aggregation_enabled() {
                aggregator.push(shard, pending, max_buffered, out);
            } else {
                let due = pending.arrived + max_buffered;
                out.push(Entry::single(shard.clone(), pending, due));
            }
        }
        let mut rebuilt = Vec::new();
        for (shard, mut aggregator, out) in groups {
            rebuilt.extend(out);
            rebuilt.extend(aggregator.take(&shard, max_buffered));
        }
        let strict = self.config.ordering() == Ordering::PerShardStrict;
        // In strict mode entries go to the queue front: push in reverse to keep their order.
        if strict {
            rebuilt.reverse();
        }
        for mut entry in rebuilt {
            entry.not_before = not_before;
            entry.due = not_before;
            entry.retries = retries;
            self.requeue(entry);
        }
    }

    /// Expires queued and waiting records whose deadline has passed.
    fn expire_waiting(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut rebuild = Vec::new();
        for state in self.shards.values_mut() {
            for queue in [&mut state.queue, &mut state.retries] {
                if !queue
                    .iter()
                    .any(|e| e.records.iter().any(|p| p.deadline <= now))
                {
                    continue;
                }
                let mut kept = VecDeque::with_capacity(queue.len());
                for mut entry in queue.drain(..) {
                    if !entry.records.iter().any(|p| p.deadline <= now) {
                        kept.push_back(entry);
                        continue;
                    }
                    let (late, live): (Vec<Pending>, Vec<Pending>) =
                        entry.records.drain(..).partition(|p| p.deadline <= now);
                    expired.extend(late);
                    if !live.is_empty() {
                        rebuild.push((live, entry.not_before, entry.retries));
                    }
                }
                *queue = kept;
            }
        }
        if expired.is_empty() {
            return;
        }
        self.recount_queued();
        for pending in expired {
            self.expire(pending);
        }
        for (live, not_before, retries) in rebuild {
            self.reaggregate(live, not_before, retries);
        }
        self.settle_flushes();
    }

    fn recount_queued(&mut self) {
        self.queued_entries = self.shards.values().map(|s| s.queue.len()).sum();
        self.queued_bytes = self
            .shards
            .values()
            .flat_map(|s| s.queue.iter())
            .map(Entry::size)
            .sum();
    }

    fn expire(&mut self, mut pending: Pending) {
        self.metrics.failed("expired");
        let attempts = std::mem::take(&mut pending.attempts);
        self.resolve(pending, Err(Error::Expired { attempts }));
    }

    fn resolve(&mut self, pending: Pending, result: Result<PutResult, Error>) {
        if let Some(count) = self.unresolved.get_mut(&pending.generation) {
            *count -= 1;
            if *count == 0 {
                self.unresolved.remove(&pending.generation);
            }
        }
        // The caller may have dropped its future; the record was still put.
        let _ = pending.reply.send(result);
    }

    /// Answers the flushes whose records have all resolved.
    fn settle_flushes(&mut self) {
        let oldest_unresolved = self.unresolved.keys().next().copied();
        let mut index = 0;
        while index < self.flush_waiters.len() {
            let generation = self.flush_waiters[index].0;
            if oldest_unresolved.is_none_or(|oldest| oldest > generation) {
                let (_, waiter) = self.flush_waiters.swap_remove(index);
                let _ = waiter.send(());
            } else {
                index += 1;
            }
        }
    }

    /// Starts a ListShards refresh if one is wanted and the last was long enough ago.
    fn maybe_refresh(&mut self, now: Instant) {
        if !self.refresh_wanted || !self.refresh.is_empty() {
            return;
        }
        let interval = self.config.shard_map_refresh_interval();
        if self
            .last_refresh
            .is_some_and(|last| now.saturating_duration_since(last) < interval)
        {
            return;
        }
        self.refresh_wanted = false;
        self.last_refresh = Some(now);
        let client = self.client.clone();
        let stream = self.stream.clone();
        self.refresh
            .spawn(async move { ShardMap::fetch(&client, &stream).await });
    }

    /// Takes a new map and re-routes every buffered record whose shard changed.
    fn apply_map(&mut self, map: ShardMap) {
        self.last_refresh = Some(Instant::now());
        if map == self.map {
            return;
        }
        tracing::info!(open_shards = map.len(), "shard map refreshed");
        self.metrics.shard_map_refreshes.increment(1);
        self.map = map;
        let now = Instant::now();
        let shards: Vec<Arc<str>> = self.shards.keys().cloned().collect();
        for shard in shards {
            let Some(state) = self.shards.get_mut(&shard) else {
                continue;
            };
            let map = &self.map;
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
        self.recount_queued();
        // Forget shards that are closed and have nothing left.
        let map = &self.map;
        self.shards
            .retain(|id, state| !state.is_empty() || state.in_flight > 0 || map.contains(id));
        let shards = &self.shards;
        self.rotation.retain(|id| shards.contains_key(id));
    }

    /// When the loop must wake up to send something, at the latest.
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + EXPIRY_SWEEP;
        if self.refresh_wanted
            && self.refresh.is_empty()
            && let Some(last) = self.last_refresh
        {
            wake = wake.min(last + self.config.shard_map_refresh_interval());
        }
        if self.in_flight < self.config.max_connections() {
            let strict = self.config.ordering() == Ordering::PerShardStrict;
            let max_buffered = self.config.record_max_buffered_time();
            for state in self.shards.values() {
                if strict && state.in_flight > 0 {
                    continue;
                }
                let mut shard_wake = None::<Instant>;
                if let Some(first) = state.aggregator.first_arrival() {
                    shard_wake = Some(first + max_buffered);
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
