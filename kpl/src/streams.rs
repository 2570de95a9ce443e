//! The streams one producer puts to: a pipeline task per stream, started with the stream's first
//! record (the producer's default stream when the producer starts), all sharing the producer's
//! memory bounds (taken in `producer.rs` before a record gets here) and its connection budget
//! (`max_connections` PutRecords calls in flight across every stream).
//!
//! A stream whose shards cannot be listed (missing, access denied, throttled past the record's
//! TTL) fails the records waiting for it with [`PutError::StreamUnavailable`], and the next
//! record for it after [`RETRY_FAILED_STREAM_AFTER`] lists it again: a record naming a wrong
//! stream never holds up the others, and a stream created later is put to once it exists.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::pending::Pending;
use crate::pipeline::{Command, Pipeline};
use crate::shard_map::{Scope, ShardMap, StreamId};
use crate::{Error, ProducerConfig, PutError};

/// How long the listing failure of a stream answers its records at once, before the next
/// record for it lists it again: at most one ListShards per second per unavailable stream, far
/// below the API's limit, however fast records naming it arrive.
pub(crate) const RETRY_FAILED_STREAM_AFTER: Duration = Duration::from_secs(1);

/// Every stream's pipeline.
pub(crate) struct Streams {
    client: aws_sdk_kinesis::Client,
    config: ProducerConfig,
    /// The connection budget: one permit per PutRecords call in flight, over every stream.
    budget: Arc<Semaphore>,
    /// Where pipelines are spawned: the runtime the producer was started on, so a record may
    /// be put from any thread.
    runtime: Handle,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    lanes: HashMap<String, Lane>,
    /// Shut down: no record is accepted, no pipeline started.
    closed: bool,
    /// The pipeline tasks not yet handed to [`Streams::close`]'s caller.
    tasks: Vec<JoinHandle<()>>,
}

/// One stream's pipeline, as the handle sees it.
struct Lane {
    commands: mpsc::UnboundedSender<Command>,
    /// Set when listing the stream's shards failed and the pipeline never started.
    failure: Arc<Mutex<Option<Failed>>>,
}

#[derive(Clone)]
struct Failed {
    error: Error,
    at: Instant,
}

impl Lane {
    fn failure(&self) -> Option<Failed> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Streams {
    pub(crate) fn new(
        client: aws_sdk_kinesis::Client,
        config: ProducerConfig,
        runtime: Handle,
    ) -> Self {
        // Semaphore permits are limited to usize::MAX >> 3.
        let budget = Arc::new(Semaphore::new(
            config.max_connections().min(Semaphore::MAX_PERMITS),
        ));
        Self {
            client,
            config,
            budget,
            runtime,
            state: Mutex::new(State::default()),
        }
    }

    /// Starts the pipeline of a stream whose shards were listed already.
    pub(crate) fn start_listed(&self, stream: StreamId, map: ShardMap) {
        let mut state = self.lock();
        self.start(&mut state, stream, Some(map));
    }

    /// Hands a record to its stream's pipeline, starting it if need be. On failure the record
    /// comes back inside the error.
    pub(crate) fn send(
        &self,
        stream: &str,
        mut pending: Box<Pending>,
    ) -> Result<(), (PutError, Box<Pending>)> {
        let mut state = self.lock();
        // Twice at most: a pipeline whose listing failed just now is seen closed on the second.
        for _ in 0..2 {
            if state.closed {
                break;
            }
            let restart = match state.lanes.get(stream) {
                None => true,
                Some(lane) if !lane.commands.is_closed() => false,
                Some(lane) => match lane.failure() {
                    Some(failed) if failed.at.elapsed() < RETRY_FAILED_STREAM_AFTER => {
                        let record = pending.take_record();
                        let error = PutError::StreamUnavailable {
                            stream: stream.to_owned(),
                            source: Box::new(failed.error),
                            record,
                        };
                        return Err((error, pending));
                    }
                    _ => true,
                },
            };
            if restart {
                self.start(&mut state, StreamId::parse(stream.to_owned()), None);
            }
            let Some(lane) = state.lanes.get(stream) else {
                break;
            };
            match lane.commands.send(Command::Put(pending)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(command)) => match command {
                    Command::Put(back) => pending = back,
                    // The channel gives back what was sent.
                    _ => unreachable!("a refused put comes back as a put"),
                },
            }
        }
        let record = Some(pending.take_record());
        Err((PutError::ShutDown { record }, pending))
    }

