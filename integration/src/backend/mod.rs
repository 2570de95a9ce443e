//! The backends the bed can start or reach, and the choice between them.
//!
//! | `KINESIS_TEST_BACKEND` | Kinesis | DynamoDB | needs |
//! |---|---|---|---|
//! | `embedded` (default, also when unset) | `ferrokinesis`, in-process | `dynoxide`, in-process | nothing |
//! | `emulators` | kinesis-mock (node child process) | DynamoDB Local (java child process) | node, npm, java, cc, flock; installs from `integration/emulators/package-lock.json` on first use |
//! | `localstack` | LocalStack container | LocalStack container | a Docker engine and the `localstack` feature |
//! | `endpoint` | `KINESIS_ENDPOINT` or real AWS | `DYNAMODB_ENDPOINT` or real AWS | the endpoints, or AWS credentials |

use std::any::Any;
use std::time::Duration;

use crate::BedError;
use crate::tls::{H2Endpoint, TestPki};

pub(crate) mod embedded;
pub(crate) mod emulators;
pub(crate) mod endpoint;
pub(crate) mod localstack;

/// The environment variable that selects a backend.
pub const BACKEND_ENV: &str = "KINESIS_TEST_BACKEND";

/// Which servers a [`TestBed`](crate::TestBed) talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// `ferrokinesis` and `dynoxide` served in-process on ephemeral loopback ports (the default).
    Embedded,
    /// kinesis-mock and DynamoDB Local, the engines LocalStack runs, as child processes on loopback.
    Emulators,
    /// LocalStack through `testcontainers` (needs Docker and the `localstack` feature).
    LocalStack,
    /// `KINESIS_ENDPOINT` / `DYNAMODB_ENDPOINT`, or real AWS through the default credential chain.
    Endpoint,
}

impl Backend {
    /// Reads [`BACKEND_ENV`]; unset or empty means [`Backend::Embedded`].
    ///
    /// ```
    /// use kinesis_integration::Backend;
    /// assert_eq!(Backend::parse("emulators").unwrap(), Backend::Emulators);
    /// assert!(Backend::parse("kinesalite").is_err());
    /// ```
    pub fn from_env() -> Result<Self, BedError> {
        match std::env::var(BACKEND_ENV) {
            Ok(value) => Self::parse(&value),
            Err(_) => Ok(Self::Embedded),
        }
    }

    /// Parses a backend name as accepted in [`BACKEND_ENV`] (case-insensitive).
    pub fn parse(value: &str) -> Result<Self, BedError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "embedded" | "in-process" => Ok(Self::Embedded),
            "emulators" => Ok(Self::Emulators),
            "localstack" => Ok(Self::LocalStack),
            "endpoint" | "aws" => Ok(Self::Endpoint),
            _ => Err(BedError::UnknownBackend {
                value: value.to_owned(),
            }),
        }
    }

    /// The backend's name as written in [`BACKEND_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Emulators => "emulators",
            Self::LocalStack => "localstack",
            Self::Endpoint => "endpoint",
        }
    }
}

/// How the bed's default Kinesis client ([`TestBed::kinesis`](crate::TestBed::kinesis), and the
/// builder [`TestBed::kinesis_config`](crate::TestBed::kinesis_config)) reaches the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KinesisTransport {
    /// The backend's plain endpoint with the SDK's default client: HTTP/1.1 over `http://` on
    /// the local backends (the default).
    #[default]
    Plain,
    /// TLS with ALPN, negotiating HTTP/2 as real AWS does for `SubscribeToShard`: the bed's TLS
    /// endpoint (see [`crate::tls`]), trusted through the bed's test CA, with every call's
    /// protocol recorded ([`TestBed::http_versions`](crate::TestBed::http_versions)). Supported
    /// on the embedded and emulators backends; on the endpoint backend without
    /// `KINESIS_ENDPOINT` (real AWS, which is TLS + HTTP/2 already) the default client is kept
    /// and nothing is recorded; elsewhere the bed fails to start, saying so.
    TlsHttp2,
}

