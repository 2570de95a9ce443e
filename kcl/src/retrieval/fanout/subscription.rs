//! One shard's subscription loop: subscribe, read events as the reader has room, turn them
//! into batches, renew, retry (see the [parent module](super) for the rules).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::subscribe_to_shard::{
    SubscribeToShardError, SubscribeToShardOutput,
};
use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError;
use aws_sdk_kinesis::types::{SubscribeToShardEvent, SubscribeToShardEventStream};
use aws_smithy_types::DateTime;
use backon::{BackoffBuilder, ExponentialBackoff};
use metrics::{Counter, Gauge, Histogram};
use tokio::time::Instant;

use super::FanOutConfig;
use crate::aws::KinesisApi;
use crate::aws::classify::{
    ShardReadFailure, Transient, TransientKind, classify_shard_read, classify_shard_read_error,
};
use crate::error::{Error, Result};
use crate::lease::HashKeyRange;
use crate::metrics::{
    BYTES_FETCHED, FANOUT_ERRORS, FANOUT_EVENT_LATENCY, FANOUT_RECORDS_SKIPPED, FANOUT_RENEWALS,
    FANOUT_SUBSCRIPTIONS, MILLIS_BEHIND_LATEST, RECORDS_FETCHED, USER_RECORDS_DELIVERED,
};
use crate::record::Record;
use crate::retrieval::finish_batch;
use crate::retrieval::metrics::ShardLabels;
use crate::retrieval::position::ResumeFilter;
use crate::retrieval::prefetch::BatchSender;
use crate::retrieval::{Deaggregator, RecordBatch, StartingPosition};
use crate::sequence::SequenceNumber;
use crate::shard::ChildShard;

/// Why a subscription failed, as counted in `kinesis_kcl_fanout_errors_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// `ResourceInUseException`: an older subscription of the consumer to the shard is open.
    ResourceInUse,
    /// `LimitExceededException`: more than one subscription per second.
    LimitExceeded,
    /// Any other throttling (`ThrottlingException`, …).
    Throttled,
    /// HTTP 5xx, `InternalFailure`.
    Internal,
    /// `KMSThrottlingException`.
    KmsThrottling,
    /// The call or the connection timed out.
    Timeout,
    /// The connection failed or broke.
    Connection,
    /// The event stream stayed silent for the idle timeout.
    Idle,
    /// `ResourceNotFoundException`: the shard is gone (trimmed after its retention, or its
    /// stream deleted). As the Java KCL's `FanOutRecordsPublisher`, the shard's end, with no
    /// children known.
    NotFound,
    /// Anything else: not retried.
    Fatal,
}

impl Failure {
    /// The metric label.
    pub(super) fn kind(self) -> &'static str {
        match self {
            Failure::ResourceInUse => "resource_in_use",
            Failure::LimitExceeded => "limit_exceeded",
            Failure::Throttled => "throttled",
            Failure::Internal => "internal_failure",
            Failure::KmsThrottling => "kms_throttling",
            Failure::Timeout => "timeout",
            Failure::Connection => "connection",
            Failure::Idle => "idle",
            Failure::NotFound => "not_found",
            Failure::Fatal => "fatal",
        }
    }

    /// A transient error as a metric kind.
    fn from_transient(transient: Transient) -> Failure {
        match (transient.kind, transient.label) {
            (TransientKind::Throttling, "LimitExceededException") => Failure::LimitExceeded,
            (TransientKind::Throttling, "KMSThrottlingException") => Failure::KmsThrottling,
            (TransientKind::Throttling, _) => Failure::Throttled,
            (TransientKind::ServerError, _) => Failure::Internal,
            (TransientKind::Timeout, _) => Failure::Timeout,
            (TransientKind::Io, _) => Failure::Connection,
        }
    }

    /// A shard reader's failure (see [`classify_shard_read`]) as a metric kind.
    fn from_read(failure: ShardReadFailure) -> Failure {
        match failure {
            ShardReadFailure::ShardGone => Failure::NotFound,
            // `SubscribeToShard` takes no shard iterator: not an error it expects.
            ShardReadFailure::IteratorExpired | ShardReadFailure::Fatal => Failure::Fatal,
            ShardReadFailure::Transient(transient) => Failure::from_transient(transient),
        }
    }

    /// A service error by its code: fan-out's own case (`ResourceInUseException` is retried),
    /// then the shard readers' common ones (`ResourceNotFoundException` ends the shard) and the
    /// crate's classifier ([`classify_shard_read`]); `status` is the HTTP status, when there is
    /// one.
    fn from_service(code: Option<&str>, status: Option<u16>) -> Failure {
        match code {
            Some("ResourceInUseException") => Failure::ResourceInUse,
            _ => Failure::from_read(classify_shard_read(code, status)),
        }
    }
}

