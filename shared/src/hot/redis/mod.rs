//! The production hot state on Redis: every edit is one Lua script call (one round trip), and fan-out uses one
//! pub/sub channel per project, subscribed only while this process has a client in it.
//!
//! The same code runs on one Redis and on a Redis Cluster ([`RedisTarget`]): every script touches the keys of one
//! slot, all passed in KEYS (see [`super::keys`] for the layout), and what spans projects (claiming, metrics,
//! eviction) walks the buckets.

mod bus;
mod connection;
mod migrate;
mod object_cache;
mod outlet;
mod raw_merge;
mod sharded_bus;
mod subscriptions;

pub use crate::config::RedisTarget;
pub use migrate::{migrate_to_buckets, MigrationReport};

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use futures_util::{stream, StreamExt, TryStreamExt};
use redis::{Client, Script};
use tokio::sync::mpsc;
use tracing::Instrument;

use self::connection::RedisConn;
pub use self::object_cache::DEFAULT_OBJECT_CACHE_BYTES;
use self::object_cache::{ObjectCache, Seen};
use self::outlet::Outlet;
use super::keys::{BucketKeys, ProjectKeys};
use super::save_queue::SAVED_ORIGIN;
use super::{
    Applied, Bus, BusEvent, ChangeSet, Claim, DirtySummary, EditContext, EditRefusal, EditStore,
    Eviction, HotError, IdempotencyClaim, JournalEntry, JournalPage, LeaseClock, Reachable,
    Residency, SaveQueue, Snapshot, UpdateMerges, DEFAULT_JOURNAL_LEN,
};
use crate::cause::Cause;
use crate::error::{ErrorCode, Rejection};
use crate::ids::{ObjectId, ProjectId};
use crate::limits::Limits;
use crate::object::Edit;
use crate::protocol::json_string;
use crate::stored::{StoredObject, Tombstone};

const JSON_LUA: &str = include_str!("../scripts/json.lua");

fn with_json(body: &str) -> Script {
    Script::new(&format!("{JSON_LUA}\n{body}"))
}

static EDIT: LazyLock<Script> = LazyLock::new(|| with_json(include_str!("../scripts/edit.lua")));
static SNAPSHOT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/snapshot.lua")));
static JOURNAL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/journal.lua")));
static RAISE_SEQ: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/raise_seq.lua")));
static LOAD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../scripts/load.lua")));
static LOAD_CHUNK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/load_chunk.lua")));
static EVICT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/evict.lua")));
static HOLD_BACK: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/hold_back.lua")));
static CLAIMABLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/claimable.lua")));
static CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/claim.lua")));
static READ_CLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/read_claim.lua")));
static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/renew.lua")));
static COMPLETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/complete.lua")));
static ABANDON: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/abandon.lua")));
static DIRTY_SUMMARY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../scripts/dirty_summary.lua")));

/// Buckets asked at once when a call walks them all (claims, metrics, eviction).
const BUCKET_CONCURRENCY: usize = 16;

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
    target: RedisTarget,
    conn: RedisConn,
    lease_clock: LeaseClock,
    /// Edits each project's journal keeps at least.
    journal_len: usize,
    /// What this process last saw of the objects it edits or follows: updates are merged here when it is current.
    objects: Arc<ObjectCache>,
    merges: Arc<MergeCounts>,
}

/// Where the updates of this process were merged: here, against the object's text the script found unchanged, or
/// by the script.
#[derive(Debug, Default)]
struct MergeCounts {
    here: AtomicU64,
    by_script: AtomicU64,
}

impl RedisHotState {
    /// A single Redis at `url`; see [`RedisHotState::open`].
    pub fn connect(url: &str) -> Result<Self, HotError> {
        Self::open(url)
    }

