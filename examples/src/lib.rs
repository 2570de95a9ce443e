//! What the example binaries share: how they connect to Kinesis and DynamoDB.
//!
//! Every binary takes the same connection flags. With `--embedded` it starts the test bed's
//! in-process servers; with `--kinesis-endpoint` / `--dynamodb-endpoint` it talks to those
//! (LocalStack, kinesis-mock, DynamoDB Local…); with neither it uses real AWS through the default
//! credential chain and region.

#![warn(missing_docs)]

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use kinesis_integration::{Backend, BedOptions, TestBed};

pub mod demo;
pub mod metrics_server;
pub mod ops;

/// Connection flags shared by the examples.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// Start in-process Kinesis and DynamoDB servers (ferrokinesis, dynoxide) and use them.
    #[arg(long, conflicts_with_all = ["kinesis_endpoint", "dynamodb_endpoint"])]
    pub embedded: bool,
    /// Kinesis endpoint URL, e.g. http://127.0.0.1:4566 (default: real AWS).
    #[arg(long, env = "KINESIS_ENDPOINT")]
    pub kinesis_endpoint: Option<String>,
    /// DynamoDB endpoint URL, e.g. http://127.0.0.1:8000 (default: real AWS).
    #[arg(long, env = "DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,
    /// AWS region (default: from the environment or profile; us-east-1 for endpoints).
    #[arg(long)]
    pub region: Option<String>,
}

/// Clients for the chosen servers, and what keeps embedded servers running.
pub struct Connection {
    /// The Kinesis client.
    pub kinesis: aws_sdk_kinesis::Client,
    /// The DynamoDB client.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// Where the clients point, for messages.
    pub description: String,
    /// Embedded servers, when started; dropped with the connection.
    pub bed: Option<TestBed>,
}

impl ConnectArgs {
    /// Connects as the flags say.
    pub async fn connect(&self) -> Result<Connection, Box<dyn std::error::Error + Send + Sync>> {
        if self.embedded {
            let bed = TestBed::start_with(Backend::Embedded, BedOptions::default()).await?;
            return Ok(Connection {
                kinesis: bed.kinesis().clone(),
                dynamodb: bed.dynamodb().clone(),
                description: format!(
                    "embedded servers (Kinesis {}, DynamoDB {})",
                    bed.kinesis_endpoint().unwrap_or("?"),
                    bed.dynamodb_endpoint().unwrap_or("?")
                ),
                bed: Some(bed),
            });
        }
        let config = self.sdk_config().await;
        let mut kinesis = aws_sdk_kinesis::config::Builder::from(&config);
        if let Some(url) = &self.kinesis_endpoint {
            kinesis = kinesis.endpoint_url(url);
        }
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&config);
        if let Some(url) = &self.dynamodb_endpoint {
            dynamodb = dynamodb.endpoint_url(url);
        }
        Ok(Connection {
            kinesis: aws_sdk_kinesis::Client::from_conf(kinesis.build()),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            description: match (&self.kinesis_endpoint, &self.dynamodb_endpoint) {
                (None, None) => "AWS".to_owned(),
                (k, d) => format!(
                    "Kinesis {}, DynamoDB {}",
                    k.as_deref().unwrap_or("AWS"),
                    d.as_deref().unwrap_or("AWS")
                ),
            },
            bed: None,
        })
    }

    async fn sdk_config(&self) -> SdkConfig {
        let uses_endpoint = self.kinesis_endpoint.is_some() || self.dynamodb_endpoint.is_some();
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if uses_endpoint {
            if self.region.is_none() && std::env::var_os("AWS_REGION").is_none() {
                loader = loader.region(Region::new("us-east-1"));
            }
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                // Emulators accept any signature.
                loader = loader
                    .credentials_provider(Credentials::new("test", "test", None, None, "examples"));
            }
        }
        loader.load().await
    }
}

/// The README's code, compiled by `cargo test` so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
