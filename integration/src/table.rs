//! DynamoDB table helpers that wait for the table to be usable.

use std::time::Duration;

use crate::BedError;
use crate::wait::poll_until;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};

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
    poll_until(&format!("table {name}"), "ACTIVE", timeout, || async {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| BedError::dynamodb("DescribeTable", e))?;
        Ok(described.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active))
    })
    .await
}
