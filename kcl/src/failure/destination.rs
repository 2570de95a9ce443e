//! Where records go when the failure policy gives up on them.

use std::future::Future;

use async_trait::async_trait;

use super::GiveUpReason;
use crate::processor::ProcessorError;
use crate::record::Record;

/// Records the failure policy gave up on, with what is known about why.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct FailedRecords {
    /// The stream they were read from (as configured).
    pub stream: String,
    /// The shard they were read from.
    pub shard_id: String,
    /// The records, in shard order, payload included.
    pub records: Vec<Record>,
    /// Why the policy gave up.
    pub reason: GiveUpReason,
    /// Failed `process_records` calls on them.
    pub attempts: u32,
    /// The last error, rendered with its sources (`error: source: source`).
    pub error: String,
}

/// Takes the records a [`FailurePolicy`](super::FailurePolicy) gave up on: a dead-letter
/// stream, a table, a log a person reads. Until it accepts them, the shard holds (it is called
/// again after a backoff); once it has, the checkpoint may pass them.
///
/// Closures `Fn(FailedRecords) -> impl Future<Output = Result<(), ProcessorError>>` are
/// destinations.
#[async_trait]
pub trait FailureDestination: Send + Sync + 'static {
    /// Takes `failed`; an error means "not taken, try again".
    ///
    /// # Errors
    ///
    /// Any: the worker logs it and calls again after a backoff.
    async fn accept(&self, failed: &FailedRecords) -> Result<(), ProcessorError>;
}

#[async_trait]
impl<F, Fut> FailureDestination for F
where
    F: Fn(FailedRecords) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ProcessorError>> + Send,
{
    async fn accept(&self, failed: &FailedRecords) -> Result<(), ProcessorError> {
        self(failed.clone()).await
    }
}
