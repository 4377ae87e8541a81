//! The leases of one pass: which claims this saver still holds, renewal before every write and in the background
//! while a long save runs (every lease/3), and the local deadline after which a claim must not be written even if
//! no renewal has said otherwise yet.
//!
//! Why: two savers must never save one project at the same time. The claim script gives a project to one saver
//! under a lease; a saver that stalls past its lease loses the project to another saver, and from then on must not
//! write (its data may be older than what the new owner writes) and must not put the work back (the new owner has
//! it). Every write checks [`Leases::renew`] first; a renewal that answers "not yours" marks the project lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use canvas_shared::hot::{Claim, HotError, SaveQueue};
use canvas_shared::ids::ProjectId;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where a claim stands for this saver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// Ours, until `valid_until` unless renewed.
    Held,
    /// Another saver took it over: do not write, do not put back.
    Lost,
    /// Completed or abandoned by us: no longer renewed.
    Released,
}

/// The answer of a renewal.
#[derive(Debug, Clone)]
pub(crate) enum Renewal {
    /// Still ours (for at least the lease time from when the renewal was sent).
    Held,
    /// Taken over (or released): stop.
    Lost,
    /// Redis did not answer: ownership unknown, so do not write now.
    Unknown(HotError),
}

#[derive(Debug)]
struct Entry {
    claim: Claim,
    state: LeaseState,
    /// Local deadline: the lease was renewed to `now + lease` at a moment no earlier than this minus the lease.
    valid_until: Instant,
}

/// The claims of one pass.
pub(crate) struct Leases {
    hot: Arc<dyn SaveQueue>,
    lease: Duration,
    entries: Mutex<HashMap<ProjectId, Entry>>,
}

impl Leases {
    /// `claimed_at` is when the claim request was sent: the lease cannot end before `claimed_at + lease`.
    pub(crate) fn new(
        hot: Arc<dyn SaveQueue>,
        lease: Duration,
        claims: &[Claim],
        claimed_at: Instant,
    ) -> Self {
        let entries = claims
            .iter()
            .map(|c| {
                (
                    c.project.clone(),
                    Entry {
                        claim: c.clone(),
                        state: LeaseState::Held,
                        valid_until: claimed_at + lease,
                    },
                )
            })
            .collect();
        Self {
            hot,
            lease,
            entries: Mutex::new(entries),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ProjectId, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Time kept in hand before the lease's end: no write starts with less than this left.
    pub(crate) fn margin(&self) -> Duration {
        self.lease / 4
    }

    pub(crate) fn state(&self, project: &ProjectId) -> Option<LeaseState> {
        self.lock().get(project).map(|e| e.state)
    }

    /// How long a write may take from now while the claim stays ours, or `None` if it is not (surely) ours now.
    pub(crate) fn time_left(&self, project: &ProjectId) -> Option<Duration> {
        let entries = self.lock();
        let entry = entries.get(project)?;
        if entry.state != LeaseState::Held {
            return None;
        }
        entry
            .valid_until
            .checked_duration_since(Instant::now())
            .and_then(|left| left.checked_sub(self.margin()))
            .filter(|left| !left.is_zero())
    }

    /// Renews one claim now. A claim already lost or released answers `Lost` without asking Redis.
    pub(crate) async fn renew(&self, project: &ProjectId) -> Renewal {
        let claim = match self.lock().get(project) {
            Some(e) if e.state == LeaseState::Held => e.claim.clone(),
            _ => return Renewal::Lost,
        };
        let sent = Instant::now();
        let lease_ms = self.lease.as_millis() as u64;
        match self.hot.renew_claim(&claim, lease_ms).await {
            Ok(true) => {
                let until = sent + self.lease;
                let mut entries = self.lock();
                match entries.get_mut(project) {
                    Some(e) if e.state == LeaseState::Held => {
                        if until > e.valid_until {
                            e.valid_until = until;
                        }
                        Renewal::Held
                    }
                    _ => Renewal::Lost,
                }
            }
            Ok(false) => {
                self.mark_lost(project);
                Renewal::Lost
            }
            Err(e) => Renewal::Unknown(e),
        }
    }

    /// The claim was taken over (renewal or completion said so).
    pub(crate) fn mark_lost(&self, project: &ProjectId) {
        if let Some(e) = self.lock().get_mut(project) {
            if e.state == LeaseState::Held {
                tracing::warn!(project = %project, "lease lost: another saver took the project over");
                e.state = LeaseState::Lost;
            }
        }
    }

    /// We are done with the claim (completed or abandoned): stop renewing it.
    pub(crate) fn release(&self, project: &ProjectId) {
        if let Some(e) = self.lock().get_mut(project) {
            if e.state == LeaseState::Held {
                e.state = LeaseState::Released;
            }
        }
    }

    fn held(&self) -> Vec<ProjectId> {
        self.lock()
            .iter()
            .filter(|(_, e)| e.state == LeaseState::Held)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Renews every held claim every lease/3 until the returned guard is dropped.
    pub(crate) fn keep_alive(self: &Arc<Self>) -> KeepAlive {
        let leases = Arc::clone(self);
        let every = (self.lease / 3).max(Duration::from_millis(10));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let projects = leases.held();
                let renewals = projects.iter().map(|p| leases.renew(p));
                for (project, renewal) in projects
                    .iter()
                    .zip(futures_util::future::join_all(renewals).await)
                {
                    if let Renewal::Unknown(e) = renewal {
                        tracing::warn!(project = %project, error = %e, "lease renewal failed; will retry");
                    }
                }
            }
        });
        KeepAlive { task }
    }
}

