//! The public handle: put records, flush, shut down.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Instant;

use tokio::sync::{Mutex, Notify, Semaphore, oneshot};
use tokio::task::JoinHandle;

use crate::config::ProducerConfigBuilder;
use crate::pending::{Pending, Room};
use crate::result::PutResult;
use crate::shard_map::{Scope, ShardMap, StreamId};
use crate::streams::Streams;
use crate::validate::{Validated, validate};
use crate::{Error, ProducerConfig, PutError, UserRecord};

/// An async Kinesis producer: aggregates user records per predicted shard, collects them into
/// PutRecords calls, rate-limits per shard, retries with backoff until each record's deadline,
/// and resolves one future per record.
///
/// Cheap to clone; every clone feeds the same pipelines. Call [`Producer::shutdown`] before the
/// process exits: it sends everything buffered and resolves once every put has resolved. (If
/// every clone is simply dropped, the pipelines still finish what was put, in the background.)
///
/// One producer puts to any number of streams: a record goes to the producer's own stream, or
/// to the one it names ([`UserRecord::stream`]), as the KPL's `addUserRecord` takes a stream
/// per record. Every stream gets its own pipeline (shard map, aggregators, rate limits), started
/// with its first record; all of them share the producer's memory bounds
/// (`max_buffered_records`, `max_buffered_bytes`) and its connection budget
/// (`max_connections` calls in flight in all). [`Producer::multi_stream`] builds a producer
/// with no stream of its own.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let bed = kinesis_integration::TestBed::start_with(
/// #     kinesis_integration::Backend::Embedded, Default::default()).await?;
/// # let stream = bed.create_stream(2).await?;
/// # let client = bed.kinesis().clone();
/// use kinesis_kpl::{ProducerConfig, Producer, UserRecord};
///
/// let producer = Producer::new(client, &stream, ProducerConfig::default()).await?;
/// let result = producer.put_record(UserRecord::new("user-17", "clicked")).await?;
/// println!("stored on {} at {}", result.shard_id, result.sequence_number);
/// producer.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    /// The stream of records that name none, if the producer has one.
    default_stream: Option<String>,
    streams: Streams,
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    outstanding: Arc<AtomicUsize>,
    config: ProducerConfig,
    shut_down: AtomicBool,
    /// Records put while the buffers were full (or while others waited), in the order
    /// `put_record` was called: let in, front first, as room is given back.
    line: std::sync::Mutex<VecDeque<Waiting>>,
    /// Told when a record's room is given back (and at shutdown).
    released: Arc<Notify>,
    /// The line's task and the pipeline tasks (these taken from `streams` by the first
    /// shutdown), awaited by every shutdown until they have ended.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A record waiting in line for room, with the sender of its put's result.
struct Waiting {
    valid: Validated,
    reply: Reply,
}

type Reply = oneshot::Sender<Result<PutResult, PutError>>;

