//! The production hot state on Redis: every edit is one Lua script call (one round trip), and fan-out uses one
//! pub/sub channel per project, subscribed only while this process has a client in it.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{Client, Script};
use tokio::sync::{mpsc, Mutex};
use tracing::Instrument;

use super::keys::{ProjectKeys, COLD_LOADS, DIRTY_INDEX, LEASE_INDEX, RESIDENT_INDEX, SIZE_INDEX};
use super::save_queue::SAVED_ORIGIN;
use super::{
    Applied, Bus, BusEvent, BusMessage, ChangeSet, Claim, DirtySummary, EditContext, EditRefusal,
    EditStore, Eviction, HotError, IdempotencyClaim, JournalEntry, JournalPage, LeaseClock,
    Reachable, Residency, SaveQueue, Snapshot, DEFAULT_JOURNAL_LEN,
};
use crate::cause::Cause;
use crate::error::{ErrorCode, Rejection};
use crate::ids::{ObjectId, ProjectId};
use crate::limits::Limits;
use crate::object::Edit;
use crate::protocol::json_string;
use crate::stored::{StoredObject, Tombstone};

const JSON_LUA: &str = include_str!("scripts/json.lua");

fn with_json(body: &str) -> Script {
    Script::new(&format!("{JSON_LUA}\n{body}"))
}

static EDIT: LazyLock<Script> = LazyLock::new(|| with_json(include_str!("scripts/edit.lua")));
static SNAPSHOT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/snapshot.lua")));
static JOURNAL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/journal.lua")));
static RAISE_SEQ: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/raise_seq.lua")));
static LOAD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/load.lua")));
static LOAD_CHUNK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/load_chunk.lua")));
static EVICT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/evict.lua")));
static HOLD_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/hold_back.lua")));
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/claim.lua")));
static READ_CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/read_claim.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/renew.lua")));
static COMPLETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/complete.lua")));
static ABANDON: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/abandon.lua")));
static DIRTY_SUMMARY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/dirty_summary.lua")));

/// How long one Redis command may take before the caller gets `unavailable`.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A project with at most this many objects and bytes is read in one script reply; a bigger one is copied and
/// paged, so that no reply is big enough to trip [`RESPONSE_TIMEOUT`] or to hold a whole big project twice.
const SNAPSHOT_WHOLE_OBJECTS: usize = 1000;
const SNAPSHOT_WHOLE_BYTES: usize = 1024 * 1024;
/// Objects asked for per page of a big snapshot (HSCAN's COUNT; an object is at most 64 KiB by default).
const SNAPSHOT_PAGE: usize = 100;
/// A cold load sends its objects in chunks of about this many bytes (each chunk one script call).
const LOAD_CHUNK_BYTES: usize = 1024 * 1024;

fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> HotError {
    HotError::Unavailable(Cause::new(err))
}

fn unavailable_because(text: impl Into<String>) -> HotError {
    HotError::Unavailable(Cause::described(text))
}

/// A failed edit call. Only what provably never ran is `Unavailable`: Redis answered with an error (the scripts
/// check everything before they write), or no connection could be made at all. Any other failure (the reply timed
/// out, the connection broke while the call was written or awaited) may have come after Redis ran the script, so
/// its outcome is unknown.
fn edit_failure(err: redis::RedisError) -> HotError {
    let never_ran = matches!(
        err.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    ) || err.is_connection_refusal();
    if never_ran {
        unavailable(err)
    } else {
        HotError::OutcomeUnknown(Cause::new(err))
    }
}

/// Redis-backed [`EditStore`] and [`SaveQueue`].
#[derive(Clone)]
pub struct RedisHotState {
    client: Client,
    conn: ConnectionManager,
    lease_clock: LeaseClock,
    /// Edits each project's journal keeps at least.
    journal_len: usize,
}

