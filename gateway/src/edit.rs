//! Where an edit is applied: one atomic hot-state call (in Redis, one script), with a cold load first if the
//! project is not in the hot state.

use canvas_shared::hot::{Applied, EditContext, HotError};
use canvas_shared::object::Edit;
use canvas_shared::time::now_ms;
use canvas_shared::{ProjectId, Rejection};

use crate::state::AppState;

/// Why an edit did not end in an ack.
#[derive(Debug, Clone)]
pub(crate) enum EditFailure {
    /// Not applied, for this reason.
    Refused(Rejection),
    /// Sent to the shared state, reply lost: it may have been applied. The client must re-read to know.
    OutcomeUnknown,
}

impl From<Rejection> for EditFailure {
    fn from(r: Rejection) -> Self {
        EditFailure::Refused(r)
    }
}

/// Applies `edit` by `user` from connection `origin`.
#[tracing::instrument(
    name = "apply_edit",
    skip_all,
    fields(project = %project, kind = edit.kind(), object = %edit.object_id(), seq, result)
)]
pub(crate) async fn apply(
    state: &AppState,
    project: &ProjectId,
    edit: &Edit,
    user: &str,
    origin: &str,
) -> Result<Applied, EditFailure> {
    let attempt = || {
        let ctx = EditContext {
            by: user,
            origin,
            now_ms: now_ms(),
            limits: &state.limits,
            seq_floor: state.hub.last_seq(project),
        };
        state.hot.apply(project, edit, ctx)
    };
    let applied = match attempt().await {
        Err(HotError::NotLoaded) => {
            state.loader.ensure_loaded(project).await?;
            attempt().await
        }
        other => other,
    };
    let result = match &applied {
        Ok(_) => "ok",
        Err(HotError::OutcomeUnknown(_)) => "unknown_outcome",
        Err(e) => e.to_rejection().code.as_str(),
    };
    state.metrics.record_edit(edit.kind(), result);
    let span = tracing::Span::current();
    span.record("result", result);
    if let Ok(a) = &applied {
        span.record("seq", a.seq);
    }
    match &applied {
        Ok(a) => state.hub.observe_seq(project, a.seq),
        Err(HotError::Unavailable(e)) => {
            tracing::warn!(%project, error = %e, "edit failed: hot state unavailable")
        }
        Err(HotError::OutcomeUnknown(e)) => {
            tracing::warn!(%project, error = %e, "edit outcome unknown: the reply never came")
        }
        Err(_) => {}
    }
    applied.map_err(|e| match e {
        HotError::OutcomeUnknown(_) => EditFailure::OutcomeUnknown,
        other => EditFailure::Refused(other.to_rejection()),
    })
}
