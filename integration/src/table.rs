//! DynamoDB table helpers that wait for the table to be usable.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use tokio::time::{Instant, sleep};

use crate::BedError;

const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Creates an on-demand table whose hash key is the string attribute `hash_key`, and waits until
/// it is ACTIVE.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    hash_key: &str,
    timeout: Duration,
) -> Result<(), BedError> {
    let definition = AttributeDefinition::builder()
        .attribute_name(hash_key)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(|e| BedError::dynamodb("CreateTable", e))?;
    let key = KeySchemaElement::builder()
        .attribute_name(hash_key)
        .key_type(KeyType::Hash)
        .build()
        .map_err(|e| BedError::dynamodb("CreateTable", e))?;
    client
        .create_table()
        .table_name(name)
        .attribute_definitions(definition)
        .key_schema(key)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| BedError::dynamodb("CreateTable", e))?;
    let deadline = Instant::now() + timeout;
    loop {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| BedError::dynamodb("DescribeTable", e))?;
        if described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BedError::Timeout {
                what: format!("table {name}"),
                state: "ACTIVE",
                waited: timeout,
            });
        }
        sleep(POLL_INTERVAL).await;
    }
}
