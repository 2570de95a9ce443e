//! One shard's `GetRecords` loop: iterators, pacing, backoff and the classification of
//! failed calls (see the [module](super) for the behaviour).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_smithy_types::DateTime;
use backon::{BackoffBuilder, ExponentialBackoff};
use metrics::{Counter, Gauge, Histogram};
use tokio::time::Instant;
use tracing::Instrument;

use crate::aws::classify::{ShardReadFailure, classify_shard_read_error};
use crate::aws::kinesis::kinesis_error;
use crate::aws::retry::retrying;
use crate::aws::{KinesisApi, StreamTarget};
use crate::error::{Error, Result};
use crate::lease::HashKeyRange;
use crate::metrics::{
    BYTES_FETCHED, EXPIRED_ITERATORS, GET_RECORDS_DURATION, GET_RECORDS_RETRIES,
    GET_RECORDS_THROTTLED, MILLIS_BEHIND_LATEST, RECORDS_FETCHED, USER_RECORDS_DELIVERED,
};
use crate::record::Record;
use crate::retrieval::finish_batch;
use crate::retrieval::metrics::ShardLabels;
use crate::retrieval::position::ResumeFilter;
use crate::retrieval::prefetch::BatchSender;
use crate::retrieval::{Deaggregator, RecordBatch, StartingPosition};
use crate::sequence::SequenceNumber;
use crate::shard::ChildShard;

use super::config::PollingConfig;

/// Most `InvalidArgumentException`s in a row on `GetRecords` before giving up.
const MAX_INVALID_ITERATORS_IN_A_ROW: u32 = 3;

/// The metric handles of one shard's fetcher.
struct FetchMetrics {
    labels: ShardLabels,
    duration_ok: Histogram,
    duration_throttled: Histogram,
    duration_expired: Histogram,
    duration_error: Histogram,
    throttled: Counter,
    expired: Counter,
    records: Counter,
    bytes: Counter,
    delivered: Counter,
    millis_behind: Gauge,
}

impl FetchMetrics {
    fn new(labels: &ShardLabels) -> Self {
        FetchMetrics {
            duration_ok: labels.histogram_with(GET_RECORDS_DURATION, "outcome", "ok"),
            duration_throttled: labels.histogram_with(GET_RECORDS_DURATION, "outcome", "throttled"),
            duration_expired: labels.histogram_with(GET_RECORDS_DURATION, "outcome", "expired"),
            duration_error: labels.histogram_with(GET_RECORDS_DURATION, "outcome", "error"),
            throttled: labels.counter(GET_RECORDS_THROTTLED),
            expired: labels.counter(EXPIRED_ITERATORS),
            records: labels.counter(RECORDS_FETCHED),
            bytes: labels.counter(BYTES_FETCHED),
            delivered: labels.counter(USER_RECORDS_DELIVERED),
            millis_behind: labels.gauge(MILLIS_BEHIND_LATEST),
            labels: labels.clone(),
        }
    }

    fn retried(&self, code: &'static str) {
        self.labels
            .counter_with(GET_RECORDS_RETRIES, "code", code)
            .increment(1);
    }
}

/// The state of one shard's `GetRecords` loop.
pub(super) struct Fetcher {
    api: KinesisApi,
    target: StreamTarget,
    stream: String,
    shard_id: String,
    config: PollingConfig,
    /// The iterator for the next call; `None` when a new one must be taken.
    iterator: Option<String>,
    start: StartingPosition,
    resume: ResumeFilter,
    /// The last Kinesis record fetched: an expired iterator restarts after it.
    last_fetched: Option<Arc<SequenceNumber>>,
    deaggregator: Deaggregator,
    metrics: FetchMetrics,
    /// A wait owed before the next call (idle or backoff).
    pause: Option<Duration>,
    last_call: Option<Instant>,
    throttle_backoff: Option<ExponentialBackoff>,
    /// Transient errors in a row (bounded by the retry budget).
    error_backoff: Option<ExponentialBackoff>,
    /// Expired or invalid iterators in a row.
    restart_backoff: Option<ExponentialBackoff>,
    restarts_in_a_row: u32,
    /// `GetShardIterator` returned no iterator: the shard is over.
    shard_ended: bool,
}

