//! The Redis key layout. Every key of one project shares the hash tag `{projectId}` so that a project's
//! script touches one Redis Cluster slot; the dirty index and lease index are global.

use crate::ids::ProjectId;

/// Sorted set: project id → epoch ms of its oldest unsaved change (waiting to be claimed).
pub const DIRTY_INDEX: &str = "canvas:dirty";
/// Sorted set: project id → epoch ms when its saver's lease expires (being saved).
pub const LEASE_INDEX: &str = "canvas:leases";

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
            channel: format!("{base}events"),
        }
    }

    /// Every per-project key that holds state (idempotency keys expire by themselves): removing a project from
    /// the hot state removes exactly these.
    pub fn all(&self) -> [&str; 7] {
        [
            &self.objects,
            &self.mtimes,
            &self.meta,
            &self.changed,
            &self.saving,
            &self.lease,
            &self.journal,
        ]
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
