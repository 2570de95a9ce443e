//! One held lease's processing: wait for the parents, run the processor over the shard's
//! records, and handle the shard's end, a lost lease, a hand-off or a shutdown.
//!
//! # When processing must stop
//!
//! A processor call in flight when the lease is lost, a hand-off is asked for or the worker
//! shuts down is not cancelled: it may finish its batch (as in the Java KCL, which calls
//! `leaseLost` only after `processRecords` returned). Then the processor hears why it stops
//! (`lease_lost`, or `shutdown_requested` to checkpoint). The call in flight and that last call
//! together get at most the worker's
//! [`processor_stop_timeout`](super::WorkerBuilder::processor_stop_timeout); a call still
//! running then is dropped (cancelled at its next `.await`), counted in
//! `kinesis_kcl_processor_calls_abandoned_total`, logged as an error, and the processor hears nothing
//! more: a hand-off releases the lease with the last checkpoint written, a shutdown goes on.

mod delivery;
mod lanes;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::state::{ShardState, ShardStates};
use super::stream::StreamContext;
use crate::checkpoint::Checkpointer;
use crate::checkpoint::lanes::LaneProgress;
use crate::lease::{HeldLease, Lease, LeaseStatus};
use crate::processor::{InitializationInput, ShardContext, ShardRecordProcessor, SharedFactory};
use crate::retrieval::{ShardReader, StartingPosition};
use crate::shard::{ChildLeases, ChildShard};

/// How a consumer ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// The lease is no longer ours (lost or released), or the worker is shutting down.
    Done,
    /// The processor or the retrieval failed: restart from the last checkpoint.
    Failed(Failure),
}

