//! The in-memory hot state of the one-process dev mode: the same semantics as Redis (atomic edits, `seq`,
//! changed-sets, dirty index, leases, fan-out between connections), held under one mutex.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::keys::ProjectKeys;
use super::save_queue::SAVED_ORIGIN;
use super::{
    Applied, Bus, BusEvent, BusMessage, Claim, ClaimCursor, ClaimPage, DirtySummary, EditContext,
    EditRefusal, EditStore, Eviction, HotError, IdempotencyClaim, JournalEntry, JournalPage,
    LeaseClock, PageBounds, Reachable, Residency, SaveQueue, Snapshot, DEFAULT_JOURNAL_LEN,
};
use crate::ids::{ObjectId, ProjectId};
use crate::object::{merge_patch, Edit, VERSION_FIELD};
use crate::protocol::{Broadcast, ServerMessage};
use crate::stored::{StoredObject, Tombstone};

#[derive(Default)]
struct Project {
    seq: u64,
    /// Every edit up to this seq is in the durable store.
    saved_seq: u64,
    /// The newest edit stamp (see the edit script): every edit is stamped strictly above it.
    stamp: i64,
    objects: BTreeMap<ObjectId, Map<String, Value>>,
    /// Stamp of each object's last edit; a delete's stays until the delete is saved.
    mtimes: HashMap<ObjectId, i64>,
    changed: HashSet<ObjectId>,
    /// Ordered, so that a paged read can resume after the last id it returned.
    saving: BTreeSet<ObjectId>,
    /// (token, since) of the current claim.
    lease: Option<(String, i64)>,
    /// The last applied edits, oldest first (the Redis stream's entries).
    journal: VecDeque<JournalEntry>,
    /// Total object JSON bytes.
    bytes: usize,
    /// The highest seq a save persisted in the durable store.
    persisted_seq: u64,
    /// Objects the durable store refused: id → stamp of the refused version.
    refused: HashMap<ObjectId, i64>,
}

impl Project {
    /// The project's current lease is this claim's.
    fn holds(&self, claim: &Claim) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|(token, _)| *token == claim.token)
    }
}

#[derive(Default)]
struct State {
    projects: HashMap<ProjectId, Project>,
    /// Waiting to be claimed: project → oldest unsaved change.
    dirty: HashMap<ProjectId, i64>,
    /// Being saved: project → lease expiry.
    leases: HashMap<ProjectId, i64>,
    /// Loaded: project → epoch ms of its last read or edit.
    resident: HashMap<ProjectId, i64>,
    /// Loaded: project → its object bytes as of its last save or load.
    sizes: HashMap<ProjectId, u64>,
    /// Project → gateway id → epoch ms until which that gateway has a client in it.
    present: HashMap<ProjectId, HashMap<String, i64>>,
    cold_loads: u64,
}

impl State {
    fn presence_of(&mut self, project: &ProjectId) -> &mut HashMap<String, i64> {
        self.present.entry(project.clone()).or_default()
    }

    /// Forgets every trace of a project (its eviction).
    fn remove(&mut self, project: &ProjectId) {
        self.projects.remove(project);
        self.resident.remove(project);
        self.sizes.remove(project);
        self.present.remove(project);
    }
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    buses: Mutex<Vec<Weak<MemoryBus>>>,
    /// Idempotency keys: name → (epoch ms it expires, response; empty while its request runs).
    idempotency: Mutex<HashMap<String, (i64, String)>>,
}

/// In-memory [`EditStore`] and [`SaveQueue`]; clones share the same state.
#[derive(Clone)]
pub struct MemoryHotState {
    inner: Arc<Inner>,
    lease_clock: LeaseClock,
    /// Edits each project's journal keeps.
    journal_len: usize,
}

impl Default for MemoryHotState {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            lease_clock: LeaseClock::default(),
            journal_len: DEFAULT_JOURNAL_LEN,
        }
    }
}

struct MemoryBus {
    projects: Mutex<HashSet<ProjectId>>,
    events: mpsc::Sender<BusEvent>,
}

#[async_trait]
impl Bus for MemoryBus {
    async fn subscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        lock(&self.projects).insert(project.clone());
        Ok(())
    }

    async fn unsubscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        lock(&self.projects).remove(project);
        Ok(())
    }
}

/// A poisoned lock only means another thread panicked mid-update; the data is still the best we have.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn to_json(map: &Map<String, Value>) -> String {
    serde_json::to_string(map).unwrap_or_default()
}

