//! A deterministic (seeded) fault layer between our clients and the servers, usable by every
//! test and on every backend:
//!
//! - [`PutRecordsFaults`] (below): an SDK interceptor making PutRecords calls fail, whole or
//!   entry by entry, as Kinesis can;
//! - [`ServiceFaults`] ([`service`]): a small in-process proxy in place of a Kinesis or
//!   DynamoDB client's HTTP connector, injecting throttling, 5xx answers, latency, dropped
//!   connections and timeouts into any operation (`GetRecords`, `GetShardIterator`,
//!   `ListShards`, `UpdateItem`, `Scan`, …).
//!
//! Both are seeded, switchable on and off, and count what they injected.
//!
//! ## PutRecords faults
//!
//! - **Whole-call faults** (throttling, `InternalFailure` 5xx): the call reaches the server as an
//!   empty PutRecords that stores nothing, and the client sees the injected error — as when
//!   Kinesis refuses a call before storing anything.
//! - **Entry faults** (partial failures): the chosen entries are taken out of the call before it
//!   is sent, and the response gets a failed result (`ProvisionedThroughputExceededException` or
//!   `InternalFailure`) at their positions, with `FailedRecordCount` raised to match — exactly
//!   what a partial failure looks like, and the server never stored those entries.
//!
//! Decisions come from a seeded generator, so a failing test replays with the same faults for
//! the same sequence of calls. Build a client with it through
//! [`TestBed::kinesis_config`](crate::TestBed::kinesis_config):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_integration::faults::{FaultPlan, PutRecordsFaults};
//! # let bed = kinesis_integration::TestBed::start_with(
//! #     kinesis_integration::Backend::Embedded, Default::default()).await?;
//!
//! let faults = PutRecordsFaults::new(FaultPlan { entry_throttle: 0.2, ..FaultPlan::seeded(7) });
//! let client = aws_sdk_kinesis::Client::from_conf(
//!     bed.kinesis_config()
//!         .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
//!         .interceptor(faults.clone())
//!         .build(),
//! );
//! # let _ = client;
//! assert_eq!(faults.stats().entries_throttled, 0);
//! # Ok(())
//! # }
//! ```

pub mod service;

use std::sync::{Arc, Mutex};

use aws_sdk_kinesis::error::ErrorMetadata;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsInput, PutRecordsOutput};
use aws_sdk_kinesis::types::PutRecordsResultEntry;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextMut, Error as ErasedError, FinalizerInterceptorContextMut,
};
use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};

pub use service::{Service, ServiceCounts, ServiceFaultStats, ServiceFaults, ServicePlan};

/// Probabilities of each fault, per PutRecords call or per entry, and the seed.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    /// Seed of the decision generator.
    pub seed: u64,
    /// Chance a whole call fails with `ProvisionedThroughputExceededException` (HTTP 400).
    pub call_throttle: f64,
    /// Chance a whole call fails with `InternalFailure` (HTTP 500).
    pub call_internal_failure: f64,
    /// Chance an entry fails with `ProvisionedThroughputExceededException`.
    pub entry_throttle: f64,
    /// Chance an entry fails with `InternalFailure`.
    pub entry_internal_failure: f64,
    /// Chance an entry fails with `KMSThrottlingException` (throttled by KMS on an encrypted
    /// stream, not by the shard's throughput).
    pub entry_kms_throttle: f64,
    /// Refuse, as a whole, every call with an entry whose data contains these bytes:
    /// `ValidationException` (HTTP 400), as Kinesis refuses a call with one malformed entry.
    pub refuse_calls_containing: Option<Vec<u8>>,
}

impl FaultPlan {
    /// No faults, with this seed; set the chances with struct update syntax.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            call_throttle: 0.0,
            call_internal_failure: 0.0,
            entry_throttle: 0.0,
            entry_internal_failure: 0.0,
            entry_kms_throttle: 0.0,
            refuse_calls_containing: None,
        }
    }
}

/// What the layer injected so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// PutRecords calls seen.
    pub calls: u64,
    /// Calls failed with throttling.
    pub calls_throttled: u64,
    /// Calls failed with `InternalFailure`.
    pub calls_internal_failure: u64,
    /// Entries failed with throttling.
    pub entries_throttled: u64,
    /// Entries failed with `InternalFailure`.
    pub entries_internal_failure: u64,
    /// Entries failed with `KMSThrottlingException`.
    pub entries_kms_throttled: u64,
    /// Calls refused as malformed (see [`FaultPlan::refuse_calls_containing`]).
    pub calls_refused: u64,
}

/// The interceptor. Clones share the generator and the statistics.
#[derive(Clone, Debug)]
pub struct PutRecordsFaults {
    plan: FaultPlan,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    rng: SplitMix64,
    stats: FaultStats,
    enabled: bool,
}

