//! The durable store: the source of truth (DynamoDB in production, an embedded redb file in dev mode).
//!
//! The trait takes a group of item writes at a time so that the saver owns batching, concurrency and retries for
//! every implementation alike, and a fault-injecting store can exercise them. Every write is conditional on the
//! item's stamp (`updatedAt`): it lands only over an older stamp or no item, so a write that arrives late (a
//! request that timed out and executed anyway, a resent attempt, a saver that lost its lease) never replaces a
//! newer one, and a delete is a tombstone that no older write can undo. BatchWriteItem cannot carry conditions,
//! so DynamoDB gets one conditional PutItem per write, the group's writes in flight at once.

pub mod dynamo;
pub mod embedded;
pub mod faulty;
pub mod item;
pub mod validating;

use async_trait::async_trait;

use crate::cause::Cause;
use crate::ids::{ObjectId, ProjectId};
use crate::stored::{StoredObject, Tombstone};

/// Most writes one group may carry (BatchWriteItem's limit, kept for the unconditional path the benchmark measures).
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
    /// Written as a tombstone item (`deletedAt`), which every reader skips.
    Delete(Tombstone),
}

impl ItemWrite {
    pub fn object_id(&self) -> &ObjectId {
        match &self.op {
            WriteOp::Put(o) => &o.id,
            WriteOp::Delete(t) => &t.id,
        }
    }

    /// The stamp this write carries: it lands only over an item with an older one.
    pub fn stamp(&self) -> i64 {
        match &self.op {
            WriteOp::Put(o) => o.updated_at,
            WriteOp::Delete(t) => t.stamp,
        }
    }
}

/// What became of a group of writes. Every write not listed here was written.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    /// Not processed (throttled or a transient failure): send them again.
    pub unprocessed: Vec<ItemWrite>,
    /// The store already held a write of that key with an equal or newer stamp: nothing to do, ever.
    pub superseded: Vec<ItemWrite>,
    /// The store refuses the item itself ([`DurableError::ItemRefused`]): resending it unchanged cannot help.
    pub refused: Vec<(ItemWrite, DurableError)>,
}

/// Refuses a group DynamoDB's BatchWriteItem would refuse (more than [`MAX_BATCH_ITEMS`] writes, or one key
/// twice), so that every store holds the saver to the same shape of request.
pub(crate) fn check_group(writes: &[ItemWrite]) -> Result<(), DurableError> {
    if writes.len() > MAX_BATCH_ITEMS {
        return Err(DurableError::Rejected(Cause::described(format!(
            "a batch holds at most {MAX_BATCH_ITEMS} writes; this one has {}",
            writes.len()
        ))));
    }
    let mut keys = std::collections::HashSet::with_capacity(writes.len());
    if let Some(dup) = writes
        .iter()
        .find(|w| !keys.insert((w.project.as_str(), w.object_id().as_str())))
    {
        return Err(DurableError::Rejected(Cause::described(format!(
            "the batch writes {}/{} twice; keys must be distinct",
            dup.project,
            dup.object_id()
        ))));
    }
    Ok(())
}

impl WriteOutcome {
    /// Every write of the group was written.
    pub fn all_written(&self) -> bool {
        self.not_written() == 0
    }

    /// How many writes of the group were not written (for whatever reason).
    pub fn not_written(&self) -> usize {
        self.unprocessed.len() + self.superseded.len() + self.refused.len()
    }
}

/// A project as the durable store holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadedProject {
    /// Every object (tombstones and system items left out).
    pub objects: Vec<StoredObject>,
    /// The newest stamp among all of the project's items, tombstones included (0 when there are none): a new life
    /// of the project in the hot state stamps its edits above it.
    pub stamp_floor: i64,
    /// The persisted `seq` watermark (0 when nothing was ever saved): a cold load resumes above it, so a Redis
    /// that lost the project never hands out a `seq` a client already saw.
    pub seq: u64,
}

/// What went wrong in the durable store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DurableError {
    /// Throughput exceeded: back off and retry.
    #[error("durable store throttled the request: {0}")]
    Throttled(#[source] Cause),
    /// Unreachable, timed out, or a server error: retry later.
    #[error("durable store unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The table does not exist.
    #[error("{0}")]
    TableMissing(#[source] Cause),
    /// The request itself is wrong (validation); retrying will not help.
    #[error("durable store rejected the request: {0}")]
    Rejected(#[source] Cause),
    /// The store refuses this one item (a validation error about the item: a name, a size, a number), with the
    /// store's message; the item stays refused until it changes.
    #[error("durable store refused the item: {0}")]
    ItemRefused(#[source] Cause),
}

impl DurableError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DurableError::Throttled(_) | DurableError::Unavailable(_)
        )
    }
}

/// The object id of a project's `seq` watermark item.
pub const SEQ_ITEM_ID: &str = "~seq";

/// The durable store.
#[async_trait]
pub trait DurableStore: Send + Sync + 'static {
    /// Writes one group (at most [`MAX_BATCH_ITEMS`] writes, distinct keys), each only over an older stamp. An
    /// error fails the whole group (nothing in it is known written); per-write outcomes are in [`WriteOutcome`].
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<WriteOutcome, DurableError>;

    /// Every object of a project (all pages), and the newest stamp the project's items carry.
    async fn load_project(&self, project: &ProjectId) -> Result<LoadedProject, DurableError>;

    /// Raises the project's persisted `seq` watermark to `seq`; a lower or equal `seq` changes nothing (a late
    /// write of an older watermark can never lower it).
    async fn persist_seq(&self, project: &ProjectId, seq: u64) -> Result<(), DurableError>;

    /// Checks that the table exists and is usable; creates it first when `create` is true.
    async fn ensure_table(&self, create: bool) -> Result<(), DurableError>;

    /// Cheap reachability check for readiness probes (the table must exist).
    async fn ping(&self) -> Result<(), DurableError>;
}
