//! A deterministic (seeded) fault layer for any call of a Kinesis or DynamoDB client: a small
//! in-process proxy in place of the client's HTTP connector.
//!
//! Every attempt the SDK makes goes through [`ServiceFaults`], which names the operation from
//! the request's `X-Amz-Target` header (`Kinesis_20131202.GetRecords`,
//! `DynamoDB_20120810.UpdateItem`, …) and, for the operations it targets, draws one decision
//! from a seeded generator of that operation:
//!
//! - **throttling** — an HTTP 400 answer with the service's throttling error
//!   (`ProvisionedThroughputExceededException` for Kinesis; `ThrottlingException` and
//!   `ProvisionedThroughputExceededException` in turn for DynamoDB). The server never sees the
//!   request, so nothing is applied, as when AWS throttles.
//! - **server errors** — an HTTP 500 answer (`InternalFailure` for Kinesis,
//!   `InternalServerError` for DynamoDB); nothing applied.
//! - **dropped connections** — an I/O error before the request reaches the server (the SDK
//!   reports a dispatch failure); nothing applied.
//! - **timeouts** — the request *is* applied by the server, but its answer is lost: after
//!   [`ServicePlan::timeout_after`] the client sees a timeout. The nastiest case for
//!   conditional writes (a lease renewal or checkpoint that landed though the caller was told
//!   it failed).
//! - **latency** — the call is delayed by up to [`ServicePlan::max_latency`] (uniformly drawn),
//!   then sent normally.
//!
//! The answers are real HTTP responses, so the SDK deserializes them into its own typed errors
//! (`GetRecordsError::ProvisionedThroughputExceededException`, …) and its retry classifiers see
//! exactly what they would see from AWS.
//!
//! Each operation has its own generator (the seed mixed with the operation name), so the
//! decisions of one operation do not depend on how its calls interleave with other
//! operations'. [`ServiceFaults::set_enabled`] switches injection on and off;
//! [`ServiceFaults::stats`] counts what was injected, per operation.
//!
//! An opt-in call log ([`ServiceFaults::log_calls`], read with [`ServiceFaults::calls`])
//! keeps every attempt with its timings, request body, what was injected and what the
//! server and the caller got: enough for a test to tell, for example, which conditional
//! writes of a client landed and when its caller last heard of a success. Off by default;
//! it changes nothing in what the layer does.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_integration::faults::{Service, ServiceFaults, ServicePlan};
//! # let bed = kinesis_integration::TestBed::start_with(
//! #     kinesis_integration::Backend::Embedded, Default::default()).await?;
//!
//! let faults = ServiceFaults::new(
//!     Service::Kinesis,
//!     ServicePlan { throttle: 1.0, ..ServicePlan::seeded(7) }.operations(["ListShards"]),
//! );
//! let client = aws_sdk_kinesis::Client::from_conf(
//!     faults
//!         .kinesis_config(&bed)
//!         .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
//!         .build(),
//! );
//! let error = client.list_shards().stream_name("s").send().await.unwrap_err();
//! assert_eq!(
//!     aws_sdk_kinesis::error::ProvideErrorMetadata::code(&error),
//!     Some("ProvisionedThroughputExceededException"),
//! );
//! assert_eq!(faults.stats().total.throttled, 1);
//! faults.set_enabled(false); // calls go through untouched from now on
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;

use super::SplitMix64;
use crate::{KinesisTransport, TestBed};

/// Which service the faulted client talks to: decides the error codes and content type of the
/// injected answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// Kinesis Data Streams (`awsJson1_1`).
    Kinesis,
    /// DynamoDB (`awsJson1_0`).
    DynamoDb,
}

impl Service {
    fn content_type(self) -> &'static str {
        match self {
            Service::Kinesis => "application/x-amz-json-1.1",
            Service::DynamoDb => "application/x-amz-json-1.0",
        }
    }

    fn throttle_code(self, n: u64) -> &'static str {
        match self {
            Service::Kinesis => "ProvisionedThroughputExceededException",
            Service::DynamoDb if n.is_multiple_of(2) => "ThrottlingException",
            Service::DynamoDb => "ProvisionedThroughputExceededException",
        }
    }

    fn server_error_code(self) -> &'static str {
        match self {
            Service::Kinesis => "InternalFailure",
            Service::DynamoDb => "InternalServerError",
        }
    }
}

