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
use crate::object::Edit;

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

/// What an edit sends so that the script need not parse the object: the text it was merged against, and for an
/// update the merge and its version (for a conditional delete, the version of that text).
pub(crate) struct MergedHere {
    pub(crate) against: Arc<str>,
    pub(crate) result: Option<String>,
    pub(crate) version: u64,
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

    /// The merge of `edit` (its body as the script gets it) against the text last seen, when there is one and the
    /// edit needs it; `None` leaves every decision to the script, refusals included.
    pub(crate) fn merge_here(
        &self,
        project: &ProjectId,
        edit: &Edit,
        body: &str,
    ) -> Option<MergedHere> {
        let (result, version, against) = match edit {
            Edit::Create(_)
            | Edit::Delete {
                if_version: None, ..
            } => return None,
            Edit::Update { id, if_version, .. } => {
                let seen = self.get(project, id)?;
                let (result, version) = raw_merge::merged_update(&seen.text, body, *if_version)?;
                (Some(result), version, seen.text)
            }
            Edit::Delete { id, .. } => {
                let seen = self.get(project, id)?;
                // Read from the very text the script compares.
                (None, raw_merge::version_of(&seen.text)?, seen.text)
            }
        };
        Some(MergedHere {
            against,
            result,
            version,
        })
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
        if !read_by_script && self.holds_since(project, id, seen.seq) {
            return;
        }
        self.entries.insert((project.clone(), id.clone()), seen);
    }

    /// An entry written by the edit of `seq` or a later one is here.
    fn holds_since(&self, project: &ProjectId, id: &ObjectId, seq: u64) -> bool {
        self.entries
            .get(&KeyRef(project, id))
            .is_some_and(|e| e.seq >= seq)
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
                if self.holds_since(project, &id, message.seq) {
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
                    if !self.holds_since(project, &id, message.seq) {
                        self.entries.remove(&KeyRef(project, &id));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (ProjectId, ObjectId) {
        (
            ProjectId::parse("p").expect("project"),
            ObjectId::parse("o1").expect("id"),
        )
    }

    fn message(seq: u64, frame: &str) -> BusMessage {
        BusMessage {
            project: ids().0,
            origin: "c".into(),
            seq,
            frame: Arc::from(frame),
            trace: None,
        }
    }

    fn seen(seq: u64, version: u64, text: &str) -> Seen {
        Seen {
            seq,
            version,
            text: Arc::from(text),
        }
    }

    fn text(cache: &ObjectCache) -> Option<String> {
        let (p, o) = ids();
        cache.get(&p, &o).map(|s| s.text.to_string())
    }

    #[test]
    fn broadcasts_create_advance_and_delete_the_copy() {
        let cache = ObjectCache::new(1 << 20);
        cache.observe(&message(
            1,
            r#"{"type":"created","object":{"id":"o1","type":"rect","version":1},"seq":1,"by":"u"}"#,
        ));
        assert_eq!(
            text(&cache).as_deref(),
            Some(r#"{"id":"o1","type":"rect","version":1}"#)
        );
        cache.observe(&message(
            2,
            r#"{"type":"updated","id":"o1","patch":{"x":1},"version":2,"seq":2,"by":"u"}"#,
        ));
        assert_eq!(
            text(&cache).as_deref(),
            Some(r#"{"id":"o1","type":"rect","version":2,"x":1}"#)
        );
        // Presence and other frames change nothing.
        cache.observe(&message(0, r#"{"type":"presence","user":"u"}"#));
        cache.observe(&message(
            3,
            r#"{"type":"deleted","id":"o1","seq":3,"by":"u"}"#,
        ));
        assert_eq!(text(&cache), None);
    }

    #[test]
    fn an_update_that_does_not_follow_the_copy_drops_it_and_an_older_one_is_ignored() {
        let (p, o) = ids();
        let cache = ObjectCache::new(1 << 20);
        cache.applied(&p, &o, seen(5, 2, r#"{"id":"o1","version":2}"#), true);
        // The broadcast of the edit already answered: nothing changes.
        cache.observe(&message(
            5,
            r#"{"type":"updated","id":"o1","patch":{"x":1},"version":2,"seq":5,"by":"u"}"#,
        ));
        assert_eq!(text(&cache).as_deref(), Some(r#"{"id":"o1","version":2}"#));
        // Version 4 after 2: one was missed, the copy cannot be trusted.
        cache.observe(&message(
            7,
            r#"{"type":"updated","id":"o1","patch":{"x":1},"version":4,"seq":7,"by":"u"}"#,
        ));
        assert_eq!(text(&cache), None);
    }

    #[test]
    fn an_answer_of_the_script_wins_over_any_seq_and_one_merged_here_only_over_older() {
        let (p, o) = ids();
        let cache = ObjectCache::new(1 << 20);
        cache.applied(&p, &o, seen(9, 3, r#"{"v":"newer"}"#), false);
        cache.applied(&p, &o, seen(8, 2, r#"{"v":"older"}"#), false);
        assert_eq!(text(&cache).as_deref(), Some(r#"{"v":"newer"}"#));
        // The script read the stored text: it is the truth, even with a seq handed out again.
        cache.applied(&p, &o, seen(8, 2, r#"{"v":"stored"}"#), true);
        assert_eq!(text(&cache).as_deref(), Some(r#"{"v":"stored"}"#));
    }

    #[test]
    fn the_copies_stay_within_their_bytes_and_a_zero_size_keeps_none() {
        let p = ProjectId::parse("p").expect("project");
        let cache = ObjectCache::new(64 * 1024);
        let body = "x".repeat(900);
        for i in 0..1_000 {
            let id = ObjectId::parse(format!("o{i}")).expect("id");
            cache.applied(&p, &id, seen(i + 1, 1, &body), true);
        }
        let kept = (0..1_000)
            .filter(|i| {
                let id = ObjectId::parse(format!("o{i}")).expect("id");
                cache.get(&p, &id).is_some()
            })
            .count();
        assert!(kept > 0 && kept * 1_000 <= 64 * 1024, "kept {kept}");

        let (p, o) = ids();
        let none = ObjectCache::new(0);
        none.applied(&p, &o, seen(1, 1, "{}"), true);
        assert!(none.get(&p, &o).is_none());
    }
}