/// How a failed call is handled.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Throttled,
    Expired,
    InvalidArgument,
    Transient(&'static str),
    /// `ResourceNotFoundException`: the shard is gone (trimmed after its retention, or its
    /// stream deleted). As the Java KCL, that is the shard's end.
    Gone,
    Fatal,
}

/// The fetcher's own cases first (see the [module](super)), then the shard readers' common
/// ones ([`classify_shard_read_error`]): anything else is transient exactly when the crate's
/// classifier says so (its label is the metric's `code`).
fn classify<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> Failure {
    if let SdkError::ServiceError(service) = error {
        match service.err().code() {
            Some("ProvisionedThroughputExceededException") => return Failure::Throttled,
            Some("InvalidArgumentException") => return Failure::InvalidArgument,
            _ => {}
        }
    }
    match classify_shard_read_error(error) {
        ShardReadFailure::ShardGone => Failure::Gone,
        ShardReadFailure::IteratorExpired => Failure::Expired,
        ShardReadFailure::Transient(transient) => Failure::Transient(transient.label),
        ShardReadFailure::Fatal => Failure::Fatal,
    }
}

impl Fetcher {
    /// A fetcher for `shard_id` from `position`, with no iterator yet (see [`open`](Self::open)).
    pub(super) fn new(
        client: &Client,
        stream: &str,
        config: &PollingConfig,
        shard_id: String,
        hash_key_range: Option<HashKeyRange>,
        position: StartingPosition,
        labels: &ShardLabels,
    ) -> Self {
        Fetcher {
            api: KinesisApi::new(client.clone()).with_request_timeout(config.request_timeout),
            target: StreamTarget::parse(stream.to_owned()),
            stream: stream.to_owned(),
            shard_id,
            config: config.clone(),
            iterator: None,
            resume: position.resume_filter(),
            start: position,
            last_fetched: None,
            deaggregator: Deaggregator::new(labels.clone(), hash_key_range, config.out_of_range),
            metrics: FetchMetrics::new(labels),
            pause: None,
            last_call: None,
            throttle_backoff: None,
            error_backoff: None,
            restart_backoff: None,
            restarts_in_a_row: 0,
            shard_ended: false,
        }
    }

    /// Takes the first shard iterator (retrying transient errors), inside `span`.
    pub(super) async fn open(mut self, span: &tracing::Span) -> Result<Self> {
        span.in_scope(|| tracing::debug!(position = ?self.start, "starting polling retrieval"));
        self.iterator = self
            .new_iterator(&self.start)
            .instrument(span.clone())
            .await?;
        self.shard_ended = self.iterator.is_none();
        Ok(self)
    }

