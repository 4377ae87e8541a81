//! The gateway's half of the hot state: applying edits, reading and loading projects, and the bus that fans
//! frames out to every gateway.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::{HotError, JournalPage, Reachable};
use crate::ids::{ObjectId, ProjectId};
use crate::limits::Limits;
use crate::object::Edit;
use crate::stored::StoredObject;

/// Who made an edit and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct EditContext<'a> {
    /// User id shown to others as `by`.
    pub by: &'a str,
    /// Connection id of the sender; its gateway skips it when fanning out (it gets an `ack` instead).
    pub origin: &'a str,
    pub now_ms: i64,
    pub limits: &'a Limits,
    /// The highest `seq` the caller has seen for the project (0 when none): the edit gets a higher one, even
    /// when the shared state's seq went back (a Redis that lost the tail of its log, or a promoted replica).
    pub seq_floor: u64,
}

/// The result of an applied edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub id: ObjectId,
    /// The object's new version; `None` for a delete.
    pub version: Option<u64>,
    /// The project's sequence number after this edit.
    pub seq: u64,
    /// The object as JSON text after a create or update (with its new `version`); `None` for a delete.
    pub object: Option<String>,
}

/// How many of this process's updates it merged itself and how many the shared state's script merged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateMerges {
    /// The object's stored text was known here and still current: the shared state only checked and wrote.
    pub here: u64,
    /// The shared state parsed and merged (the text was unknown here, or had changed).
    pub by_script: u64,
}

/// What the idempotency memory holds for one (project, user, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// Nobody used the key yet: this request now holds it and must settle it.
    Claimed,
    /// A request with this key is being handled right now.
    InFlight,
    /// The key was used: the first request's response, as it was settled.
    Done(String),
}

/// A project's objects as stored JSON texts (each with its `version`), and the `seq` they reflect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    /// Every edit up to this seq is in the durable store (a cold load starts it at its `seq`: what it loaded is).
    pub saved_seq: u64,
    pub objects: Vec<String>,
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
    /// The bus connected for the first time, with every subscription wanted so far in place. Messages published
    /// to them before are lost: clients that joined before it need what they missed.
    Connected,
    /// The bus lost its connection and got it back, with every subscription restored. Messages published in
    /// between are lost (pub/sub is at-most-once): every affected client needs what it missed.
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

/// What a gateway needs from the hot state.
#[async_trait]
pub trait EditStore: Reachable {
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
    /// `seq` starts at `seq_floor` so clients that saw an earlier life of the project never see it go back; edit
    /// stamps start above `stamp_floor` (the durable store's newest stamp of the project, tombstones included) and
    /// above every loaded object's, so that no new write is taken for an older one. Returns true when this call
    /// did the load.
    async fn load(
        &self,
        project: &ProjectId,
        objects: &[StoredObject],
        seq_floor: u64,
        stamp_floor: i64,
    ) -> Result<bool, HotError>;

    /// Up to `max` journal entries after `after`, with the project's `seq` and `savedSeq` read at the same
    /// instant, or [`HotError::NotLoaded`].
    async fn journal_after(
        &self,
        project: &ProjectId,
        after: u64,
        max: usize,
    ) -> Result<JournalPage, HotError>;

    /// Raises the project's `seq` to at least `floor` (a Redis that rolled back, e.g. after losing its AOF tail or
    /// a failover, must not hand out seqs clients already saw). Returns the project's `seq` afterwards, or
    /// [`HotError::NotLoaded`].
    async fn raise_seq(&self, project: &ProjectId, floor: u64) -> Result<u64, HotError>;

    /// Records that gateway `gateway` has clients in each of `projects` until `until_ms` (renewed while it does),
    /// which keeps the projects from being evicted; the record outlives the gateway by at most `ttl_ms`.
    async fn mark_present(
        &self,
        gateway: &str,
        projects: &[ProjectId],
        until_ms: i64,
        ttl_ms: u64,
    ) -> Result<(), HotError>;

    /// Gateway `gateway` has no client left in the project.
    async fn mark_absent(&self, gateway: &str, project: &ProjectId) -> Result<(), HotError>;

    /// Publishes an ephemeral frame (presence) to every gateway subscribed to the project.
    async fn publish_ephemeral(
        &self,
        project: &ProjectId,
        origin: &str,
        frame: &str,
    ) -> Result<(), HotError>;

    /// Claims an idempotency key of `user` on `project` for `ttl_ms`, or says who holds it.
    async fn claim_idempotency(
        &self,
        project: &ProjectId,
        user: &str,
        key: &str,
        ttl_ms: u64,
    ) -> Result<IdempotencyClaim, HotError>;

    /// Settles a claimed key: with the response to give every repeat for `ttl_ms`, or `None` to release it (the
    /// request had no lasting effect and may be tried again).
    async fn settle_idempotency(
        &self,
        project: &ProjectId,
        user: &str,
        key: &str,
        response: Option<&str>,
        ttl_ms: u64,
    ) -> Result<(), HotError>;

    /// Where this process's updates were merged so far; a store that merges in one place only reports none.
    fn update_merges(&self) -> UpdateMerges {
        UpdateMerges::default()
    }

    /// Starts this process's bus connection; events arrive on `events` until it is dropped.
    fn open_bus(&self, events: mpsc::Sender<BusEvent>) -> Arc<dyn Bus>;
}
