//! Eviction: after each save pass the saver removes from the hot state the projects that have been idle for the
//! configured time, so that Redis holds only the projects in use (invariant 10). The saver is where it belongs: it
//! already knows when a project is fully saved, and it can persist a project's `seq` before letting it go, so a
//! reload resumes above every seq a client saw.
//!
//! Each step is bounded (at most [`EVICT_PER_PASS`] candidates, least recently used first), and each eviction is
//! one atomic script that re-checks everything itself (idle, saved, unclaimed, no client on any gateway, no object
//! held back), so an edit, a join, a claim or a cold load racing it either keeps the project or finds it gone and
//! loads it again.

use std::sync::Arc;

use canvas_shared::hot::{Eviction, HotError};
use canvas_shared::ids::ProjectId;
use canvas_shared::time::now_ms;
use futures_util::StreamExt;

use crate::save_pass::PassContext;

/// Candidates looked at per step.
pub(crate) const EVICT_PER_PASS: usize = 1000;
/// Eviction scripts in flight at once.
const CONCURRENCY: usize = 16;

/// What one eviction step did.
#[derive(Debug, Default, Clone)]
pub(crate) struct EvictionOutcome {
    pub(crate) evicted: u64,
    /// Candidates that turned out to be in use, unsaved or already gone.
    pub(crate) kept: u64,
    pub(crate) errors: Vec<(Option<String>, String)>,
}

/// Why one project could not be evicted.
#[derive(Debug, thiserror::Error)]
enum EvictError {
    #[error("evicting failed: {0}")]
    Hot(#[from] HotError),
    #[error("persisting the seq before eviction failed: {0}")]
    PersistSeq(#[from] canvas_shared::durable::DurableError),
}

/// Evicts idle projects, if eviction is on.
pub(crate) async fn evict_idle(ctx: &Arc<PassContext>) -> EvictionOutcome {
    let mut outcome = EvictionOutcome::default();
    let Some(idle) = ctx.settings.idle_evict else {
        return outcome;
    };
    let idle_before = now_ms() - idle.as_millis() as i64;
    let candidates = match ctx.hot.idle_projects(idle_before, EVICT_PER_PASS).await {
        Ok(candidates) => candidates,
        Err(e) => {
            outcome
                .errors
                .push((None, format!("listing idle projects failed: {e}")));
            return outcome;
        }
    };
    let results: Vec<(ProjectId, Result<bool, EvictError>)> =
        futures_util::stream::iter(candidates.into_iter().map(|project| async move {
            let result = evict_one(ctx, &project, idle_before).await;
            (project, result)
        }))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for (project, result) in results {
        match result {
            Ok(true) => outcome.evicted += 1,
            Ok(false) => outcome.kept += 1,
            Err(e) => {
                tracing::warn!(%project, error = %e, "eviction failed; the project stays");
                outcome
                    .errors
                    .push((Some(project.to_string()), e.to_string()));
            }
        }
    }
    if outcome.evicted > 0 {
        tracing::info!(
            evicted = outcome.evicted,
            kept = outcome.kept,
            "evicted idle projects"
        );
    }
    outcome
}

/// One project: evicted (true), or kept because it is in use (false). A project whose seq no save recorded as
/// persisted gets it persisted first.
async fn evict_one(
    ctx: &PassContext,
    project: &ProjectId,
    idle_before: i64,
) -> Result<bool, EvictError> {
    let seq = match ctx.hot.evict(project, idle_before, now_ms(), 0).await? {
        Eviction::Evicted { .. } => return Ok(true),
        Eviction::Busy | Eviction::Gone => return Ok(false),
        Eviction::Unpersisted { seq } => seq,
    };
    ctx.durable.persist_seq(project, seq).await?;
    Ok(matches!(
        ctx.hot.evict(project, idle_before, now_ms(), seq).await?,
        Eviction::Evicted { .. }
    ))
}
