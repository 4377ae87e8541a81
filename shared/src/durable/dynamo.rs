//! The production durable store on DynamoDB: one conditional PutItem per write (a group's writes in flight at
//! once), paginated Query for cold loads, and table checks (or creation, for dev and tests). The unconditional
//! BatchWriteItem path is kept only to measure what the conditions cost.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, WriteRequest,
};
use aws_sdk_dynamodb::Client;

use super::item::{self, NEWER_ONLY, OBJECT_KEY, PROJECT_KEY, UPDATED_AT};
use super::{
    check_group, DurableError, DurableStore, ItemWrite, LoadedProject, WriteOp, WriteOutcome,
    SEQ_ITEM_ID,
};
use crate::cause::Cause;
use crate::config::DynamoArgs;
use crate::ids::ProjectId;

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
        DurableError::TableMissing(Cause::described(format!(
            "DynamoDB table {:?} does not exist: create it (partition key projectId S, sort key objectId S) or start \
             the saver with CANVAS_CREATE_TABLE=true",
            self.table
        )))
    }

    fn classify<E, R>(&self, err: SdkError<E, R>) -> DurableError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        /// How a failure is handled, decided from DynamoDB's error code (never from its text).
        enum Kind {
            Throttled,
            Missing,
            Unavailable,
            Rejected,
        }
        let kind = match &err {
            SdkError::ServiceError(service) => match service.err().code().unwrap_or_default() {
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded" => Kind::Throttled,
                "ResourceNotFoundException" => Kind::Missing,
                "InternalServerError" | "ServiceUnavailable" | "InternalFailure" => {
                    Kind::Unavailable
                }
                _ => Kind::Rejected,
            },
            _ => Kind::Unavailable,
        };
        let cause = || Cause::explained(DisplayErrorContext(&err).to_string(), err);
        match kind {
            Kind::Throttled => DurableError::Throttled(cause()),
            Kind::Missing => self.missing(),
            Kind::Unavailable => DurableError::Unavailable(cause()),
            Kind::Rejected => DurableError::Rejected(cause()),
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
                .map_err(|e| DurableError::Rejected(Cause::new(e)))
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(|e| DurableError::Rejected(Cause::new(e)))
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
            Ok(_) => {}
            // Another saver created it first.
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("ResourceInUseException") => {}
            Err(e) => return Err(self.classify(e)),
        }
        self.enable_tombstone_purge().await;
        Ok(())
    }

    /// Lets DynamoDB remove tombstones once their `purgeAt` has passed. A table that cannot (an emulator without
    /// time to live) still works; its tombstones just stay.
    async fn enable_tombstone_purge(&self) {
        let spec = match TimeToLiveSpecification::builder()
            .attribute_name(item::PURGE_AT)
            .enabled(true)
            .build()
        {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(error = %e, "time to live specification is invalid");
                return;
            }
        };
        let result = self
            .client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(spec)
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(
                table = %self.table,
                error = %DisplayErrorContext(&e),
                "could not enable time to live on purgeAt: tombstones of deleted objects will stay in the table \
                 (enable it on the table to have them removed a week after each delete)"
            );
        }
    }
}

/// The item a write puts: the object, or the tombstone of a deleted one.
fn item_of(write: &ItemWrite) -> HashMap<String, AttributeValue> {
    match &write.op {
        WriteOp::Put(object) => item::to_item(&write.project, object),
        WriteOp::Delete(tombstone) => item::tombstone_item(&write.project, tombstone),
    }
}

fn to_request(write: &ItemWrite) -> Result<WriteRequest, DurableError> {
    let invalid = |e: aws_sdk_dynamodb::error::BuildError| DurableError::Rejected(Cause::new(e));
    Ok(WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item_of(write)))
                .build()
                .map_err(invalid)?,
        )
        .build())
}

/// Finds which of our writes an unprocessed request stands for, by its key.
fn key_of(request: &WriteRequest) -> Option<(String, String)> {
    let map = request.put_request()?.item();
    match (map.get(PROJECT_KEY), map.get(OBJECT_KEY)) {
        (Some(AttributeValue::S(p)), Some(AttributeValue::S(o))) => Some((p.clone(), o.clone())),
        _ => None,
    }
}