/// Knobs for the servers a bed starts.
///
/// Only the embedded backend starts servers per bed, so only it honours the server settings;
/// the emulators and LocalStack backends share one server pair per test process with the
/// generous settings their module docs give, and the endpoint backend cannot change a remote
/// server. [`BedOptions::kinesis_transport`] is a client setting, honoured where supported.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BedOptions {
    /// Maximum open shards across all streams of the server. Default 1 000 (ferrokinesis' own
    /// default of 10 is too small for resharding tests).
    pub shard_limit: u32,
    /// Real per-shard write throttling (1 000 records/s, 1 MiB/s). Default off.
    pub enforce_limits: bool,
    /// Lifetime of one SubscribeToShard session. Default 5 minutes, as on AWS.
    pub subscribe_to_shard_session: Duration,
    /// Lifetime of a shard iterator. Default 5 minutes, as on AWS.
    pub iterator_ttl: Duration,
    /// How the bed's default Kinesis client reaches the server. Default
    /// [`KinesisTransport::Plain`].
    pub kinesis_transport: KinesisTransport,
    /// The loopback port the embedded Kinesis server's plain HTTP listener binds; 0 (the
    /// default) picks a free one. Only the embedded backend honours it.
    pub kinesis_port: u16,
    /// The loopback port the embedded DynamoDB server binds; 0 (the default) picks a free one.
    /// Only the embedded backend honours it.
    pub dynamodb_port: u16,
}

impl Default for BedOptions {
    fn default() -> Self {
        Self {
            shard_limit: 1_000,
            enforce_limits: false,
            subscribe_to_shard_session: Duration::from_secs(300),
            iterator_ttl: Duration::from_secs(300),
            kinesis_transport: KinesisTransport::Plain,
            kinesis_port: 0,
            dynamodb_port: 0,
        }
    }
}

impl BedOptions {
    /// Sets [`BedOptions::shard_limit`].
    pub fn shard_limit(mut self, limit: u32) -> Self {
        self.shard_limit = limit;
        self
    }

    /// Sets [`BedOptions::enforce_limits`].
    pub fn enforce_limits(mut self, enforce: bool) -> Self {
        self.enforce_limits = enforce;
        self
    }

    /// Sets [`BedOptions::subscribe_to_shard_session`].
    pub fn subscribe_to_shard_session(mut self, lifetime: Duration) -> Self {
        self.subscribe_to_shard_session = lifetime;
        self
    }

    /// Sets [`BedOptions::iterator_ttl`].
    pub fn iterator_ttl(mut self, ttl: Duration) -> Self {
        self.iterator_ttl = ttl;
        self
    }

    /// Sets [`BedOptions::kinesis_transport`].
    pub fn kinesis_transport(mut self, transport: KinesisTransport) -> Self {
        self.kinesis_transport = transport;
        self
    }

    /// Sets [`BedOptions::kinesis_port`].
    pub fn kinesis_port(mut self, port: u16) -> Self {
        self.kinesis_port = port;
        self
    }

    /// Sets [`BedOptions::dynamodb_port`].
    pub fn dynamodb_port(mut self, port: u16) -> Self {
        self.dynamodb_port = port;
        self
    }
}

/// Where a started backend listens, and what keeps it alive.
pub(crate) struct Running {
    /// `None` means the SDK's default endpoint resolution (real AWS).
    pub(crate) kinesis_endpoint: Option<String>,
    pub(crate) dynamodb_endpoint: Option<String>,
    /// The engine's own TLS (HTTP/2-capable) Kinesis port, where the backend has one.
    pub(crate) kinesis_tls_endpoint: Option<String>,
    /// The bed's observed TLS + HTTP/2 Kinesis endpoint, where the backend has one.
    pub(crate) kinesis_h2: Option<H2Endpoint>,
    /// Whether to sign with fixed dummy credentials instead of the default chain.
    pub(crate) dummy_credentials: bool,
    /// Dropped with the bed; stops or releases the servers.
    pub(crate) guard: Box<dyn Any + Send + Sync>,
}

pub(crate) async fn start(backend: Backend, options: &BedOptions) -> Result<Running, BedError> {
    match backend {
        Backend::Embedded => {
            let servers = embedded::EmbeddedServers::start(options, TestPki::shared()?)?;
            Ok(Running {
                kinesis_endpoint: Some(servers.kinesis_endpoint()),
                dynamodb_endpoint: Some(servers.dynamodb_endpoint()),
                kinesis_tls_endpoint: Some(servers.kinesis_h2().url.clone()),
                kinesis_h2: Some(servers.kinesis_h2()),
                dummy_credentials: true,
                guard: Box::new(servers),
            })
        }
        Backend::Emulators => {
            let emulators = emulators::Emulators::acquire().await?;
            Ok(Running {
                kinesis_endpoint: Some(emulators.kinesis_endpoint()),
                dynamodb_endpoint: Some(emulators.dynamodb_endpoint()),
                kinesis_tls_endpoint: Some(emulators.kinesis_tls_endpoint()),
                kinesis_h2: Some(emulators.kinesis_h2()),
                dummy_credentials: true,
                guard: Box::new(emulators),
            })
        }
        Backend::LocalStack => localstack::start().await,
        Backend::Endpoint => Ok(endpoint::from_env()),
    }
}
