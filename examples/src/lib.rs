//! What the example binaries share: how they connect to Kinesis and DynamoDB, and how they
//! report an error.
//!
//! Every binary takes the same connection flags ([`ConnectArgs`]). With `--kinesis-endpoint` /
//! `--dynamodb-endpoint` it talks to those servers (LocalStack, kinesis-mock, DynamoDB Local,
//! the test bed…); without them it uses real AWS through the default credential chain and
//! region. Only the demo can also start the test bed's in-process servers
//! ([`Connection::embedded`]): it creates its stream and lease table itself, whereas the other
//! binaries work on a stream or table that must already exist, which fresh, empty servers never
//! hold.

#![warn(missing_docs)]

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use kinesis_integration::{Backend, BedOptions, TestBed};

pub mod demo;
pub mod metrics_server;
pub mod ops;
pub mod processed_log;
pub mod timestamp;

/// Connection flags shared by the examples.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectArgs {
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
#[derive(Debug)]
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

impl Connection {
    /// Starts in-process Kinesis and DynamoDB servers (ferrokinesis, dynoxide: fresh and
    /// empty) and connects to them; they stop when the connection is dropped.
    pub async fn embedded() -> Result<Connection, Box<dyn std::error::Error + Send + Sync>> {
        let bed = TestBed::start_with(Backend::Embedded, BedOptions::default()).await?;
        Ok(Connection {
            kinesis: bed.kinesis().clone(),
            dynamodb: bed.dynamodb().clone(),
            description: format!(
                "embedded servers (Kinesis {}, DynamoDB {})",
                bed.kinesis_endpoint().unwrap_or("?"),
                bed.dynamodb_endpoint().unwrap_or("?")
            ),
            bed: Some(bed),
        })
    }
}

impl ConnectArgs {
    /// Connects as the flags say: to the endpoints given, real AWS for the others.
    pub async fn connect(&self) -> Result<Connection, Box<dyn std::error::Error + Send + Sync>> {
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

/// An error and its causes on one line, `error: <error>: <cause>: <cause>…`, for a binary to
/// print on standard error. A cause whose text the line already holds (SDK errors often repeat
/// their source's message) is left out, as is a repeat of the part just before it; line
/// breaks become spaces. The `Debug` dump that `aws_smithy_types`' `DisplayErrorContext`
/// appends (response headers, request ids) is cut off where a message embeds one.
///
/// ```
/// let io = std::io::Error::other("connection refused");
/// let error: Box<dyn std::error::Error + Send + Sync> = Box::new(io);
/// assert_eq!(kinesis_examples::error_line(error.as_ref()), "error: connection refused");
/// ```
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = without_sdk_debug(&error.to_string()).to_owned();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        let text = without_sdk_debug(&text);
        if !text.is_empty() && !line.contains(text) {
            line.push_str(": ");
            line.push_str(text);
        }
        source = cause.source();
    }
    let line = line
        .lines()
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    format!("error: {}", without_repeats(&line))
}

/// `text` up to the `Debug` dump `DisplayErrorContext` appends to an SDK error, if any.
fn without_sdk_debug(text: &str) -> &str {
    const DUMPS: [&str; 5] = [
        " (ServiceError(",
        " (DispatchFailure(",
        " (TimeoutError(",
        " (ResponseError(",
        " (ConstructionFailure(",
    ];
    DUMPS
        .iter()
        .filter_map(|dump| text.find(dump))
        .min()
        .map_or(text, |at| &text[..at])
}

/// `a: b: b: c` as `a: b: c`: a run of `: `-separated parts repeated right after itself is
/// kept once (`service error: X: msg: X: msg` reads `service error: X: msg`).
fn without_repeats(line: &str) -> String {
    let mut parts: Vec<&str> = line.split(": ").collect();
    let mut run = 1;
    while run <= parts.len() / 2 {
        let mut i = 0;
        let mut removed = false;
        while i + 2 * run <= parts.len() {
            if parts[i..i + run] == parts[i + run..i + 2 * run] {
                parts.drain(i + run..i + 2 * run);
                removed = true;
            } else {
                i += 1;
            }
        }
        if !removed {
            run += 1;
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layer(message: &'static str, source: Option<Layer>) -> Layer {
        Layer {
            message,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn sdk_debug_dumps_and_repeats_are_cut() {
        let error = layer(
            "ListShards for stream s failed: service error: ResourceNotFoundException: Stream s \
             not found.: ResourceNotFoundException: Stream s not found. (ServiceError(\
             ServiceError { source: ResourceNotFoundException { message: Some(\"x\") } }))",
            Some(layer("service error", None)),
        );
        assert_eq!(
            error_line(&error),
            "error: ListShards for stream s failed: service error: ResourceNotFoundException: \
             Stream s not found."
        );
        assert_eq!(without_repeats("a: b: b: b: c"), "a: b: c");
        assert_eq!(without_repeats("a: b: c: b: c: d"), "a: b: c: d");
        assert_eq!(without_repeats("a: b: a: c"), "a: b: a: c");
    }

    #[test]
    fn an_error_line_holds_every_cause_once_on_one_line() {
        let error = layer(
            "Kinesis ListShards on stream `s` failed",
            Some(layer(
                "ResourceNotFoundException: Stream s\nnot found",
                Some(layer("Stream s\nnot found", None)),
            )),
        );
        assert_eq!(
            error_line(&error),
            "error: Kinesis ListShards on stream `s` failed: ResourceNotFoundException: \
             Stream s not found"
        );
    }
}

/// The README's code, compiled by `cargo test` so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
