//! Cold load: a project the hot state does not hold (new, evicted, or Redis restarted) is read from the durable
//! store and installed. Within a gateway one load runs per project at a time; across gateways the hot state's
//! load is install-if-absent, so the project is installed exactly once and never over edits made meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canvas_shared::durable::DurableStore;
use canvas_shared::hot::{EditStore, HotError, Snapshot};
use canvas_shared::{ErrorCode, ProjectId, Rejection};

use crate::hub::Hub;
use crate::metrics::GatewayMetrics;

/// Reads projects from the durable store into the hot state, one load per project at a time on this gateway.
pub(crate) struct Loader {
    hot: Arc<dyn EditStore>,
    durable: Arc<dyn DurableStore>,
    /// The highest `seq` this gateway has seen per project: an installed project never starts below it.
    hub: Arc<Hub>,
    metrics: Arc<GatewayMetrics>,
    /// Per-project gates so concurrent joins on one gateway share a single load.
    gates: Mutex<HashMap<ProjectId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Loader {
    pub(crate) fn new(
        hot: Arc<dyn EditStore>,
        durable: Arc<dyn DurableStore>,
        hub: Arc<Hub>,
        metrics: Arc<GatewayMetrics>,
    ) -> Self {
        Self {
            hot,
            durable,
            hub,
            metrics,
            gates: Mutex::default(),
        }
    }

    /// The project's snapshot, loading it first if needed. Reads are idempotent, so a failed one is retried a
    /// few times: the first command after a Redis restart typically fails while the connection is re-made.
    pub(crate) async fn snapshot(&self, project: &ProjectId) -> Result<Snapshot, Rejection> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..4 {
            match self.snapshot_once(project).await {
                Err(r) if r.code == ErrorCode::Unavailable => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
        self.snapshot_once(project).await
    }

    async fn snapshot_once(&self, project: &ProjectId) -> Result<Snapshot, Rejection> {
        let snapshot = match self.hot.snapshot(project).await {
            Err(HotError::NotLoaded) => {
                self.ensure_loaded(project).await?;
                self.hot.snapshot(project).await
            }
            other => other,
        }
        .map_err(|e| e.to_rejection())?;
        self.never_below_seen(project, snapshot).await
    }

    /// A hot state whose `seq` is below what this gateway has already seen for the project rolled back (lost its
    /// AOF tail, or a replica without the last writes took over): its `seq` is raised first, so no seq a client
    /// saw is handed out again for a different edit.
    async fn never_below_seen(
        &self,
        project: &ProjectId,
        snapshot: Snapshot,
    ) -> Result<Snapshot, Rejection> {
        let seen = self.hub.last_seq(project);
        if snapshot.seq >= seen {
            return Ok(snapshot);
        }
        tracing::warn!(%project, hot_seq = snapshot.seq, seen, "hot state seq rolled back; raising it");
        self.hot
            .raise_seq(project, seen)
            .await
            .map_err(|e| e.to_rejection())?;
        self.hot
            .snapshot(project)
            .await
            .map_err(|e| e.to_rejection())
    }

    /// Installs the project from the durable store unless someone already has.
    pub(crate) async fn ensure_loaded(&self, project: &ProjectId) -> Result<(), Rejection> {
        let gate = self.gate(project);
        let _one_at_a_time = gate.lock().await;
        match self.hot.snapshot(project).await {
            Ok(_) => return Ok(()),
            Err(HotError::NotLoaded) => {}
            Err(e) => return Err(e.to_rejection()),
        }
        self.install(project).await
    }

    async fn install(&self, project: &ProjectId) -> Result<(), Rejection> {
        let loaded = self.durable.load_project(project).await.map_err(|e| {
            tracing::warn!(%project, error = %e, "cold load failed");
            Rejection::new(
                ErrorCode::Unavailable,
                "the project could not be loaded from storage; try again",
            )
        })?;
        // Above every seq that was saved and every seq this gateway has seen, so none is ever handed out twice.
        let floor = self.hub.last_seq(project).max(loaded.seq);
        let installed = self
            .hot
            .load(project, &loaded.objects, floor, loaded.stamp_floor)
            .await
            .map_err(|e| e.to_rejection())?;
        if installed {
            self.metrics.cold_loads.inc();
        }
        tracing::info!(%project, objects = loaded.objects.len(), installed, seq_floor = floor, "cold load");
        Ok(())
    }

    fn gate(&self, project: &ProjectId) -> Gate<'_> {
        let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        Gate {
            loader: self,
            project: project.clone(),
            lock: Arc::clone(gates.entry(project.clone()).or_default()),
        }
    }
}

/// One caller's hold on a project's load gate. Dropping it (also when the caller is cancelled mid-load) removes
/// the gate once nobody else holds it, so the gate map never keeps entries for projects nobody is loading.
struct Gate<'a> {
    loader: &'a Loader,
    project: ProjectId,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Gate<'_> {
    async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        let mut gates = self.loader.gates.lock().unwrap_or_else(|e| e.into_inner());
        // Two references: the map's and ours. Anyone else waiting holds a third.
        if gates
            .get(&self.project)
            .is_some_and(|g| Arc::ptr_eq(g, &self.lock) && Arc::strong_count(g) == 2)
        {
            gates.remove(&self.project);
        }
    }
}
