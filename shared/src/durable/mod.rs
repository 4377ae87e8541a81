//! The durable store: the source of truth (DynamoDB in production, an embedded redb file in dev mode).
//!
//! The trait is shaped like one BatchWriteItem request so that the saver owns batching, concurrency and retries
//! for every implementation alike, and a fault-injecting store can exercise them.

pub mod dynamo;
pub mod embedded;
pub mod faulty;
pub mod item;
pub mod validating;

use async_trait::async_trait;

use crate::ids::{ObjectId, ProjectId};
use crate::stored::StoredObject;

/// Most writes one BatchWriteItem request may carry.
pub const MAX_BATCH_ITEMS: usize = 25;

/// One item write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemWrite {
    pub project: ProjectId,
    pub op: WriteOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Put(StoredObject),
    Delete(ObjectId),
}

impl ItemWrite {
    pub fn object_id(&self) -> &ObjectId {
        match &self.op {
            WriteOp::Put(o) => &o.id,
            WriteOp::Delete(id) => id,
        }
    }
}

/// What went wrong in the durable store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DurableError {
    /// Throughput exceeded: back off and retry.
    #[error("durable store throttled the request: {0}")]
    Throttled(String),
    /// Unreachable, timed out, or a server error: retry later.
    #[error("durable store unavailable: {0}")]
    Unavailable(String),
    /// The table does not exist.
    #[error("{0}")]
    TableMissing(String),
    /// The request itself is wrong (validation); retrying will not help.
    #[error("durable store rejected the request: {0}")]
    Rejected(String),
}

impl DurableError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DurableError::Throttled(_) | DurableError::Unavailable(_)
        )
    }
}

/// The durable store.
#[async_trait]
pub trait DurableStore: Send + Sync + 'static {
    /// Sends one batch (at most [`MAX_BATCH_ITEMS`] writes, distinct keys). Returns the writes the store did not
    /// process (to be retried), as BatchWriteItem's UnprocessedItems.
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<Vec<ItemWrite>, DurableError>;

    /// Every object of a project (all pages).
    async fn load_project(&self, project: &ProjectId) -> Result<Vec<StoredObject>, DurableError>;

    /// Checks that the table exists and is usable; creates it first when `create` is true.
    async fn ensure_table(&self, create: bool) -> Result<(), DurableError>;

    /// Cheap reachability check for readiness probes (the table must exist).
    async fn ping(&self) -> Result<(), DurableError>;
}
