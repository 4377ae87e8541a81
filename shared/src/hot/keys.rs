//! The Redis key layout, one layout for a single Redis and a Redis Cluster alike.
//!
//! Every project belongs to one of [`BUCKETS`] buckets, and every key of a project shares its bucket's hash tag,
//! as do the bucket's own indexes (dirty, leases, saving, resident, sizes, cold loads). A script on a project
//! therefore touches one Redis Cluster slot, the slot of the bucket, and can still update the indexes that let a
//! saver find the project. Each bucket's tag is chosen so that bucket `b` hashes into slot range
//! `[b × 64, b × 64 + 64)`: a cluster whose slots are split into contiguous ranges, as `redis-cli --cluster create`
//! and `reshard` do, spreads the buckets as evenly as it spreads its slots.
//!
//! A project's keys are `canvas:{tag}:<projectId>/<what>`; a project id never holds a `/`, so no two projects'
//! keys can meet, and a bucket's own keys (`canvas:{tag}:<index>`, no `/`) never meet a project's.

use std::sync::LazyLock;

use crate::ids::ProjectId;

/// How many buckets projects are spread over. Fixed for the life of a deployment: changing it moves every
/// project to another bucket (see the key migration in `docs/operating.md`). A cluster can use up to this many
/// primaries usefully.
pub const BUCKETS: usize = 256;

/// Redis Cluster's slot count.
const SLOTS: u16 = 16384;

/// The slot of a key or a hash tag's content: CRC16 (XMODEM) modulo 16384, as Redis Cluster computes it.
pub fn slot_of(tag: &str) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes()) % SLOTS
}

/// The bucket a project lives in, for good: the CRC16 of its id, modulo [`BUCKETS`].
pub fn bucket_of(project: &ProjectId) -> usize {
    usize::from(crc16::State::<crc16::XMODEM>::calculate(
        project.as_str().as_bytes(),
    )) % BUCKETS
}

/// The hash tag of bucket `bucket`: the first `b<bucket>.<n>` whose slot falls in the bucket's slot range.
fn tag_of(bucket: usize) -> String {
    let width = usize::from(SLOTS) / BUCKETS;
    let range = bucket * width..(bucket + 1) * width;
    (0u32..)
        .map(|n| format!("b{bucket}.{n}"))
        .find(|tag| range.contains(&usize::from(slot_of(tag))))
        .unwrap_or_else(|| format!("b{bucket}"))
}

/// The keys of one bucket: the indexes over the projects in it.
#[derive(Debug)]
pub struct BucketKeys {
    /// Which bucket (0..[`BUCKETS`]).
    pub bucket: usize,
    /// The hash tag every key of the bucket and of its projects carries.
    pub tag: String,
    /// Sorted set: project id → epoch ms of its oldest unsaved change (waiting to be claimed).
    pub dirty: String,
    /// Sorted set: project id → epoch ms when its saver's lease expires (being saved).
    pub leases: String,
    /// Sorted set: project id → epoch ms of the oldest change its current claim covers (being saved), for an
    /// exact oldest unsaved change in metrics.
    pub saving: String,
    /// Sorted set: project id → epoch ms of its last read or edit, for every project held in the hot state (the idle
    /// ones are evicted oldest first).
    pub resident: String,
    /// Sorted set: project id → its total object bytes as of its last save or load, for every resident project (for
    /// the biggest projects in metrics; kept off the edit path).
    pub sizes: String,
    /// Counter: cold loads of the bucket's projects by any gateway (for metrics).
    pub cold_loads: String,
}

static BUCKET_KEYS: LazyLock<Vec<BucketKeys>> = LazyLock::new(|| {
    (0..BUCKETS)
        .map(|bucket| {
            let tag = tag_of(bucket);
            let base = format!("canvas:{{{tag}}}:");
            BucketKeys {
                bucket,
                dirty: format!("{base}dirty"),
                leases: format!("{base}leases"),
                saving: format!("{base}saving"),
                resident: format!("{base}resident"),
                sizes: format!("{base}sizes"),
                cold_loads: format!("{base}cold_loads"),
                tag,
            }
        })
        .collect()
});