/// Chances of each fault per call attempt of a targeted operation, and the seed. The chances
/// of throttling, server errors, dropped connections and timeouts are exclusive (their sum
/// should stay at or below 1); latency is drawn independently and may precede any of them.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePlan {
    /// Seed of the decision generators.
    pub seed: u64,
    /// Operations affected (`"GetRecords"`, `"UpdateItem"`, …); empty: every operation.
    pub operations: BTreeSet<String>,
    /// Chance of an HTTP 400 throttling answer (not applied).
    pub throttle: f64,
    /// Chance of an HTTP 500 answer (not applied).
    pub server_error: f64,
    /// Chance of an I/O error before the server sees the request (not applied).
    pub dropped_connection: f64,
    /// Chance the request is applied but its answer lost: a timeout error after
    /// [`timeout_after`](Self::timeout_after).
    pub timeout: f64,
    /// How long a lost answer keeps the caller waiting before the timeout error.
    pub timeout_after: Duration,
    /// Chance of a delay before the request is sent.
    pub latency: f64,
    /// The longest such delay (each is drawn uniformly from `0..=max_latency`).
    pub max_latency: Duration,
}

impl ServicePlan {
    /// No faults, every operation targeted, with this seed; set the chances with struct
    /// update syntax.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            operations: BTreeSet::new(),
            throttle: 0.0,
            server_error: 0.0,
            dropped_connection: 0.0,
            timeout: 0.0,
            timeout_after: Duration::from_millis(500),
            latency: 0.0,
            max_latency: Duration::from_millis(100),
        }
    }

    /// Restricts the faults to these operations.
    pub fn operations<I, S>(mut self, operations: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.operations = operations.into_iter().map(Into::into).collect();
        self
    }

    fn targets(&self, operation: &str) -> bool {
        self.operations.is_empty() || self.operations.contains(operation)
    }
}

/// Counts of one operation (or of all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounts {
    /// Call attempts seen while enabled (targeted or not).
    pub calls: u64,
    /// Throttling answers injected.
    pub throttled: u64,
    /// HTTP 500 answers injected.
    pub server_errors: u64,
    /// Connections dropped before the server saw the request.
    pub dropped: u64,
    /// Answers lost after the server applied the request.
    pub timed_out: u64,
    /// Calls delayed.
    pub delayed: u64,
}

impl ServiceCounts {
    /// Calls that failed because of an injected fault.
    pub fn failed(&self) -> u64 {
        self.throttled + self.server_errors + self.dropped + self.timed_out
    }
}

impl std::ops::AddAssign for ServiceCounts {
    fn add_assign(&mut self, other: ServiceCounts) {
        self.calls += other.calls;
        self.throttled += other.throttled;
        self.server_errors += other.server_errors;
        self.dropped += other.dropped;
        self.timed_out += other.timed_out;
        self.delayed += other.delayed;
    }
}

/// What a [`ServiceFaults`] injected so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFaultStats {
    /// Over every operation.
    pub total: ServiceCounts,
    /// Per operation name (`GetRecords`, `UpdateItem`, …).
    pub by_operation: BTreeMap<String, ServiceCounts>,
}

/// A fault the layer injected into one attempt (see [`ServiceCall::fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// An HTTP 400 throttling answer; the server never saw the request.
    Throttle,
    /// An HTTP 500 answer; the server never saw the request.
    ServerError,
    /// An I/O error before the request reached the server.
    DroppedConnection,
    /// The server applied the request; its answer was lost (a timeout error to the caller).
    Timeout,
}

/// One call attempt, as kept by the call log ([`ServiceFaults::log_calls`]).
#[derive(Clone, Debug)]
pub struct ServiceCall {
    /// The operation (`UpdateItem`, `GetRecords`, …).
    pub operation: String,
    /// When the layer saw the attempt (before any injected delay).
    pub started: Instant,
    /// The delay injected before sending, if any.
    pub delay: Option<Duration>,
    /// The fault injected, if any (`None`: sent untouched, or injection was off).
    pub fault: Option<InjectedFault>,
    /// The request body, when it is in memory (it is for the JSON protocols of Kinesis and
    /// DynamoDB).
    pub request: Option<Vec<u8>>,
    /// The HTTP status the server answered with, when the request reached it (sent
    /// untouched, or [`InjectedFault::Timeout`]: applied, its answer then lost).
    pub server_status: Option<u16>,
    /// When the server's answer (or the real connector's error) came back.
    pub server_answered: Option<Instant>,
    /// The HTTP status handed to the caller (`None`: the caller got an error — a dropped
    /// connection, a timeout, the real connector's error — or nothing yet).
    pub status: Option<u16>,
    /// When the caller got its answer or error. `None`: the caller dropped the attempt
    /// before (its own timeout, for example), or it is still running.
    pub ended: Option<Instant>,
}

