//! The test bed's one error type.

use std::time::Duration;

/// Everything that can go wrong while starting a backend or preparing a resource on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BedError {
    /// `KINESIS_TEST_BACKEND` named a backend the bed does not know.
    #[error(
        "unknown test backend {value:?} in KINESIS_TEST_BACKEND; expected one of: embedded, emulators, localstack, endpoint"
    )]
    UnknownBackend {
        /// The value found in the environment.
        value: String,
    },
    /// A backend could not be started or reached.
    #[error("the {backend} backend failed: {message}")]
    Backend {
        /// Which backend (`embedded`, `emulators`, `localstack`, `endpoint`).
        backend: &'static str,
        /// What went wrong, in words a developer can act on.
        message: String,
    },
    /// Binding or serving a loopback socket failed.
    #[error("could not serve {what} on a loopback port")]
    Io {
        /// What was being served.
        what: &'static str,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A Kinesis call made by a bed helper failed.
    #[error("Kinesis {operation} failed")]
    Kinesis {
        /// The API operation.
        operation: &'static str,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A DynamoDB call made by a bed helper failed.
    #[error("DynamoDB {operation} failed")]
    DynamoDb {
        /// The API operation.
        operation: &'static str,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A resource did not reach the wanted state in time.
    #[error("{what} was not {state} after {waited:?}")]
    Timeout {
        /// The resource (stream, consumer, table) and its name.
        what: String,
        /// The state waited for.
        state: &'static str,
        /// How long the bed waited.
        waited: Duration,
    },
}

impl BedError {
    pub(crate) fn kinesis(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Kinesis {
            operation,
            source: Box::new(source),
        }
    }

    pub(crate) fn dynamodb(
        operation: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::DynamoDb {
            operation,
            source: Box::new(source),
        }
    }
}