impl RedisHotState {
    /// Prepares a connection; it is made lazily and re-made by itself after an outage.
    pub fn connect(url: &str) -> Result<Self, HotError> {
        let client = Client::open(url).map_err(|e| {
            HotError::Unavailable(Cause::explained(format!("bad REDIS_URL {url:?}: {e}"), e))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        Ok(Self {
            client,
            conn,
            lease_clock: LeaseClock::store(),
            journal_len: DEFAULT_JOURNAL_LEN,
        })
    }

    /// Judges leases on `clock` instead of Redis' `TIME` (tests pin it to explicit times).
    pub fn with_lease_clock(mut self, clock: LeaseClock) -> Self {
        self.lease_clock = clock;
        self
    }

    /// Keeps at least `len` edits in each project's journal (0: no journal, every resume is a snapshot).
    pub fn with_journal_len(mut self, len: usize) -> Self {
        self.journal_len = len;
        self
    }

    /// The scripts' "now" argument: empty means "read Redis' `TIME`".
    fn lease_now_arg(&self) -> String {
        self.lease_clock
            .pinned_ms()
            .map(|ms| ms.to_string())
            .unwrap_or_default()
    }
}

fn refusal(status: &str, current_version: u64, edit: &Edit, limits: &Limits) -> HotError {
    match EditRefusal::from_script_status(status, current_version) {
        Some(refusal) => HotError::Rejected(refusal.to_rejection(edit.object_id(), limits)),
        None => HotError::Rejected(Rejection::new(
            ErrorCode::Internal,
            format!("unexpected script status {status:?}"),
        )),
    }
}

#[async_trait]
impl EditStore for RedisHotState {
    async fn apply(
        &self,
        project: &ProjectId,
        edit: &Edit,
        ctx: EditContext<'_>,
    ) -> Result<Applied, HotError> {
        let keys = ProjectKeys::new(project);
        let (op, body) = match edit {
            Edit::Create(object) => (
                "c",
                serde_json::to_string(&object.body).map_err(unavailable)?,
            ),
            Edit::Update { patch, .. } => {
                ("u", serde_json::to_string(&patch.0).map_err(unavailable)?)
            }
            Edit::Delete { .. } => ("d", String::new()),
        };
        let id = edit.object_id();
        let span = tracing::info_span!("redis.edit_script", project = %project, object = %id, op);
        let trace = span
            .in_scope(crate::telemetry::current_traceparent)
            .unwrap_or_default();
        let reply: Vec<String> = EDIT
            .key(&keys.objects)
            .key(&keys.mtimes)
            .key(&keys.meta)
            .key(&keys.changed)
            .key(DIRTY_INDEX)
            .key(&keys.journal)
            .key(RESIDENT_INDEX)
            .arg(op)
            .arg(id.as_str())
            .arg(json_string(id.as_str()))
            .arg(body)
            .arg(ctx.now_ms)
            .arg(json_string(ctx.by))
            .arg(ctx.origin)
            .arg(ctx.limits.max_object_bytes)
            .arg(ctx.limits.max_objects_per_project)
            .arg(&keys.channel)
            .arg(project.as_str())
            .arg(trace)
            .arg(edit.if_version().map(|v| v.to_string()).unwrap_or_default())
            .arg(self.journal_len)
            .arg(ctx.limits.max_project_bytes)
            .arg(ctx.seq_floor)
            .invoke_async(&mut self.conn.clone())
            .instrument(span)
            .await
            .map_err(edit_failure)?;
        let number = |i: usize| {
            reply
                .get(i)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let (version, seq) = (number(1), number(2));
        let status = reply.first().map(String::as_str).unwrap_or_default();
        match status {
            "ok" => Ok(Applied {
                id: id.clone(),
                version: (!matches!(edit, Edit::Delete { .. })).then_some(version),
                seq,
                object: reply.get(3).filter(|body| !body.is_empty()).cloned(),
            }),
            "not_loaded" => Err(HotError::NotLoaded),
            other => Err(refusal(other, version, edit, ctx.limits)),
        }
    }

    async fn snapshot(&self, project: &ProjectId) -> Result<Snapshot, HotError> {
        let keys = ProjectKeys::new(project);
        let copy = ProjectKeys::snapshot_copy(project, &uuid::Uuid::new_v4().simple().to_string());
        let mut conn = self.conn.clone();
        let reply: Option<Vec<String>> = SNAPSHOT
            .key(&keys.objects)
            .key(&keys.meta)
            .key(RESIDENT_INDEX)
            .key(&copy)
            .arg(crate::time::now_ms())
            .arg(project.as_str())
            .arg(SNAPSHOT_WHOLE_OBJECTS)
            .arg(SNAPSHOT_WHOLE_BYTES)
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let mut reply = reply.ok_or(HotError::NotLoaded)?.into_iter();
        let mut number = |name: &str| {
            reply
                .next()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| unavailable_because(format!("snapshot reply had no {name}")))
        };
        let seq = number("seq")?;
        let saved_seq = number("savedSeq")?;
        let objects = match reply.next().as_deref() {
            Some("whole") => reply.collect(),
            Some("copied") => {
                let paged = page_copy(&mut conn, &copy).await;
                let _ = redis::cmd("DEL")
                    .arg(&copy)
                    .query_async::<()>(&mut conn)
                    .await;
                paged?
            }
            other => {
                return Err(unavailable_because(format!(
                    "unexpected snapshot reply {other:?}"
                )))
            }
        };
        Ok(Snapshot {
            seq,
            saved_seq,
            objects,
        })
    }

    async fn journal_after(
        &self,
        project: &ProjectId,
        after: u64,
        max: usize,
    ) -> Result<JournalPage, HotError> {
        let keys = ProjectKeys::new(project);
        type Entries = Vec<(String, Vec<(String, String)>)>;
        let reply: Option<(u64, u64, Entries)> = JOURNAL
            .key(&keys.meta)
            .key(&keys.journal)
            .arg(after)
            .arg(max.max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let (seq, saved_seq, raw) = reply.ok_or(HotError::NotLoaded)?;
        let entries = raw
            .into_iter()
            .map(|(id, fields)| {
                let seq = id
                    .split_once('-')
                    .and_then(|(seq, _)| seq.parse().ok())
                    .ok_or_else(|| {
                        unavailable_because(format!("journal entry id {id:?} is not a seq"))
                    })?;
                let mut origin = String::new();
                let mut frame = None;
                for (name, value) in fields {
                    match name.as_str() {
                        "o" => origin = value,
                        "f" => frame = Some(Arc::from(value)),
                        _ => {}
                    }
                }
                let frame = frame.ok_or_else(|| {
                    unavailable_because(format!("journal entry {id} has no frame"))
                })?;
                Ok(JournalEntry { seq, origin, frame })
            })
            .collect::<Result<Vec<_>, HotError>>()?;
        Ok(JournalPage::new(after, seq, saved_seq, entries))
    }

    async fn raise_seq(&self, project: &ProjectId, floor: u64) -> Result<u64, HotError> {
        let keys = ProjectKeys::new(project);
        let seq: Option<u64> = RAISE_SEQ
            .key(&keys.meta)
            .arg(floor)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        seq.ok_or(HotError::NotLoaded)
    }

    async fn load(
        &self,
        project: &ProjectId,
        objects: &[StoredObject],
        seq_floor: u64,
        stamp_floor: i64,
    ) -> Result<bool, HotError> {
        let keys = ProjectKeys::new(project);
        let newest = objects
            .iter()
            .map(|o| o.updated_at)
            .fold(stamp_floor, i64::max);
        let mut conn = self.conn.clone();
        let mut chunk: Vec<(&ObjectId, String, i64)> = Vec::new();
        let (mut chunk_bytes, mut total_bytes) = (0usize, 0usize);
        for object in objects {
            // The edit script's merge reads compact JSON only: re-encode whatever layout the store gave us.
            let Ok(body) =
                serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&object.json)
            else {
                tracing::warn!(%project, object = %object.id, "skipping a stored object that is not a JSON object");
                continue;
            };
            let compact = serde_json::to_string(&body).map_err(unavailable)?;
            chunk_bytes += compact.len();
            total_bytes += compact.len();
            chunk.push((&object.id, compact, object.updated_at));
            if chunk_bytes >= LOAD_CHUNK_BYTES {
                // Staged out of sight until the last step installs meta; stops once someone else installed it.
                let mut invocation = LOAD_CHUNK.key(&keys.objects);
                invocation.key(&keys.mtimes).key(&keys.meta);
                for (id, json, stamp) in chunk.drain(..) {
                    invocation.arg(id.as_str()).arg(json).arg(stamp);
                }
                chunk_bytes = 0;
                let staged: i64 = invocation
                    .invoke_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                if staged == 0 {
                    return Ok(false);
                }
            }
        }
        let mut invocation = LOAD.key(&keys.objects);
        invocation
            .key(&keys.mtimes)
            .key(&keys.meta)
            .key(RESIDENT_INDEX)
            .key(SIZE_INDEX)
            .key(COLD_LOADS)
            .arg(seq_floor)
            .arg(crate::time::now_ms())
            .arg(newest)
            .arg(project.as_str())
            .arg(total_bytes);
        for (id, json, stamp) in chunk {
            invocation.arg(id.as_str()).arg(json).arg(stamp);
        }
        let loaded: i64 = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(loaded == 1)
    }

    async fn mark_present(
        &self,
        gateway: &str,
        projects: &[ProjectId],
        until_ms: i64,
        ttl_ms: u64,
    ) -> Result<(), HotError> {
        if projects.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for project in projects {
            let present = ProjectKeys::new(project).present;
            pipe.cmd("HSET")
                .arg(&present)
                .arg(gateway)
                .arg(until_ms)
                .ignore();
            pipe.cmd("PEXPIRE").arg(&present).arg(ttl_ms).ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn mark_absent(&self, gateway: &str, project: &ProjectId) -> Result<(), HotError> {
        redis::cmd("HDEL")
            .arg(ProjectKeys::new(project).present)
            .arg(gateway)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn publish_ephemeral(
        &self,
        project: &ProjectId,
        origin: &str,
        frame: &str,
    ) -> Result<(), HotError> {
        let channel = ProjectKeys::new(project).channel;
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(format!("{origin}\n0\n\n{frame}"))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn claim_idempotency(
        &self,
        project: &ProjectId,
        user: &str,
        key: &str,
        ttl_ms: u64,
    ) -> Result<IdempotencyClaim, HotError> {
        let name = ProjectKeys::idempotency(project, user, key);
        let mut conn = self.conn.clone();
        let claimed: Option<String> = redis::cmd("SET")
            .arg(&name)
            .arg("")
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        if claimed.is_some() {
            return Ok(IdempotencyClaim::Claimed);
        }
        let held: Option<String> = redis::cmd("GET")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        Ok(match held {
            Some(response) if !response.is_empty() => IdempotencyClaim::Done(response),
            // Empty: its request is still running. Gone: it expired in between, which a retry soon sorts out.
            _ => IdempotencyClaim::InFlight,
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
        let command = match response {
            Some(response) => {
                let mut set = redis::cmd("SET");
                set.arg(&name).arg(response).arg("PX").arg(ttl_ms);
                set
            }
            None => {
                let mut del = redis::cmd("DEL");
                del.arg(&name);
                del
            }
        };
        command
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    fn open_bus(&self, events: mpsc::Sender<BusEvent>) -> Arc<dyn Bus> {
        let bus = Arc::new(RedisBus {
            client: self.client.clone(),
            state: Mutex::new(BusState::default()),
            reset: tokio::sync::Notify::new(),
        });
        tokio::spawn(run_bus(Arc::clone(&bus), events));
        bus
    }
}

#[async_trait]
impl Reachable for RedisHotState {
    async fn ping(&self) -> Result<(), HotError> {
        redis::cmd("PING")
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl SaveQueue for RedisHotState {
    async fn claim_dirty(
        &self,
        owner: &str,
        max: usize,
        lease_ms: u64,
    ) -> Result<Vec<Claim>, HotError> {
        let token_prefix = format!("{owner}:{}", uuid::Uuid::new_v4().simple());
        let rows: Vec<(String, String, i64, u64)> = CLAIM
            .key(DIRTY_INDEX)
            .key(LEASE_INDEX)
            .arg(self.lease_now_arg())
            .arg(lease_ms)
            .arg(token_prefix)
            .arg(max)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .filter_map(|(project, token, dirty_since, seq)| {
                ProjectId::parse(project).ok().map(|project| Claim {
                    project,
                    token,
                    dirty_since,
                    seq,
                })
            })
            .collect())
    }

    async fn read_claim_page(
        &self,
        claim: &Claim,
        cursor: &super::ClaimCursor,
        bounds: super::PageBounds,
    ) -> Result<super::ClaimPage, HotError> {
        let keys = ProjectKeys::new(&claim.project);
        // The cursor is "<SSCAN cursor> <ids of its batch already read>", as the script returned it.
        let (scan, skip) = cursor.0.split_once(' ').unwrap_or(("0", "0"));
        type Reply = (
            String,
            u64,
            Vec<String>,
            Vec<Option<String>>,
            Vec<Option<i64>>,
        );
        let (next, next_skip, ids, jsons, mtimes): Reply = READ_CLAIM
            .key(&keys.saving)
            .key(&keys.objects)
            .key(&keys.mtimes)
            .key(&keys.meta)
            .arg(scan)
            .arg(skip)
            .arg(bounds.max_items.max(1))
            .arg(bounds.max_bytes)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let mut changes = ChangeSet::default();
        for ((id, json), stamp) in ids.into_iter().zip(jsons).zip(mtimes) {
            let Ok(id) = ObjectId::parse(id) else {
                continue;
            };
            let stamp = stamp.unwrap_or(0);
            match json {
                Some(json) => changes.upserts.push(StoredObject {
                    id,
                    json,
                    updated_at: stamp,
                }),
                None => changes.deletes.push(Tombstone { id, stamp }),
            }
        }
        let next = (!next.is_empty()).then(|| super::ClaimCursor(format!("{next} {next_skip}")));
        Ok(super::ClaimPage { changes, next })
    }

    async fn renew_claim(&self, claim: &Claim, lease_ms: u64) -> Result<bool, HotError> {
        let keys = ProjectKeys::new(&claim.project);
        let renewed: i64 = RENEW
            .key(&keys.lease)
            .key(LEASE_INDEX)
            .arg(&claim.token)
            .arg(claim.project.as_str())
            .arg(lease_ms)
            .arg(self.lease_now_arg())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(renewed == 1)
    }

    async fn complete_claim(&self, claim: &Claim) -> Result<bool, HotError> {
        let keys = ProjectKeys::new(&claim.project);
        let done: i64 = COMPLETE
            .key(&keys.saving)
            .key(&keys.lease)
            .key(LEASE_INDEX)
            .key(&keys.meta)
            .key(&keys.objects)
            .key(&keys.mtimes)
            .key(&keys.changed)
            .key(&keys.refused)
            .key(SIZE_INDEX)
            .arg(&claim.token)
            .arg(claim.project.as_str())
            .arg(claim.seq)
            .arg(&keys.channel)
            .arg(SAVED_ORIGIN)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(done == 1)
    }

    async fn abandon_claim(&self, claim: &Claim) -> Result<(), HotError> {
        let keys = ProjectKeys::new(&claim.project);
        ABANDON
            .key(&keys.changed)
            .key(&keys.saving)
            .key(&keys.lease)
            .key(LEASE_INDEX)
            .key(DIRTY_INDEX)
            .arg(&claim.token)
            .arg(claim.project.as_str())
            .arg(claim.dirty_since)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn dirty_summary(&self) -> Result<DirtySummary, HotError> {
        let (count, oldest, project_ids): (usize, i64, Vec<String>) = DIRTY_SUMMARY
            .key(DIRTY_INDEX)
            .key(LEASE_INDEX)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(DirtySummary {
            count,
            oldest_modification: (oldest >= 0).then_some(oldest),
            project_ids,
        })
    }

    async fn hold_back(
        &self,
        claim: &Claim,
        refused: &[(ObjectId, i64)],
    ) -> Result<bool, HotError> {
        let keys = ProjectKeys::new(&claim.project);
        let mut invocation = HOLD_BACK.key(&keys.lease);
        invocation.key(&keys.refused).arg(&claim.token);
        for (id, stamp) in refused {
            invocation.arg(id.as_str()).arg(stamp);
        }
        let held: i64 = invocation
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(held == 1)
    }

    async fn idle_projects(
        &self,
        idle_before_ms: i64,
        max: usize,
    ) -> Result<Vec<ProjectId>, HotError> {
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(RESIDENT_INDEX)
            .arg("-inf")
            .arg(idle_before_ms)
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(max)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(ids
            .into_iter()
            .filter_map(|id| ProjectId::parse(id).ok())
            .collect())
    }

    async fn evict(
        &self,
        project: &ProjectId,
        idle_before_ms: i64,
        now_ms: i64,
        persisted_seq: u64,
    ) -> Result<Eviction, HotError> {
        let keys = ProjectKeys::new(project);
        let mut invocation = EVICT.key(RESIDENT_INDEX);
        invocation
            .key(DIRTY_INDEX)
            .key(LEASE_INDEX)
            .key(SIZE_INDEX)
            .key(&keys.meta)
            .key(&keys.changed)
            .key(&keys.saving)
            .key(&keys.lease)
            .key(&keys.present)
            .key(&keys.refused);
        for key in keys.all() {
            invocation.key(key);
        }
        let (status, seq): (String, u64) = invocation
            .arg(project.as_str())
            .arg(idle_before_ms)
            .arg(now_ms)
            .arg(persisted_seq)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(match status.as_str() {
            "evicted" => Eviction::Evicted { seq },
            "unpersisted" => Eviction::Unpersisted { seq },
            "gone" => Eviction::Gone,
            _ => Eviction::Busy,
        })
    }

    async fn residency(&self, biggest: usize) -> Result<Residency, HotError> {
        let mut conn = self.conn.clone();
        let (resident, cold_loads, sizes, info): (u64, Option<u64>, Vec<(String, f64)>, String) =
            redis::pipe()
                .cmd("ZCARD")
                .arg(RESIDENT_INDEX)
                .cmd("GET")
                .arg(COLD_LOADS)
                .cmd("ZRANGE")
                .arg(SIZE_INDEX)
                .arg(0)
                .arg(biggest.saturating_sub(1))
                .arg("REV")
                .arg("WITHSCORES")
                .cmd("INFO")
                .arg("memory")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
        let used_memory = info.lines().find_map(|line| {
            line.strip_prefix("used_memory:")
                .and_then(|v| v.trim().parse().ok())
        });
        Ok(Residency {
            resident,
            cold_loads: cold_loads.unwrap_or(0),
            biggest: if biggest == 0 {
                Vec::new()
            } else {
                sizes
                    .into_iter()
                    .map(|(id, bytes)| (id, bytes as u64))
                    .collect()
            },
            used_memory,
        })
    }
}

/// Pages through a snapshot's copy of a project's objects (HSCAN may repeat a field; each is kept once), and
/// checks that the copy was still whole when read.
async fn page_copy(conn: &mut ConnectionManager, copy: &str) -> Result<Vec<String>, HotError> {
    let mut seen = HashSet::new();
    let mut objects = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<(String, String)>) = redis::cmd("HSCAN")
            .arg(copy)
            .arg(cursor)
            .arg("COUNT")
            .arg(SNAPSHOT_PAGE)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        for (id, json) in page {
            if seen.insert(id) {
                objects.push(json);
            }
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let left: usize = redis::cmd("HLEN")
        .arg(copy)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    if left != objects.len() {
        return Err(unavailable_because(
            "a snapshot's copy expired while it was read",
        ));
    }
    Ok(objects)
}

/// One pub/sub connection per process, with the set of channels it should be subscribed to.
struct RedisBus {
    client: Client,
    state: Mutex<BusState>,
    /// Rings when a subscribe failed on a connection that looks alive: the connection is then dropped and
    /// rebuilt, which subscribes every wanted channel again and tells the gateway to resync its clients.
    reset: tokio::sync::Notify,
}

#[derive(Default)]
struct BusState {
    channels: HashSet<String>,
    /// Present while connected.
    sink: Option<PubSubSink>,
}

#[async_trait]
impl Bus for RedisBus {
    async fn subscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        let channel = ProjectKeys::new(project).channel;
        let mut state = self.state.lock().await;
        state.channels.insert(channel.clone());
        // While disconnected the reconnect loop subscribes every wanted channel.
        let Some(sink) = state.sink.as_mut() else {
            return Err(unavailable_because("pub/sub is reconnecting"));
        };
        let failed = match tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(&channel)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => unavailable(e),
            Err(_) => unavailable_because("pub/sub subscribe timed out"),
        };
        // Without a reconnect nothing would retry this channel, and its clients would miss broadcasts unnoticed.
        state.sink = None;
        self.reset.notify_one();
        Err(failed)
    }

    async fn unsubscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        let channel = ProjectKeys::new(project).channel;
        let mut state = self.state.lock().await;
        state.channels.remove(&channel);
        let Some(sink) = state.sink.as_mut() else {
            return Ok(());
        };
        if !matches!(
            tokio::time::timeout(RESPONSE_TIMEOUT, sink.unsubscribe(&channel)).await,
            Ok(Ok(()))
        ) {
            // A connection that does not answer may be half-open: nothing would notice until a subscribe, and
            // its subscribers would miss broadcasts meanwhile. Rebuilding it resubscribes what is wanted.
            state.sink = None;
            self.reset.notify_one();
        }
        Ok(())
    }
}

fn parse_message(msg: &redis::Msg) -> Option<BusMessage> {
    let project = ProjectKeys::project_of_channel(msg.get_channel_name())?;
    let payload = std::str::from_utf8(msg.get_payload_bytes()).ok()?;
    let (origin, rest) = payload.split_once('\n')?;
    let (seq, rest) = rest.split_once('\n')?;
    let (trace, frame) = rest.split_once('\n')?;
    Some(BusMessage {
        project,
        origin: origin.to_string(),
        seq: seq.parse().ok()?,
        frame: Arc::from(frame),
        trace: (!trace.is_empty()).then(|| trace.to_string()),
    })
}

/// Keeps the pub/sub connection alive: connects, (re)subscribes every wanted channel, forwards messages, and
/// reports losses so the owner can resend snapshots. Ends when the receiver of `events` is dropped.
async fn run_bus(bus: Arc<RedisBus>, events: mpsc::Sender<BusEvent>) {
    let mut delay = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        if events.is_closed() {
            return;
        }
        let pubsub =
            match tokio::time::timeout(RESPONSE_TIMEOUT, bus.client.get_async_pubsub()).await {
                Ok(Ok(p)) => p,
                _ => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
        let (mut sink, mut stream) = pubsub.split();
        let resubscribed = {
            let mut state = bus.state.lock().await;
            let channels: Vec<String> = state.channels.iter().cloned().collect();
            let mut ok = true;
            for channel in &channels {
                if !matches!(
                    tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(channel)).await,
                    Ok(Ok(()))
                ) {
                    ok = false;
                    break;
                }
            }
            if ok {
                state.sink = Some(sink);
            }
            ok
        };
        if !resubscribed {
            tokio::time::sleep(delay).await;
            continue;
        }
        delay = Duration::from_millis(50);
        // Also after the first connect: a client that joined before it missed what was published until now.
        let event = if connected_before {
            tracing::info!("pub/sub reconnected; subscriptions restored");
            BusEvent::Resubscribed
        } else {
            BusEvent::Connected
        };
        if events.send(event).await.is_err() {
            return;
        }
        connected_before = true;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        if let Some(message) = parse_message(&msg) {
                            if events.send(BusEvent::Message(message)).await.is_err() {
                                return;
                            }
                        }
                    }
                    None => break,
                },
                _ = bus.reset.notified() => break,
                _ = events.closed() => return,
            }
        }
        bus.state.lock().await.sink = None;
        tracing::warn!("pub/sub connection lost; reconnecting");
        if events.send(BusEvent::Disconnected).await.is_err() {
            return;
        }
    }
}
