//! The bounded prefetch between a shard's retrieval task and its consumer: limits
//! ([`PrefetchLimits`]), what is held ([`PrefetchUsage`]), and the producer's side of the
//! channel.
//!
//! Everything fetched and not yet dropped by the consumer counts: the batches waiting in the
//! channel *and* the one the processor is working on. Each delivered [`RecordBatch`] carries a
//! permit for its records and bytes, released when the batch is dropped. The producer waits for
//! room *before* each fetch (as the Java KCL's `PrefetchRecordsPublisher` does), so the memory
//! a shard holds is at most the limits plus one batch (a `GetRecords` response is at most 10 MiB
//! and `max_records` records), however slow the processor.

use std::sync::{Arc, Mutex, MutexGuard};

use metrics::Gauge;
use tokio::sync::{Notify, mpsc};

use super::RecordBatch;
use super::metrics::ShardLabels;
use crate::error::{ConfigError, Error, Result};
use crate::metrics::{PREFETCH_BATCHES, PREFETCH_BYTES, PREFETCH_RECORDS};

/// Default [`PrefetchLimits::max_batches`]: 3, the Java KCL's `maxPendingProcessRecordsInput`.
pub(crate) const DEFAULT_MAX_PENDING_BATCHES: usize = 3;
/// Default [`PrefetchLimits::max_records`]: 30 000, the Java KCL's `maxRecordsCount`.
pub(crate) const DEFAULT_MAX_PENDING_RECORDS: usize = 30_000;
/// Default [`PrefetchLimits::max_bytes`]: 8 MiB, the Java KCL's `maxByteSize`.
pub(crate) const DEFAULT_MAX_PENDING_BYTES: usize = 8 * 1024 * 1024;

/// How much a shard's reader may hold ahead of its processor: fetching pauses while any limit
/// is reached, and resumes when the consumer drops batches.
///
/// The defaults are the Java KCL's (`SimpleRecordsFetcherFactory`): 3 batches, 30 000 user
/// records, 8 MiB of data.
///
/// ```
/// use kinesis_kcl::PrefetchLimits;
///
/// let limits = PrefetchLimits::default();
/// assert_eq!((limits.max_batches(), limits.max_records(), limits.max_bytes()), (3, 30_000, 8 << 20));
/// assert!(PrefetchLimits::new(0, 1, 1).is_err());
/// # Ok::<(), kinesis_kcl::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefetchLimits {
    max_batches: usize,
    max_records: usize,
    max_bytes: usize,
}

impl Default for PrefetchLimits {
    fn default() -> Self {
        PrefetchLimits {
            max_batches: DEFAULT_MAX_PENDING_BATCHES,
            max_records: DEFAULT_MAX_PENDING_RECORDS,
            max_bytes: DEFAULT_MAX_PENDING_BYTES,
        }
    }
}

impl PrefetchLimits {
    /// Limits of `max_batches` batches, `max_records` user records and `max_bytes` bytes of
    /// record data.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] if any is 0.
    pub fn new(
        max_batches: usize,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Self, ConfigError> {
        Self::checked("PrefetchLimits", max_batches, max_records, max_bytes)
    }

    /// [`PrefetchLimits::new`], with errors naming `builder`.
    pub(crate) fn checked(
        builder: &'static str,
        max_batches: usize,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Self, ConfigError> {
        for (field, value) in [
            ("max_pending_batches", max_batches),
            ("max_pending_records", max_records),
            ("max_pending_bytes", max_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::new(
                    builder,
                    field,
                    value,
                    "must be at least 1",
                ));
            }
        }
        Ok(PrefetchLimits {
            max_batches,
            max_records,
            max_bytes,
        })
    }

    /// Most batches held (the Java KCL's `maxPendingProcessRecordsInput`).
    pub fn max_batches(&self) -> usize {
        self.max_batches
    }

    /// Most user records held (the Java KCL's `maxRecordsCount`).
    pub fn max_records(&self) -> usize {
        self.max_records
    }

    /// Most bytes of record data held (the Java KCL's `maxByteSize`).
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

/// What a shard's reader holds: fetched batches not yet dropped by the consumer (including the
/// one it is processing), their user records, and their data bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefetchUsage {
    /// Batches.
    pub batches: usize,
    /// User records.
    pub records: usize,
    /// Bytes of record data (as fetched, before deaggregation).
    pub bytes: usize,
}

impl PrefetchUsage {
    fn has_room(&self, limits: &PrefetchLimits) -> bool {
        self.batches < limits.max_batches
            && self.records < limits.max_records
            && self.bytes < limits.max_bytes
    }
}

/// The shared accounting of one reader.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: PrefetchLimits,
    usage: Mutex<PrefetchUsage>,
    changed: Notify,
    gauges: [Gauge; 3],
}

impl Budget {
    pub(crate) fn new(limits: PrefetchLimits, labels: &ShardLabels) -> Arc<Self> {
        Arc::new(Budget {
            limits,
            usage: Mutex::new(PrefetchUsage::default()),
            changed: Notify::new(),
            gauges: [
                labels.gauge(PREFETCH_BATCHES),
                labels.gauge(PREFETCH_RECORDS),
                labels.gauge(PREFETCH_BYTES),
            ],
        })
    }

