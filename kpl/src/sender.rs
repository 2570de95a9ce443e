//! Sends one PutRecords call and reports, per entry, what Kinesis said.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use crate::aggregator::Entry;
use crate::error::sdk_code_and_message;
use crate::retrier::Failure;
use crate::shard_map::StreamId;

/// What became of one entry of a PutRecords call.
#[derive(Debug)]
pub(crate) enum EntryOutcome {
    Stored {
        shard_id: String,
        sequence_number: String,
    },
    Failed(Failure),
}

/// A finished call: one outcome per entry, in the call's order. The entries themselves stay with
/// the pipeline, so it can settle them whatever becomes of the task.
pub(crate) struct Completed {
    pub(crate) outcomes: Vec<EntryOutcome>,
    pub(crate) started: Instant,
    pub(crate) duration: Duration,
}

/// The API form of `entries`, or why one could not be built (then the call is not sent).
pub(crate) fn request_entries(entries: &[Entry]) -> Result<Vec<PutRecordsRequestEntry>, String> {
    entries
        .iter()
        .map(|entry| {
            PutRecordsRequestEntry::builder()
                .data(Blob::new(entry.data.clone()))
                .partition_key(&entry.partition_key)
                .set_explicit_hash_key(entry.explicit_hash_key.clone())
                .build()
                .map_err(|error| error.to_string())
        })
        .collect()
}

/// Sends `records` (`count` entries) in one PutRecords call with a time limit.
pub(crate) async fn put_records(
    client: aws_sdk_kinesis::Client,
    stream: StreamId,
    records: Result<Vec<PutRecordsRequestEntry>, String>,
    count: usize,
    timeout: Duration,
) -> Completed {
    let started = Instant::now();
    let mut request = client.put_records();
    request = match &stream {
        StreamId::Name(name) => request.stream_name(name),
        StreamId::Arn(arn) => request.stream_arn(arn),
    };
    let build_error = match records {
        Ok(records) => {
            request = request.set_records(Some(records));
            None
        }
        Err(message) => Some(message),
    };
    let outcomes = if let Some(message) = build_error {
        same_for_all(count, Failure::rejected("InvalidRequest", message))
    } else {
        match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => same_for_all(
                count,
                Failure::retryable(
                    "RequestTimeout",
                    format!("PutRecords took longer than {timeout:?}"),
                ),
            ),
            Ok(Err(error)) => same_for_all(count, classify_request_error(error)),
            Ok(Ok(response)) => {
                let mut failures = Interned::default();
                let mut outcomes: Vec<EntryOutcome> = response
                    .records()
                    .iter()
                    .map(
                        |result| match (result.shard_id(), result.sequence_number()) {
                            (Some(shard_id), Some(sequence_number))
                                if result.error_code().is_none() =>
                            {
                                EntryOutcome::Stored {
                                    shard_id: shard_id.to_owned(),
                                    sequence_number: sequence_number.to_owned(),
                                }
                            }
                            _ => EntryOutcome::Failed(failures.get(
                                result.error_code().unwrap_or("MissingResult"),
                                result.error_message().unwrap_or(""),
                            )),
                        },
                    )
                    .collect();
                // A response with fewer results than entries: the rest are retried.
                while outcomes.len() < count {
                    outcomes.push(EntryOutcome::Failed(Failure::retryable(
                        "MissingResult",
                        "PutRecords returned fewer results than entries".to_owned(),
                    )));
                }
                outcomes.truncate(count);
                outcomes
            }
        }
    };
    Completed {
        outcomes,
        started,
        duration: started.elapsed(),
    }
}

/// The distinct per-entry failures of one response, so that entries failing alike share one
/// code and message (a throttled call of 500 entries holds its message once per shard, not
/// once per entry).
#[derive(Default)]
struct Interned(Vec<Failure>);

impl Interned {
    /// How many distinct failures are looked through; a response rarely has more (one message
    /// per shard and code), and beyond it a failure is simply not shared.
    const LOOKED_THROUGH: usize = 16;

    fn get(&mut self, code: &str, message: &str) -> Failure {
        if let Some(failure) = self.0.iter().rev().find(|f| f.is(code, message)) {
            return failure.clone();
        }
        let failure = Failure::from_entry_error(code, message);
        if self.0.len() == Self::LOOKED_THROUGH {
            self.0.remove(0);
        }
        self.0.push(failure.clone());
        failure
    }
}

fn same_for_all(count: usize, failure: Failure) -> Vec<EntryOutcome> {
    let failure = failure.of_whole_call();
    (0..count)
        .map(|_| EntryOutcome::Failed(failure.clone()))
        .collect()
}

/// Classifies a failed call: service errors by code and HTTP status, transport failures and
/// timeouts as retryable, a request that could not be built as final. The failure says the
/// code and a short message; the SDK error itself is its source.
fn classify_request_error<E, R>(error: SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, message) = sdk_code_and_message(&error);
    let failure = match &error {
        SdkError::ServiceError(_) => Failure::from_request_error(code, message),
        SdkError::ConstructionFailure(_) => Failure::rejected(code, message),
        // Timeouts (the SDK's or the connection's: the call may have been applied, as with
        // ours), dropped connections, unreadable responses.
        _ => Failure::retryable(code, message),
    };
    failure.with_source(Arc::new(error))
}
