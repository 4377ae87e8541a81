//! Cold load: a project the hot state does not hold (new, evicted, or Redis restarted) is read from the durable
//! store and installed. Within a gateway one load runs per project at a time; across gateways the hot state's
//! load is install-if-absent, so the project is installed exactly once and never over edits made meanwhile.
//!
//! A read of a project the durable store does not hold installs nothing (any viewer may read any id, and each
//! installed project costs Redis memory until it is evicted): it gets an empty snapshot. An edit installs it.
//!
//! Snapshot reads are shared: a join burst, or every client's resync after the pub/sub connection came back, asks
//! for the same project at once, and one read serves every caller that asked before it started (a caller never
//! gets a read that started before it asked, which could miss edits it was not yet subscribed to).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use canvas_shared::durable::{DurableStore, LoadedProject};
use canvas_shared::hot::{EditStore, HotError, Snapshot};
use canvas_shared::{ErrorCode, ProjectId, Rejection};

use crate::hub::Hub;
use crate::metrics::GatewayMetrics;
use crate::replay::Replay;

/// Reads projects from the durable store into the hot state, one load per project at a time on this gateway.
pub(crate) struct Loader {
    hot: Arc<dyn EditStore>,
    durable: Arc<dyn DurableStore>,
    /// The highest `seq` this gateway has seen per project: an installed project never starts below it.
    hub: Arc<Hub>,
    metrics: Arc<GatewayMetrics>,
    /// Per-project gates so concurrent joins on one gateway share a single load.
    gates: Mutex<HashMap<ProjectId, Arc<tokio::sync::Mutex<()>>>>,
    /// Per-project shared snapshot reads.
    reads: Mutex<HashMap<ProjectId, Arc<SharedRead>>>,
}

/// What a shared read gave its callers.
type ReadResult = Result<Arc<Snapshot>, Rejection>;

/// One project's shared snapshot reads: callers take a ticket when they ask, and a read serves every ticket taken
/// before it started.
#[derive(Default)]
struct SharedRead {
    tickets: std::sync::atomic::AtomicU64,
    /// Held while a read runs; holds the last read's result and the first ticket it does not serve.
    last: tokio::sync::Mutex<Option<(u64, ReadResult)>>,
}

impl Loader {
    /// A replay for a client that has the project up to `since`, loading the project first if the hot state does
    /// not hold it. `None` when only a snapshot can bring the client up to date: the journal does not reach back,
    /// the hot state cannot be read, or its `seq` is below one this gateway already saw (the snapshot path raises
    /// it first).
    pub(crate) async fn replay_for_client(
        &self,
        project: &ProjectId,
        since: u64,
    ) -> Option<Replay> {
        let opened = match Replay::open(self.hot.as_ref(), project, since).await {
            Err(HotError::NotLoaded) => {
                self.ensure_loaded(project).await.ok()?;
                Replay::open(self.hot.as_ref(), project, since).await
            }
            other => other,
        };
        opened
            .ok()
            .flatten()
            .filter(|replay| replay.seq >= self.hub.last_seq(project))
    }

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
            reads: Mutex::default(),
        }
    }

    /// The project's snapshot, shared with every caller waiting for the same project (see the module doc).
    pub(crate) async fn shared_snapshot(&self, project: &ProjectId) -> ReadResult {
        use std::sync::atomic::Ordering;
        let slot = {
            let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(reads.entry(project.clone()).or_default())
        };
        let ticket = slot.tickets.fetch_add(1, Ordering::SeqCst);
        let result = {
            let mut last = slot.last.lock().await;
            match &*last {
                Some((served_before, result)) if ticket < *served_before => result.clone(),
                _ => {
                    let served_before = slot.tickets.load(Ordering::SeqCst);
                    let result = self.snapshot_retrying(project).await.map(Arc::new);
                    *last = Some((served_before, result.clone()));
                    result
                }
            }
        };
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        // Two references: the map's and ours. Dropping the entry drops the last result too, so no snapshot is
        // kept once nobody waits for it.
        if reads
            .get(project)
            .is_some_and(|s| Arc::ptr_eq(s, &slot) && Arc::strong_count(s) == 2)
        {
            reads.remove(project);
        }
        result
    }

    /// The project's snapshot, loading it first if needed. Reads are idempotent, so a failed one is retried a
    /// few times: the first command after a Redis restart typically fails while the connection is re-made.
    pub(crate) async fn snapshot(&self, project: &ProjectId) -> Result<Snapshot, Rejection> {
        Ok(Snapshot::clone(&*self.shared_snapshot(project).await?))
    }

    async fn snapshot_retrying(&self, project: &ProjectId) -> Result<Snapshot, Rejection> {
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
            Err(HotError::NotLoaded) => match self.load_for_read(project).await? {
                Some(empty) => return Ok(empty),
                None => self.hot.snapshot(project).await,
            },
            other => other,
        }
        .map_err(|e| e.to_rejection())?;
        self.never_below_seen(project, snapshot).await
    }

    /// Installs the project for a read, unless the durable store holds no object of it: then nothing is
    /// installed and the empty snapshot is returned.
    async fn load_for_read(&self, project: &ProjectId) -> Result<Option<Snapshot>, Rejection> {
        let gate = self.gate(project);
        let _one_at_a_time = gate.lock().await;
        match self.hot.snapshot(project).await {
            Ok(_) => return Ok(None),
            Err(HotError::NotLoaded) => {}
            Err(e) => return Err(e.to_rejection()),
        }
        let loaded = self.read_durable(project).await?;
        if loaded.objects.is_empty() {
            return Ok(Some(Snapshot {
                seq: self.hub.last_seq(project).max(loaded.seq),
                saved_seq: loaded.seq,
                objects: Vec::new(),
            }));
        }
        self.install(project, loaded).await?;
        Ok(None)
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
        let loaded = self.read_durable(project).await?;
        self.install(project, loaded).await
    }

    async fn read_durable(&self, project: &ProjectId) -> Result<LoadedProject, Rejection> {
        self.durable.load_project(project).await.map_err(|e| {
            tracing::warn!(%project, error = %e, "cold load failed");
            Rejection::new(
                ErrorCode::Unavailable,
                "the project could not be loaded from storage; try again",
            )
        })
    }

    async fn install(&self, project: &ProjectId, loaded: LoadedProject) -> Result<(), Rejection> {
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
