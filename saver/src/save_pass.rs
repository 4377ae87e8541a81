//! One save pass, the middle of the write path: the save loop (`save_loop.rs`) runs one every interval, and
//! its writes go out through the batch writer ([`crate::batch_writer`]). A pass claims dirty projects (oldest
//! first, until none is left or the per-pass cap), then goes through them one bounded group at a time
//! ([`crate::group`]): it reads the group's pages of changes, writes them (Put for live objects, Delete for deleted
//! ones), and releases each claim whose last page is written: it completes each one that was fully written, puts
//! back each one that failed, and leaves alone each one whose lease another saver took over. The outcome feeds the
//! metrics.
//!
//! Why a pass is shaped like this: the claim moves the changed-set aside atomically, so an edit that lands while
//! the pass runs starts a new changed-set and re-marks the project dirty, and a later pass saves it. A claim is
//! only completed (its saving-set dropped) after every one of its writes succeeded, in whatever groups they went;
//! anything else puts all of its ids back. Groups keep the saver's memory bounded however big the pass or a
//! project is: nothing of the next group is read before the current one is written.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use canvas_shared::durable::{DurableStore, ItemWrite};
use canvas_shared::hot::{Claim, SaveQueue};
use canvas_shared::ids::{ObjectId, ProjectId};
use canvas_shared::time::now_ms;
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use crate::batch_writer::{self, BatchSettings, ProjectWrites, WriteReport};
use crate::config::SaverSettings;
use crate::group::{self, Group, Job};
use crate::lease::{LeaseState, Leases};
use crate::report::PassOutcome;
use crate::save_error::SaveError;

/// Projects asked for per claim call (the claim script is one atomic step; keep each short).
const CLAIM_CHUNK: usize = 100;
/// Claims finished in the hot state at once.
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

/// The steps of a pass that claimed something: one group at a time, read the group's pages, write them, and
/// release every claim whose last page is written (or that failed or was lost on the way); then count it all in
/// the outcome.
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
    let mut jobs: Vec<Job> = claims.into_iter().map(Job::new).collect();
    let mut pending: VecDeque<usize> = (0..jobs.len()).collect();
    let mut finished = Vec::with_capacity(jobs.len());
    while !pending.is_empty() {
        let mut group = group::read_group(ctx.hot.as_ref(), &mut jobs, &mut pending).await;
        let writes = std::mem::take(&mut group.writes);
        let report = write_group(ctx, &leases, &jobs, &group, writes).await;
        let stopped = report.stopped.clone();
        absorb(&mut outcome, &mut jobs, &group, report);
        // A claim is done once read through, failed or lost: release it now rather than at the end of the pass.
        let mut done: Vec<usize> = group
            .members
            .iter()
            .copied()
            .filter(|&i| {
                let job = &jobs[i];
                job.cursor.is_none()
                    || job.written.error.is_some()
                    || leases.state(&job.claim.project) != Some(LeaseState::Held)
            })
            .collect();
        pending.retain(|i| !done.contains(i));
        if let Some(reason) = stopped {
            // The store looks down or missing: the claims not written yet are put back without trying.
            for i in pending.drain(..) {
                jobs[i].failed = Some(SaveError::NotAttempted(reason.clone()));
                done.push(i);
            }
        }
        let endings = done
            .into_iter()
            .map(|i| {
                let ending = ending_of_job(&leases, &jobs[i]);
                (Finished::take(&mut jobs[i]), ending)
            })
            .collect();
        finished.extend(release_claims(ctx, &leases, endings).await);
    }
    tally(&mut outcome, finished);
    outcome.at = now_ms();
    outcome.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    report_pass(&outcome);
    outcome
}

/// Writes one group's writes through the batch writer, each request traced under its project's span.
async fn write_group(
    ctx: &PassContext,
    leases: &Leases,
    jobs: &[Job],
    group: &Group,
    writes: Vec<ItemWrite>,
) -> WriteReport {
    if writes.is_empty() {
        return WriteReport::default();
    }
    let spans: HashMap<ProjectId, tracing::Span> = group
        .members
        .iter()
        .map(|&i| (jobs[i].claim.project.clone(), jobs[i].span.clone()))
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

/// Adds a group's write report to the pass's figures and to each of its claims.
fn absorb(outcome: &mut PassOutcome, jobs: &mut [Job], group: &Group, report: WriteReport) {
    outcome.objects += report.items_written;
    outcome.puts += report.puts;
    outcome.deletes += report.deletes;
    outcome.superseded += report.superseded;
    outcome.requests += report.requests;
    outcome.retries += report.retries;
    let by_project: HashMap<&ProjectId, usize> = group
        .members
        .iter()
        .map(|&i| (&jobs[i].claim.project, i))
        .collect();
    let mut refused: Vec<(usize, ObjectId, i64)> = Vec::new();
    for object in &report.refused {
        if let (Ok(project), Ok(id)) = (
            ProjectId::parse(object.project_id.as_str()),
            ObjectId::parse(object.object_id.as_str()),
        ) {
            if let Some(&i) = by_project.get(&project) {
                refused.push((i, id, object.stamp));
            }
        }
    }
    let mut written: Vec<(usize, ProjectWrites)> = Vec::new();
    for (project, writes) in report.projects {
        if let Some(&i) = by_project.get(&project) {
            written.push((i, writes));
        }
    }
    outcome.refused.extend(report.refused);
    for (i, id, stamp) in refused {
        jobs[i].refused.push((id, stamp));
    }
    for (i, writes) in written {
        let total = &mut jobs[i].written;
        total.expected += writes.expected;
        total.written += writes.written;
        total.retries += writes.retries;
        if total.error.is_none() {
            total.error = writes.error;
        }
    }
}

/// How a claim that is done ended: lost if another saver took it over, else as its reads and writes went.
fn ending_of_job(leases: &Leases, job: &Job) -> Ending {
    job.span.record("retries", job.written.retries);
    if leases.state(&job.claim.project) == Some(LeaseState::Lost) {
        return Ending::Lost;
    }
    match &job.failed {
        Some(error) if job.written.error.is_none() => Ending::Failed(error.clone()),
        _ => ending_of(&job.written),
    }
}

/// What the release of a claim needs from its job.
struct Finished {
    claim: Claim,
    span: tracing::Span,
    objects: usize,
    refused: Vec<(ObjectId, i64)>,
}

impl Finished {
    fn take(job: &mut Job) -> Self {
        Self {
            claim: job.claim.clone(),
            span: job.span.clone(),
            objects: job.objects,
            refused: std::mem::take(&mut job.refused),
        }
    }
}

/// Completes, puts back, or leaves to the new owner each claim that is done.
async fn release_claims(
    ctx: &PassContext,
    leases: &Arc<Leases>,
    endings: Vec<(Finished, Ending)>,
) -> Vec<(Claim, Ending)> {
    futures_util::stream::iter(endings.into_iter().map(|(job, ending)| {
        let leases = Arc::clone(leases);
        async move {
            let Finished {
                claim,
                span,
                objects,
                refused,
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
            let ending = finish(ctx, &leases, &claim, ending, &refused)
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
