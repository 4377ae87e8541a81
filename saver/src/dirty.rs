//! The dirty index and the residency figures as operators see them: read from the hot state at request time,
//! bounded by a timeout, for `/metrics` (`dirtyProjects`, `memory`) and the Prometheus gauges alike.

use std::time::Duration;

use canvas_shared::hot::{DirtySummary, HotError, Residency, SaveQueue};

/// How long `GET /metrics` (and `/metrics/prometheus`) waits for the dirty index.
pub(crate) const DIRTY_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the dirty index could not be read for this request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirtyUnreadable {
    #[error(transparent)]
    Hot(#[from] HotError),
    #[error("the dirty index did not answer in time")]
    TimedOut,
}

/// Reads the dirty index now, waiting at most [`DIRTY_TIMEOUT`].
pub(crate) async fn read_dirty(hot: &dyn SaveQueue) -> Result<DirtySummary, DirtyUnreadable> {
    match tokio::time::timeout(DIRTY_TIMEOUT, hot.dirty_summary()).await {
        Ok(summary) => Ok(summary?),
        Err(_) => Err(DirtyUnreadable::TimedOut),
    }
}

/// How many of the biggest projects are reported.
pub(crate) const BIGGEST_PROJECTS: usize = 10;

/// Resident projects, evictions, cold loads, Redis memory and the biggest projects, read now.
pub(crate) async fn read_residency(hot: &dyn SaveQueue) -> Result<Residency, String> {
    match tokio::time::timeout(DIRTY_TIMEOUT, hot.residency(BIGGEST_PROJECTS)).await {
        Ok(Ok(residency)) => Ok(residency),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the hot state did not answer in time".into()),
    }
}