impl MemoryHotState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `len` edits in each project's journal (0: no journal).
    pub fn with_journal_len(mut self, len: usize) -> Self {
        self.journal_len = len;
        self
    }

    /// Judges leases on `clock` instead of the process clock (tests pin it to explicit times).
    pub fn with_lease_clock(mut self, clock: LeaseClock) -> Self {
        self.lease_clock = clock;
        self
    }

    fn lease_now(&self) -> i64 {
        self.lease_clock
            .pinned_ms()
            .unwrap_or_else(crate::time::now_ms)
    }

    /// Delivers like Redis pub/sub: to every bus subscribed now, dropping rather than waiting (at-most-once).
    fn publish(&self, message: BusMessage) {
        let mut buses = lock(&self.inner.buses);
        buses.retain(|b| b.strong_count() > 0);
        for bus in buses.iter().filter_map(Weak::upgrade) {
            if lock(&bus.projects).contains(&message.project) {
                let _ = bus.events.try_send(BusEvent::Message(message.clone()));
            }
        }
    }

    fn apply_locked(
        project: &mut Project,
        edit: &Edit,
        ctx: &EditContext<'_>,
    ) -> Result<Option<u64>, EditRefusal> {
        let limits = ctx.limits;
        let version_of = |object: &Map<String, Value>| {
            object
                .get(VERSION_FIELD)
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let check_condition = |object: &Map<String, Value>| match edit.if_version() {
            Some(required) if required != version_of(object) => Err(EditRefusal::VersionMismatch {
                current: version_of(object),
            }),
            _ => Ok(()),
        };
        match edit {
            Edit::Create(object) => {
                if project.objects.contains_key(&object.id) {
                    return Err(EditRefusal::Exists);
                }
                if project.objects.len() >= limits.max_objects_per_project {
                    return Err(EditRefusal::TooManyObjects);
                }
                let mut body = object.body.clone();
                body.insert(VERSION_FIELD.into(), json!(1));
                if to_json(&body).len() > limits.max_object_bytes {
                    return Err(EditRefusal::ObjectTooLarge);
                }
                project.objects.insert(object.id.clone(), body);
                Ok(Some(1))
            }
            Edit::Update { id, patch, .. } => {
                let current = project.objects.get(id).ok_or(EditRefusal::NotFound)?;
                check_condition(current)?;
                if let Some(t) = patch.0.get("type") {
                    if current.get("type") != Some(t) {
                        return Err(EditRefusal::TypeChange);
                    }
                }
                let version = version_of(current) + 1;
                let mut merged = Value::Object(current.clone());
                merge_patch(&mut merged, &Value::Object(patch.0.clone()));
                let Value::Object(mut body) = merged else {
                    unreachable!("merging an object patch yields an object")
                };
                body.insert(VERSION_FIELD.into(), json!(version));
                if to_json(&body).len() > limits.max_object_bytes {
                    return Err(EditRefusal::ObjectTooLarge);
                }
                project.objects.insert(id.clone(), body);
                Ok(Some(version))
            }
            Edit::Delete { id, .. } => {
                let current = project.objects.get(id).ok_or(EditRefusal::NotFound)?;
                check_condition(current)?;
                project.objects.remove(id);
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl EditStore for MemoryHotState {
    async fn apply(
        &self,
        project_id: &ProjectId,
        edit: &Edit,
        ctx: EditContext<'_>,
    ) -> Result<Applied, HotError> {
        let mut state = lock(&self.inner.state);
        let project = state
            .projects
            .get_mut(project_id)
            .ok_or(HotError::NotLoaded)?;
        let id = edit.object_id();
        let before = project.objects.get(id).map_or(0, |o| to_json(o).len());
        let previous = project.objects.get(id).cloned();
        let refuse =
            |refusal: EditRefusal| HotError::Rejected(refusal.to_rejection(id, ctx.limits));
        let version = Self::apply_locked(project, edit, &ctx).map_err(refuse)?;
        let after = project.objects.get(id).map_or(0, |o| to_json(o).len());
        if after > before && project.bytes + (after - before) > ctx.limits.max_project_bytes {
            // Undo: the edit is refused as a whole, as the script refuses it before changing anything.
            match previous {
                Some(object) => project.objects.insert(id.clone(), object),
                None => project.objects.remove(id),
            };
            return Err(refuse(EditRefusal::ProjectTooLarge));
        }
        project.bytes = (project.bytes + after).saturating_sub(before);
        project.seq = project.seq.max(ctx.seq_floor) + 1;
        let seq = project.seq;
        let id = edit.object_id().clone();
        project.stamp = ctx.now_ms.max(project.stamp + 1);
        project.mtimes.insert(id.clone(), project.stamp);
        project.changed.insert(id.clone());
        let object = project.objects.get(&id).map(to_json);
        let patch_text;
        let broadcast = match edit {
            Edit::Create(_) => Broadcast::Created {
                object: object.as_deref().unwrap_or("{}"),
            },
            Edit::Update { patch, .. } => {
                patch_text = to_json(&patch.0);
                Broadcast::Updated {
                    id: &id,
                    patch: &patch_text,
                    version: version.unwrap_or(0),
                }
            }
            Edit::Delete { .. } => Broadcast::Deleted { id: &id },
        };
        let frame: Arc<str> = Arc::from(broadcast.to_text(seq, ctx.by));
        if self.journal_len > 0 {
            project.journal.push_back(JournalEntry {
                seq,
                origin: ctx.origin.to_string(),
                frame: Arc::clone(&frame),
            });
            // One more than the journal length: a resume from N needs N's own entry besides the ones after it.
            while project.journal.len() > self.journal_len + 1 {
                project.journal.pop_front();
            }
        }
        state.dirty.entry(project_id.clone()).or_insert(ctx.now_ms);
        state.resident.insert(project_id.clone(), ctx.now_ms);
        // Published under the state lock so that every bus sees edits in seq order, as Redis guarantees.
        self.publish(BusMessage {
            project: project_id.clone(),
            origin: ctx.origin.to_string(),
            seq,
            frame,
            trace: crate::telemetry::current_traceparent(),
        });
        drop(state);
        Ok(Applied {
            id,
            version,
            seq,
            object,
        })
    }

    async fn snapshot(&self, project_id: &ProjectId) -> Result<Snapshot, HotError> {
        let mut state = lock(&self.inner.state);
        if !state.projects.contains_key(project_id) {
            return Err(HotError::NotLoaded);
        }
        state
            .resident
            .insert(project_id.clone(), crate::time::now_ms());
        let project = state.projects.get(project_id).ok_or(HotError::NotLoaded)?;
        Ok(Snapshot {
            seq: project.seq,
            saved_seq: project.saved_seq,
            objects: project.objects.values().map(to_json).collect(),
        })
    }

    async fn journal_after(
        &self,
        project: &ProjectId,
        after: u64,
        max: usize,
    ) -> Result<JournalPage, HotError> {
        let state = lock(&self.inner.state);
        let project = state.projects.get(project).ok_or(HotError::NotLoaded)?;
        let entries = project
            .journal
            .iter()
            .skip_while(|entry| entry.seq < after)
            .take(max.max(1) + 1)
            .cloned()
            .collect();
        Ok(JournalPage::new(
            after,
            project.seq,
            project.saved_seq,
            entries,
        ))
    }

    async fn raise_seq(&self, project: &ProjectId, floor: u64) -> Result<u64, HotError> {
        let mut state = lock(&self.inner.state);
        let project = state.projects.get_mut(project).ok_or(HotError::NotLoaded)?;
        project.seq = project.seq.max(floor);
        Ok(project.seq)
    }

    async fn load(
        &self,
        project: &ProjectId,
        objects: &[StoredObject],
        seq_floor: u64,
        stamp_floor: i64,
    ) -> Result<bool, HotError> {
        let mut state = lock(&self.inner.state);
        if state.projects.contains_key(project) {
            return Ok(false);
        }
        let mut loaded = Project {
            seq: seq_floor,
            saved_seq: seq_floor,
            stamp: stamp_floor,
            ..Project::default()
        };
        for object in objects {
            if let Ok(Value::Object(body)) = serde_json::from_str(&object.json) {
                loaded.objects.insert(object.id.clone(), body);
                loaded.mtimes.insert(object.id.clone(), object.updated_at);
                loaded.stamp = loaded.stamp.max(object.updated_at);
            }
        }
        loaded.bytes = loaded.objects.values().map(|o| to_json(o).len()).sum();
        state.sizes.insert(project.clone(), loaded.bytes as u64);
        state.projects.insert(project.clone(), loaded);
        state.cold_loads += 1;
        state
            .resident
            .insert(project.clone(), crate::time::now_ms());
        Ok(true)
    }

    async fn mark_present(
        &self,
        gateway: &str,
        projects: &[ProjectId],
        until_ms: i64,
        _ttl_ms: u64,
    ) -> Result<(), HotError> {
        let mut state = lock(&self.inner.state);
        for project in projects {
            // Like the Redis hash, the record exists whether or not the project is loaded.
            let entry = state.presence_of(project);
            entry.insert(gateway.to_string(), until_ms);
        }
        Ok(())
    }

    async fn mark_absent(&self, gateway: &str, project: &ProjectId) -> Result<(), HotError> {
        let mut state = lock(&self.inner.state);
        state.presence_of(project).remove(gateway);
        Ok(())
    }

    async fn publish_ephemeral(
        &self,
        project: &ProjectId,
        origin: &str,
        frame: &str,
    ) -> Result<(), HotError> {
        self.publish(BusMessage {
            project: project.clone(),
            origin: origin.to_string(),
            seq: 0,
            frame: Arc::from(frame),
            trace: None,
        });
        Ok(())
    }

    async fn claim_idempotency(
        &self,
        project: &ProjectId,
        user: &str,
        key: &str,
        ttl_ms: u64,
    ) -> Result<IdempotencyClaim, HotError> {
        let now = crate::time::now_ms();
        let mut keys = lock(&self.inner.idempotency);
        keys.retain(|_, (expires, _)| *expires > now);
        let name = ProjectKeys::idempotency(project, user, key);
        Ok(match keys.get(&name) {
            None => {
                keys.insert(name, (now + ttl_ms as i64, String::new()));
                IdempotencyClaim::Claimed
            }
            Some((_, response)) if response.is_empty() => IdempotencyClaim::InFlight,
            Some((_, response)) => IdempotencyClaim::Done(response.clone()),
        })
    }

    async fn settle_idempotency(
        &self,
        project: &ProjectId,
        user: &str,
        key: &str,
        response: Option<&str>,
        ttl_ms: u64,
    ) -> Result<(), HotError> {
        let name = ProjectKeys::idempotency(project, user, key);
        let mut keys = lock(&self.inner.idempotency);
        match response {
            Some(response) => {
                let expires = crate::time::now_ms() + ttl_ms as i64;
                keys.insert(name, (expires, response.to_string()));
            }
            None => {
                keys.remove(&name);
            }
        }
        Ok(())
    }

    fn open_bus(&self, events: mpsc::Sender<BusEvent>) -> Arc<dyn Bus> {
        let bus = Arc::new(MemoryBus {
            projects: Mutex::new(HashSet::new()),
            events,
        });
        lock(&self.inner.buses).push(Arc::downgrade(&bus));
        bus
    }
}

#[async_trait]
impl Reachable for MemoryHotState {
    async fn ping(&self) -> Result<(), HotError> {
        Ok(())
    }
}

#[async_trait]
impl SaveQueue for MemoryHotState {
    async fn claim_dirty(
        &self,
        owner: &str,
        max: usize,
        lease_ms: u64,
    ) -> Result<Vec<Claim>, HotError> {
        let now_ms = self.lease_now();
        let mut state = lock(&self.inner.state);
        let prefix = format!("{owner}:{}", uuid::Uuid::new_v4().simple());
        // Longest-expired first, as Redis's ZRANGEBYSCORE over the lease index.
        let mut expired: Vec<(i64, ProjectId)> = state
            .leases
            .iter()
            .filter(|(_, until)| **until <= now_ms)
            .map(|(p, until)| (*until, p.clone()))
            .collect();
        expired.sort();
        let mut expired: Vec<ProjectId> = expired.into_iter().map(|(_, p)| p).collect();
        expired.truncate(max);
        let mut waiting: Vec<(i64, ProjectId)> = state
            .dirty
            .iter()
            .filter(|(p, _)| state.leases.get(*p).is_none_or(|until| *until <= now_ms))
            .map(|(p, since)| (*since, p.clone()))
            .collect();
        waiting.sort();
        let mut candidates: Vec<ProjectId> = expired;
        for (_, p) in waiting {
            if !candidates.contains(&p) {
                candidates.push(p);
            }
        }
        candidates.truncate(max);
        let mut claims = Vec::new();
        for project_id in candidates {
            let dirty_score = state.dirty.remove(&project_id);
            let Some(project) = state.projects.get_mut(&project_id) else {
                continue;
            };
            let previous = project.lease.as_ref().map(|(_, since)| *since);
            let since = match (dirty_score, previous) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => now_ms,
            };
            let changed = std::mem::take(&mut project.changed);
            project.saving.extend(changed);
            let token = format!("{prefix}:{}", claims.len() + 1);
            project.lease = Some((token.clone(), since));
            let seq = project.seq;
            state
                .leases
                .insert(project_id.clone(), now_ms + lease_ms as i64);
            claims.push(Claim {
                project: project_id,
                token,
                dirty_since: since,
                seq,
            });
        }
        Ok(claims)
    }

    async fn read_claim_page(
        &self,
        claim: &Claim,
        cursor: &ClaimCursor,
        bounds: PageBounds,
    ) -> Result<ClaimPage, HotError> {
        let state = lock(&self.inner.state);
        let mut page = ClaimPage::default();
        let Some(project) = state.projects.get(&claim.project) else {
            return Ok(page);
        };
        // The cursor is the last id returned (empty: start); the saving-set is ordered.
        let after = ObjectId::parse(cursor.0.as_str()).ok();
        let rest = match &after {
            Some(id) => project
                .saving
                .range((Bound::Excluded(id), Bound::Unbounded)),
            None => project.saving.range::<ObjectId, _>(..),
        };
        let (mut items, mut bytes, mut last) = (0, 0, None);
        for id in rest {
            let json = project.objects.get(id).map(to_json);
            let size = json.as_ref().map_or(0, String::len);
            if items >= bounds.max_items.max(1) || (items > 0 && bytes + size > bounds.max_bytes) {
                page.next = last.map(|last: &ObjectId| ClaimCursor(last.to_string()));
                break;
            }
            items += 1;
            bytes += size;
            last = Some(id);
            match json {
                Some(json) => page.changes.upserts.push(StoredObject {
                    id: id.clone(),
                    json,
                    updated_at: project.mtimes.get(id).copied().unwrap_or(0),
                }),
                None => page.changes.deletes.push(Tombstone {
                    id: id.clone(),
                    stamp: project.mtimes.get(id).copied().unwrap_or(project.stamp),
                }),
            }
        }
        Ok(page)
    }

    async fn renew_claim(&self, claim: &Claim, lease_ms: u64) -> Result<bool, HotError> {
        let now_ms = self.lease_now();
        let mut state = lock(&self.inner.state);
        let ours = state
            .projects
            .get(&claim.project)
            .and_then(|p| p.lease.as_ref())
            .is_some_and(|(token, _)| *token == claim.token);
        if ours {
            state
                .leases
                .insert(claim.project.clone(), now_ms + lease_ms as i64);
        }
        Ok(ours)
    }

    async fn complete_claim(&self, claim: &Claim) -> Result<bool, HotError> {
        let mut state = lock(&self.inner.state);
        let Some(project) = state.projects.get_mut(&claim.project) else {
            return Ok(false);
        };
        if !project.holds(claim) {
            return Ok(false);
        }
        let saved = std::mem::take(&mut project.saving);
        for id in saved {
            if project
                .refused
                .get(&id)
                .is_some_and(|held| project.mtimes.get(&id) != Some(held))
            {
                project.refused.remove(&id);
            }
            if !project.objects.contains_key(&id) && !project.changed.contains(&id) {
                project.mtimes.remove(&id);
            }
        }
        project.lease = None;
        let raised = claim.seq > project.saved_seq;
        project.saved_seq = project.saved_seq.max(claim.seq);
        project.persisted_seq = project.persisted_seq.max(claim.seq);
        let bytes = project.bytes as u64;
        state.sizes.insert(claim.project.clone(), bytes);
        state.leases.remove(&claim.project);
        if raised {
            // Published under the state lock, after every edit it covers, as Redis's script does.
            self.publish(BusMessage {
                project: claim.project.clone(),
                origin: SAVED_ORIGIN.to_string(),
                seq: 0,
                frame: Arc::from(ServerMessage::Saved { seq: claim.seq }.to_text()),
                trace: None,
            });
        }
        Ok(true)
    }

    async fn abandon_claim(&self, claim: &Claim) -> Result<(), HotError> {
        let mut state = lock(&self.inner.state);
        let Some(project) = state.projects.get_mut(&claim.project) else {
            return Ok(());
        };
        if project
            .lease
            .as_ref()
            .is_none_or(|(token, _)| *token != claim.token)
        {
            return Ok(());
        }
        let saving = std::mem::take(&mut project.saving);
        project.changed.extend(saving);
        project.lease = None;
        state.leases.remove(&claim.project);
        let entry = state
            .dirty
            .entry(claim.project.clone())
            .or_insert(claim.dirty_since);
        *entry = (*entry).min(claim.dirty_since);
        Ok(())
    }

    async fn dirty_summary(&self) -> Result<DirtySummary, HotError> {
        let state = lock(&self.inner.state);
        let mut entries: BTreeMap<&ProjectId, i64> =
            state.dirty.iter().map(|(p, s)| (p, *s)).collect();
        for project_id in state.leases.keys() {
            if let Some((_, since)) = state
                .projects
                .get(project_id)
                .and_then(|p| p.lease.as_ref())
            {
                let e = entries.entry(project_id).or_insert(*since);
                *e = (*e).min(*since);
            }
        }
        let mut sorted: Vec<(i64, &ProjectId)> = entries.into_iter().map(|(p, s)| (s, p)).collect();
        sorted.sort();
        Ok(DirtySummary {
            count: sorted.len(),
            oldest_modification: sorted.first().map(|(s, _)| *s),
            project_ids: sorted
                .iter()
                .take(100)
                .map(|(_, p)| p.to_string())
                .collect(),
        })
    }

    async fn hold_back(
        &self,
        claim: &Claim,
        refused: &[(ObjectId, i64)],
    ) -> Result<bool, HotError> {
        let mut state = lock(&self.inner.state);
        let Some(project) = state.projects.get_mut(&claim.project) else {
            return Ok(false);
        };
        if !project.holds(claim) {
            return Ok(false);
        }
        project.refused.extend(refused.iter().cloned());
        Ok(true)
    }

    async fn idle_projects(
        &self,
        idle_before_ms: i64,
        max: usize,
    ) -> Result<Vec<ProjectId>, HotError> {
        let state = lock(&self.inner.state);
        let mut idle: Vec<(i64, &ProjectId)> = state
            .resident
            .iter()
            .filter(|(_, last)| **last <= idle_before_ms)
            .map(|(p, last)| (*last, p))
            .collect();
        idle.sort();
        Ok(idle.into_iter().take(max).map(|(_, p)| p.clone()).collect())
    }

    async fn evict(
        &self,
        project_id: &ProjectId,
        idle_before_ms: i64,
        now_ms: i64,
        persisted_seq: u64,
    ) -> Result<Eviction, HotError> {
        let mut state = lock(&self.inner.state);
        let Some(project) = state.projects.get(project_id) else {
            state.resident.remove(project_id);
            state.sizes.remove(project_id);
            return Ok(Eviction::Gone);
        };
        if state
            .resident
            .get(project_id)
            .is_none_or(|last| *last > idle_before_ms)
        {
            return Ok(Eviction::Busy);
        }
        let in_use = state
            .present
            .get(project_id)
            .is_some_and(|gateways| gateways.values().any(|until| *until > now_ms));
        if in_use || !project.refused.is_empty() {
            // Its idle time starts again when the client leaves or the refused object is saved.
            state.resident.insert(project_id.clone(), now_ms);
            return Ok(Eviction::Busy);
        }
        if state.dirty.contains_key(project_id)
            || state.leases.contains_key(project_id)
            || !project.changed.is_empty()
            || !project.saving.is_empty()
            || project.lease.is_some()
        {
            return Ok(Eviction::Busy);
        }
        if project.seq > project.persisted_seq.max(persisted_seq) {
            return Ok(Eviction::Unpersisted { seq: project.seq });
        }
        let seq = project.seq;
        state.remove(project_id);
        Ok(Eviction::Evicted { seq })
    }

    async fn residency(&self, biggest: usize) -> Result<Residency, HotError> {
        let state = lock(&self.inner.state);
        let mut sizes: Vec<(u64, &ProjectId)> = state.sizes.iter().map(|(p, b)| (*b, p)).collect();
        sizes.sort_by(|a, b| b.cmp(a));
        Ok(Residency {
            resident: state.projects.len() as u64,
            cold_loads: state.cold_loads,
            biggest: sizes
                .into_iter()
                .take(biggest)
                .map(|(bytes, p)| (p.to_string(), bytes))
                .collect(),
            used_memory: None,
        })
    }
}
