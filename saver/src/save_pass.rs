//! One save pass, the middle of the write path: the save loop (`save_loop.rs`) runs one every interval, and
//! its writes go out through the batch writer ([`crate::batch_writer`]). A pass claims dirty projects (oldest
//! first, until none is left or the per-pass cap), reads what changed in each claim, writes it (Put for live
//! objects, Delete for deleted ones), then completes each claim that was fully written, puts back each one that
//! failed, and leaves alone each one whose lease another saver took over. The outcome feeds the metrics.
//!
//! Why a pass is shaped like this: the claim moves the changed-set aside atomically, so an edit that lands while
//! the pass runs starts a new changed-set and re-marks the project dirty, and a later pass saves it. A claim is
//! only completed (its saving-set dropped) after every one of its writes succeeded; anything else puts the ids back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use canvas_shared::durable::{DurableStore, ItemWrite, WriteOp};
use canvas_shared::hot::{ChangeSet, Claim, HotError, SaveQueue};
use canvas_shared::ids::{ObjectId, ProjectId};
use canvas_shared::time::now_ms;
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::batch_writer::{self, BatchSettings, ProjectWrites, WriteReport};
use crate::config::SaverSettings;
use crate::lease::{LeaseState, Leases};
use crate::report::PassOutcome;
use crate::save_error::SaveError;

/// Projects asked for per claim call (the claim script is one atomic step; keep each short).
const CLAIM_CHUNK: usize = 100;
/// Claims read from / finished in the hot state at once.
const HOT_CONCURRENCY: usize = 16;

/// What one pass needs.
pub(crate) struct PassContext {
    pub(crate) hot: Arc<dyn SaveQueue>,
    pub(crate) durable: Arc<dyn DurableStore>,
    pub(crate) settings: Arc<SaverSettings>,
}

impl PassContext {
    fn batch_settings(&self) -> BatchSettings {
        BatchSettings {
            concurrency: self.settings.concurrency,
            max_attempts: self.settings.max_attempts,
            backoff_base: self.settings.backoff_base,
            backoff_max: self.settings.backoff_max,
        }
    }
}