/// Why a consumer failed; the worker restarts it from the last checkpoint. Its message is the
/// `reason` of [`ShardState::Restarting`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The lease's checkpoint is no position to read from.
    #[error("bad checkpoint: {0}")]
    BadCheckpoint(#[source] crate::Error),
    /// The shard reader could not be started.
    #[error("cannot start reading: {0}")]
    StartReading(#[source] crate::Error),
    /// The shard reader failed while reading.
    #[error("retrieval failed: {0}")]
    Retrieval(#[source] crate::Error),
    /// The shard reader ended without reaching the shard's end.
    #[error("the shard reader ended before the shard did")]
    ReaderEndedEarly,
    /// The consumer's task panicked (in the processor: the rest of the consumer does not
    /// panic).
    #[error("the processor panicked")]
    Panicked,
    /// The consumer's task was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// What every consumer of one worker shares.
#[derive(Clone)]
pub(crate) struct ConsumerContext {
    pub(crate) factory: SharedFactory,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) states: ShardStates,
    pub(crate) parent_poll_interval: Duration,
    pub(crate) shard_end_retry: Duration,
    /// How long a processor has to finish once processing must stop.
    pub(crate) stop_timeout: Duration,
    /// Asks the worker to sync a stream's shards now (a shard of it ended).
    pub(crate) sync_now: tokio::sync::mpsc::UnboundedSender<Arc<StreamContext>>,
}

/// Runs one lease's consumer to its end.
pub(crate) async fn run(
    ctx: ConsumerContext,
    stream: Arc<StreamContext>,
    lease: Arc<HeldLease>,
) -> Exit {
    let key = lease.lease_key().to_owned();
    let exit = Consumer {
        shutdown: ctx.shutdown.clone(),
        status: lease.subscribe(),
        ctx,
        stream,
        lease,
        releases_lease: true,
    }
    .run()
    .await;
    tracing::debug!(lease = %key, ?exit, "shard consumer ended");
    exit
}

#[derive(Clone)]
struct Consumer {
    ctx: ConsumerContext,
    stream: Arc<StreamContext>,
    lease: Arc<HeldLease>,
    status: watch::Receiver<LeaseStatus>,
    shutdown: watch::Receiver<bool>,
    /// Whether ending on a hand-off releases the lease: the shard's consumer does, its
    /// lanes do not (it releases once all of them ended).
    releases_lease: bool,
}

/// One processor of the shard and its checkpointer: the only one, or one of its lanes.
pub(super) struct Lane {
    processor: Box<dyn ShardRecordProcessor>,
    checkpointer: Checkpointer,
}

/// Why processing stopped before its natural end.
#[derive(Clone, Copy, Debug)]
enum Interrupt {
    Lost,
    Handoff,
    Shutdown,
}

/// What became of one processor call.
enum Called<T> {
    /// It returned while the lease was plainly held.
    Returned(T),
    /// Processing had to stop while it ran; it was given until `deadline` and returned
    /// (`Some`) or was dropped (`None`).
    Stopped {
        interrupt: Interrupt,
        deadline: Instant,
        returned: Option<T>,
    },
}

impl Consumer {
    async fn run(mut self) -> Exit {
        let snapshot = self.lease.lease().await;
        if snapshot.is_shard_end() {
            return self.hold_finished().await;
        }
        if let Some(interrupt) = self.wait_for_parents(&snapshot).await {
            return match interrupt {
                Interrupt::Handoff => self.release().await,
                Interrupt::Lost | Interrupt::Shutdown => Exit::Done,
            };
        }
        let position = match StartingPosition::from_checkpoint(
            &snapshot.checkpoint,
            self.stream.initial_position,
        ) {
            Ok(Some(p)) => p,
            Ok(None) => return self.hold_finished().await,
            Err(e) => return Exit::Failed(Failure::BadCheckpoint(e)),
        };
        let shard_id = snapshot.shard_id().to_owned();
        let lanes = self.stream.lanes;
        let progress = (lanes > 1).then(|| {
            Arc::new(LaneProgress::new(
                Arc::clone(&self.lease),
                lanes,
                snapshot.checkpoint.clone(),
            ))
        });
        let context = ShardContext::new(&shard_id, &self.stream.name, &snapshot.lease_key);
        let mut started: Vec<Lane> = Vec::with_capacity(lanes);
        for lane in 0..lanes {
            let mut processor = self
                .ctx
                .factory
                .create(&context.clone().in_lane(lane, lanes));
            let checkpointer = match &progress {
                Some(progress) => {
                    Checkpointer::for_lane(Arc::clone(&self.lease), Arc::clone(progress), lane)
                }
                None => Checkpointer::new(Arc::clone(&self.lease)),
            };
            let input = InitializationInput {
                shard_id: shard_id.clone(),
                stream: self.stream.name.clone(),
                checkpoint: snapshot.checkpoint.clone(),
                pending_checkpoint: snapshot.pending_checkpoint.clone(),
                pending_checkpoint_state: snapshot.pending_checkpoint_state.clone(),
            };
            let called = self.call("initialize", processor.initialize(input)).await;
            let lane = Lane {
                processor,
                checkpointer,
            };
            match called {
                Called::Returned(()) => started.push(lane),
                Called::Stopped {
                    interrupt,
                    deadline,
                    returned: Some(()),
                } => {
                    started.push(lane);
                    return self.end_all(&mut started, interrupt, deadline).await;
                }
                Called::Stopped {
                    interrupt,
                    returned: None,
                    ..
                } => {
                    // This lane's call was dropped; the lanes started before it still hear why.
                    let deadline = Instant::now() + self.ctx.stop_timeout;
                    return self.end_all(&mut started, interrupt, deadline).await;
                }
            }
        }
        let reader = match self
            .stream
            .retriever
            .start(&shard_id, snapshot.hash_key_range, position)
            .await
        {
            Ok(r) => r,
            Err(e) => return Exit::Failed(Failure::StartReading(e)),
        };
        self.set_state(ShardState::Processing);
        match progress {
            Some(progress) => self.process_in_lanes(started, progress, reader).await,
            None => match started.first_mut() {
                Some(lane) => self.process(lane, reader).await,
                None => Exit::Done,
            },
        }
    }

    async fn process(&mut self, lane: &mut Lane, mut reader: ShardReader) -> Exit {
        loop {
            let next = tokio::select! {
                biased;
                interrupt = self.interrupted() => {
                    reader.close().await;
                    let deadline = Instant::now() + self.ctx.stop_timeout;
                    return self.end_all(std::slice::from_mut(lane), interrupt, deadline).await;
                }
                next = reader.next() => next,
            };
            let mut batch = match next {
                Some(Ok(batch)) => batch,
                Some(Err(e)) => {
                    reader.close().await;
                    return Exit::Failed(Failure::Retrieval(e));
                }
                None => {
                    return Exit::Failed(Failure::ReaderEndedEarly);
                }
            };
            // The lease may have run past its local deadline without any task noticing yet:
            // after a pause of the process (SIGSTOP, a frozen host) every task wakes at once,
            // and this batch must not reach the processor before the renewer marks the lease
            // lost. Another worker may hold it by now.
            if self.lease.expire_if_due(Instant::now()) {
                reader.close().await;
                let deadline = Instant::now() + self.ctx.stop_timeout;
                return self
                    .end_all(std::slice::from_mut(lane), Interrupt::Lost, deadline)
                    .await;
            }
            let children = batch.shard_end.take();
            if !batch.records.is_empty() || self.stream.deliver_empty_batches {
                let records = std::mem::take(&mut batch.records);
                if let Err(exit) = self
                    .deliver(lane, records, batch.millis_behind_latest)
                    .await
                {
                    reader.close().await;
                    return exit;
                }
            }
            drop(batch);
            if let Some(children) = children {
                reader.close().await;
                return self.shard_end(std::slice::from_mut(lane), children).await;
            }
        }
    }

    /// The shard is closed and every record was delivered: record the children, then have
    /// the processor checkpoint `SHARD_END` (insisting until it does).
    async fn shard_end(&mut self, lanes: &mut [Lane], mut children: Vec<ChildShard>) -> Exit {
        let snapshot = self.lease.lease().await;
        if children.is_empty() {
            // An end without children: the shard may have been trimmed (not found) or
            // Kinesis did not say. Ask the listing, as the Java `ShutdownTask` does.
            match self
                .stream
                .syncer
                .listed_children(snapshot.shard_id())
                .await
            {
                Ok(listed) => children = listed,
                Err(e) => tracing::warn!(error = %e, "could not list the shard's children"),
            }
        }
        if !children.is_empty() {
            let mut deferrals = 0u32;
            loop {
                match self
                    .stream
                    .syncer
                    .create_child_leases(&snapshot, &children)
                    .await
                {
                    Ok(ChildLeases::Deferred {
                        child_shard_id,
                        missing_parent_lease_key,
                    }) => {
                        deferrals += 1;
                        if deferrals == 1 || deferrals.is_multiple_of(60) {
                            tracing::warn!(
                                child = %child_shard_id,
                                missing_parent = %missing_parent_lease_key,
                                deferrals,
                                "the merged child's other parent has no lease yet; \
                                 SHARD_END waits for it"
                            );
                        }
                        self.set_state(ShardState::ChildLeaseDeferred {
                            child_shard_id,
                            missing_parent_lease_key,
                        });
                        // The periodic sync creates missing leases: ask for one now.
                        let _ = self.ctx.sync_now.send(Arc::clone(&self.stream));
                        tokio::select! {
                            _ = tokio::time::sleep(self.ctx.shard_end_retry) => continue,
                            interrupt = self.interrupted() => {
                                let deadline = Instant::now() + self.ctx.stop_timeout;
                                return self.end_all(lanes, interrupt, deadline).await;
                            }
                        }
                    }
                    Ok(created) => {
                        tracing::info!(?created, "child leases at shard end");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not create child leases; shard sync will");
                        break;
                    }
                }
            }
            let ids: std::collections::BTreeSet<String> =
                children.iter().map(|c| c.shard_id.clone()).collect();
            if let Err(e) = self
                .lease
                .update(|l| {
                    l.child_shard_ids.extend(ids.iter().cloned());
                    Ok(())
                })
                .await
            {
                tracing::warn!(error = %e, "could not record child shard ids on the lease");
            }
        }
        for lane in lanes.iter_mut() {
            lane.checkpointer.reached_shard_end();
        }
        let mut attempt = 0u32;
        loop {
            // Every lane's processor hears of the end, until each has checkpointed it.
            let mut why = None;
            for index in 0..lanes.len() {
                let lane = &mut lanes[index];
                if lane.checkpointer.end_checkpointed() {
                    continue;
                }
                let called = self
                    .call(
                        "shard_ended",
                        lane.processor.shard_ended(&mut lane.checkpointer),
                    )
                    .await;
                let result = match called {
                    Called::Returned(result) => result,
                    Called::Stopped {
                        interrupt,
                        deadline,
                        returned: Some(_),
                    } => {
                        if self.lease.lease().await.is_shard_end() {
                            let _ = self.ctx.sync_now.send(Arc::clone(&self.stream));
                            return self.abandon(interrupt).await;
                        }
                        return self.end_all(lanes, interrupt, deadline).await;
                    }
                    Called::Stopped {
                        interrupt,
                        returned: None,
                        ..
                    } => {
                        // This lane's call was dropped; the lanes after it still hear why.
                        let deadline = Instant::now() + self.ctx.stop_timeout;
                        return self
                            .end_all(&mut lanes[index + 1..], interrupt, deadline)
                            .await;
                    }
                };
                if !lanes[index].checkpointer.end_checkpointed() {
                    why = Some(match result {
                        Ok(()) => "returned without checkpointing".to_owned(),
                        Err(e) => format!("failed: {e}"),
                    });
                }
            }
            if self.lease.lease().await.is_shard_end() {
                // The children may start: find them now rather than at the next sync.
                let _ = self.ctx.sync_now.send(Arc::clone(&self.stream));
                return self.hold_finished().await;
            }
            attempt += 1;
            let why = why.unwrap_or_else(|| "did not get SHARD_END written".to_owned());
            tracing::error!(
                attempt,
                "shard_ended {why}: the processor must checkpoint at shard end; the shard's \
                 children cannot start until it does"
            );
            metrics::counter!(crate::metrics::SHARD_END_NOT_CHECKPOINTED).increment(1);
            self.set_state(ShardState::ShardEndNotCheckpointed { attempts: attempt });
            tokio::select! {
                _ = tokio::time::sleep(self.ctx.shard_end_retry) => {}
                interrupt = self.interrupted() => {
                    let deadline = Instant::now() + self.ctx.stop_timeout;
                    return self.end_all(lanes, interrupt, deadline).await;
                }
            }
        }
    }

    /// A shard at `SHARD_END` has nothing to read: hold its lease (so the fleet's counts stay
    /// stable) until clean-up deletes it, it moves, or the worker stops.
    async fn hold_finished(&mut self) -> Exit {
        self.set_state(ShardState::ShardEnded);
        match self.interrupted().await {
            Interrupt::Handoff => self.release().await,
            Interrupt::Lost | Interrupt::Shutdown => Exit::Done,
        }
    }

    /// Tells every lane's processor why processing stops (their calls must return by
    /// `deadline`), and releases the lease on a hand-off.
    /// A lane that already checkpointed the shard's end heard its ending (`shard_ended`)
    /// and hears nothing more.
    async fn end_all(&self, lanes: &mut [Lane], interrupt: Interrupt, deadline: Instant) -> Exit {
        let mut interrupt = interrupt;
        for lane in lanes
            .iter_mut()
            .filter(|lane| !lane.checkpointer.end_checkpointed())
        {
            interrupt = self
                .tell(
                    &mut *lane.processor,
                    &mut lane.checkpointer,
                    interrupt,
                    deadline,
                )
                .await;
        }
        self.abandon(interrupt).await
    }

    /// Tells the processor why processing stops (its call must return by `deadline`), and
    /// releases the lease on a hand-off (unless this is a lane: the shard's consumer does).
    async fn end(
        &self,
        processor: &mut dyn ShardRecordProcessor,
        checkpointer: &mut Checkpointer,
        interrupt: Interrupt,
        deadline: Instant,
    ) -> Exit {
        let interrupt = self
            .tell(processor, checkpointer, interrupt, deadline)
            .await;
        self.abandon(interrupt).await
    }

    /// Tells the processor why processing stops (its call must return by `deadline`).
    /// Returns the reason it was told: a hand-off or shutdown that turned into a loss
    /// meanwhile is a loss (checkpoints would be refused).
    async fn tell(
        &self,
        processor: &mut dyn ShardRecordProcessor,
        checkpointer: &mut Checkpointer,
        interrupt: Interrupt,
        deadline: Instant,
    ) -> Interrupt {
        let interrupt = if self.status.borrow().is_lost() {
            Interrupt::Lost
        } else {
            interrupt
        };
        match interrupt {
            Interrupt::Lost => {
                self.finish_by(deadline, "lease_lost", processor.lease_lost())
                    .await;
            }
            Interrupt::Handoff | Interrupt::Shutdown => {
                let call = processor.shutdown_requested(checkpointer);
                if let Some(Err(e)) = self.finish_by(deadline, "shutdown_requested", call).await {
                    tracing::warn!(error = %e, "shutdown_requested failed; releasing the lease anyway");
                }
            }
        }
        interrupt
    }

    /// Ends without a further processor call: releases the lease on a hand-off (the
    /// coordinator releases every lease once all consumers have ended on a shutdown).
    async fn abandon(&self, interrupt: Interrupt) -> Exit {
        match interrupt {
            Interrupt::Handoff if self.releases_lease && !self.status.borrow().is_lost() => {
                self.release().await
            }
            _ => Exit::Done,
        }
    }

    /// Runs one processor call. If processing must stop while it runs, the call gets until
    /// the stop timeout to finish.
    async fn call<T>(&self, name: &'static str, call: impl Future<Output = T>) -> Called<T> {
        tokio::pin!(call);
        let interrupt = tokio::select! {
            biased;
            value = &mut call => return Called::Returned(value),
            interrupt = self.interrupted() => interrupt,
        };
        tracing::debug!(
            call = name,
            ?interrupt,
            "processing must stop; letting the call finish"
        );
        let deadline = Instant::now() + self.ctx.stop_timeout;
        let returned = self.finish_by(deadline, name, call).await;
        Called::Stopped {
            interrupt,
            deadline,
            returned,
        }
    }

    /// Awaits a processor call until `deadline`; drops it (and says so) if it is still
    /// running then.
    async fn finish_by<T>(
        &self,
        deadline: Instant,
        name: &'static str,
        call: impl Future<Output = T>,
    ) -> Option<T> {
        match tokio::time::timeout_at(deadline.into(), call).await {
            Ok(value) => Some(value),
            Err(_) => {
                tracing::error!(
                    call = name,
                    stop_timeout = ?self.ctx.stop_timeout,
                    "the processor did not return within the stop timeout once processing had \
                     to stop; its call is abandoned"
                );
                metrics::counter!(crate::metrics::PROCESSOR_CALLS_ABANDONED, "call" => name)
                    .increment(1);
                None
            }
        }
    }

    async fn release(&self) -> Exit {
        if let Err(e) = self.lease.release().await {
            tracing::warn!(error = %e, "could not release the lease; it will expire");
        }
        Exit::Done
    }

    /// Polls the parents' leases until none blocks this one. `Some` if interrupted first.
    async fn wait_for_parents(&mut self, lease: &Lease) -> Option<Interrupt> {
        let mut logged = false;
        loop {
            match self.stream.syncer.blocking_parents(lease).await {
                Ok(blocking) if blocking.is_empty() => return None,
                Ok(blocking) => {
                    let parents: Vec<String> =
                        blocking.iter().map(|l| l.lease_key.clone()).collect();
                    if !logged {
                        tracing::info!(?parents, "waiting for parent shards to finish");
                        logged = true;
                    }
                    self.set_state(ShardState::WaitingOnParents { parents });
                }
                Err(e) => tracing::warn!(error = %e, "cannot read parent leases; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.ctx.parent_poll_interval) => {}
                interrupt = self.interrupted() => return Some(interrupt),
            }
        }
    }

    /// Resolves when the lease stops being plainly held, or the worker shuts down.
    async fn interrupted(&self) -> Interrupt {
        let status = self.status.clone();
        let shutdown = self.shutdown.clone();
        tokio::select! {
            status = not_held(status) => match status {
                LeaseStatus::HandoffRequested { .. } => Interrupt::Handoff,
                _ => Interrupt::Lost,
            },
            () = flag_set(shutdown) => Interrupt::Shutdown,
        }
    }

    fn set_state(&self, state: ShardState) {
        self.ctx.states.set(self.lease.lease_key(), state);
    }
}

/// Resolves once the lease is no longer plainly held, with the new status.
async fn not_held(mut status: watch::Receiver<LeaseStatus>) -> LeaseStatus {
    match status.wait_for(|s| *s != LeaseStatus::Held).await {
        Ok(s) => s.clone(),
        Err(_) => LeaseStatus::Lost,
    }
}

/// Resolves once the flag is set (or its sender is gone).
pub(crate) async fn flag_set(mut flag: watch::Receiver<bool>) {
    let _ = flag.wait_for(|f| *f).await;
}

/// Resolves once the lease is no longer active (lost or released).
pub(crate) async fn inactive(mut status: watch::Receiver<LeaseStatus>) {
    let _ = status.wait_for(|s| !s.is_active()).await;
}