    /// Prepares a connection to a single Redis or a cluster; it is made lazily and re-made by itself after an
    /// outage.
    pub fn open(target: impl Into<RedisTarget>) -> Result<Self, HotError> {
        let target = target.into();
        let conn = RedisConn::open(&target)?;
        Ok(Self {
            target,
            conn,
            lease_clock: LeaseClock::store(),
            journal_len: DEFAULT_JOURNAL_LEN,
            objects: Arc::new(ObjectCache::new(DEFAULT_OBJECT_CACHE_BYTES)),
            merges: Arc::default(),
        })
    }

    /// How the scripts publish: sharded on a cluster, so that a message only travels within its shard.
    fn publish_command(&self) -> &'static str {
        if self.target.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Runs one command per bucket (`command_for`; a call of `script` when it is one) and gathers the replies in
    /// bucket order: in one pipeline on a single Redis, a few at a time on a cluster (a pipeline there runs on
    /// one slot only).
    async fn each_bucket<T: redis::FromRedisValue>(
        &self,
        script: Option<&Script>,
        command_for: impl Fn(&'static BucketKeys) -> redis::Cmd,
    ) -> Result<Vec<T>, HotError> {
        let commands: Vec<redis::Cmd> = BucketKeys::all().iter().map(command_for).collect();
        let replies: Vec<redis::Value> = match &self.conn {
            RedisConn::Single(_) => {
                let mut pipe = redis::pipe();
                for command in &commands {
                    pipe.add_command(command.clone());
                }
                with_script_loaded(&self.conn, script, |mut conn| {
                    let pipe = pipe.clone();
                    async move { pipe.query_async(&mut conn).await }
                })
                .await?
            }
            RedisConn::Cluster(_) => {
                stream::iter(commands)
                    .map(|command| async move {
                        with_script_loaded(&self.conn, script, |mut conn| {
                            let command = command.clone();
                            async move { command.query_async(&mut conn).await }
                        })
                        .await
                    })
                    .buffered(BUCKET_CONCURRENCY)
                    .try_collect()
                    .await?
            }
        };
        replies
            .into_iter()
            .map(|reply| redis::from_redis_value(reply).map_err(unavailable))
            .collect()
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

    /// Keeps at most about `bytes` of object text for merging updates here (0: every update is merged by Redis).
    pub fn with_object_cache_bytes(mut self, bytes: u64) -> Self {
        self.objects = Arc::new(ObjectCache::new(bytes));
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
        let id = edit.object_id();
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
        // When the stored text is still the one this process last saw, the script only writes this merge of it.
        let here = self.objects.merge_here(project, edit, &body);
        let (against, result, result_version) = here.as_ref().map_or(("", "", 0), |h| {
            (&*h.against, h.result.as_deref().unwrap_or(""), h.version)
        });
        let span = tracing::info_span!("redis.edit_script", project = %project, object = %id, op);
        let trace = span
            .in_scope(crate::telemetry::current_traceparent)
            .unwrap_or_default();
        let reply: Vec<String> = EDIT
            .key(&keys.objects)
            .key(&keys.mtimes)
            .key(&keys.meta)
            .key(&keys.changed)
            .key(&keys.bucket.dirty)
            .key(&keys.journal)
            .key(&keys.bucket.resident)
            .key(&keys.channel)
            .arg(op)
            .arg(id.as_str())
            .arg(json_string(id.as_str()))
            .arg(&body)
            .arg(ctx.now_ms)
            .arg(json_string(ctx.by))
            .arg(ctx.origin)
            .arg(ctx.limits.max_object_bytes)
            .arg(ctx.limits.max_objects_per_project)
            .arg(self.publish_command())
            .arg(project.as_str())
            .arg(trace)
            .arg(edit.if_version().map(|v| v.to_string()).unwrap_or_default())
            .arg(self.journal_len)
            .arg(ctx.limits.max_project_bytes)
            .arg(ctx.seq_floor)
            .arg(against)
            .arg(result)
            .arg(result_version)
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
        if status != "ok" {
            if here.is_some() {
                // Refused, or not loaded: what this process holds may be why; the next edit learns afresh.
                self.objects.deleted(project, id);
            }
            return Err(match status {
                "not_loaded" => HotError::NotLoaded,
                other => refusal(other, version, edit, ctx.limits),
            });
        }
        let by_caller = reply.get(4).is_some_and(|m| m == "caller");
        let object = if by_caller {
            here.and_then(|h| h.result)
        } else {
            reply.get(3).filter(|body| !body.is_empty()).cloned()
        };
        if matches!(edit, Edit::Update { .. }) {
            let counter = if by_caller {
                &self.merges.here
            } else {
                &self.merges.by_script
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        match &object {
            Some(text) => self.objects.applied(
                project,
                id,
                Seen {
                    seq,
                    version,
                    text: Arc::from(text.as_str()),
                },
                !by_caller,
            ),
            None => self.objects.deleted(project, id),
        }
        Ok(Applied {
            id: id.clone(),
            version: (!matches!(edit, Edit::Delete { .. })).then_some(version),
            seq,
            object,
        })
    }

    async fn snapshot(&self, project: &ProjectId) -> Result<Snapshot, HotError> {
        let keys = ProjectKeys::new(project);
        let copy = ProjectKeys::snapshot_copy(project, &uuid::Uuid::new_v4().simple().to_string());
        let mut conn = self.conn.clone();
        let reply: Option<Vec<String>> = SNAPSHOT
            .key(&keys.objects)
            .key(&keys.meta)
            .key(&keys.bucket.resident)
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
            .key(&keys.bucket.resident)
            .key(&keys.bucket.sizes)
            .key(&keys.bucket.cold_loads)
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
        // One pipeline per bucket: a cluster runs a pipeline on one slot only.
        let mut by_bucket: HashMap<usize, redis::Pipeline> = HashMap::new();
        for project in projects {
            let keys = ProjectKeys::new(project);
            let pipe = by_bucket
                .entry(keys.bucket.bucket)
                .or_insert_with(redis::pipe);
            pipe.cmd("HSET")
                .arg(&keys.present)
                .arg(gateway)
                .arg(until_ms)
                .ignore();
            pipe.cmd("PEXPIRE").arg(&keys.present).arg(ttl_ms).ignore();
        }
        stream::iter(by_bucket.into_values())
            .map(|pipe| {
                let mut conn = self.conn.clone();
                async move { pipe.query_async::<()>(&mut conn).await.map_err(unavailable) }
            })
            .buffer_unordered(BUCKET_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
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
        redis::cmd(self.publish_command())
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

    fn update_merges(&self) -> UpdateMerges {
        UpdateMerges {
            here: self.merges.here.load(Ordering::Relaxed),
            by_script: self.merges.by_script.load(Ordering::Relaxed),
        }
    }

    fn open_bus(&self, events: mpsc::Sender<BusEvent>) -> Arc<dyn Bus> {
        let outlet = Outlet::new(events, Arc::clone(&self.objects));
        match &self.target {
            RedisTarget::Single { url } => match Client::open(url.as_str()) {
                Ok(client) => bus::open(client, outlet),
                // Unreachable in practice: the same URL opened the store's own connection.
                Err(e) => bus::broken(unavailable(e)),
            },
            RedisTarget::Cluster { nodes } => sharded_bus::open(nodes, outlet),
        }
    }
}

#[async_trait]
impl Reachable for RedisHotState {
    async fn ping(&self) -> Result<(), HotError> {
        let mut conn = self.conn.clone();
        conn.ping().await.map_err(unavailable)?;
        if self.target.sharded() {
            // A node that answers is not enough: the cluster serves every slot only when its state is ok.
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                return Err(unavailable_because("the Redis Cluster's state is not ok"));
            }
        }
        Ok(())
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
        let now = self.lease_now_arg();
        // Every bucket says what it holds; the oldest of all are then claimed one by one, each claim re-checking
        // atomically (another saver may have taken it in between).
        let max_text = max.to_string();
        let found: Vec<(Vec<String>, Vec<f64>, usize)> = self
            .each_bucket(Some(&CLAIMABLE), |bucket| {
                evalsha(
                    &CLAIMABLE,
                    &[&bucket.dirty, &bucket.leases],
                    &[&now, &max_text],
                )
            })
            .await?;
        // Expired leases first, longest expired first; then dirty projects, oldest change first.
        let mut candidates: Vec<(bool, f64, String)> = found
            .into_iter()
            .flat_map(|(ids, scores, leases)| {
                ids.into_iter()
                    .zip(scores)
                    .enumerate()
                    .map(move |(i, (id, score))| (i >= leases, score, id))
            })
            .collect();
        candidates.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(a.1.total_cmp(&b.1))
                .then_with(|| a.2.cmp(&b.2))
        });
        let mut claims = Vec::new();
        for (_, _, id) in candidates {
            if claims.len() >= max {
                break;
            }
            let Ok(project) = ProjectId::parse(id) else {
                continue;
            };
            let token = format!("{token_prefix}:{}", claims.len() + 1);
            if let Some(claim) = self.claim_one(project, token, &now, lease_ms).await? {
                claims.push(claim);
            }
        }
        Ok(claims)
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
            .key(&keys.bucket.leases)
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
            .key(&keys.bucket.leases)
            .key(&keys.meta)
            .key(&keys.objects)
            .key(&keys.mtimes)
            .key(&keys.changed)
            .key(&keys.refused)
            .key(&keys.bucket.sizes)
            .key(&keys.bucket.saving)
            .key(&keys.channel)
            .arg(&claim.token)
            .arg(claim.project.as_str())
            .arg(claim.seq)
            .arg(self.publish_command())
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
            .key(&keys.bucket.leases)
            .key(&keys.bucket.dirty)
            .key(&keys.bucket.saving)
            .arg(&claim.token)
            .arg(claim.project.as_str())
            .arg(claim.dirty_since)
            .invoke_async::<i64>(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn dirty_summary(&self) -> Result<DirtySummary, HotError> {
        let buckets: Vec<(usize, Vec<(String, i64)>)> = self
            .each_bucket(Some(&DIRTY_SUMMARY), |bucket| {
                evalsha(&DIRTY_SUMMARY, &[&bucket.dirty, &bucket.saving], &[])
            })
            .await?;
        let mut count = 0;
        let mut oldest: Vec<(String, i64)> = Vec::new();
        for (in_bucket, entries) in buckets {
            count += in_bucket;
            oldest.extend(entries);
        }
        // Each bucket's 100 oldest hold the 100 oldest of all.
        oldest.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        oldest.truncate(100);
        Ok(DirtySummary {
            count,
            oldest_modification: oldest.first().map(|(_, since)| *since),
            project_ids: oldest.into_iter().map(|(id, _)| id).collect(),
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
        let buckets: Vec<Vec<(String, f64)>> = self
            .each_bucket(None, |bucket| {
                let mut range = redis::cmd("ZRANGE");
                range
                    .arg(&bucket.resident)
                    .arg("-inf")
                    .arg(idle_before_ms)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(max)
                    .arg("WITHSCORES");
                range
            })
            .await?;
        let mut idle: Vec<(String, f64)> = buckets.into_iter().flatten().collect();
        idle.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        Ok(idle
            .into_iter()
            .take(max)
            .filter_map(|(id, _)| ProjectId::parse(id).ok())
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
        let mut invocation = EVICT.key(&keys.bucket.resident);
        invocation
            .key(&keys.bucket.dirty)
            .key(&keys.bucket.leases)
            .key(&keys.bucket.sizes)
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
        let one_key = |name: &'static str, key: fn(&BucketKeys) -> &str| {
            move |bucket: &'static BucketKeys| {
                let mut command = redis::cmd(name);
                command.arg(key(bucket));
                command
            }
        };
        let resident: Vec<u64> = self
            .each_bucket(None, one_key("ZCARD", |b| &b.resident))
            .await?;
        let cold_loads: Vec<Option<u64>> = self
            .each_bucket(None, one_key("GET", |b| &b.cold_loads))
            .await?;
        let biggest_by_bucket: Vec<Vec<(String, f64)>> = if biggest == 0 {
            Vec::new()
        } else {
            self.each_bucket(None, |bucket| {
                let mut range = redis::cmd("ZRANGE");
                range
                    .arg(&bucket.sizes)
                    .arg(0)
                    .arg(biggest - 1)
                    .arg("REV")
                    .arg("WITHSCORES");
                range
            })
            .await?
        };
        let buckets = resident
            .into_iter()
            .zip(cold_loads)
            .zip(
                biggest_by_bucket
                    .into_iter()
                    .chain(std::iter::repeat_with(Vec::new)),
            )
            .map(|((resident, cold), sizes)| (resident, cold, sizes));
        let mut residency = Residency {
            used_memory: self.conn.used_memory().await,
            ..Residency::default()
        };
        let mut sizes = Vec::new();
        for (resident, cold_loads, biggest_here) in buckets {
            residency.resident += resident;
            residency.cold_loads += cold_loads.unwrap_or(0);
            sizes.extend(biggest_here);
        }
        if biggest > 0 {
            sizes.sort_by(|a, b| b.1.total_cmp(&a.1));
            residency.biggest = sizes
                .into_iter()
                .take(biggest)
                .map(|(id, bytes)| (id, bytes as u64))
                .collect();
        }
        Ok(residency)
    }
}

impl RedisHotState {
    /// Claims one project found claimable, if it still is.
    async fn claim_one(
        &self,
        project: ProjectId,
        token: String,
        now: &str,
        lease_ms: u64,
    ) -> Result<Option<Claim>, HotError> {
        let keys = ProjectKeys::new(&project);
        let claimed: Option<(String, i64, u64)> = CLAIM
            .key(&keys.bucket.dirty)
            .key(&keys.bucket.leases)
            .key(&keys.bucket.saving)
            .key(&keys.changed)
            .key(&keys.saving)
            .key(&keys.lease)
            .key(&keys.meta)
            .arg(now)
            .arg(lease_ms)
            .arg(&token)
            .arg(project.as_str())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(claimed.map(|(token, dirty_since, seq)| Claim {
            project,
            token,
            dirty_since,
            seq,
        }))
    }
}

/// `EVALSHA` of `script` on `keys` and `args`, as a plain command (for pipelines).
fn evalsha(script: &Script, keys: &[&str], args: &[&str]) -> redis::Cmd {
    let mut command = redis::cmd("EVALSHA");
    command
        .arg(script.get_hash())
        .arg(keys.len())
        .arg(keys)
        .arg(args);
    command
}

/// Runs `call`; when it fails because Redis does not know `script` yet, loads it (on every node of a cluster)
/// and runs it once more.
async fn with_script_loaded<T, F, Fut>(
    conn: &RedisConn,
    script: Option<&Script>,
    call: F,
) -> Result<T, HotError>
where
    F: Fn(RedisConn) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    match call(conn.clone()).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            if let Some(script) = script {
                script
                    .load_async(&mut conn.clone())
                    .await
                    .map_err(unavailable)?;
            }
            call(conn.clone()).await.map_err(unavailable)
        }
        other => other.map_err(unavailable),
    }
}

/// Pages through a snapshot's copy of a project's objects (HSCAN may repeat a field; each is kept once), and
/// checks that the copy was still whole when read.
async fn page_copy(conn: &mut RedisConn, copy: &str) -> Result<Vec<String>, HotError> {
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
