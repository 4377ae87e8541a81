//! The saver's half of the hot state: the dirty index and the claim/lease protocol that hands each changed project
//! to exactly one saver at a time.

use async_trait::async_trait;

use super::{HotError, Reachable};
use crate::ids::{ObjectId, ProjectId};
use crate::stored::{StoredObject, Tombstone};

/// The origin of `saved` frames on the bus: no connection has this id, so every client of the project gets them.
pub(super) const SAVED_ORIGIN: &str = "~saver";

/// A project claimed by a saver under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub project: ProjectId,
    /// Unique per claim; a claim whose token was replaced (lease taken over) can no longer complete.
    pub token: String,
    /// Epoch ms of the oldest change this claim covers (restored into the dirty index if the save fails).
    pub dirty_since: i64,
    /// The project's `seq` when it was claimed: once the claim completes, every edit up to it is saved.
    pub seq: u64,
}

/// The current state of every object changed since the claim's changes began.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    pub upserts: Vec<StoredObject>,
    pub deletes: Vec<Tombstone>,
}

impl ChangeSet {
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Object JSON bytes it holds (what a page is bounded by, besides its item count).
    pub fn bytes(&self) -> usize {
        self.upserts.iter().map(|o| o.json.len()).sum()
    }
}

/// How much one page of a claim's changes may hold: at most `max_items` ids, and no more object JSON than
/// `max_bytes`, except that a page always holds at least one id (so one object bigger than the bound still moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageBounds {
    pub max_items: usize,
    pub max_bytes: usize,
}

impl PageBounds {
    /// What the saver reads at once by default: 1000 ids, 4 MiB of JSON.
    pub const DEFAULT: PageBounds = PageBounds {
        max_items: 1000,
        max_bytes: 4 << 20,
    };
}

impl Default for PageBounds {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where a paged read of a claim's changes stands. Opaque to callers: each store writes its own position into it.
/// [`ClaimCursor::default`] starts at the beginning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimCursor(pub(super) String);

/// One page of a claim's changes, and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimPage {
    pub changes: ChangeSet,
    pub next: Option<ClaimCursor>,
}

/// The dirty index at a glance (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirtySummary {
    /// Projects with unsaved changes, including those being saved now.
    pub count: usize,
    /// Epoch ms of the oldest unsaved change.
    pub oldest_modification: Option<i64>,
    /// Up to 100 project ids, oldest first.
    pub project_ids: Vec<String>,
}

/// What became of one attempt to evict a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Every key of the project is gone; the next access loads it again with a seq above this one.
    Evicted { seq: u64 },
    /// Not evictable now: read or edited since, unsaved, claimed, holding a refused object, or a client is in it.
    Busy,
    /// The project is not loaded (nothing to do).
    Gone,
    /// Everything else allows it, but the project's `seq` is above every seq known persisted: persist it in the
    /// durable store, then ask again with it (eviction must never cost a seq).
    Unpersisted { seq: u64 },
}

/// The projects the hot state holds, at a glance (for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Residency {
    /// Projects loaded in the hot state.
    pub resident: u64,
    /// Cold loads of any project by any gateway since the hot state started.
    pub cold_loads: u64,
    /// The biggest projects by total object bytes (as of their last save or load), biggest first.
    pub biggest: Vec<(String, u64)>,
    /// Bytes the hot state uses (Redis `used_memory`), when it can tell.
    pub used_memory: Option<u64>,
}

/// What a saver needs from the hot state.
#[async_trait]
pub trait SaveQueue: Reachable {
    /// Claims up to `max` dirty projects, oldest first, plus any whose lease expired (a crashed saver's), under a
    /// lease of `lease_ms`. Projects under a live lease are skipped. Each claim moves the project's changed-set
    /// aside so that new edits start a new one (and re-mark the project dirty). Leases are written and judged on
    /// the store's [`LeaseClock`](super::LeaseClock), never on the caller's.
    async fn claim_dirty(
        &self,
        owner: &str,
        max: usize,
        lease_ms: u64,
    ) -> Result<Vec<Claim>, HotError>;

    /// One page of the current state of the objects in the claim's changed-set, starting at `cursor`; a deleted one
    /// as a tombstone with the stamp of its delete. Reading every page from the default cursor on yields each id of
    /// the claim once, each page within `bounds`; the same cursor reads the same page again (a retried save).
    async fn read_claim_page(
        &self,
        claim: &Claim,
        cursor: &ClaimCursor,
        bounds: PageBounds,
    ) -> Result<ClaimPage, HotError>;

    /// Every page of the claim at once. For tests and tools with small claims: the saver reads page by page, so
    /// that a big claim is never in memory whole.
    async fn read_claim(&self, claim: &Claim) -> Result<ChangeSet, HotError> {
        let mut all = ChangeSet::default();
        let mut cursor = ClaimCursor::default();
        loop {
            let page = self
                .read_claim_page(claim, &cursor, PageBounds::DEFAULT)
                .await?;
            all.upserts.extend(page.changes.upserts);
            all.deletes.extend(page.changes.deletes);
            match page.next {
                Some(next) => cursor = next,
                None => return Ok(all),
            }
        }
    }

    /// Extends the lease to `lease_ms` from the store's clock's now; false when the claim was taken over (the
    /// caller must stop writing).
    async fn renew_claim(&self, claim: &Claim, lease_ms: u64) -> Result<bool, HotError>;

    /// The save succeeded: drops the claim's changed-set and lease (and the stamps of its deletes, unless deleted
    /// again since), and raises the project's `savedSeq` to the
    /// claim's `seq` (never lowers it). False when the claim was taken over.
    async fn complete_claim(&self, claim: &Claim) -> Result<bool, HotError>;

    /// The save failed: merges the changed-set back and re-marks the project dirty at its original time.
    async fn abandon_claim(&self, claim: &Claim) -> Result<(), HotError>;

    /// Dirty projects (waiting or being saved) for metrics.
    async fn dirty_summary(&self) -> Result<DirtySummary, HotError>;

    /// Records objects the durable store refused in this claim, each with the stamp of its refused version: they
    /// are held only in the hot state until they change, so the project is not evicted meanwhile. False when the
    /// claim was taken over.
    async fn hold_back(&self, claim: &Claim, refused: &[(ObjectId, i64)])
        -> Result<bool, HotError>;

    /// Up to `max` projects last read or edited at or before `idle_before_ms`, least recently used first.
    async fn idle_projects(
        &self,
        idle_before_ms: i64,
        max: usize,
    ) -> Result<Vec<ProjectId>, HotError>;

    /// Evicts the project if, atomically with every edit, read, claim and load, it is still idle since
    /// `idle_before_ms`, fully saved, unclaimed, holds no refused object, has no client on any gateway at
    /// `now_ms`, and its `seq` is at most `persisted_seq` or the seq its last save persisted.
    async fn evict(
        &self,
        project: &ProjectId,
        idle_before_ms: i64,
        now_ms: i64,
        persisted_seq: u64,
    ) -> Result<Eviction, HotError>;

    /// Resident projects, the `biggest` largest ones, and memory used.
    async fn residency(&self, biggest: usize) -> Result<Residency, HotError>;
}