/// The code of a failed `SubscribeToShard` call: from its metadata, or else from the modelled
/// error (some servers, such as kinesis-mock, send errors the SDK recognises without an error
/// code in their metadata).
fn call_code(err: &SubscribeToShardError) -> Option<&str> {
    err.code().or(if err.is_resource_in_use_exception() {
        Some("ResourceInUseException")
    } else if err.is_limit_exceeded_exception() {
        Some("LimitExceededException")
    } else if err.is_internal_failure_exception() {
        Some("InternalFailureException")
    } else if err.is_kms_throttling_exception() {
        Some("KMSThrottlingException")
    } else if err.is_resource_not_found_exception() {
        Some("ResourceNotFoundException")
    } else {
        None
    })
}

/// The code of an error in the middle of an event stream, as [`call_code`].
fn stream_code(err: &SubscribeToShardEventStreamError) -> Option<&str> {
    err.code().or(if err.is_resource_in_use_exception() {
        Some("ResourceInUseException")
    } else if err.is_internal_failure_exception() {
        Some("InternalFailureException")
    } else if err.is_kms_throttling_exception() {
        Some("KMSThrottlingException")
    } else {
        None
    })
}

/// Classifies a failed `SubscribeToShard` call (see [`Failure::from_service`]).
pub(super) fn classify_call(
    error: &SdkError<SubscribeToShardError, aws_sdk_kinesis::config::http::HttpResponse>,
) -> Failure {
    match error {
        SdkError::ServiceError(service) => Failure::from_service(
            call_code(service.err()),
            Some(service.raw().status().as_u16()),
        ),
        other => Failure::from_read(classify_shard_read_error(other)),
    }
}

/// Classifies an error in the middle of an event stream: service errors as
/// [`Failure::from_service`] (without a status), a timeout as such, anything else (a broken
/// connection, a truncated message) as a connection failure.
pub(super) fn classify_stream<R>(error: &SdkError<SubscribeToShardEventStreamError, R>) -> Failure {
    match error {
        SdkError::ServiceError(service) => Failure::from_service(stream_code(service.err()), None),
        SdkError::TimeoutError(_) => Failure::Timeout,
        _ => Failure::Connection,
    }
}

/// The metric handles of one shard's subscription.
struct SubscriptionMetrics {
    labels: ShardLabels,
    subscriptions: Counter,
    renewals: Counter,
    records: Counter,
    bytes: Counter,
    delivered: Counter,
    skipped: Counter,
    millis_behind: Gauge,
    latency: Histogram,
}

impl SubscriptionMetrics {
    fn new(labels: &ShardLabels) -> Self {
        SubscriptionMetrics {
            subscriptions: labels.counter(FANOUT_SUBSCRIPTIONS),
            renewals: labels.counter(FANOUT_RENEWALS),
            records: labels.counter(RECORDS_FETCHED),
            bytes: labels.counter(BYTES_FETCHED),
            delivered: labels.counter(USER_RECORDS_DELIVERED),
            skipped: labels.counter(FANOUT_RECORDS_SKIPPED),
            millis_behind: labels.gauge(MILLIS_BEHIND_LATEST),
            latency: metrics::histogram!(
                FANOUT_EVENT_LATENCY,
                "stream" => labels.stream.clone(),
                "shard_id" => labels.shard_id.clone()
            ),
            labels: labels.clone(),
        }
    }

    fn failed(&self, failure: Failure) {
        self.labels
            .counter_with(FANOUT_ERRORS, "kind", failure.kind())
            .increment(1);
    }
}

