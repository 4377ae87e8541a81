//! The Redis key layout. Every key of one project shares the hash tag `{projectId}` so that a project's
//! script touches one Redis Cluster slot; the dirty, lease and resident indexes are global.

use crate::ids::ProjectId;

/// Sorted set: project id → epoch ms of its oldest unsaved change (waiting to be claimed).
pub const DIRTY_INDEX: &str = "canvas:dirty";
/// Sorted set: project id → epoch ms when its saver's lease expires (being saved).
pub const LEASE_INDEX: &str = "canvas:leases";

/// Sorted set: project id → epoch ms of its last read or edit, for every project held in the hot state (the idle
/// ones are evicted oldest first).
pub const RESIDENT_INDEX: &str = "canvas:resident";
/// Sorted set: project id → its total object bytes as of its last save or load, for every resident project (for
/// the biggest projects in metrics; kept off the edit path).
pub const SIZE_INDEX: &str = "canvas:sizes";
/// Counter: cold loads of any project by any gateway (for metrics).
pub const COLD_LOADS: &str = "canvas:cold_loads";

/// The keys of one project.
#[derive(Debug, Clone)]
pub struct ProjectKeys {
    /// Hash: object id → object JSON (with `version`).
    pub objects: String,
    /// Hash: object id → stamp of its last edit (a delete's stays until the delete is saved).
    pub mtimes: String,
    /// Hash: `seq`, `savedSeq`, `stamp` (the newest edit stamp), `loadedAt`. Its existence means the project is loaded.
    pub meta: String,
    /// Set: ids changed since the last claim.
    pub changed: String,
    /// Set: ids being saved by the current claim.
    pub saving: String,
    /// Hash: `token`, `since` of the current claim.
    pub lease: String,
    /// Stream: the project's last applied edits (entry id `<seq>-0`, fields `o` origin and `f` broadcast frame),
    /// trimmed to at least the journal length; resume and repair read it instead of a snapshot.
    pub journal: String,
    /// Hash: gateway id → epoch ms until which that gateway has a client in the project (renewed while it does;
    /// the key expires by itself when every gateway holding it is gone).
    pub present: String,
    /// Hash: object id → stamp of its version the durable store refused (held only here until it changes).
    pub refused: String,
    /// Pub/sub channel for fan-out.
    pub channel: String,
}

impl ProjectKeys {
    pub fn new(project: &ProjectId) -> Self {
        let base = format!("canvas:{{{project}}}:");
        Self {
            objects: format!("{base}objects"),
            mtimes: format!("{base}mtimes"),
            meta: format!("{base}meta"),
            changed: format!("{base}changed"),
            saving: format!("{base}saving"),
            lease: format!("{base}lease"),
            journal: format!("{base}journal"),
            present: format!("{base}present"),
            refused: format!("{base}refused"),
            channel: format!("{base}events"),
        }
    }

    /// Every per-project key that holds state (idempotency keys expire by themselves, a big snapshot's copy
    /// too): removing a project from the hot state removes exactly these. A new per-project key is added here.
    pub fn all(&self) -> [&str; 9] {
        [
            &self.objects,
            &self.mtimes,
            &self.meta,
            &self.changed,
            &self.saving,
            &self.lease,
            &self.journal,
            &self.present,
            &self.refused,
        ]
    }

    /// Hash: a consistent copy of the objects that a big snapshot is paged out of (expires by itself). `token`
    /// is unique per snapshot.
    pub fn snapshot_copy(project: &ProjectId, token: &str) -> String {
        format!("canvas:{{{project}}}:snapshot:{token}")
    }

    /// String: the response to a write with idempotency key `key` by `user` (expires by itself). `%` and `:` in
    /// the user id are escaped so that no two (user, key) pairs share a name.
    pub fn idempotency(project: &ProjectId, user: &str, key: &str) -> String {
        let user = user.replace('%', "%25").replace(':', "%3A");
        format!("canvas:{{{project}}}:idem:{user}:{key}")
    }

    /// The project id from a channel name, as published by [`ProjectKeys::channel`].
    pub fn project_of_channel(channel: &str) -> Option<ProjectId> {
        let inner = channel.strip_prefix("canvas:{")?.strip_suffix("}:events")?;
        ProjectId::parse(inner).ok()
    }
}