/// The fault layer: an [`HttpClient`] wrapping the real one. Clones share the generators, the
/// switch and the statistics.
#[derive(Clone, Debug)]
pub struct ServiceFaults {
    service: Service,
    plan: Arc<ServicePlan>,
    state: Arc<Mutex<ServiceState>>,
}

#[derive(Debug)]
struct ServiceState {
    enabled: bool,
    generators: BTreeMap<String, SplitMix64>,
    stats: BTreeMap<String, ServiceCounts>,
    /// Whether new attempts are logged.
    logging: bool,
    /// The call log, in the order the attempts started.
    calls: Vec<ServiceCall>,
}

/// The decision for one attempt.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    Throttle(&'static str),
    ServerError,
    Drop,
    Timeout,
}

impl ServiceFaults {
    /// A layer for a client of `service`, following `plan`, enabled.
    pub fn new(service: Service, plan: ServicePlan) -> Self {
        Self {
            service,
            plan: Arc::new(plan),
            state: Arc::new(Mutex::new(ServiceState {
                enabled: true,
                generators: BTreeMap::new(),
                stats: BTreeMap::new(),
                logging: false,
                calls: Vec::new(),
            })),
        }
    }

    /// The plan followed.
    pub fn plan(&self) -> &ServicePlan {
        &self.plan
    }

    /// Turns injection on or off (off: every call goes through untouched and is not counted).
    pub fn set_enabled(&self, enabled: bool) {
        self.lock().enabled = enabled;
    }

    /// Whether injection is on.
    pub fn is_enabled(&self) -> bool {
        self.lock().enabled
    }

    /// What was injected so far.
    pub fn stats(&self) -> ServiceFaultStats {
        let state = self.lock();
        let mut total = ServiceCounts::default();
        for counts in state.stats.values() {
            total += *counts;
        }
        ServiceFaultStats {
            total,
            by_operation: state.stats.clone(),
        }
    }

    /// Turns the call log on or off (off by default). While on, every attempt — faulted or
    /// not, targeted or not, injection enabled or not — is kept as a [`ServiceCall`];
    /// turning it off keeps what was logged (attempts in flight are still completed).
    pub fn log_calls(&self, on: bool) {
        self.lock().logging = on;
    }

    /// The attempts logged so far, in the order they started.
    pub fn calls(&self) -> Vec<ServiceCall> {
        self.lock().calls.clone()
    }

    /// Logs the start of an attempt; returns its index in the log, `None` if not logging.
    fn log_start(
        &self,
        operation: &str,
        started: Instant,
        delay: Option<Duration>,
        fault: Fault,
        request: &HttpRequest,
    ) -> Option<usize> {
        let mut state = self.lock();
        if !state.logging {
            return None;
        }
        let fault = match fault {
            Fault::None => None,
            Fault::Throttle(_) => Some(InjectedFault::Throttle),
            Fault::ServerError => Some(InjectedFault::ServerError),
            Fault::Drop => Some(InjectedFault::DroppedConnection),
            Fault::Timeout => Some(InjectedFault::Timeout),
        };
        state.calls.push(ServiceCall {
            operation: operation.to_owned(),
            started,
            delay,
            fault,
            request: request.body().bytes().map(<[u8]>::to_vec),
            server_status: None,
            server_answered: None,
            status: None,
            ended: None,
        });
        Some(state.calls.len() - 1)
    }

    /// Updates a logged attempt (nothing if it is not logged).
    fn log_update(&self, index: Option<usize>, update: impl FnOnce(&mut ServiceCall)) {
        if let Some(index) = index
            && let Some(call) = self.lock().calls.get_mut(index)
        {
            update(call);
        }
    }

    /// An HTTP client that sends through `inner` what the plan lets through.
    pub fn http_client(&self, inner: SharedHttpClient) -> SharedHttpClient {
        SharedHttpClient::new(FaultyClient {
            faults: self.clone(),
            inner,
        })
    }