impl BucketKeys {
    /// Every bucket, in order.
    pub fn all() -> &'static [BucketKeys] {
        &BUCKET_KEYS
    }

    /// The bucket of `project`.
    pub fn of(project: &ProjectId) -> &'static BucketKeys {
        &BUCKET_KEYS[bucket_of(project)]
    }
}

/// The keys of one project.
#[derive(Debug, Clone)]
pub struct ProjectKeys {
    /// The indexes of the project's bucket (same slot).
    pub bucket: &'static BucketKeys,
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
    /// Pub/sub channel for fan-out (a sharded channel on a cluster, in the project's slot).
    pub channel: String,
}

impl ProjectKeys {
    pub fn new(project: &ProjectId) -> Self {
        let bucket = BucketKeys::of(project);
        let base = Self::base(bucket, project);
        Self {
            bucket,
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

    fn base(bucket: &BucketKeys, project: &ProjectId) -> String {
        format!("canvas:{{{}}}:{project}/", bucket.tag)
    }

    /// What every key of the project starts with (and no other project's key does).
    pub fn prefix(project: &ProjectId) -> String {
        Self::base(BucketKeys::of(project), project)
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
        format!("{}snapshot:{token}", Self::prefix(project))
    }

    /// String: the response to a write with idempotency key `key` by `user` (expires by itself). `%` and `:` in
    /// the user id are escaped so that no two (user, key) pairs share a name.
    pub fn idempotency(project: &ProjectId, user: &str, key: &str) -> String {
        let user = user.replace('%', "%25").replace(':', "%3A");
        format!("{}idem:{user}:{key}", Self::prefix(project))
    }

    /// The project id from a channel name, as published by [`ProjectKeys::channel`].
    pub fn project_of_channel(channel: &str) -> Option<ProjectId> {
        let rest = channel.strip_prefix("canvas:{")?;
        let (_, rest) = rest.split_once("}:")?;
        ProjectId::parse(rest.strip_suffix("/events")?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bucket_hashes_into_its_own_slot_range() {
        let width = usize::from(SLOTS) / BUCKETS;
        for keys in BucketKeys::all() {
            let slot = usize::from(slot_of(&keys.tag));
            assert_eq!(
                slot / width,
                keys.bucket,
                "bucket {} tag {}",
                keys.bucket,
                keys.tag
            );
        }
    }

    #[test]
    fn a_projects_keys_and_its_bucket_share_one_slot() {
        let project = ProjectId::parse("room-1").unwrap();
        let keys = ProjectKeys::new(&project);
        let slot = slot_of(&keys.bucket.tag);
        let tag_of_key = |key: &str| {
            let open = key.find('{').unwrap();
            let close = key[open..].find('}').unwrap() + open;
            slot_of(&key[open + 1..close])
        };
        for key in keys.all().into_iter().chain([
            keys.channel.as_str(),
            keys.bucket.dirty.as_str(),
            keys.bucket.leases.as_str(),
            keys.bucket.resident.as_str(),
        ]) {
            assert_eq!(tag_of_key(key), slot, "{key}");
        }
    }

    #[test]
    fn the_layout_never_changes_under_a_running_deployment() {
        // A change here strands every key a deployment holds: it needs a migration, not an edit of this test.
        assert_eq!(slot_of("123456789"), 12739 % SLOTS);
        let keys = ProjectKeys::new(&ProjectId::parse("bench-g").unwrap());
        assert_eq!(keys.bucket.tag, "b171.44");
        assert_eq!(keys.objects, "canvas:{b171.44}:bench-g/objects");
        assert_eq!(keys.bucket.dirty, "canvas:{b171.44}:dirty");
    }

    #[test]
    fn channel_names_give_their_project_back() {
        for raw in ["p1", "a:b", "x.y-z_1", "dirty"] {
            let project = ProjectId::parse(raw).unwrap();
            let channel = ProjectKeys::new(&project).channel;
            assert_eq!(ProjectKeys::project_of_channel(&channel), Some(project));
        }
        assert_eq!(ProjectKeys::project_of_channel("canvas:{p1}:events"), None);
    }

    #[test]
    fn projects_spread_over_the_buckets() {
        let mut counts = vec![0usize; BUCKETS];
        for n in 0..25_600 {
            counts[bucket_of(&ProjectId::parse(format!("project-{n}")).unwrap())] += 1;
        }
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(*min > 50 && *max < 150, "bucket sizes from {min} to {max}");
    }
}