impl Drop for Inner {
    fn drop(&mut self) {
        // The line's task holds a weak reference: it ends when told and finding none.
        self.released.notify_one();
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("default_stream", &self.inner.default_stream)
            .field("streams", &self.inner.streams.count())
            .field("outstanding_records", &self.outstanding_records())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Producer`]: the settings of [`ProducerConfig`], checked by
/// [`build`](ProducerBuilder::build), which then starts the producer. See [`Producer::builder`].
#[derive(Clone, Debug)]
pub struct ProducerBuilder {
    client: aws_sdk_kinesis::Client,
    stream: Option<String>,
    config: ProducerConfigBuilder,
}

macro_rules! forwarding_setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.config = self.config.$name(value);
                self
            }
        )*
    };
}

impl ProducerBuilder {
    crate::config::with_settings!(forwarding_setters);

    /// Checks the settings (failing with [`Error::InvalidConfig`] naming the first bad one),
    /// then starts the producer as [`Producer::new`] does.
    pub async fn build(self) -> Result<Producer, Error> {
        let config = self.config.build()?;
        Producer::start(self.client, self.stream.map(StreamId::parse), config).await
    }
}

impl Producer {
    /// A builder for a producer putting to `stream` (a name, or an ARN starting with `arn:`)
    /// through `client`; its setters are [`ProducerConfig`]'s, and
    /// [`build`](ProducerBuilder::build) starts the producer.
    ///
    /// ```no_run
    /// # async fn run(client: aws_sdk_kinesis::Client) -> Result<(), kinesis_kpl::Error> {
    /// use std::time::Duration;
    /// use kinesis_kpl::Producer;
    ///
    /// let producer = Producer::builder(client, "clickstream")
    ///     .record_ttl(Duration::from_secs(60))
    ///     .build()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(client: aws_sdk_kinesis::Client, stream: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder {
            client,
            stream: Some(stream.into()),
            config: ProducerConfig::builder(),
        }
    }

    /// A builder for a producer with no stream of its own: every record names its stream
    /// ([`UserRecord::stream`]; a record that does not fails with [`PutError::NoStream`]).
    /// Nothing is listed at start: each stream's shards are listed with its first record, and
    /// a stream that cannot be listed fails its records with [`PutError::StreamUnavailable`]
    /// without holding up the others.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let bed = kinesis_integration::TestBed::start_with(
    /// #     kinesis_integration::Backend::Embedded, Default::default()).await?;
    /// # let (orders, audit) = (bed.create_stream(2).await?, bed.create_stream(1).await?);
    /// # let client = bed.kinesis().clone();
    /// use kinesis_kpl::{Producer, UserRecord};
    ///
    /// let producer = Producer::multi_stream(client).max_connections(8).build().await?;
    /// let order = producer.put_record(UserRecord::new("order-7", "placed").stream(&orders));
    /// let entry = producer.put_record(UserRecord::new("order-7", "audited").stream(&audit));
    /// let (order, entry) = (order.await?, entry.await?);
    /// println!("{} on {}, {} on {}", orders, order.shard_id, audit, entry.shard_id);
    /// producer.shutdown().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn multi_stream(client: aws_sdk_kinesis::Client) -> ProducerBuilder {
        ProducerBuilder {
            client,
            stream: None,
            config: ProducerConfig::builder(),
        }
    }

    /// Starts a producer for the stream `stream` (a name, or an ARN starting with `arn:`).
    ///
    /// Lists the stream's shards first, so a missing stream or missing permissions fail here
    /// ([`Error::ListShards`], [`Error::NoOpenShards`]) rather than on every put.
    ///
    /// The producer uses a copy of `client` with the SDK's own retries switched off (as the KPL
    /// builds its client with none): its retry loop is then the only one, so every call Kinesis
    /// answered shows in [`PutResult::attempts`], and throttled calls are not re-sent behind the
    /// rate limiter's back. Everything else of the client's configuration (endpoint,
    /// credentials, HTTP client, timeouts, interceptors) is kept.
    pub async fn new(
        client: aws_sdk_kinesis::Client,
        stream: impl Into<String>,
        config: ProducerConfig,
    ) -> Result<Self, Error> {
        Self::start(client, Some(StreamId::parse(stream.into())), config).await
    }

    async fn start(
        client: aws_sdk_kinesis::Client,
        stream: Option<StreamId>,
        config: ProducerConfig,
    ) -> Result<Self, Error> {
        let client = aws_sdk_kinesis::Client::from_conf(
            client
                .config()
                .to_builder()
                .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
                .build(),
        );
        let streams = Streams::new(
            client.clone(),
            config.clone(),
            tokio::runtime::Handle::current(),
        );
        let default_stream = match stream {
            Some(stream) => {
                let map = ShardMap::fetch(&client, &stream, Scope::Open).await?;
                let name = stream.as_str().to_owned();
                streams.start_listed(stream, map);
                Some(name)
            }
            None => None,
        };
        let released = Arc::new(Notify::new());
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let admitter = tokio::spawn(admit_waiting(weak.clone(), Arc::clone(&released)));
            Inner {
                default_stream,
                streams,
                // Semaphore permits are limited to usize::MAX >> 3.
                records: Arc::new(Semaphore::new(
                    config.max_buffered_records().min(Semaphore::MAX_PERMITS),
                )),
                bytes: Arc::new(Semaphore::new(
                    config.max_buffered_bytes().min(Semaphore::MAX_PERMITS),
                )),
                outstanding: Arc::new(AtomicUsize::new(0)),
                config,
                shut_down: AtomicBool::new(false),
                line: std::sync::Mutex::new(VecDeque::new()),
                released,
                tasks: Mutex::new(vec![admitter]),
            }
        });
        Ok(Self { inner })
    }

    /// Puts a record. The returned future resolves when the record is stored (to its shard,
    /// sequence and sub-sequence numbers and attempts) or has failed for good:
    /// - at once, to [`PutError::EmptyPartitionKey`], [`PutError::PartitionKeyTooLong`],
    ///   [`PutError::RecordTooLarge`] or [`PutError::InvalidExplicitHashKey`] for bad input;
    /// - [`PutError::Expired`] when it could not be stored within `record_ttl`;
    /// - [`PutError::Throttled`] when throttled and `fail_if_throttled` is set;
    /// - [`PutError::Rejected`] when Kinesis refused it with an error no retry can fix;
    /// - [`PutError::UnknownOutcome`] when it may or may not be stored;
    /// - [`PutError::NoStream`] at once, when neither the record nor the producer names a
    ///   stream;
    /// - [`PutError::StreamUnavailable`] when the record's stream could not be listed;
    /// - [`PutError::ShutDown`] when the producer was shut down first.
    ///
    /// Every failure hands the record back ([`PutError::into_record`]).
    ///
    /// Records are accepted in the order of the `put_record` calls: at once when the buffers
    /// have room and nobody waits; otherwise the record waits in line, and is accepted as room
    /// is given back, whether or not its future is being polled (so strict order per key holds
    /// for records put while the buffers are full). Dropping the future of a waiting record
    /// withdraws it; dropping that of an accepted one does not. To stay within the memory
    /// bounds, await the futures (or use [`Producer::try_put_record`]): records waiting in line
    /// are held outside them.
    pub fn put_record(
        &self,
        record: UserRecord,
    ) -> impl Future<Output = Result<PutResult, PutError>> + Send + 'static {
        let (reply, receiver) = oneshot::channel();
        let entered = validate(record, self.inner.config.max_record_size())
            .and_then(|valid| self.inner.enter(valid, reply));
        async move {
            entered?;
            receiver
                .await
                .unwrap_or(Err(PutError::ShutDown { record: None }))
        }
    }

    /// Puts a record if the buffers have room now; fails fast with [`PutError::Full`] (or a
    /// validation error) otherwise. The returned future resolves as [`Producer::put_record`]'s.
    pub fn try_put_record(
        &self,
        record: UserRecord,
    ) -> Result<impl Future<Output = Result<PutResult, PutError>> + Send + 'static, PutError> {
        let valid = validate(record, self.inner.config.max_record_size())?;
        let (reply, receiver) = oneshot::channel();
        {
            let line = self.inner.line();
            // Records waiting in line go first: this one may not overtake them.
            let room = if line.is_empty() {
                self.inner.try_room(valid.size)
            } else {
                None
            };
            let Some(room) = room else {
                return Err(PutError::Full {
                    max_records: self.inner.config.max_buffered_records(),
                    max_bytes: self.inner.config.max_buffered_bytes(),
                    record: Box::new(valid.record),
                });
            };
            self.inner.submit(valid, room, reply).map_err(|(e, _)| e)?;
        }
        Ok(async move {
            receiver
                .await
                .unwrap_or(Err(PutError::ShutDown { record: None }))
        })
    }

    /// Sends everything buffered now, without waiting for `record_max_buffered_time`, and
    /// resolves once every record put before the call has resolved.
    pub async fn flush(&self) {
        for wait in self.inner.streams.flush() {
            let _ = wait.await;
        }
    }

    /// Stops accepting records (later puts resolve to [`PutError::ShutDown`]), sends everything
    /// buffered, and resolves once every accepted record has resolved and the pipeline has
    /// ended. Calling it again, from any clone, waits for the same end.
    ///
    /// Cancel-safe: if the future is dropped before it resolves (say inside a timeout), a later
    /// call still waits for the end.
    pub async fn shutdown(&self) {
        self.inner.shut_down.store(true, Ordering::SeqCst);
        // The line's task fails what still waits, then ends.
        self.inner.released.notify_one();
        let mut tasks = self.inner.tasks.lock().await;
        tasks.extend(self.inner.streams.close());
        while let Some(handle) = tasks.last_mut() {
            // Awaited through a reference: dropped here, the handle stays for the next call.
            let ended = handle.await;
            tasks.pop();
            if let Err(error) = ended {
                tracing::error!(%error, "a producer pipeline task failed");
            }
        }
    }

    /// User records put and not yet resolved.
    pub fn outstanding_records(&self) -> usize {
        self.inner.outstanding.load(Ordering::Relaxed)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }
}