/// What one conditional put did.
enum Landed {
    Written,
    Superseded,
}

impl DynamoStore {
    /// Puts the item unless DynamoDB already holds its key with an equal or newer stamp.
    async fn put_if_newer(&self, write: &ItemWrite) -> Result<Landed, DurableError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_of(write)))
            .condition_expression(NEWER_ONLY)
            .expression_attribute_names("#updatedAt", UPDATED_AT)
            .expression_attribute_values(":stamp", AttributeValue::N(write.stamp().to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Landed::Written),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(Landed::Superseded)
            }
            Err(e) => Err(match self.classify(e) {
                // One item, one constant condition: a validation error is about the item.
                DurableError::Rejected(message) => DurableError::ItemRefused(message),
                other => other,
            }),
        }
    }

    /// Today's unconditional path, one BatchWriteItem request: kept to measure what the conditions cost. Returns
    /// the writes DynamoDB left unprocessed. It may replace a newer item with an older one, so nothing saves
    /// through it.
    pub async fn write_batch_unconditional(
        &self,
        writes: &[ItemWrite],
    ) -> Result<Vec<ItemWrite>, DurableError> {
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
}

#[async_trait]
impl DurableStore for DynamoStore {
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<WriteOutcome, DurableError> {
        // The group keeps BatchWriteItem's shape, so the saver behaves the same on every store.
        check_group(writes)?;
        let results =
            futures_util::future::join_all(writes.iter().map(|w| self.put_if_newer(w))).await;
        let mut outcome = WriteOutcome::default();
        let mut unavailable = None;
        for (write, result) in writes.iter().zip(results) {
            match result {
                Ok(Landed::Written) => {}
                Ok(Landed::Superseded) => outcome.superseded.push(write.clone()),
                Err(e @ DurableError::ItemRefused(_)) => outcome.refused.push((write.clone(), e)),
                Err(e @ DurableError::Unavailable(_)) => {
                    outcome.unprocessed.push(write.clone());
                    unavailable = Some(e);
                }
                Err(DurableError::Throttled(_)) => outcome.unprocessed.push(write.clone()),
                Err(e) => return Err(e),
            }
        }
        // Nothing got through: the store is down, not busy (the writer then gives up sooner).
        match unavailable {
            Some(e) if !writes.is_empty() && outcome.unprocessed.len() == writes.len() => Err(e),
            _ => Ok(outcome),
        }
    }

    async fn load_project(&self, project: &ProjectId) -> Result<LoadedProject, DurableError> {
        let mut loaded = LoadedProject::default();
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
            for found in out.items() {
                if item::is_system_item(found) {
                    loaded.seq = loaded.seq.max(item::seq_of(found));
                }
                loaded.stamp_floor = loaded.stamp_floor.max(item::stamp_of(found));
                loaded.objects.extend(item::from_item(found));
            }
            match out.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => break,
            }
        }
        Ok(loaded)
    }

    async fn persist_seq(&self, project: &ProjectId, seq: u64) -> Result<(), DurableError> {
        let mut watermark = item::key_of_id(project, SEQ_ITEM_ID);
        watermark.insert(item::SEQ.into(), AttributeValue::N(seq.to_string()));
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(watermark))
            .condition_expression("attribute_not_exists(#s) OR #s < :s")
            .expression_attribute_names("#s", item::SEQ)
            .expression_attribute_values(":s", AttributeValue::N(seq.to_string()))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // A watermark at or above this one is already stored: nothing to raise.
            Err(SdkError::ServiceError(service))
                if matches!(
                    service.err(),
                    PutItemError::ConditionalCheckFailedException(_)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.classify(e)),
        }
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
                return Err(DurableError::Unavailable(Cause::described(format!(
                    "table {:?} did not become ACTIVE",
                    self.table
                ))));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ping(&self) -> Result<(), DurableError> {
        match self.describe_status().await? {
            Some(TableStatus::Active) | Some(TableStatus::Updating) => Ok(()),
            other => Err(DurableError::Unavailable(Cause::described(format!(
                "table {:?} is {other:?}",
                self.table
            )))),
        }
    }
}
