//! One batch through the processor under the stream's
//! [`FailurePolicy`](crate::FailurePolicy): failed calls retried in place after a backoff,
//! partial failures checkpointed and resumed from the failed record, failing batches split,
//! records given up on handed to the destination before the shard moves on. Which records go
//! next is decided by the pure [`Plan`]; this does the calls and the waits.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{Called, Consumer, Exit, Interrupt, Lane};
use crate::checkpoint::Checkpointer;
use crate::failure::plan::{Plan, Verdict};
use crate::failure::{FailedRecords, FailurePolicy, RecordFailed, TimedOut};
use crate::processor::{ProcessRecordsInput, ProcessorError, ShardRecordProcessor};
use crate::record::Record;
use crate::worker::state::ShardState;

impl Consumer {
    /// Hands one batch to the processor, as often and in as many parts as the failure policy
    /// says. If processing must stop meanwhile, the call in flight may finish (see the
    /// [module docs](super)) and the consumer then ends.
    pub(super) async fn deliver(
        &self,
        lane: &mut Lane,
        records: Vec<Record>,
        millis_behind_latest: Option<u64>,
    ) -> Result<(), Exit> {
        let Lane {
            processor,
            checkpointer,
        } = lane;
        let processor = &mut **processor;
        let policy = Arc::clone(&self.stream.failure);
        let labels = [("stream", self.stream.name.clone())];
        // An empty batch (delivered when configured) is one call with no records.
        let slice = |range: Range<usize>| {
            let end = range.end.min(records.len());
            &records[range.start.min(end)..end]
        };
        let mut plan = Plan::new(records.len().max(1));
        let mut failing = false;
        while let Some(call) = plan.next() {
            if !call.delay.is_zero()
                && let Some(interrupt) = self.sleep_or_interrupt(call.delay).await
            {
                return Err(self.stop(processor, checkpointer, interrupt).await);
            }
            let part = slice(call.range.clone()).to_vec();
            if let Some(last) = part.last() {
                checkpointer.delivered(last.extended_sequence_number());
            }
            let count = part.len();
            let bytes: usize = part.iter().map(|r| r.data().len()).sum();
            let input = ProcessRecordsInput {
                records: part,
                millis_behind_latest,
            };
            let started = Instant::now();
            let timeout = policy.batch_timeout();
            let processing = async {
                let call = processor.process_records(input, checkpointer);
                match timeout {
                    None => call.await,
                    Some(after) => tokio::time::timeout(after, call)
                        .await
                        .unwrap_or_else(|_| Err(Box::new(TimedOut { after }) as ProcessorError)),
                }
            };
            let called = self.call("process_records", processing).await;
            let (result, stop) = match called {
                Called::Returned(result) => (result, None),
                Called::Stopped {
                    interrupt,
                    deadline,
                    returned: Some(result),
                } => (result, Some((interrupt, deadline))),
                Called::Stopped {
                    interrupt,
                    returned: None,
                    ..
                } => return Err(self.abandon(interrupt).await),
            };
            metrics::histogram!(crate::metrics::PROCESS_TIME, &labels)
                .record(started.elapsed().as_secs_f64());
            match &result {
                Ok(()) => {
                    metrics::counter!(crate::metrics::RECORDS_PROCESSED, &labels)
                        .increment(count as u64);
                    metrics::counter!(crate::metrics::BYTES_PROCESSED, &labels)
                        .increment(bytes as u64);
                }
                Err(e) if stop.is_some() => {
                    tracing::warn!(error = %e, "process_records failed while processing was stopping");
                }
                Err(_) => {}
            }
            if let Some((interrupt, deadline)) = stop {
                return Err(self.end(processor, checkpointer, interrupt, deadline).await);
            }
            let error = match result {
                Ok(()) => {
                    plan.succeeded();
                    if std::mem::take(&mut failing) {
                        self.set_state(ShardState::Processing);
                    }
                    continue;
                }
                Err(error) => error,
            };
            if error.is::<TimedOut>() {
                metrics::counter!(crate::metrics::PROCESS_RECORDS_TIMEOUTS, &labels).increment(1);
            }
            if self.status.borrow().is_lost() {
                // It failed because the lease was lost meanwhile (a checkpoint refused): it
                // still hears why processing stops.
                return Err(self.stop(processor, checkpointer, Interrupt::Lost).await);
            }
            let (failed_at, error) = match error.downcast::<RecordFailed>() {
                Ok(failed) => {
                    let position = failed.position().clone();
                    let at = slice(call.range.clone())
                        .iter()
                        .position(|r| r.extended_sequence_number() == position)
                        .map(|i| call.range.start + i);
                    if at.is_none() {
                        tracing::warn!(
                            %position,
                            "process_records named a failed record it was not given: the whole \
                             call counts as failed"
                        );
                    }
                    (at, failed as ProcessorError)
                }
                Err(error) => (None, error),
            };
            if let Some(at) = failed_at {
                metrics::counter!(crate::metrics::PARTIAL_BATCH_FAILURES, &labels).increment(1);
                if at > call.range.start
                    && let Err(exit) = self
                        .checkpoint_before(processor, checkpointer, &records[at - 1])
                        .await
                {
                    return Err(exit);
                }
            }
            let reason = render(&*error);
            let oldest = |range: Range<usize>| {
                slice(range)
                    .iter()
                    .filter_map(Record::approximate_arrival_timestamp)
                    .min()
            };
            match plan.failed(&policy, failed_at, oldest, SystemTime::now()) {
                Verdict::Retry { delay, attempts } => {
                    metrics::counter!(crate::metrics::PROCESSING_RETRIES, &labels).increment(1);
                    tracing::warn!(
                        error = %reason,
                        attempts,
                        ?delay,
                        "process_records failed; retrying its records in place"
                    );
                    self.set_state(ShardState::RetryingRecords { attempts, reason });
                    failing = true;
                }
                Verdict::Split => {
                    metrics::counter!(crate::metrics::BATCH_BISECTIONS, &labels).increment(1);
                    tracing::warn!(
                        error = %reason,
                        records = call.range.len(),
                        "process_records failed; splitting the records in halves"
                    );
                }
                Verdict::GiveUp {
                    range,
                    reason: why,
                    attempts,
                } => {
                    let given_up = slice(range);
                    tracing::error!(
                        error = %reason,
                        attempts,
                        reason = why.as_str(),
                        records = given_up.len(),
                        first = %given_up.first().map(Record::extended_sequence_number).map(|p| p.to_string()).unwrap_or_default(),
                        "giving up on records: handing them to the failure destination"
                    );
                    let failed = FailedRecords {
                        stream: self.stream.name.clone(),
                        shard_id: checkpointer_shard(checkpointer),
                        records: given_up.to_vec(),
                        reason: why,
                        attempts,
                        error: reason,
                    };
                    self.hand_over(processor, checkpointer, &policy, &failed)
                        .await?;
                    metrics::counter!(
                        crate::metrics::RECORDS_GIVEN_UP,
                        "stream" => self.stream.name.clone(),
                        "reason" => why.as_str()
                    )
                    .increment(failed.records.len() as u64);
                    plan.given_up();
                    if std::mem::take(&mut failing) {
                        self.set_state(ShardState::Processing);
                    }
                }
            }
        }
        Ok(())
    }

