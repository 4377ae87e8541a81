//! Which projects have a client on this gateway, recorded in the hot state so that no gateway's project is
//! evicted while someone works in it. Each gateway renews its own record per project (a hash field named by its
//! id, in the project's hash slot, so the eviction script checks it atomically); a record a gateway stopped
//! renewing (it died) lapses by itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use canvas_shared::hot::EditStore;
use canvas_shared::time::now_ms;
use canvas_shared::ProjectId;

/// How often every record is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(10);
/// How long a record holds without renewal: a few renewals, so one slow or failed renewal changes nothing.
const HOLDS_FOR: Duration = Duration::from_secs(30);
/// Projects renewed per round trip.
const RENEW_CHUNK: usize = 500;

/// This gateway's projects with at least one local client.
pub(crate) struct Occupancy {
    /// Unique per gateway process.
    gateway: String,
    hot: Arc<dyn EditStore>,
    clients: Mutex<HashMap<ProjectId, usize>>,
}

/// A client's place in its project; leaving (dropping it) clears the record when it was the last here.
pub(crate) struct Occupant {
    occupancy: Arc<Occupancy>,
    project: ProjectId,
}

impl Occupancy {
    /// Starts renewing in the background (until the occupancy is dropped).
    pub(crate) fn start(hot: Arc<dyn EditStore>) -> Arc<Self> {
        let occupancy = Arc::new(Self {
            gateway: uuid::Uuid::new_v4().simple().to_string(),
            hot,
            clients: Mutex::default(),
        });
        tokio::spawn(renew(Arc::downgrade(&occupancy)));
        occupancy
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<ProjectId, usize>> {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client joins `project`: recorded before it gets its snapshot when it is the first here. A failed write
    /// is logged and retried by the next renewal (an eviction meanwhile only costs a reload).
    pub(crate) async fn enter(self: &Arc<Self>, project: &ProjectId) -> Occupant {
        let first = {
            let mut clients = self.clients();
            let count = clients.entry(project.clone()).or_insert(0);
            *count += 1;
            *count == 1
        };
        if first {
            if let Err(e) = self.mark(std::slice::from_ref(project)).await {
                tracing::warn!(%project, error = %e, "recording the project's clients failed; retried on renewal");
            }
        }
        Occupant {
            occupancy: Arc::clone(self),
            project: project.clone(),
        }
    }

    async fn mark(&self, projects: &[ProjectId]) -> Result<(), canvas_shared::hot::HotError> {
        let until = now_ms() + HOLDS_FOR.as_millis() as i64;
        self.hot
            .mark_present(&self.gateway, projects, until, HOLDS_FOR.as_millis() as u64)
            .await
    }

    fn leave(self: &Arc<Self>, project: &ProjectId) {
        let last = {
            let mut clients = self.clients();
            match clients.get_mut(project) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                Some(_) => {
                    clients.remove(project);
                    true
                }
                None => false,
            }
        };
        if last {
            let occupancy = Arc::clone(self);
            let project = project.clone();
            tokio::spawn(async move {
                // Unless someone joined again meanwhile (then the record must stay).
                if occupancy.clients().contains_key(&project) {
                    return;
                }
                if let Err(e) = occupancy
                    .hot
                    .mark_absent(&occupancy.gateway, &project)
                    .await
                {
                    tracing::debug!(%project, error = %e, "clearing the project's clients failed; it lapses by itself");
                }
            });
        }
    }
}

impl Drop for Occupant {
    fn drop(&mut self) {
        self.occupancy.leave(&self.project);
    }
}

async fn renew(occupancy: Weak<Occupancy>) {
    let mut tick = tokio::time::interval(RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(occupancy) = occupancy.upgrade() else {
            return;
        };
        let projects: Vec<ProjectId> = occupancy.clients().keys().cloned().collect();
        for chunk in projects.chunks(RENEW_CHUNK) {
            if let Err(e) = occupancy.mark(chunk).await {
                tracing::warn!(error = %e, projects = chunk.len(), "renewing the projects' clients failed");
            }
        }
    }
}
