//! The one-shot move of a single Redis from the layout before buckets (`canvas:{projectId}:…` keys and global
//! `canvas:dirty`, `canvas:leases`, `canvas:resident`, `canvas:sizes`, `canvas:cold_loads`) to the bucketed
//! layout of [`crate::hot::keys`], keeping every unsaved change, claim, seq and journal.
//!
//! It runs with every gateway and saver stopped (it is not atomic against edits), renames keys in place (no
//! copy of any object), and can run again: what is already moved is not found again. The old layout only ever
//! ran on a single Redis, so the move is a single-node one; a cluster starts on the new layout.

use std::collections::BTreeSet;

use redis::aio::ConnectionLike;

use super::unavailable;
use crate::hot::keys::{BucketKeys, ProjectKeys};
use crate::hot::HotError;
use crate::ids::ProjectId;

/// The old global indexes.
const OLD_DIRTY: &str = "canvas:dirty";
const OLD_LEASES: &str = "canvas:leases";
const OLD_RESIDENT: &str = "canvas:resident";
const OLD_SIZES: &str = "canvas:sizes";
const OLD_COLD_LOADS: &str = "canvas:cold_loads";

/// What a migration moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Projects whose keys were renamed into their bucket.
    pub projects: usize,
    /// Keys renamed (per-project state and idempotency records).
    pub keys: usize,
    /// Index entries (dirty, lease, resident, size) moved into bucket indexes.
    pub index_entries: usize,
    /// Snapshot copies dropped (they expire within a minute anyway).
    pub dropped: usize,
    /// Loaded projects that had no resident entry (loaded before idle eviction existed) and now have one.
    pub resident_added: usize,
}

/// An old per-project key split into its project and what follows the tag (`objects`, `idem:…`, …); None for
/// any other key, a key of the new layout included (left by an earlier, interrupted run).
fn old_key(key: &str) -> Option<(ProjectId, &str)> {
    let rest = key.strip_prefix("canvas:{")?;
    let (tag, what) = rest.split_once("}:")?;
    if is_new_layout(tag, what) {
        return None;
    }
    ProjectId::parse(tag).ok().map(|p| (p, what))
}

/// Whether `canvas:{tag}:what` is a key of the bucketed layout: a bucket's own key, or a project key whose
/// project lives in that bucket.
fn is_new_layout(tag: &str, what: &str) -> bool {
    let Some(bucket) = BucketKeys::all().iter().find(|b| b.tag == tag) else {
        return false;
    };
    match what.split_once('/') {
        Some((project, _)) => ProjectId::parse(project)
            .map(|p| std::ptr::eq(BucketKeys::of(&p), bucket))
            .unwrap_or(false),
        None => matches!(
            what,
            "dirty" | "leases" | "saving" | "resident" | "sizes" | "cold_loads"
        ),
    }
}

/// The new name of an old per-project key, or None for a key that is dropped instead.
fn new_name(project: &ProjectId, what: &str) -> Option<String> {
    if what.starts_with("snapshot:") {
        return None;
    }
    Some(format!("{}{what}", ProjectKeys::prefix(project)))
}

/// Moves every old key of the Redis at `url` into the bucketed layout.
pub async fn migrate_to_buckets(url: &str) -> Result<MigrationReport, HotError> {
    let client = redis::Client::open(url).map_err(|e| {
        HotError::Unavailable(crate::cause::Cause::explained(
            format!("bad REDIS_URL {url:?}: {e}"),
            e,
        ))
    })?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(unavailable)?;
    migrate(&mut conn).await
}

async fn migrate<C: ConnectionLike + Send>(conn: &mut C) -> Result<MigrationReport, HotError> {
    let mut report = MigrationReport::default();
    let mut projects = BTreeSet::new();
    // Every old key is listed before any is renamed, so that the scan never meets a key it renamed itself.
    let mut old_keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("canvas:{*")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        old_keys.extend(keys.into_iter().filter(|key| old_key(key).is_some()));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    for key in old_keys {
        {
            let Some((project, what)) = old_key(&key) else {
                continue;
            };
            match new_name(&project, what) {
                Some(name) => {
                    redis::cmd("RENAME")
                        .arg(&key)
                        .arg(&name)
                        .query_async::<()>(conn)
                        .await
                        .map_err(unavailable)?;
                    report.keys += 1;
                    projects.insert(project);
                }
                None => {
                    redis::cmd("DEL")
                        .arg(&key)
                        .query_async::<()>(conn)
                        .await
                        .map_err(unavailable)?;
                    report.dropped += 1;
                }
            }
        }
    }
    report.projects = projects.len();

    let pick = |keys: &ProjectKeys, index: &str| -> String {
        match index {
            OLD_DIRTY => keys.bucket.dirty.clone(),
            OLD_LEASES => keys.bucket.leases.clone(),
            OLD_RESIDENT => keys.bucket.resident.clone(),
            _ => keys.bucket.sizes.clone(),
        }
    };
    for index in [OLD_DIRTY, OLD_LEASES, OLD_RESIDENT, OLD_SIZES] {
        let entries: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(index)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        for (member, score) in entries {
            let Ok(project) = ProjectId::parse(member) else {
                continue;
            };
            let keys = ProjectKeys::new(&project);
            redis::cmd("ZADD")
                .arg(pick(&keys, index))
                .arg(score)
                .arg(project.as_str())
                .query_async::<()>(conn)
                .await
                .map_err(unavailable)?;
            if index == OLD_LEASES {
                // The bucket's saving index holds when each claimed project's changes began.
                let since: Option<i64> = redis::cmd("HGET")
                    .arg(&keys.lease)
                    .arg("since")
                    .query_async(conn)
                    .await
                    .map_err(unavailable)?;
                redis::cmd("ZADD")
                    .arg(&keys.bucket.saving)
                    .arg(since.unwrap_or(score as i64))
                    .arg(project.as_str())
                    .query_async::<()>(conn)
                    .await
                    .map_err(unavailable)?;
            }
            report.index_entries += 1;
        }
        redis::cmd("DEL")
            .arg(index)
            .query_async::<()>(conn)
            .await
            .map_err(unavailable)?;
    }

    // A project loaded before idle eviction existed has no resident entry, and would never be evicted: from now
    // on its idle time counts.
    let now = crate::time::now_ms();
    for project in &projects {
        let keys = ProjectKeys::new(project);
        let loaded: bool = redis::cmd("EXISTS")
            .arg(&keys.meta)
            .query_async(conn)
            .await
            .map_err(unavailable)?;
        if loaded {
            let added: u64 = redis::cmd("ZADD")
                .arg(&keys.bucket.resident)
                .arg("NX")
                .arg(now)
                .arg(project.as_str())
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            report.resident_added += added as usize;
        }
    }

    let cold_loads: Option<u64> = redis::cmd("GET")
        .arg(OLD_COLD_LOADS)
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    if let Some(count) = cold_loads {
        let first = &BucketKeys::all()[0];
        redis::cmd("INCRBY")
            .arg(&first.cold_loads)
            .arg(count)
            .query_async::<()>(conn)
            .await
            .map_err(unavailable)?;
        redis::cmd("DEL")
            .arg(OLD_COLD_LOADS)
            .query_async::<()>(conn)
            .await
            .map_err(unavailable)?;
    }
    Ok(report)
}