    /// After a partial failure: checkpoints at `done`, the last record before the failed one.
    async fn checkpoint_before(
        &self,
        processor: &mut dyn ShardRecordProcessor,
        checkpointer: &mut Checkpointer,
        done: &Record,
    ) -> Result<(), Exit> {
        match checkpointer.checkpoint_record(done).await {
            Ok(()) => Ok(()),
            Err(crate::Error::LeaseLost { .. }) => {
                Err(self.stop(processor, checkpointer, Interrupt::Lost).await)
            }
            Err(e) => {
                // The records are re-delivered from the failed one either way; only the
                // progress mark is late.
                tracing::warn!(error = %e, "could not checkpoint before the failed record");
                Ok(())
            }
        }
    }

    /// Gives `failed` to the policy's destination, again and again after a backoff until it
    /// accepts them; the shard holds meanwhile.
    async fn hand_over(
        &self,
        processor: &mut dyn ShardRecordProcessor,
        checkpointer: &mut Checkpointer,
        policy: &FailurePolicy,
        failed: &FailedRecords,
    ) -> Result<(), Exit> {
        let mut attempts = 0u32;
        loop {
            let accepted = match policy.destination() {
                Some(destination) => {
                    let destination = Arc::clone(destination);
                    tokio::select! {
                        accepted = destination.accept(failed) => accepted,
                        interrupt = self.interrupted() => {
                            return Err(self.stop(processor, checkpointer, interrupt).await);
                        }
                    }
                }
                // The builder requires a destination with limits; without one, hold.
                None => Err("the failure policy has no destination".into()),
            };
            let error = match accepted {
                Ok(()) => {
                    if attempts > 0 {
                        self.set_state(ShardState::Processing);
                    }
                    return Ok(());
                }
                Err(error) => error,
            };
            attempts += 1;
            let reason = render(&*error);
            metrics::counter!(
                crate::metrics::FAILURE_DESTINATION_ERRORS,
                "stream" => self.stream.name.clone()
            )
            .increment(1);
            let delay = policy.delay_before_retry(attempts);
            tracing::error!(
                error = %reason,
                attempts,
                ?delay,
                "the failure destination did not accept the records; the shard holds"
            );
            self.set_state(ShardState::DestinationFailing { attempts, reason });
            if let Some(interrupt) = self.sleep_or_interrupt(delay).await {
                return Err(self.stop(processor, checkpointer, interrupt).await);
            }
        }
    }

    /// Waits `delay`, or less if processing must stop (then says why).
    async fn sleep_or_interrupt(&self, delay: Duration) -> Option<Interrupt> {
        tokio::select! {
            () = tokio::time::sleep(delay) => None,
            interrupt = self.interrupted() => Some(interrupt),
        }
    }

    /// Processing must stop between calls: the processor hears why, within the stop timeout.
    async fn stop(
        &self,
        processor: &mut dyn ShardRecordProcessor,
        checkpointer: &mut Checkpointer,
        interrupt: Interrupt,
    ) -> Exit {
        let deadline = Instant::now() + self.ctx.stop_timeout;
        self.end(processor, checkpointer, interrupt, deadline).await
    }
}

/// The shard id of a checkpointer's lease (the lease key's last part in multi-stream mode).
fn checkpointer_shard(checkpointer: &Checkpointer) -> String {
    let key = checkpointer.lease_key();
    key.rsplit(':').next().unwrap_or(key).to_owned()
}

/// An error and its sources, `error: source: source`.
fn render(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        let text = next.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = next.source();
    }
    out
}