/// Stops background renewal when dropped.
pub(crate) struct KeepAlive {
    task: JoinHandle<()>,
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canvas_shared::hot::memory::MemoryHotState;
    use canvas_shared::hot::{EditContext, EditStore, LeaseClock};
    use canvas_shared::object::{Edit, NewObject};
    use canvas_shared::time::now_ms;
    use canvas_shared::Limits;

    async fn dirty_project(hot: &MemoryHotState, name: &str) -> ProjectId {
        let project = ProjectId::parse(name).unwrap();
        hot.load(&project, &[], 0, 0).await.unwrap();
        let limits = Limits::default();
        let object =
            NewObject::from_json(serde_json::json!({"id": "o1", "type": "rect"}), &limits).unwrap();
        let ctx = EditContext {
            by: "u",
            origin: "c",
            now_ms: now_ms(),
            limits: &limits,
            seq_floor: 0,
        };
        hot.apply(&project, &Edit::Create(object), ctx)
            .await
            .unwrap();
        project
    }

    #[tokio::test]
    async fn renewal_keeps_and_takeover_loses_the_claim() {
        let clock = LeaseClock::pinned(now_ms());
        let hot = MemoryHotState::new().with_lease_clock(clock.clone());
        let project = dirty_project(&hot, "p1").await;
        let claims = hot.claim_dirty("a", 10, 100).await.unwrap();
        assert_eq!(claims.len(), 1);
        let leases = Leases::new(
            Arc::new(hot.clone()),
            Duration::from_millis(100),
            &claims,
            Instant::now(),
        );
        assert!(matches!(leases.renew(&project).await, Renewal::Held));
        assert!(leases.time_left(&project).is_some());
        // Another saver takes over after expiry.
        clock.set(now_ms() + 1000);
        let stolen = hot.claim_dirty("b", 10, 100).await.unwrap();
        assert_eq!(stolen.len(), 1);
        assert!(matches!(leases.renew(&project).await, Renewal::Lost));
        assert_eq!(leases.state(&project), Some(LeaseState::Lost));
        assert!(leases.time_left(&project).is_none());
    }

    #[tokio::test]
    async fn keep_alive_renews_in_the_background() {
        let hot = MemoryHotState::new();
        let project = dirty_project(&hot, "p2").await;
        let claims = hot.claim_dirty("a", 10, 60).await.unwrap();
        let leases = Arc::new(Leases::new(
            Arc::new(hot.clone()),
            Duration::from_millis(60),
            &claims,
            Instant::now(),
        ));
        let _guard = leases.keep_alive();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Without renewal the lease would have expired and another saver could claim it.
        assert!(hot.claim_dirty("b", 10, 60).await.unwrap().is_empty());
        assert!(leases.time_left(&project).is_some());
    }
}