    /// The bed's Kinesis HTTP client (the TLS + HTTP/2 one when the bed's transport is
    /// [`KinesisTransport::TlsHttp2`]) behind this layer. Layers stack: pass one layer's client
    /// to another's [`http_client`](Self::http_client).
    pub fn kinesis_http_client(&self, bed: &TestBed) -> SharedHttpClient {
        let inner = match (&bed.kinesis_transport, &bed.kinesis_h2) {
            (KinesisTransport::TlsHttp2, Some(h2)) => h2.http_client.clone(),
            _ => default_client(bed),
        };
        self.http_client(inner)
    }

    /// The bed's DynamoDB HTTP client behind this layer.
    pub fn dynamodb_http_client(&self, bed: &TestBed) -> SharedHttpClient {
        self.http_client(default_client(bed))
    }

    /// [`TestBed::kinesis_config`] with this layer in front of the bed's HTTP client.
    pub fn kinesis_config(&self, bed: &TestBed) -> aws_sdk_kinesis::config::Builder {
        bed.kinesis_config()
            .http_client(self.kinesis_http_client(bed))
    }

    /// [`TestBed::dynamodb_config`] with this layer in front of the bed's HTTP client.
    pub fn dynamodb_config(&self, bed: &TestBed) -> aws_sdk_dynamodb::config::Builder {
        bed.dynamodb_config()
            .http_client(self.dynamodb_http_client(bed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ServiceState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Draws the decision for one attempt of `operation`: an optional delay and a fault.
    fn decide(&self, operation: &str) -> (Option<Duration>, Fault) {
        let mut state = self.lock();
        if !state.enabled {
            return (None, Fault::None);
        }
        let plan = &self.plan;
        let targeted = plan.targets(operation);
        let seed = plan.seed ^ fnv1a(operation);
        let rng = state
            .generators
            .entry(operation.to_owned())
            .or_insert_with(|| SplitMix64(seed));
        let (delay_roll, delay_fraction, roll) = (rng.next_f64(), rng.next_f64(), rng.next_f64());
        let counts = state.stats.entry(operation.to_owned()).or_default();
        counts.calls += 1;
        if !targeted {
            return (None, Fault::None);
        }
        let delay = (delay_roll < plan.latency).then(|| {
            counts.delayed += 1;
            plan.max_latency.mul_f64(delay_fraction)
        });
        let bounds = [
            plan.throttle,
            plan.throttle + plan.server_error,
            plan.throttle + plan.server_error + plan.dropped_connection,
            plan.throttle + plan.server_error + plan.dropped_connection + plan.timeout,
        ];
        let fault = match bounds.iter().position(|bound| roll < *bound) {
            Some(0) => {
                counts.throttled += 1;
                Fault::Throttle(self.service.throttle_code(counts.throttled))
            }
            Some(1) => {
                counts.server_errors += 1;
                Fault::ServerError
            }
            Some(2) => {
                counts.dropped += 1;
                Fault::Drop
            }
            Some(_) => {
                counts.timed_out += 1;
                Fault::Timeout
            }
            None => Fault::None,
        };
        (delay, fault)
    }

    fn error_response(&self, status: u16, code: &str) -> HttpResponse {
        let body = format!(r#"{{"__type":"{code}","message":"{code} (injected)"}}"#);
        let mut response = HttpResponse::new(
            StatusCode::try_from(status).expect("a valid status"),
            SdkBody::from(body),
        );
        let headers = response.headers_mut();
        headers.insert("content-type", self.service.content_type());
        headers.insert("x-amzn-requestid", "injected-fault");
        headers.insert("x-amzn-errortype", code.to_owned());
        response
    }
}

/// The bed's plain HTTP client: the shared one if the SDK config has one, else the SDK's
/// default (hyper + rustls), which is what the SDK would build itself.
fn default_client(bed: &TestBed) -> SharedHttpClient {
    bed.sdk_config.http_client().unwrap_or_else(|| {
        aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https()
    })
}

/// The operation a request calls, from its `X-Amz-Target` header (`Service_Version.Operation`).
fn operation_of(request: &HttpRequest) -> String {
    request
        .headers()
        .get("x-amz-target")
        .and_then(|target| target.rsplit('.').next())
        .unwrap_or("unknown")
        .to_owned()
}

/// FNV-1a of a name: mixes the operation into the seed.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[derive(Debug)]
struct FaultyClient {
    faults: ServiceFaults,
    inner: SharedHttpClient,
}

impl HttpClient for FaultyClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            faults: self.faults.clone(),
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    faults: ServiceFaults,
    inner: SharedHttpConnector,
}

impl HttpConnector for FaultyConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let started = Instant::now();
        let operation = operation_of(&request);
        let (delay, fault) = self.faults.decide(&operation);
        let logged = self
            .faults
            .log_start(&operation, started, delay, fault, &request);
        let faults = self.faults.clone();
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            let server_answered = |result: &Result<HttpResponse, ConnectorError>| {
                let status = result.as_ref().ok().map(|r| r.status().as_u16());
                faults.log_update(logged, |call| {
                    call.server_status = status;
                    call.server_answered = Some(Instant::now());
                });
            };
            let result = match fault {
                Fault::None => {
                    let result = inner.call(request).await;
                    server_answered(&result);
                    result
                }
                Fault::Throttle(code) => Ok(faults.error_response(400, code)),
                Fault::ServerError => {
                    Ok(faults.error_response(500, faults.service.server_error_code()))
                }
                Fault::Drop => Err(ConnectorError::io(
                    format!("connection reset before {operation} was sent (injected)").into(),
                )),
                Fault::Timeout => {
                    // The server applies the request; its answer never arrives.
                    let applied = inner.call(request).await;
                    server_answered(&applied);
                    tokio::time::sleep(faults.plan.timeout_after).await;
                    Err(ConnectorError::timeout(
                        format!("{operation}: no answer in time (injected)").into(),
                    ))
                }
            };
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            faults.log_update(logged, |call| {
                call.status = status;
                call.ended = Some(Instant::now());
            });
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, BedOptions};
    use aws_sdk_dynamodb::types::AttributeValue;

    fn plan(seed: u64) -> ServicePlan {
        ServicePlan {
            throttle: 0.2,
            server_error: 0.1,
            dropped_connection: 0.1,
            timeout: 0.1,
            latency: 0.3,
            ..ServicePlan::seeded(seed)
        }
    }

    #[test]
    fn decisions_replay_from_the_seed_per_operation() {
        let trace = |faults: &ServiceFaults, operations: &[&str]| {
            operations
                .iter()
                .map(|op| format!("{:?}", faults.decide(op)))
                .collect::<Vec<_>>()
        };
        let a = ServiceFaults::new(Service::DynamoDb, plan(3));
        let b = ServiceFaults::new(Service::DynamoDb, plan(3));
        let c = ServiceFaults::new(Service::DynamoDb, plan(4));
        // The same calls of one operation get the same faults, however other operations'
        // calls interleave with them.
        let a_trace = trace(&a, &["UpdateItem"; 50]);
        let mut b_trace = Vec::new();
        for _ in 0..50 {
            b_trace.extend(trace(&b, &["UpdateItem"]));
            trace(&b, &["Scan"]);
        }
        assert_eq!(a_trace, b_trace);
        assert_ne!(a_trace, trace(&c, &["UpdateItem"; 50]));
        let stats = a.stats().by_operation["UpdateItem"];
        assert_eq!(stats.calls, 50);
        assert!(stats.throttled > 0 && stats.failed() > stats.throttled);
        // Switched off: untouched and not counted.
        a.set_enabled(false);
        assert!(
            trace(&a, &["UpdateItem"; 20])
                .iter()
                .all(|d| d == "(None, None)")
        );
        assert_eq!(a.stats().total.calls, 50);
    }

    #[test]
    fn untargeted_operations_go_through() {
        let faults = ServiceFaults::new(
            Service::Kinesis,
            ServicePlan {
                throttle: 1.0,
                ..ServicePlan::seeded(1)
            }
            .operations(["GetRecords"]),
        );
        assert!(matches!(faults.decide("ListShards"), (None, Fault::None)));
        assert!(matches!(
            faults.decide("GetRecords"),
            (
                None,
                Fault::Throttle("ProvisionedThroughputExceededException")
            )
        ));
    }

    /// A DynamoDB client through a layer that always injects `fault`, without SDK retries.
    async fn dynamodb_with(
        bed: &TestBed,
        plan: ServicePlan,
    ) -> (ServiceFaults, aws_sdk_dynamodb::Client) {
        let faults = ServiceFaults::new(Service::DynamoDb, plan.operations(["PutItem"]));
        let client = aws_sdk_dynamodb::Client::from_conf(
            faults
                .dynamodb_config(bed)
                .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
                .build(),
        );
        (faults, client)
    }

    async fn item_count(bed: &TestBed, table: &str) -> i32 {
        bed.dynamodb()
            .scan()
            .table_name(table)
            .send()
            .await
            .expect("scan")
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dynamodb_faults_are_typed_and_applied_only_when_the_answer_is_lost() {
        let bed = TestBed::start_with(Backend::Embedded, BedOptions::default())
            .await
            .expect("bed");
        let table = bed.create_table("k").await.expect("table");
        let put = |client: &aws_sdk_dynamodb::Client, key: &str| {
            client
                .put_item()
                .table_name(&table)
                .item("k", AttributeValue::S(key.to_owned()))
                .send()
        };

        let (faults, client) = dynamodb_with(
            &bed,
            ServicePlan {
                throttle: 1.0,
                ..ServicePlan::seeded(1)
            },
        )
        .await;
        let error = put(&client, "a").await.unwrap_err().into_service_error();
        assert_eq!(
            aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&error),
            Some("ProvisionedThroughputExceededException")
        );
        assert!(error.is_provisioned_throughput_exceeded_exception());
        let error = put(&client, "a").await.unwrap_err().into_service_error();
        assert_eq!(
            aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&error),
            Some("ThrottlingException")
        );
        assert_eq!(faults.stats().total.throttled, 2);

        let (_, client) = dynamodb_with(
            &bed,
            ServicePlan {
                server_error: 1.0,
                ..ServicePlan::seeded(1)
            },
        )
        .await;
        let error = put(&client, "b").await.unwrap_err();
        assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(500));
        assert!(error.into_service_error().is_internal_server_error());

