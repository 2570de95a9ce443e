//! Any endpoints, or real AWS: `KINESIS_ENDPOINT` and `DYNAMODB_ENDPOINT` when set, otherwise
//! the SDK's default endpoint resolution.
//!
//! Credentials and region come from the default chain (environment, profile, instance role).
//! When an endpoint is given and no `AWS_ACCESS_KEY_ID` is set, the bed signs with dummy
//! credentials, which every emulator accepts. With neither endpoint set the tests run against
//! real AWS and create (and bill) real streams and tables, named uniquely per test.

use super::Running;

/// The environment variable naming the Kinesis endpoint, e.g. `http://127.0.0.1:4567`.
pub const KINESIS_ENDPOINT_ENV: &str = "KINESIS_ENDPOINT";
/// The environment variable naming the DynamoDB endpoint, e.g. `http://127.0.0.1:8000`.
pub const DYNAMODB_ENDPOINT_ENV: &str = "DYNAMODB_ENDPOINT";

pub(crate) fn from_env() -> Running {
    let read = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let kinesis_endpoint = read(KINESIS_ENDPOINT_ENV);
    let dynamodb_endpoint = read(DYNAMODB_ENDPOINT_ENV);
    let any_endpoint = kinesis_endpoint.is_some() || dynamodb_endpoint.is_some();
    Running {
        kinesis_tls_endpoint: None,
        kinesis_h2: None,
        dummy_credentials: any_endpoint && read("AWS_ACCESS_KEY_ID").is_none(),
        kinesis_endpoint,
        dynamodb_endpoint,
        guard: Box::new(()),
    }
}