/// The state of one shard's subscription.
pub(super) struct Subscriber {
    api: KinesisApi,
    stream: String,
    consumer_arn: String,
    shard_id: String,
    config: FanOutConfig,
    start: StartingPosition,
    resume: ResumeFilter,
    /// The `ContinuationSequenceNumber` of the last event accepted.
    continuation: Option<SequenceNumber>,
    /// The last Kinesis record accepted: anything at or before it is a repeat.
    last_record: Option<Arc<SequenceNumber>>,
    deaggregator: Deaggregator,
    metrics: SubscriptionMetrics,
    /// The open subscription, if any.
    events: Option<SubscribeToShardOutput>,
    last_subscribe: Option<Instant>,
    /// A wait owed before the next subscription (backoff).
    pause: Option<Duration>,
    /// Failures in a row (bounded by the retry budget); reset by an event.
    backoff: Option<ExponentialBackoff>,
    /// The shard was not found: it ends with no children known.
    gone: bool,
    /// The server ended the last subscription normally: the next one made renews it. The
    /// renewal is counted when that successor is accepted, not when the old one ends, so a
    /// reader closed in between counts no renewal without a subscription.
    renewing: bool,
}

impl Subscriber {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        api: KinesisApi,
        stream: String,
        consumer_arn: String,
        shard_id: String,
        config: FanOutConfig,
        labels: &ShardLabels,
        hash_key_range: Option<HashKeyRange>,
        position: StartingPosition,
    ) -> Self {
        Subscriber {
            api,
            stream,
            consumer_arn,
            shard_id,
            resume: position.resume_filter(),
            start: position,
            continuation: None,
            last_record: None,
            deaggregator: Deaggregator::new(labels.clone(), hash_key_range, config.out_of_range),
            metrics: SubscriptionMetrics::new(labels),
            events: None,
            last_subscribe: None,
            pause: None,
            backoff: None,
            gone: false,
            renewing: false,
            config,
        }
    }

    fn kinesis_error<E>(
        &self,
        error: SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>,
    ) -> Error
    where
        aws_sdk_kinesis::Error: From<SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>>,
    {
        Error::Kinesis {
            operation: "SubscribeToShard",
            stream: self.stream.clone(),
            source: Box::new(error.into()),
        }
    }

    /// Where the next subscription starts: after the last continuation, or at the start.
    fn position(&self) -> StartingPosition {
        match &self.continuation {
            Some(continuation) => StartingPosition::AfterSequenceNumber(continuation.clone()),
            None => self.start.clone(),
        }
    }

    /// Waits what is owed before the next subscription: the backoff, and the one-per-second
    /// limit.
    async fn pace(&mut self) {
        let mut wake = self.pause.take().map(|pause| Instant::now() + pause);
        if let Some(last) = self.last_subscribe {
            let earliest = last + self.config.min_time_between_subscribes;
            wake = Some(wake.map_or(earliest, |w| w.max(earliest)));
        }
        if let Some(wake) = wake {
            tokio::time::sleep_until(wake).await;
        }
    }

    /// Records a retryable failure and schedules the next attempt. `false` once the retry
    /// budget is spent.
    fn back_off(&mut self, failure: Failure) -> bool {
        let retry = self.config.subscription_retry;
        let delay = self
            .backoff
            .get_or_insert_with(|| retry.budgeted_backoff().build())
            .next();
        match delay {
            Some(delay) => {
                tracing::debug!(
                    kind = failure.kind(),
                    ?delay,
                    "subscription failed, retrying"
                );
                self.pause = Some(delay);
                true
            }
            None => false,
        }
    }

    /// Opens a subscription at [`Self::position`], retrying what can be retried.
    pub(super) async fn subscribe(&mut self) -> Result<()> {
        loop {
            self.pace().await;
            self.last_subscribe = Some(Instant::now());
            let position = self.position();
            let request = position.iterator_request();
            let starting = aws_sdk_kinesis::types::StartingPosition::builder()
                .r#type(request.kind.clone())
                .set_sequence_number(request.sequence_number.map(|s| s.to_string()))
                .set_timestamp(request.timestamp.map(DateTime::from))
                .build()
                .map_err(|e| Error::Worker(format!("SubscribeToShard position: {e}").into()))?;
            let result = self
                .api
                .subscribe_to_shard(&self.consumer_arn, &self.shard_id, starting)
                .await;
            match result {
                Ok(output) => {
                    self.metrics.subscriptions.increment(1);
                    if std::mem::take(&mut self.renewing) {
                        self.metrics.renewals.increment(1);
                    }
                    tracing::debug!(
                        kind = request.kind.as_str(),
                        sequence_number = ?request.sequence_number.map(SequenceNumber::as_str),
                        "subscribed"
                    );
                    self.events = Some(output);
                    return Ok(());
                }
                Err(error) => {
                    let failure = classify_call(&error);
                    self.metrics.failed(failure);
                    tracing::info!(
                        kind = failure.kind(),
                        code = error.code().unwrap_or("-"),
                        "SubscribeToShard failed"
                    );
                    if failure == Failure::NotFound {
                        self.shard_gone();
                        return Ok(());
                    }
                    if failure == Failure::Fatal || !self.back_off(failure) {
                        return Err(self.kinesis_error(error));
                    }
                }
            }
        }
    }

    fn shard_gone(&mut self) {
        tracing::warn!(
            "shard not found (trimmed after its retention, or its stream deleted): treating it \
             as ended"
        );
        self.gone = true;
    }

    /// Delivers events until the consumer goes away, the shard ends or an error ends the
    /// reader.
    pub(super) async fn run(mut self, sender: BatchSender) {
        loop {
            // Flow control: the next event is read only once the reader has room.
            sender.wait_for_room().await;
            match self.next_event().await {
                Ok(Some((batch, bytes))) => {
                    let end = batch.is_shard_end();
                    if sender.send(batch, bytes).await.is_err() {
                        return;
                    }
                    if end {
                        tracing::debug!("shard end delivered");
                        return;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, "retrieval failed");
                    sender.fail(error).await;
                    return;
                }
            }
        }
    }

    /// Reads one event (subscribing first if needed): the batch to deliver with its bytes, or
    /// `None` if it left nothing to deliver (or the subscription ended and is to be renewed).
    async fn next_event(&mut self) -> Result<Option<(RecordBatch, usize)>> {
        if self.events.is_none() && !self.gone {
            self.subscribe().await?;
        }
        if self.gone {
            return Ok(Some((
                RecordBatch::new(Vec::new(), None, Some(Vec::new())),
                0,
            )));
        }
        let Some(events) = self.events.as_mut() else {
            return Ok(None);
        };
        let received =
            tokio::time::timeout(self.config.idle_timeout, events.event_stream.recv()).await;
        match received {
            Ok(Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)))) => {
                self.backoff = None;
                self.accept(event)
            }
            Ok(Ok(Some(other))) => {
                tracing::debug!(?other, "unknown event ignored");
                Ok(None)
            }
            Ok(Ok(None)) => {
                // The server ended the subscription (after ~5 minutes): renew it.
                self.events = None;
                self.renewing = true;
                tracing::debug!(
                    after = ?self.continuation.as_ref().map(SequenceNumber::as_str),
                    "subscription ended, renewing"
                );
                Ok(None)
            }
            Ok(Err(error)) => {
                let failure = classify_stream(&error);
                tracing::info!(
                    kind = failure.kind(),
                    code = error.code().unwrap_or("-"),
                    "event stream failed"
                );
                self.events = None;
                self.metrics.failed(failure);
                if failure == Failure::NotFound {
                    self.shard_gone();
                    return Ok(None);
                }
                if failure == Failure::Fatal || !self.back_off(failure) {
                    return Err(Error::Kinesis {
                        operation: "SubscribeToShard",
                        stream: self.stream.clone(),
                        source: Box::new(error.into()),
                    });
                }
                Ok(None)
            }
            Err(_) => {
                tracing::info!(
                    idle = ?self.config.idle_timeout,
                    "event stream silent, resubscribing"
                );
                self.events = None;
                self.metrics.failed(Failure::Idle);
                if !self.back_off(Failure::Idle) {
                    return Err(Error::Worker(
                        format!(
                            "the subscription to shard `{}` of stream `{}` stayed silent for \
                             longer than the retry budget",
                            self.shard_id, self.stream
                        )
                        .into(),
                    ));
                }
                Ok(None)
            }
        }
    }

    /// Whether a Kinesis record is new: after the last one delivered; before any was, at or
    /// after the position subscribed to. On Kinesis this drops nothing but a record a
    /// resubscription repeats; it also keeps delivery exact on servers that ignore the
    /// position's sequence number or timestamp (ferrokinesis 0.7 does: it starts such
    /// subscriptions at `TRIM_HORIZON`).
    fn wanted(&self, sequence_number: &str, arrival: Option<SystemTime>) -> bool {
        let Ok(seq) = SequenceNumber::new(sequence_number) else {
            // Not a sequence number: `Deaggregator::push` reports it.
            return true;
        };
        if let Some(last) = &self.last_record {
            return seq > **last;
        }
        if let Some(continuation) = &self.continuation
            && seq < *continuation
        {
            return false;
        }
        match &self.start {
            StartingPosition::AtSequenceNumber(at)
            | StartingPosition::AfterCheckpoint {
                sequence_number: at,
                ..
            } => seq >= *at,
            StartingPosition::AfterSequenceNumber(after) => seq > *after,
            StartingPosition::AtTimestamp(at) => arrival.is_none_or(|arrived| {
                // Arrival times are in milliseconds: compare at that precision.
                let at_ms = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let arrived_ms = arrived
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                arrived_ms >= at_ms
            }),
            _ => true,
        }
    }

    /// Turns an event into the batch to deliver, advancing the position.
    fn accept(&mut self, event: SubscribeToShardEvent) -> Result<Option<(RecordBatch, usize)>> {
        let SubscribeToShardEvent {
            records,
            continuation_sequence_number,
            millis_behind_latest,
            child_shards,
            ..
        } = event;
        let fetched = records.len();
        let mut user_records: Vec<Record> = Vec::with_capacity(fetched);
        let mut fetched_bytes = 0;
        let mut skipped = 0;
        let mut newest_arrival = None;
        for record in records {
            let arrival = record
                .approximate_arrival_timestamp()
                .and_then(|t| SystemTime::try_from(*t).ok());
            if !self.wanted(record.sequence_number(), arrival) {
                skipped += 1;
                continue;
            }
            if let Some(at) = arrival {
                newest_arrival = Some(newest_arrival.map_or(at, |n: SystemTime| n.max(at)));
            }
            let (sequence_number, size) = self.deaggregator.push(record, &mut user_records)?;
            fetched_bytes += size;
            self.last_record = Some(sequence_number);
        }
        if skipped > 0 {
            tracing::debug!(skipped, "records before the position or repeated dropped");
            self.metrics.skipped.increment(skipped as u64);
        }
        self.metrics.records.increment((fetched - skipped) as u64);
        self.metrics.bytes.increment(fetched_bytes as u64);
        self.resume.apply(&mut user_records);

        let millis_behind_latest = u64::try_from(millis_behind_latest).ok();
        if let Some(ms) = millis_behind_latest {
            self.metrics.millis_behind.set(ms as f64);
        }
        let children = child_shards.unwrap_or_default();
        let shard_end =
            continuation_sequence_number.is_empty() || (fetched == 0 && !children.is_empty());
        if !continuation_sequence_number.is_empty() {
            self.continuation = Some(SequenceNumber::new(continuation_sequence_number)?);
        }
        if let Some(arrival) = newest_arrival {
            let age = SystemTime::now()
                .duration_since(arrival)
                .unwrap_or_default();
            self.metrics.latency.record(age.as_secs_f64());
        }
        let shard_end =
            shard_end.then(|| children.iter().map(ChildShard::from).collect::<Vec<_>>());
        Ok(finish_batch(
            user_records,
            millis_behind_latest,
            shard_end,
            self.config.deliver_empty_batches,
            &self.metrics.delivered,
        ))
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_kinesis::config::http::HttpResponse;
    use aws_sdk_kinesis::types::error::ResourceInUseException;
    use aws_smithy_runtime_api::client::result::ServiceError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn service_error(code: &str, status: u16) -> SdkError<SubscribeToShardError, HttpResponse> {
        let error = SubscribeToShardError::generic(ErrorMetadata::builder().code(code).build());
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::ServiceError(ServiceError::builder().source(error).raw(raw).build())
    }

    #[test]
    fn call_errors_are_classified() {
        let cases = [
            ("ResourceInUseException", 400, Failure::ResourceInUse),
            ("LimitExceededException", 400, Failure::LimitExceeded),
            ("InternalFailure", 500, Failure::Internal),
            ("KMSThrottlingException", 400, Failure::KmsThrottling),
            ("SomethingNew", 503, Failure::Internal),
            // Fatal here before the crate had one classifier; transient everywhere now.
            ("ThrottlingException", 400, Failure::Throttled),
            (
                "ProvisionedThroughputExceededException",
                400,
                Failure::Throttled,
            ),
            ("ResourceNotFoundException", 400, Failure::NotFound),
            // No shard iterator in fan-out.
            ("ExpiredIteratorException", 400, Failure::Fatal),
            ("InvalidArgumentException", 400, Failure::Fatal),
            ("AccessDeniedException", 400, Failure::Fatal),
        ];
        for (code, status, expected) in cases {
            assert_eq!(
                classify_call(&service_error(code, status)),
                expected,
                "{code}"
            );
        }
        // A modelled error without a code in its metadata (as kinesis-mock's).
        let modelled = SubscribeToShardError::ResourceInUseException(
            ResourceInUseException::builder()
                .message("Another active subscription exists")
                .build(),
        );
        let raw = HttpResponse::new(400.try_into().unwrap(), SdkBody::empty());
        let error =
            SdkError::ServiceError(ServiceError::builder().source(modelled).raw(raw).build());
        assert_eq!(classify_call(&error), Failure::ResourceInUse);
    }

    #[test]
    fn shard_end_and_continuation_are_read_from_events() {
        let labels = ShardLabels::new("s", "shardId-000000000000");
        let config = FanOutConfig::default();
        let client = aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::Config::builder()
                .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
                .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
                .build(),
        );
        let mut subscriber = Subscriber::new(
            KinesisApi::new(client),
            "s".into(),
            "arn:aws:kinesis:us-east-1:1:stream/s/consumer/c:1".into(),
            "shardId-000000000000".into(),
            config,
            &labels,
            None,
            StartingPosition::TrimHorizon,
        );
        let record = |seq: &str| {
            aws_sdk_kinesis::types::Record::builder()
                .sequence_number(seq)
                .partition_key("pk")
                .data(aws_smithy_types::Blob::new("d"))
                .build()
                .unwrap()
        };
        let event = |records: Vec<aws_sdk_kinesis::types::Record>, continuation: &str| {
            SubscribeToShardEvent::builder()
                .set_records(Some(records))
                .continuation_sequence_number(continuation)
                .millis_behind_latest(7)
                .build()
                .unwrap()
        };
        let (batch, _) = subscriber
            .accept(event(vec![record("10"), record("11")], "12"))
            .unwrap()
            .unwrap();
        assert_eq!(batch.records.len(), 2);
        assert_eq!(batch.millis_behind_latest, Some(7));
        assert!(!batch.is_shard_end());
        assert_eq!(
            subscriber.position(),
            StartingPosition::AfterSequenceNumber(SequenceNumber::new("12").unwrap())
        );
        // A resubscription that repeats records: only the new one passes.
        let (batch, _) = subscriber
            .accept(event(vec![record("11"), record("13")], "14"))
            .unwrap()
            .unwrap();
        let seqs: Vec<&str> = batch
            .records
            .iter()
            .map(|r| r.sequence_number().as_str())
            .collect();
        assert_eq!(seqs, ["13"]);
        // An empty event is not delivered.
        assert!(subscriber.accept(event(vec![], "15")).unwrap().is_none());
        // The end: no continuation, children listed.
        let child = aws_sdk_kinesis::types::ChildShard::builder()
            .shard_id("shardId-000000000001")
            .parent_shards("shardId-000000000000")
            .hash_key_range(
                aws_sdk_kinesis::types::HashKeyRange::builder()
                    .starting_hash_key("0")
                    .ending_hash_key("100")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let end = SubscribeToShardEvent::builder()
            .set_records(Some(vec![]))
            .continuation_sequence_number("")
            .millis_behind_latest(0)
            .child_shards(child)
            .build()
            .unwrap();
        let (batch, _) = subscriber.accept(end).unwrap().unwrap();
        let children = batch.shard_end.expect("shard end");
        assert_eq!(children.len(), 1);
        assert_eq!(children[0].shard_id, "shardId-000000000001");
        assert_eq!(children[0].parent_shard_ids, ["shardId-000000000000"]);
    }
}