/// The decision for one call, kept in the call's config bag between the two hooks.
#[derive(Clone, Debug)]
enum Decision {
    FailCall {
        code: &'static str,
        message: &'static str,
    },
    /// The entries failed (index in the original call, error code), and whether any entry
    /// was left to send.
    FailEntries(Vec<(usize, &'static str)>, bool),
}

impl Storable for Decision {
    type Storer = StoreReplace<Self>;
}

impl PutRecordsFaults {
    /// A layer following `plan`.
    pub fn new(plan: FaultPlan) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rng: SplitMix64(plan.seed),
                stats: FaultStats::default(),
                enabled: true,
            })),
            plan,
        }
    }

    /// What was injected so far.
    pub fn stats(&self) -> FaultStats {
        self.lock().stats
    }

    /// Turns injection on or off (e.g. off to let a test drain cleanly).
    pub fn set_enabled(&self, enabled: bool) {
        self.lock().enabled = enabled;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

const THROTTLED: &str = "ProvisionedThroughputExceededException";
const INTERNAL: &str = "InternalFailure";
const KMS_THROTTLED: &str = "KMSThrottlingException";

impl Intercept for PutRecordsFaults {
    fn name(&self) -> &'static str {
        "PutRecordsFaults"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(input) = context.input_mut().downcast_mut::<PutRecordsInput>() else {
            return Ok(());
        };
        let mut state = self.lock();
        if !state.enabled {
            return Ok(());
        }
        state.stats.calls += 1;
        let refused = self
            .plan
            .refuse_calls_containing
            .as_deref()
            .is_some_and(|marker| {
                input.records.iter().flatten().any(|entry| {
                    entry
                        .data
                        .as_ref()
                        .windows(marker.len().max(1))
                        .any(|window| window == marker)
                })
            });
        let roll = state.rng.next_f64();
        let decision = if refused {
            state.stats.calls_refused += 1;
            Some(Decision::FailCall {
                code: "ValidationException",
                message: "1 validation error detected: a record is malformed (injected)",
            })
        } else if roll < self.plan.call_throttle {
            state.stats.calls_throttled += 1;
            Some(Decision::FailCall {
                code: THROTTLED,
                message: "Rate exceeded for stream (injected)",
            })
        } else if roll < self.plan.call_throttle + self.plan.call_internal_failure {
            state.stats.calls_internal_failure += 1;
            Some(Decision::FailCall {
                code: INTERNAL,
                message: "Internal service failure (injected)",
            })
        } else {
            let count = input.records.as_ref().map_or(0, Vec::len);
            let mut failed = Vec::new();
            for index in 0..count {
                let roll = state.rng.next_f64();
                if roll < self.plan.entry_throttle {
                    state.stats.entries_throttled += 1;
                    failed.push((index, THROTTLED));
                } else if roll < self.plan.entry_throttle + self.plan.entry_internal_failure {
                    state.stats.entries_internal_failure += 1;
                    failed.push((index, INTERNAL));
                } else if roll
                    < self.plan.entry_throttle
                        + self.plan.entry_internal_failure
                        + self.plan.entry_kms_throttle
                {
                    state.stats.entries_kms_throttled += 1;
                    failed.push((index, KMS_THROTTLED));
                }
            }
            let sends_some = failed.len() < count;
            (!failed.is_empty()).then_some(Decision::FailEntries(failed, sends_some))
        };
        drop(state);
        let Some(decision) = decision else {
            return Ok(());
        };
        let records = input.records.get_or_insert_with(Vec::new);
        match &decision {
            // The server stores nothing: send it an empty call (it answers with a validation
            // error, which the second hook replaces).
            Decision::FailCall { .. } => records.clear(),
            Decision::FailEntries(failed, _) => {
                for (index, _) in failed.iter().rev() {
                    records.remove(*index);
                }
                if records.is_empty() {
                    // Nothing left to send: still make a harmless call.
                    records.clear();
                }
            }
        }
        cfg.interceptor_state().store_put(decision);
        Ok(())
    }

    fn modify_before_attempt_completion(
        &self,
        context: &mut FinalizerInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(decision) = cfg.load::<Decision>().cloned() else {
            return Ok(());
        };
        let Some(outcome) = context.output_or_error_mut() else {
            return Ok(());
        };
        if let Err(error) = outcome
            && !error.is_operation_error()
        {
            // The call failed below the operation (a dropped connection or timeout injected
            // by a transport fault layer): the caller sees that failure. Nothing was stored
            // either way, and an operation error cannot stand in for it at this phase.
            return Ok(());
        }
        match decision {
            Decision::FailCall { code, message } => {
                let error = PutRecordsError::generic(
                    ErrorMetadata::builder().code(code).message(message).build(),
                );
                *outcome = Err(OrchestratorError::operation(ErasedError::erase(error)));
            }
            // The trimmed call failed of itself: the caller must see that failure, not a
            // partial success.
            Decision::FailEntries(_, true) if outcome.is_err() => {}
            Decision::FailEntries(failed, _) => {
                let failed_entry = |code: &str| {
                    PutRecordsResultEntry::builder()
                        .error_code(code)
                        .error_message(format!("{code} (injected)"))
                        .build()
                };
                let sent_nothing = outcome.is_err();
                let mut results: Vec<PutRecordsResultEntry> = match outcome {
                    Ok(output) => output
                        .downcast_mut::<PutRecordsOutput>()
                        .map(|o| std::mem::take(&mut o.records))
                        .unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                let mut already_failed = results.iter().filter(|r| r.error_code.is_some()).count();
                for (index, code) in &failed {
                    let at = (*index).min(results.len());
                    results.insert(at, failed_entry(code));
                }
                already_failed += failed.len();
                let output = PutRecordsOutput::builder()
                    .set_records(Some(results))
                    .failed_record_count(already_failed as i32)
                    .build()
                    .map_err(|e| -> BoxError { Box::new(e) })?;
                if sent_nothing {
                    *outcome = Ok(
                        aws_smithy_runtime_api::client::interceptors::context::Output::erase(
                            output,
                        ),
                    );
                } else if let Ok(erased) = outcome
                    && let Some(slot) = erased.downcast_mut::<PutRecordsOutput>()
                {
                    *slot = output;
                }
            }
        }
        Ok(())
    }
}

/// A small, fast, seedable generator (SplitMix64); statistical quality is ample for choosing
/// faults, and it keeps the bed free of a random-number dependency.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
