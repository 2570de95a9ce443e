//! The AWS call layer of the crate, in three parts with one job each:
//!
//! - [`kinesis`]: every Kinesis call ([`KinesisApi`]); the DynamoDB calls are all in
//!   [`LeaseTable`](crate::lease::LeaseTable);
//! - [`classify`]: the one answer to "is this error transient?", for both services, and its
//!   table;
//! - [`retry`]: [`RetryPolicy`], the one shape of retry settings, and the loop applying it.
//!
//! Nothing here depends on the rest of the crate but [`Error`](crate::Error).

pub(crate) mod classify;
pub(crate) mod kinesis;
pub(crate) mod retry;
mod target;

pub(crate) use kinesis::KinesisApi;
pub use retry::RetryPolicy;
pub use target::StreamTarget;
