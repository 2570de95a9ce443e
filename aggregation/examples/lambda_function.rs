//! A Rust AWS Lambda function consuming a Kinesis stream that KPL producers aggregate into.
//!
//! Lambda delivers the stream's Kinesis records; [`deaggregate_event`] turns them into the user
//! records the producers put. A record that fails is reported as a batch item failure (enable
//! `ReportBatchItemFailures` on the event source mapping): Lambda then retries from the Kinesis
//! record holding it, so the function must tolerate the other user records of that aggregate
//! coming again.
//!
//! Build and deploy it as any Rust function (for example with `cargo lambda build --release
//! --example lambda_function --features lambda`). Locally, `cargo run --example lambda_function
//! --features lambda` waits for the Lambda runtime API (`AWS_LAMBDA_RUNTIME_API`), which
//! `cargo lambda watch` provides.

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::{KinesisBatchItemFailure, KinesisEventResponse};
use kinesis_aggregation::lambda::{LambdaRecord, deaggregate_event};
use lambda_runtime::{Error, LambdaEvent, service_fn};

/// What the function does with one user record: here, check that it is UTF-8 text.
fn process(record: &LambdaRecord) -> Result<(), std::str::Utf8Error> {
    std::str::from_utf8(record.data()).map(|_| ())
}

async fn handler(event: LambdaEvent<KinesisEvent>) -> Result<KinesisEventResponse, Error> {
    let mut response = KinesisEventResponse::default();
    for record in deaggregate_event(event.payload) {
        if let Err(error) = process(&record) {
            // Log where, never the payload.
            eprintln!(
                "record {}/{} failed: {error}",
                record.sequence_number(),
                record.sub_sequence_number()
            );
            // Lambda retries from the first failure reported; later records are retried anyway.
            let mut failure = KinesisBatchItemFailure::default();
            failure.item_identifier = Some(record.item_identifier().to_owned());
            response.batch_item_failures.push(failure);
            break;
        }
    }
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
