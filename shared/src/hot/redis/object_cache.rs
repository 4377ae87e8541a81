//! The text of each object as this process last saw it stored, so that an update can be merged here and Redis
//! only has to check that the stored text is still this one.
//!
//! Filled from what the edit script answers and kept current from the broadcasts of the projects this process
//! follows (an update frame carries the patch: merging it gives the same bytes the merging side wrote). Nothing
//! here is trusted: an entry that is stale, evicted or never filled only means the script merges, as it always
//! did. Bounded by the bytes it holds.

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};

use super::raw_merge::{self, RawObject};
use crate::hot::BusMessage;
use crate::ids::{ObjectId, ProjectId};

/// How many bytes of object text a process keeps by default.
pub const DEFAULT_OBJECT_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// An object's stored text with the project `seq` of the edit that wrote it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) seq: u64,
    pub(crate) version: u64,
    pub(crate) text: Arc<str>,
}

type Key = (ProjectId, ObjectId);

/// A key to look up without cloning its ids; it hashes as the `Key` it stands for (fields in order).
#[derive(Hash)]
struct KeyRef<'a>(&'a ProjectId, &'a ObjectId);

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self.0 == key.0 && *self.1 == key.1
    }
}

#[derive(Clone)]
struct ByBytes;

impl Weighter<Key, Seen> for ByBytes {
    fn weight(&self, key: &Key, seen: &Seen) -> u64 {
        // The texts and what each entry costs besides them, roughly.
        (key.0.as_str().len() + key.1.as_str().len() + seen.text.len() + 96) as u64
    }
}

pub(crate) struct ObjectCache {
    entries: Cache<Key, Seen, ByBytes>,
    /// False when sized 0: nothing is kept and every update is merged by the script.
    enabled: bool,
}

impl ObjectCache {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let estimated_items = (max_bytes / 512).clamp(16, 1 << 20) as usize;
        Self {
            entries: Cache::with_weighter(estimated_items, max_bytes.max(1), ByBytes),
            enabled: max_bytes > 0,
        }
    }

    pub(crate) fn get(&self, project: &ProjectId, id: &ObjectId) -> Option<Seen> {
        if !self.enabled {
            return None;
        }
        self.entries.get(&KeyRef(project, id))
    }

    /// An edit of this process was applied. `read_by_script`: the script merged, so `seen` is what it read and
    /// wrote, newer than anything here whatever the seqs say (a Redis that lost its tail hands seqs out again).
    pub(crate) fn applied(
        &self,
        project: &ProjectId,
        id: &ObjectId,
        seen: Seen,
        read_by_script: bool,
    ) {
        if !self.enabled {
            return;
        }
        if !read_by_script
            && self
                .entries
                .get(&KeyRef(project, id))
                .is_some_and(|e| e.seq >= seen.seq)
        {
            return;
        }
        self.entries.insert((project.clone(), id.clone()), seen);
    }

    /// An edit of this process was applied and deleted the object.
    pub(crate) fn deleted(&self, project: &ProjectId, id: &ObjectId) {
        self.entries.remove(&KeyRef(project, id));
    }

    /// Follows a broadcast: a create gives the whole text, an update the patch to merge into the entry it follows,
    /// a delete removes the entry. An update that does not follow the entry (one was missed) drops it.
    pub(crate) fn observe(&self, message: &BusMessage) {
        if !self.enabled || message.seq == 0 {
            return;
        }
        let frame = &*message.frame;
        let kind = if frame.starts_with(r#"{"type":"created","#) {
            Kind::Created
        } else if frame.starts_with(r#"{"type":"updated","#) {
            Kind::Updated
        } else if frame.starts_with(r#"{"type":"deleted","#) {
            Kind::Deleted
        } else {
            return;
        };
        let Some(fields) = RawObject::parse(frame) else {
            return;
        };
        let project = &message.project;
        match kind {
            Kind::Created => {
                let Some(text) = fields.get("\"object\"") else {
                    return;
                };
                let Some(id) = RawObject::parse(text).and_then(|o| object_id(o.get("\"id\"")))
                else {
                    return;
                };
                if self
                    .entries
                    .get(&KeyRef(project, &id))
                    .is_some_and(|e| e.seq >= message.seq)
                {
                    return;
                }
                self.entries.insert(
                    (project.clone(), id),
                    Seen {
                        seq: message.seq,
                        version: raw_merge::version_of(text).unwrap_or(1),
                        text: Arc::from(text),
                    },
                );
            }
            Kind::Updated => {
                let Some(id) = object_id(fields.get("\"id\"")) else {
                    return;
                };
                let Some(entry) = self.entries.get(&KeyRef(project, &id)) else {
                    return;
                };
                if entry.seq >= message.seq {
                    return;
                }
                let version = fields
                    .get("\"version\"")
                    .and_then(|v| v.parse::<u64>().ok());
                let merged = match (version, fields.get("\"patch\"")) {
                    (Some(v), Some(patch)) if v == entry.version + 1 => {
                        raw_merge::merged_update(&entry.text, patch, None)
                    }
                    _ => None,
                };
                match merged {
                    Some((text, version)) => self.entries.insert(
                        (project.clone(), id),
                        Seen {
                            seq: message.seq,
                            version,
                            text: Arc::from(text),
                        },
                    ),
                    None => {
                        self.entries.remove(&KeyRef(project, &id));
                    }
                }
            }
            Kind::Deleted => {
                if let Some(id) = object_id(fields.get("\"id\"")) {
                    let key = KeyRef(project, &id);
                    if self.entries.get(&key).is_some_and(|e| e.seq < message.seq) {
                        self.entries.remove(&key);
                    }
                }
            }
        }
    }
}

enum Kind {
    Created,
    Updated,
    Deleted,
}

fn object_id(raw: Option<&str>) -> Option<ObjectId> {
    let id: String = serde_json::from_str(raw?).ok()?;
    ObjectId::parse(id).ok()
}