    fn lock(&self) -> MutexGuard<'_, PrefetchUsage> {
        self.usage
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn usage(&self) -> PrefetchUsage {
        *self.lock()
    }

    /// Waits until every limit has room.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().has_room(&self.limits) {
                return;
            }
            notified.await;
        }
    }

    fn charge(self: &Arc<Self>, records: usize, bytes: usize) -> PrefetchPermit {
        let mut usage = self.lock();
        usage.batches += 1;
        usage.records += records;
        usage.bytes += bytes;
        self.publish(&usage);
        drop(usage);
        PrefetchPermit {
            budget: Arc::clone(self),
            records,
            bytes,
        }
    }

    fn release(&self, records: usize, bytes: usize) {
        let mut usage = self.lock();
        usage.batches -= 1;
        usage.records -= records;
        usage.bytes -= bytes;
        self.publish(&usage);
        drop(usage);
        self.changed.notify_waiters();
    }

    fn publish(&self, usage: &PrefetchUsage) {
        self.gauges[0].set(usage.batches as f64);
        self.gauges[1].set(usage.records as f64);
        self.gauges[2].set(usage.bytes as f64);
    }
}

/// A delivered batch's share of the budget, given back when the batch is dropped.
pub(crate) struct PrefetchPermit {
    budget: Arc<Budget>,
    records: usize,
    bytes: usize,
}

impl Drop for PrefetchPermit {
    fn drop(&mut self) {
        self.budget.release(self.records, self.bytes);
    }
}

impl std::fmt::Debug for PrefetchPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefetchPermit")
            .field("records", &self.records)
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// The consumer is gone (the reader was closed or dropped).
#[derive(Debug)]
pub(crate) struct Closed;

/// The producing side of a [`ShardReader`](super::ShardReader), used by a retrieval task
/// (polling, or fan-out).
#[derive(Debug)]
pub(crate) struct BatchSender {
    pub(crate) tx: mpsc::Sender<Result<RecordBatch>>,
    pub(crate) budget: Arc<Budget>,
}

impl BatchSender {
    /// Waits until the consumer has room for another batch. Call it before fetching.
    pub(crate) async fn wait_for_room(&self) {
        self.budget.wait_for_room().await;
    }

    /// Hands a batch to the consumer, charging its records and `bytes` to the budget until the
    /// consumer drops it.
    pub(crate) async fn send(&self, mut batch: RecordBatch, bytes: usize) -> Result<(), Closed> {
        batch.permit = Some(self.budget.charge(batch.records.len(), bytes));
        self.tx.send(Ok(batch)).await.map_err(|_| Closed)
    }

    /// Hands a final error to the consumer.
    pub(crate) async fn fail(&self, error: Error) {
        // If the consumer is gone, nobody is left to tell.
        let _ = self.tx.send(Err(error)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Record;
    use crate::sequence::SequenceNumber;

    fn batch(n: usize) -> RecordBatch {
        let records = (0..n)
            .map(|i| Record::new(SequenceNumber::new(i.to_string()).unwrap(), "pk", "d"))
            .collect();
        RecordBatch::new(records, None, None)
    }

    #[tokio::test]
    async fn room_comes_back_when_a_batch_is_dropped() {
        let budget = Budget::new(
            PrefetchLimits::new(2, 100, 1000).unwrap(),
            &ShardLabels::new("s", "shard"),
        );
        let (tx, mut rx) = mpsc::channel(3);
        let sender = BatchSender {
            tx,
            budget: Arc::clone(&budget),
        };
        sender.wait_for_room().await;
        sender.send(batch(3), 30).await.unwrap();
        sender.wait_for_room().await;
        sender.send(batch(4), 40).await.unwrap();
        assert_eq!(
            budget.usage(),
            PrefetchUsage {
                batches: 2,
                records: 7,
                bytes: 70
            }
        );
        // Full: waiting does not finish.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), sender.wait_for_room())
                .await
                .is_err()
        );
        // The consumer takes one and keeps it: still full.
        let first = rx.recv().await.unwrap().unwrap();
        assert_eq!(budget.usage().batches, 2);
        let waiter = tokio::spawn(async move {
            sender.wait_for_room().await;
            sender
        });
        drop(first);
        let _sender = waiter.await.unwrap();
        assert_eq!(
            budget.usage(),
            PrefetchUsage {
                batches: 1,
                records: 4,
                bytes: 40
            }
        );
    }

    #[tokio::test]
    async fn bytes_and_records_limits_apply_too() {
        let labels = ShardLabels::new("s", "shard");
        for (limits, records, bytes) in [
            (PrefetchLimits::new(10, 5, 1000).unwrap(), 5, 1),
            (PrefetchLimits::new(10, 100, 64).unwrap(), 1, 64),
        ] {
            let budget = Budget::new(limits, &labels);
            let permit = budget.charge(records, bytes);
            assert!(
                tokio::time::timeout(Duration::from_millis(20), budget.wait_for_room())
                    .await
                    .is_err()
            );
            drop(permit);
            budget.wait_for_room().await;
        }
    }
}