impl Inner {
    /// The bytes of room a record of `size` bytes takes (at least 1, at most the whole bound):
    /// twice its size when it may be aggregated, since its aggregate holds a second copy.
    fn byte_permits(&self, size: usize) -> u32 {
        let aggregated =
            self.config.aggregation_enabled() && size <= self.config.aggregation_max_size();
        let copies = if aggregated { 2 } else { 1 };
        size.saturating_mul(copies)
            .clamp(1, self.config.max_buffered_bytes())
            .min(u32::MAX as usize) as u32
    }

    fn try_room(&self, size: usize) -> Option<Room> {
        let records = self.records.clone().try_acquire_owned().ok()?;
        let bytes = self
            .bytes
            .clone()
            .try_acquire_many_owned(self.byte_permits(size))
            .ok()?;
        Some(self.room(records, bytes))
    }

    fn line(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        self.line.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accepts `valid` now if nobody waits and there is room, else puts it at the end of the
    /// line. Under the line's lock, so records are accepted in the order of the calls.
    fn enter(&self, valid: Validated, reply: Reply) -> Result<(), PutError> {
        let mut line = self.line();
        if self.shut_down.load(Ordering::SeqCst) {
            let record = Some(Box::new(valid.record));
            return Err(PutError::ShutDown { record });
        }
        if line.is_empty()
            && let Some(room) = self.try_room(valid.size)
        {
            return self.submit(valid, room, reply).map_err(|(e, _)| e);
        }
        // Withdrawn records (futures dropped) are cleared now and then, not only at the front.
        if line.len() >= 1024 && line.len().is_power_of_two() {
            line.retain(|w| !w.reply.is_closed());
        }
        line.push_back(Waiting { valid, reply });
        Ok(())
    }

    /// Lets in the records at the front of the line for which there is room; after shutdown,
    /// fails them all.
    fn admit(&self) {
        let mut line = self.line();
        while let Some(front) = line.front() {
            if front.reply.is_closed() {
                line.pop_front();
                continue;
            }
            if self.shut_down.load(Ordering::SeqCst) {
                let Some(Waiting { valid, reply }) = line.pop_front() else {
                    break;
                };
                let record = Some(Box::new(valid.record));
                let _ = reply.send(Err(PutError::ShutDown { record }));
                continue;
            }
            let Some(room) = self.try_room(front.valid.size) else {
                break;
            };
            let Some(Waiting { valid, reply }) = line.pop_front() else {
                break;
            };
            if let Err((error, reply)) = self.submit(valid, room, reply) {
                let _ = reply.send(Err(error));
            }
        }
    }

    fn room(
        &self,
        records: tokio::sync::OwnedSemaphorePermit,
        bytes: tokio::sync::OwnedSemaphorePermit,
    ) -> Room {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        Room {
            records: Some(records),
            bytes: Some(bytes),
            outstanding: self.outstanding.clone(),
            released: Some(Arc::clone(&self.released)),
        }
    }

    /// Hands `valid` to its stream's pipeline, which answers on `reply`; on failure, the
    /// error and `reply` come back.
    fn submit(&self, valid: Validated, room: Room, reply: Reply) -> Result<(), (PutError, Reply)> {
        if self.shut_down.load(Ordering::SeqCst) {
            let record = Some(Box::new(valid.record));
            return Err((PutError::ShutDown { record }, reply));
        }
        let stream = match valid
            .record
            .stream
            .as_ref()
            .or(self.default_stream.as_ref())
        {
            Some(stream) => stream.clone(),
            None => {
                let record = Box::new(valid.record);
                return Err((PutError::NoStream { record }, reply));
            }
        };
        let now = Instant::now();
        let pending = Pending::new(
            valid.record,
            valid.hash_key,
            now,
            crate::clock::later(now, self.config.record_ttl()),
            reply,
            room,
        );
        self.streams
            .send(&stream, Box::new(pending))
            .map_err(|(error, mut pending)| {
                let (closed, _) = oneshot::channel();
                (error, std::mem::replace(&mut pending.reply, closed))
            })
    }
}

/// The line's task: each time room is given back (or the producer shuts down), lets in what
/// fits at the front of the line. Ends once the producer is gone, or shut down with nobody
/// left waiting.
async fn admit_waiting(inner: Weak<Inner>, released: Arc<Notify>) {
    loop {
        released.notified().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.admit();
        if inner.shut_down.load(Ordering::SeqCst) && inner.line().is_empty() {
            return;
        }
    }
}
