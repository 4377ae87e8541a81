//! The production durable store on DynamoDB: one BatchWriteItem per [`DurableStore::write_batch`], paginated
//! Query for cold loads, and table checks (or creation, for dev and tests).

use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    PutRequest, ScalarAttributeType, TableStatus, WriteRequest,
};
use aws_sdk_dynamodb::Client;

use super::item::{self, OBJECT_KEY, PROJECT_KEY};
use super::{DurableError, DurableStore, ItemWrite, WriteOp};
use crate::config::DynamoArgs;
use crate::ids::ProjectId;
use crate::stored::StoredObject;

/// DynamoDB-backed [`DurableStore`].
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// Builds a client. With an explicit endpoint (DynamoDB Local, dynalite) and no credentials in the
    /// environment it uses static dummy credentials, so the SDK never goes looking for real ones.
    pub async fn connect(args: &DynamoArgs) -> Self {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(5))
            .operation_timeout(Duration::from_secs(15))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(args.region.clone()))
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(args.max_attempts.max(1)));
        if let Some(endpoint) = &args.endpoint {
            loader = loader.endpoint_url(endpoint);
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                loader = loader.credentials_provider(Credentials::new(
                    "local",
                    "local",
                    None,
                    None,
                    "canvas-static",
                ));
            }
        }
        let sdk = loader.load().await;
        Self {
            client: Client::new(&sdk),
            table: args.table.clone(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn missing(&self) -> DurableError {
        DurableError::TableMissing(format!(
            "DynamoDB table {:?} does not exist: create it (partition key projectId S, sort key objectId S) or start \
             the saver with CANVAS_CREATE_TABLE=true",
            self.table
        ))
    }

    fn classify<E, R>(&self, err: SdkError<E, R>) -> DurableError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug,
    {
        let text = DisplayErrorContext(&err).to_string();
        match &err {
            SdkError::ServiceError(service) => match service.err().code().unwrap_or_default() {
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded" => DurableError::Throttled(text),
                "ResourceNotFoundException" => self.missing(),
                "InternalServerError" | "ServiceUnavailable" | "InternalFailure" => {
                    DurableError::Unavailable(text)
                }
                _ => DurableError::Rejected(text),
            },
            _ => DurableError::Unavailable(text),
        }
    }

    async fn describe_status(&self) -> Result<Option<TableStatus>, DurableError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => Ok(out.table().and_then(|t| t.table_status().cloned())),
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn create_table(&self) -> Result<(), DurableError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| DurableError::Rejected(e.to_string()))
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| DurableError::Rejected(e.to_string()))
        };
        let result = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr(PROJECT_KEY)?)
            .attribute_definitions(attr(OBJECT_KEY)?)
            .key_schema(key(PROJECT_KEY, KeyType::Hash)?)
            .key_schema(key(OBJECT_KEY, KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Another saver created it first.
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("ResourceInUseException") => {
                Ok(())
            }
            Err(e) => Err(self.classify(e)),
        }
    }
}

fn to_request(write: &ItemWrite) -> Result<WriteRequest, DurableError> {
    let invalid = |e: aws_sdk_dynamodb::error::BuildError| DurableError::Rejected(e.to_string());
    Ok(match &write.op {
        WriteOp::Put(object) => WriteRequest::builder()
            .put_request(
                PutRequest::builder()
                    .set_item(Some(item::to_item(&write.project, object)))
                    .build()
                    .map_err(invalid)?,
            )
            .build(),
        WriteOp::Delete(id) => WriteRequest::builder()
            .delete_request(
                DeleteRequest::builder()
                    .set_key(Some(item::key(&write.project, id)))
                    .build()
                    .map_err(invalid)?,
            )
            .build(),
    })
}

/// Finds which of our writes an unprocessed request stands for, by its key.
fn key_of(request: &WriteRequest) -> Option<(String, String)> {
    let map = match (request.put_request(), request.delete_request()) {
        (Some(put), _) => put.item(),
        (None, Some(delete)) => delete.key(),
        (None, None) => return None,
    };
    match (map.get(PROJECT_KEY), map.get(OBJECT_KEY)) {
        (Some(AttributeValue::S(p)), Some(AttributeValue::S(o))) => Some((p.clone(), o.clone())),
        _ => None,
    }
}

#[async_trait]
impl DurableStore for DynamoStore {
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<Vec<ItemWrite>, DurableError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let requests = writes
            .iter()
            .map(to_request)
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .batch_write_item()
            .request_items(&self.table, requests)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        let unprocessed: Vec<(String, String)> = out
            .unprocessed_items()
            .and_then(|m| m.get(&self.table))
            .map(|reqs| reqs.iter().filter_map(key_of).collect())
            .unwrap_or_default();
        Ok(writes
            .iter()
            .filter(|w| {
                unprocessed
                    .iter()
                    .any(|(p, o)| p == w.project.as_str() && o == w.object_id().as_str())
            })
            .cloned()
            .collect())
    }

    async fn load_project(&self, project: &ProjectId) -> Result<Vec<StoredObject>, DurableError> {
        let mut objects = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#p = :p")
                .expression_attribute_names("#p", PROJECT_KEY)
                .expression_attribute_values(":p", AttributeValue::S(project.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.classify(e))?;
            objects.extend(out.items().iter().filter_map(item::from_item));
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(objects)
    }

    async fn ensure_table(&self, create: bool) -> Result<(), DurableError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match self.describe_status().await {
                Ok(Some(TableStatus::Active)) => return Ok(()),
                Ok(_) => {}
                Err(DurableError::TableMissing(_)) if create => self.create_table().await?,
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(DurableError::Unavailable(format!(
                    "table {:?} did not become ACTIVE",
                    self.table
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ping(&self) -> Result<(), DurableError> {
        match self.describe_status().await? {
            Some(TableStatus::Active) | Some(TableStatus::Updating) => Ok(()),
            other => Err(DurableError::Unavailable(format!(
                "table {:?} is {other:?}",
                self.table
            ))),
        }
    }
}