    fn kinesis_error<E>(&self, operation: &'static str, error: SdkError<E, HttpResponse>) -> Error
    where
        aws_sdk_kinesis::Error: From<SdkError<E, HttpResponse>>,
    {
        kinesis_error(operation, &self.stream, error)
    }

    /// Takes a shard iterator for `position`, retrying throttling and transient errors within
    /// the retry budget. `None` if Kinesis returned none (the shard is over).
    async fn new_iterator(&self, position: &StartingPosition) -> Result<Option<String>> {
        let request = position.iterator_request();
        let send = || {
            self.api.get_shard_iterator(
                &self.target,
                &self.shard_id,
                request.kind.clone(),
                request.sequence_number.map(|s| s.to_string()),
                request.timestamp.map(DateTime::from),
            )
        };
        let output = retrying(self.config.retry, send, |error, delay| {
            self.metrics.retried(match classify(error) {
                Failure::Transient(code) => code,
                _ => "throttled",
            });
            tracing::debug!(
                code = error.code().unwrap_or("-"),
                ?delay,
                "GetShardIterator failed, retrying"
            );
        })
        .await;
        let output = match output {
            Ok(output) => output,
            Err(error) if classify(&error) == Failure::Gone => {
                self.gone();
                return Ok(None);
            }
            Err(error) => return Err(self.kinesis_error("GetShardIterator", error)),
        };
        tracing::debug!(kind = request.kind.as_str(), "got a shard iterator");
        Ok(output.shard_iterator)
    }

    /// The shard is not found: it ends here, with no children known (the worker finds them
    /// through `ListShards`).
    fn gone(&self) {
        tracing::warn!(
            "shard not found (trimmed after its retention, or its stream deleted): treating it \
             as ended"
        );
    }

    /// Fetches until the consumer goes away, the shard ends or an error ends the reader.
    pub(super) async fn run(mut self, sender: BatchSender) {
        loop {
            sender.wait_for_room().await;
            match self.fetch().await {
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

    /// Waits what is owed before the next call.
    async fn pace(&mut self) {
        let mut wake = self.pause.take().map(|pause| Instant::now() + pause);
        if let Some(last) = self.last_call {
            let earliest = last + self.config.min_time_between_reads;
            wake = Some(wake.map_or(earliest, |w| w.max(earliest)));
        }
        if let Some(wake) = wake {
            tokio::time::sleep_until(wake).await;
        }
    }

    /// One successful `GetRecords` (retrying what can be retried): the batch to deliver with
    /// its bytes, or `None` if it left nothing to deliver.
    async fn fetch(&mut self) -> Result<Option<(RecordBatch, usize)>> {
        loop {
            if self.shard_ended {
                return Ok(Some((
                    RecordBatch::new(Vec::new(), None, Some(Vec::new())),
                    0,
                )));
            }
            self.pace().await;
            let iterator = match self.iterator.take() {
                Some(iterator) => iterator,
                None => {
                    let position = match &self.last_fetched {
                        Some(seq) => StartingPosition::AfterSequenceNumber(seq.as_ref().clone()),
                        None => self.start.clone(),
                    };
                    match self.new_iterator(&position).await? {
                        Some(iterator) => iterator,
                        None => {
                            self.shard_ended = true;
                            continue;
                        }
                    }
                }
            };
            let started = Instant::now();
            self.last_call = Some(started);
            let result = self
                .api
                .get_records(&self.target, &iterator, self.config.max_records as i32)
                .await;
            let elapsed = started.elapsed();
            let error = match result {
                Ok(output) => {
                    self.metrics.duration_ok.record(elapsed);
                    self.throttle_backoff = None;
                    self.error_backoff = None;
                    self.restart_backoff = None;
                    self.restarts_in_a_row = 0;
                    return self.accept(output);
                }
                Err(error) => error,
            };
            match classify(&error) {
                Failure::Throttled => {
                    self.metrics.duration_throttled.record(elapsed);
                    self.metrics.throttled.increment(1);
                    let backoff = self
                        .throttle_backoff
                        .get_or_insert_with(|| self.config.retry.backoff().build())
                        .next()
                        .unwrap_or(self.config.retry.max_delay);
                    let pause = backoff.max(self.config.idle_time_between_reads);
                    tracing::debug!(?pause, "GetRecords throttled, backing off");
                    self.pause = Some(pause);
                    self.iterator = Some(iterator);
                }
                failure @ (Failure::Expired | Failure::InvalidArgument) => {
                    self.metrics.duration_expired.record(elapsed);
                    self.metrics.expired.increment(1);
                    self.restarts_in_a_row += 1;
                    if failure == Failure::InvalidArgument
                        && self.restarts_in_a_row >= MAX_INVALID_ITERATORS_IN_A_ROW
                    {
                        return Err(self.kinesis_error("GetRecords", error));
                    }
                    if self.restarts_in_a_row > 1 {
                        self.pause = self
                            .restart_backoff
                            .get_or_insert_with(|| self.config.retry.backoff().build())
                            .next();
                    }
                    tracing::info!(
                        code = error.code().unwrap_or("-"),
                        after = ?self.last_fetched.as_deref().map(SequenceNumber::as_str),
                        "shard iterator expired or invalid, taking a new one"
                    );
                    // `self.iterator` stays `None`: the next round takes a new one.
                }
                Failure::Transient(code) => {
                    self.metrics.duration_error.record(elapsed);
                    self.metrics.retried(code);
                    let delay = self
                        .error_backoff
                        .get_or_insert_with(|| self.config.retry.budgeted_backoff().build())
                        .next();
                    let Some(delay) = delay else {
                        return Err(self.kinesis_error("GetRecords", error));
                    };
                    tracing::debug!(code, ?delay, "transient GetRecords failure, retrying");
                    self.pause = Some(delay);
                    self.iterator = Some(iterator);
                }
                Failure::Gone => {
                    self.metrics.duration_error.record(elapsed);
                    self.gone();
                    self.shard_ended = true;
                }
                Failure::Fatal => {
                    self.metrics.duration_error.record(elapsed);
                    return Err(self.kinesis_error("GetRecords", error));
                }
            }
        }
    }

    /// Turns a response into the batch to deliver, advancing the position.
    fn accept(&mut self, output: GetRecordsOutput) -> Result<Option<(RecordBatch, usize)>> {
        let GetRecordsOutput {
            records,
            next_shard_iterator,
            millis_behind_latest,
            child_shards,
            ..
        } = output;
        let fetched = records.len();
        let mut user_records: Vec<Record> = Vec::with_capacity(fetched);
        let mut fetched_bytes = 0;
        for record in records {
            let (sequence_number, size) = self.deaggregator.push(record, &mut user_records)?;
            fetched_bytes += size;
            self.last_fetched = Some(sequence_number);
        }
        self.metrics.records.increment(fetched as u64);
        self.metrics.bytes.increment(fetched_bytes as u64);
        self.resume.apply(&mut user_records);

        let millis_behind_latest = millis_behind_latest.and_then(|ms| u64::try_from(ms).ok());
        if let Some(ms) = millis_behind_latest {
            self.metrics.millis_behind.set(ms as f64);
        }
        let shard_end = match next_shard_iterator {
            Some(next) => {
                self.iterator = Some(next);
                None
            }
            None => Some(
                child_shards
                    .unwrap_or_default()
                    .iter()
                    .map(ChildShard::from)
                    .collect::<Vec<_>>(),
            ),
        };
        if fetched == 0 && shard_end.is_none() && millis_behind_latest.unwrap_or(0) == 0 {
            self.pause = Some(self.config.idle_time_between_reads);
        }
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
    use aws_sdk_kinesis::operation::get_records::GetRecordsError;
    use aws_smithy_runtime_api::client::result::ServiceError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn service_error(code: &str, status: u16) -> SdkError<GetRecordsError, HttpResponse> {
        let error = GetRecordsError::generic(ErrorMetadata::builder().code(code).build());
        let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        SdkError::ServiceError(ServiceError::builder().source(error).raw(raw).build())
    }

    #[test]
    fn errors_are_classified() {
        let cases = [
            (
                "ProvisionedThroughputExceededException",
                400,
                Failure::Throttled,
            ),
            ("ExpiredIteratorException", 400, Failure::Expired),
            ("InvalidArgumentException", 400, Failure::InvalidArgument),
            (
                "InternalFailure",
                500,
                Failure::Transient("InternalFailure"),
            ),
            (
                "KMSThrottlingException",
                400,
                Failure::Transient("KMSThrottlingException"),
            ),
            // Fatal here before the crate had one classifier; transient everywhere now.
            (
                "LimitExceededException",
                400,
                Failure::Transient("LimitExceededException"),
            ),
            (
                "ThrottlingException",
                400,
                Failure::Transient("ThrottlingException"),
            ),
            ("SomethingNew", 503, Failure::Transient("http_5xx")),
            ("ResourceNotFoundException", 400, Failure::Gone),
            ("AccessDeniedException", 400, Failure::Fatal),
        ];
        for (code, status, expected) in cases {
            assert_eq!(classify(&service_error(code, status)), expected, "{code}");
        }
    }
}