        let (_, client) = dynamodb_with(
            &bed,
            ServicePlan {
                dropped_connection: 1.0,
                ..ServicePlan::seeded(1)
            },
        )
        .await;
        let error = put(&client, "c").await.unwrap_err();
        assert!(
            matches!(&error, aws_sdk_dynamodb::error::SdkError::DispatchFailure(d) if d.is_io()),
            "{error:?}"
        );
        assert_eq!(item_count(&bed, &table).await, 0, "nothing applied so far");

        let (faults, client) = dynamodb_with(
            &bed,
            ServicePlan {
                timeout: 1.0,
                timeout_after: Duration::from_millis(10),
                ..ServicePlan::seeded(1)
            },
        )
        .await;
        let error = put(&client, "d").await.unwrap_err();
        assert!(
            matches!(&error, aws_sdk_dynamodb::error::SdkError::DispatchFailure(d) if d.is_timeout()),
            "{error:?}"
        );
        assert_eq!(item_count(&bed, &table).await, 1, "applied, answer lost");
        faults.set_enabled(false);
        put(&client, "e").await.expect("through once switched off");
        assert_eq!(item_count(&bed, &table).await, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_call_log_is_opt_in_and_keeps_each_attempt() {
        let bed = TestBed::start_with(Backend::Embedded, BedOptions::default())
            .await
            .expect("bed");
        let table = bed.create_table("k").await.expect("table");
        let (faults, client) = dynamodb_with(
            &bed,
            ServicePlan {
                timeout: 1.0,
                timeout_after: Duration::from_millis(10),
                ..ServicePlan::seeded(1)
            },
        )
        .await;
        let put = |key: &str| {
            client
                .put_item()
                .table_name(&table)
                .item("k", AttributeValue::S(key.to_owned()))
                .send()
        };
        put("before").await.unwrap_err();
        assert!(faults.calls().is_empty(), "off by default");
        faults.log_calls(true);
        let before = Instant::now();
        put("lost").await.unwrap_err();
        faults.set_enabled(false);
        put("through").await.expect("through once switched off");
        faults.log_calls(false);
        put("unlogged").await.expect("through");
        let calls = faults.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        let (lost, through) = (&calls[0], &calls[1]);
        assert_eq!(lost.operation, "PutItem");
        assert_eq!(lost.fault, Some(InjectedFault::Timeout));
        assert_eq!(lost.server_status, Some(200), "applied");
        assert_eq!(lost.status, None, "the caller got a timeout");
        let body = String::from_utf8(lost.request.clone().expect("an in-memory body")).unwrap();
        assert!(body.contains(r#""S":"lost""#), "{body}");
        let (answered, ended) = (lost.server_answered.unwrap(), lost.ended.unwrap());
        assert!(before <= lost.started && lost.started <= answered);
        assert!(ended >= answered + Duration::from_millis(10));
        assert_eq!(through.fault, None);
        assert_eq!(
            (through.server_status, through.status),
            (Some(200), Some(200))
        );
        assert!(through.started >= ended);
    }
}
