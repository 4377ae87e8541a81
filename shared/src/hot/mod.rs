//! The hot state: the shared, fast working copy of every open project (Redis in production, memory in dev mode).
//!
//! Everything that must be atomic lives behind this trait: applying an edit (object change, `version`, `seq`,
//! changed-set, dirty index and publish in one step), the cold load of a project, and the saver's claim/lease
//! protocol. Both implementations must pass the same conformance suite (`shared/tests/hot_conformance.rs`).

pub mod keys;
pub mod memory;
pub mod redis;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::{ErrorCode, Rejection};
use crate::ids::{ObjectId, ProjectId};
use crate::limits::Limits;
use crate::object::Edit;

/// Who made an edit and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct EditContext<'a> {
    /// User id shown to others as `by`.
    pub by: &'a str,
    /// Connection id of the sender; its gateway skips it when fanning out (it gets an `ack` instead).
    pub origin: &'a str,
    pub now_ms: i64,
    pub limits: &'a Limits,
}

/// The result of an applied edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub id: ObjectId,
    /// The object's new version; `None` for a delete.
    pub version: Option<u64>,
    /// The project's sequence number after this edit.
    pub seq: u64,
}

/// What went wrong in the hot state.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HotError {
    /// The project is not in the hot state; it must be loaded from the durable store first.
    #[error("project is not loaded in the hot state")]
    NotLoaded,
    /// The edit is refused (conflict, not_found, too_large, bad_request).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The hot state could not be reached or answered with an error.
    #[error("hot state unavailable: {0}")]
    Unavailable(String),
}

impl HotError {
    /// The protocol error a client sees for this failure.
    pub fn to_rejection(&self) -> Rejection {
        match self {
            HotError::Rejected(r) => r.clone(),
            HotError::NotLoaded => {
                Rejection::new(ErrorCode::Unavailable, "project is loading; try again")
            }
            HotError::Unavailable(_) => Rejection::new(
                ErrorCode::Unavailable,
                "shared state is unreachable; the edit was not applied",
            ),
        }
    }
}

/// A project's objects as stored JSON texts (each with its `version`), and the `seq` they reflect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    pub objects: Vec<String>,
}

/// An object as it travels between the hot state and the durable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub id: ObjectId,
    /// The object as JSON text, including `version`.
    pub json: String,
    /// Epoch ms of the object's last edit.
    pub updated_at: i64,
}

/// A message fanned out through the bus.
#[derive(Debug, Clone)]
pub struct BusMessage {
    pub project: ProjectId,
    /// Connection id of the sender (skipped when fanning out).
    pub origin: String,
    /// The edit's `seq`, or 0 for ephemeral messages (presence).
    pub seq: u64,
    /// The frame to send, already encoded.
    pub frame: Arc<str>,
    /// W3C `traceparent` of the span that published it, when tracing is on (fan-out spans become its children).
    pub trace: Option<String>,
}

/// What the bus tells its owner.
#[derive(Debug, Clone)]
pub enum BusEvent {
    Message(BusMessage),
    /// The bus lost its connection and got it back, with every subscription restored. Messages published in
    /// between are lost (pub/sub is at-most-once): every affected client needs a fresh snapshot.
    Resubscribed,
    /// The bus lost its connection and is reconnecting.
    Disconnected,
}

/// Subscriptions of one gateway to per-project channels.
#[async_trait]
pub trait Bus: Send + Sync {
    async fn subscribe(&self, project: &ProjectId) -> Result<(), HotError>;
    async fn unsubscribe(&self, project: &ProjectId) -> Result<(), HotError>;
}

/// A project claimed by a saver under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub project: ProjectId,
    /// Unique per claim; a claim whose token was replaced (lease taken over) can no longer complete.
    pub token: String,
    /// Epoch ms of the oldest change this claim covers (restored into the dirty index if the save fails).
    pub dirty_since: i64,
}

/// The current state of every object changed since the claim's changes began.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub upserts: Vec<StoredObject>,
    pub deletes: Vec<ObjectId>,
}

impl ChangeSet {
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The dirty index at a glance (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtySummary {
    /// Projects with unsaved changes, including those being saved now.
    pub count: usize,
    /// Epoch ms of the oldest unsaved change.
    pub oldest_modification: Option<i64>,
    /// Up to 100 project ids, oldest first.
    pub project_ids: Vec<String>,
}

/// The shared hot state.
#[async_trait]
pub trait HotState: Send + Sync + 'static {
    /// Applies one edit atomically: object, `version`, `seq`, changed-set, dirty index and publish.
    async fn apply(
        &self,
        project: &ProjectId,
        edit: &Edit,
        ctx: EditContext<'_>,
    ) -> Result<Applied, HotError>;

    /// The project's objects and `seq`, or [`HotError::NotLoaded`].
    async fn snapshot(&self, project: &ProjectId) -> Result<Snapshot, HotError>;

    /// Installs a project read from the durable store, unless it is already loaded (then nothing changes).
    /// `seq` starts at `seq_floor` so clients that saw an earlier life of the project never see it go back.
    /// Returns true when this call did the load.
    async fn load(
        &self,
        project: &ProjectId,
        objects: &[StoredObject],
        seq_floor: u64,
    ) -> Result<bool, HotError>;

    /// Publishes an ephemeral frame (presence) to every gateway subscribed to the project.
    async fn publish_ephemeral(
        &self,
        project: &ProjectId,
        origin: &str,
        frame: &str,
    ) -> Result<(), HotError>;

    /// Starts this process's bus connection; events arrive on `events` until it is dropped.
    fn open_bus(&self, events: mpsc::Sender<BusEvent>) -> Arc<dyn Bus>;

    /// Cheap reachability check for readiness probes.
    async fn ping(&self) -> Result<(), HotError>;

    /// Claims up to `max` dirty projects, oldest first, plus any whose lease expired (a crashed saver's), under a
    /// lease of `lease_ms`. Projects under a live lease are skipped. Each claim moves the project's changed-set
    /// aside so that new edits start a new one (and re-mark the project dirty).
    async fn claim_dirty(
        &self,
        owner: &str,
        max: usize,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<Vec<Claim>, HotError>;

    /// The current state of every object in the claim's changed-set.
    async fn read_claim(&self, claim: &Claim) -> Result<ChangeSet, HotError>;

    /// Extends the lease; false when the claim was taken over (the caller must stop writing).
    async fn renew_claim(
        &self,
        claim: &Claim,
        lease_ms: u64,
        now_ms: i64,
    ) -> Result<bool, HotError>;

    /// The save succeeded: drops the claim's changed-set and lease. False when the claim was taken over.
    async fn complete_claim(&self, claim: &Claim) -> Result<bool, HotError>;

    /// The save failed: merges the changed-set back and re-marks the project dirty at its original time.
    async fn abandon_claim(&self, claim: &Claim) -> Result<(), HotError>;

    /// Dirty projects (waiting or being saved) for metrics.
    async fn dirty_summary(&self) -> Result<DirtySummary, HotError>;
}
