//! The read side of a save pass: a pass goes through its claims one bounded group at a time. A group is read from
//! the hot state page by page, oldest claim first, until it holds [`GROUP`] worth of changes (or no claim is left to
//! read); the pass writes it and only then reads the next one. A big claim spans several groups, each resuming at
//! its cursor; small claims share one group, so that their writes still pack into full requests.
//!
//! Why: a pass may claim a thousand projects and one project may hold 32 MiB of objects. Reading every claim before
//! writing made the saver's memory grow with the pass; a group bounds it to about `GROUP.max_bytes` of object JSON
//! (plus at most one object per concurrent read over its share), whatever the size or number of the claims.

use std::collections::VecDeque;

use canvas_shared::durable::{ItemWrite, WriteOp};
use canvas_shared::hot::{ChangeSet, Claim, ClaimCursor, PageBounds, SaveQueue};
use tracing::Instrument;

use crate::batch_writer::ProjectWrites;
use crate::save_error::SaveError;

/// What one group holds at most (ids and object JSON bytes), read before anything of it is written.
pub(crate) const GROUP: PageBounds = PageBounds::DEFAULT;
/// Claims read from the hot state at once (each with its share of what the group has left).
const READS: usize = 16;

/// One claimed project through the pass.
pub(crate) struct Job {
    pub(crate) claim: Claim,
    pub(crate) span: tracing::Span,
    /// Items read so far (to write).
    pub(crate) objects: usize,
    /// Where the next page starts; `None` once every page was read (or reading failed).
    pub(crate) cursor: Option<ClaimCursor>,
    /// What became of its writes so far, across groups.
    pub(crate) written: ProjectWrites,
    /// Objects the store refused so far, each with the stamp of its refused version.
    pub(crate) refused: Vec<(canvas_shared::ids::ObjectId, i64)>,
    /// Why it failed before its writes did (a read of the hot state, or the pass stopped writing).
    pub(crate) failed: Option<SaveError>,
}

impl Job {
    pub(crate) fn new(claim: Claim) -> Self {
        Self {
            span: tracing::info_span!(
                "save_project",
                project = %claim.project,
                objects = tracing::field::Empty,
                retries = tracing::field::Empty,
                outcome = tracing::field::Empty,
            ),
            claim,
            objects: 0,
            cursor: Some(ClaimCursor::default()),
            written: ProjectWrites::default(),
            refused: Vec::new(),
            failed: None,
        }
    }
}

/// One group: its writes, in claim order, and the jobs it read from.
#[derive(Default)]
pub(crate) struct Group {
    pub(crate) writes: Vec<ItemWrite>,
    /// Indices into the pass's jobs, in claim order, each once.
    pub(crate) members: Vec<usize>,
}

/// Reads the next group from the jobs waiting at the front of `pending` (indices into `jobs`, oldest claim first).
/// A job read to its end, or whose read failed, leaves `pending`; one with pages left stays at the front.
pub(crate) async fn read_group(
    hot: &dyn SaveQueue,
    jobs: &mut [Job],
    pending: &mut VecDeque<usize>,
) -> Group {
    let mut group = Group::default();
    let mut left = GROUP;
    while left.max_items > 0 && left.max_bytes > 0 && !pending.is_empty() {
        let batch: Vec<usize> = pending.iter().take(READS).copied().collect();
        let share = PageBounds {
            max_items: (left.max_items / batch.len()).max(1),
            max_bytes: (left.max_bytes / batch.len()).max(1),
        };
        let reads =
            futures_util::future::join_all(batch.iter().map(|&i| read_page(hot, &jobs[i], share)))
                .await;
        for (i, read) in batch.into_iter().zip(reads) {
            if !group.members.contains(&i) {
                group.members.push(i);
            }
            let job = &mut jobs[i];
            match read {
                Ok((changes, next)) => {
                    left.max_items = left.max_items.saturating_sub(changes.len());
                    left.max_bytes = left.max_bytes.saturating_sub(changes.bytes());
                    job.objects += changes.len();
                    group.writes.extend(to_writes(&job.claim, changes));
                    job.cursor = next;
                }
                Err(error) => {
                    job.failed = Some(error);
                    job.cursor = None;
                }
            }
        }
        pending.retain(|&i| jobs[i].cursor.is_some());
    }
    group
}

/// The job's next page, traced as a `read_changes` span under its project's span.
async fn read_page(
    hot: &dyn SaveQueue,
    job: &Job,
    bounds: PageBounds,
) -> Result<(ChangeSet, Option<ClaimCursor>), SaveError> {
    let cursor = job.cursor.clone().unwrap_or_default();
    let span = tracing::info_span!(
        parent: &job.span,
        "read_changes",
        upserts = tracing::field::Empty,
        deletes = tracing::field::Empty,
        bytes = tracing::field::Empty,
    );
    let page = hot
        .read_claim_page(&job.claim, &cursor, bounds)
        .instrument(span.clone())
        .await
        .map_err(SaveError::ReadChanges)?;
    span.record("upserts", page.changes.upserts.len());
    span.record("deletes", page.changes.deletes.len());
    span.record("bytes", page.changes.bytes());
    Ok((page.changes, page.next))
}

fn to_writes(claim: &Claim, changes: ChangeSet) -> Vec<ItemWrite> {
    let mut writes = Vec::with_capacity(changes.len());
    writes.extend(changes.upserts.into_iter().map(|object| ItemWrite {
        project: claim.project.clone(),
        op: WriteOp::Put(object),
    }));
    writes.extend(changes.deletes.into_iter().map(|tombstone| ItemWrite {
        project: claim.project.clone(),
        op: WriteOp::Delete(tombstone),
    }));
    writes
}
