//! Cold load: a project the hot state does not hold (new, evicted, or Redis restarted) is read from the durable
//! store and installed. Within a gateway one load runs per project at a time; across gateways the hot state's
//! load is install-if-absent, so the project is installed exactly once and never over edits made meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canvas_shared::hot::{HotError, Snapshot};
use canvas_shared::{ErrorCode, ProjectId, Rejection};

use crate::state::AppState;

/// Per-project gates so concurrent joins on one gateway share a single load.
#[derive(Default)]
pub struct Loader {
    gates: Mutex<HashMap<ProjectId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Loader {
    fn gate(&self, project: &ProjectId) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(gates.entry(project.clone()).or_default())
    }

    fn forget(&self, project: &ProjectId) {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        if gates
            .get(project)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(project);
        }
    }
}

/// The project's snapshot, loading it first if needed. Reads are idempotent, so a failed one is retried a few
/// times: the first command after a Redis restart typically fails while the connection is re-made.
pub async fn snapshot(state: &AppState, project: &ProjectId) -> Result<Snapshot, Rejection> {
    let mut delay = Duration::from_millis(50);
    for _ in 0..4 {
        match snapshot_once(state, project).await {
            Err(r) if r.code == ErrorCode::Unavailable => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    snapshot_once(state, project).await
}

async fn snapshot_once(state: &AppState, project: &ProjectId) -> Result<Snapshot, Rejection> {
    match state.hot.snapshot(project).await {
        Err(HotError::NotLoaded) => {
            ensure_loaded(state, project).await?;
            state
                .hot
                .snapshot(project)
                .await
                .map_err(|e| e.to_rejection())
        }
        other => other.map_err(|e| e.to_rejection()),
    }
}

/// Installs the project from the durable store unless someone already has.
pub async fn ensure_loaded(state: &AppState, project: &ProjectId) -> Result<(), Rejection> {
    let gate = state.loader.gate(project);
    let result = async {
        let _one_at_a_time = gate.lock().await;
        match state.hot.snapshot(project).await {
            Ok(_) => return Ok(()),
            Err(HotError::NotLoaded) => {}
            Err(e) => return Err(e.to_rejection()),
        }
        let objects = state.durable.load_project(project).await.map_err(|e| {
            tracing::warn!(%project, error = %e, "cold load failed");
            Rejection::new(ErrorCode::Unavailable, "the project could not be loaded from storage; try again")
        })?;
        let floor = state.hub.last_seq(project);
        let installed = state.hot.load(project, &objects, floor).await.map_err(|e| e.to_rejection())?;
        if installed {
            state.metrics.cold_loads.inc();
        }
        tracing::info!(%project, objects = objects.len(), installed, seq_floor = floor, "cold load");
        Ok(())
    }
    .await;
    drop(gate);
    state.loader.forget(project);
    result
}