/// Claims up to the per-pass cap, in chunks. A claim error after some claims keeps what was claimed.
async fn claim_all(ctx: &PassContext, outcome: &mut PassOutcome) -> Vec<Claim> {
    let cap = ctx.settings.max_projects_per_pass.max(1);
    let lease_ms = ctx.settings.lease.as_millis() as u64;
    let mut claims: Vec<Claim> = Vec::new();
    while claims.len() < cap {
        let want = (cap - claims.len()).min(CLAIM_CHUNK);
        match ctx
            .hot
            .claim_dirty(&ctx.settings.owner, want, lease_ms)
            .await
        {
            Ok(batch) => {
                let got = batch.len();
                claims.extend(batch);
                if got < want {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming dirty projects failed");
                outcome
                    .errors
                    .push((None, format!("claiming dirty projects failed: {e}")));
                break;
            }
        }
    }
    claims
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

/// How one project's save ended.
#[derive(Debug, Clone)]
enum Ending {
    Saved,
    Failed(SaveError),
    Lost,
}

/// Runs one pass. Never fails as a whole: every problem is counted in the outcome and logged.
///
/// Spans: a pass that claimed something is a `save_pass` span (a pass that claimed nothing leaves none: one every
/// interval per saver would bury the real saves in a trace UI; the claim's time is its `claim_ms` attribute), with
/// one `save_project` child per claimed project, which holds that project's `read_changes`, `batch_write` (one per
/// BatchWriteItem request, retries included) and `release_claim` spans.
pub(crate) async fn run_pass(ctx: &PassContext) -> PassOutcome {
    let started = Instant::now();
    let mut outcome = PassOutcome::default();
    let claims = claim_all(ctx, &mut outcome).await;
    if claims.is_empty() {
        outcome.at = now_ms();
        outcome.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        return outcome;
    }
    let span = tracing::info_span!(
        "save_pass",
        owner = %ctx.settings.owner,
        claimed = claims.len(),
        claim_ms = started.elapsed().as_millis() as u64,
        projects = tracing::field::Empty,
        objects = tracing::field::Empty,
        failed = tracing::field::Empty,
        retries = tracing::field::Empty,
    );
    save_claims(ctx, claims, started, outcome)
        .instrument(span)
        .await
}

/// One claimed project through the pass.
struct Job {
    claim: Claim,
    span: tracing::Span,
    /// Items to write.
    objects: usize,
}

impl Job {
    fn new(claim: Claim) -> Self {
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
        }
    }
}

/// The claims whose changes were read: those to write, with their writes, and those already decided.
#[derive(Default)]
struct Sorted {
    to_write: Vec<Job>,
    writes: Vec<ItemWrite>,
    decided: Vec<(Job, Ending)>,
}

/// The steps of a pass that claimed something: read every claim, write what changed, decide each claim's ending,
/// release the claims, and count it all in the outcome.
async fn save_claims(
    ctx: &PassContext,
    claims: Vec<Claim>,
    started: Instant,
    mut outcome: PassOutcome,
) -> PassOutcome {
    let leases = Arc::new(Leases::new(
        Arc::clone(&ctx.hot),
        ctx.settings.lease,
        &claims,
        started,
    ));
    let _keep_alive = leases.keep_alive();
    let jobs = claims.into_iter().map(Job::new).collect();
    let sorted = sort_reads(read_changes(ctx, jobs).await);
    let report = write_changes(ctx, &leases, &sorted.to_write, sorted.writes).await;
    outcome.objects = report.items_written;
    outcome.puts = report.puts;
    outcome.deletes = report.deletes;
    outcome.superseded = report.superseded;
    outcome.refused = report.refused.clone();
    outcome.requests = report.requests;
    outcome.retries = report.retries;
    let mut endings = sorted.decided;
    endings.extend(decide_endings(&leases, sorted.to_write, &report));
    let held_back = held_back_by_project(&report);
    let finished = release_claims(ctx, &leases, endings, &held_back).await;
    tally(&mut outcome, finished);
    outcome.at = now_ms();
    outcome.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    report_pass(&outcome);
    outcome
}

/// Reads every claim's changes (claim order, i.e. oldest first, is kept for writing).
async fn read_changes(
    ctx: &PassContext,
    jobs: Vec<Job>,
) -> Vec<(Job, Result<ChangeSet, HotError>)> {
    futures_util::stream::iter(jobs.into_iter().map(|job| async {
        let span = tracing::info_span!(
            parent: &job.span,
            "read_changes",
            upserts = tracing::field::Empty,
            deletes = tracing::field::Empty,
        );
        let changes = ctx
            .hot
            .read_claim(&job.claim)
            .instrument(span.clone())
            .await;
        if let Ok(changes) = &changes {
            span.record("upserts", changes.upserts.len());
            span.record("deletes", changes.deletes.len());
        }
        (job, changes)
    }))
    .buffered(HOT_CONCURRENCY)
    .collect()
    .await
}

/// A claim with nothing changed is saved already; one whose read failed has failed; the rest are to be written.
fn sort_reads(reads: Vec<(Job, Result<ChangeSet, HotError>)>) -> Sorted {
    let mut sorted = Sorted::default();
    for (mut job, changes) in reads {
        match changes {
            Ok(changes) if changes.is_empty() => sorted.decided.push((job, Ending::Saved)),
            Ok(changes) => {
                job.objects = changes.len();
                sorted.writes.extend(to_writes(&job.claim, changes));
                sorted.to_write.push(job);
            }
            Err(e) => sorted
                .decided
                .push((job, Ending::Failed(SaveError::ReadChanges(e)))),
        }
    }
    sorted
}

/// Writes every change of the pass through the batch writer, each request traced under its project's span.
async fn write_changes(
    ctx: &PassContext,
    leases: &Leases,
    to_write: &[Job],
    writes: Vec<ItemWrite>,
) -> WriteReport {
    let spans: HashMap<ProjectId, tracing::Span> = to_write
        .iter()
        .map(|job| (job.claim.project.clone(), job.span.clone()))
        .collect();
    batch_writer::write_all(
        ctx.durable.as_ref(),
        leases,
        writes,
        &ctx.batch_settings(),
        &spans,
    )
    .await
}

/// How each written claim ended: lost if another saver took it over, else as its writes went.
fn decide_endings(leases: &Leases, to_write: Vec<Job>, report: &WriteReport) -> Vec<(Job, Ending)> {
    to_write
        .into_iter()
        .map(|job| {
            let written = report
                .projects
                .get(&job.claim.project)
                .cloned()
                .unwrap_or_default();
            job.span.record("retries", written.retries);
            let ending = if leases.state(&job.claim.project) == Some(LeaseState::Lost) {
                Ending::Lost
            } else {
                ending_of(&written)
            };
            (job, ending)
        })
        .collect()
}

/// The objects the store refused in this pass, by project, each with the stamp of its refused version.
fn held_back_by_project(report: &WriteReport) -> HashMap<ProjectId, Vec<(ObjectId, i64)>> {
    let mut held: HashMap<ProjectId, Vec<(ObjectId, i64)>> = HashMap::new();
    for refused in &report.refused {
        if let (Ok(project), Ok(object)) = (
            ProjectId::parse(refused.project_id.as_str()),
            ObjectId::parse(refused.object_id.as_str()),
        ) {
            held.entry(project)
                .or_default()
                .push((object, refused.stamp));
        }
    }
    held
}

/// Completes, puts back, or leaves to the new owner every claim of the pass.
async fn release_claims(
    ctx: &PassContext,
    leases: &Arc<Leases>,
    endings: Vec<(Job, Ending)>,
    held_back: &HashMap<ProjectId, Vec<(ObjectId, i64)>>,
) -> Vec<(Claim, Ending)> {
    futures_util::stream::iter(endings.into_iter().map(|(job, ending)| {
        let leases = Arc::clone(leases);
        async move {
            let Job {
                claim,
                span,
                objects,
            } = job;
            span.record("objects", objects);
            let release = tracing::info_span!(
                parent: &span,
                "release_claim",
                action = match &ending {
                    Ending::Saved => "complete",
                    Ending::Failed(_) => "put_back",
                    Ending::Lost => "leave",
                },
            );
            let refused = held_back.get(&claim.project).map_or(&[][..], Vec::as_slice);
            let ending = finish(ctx, &leases, &claim, ending, refused)
                .instrument(release)
                .await;
            let label = match &ending {
                Ending::Saved => "saved",
                Ending::Failed(_) => "failed",
                Ending::Lost => "lost_lease",
            };
            span.record("outcome", label);
            (claim, ending)
        }
    }))
    .buffer_unordered(HOT_CONCURRENCY)
    .collect()
    .await
}

/// Counts each claim's ending in the outcome, with an error entry for each one not saved.
fn tally(outcome: &mut PassOutcome, finished: Vec<(Claim, Ending)>) {
    for (claim, ending) in finished {
        match ending {
            Ending::Saved => outcome.succeeded += 1,
            Ending::Failed(error) => {
                outcome.failed += 1;
                outcome
                    .errors
                    .push((Some(claim.project.to_string()), error.to_string()));
            }
            Ending::Lost => {
                outcome.lost += 1;
                outcome.errors.push((
                    Some(claim.project.to_string()),
                    "lease lost: another saver took the project over; nothing more was written"
                        .into(),
                ));
            }
        }
    }
}

/// Records the pass's figures on its span and logs how it went.
fn report_pass(outcome: &PassOutcome) {
    let span = tracing::Span::current();
    span.record("projects", outcome.projects());
    span.record("objects", outcome.objects);
    span.record("failed", outcome.failed + outcome.lost);
    span.record("retries", outcome.retries);
    if outcome.failed + outcome.lost > 0 {
        tracing::warn!(
            projects = outcome.projects(),
            saved = outcome.succeeded,
            failed = outcome.failed,
            lost = outcome.lost,
            objects = outcome.objects,
            "save pass finished with failures; the failed projects stay dirty"
        );
    } else {
        tracing::info!(
            projects = outcome.projects(),
            objects = outcome.objects,
            retries = outcome.retries,
            duration_ms = outcome.duration_ms as u64,
            "save pass finished"
        );
    }
}

fn ending_of(written: &ProjectWrites) -> Ending {
    match &written.error {
        Some(e) => Ending::Failed(e.clone()),
        None if written.complete() => Ending::Saved,
        None => Ending::Failed(SaveError::Incomplete {
            written: written.written,
            expected: written.expected,
        }),
    }
}

/// Persists the claim's `seq` with its objects (a conditional raise: a late, older watermark never lowers it), so
/// that a cold load after Redis lost the project resumes above every seq whose edits were saved.
async fn persist_watermark(durable: &dyn DurableStore, claim: &Claim) -> Result<(), SaveError> {
    durable
        .persist_seq(&claim.project, claim.seq)
        .await
        .map_err(SaveError::PersistWatermark)
}

/// Completes a fully written claim (after recording the objects the store refused, which keep the project in
/// the hot state, and persisting its watermark) or puts a failed one back. A lost claim is left alone.
async fn finish(
    ctx: &PassContext,
    leases: &Leases,
    claim: &Claim,
    ending: Ending,
    refused: &[(ObjectId, i64)],
) -> Ending {
    let hot = ctx.hot.as_ref();
    let ending = match ending {
        Ending::Saved if !refused.is_empty() => match hot.hold_back(claim, refused).await {
            Ok(true) => Ending::Saved,
            Ok(false) => Ending::Lost,
            Err(e) => Ending::Failed(SaveError::HoldBack(e)),
        },
        other => other,
    };
    let ending = match ending {
        Ending::Saved => match persist_watermark(ctx.durable.as_ref(), claim).await {
            Ok(()) => Ending::Saved,
            Err(error) => Ending::Failed(error),
        },
        other => other,
    };
    let ending = match ending {
        Ending::Saved => match hot.complete_claim(claim).await {
            Ok(true) => Ending::Saved,
            Ok(false) => {
                leases.mark_lost(&claim.project);
                Ending::Lost
            }
            // The writes landed; the claim stays until its lease expires and is then saved again (harmless).
            Err(e) => Ending::Failed(SaveError::CompleteClaim(e)),
        },
        Ending::Failed(error) => {
            tracing::warn!(project = %claim.project, error = %error, "project save failed; putting the work back");
            if let Err(e) = hot.abandon_claim(claim).await {
                // The saving-set stays under the expired lease and is taken over by the next claim.
                tracing::warn!(project = %claim.project, error = %e, "putting the work back failed; the lease will expire instead");
            }
            Ending::Failed(error)
        }
        Ending::Lost => Ending::Lost,
    };
    leases.release(&claim.project);
    ending
}

/// Pause between final passes that keep failing during shutdown.
pub(crate) fn drain_pause(settings: &SaverSettings) -> Duration {
    settings.interval.min(Duration::from_millis(500))
}