    /// Asks every pipeline to flush; each receiver answers once that pipeline's records put
    /// before have resolved.
    pub(crate) fn flush(&self) -> Vec<oneshot::Receiver<()>> {
        let state = self.lock();
        state
            .lanes
            .values()
            .filter_map(|lane| {
                let (done, wait) = oneshot::channel();
                lane.commands.send(Command::Flush(done)).ok().map(|()| wait)
            })
            .collect()
    }

    /// Stops accepting records, asks every pipeline to finish, and hands over their tasks.
    pub(crate) fn close(&self) -> Vec<JoinHandle<()>> {
        let mut state = self.lock();
        state.closed = true;
        for lane in state.lanes.values() {
            let _ = lane.commands.send(Command::Shutdown);
        }
        std::mem::take(&mut state.tasks)
    }

    /// How many streams have a pipeline (running or failed).
    pub(crate) fn count(&self) -> usize {
        self.lock().lanes.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start(&self, state: &mut State, stream: StreamId, map: Option<ShardMap>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let failure = Arc::new(Mutex::new(None));
        let span = tracing::info_span!("kinesis_kpl", stream = %stream.as_str());
        let lane = run(
            self.client.clone(),
            stream.clone(),
            self.config.clone(),
            self.budget.clone(),
            map,
            receiver,
            failure.clone(),
        );
        // Finished tasks (of streams that failed to start) need no waiting for.
        state.tasks.retain(|task| !task.is_finished());
        state.tasks.push(self.runtime.spawn(lane.instrument(span)));
        state
            .lanes
            .insert(stream.as_str().to_owned(), Lane { commands, failure });
    }
}

/// One stream's task: lists its shards unless they were listed already, then runs its
/// pipeline; if the listing fails, answers every record sent meanwhile and ends.
async fn run(
    client: aws_sdk_kinesis::Client,
    stream: StreamId,
    config: ProducerConfig,
    budget: Arc<Semaphore>,
    map: Option<ShardMap>,
    mut receiver: mpsc::UnboundedReceiver<Command>,
    failure: Arc<Mutex<Option<Failed>>>,
) {
    let map = match map {
        Some(map) => map,
        None => match list(&client, &stream, &config).await {
            Ok(map) => map,
            Err(error) => {
                tracing::warn!(
                    error = %crate::error::causes(&error),
                    "cannot put to the stream: listing its shards failed"
                );
                // Recorded before the channel closes, so a sender that finds it closed finds
                // the failure too.
                *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(Failed {
                    error: error.clone(),
                    at: Instant::now(),
                });
                receiver.close();
                while let Ok(command) = receiver.try_recv() {
                    match command {
                        Command::Put(mut pending) => {
                            let failed = PutError::StreamUnavailable {
                                stream: stream.as_str().to_owned(),
                                source: Box::new(error.clone()),
                                record: pending.take_record(),
                            };
                            let _ = pending.reply.send(Err(failed));
                        }
                        Command::Flush(done) => {
                            let _ = done.send(());
                        }
                        Command::Shutdown => {}
                    }
                }
                return;
            }
        },
    };
    Pipeline::new(client, stream, config, map, budget)
        .run(receiver)
        .await;
}

/// Lists a stream's open shards, retrying with backoff what may pass (throttling, 5xx, no
/// answer) for at most `record_ttl`: the records waiting for it expire then anyway.
async fn list(
    client: &aws_sdk_kinesis::Client,
    stream: &StreamId,
    config: &ProducerConfig,
) -> Result<ShardMap, Error> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(config.min_backoff())
        .with_max_delay(config.max_backoff())
        .with_jitter()
        .without_max_times()
        .with_total_delay(Some(config.record_ttl()));
    (|| ShardMap::fetch(client, stream, Scope::Open))
        .retry(backoff)
        .when(Error::is_retryable)
        .await
}
