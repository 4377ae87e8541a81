//! The auto-save figures of one saver process, in the exact shape of the contract's `GET /metrics`
//! (`autoSave` + `dirtyProjects`), shared by the HTTP and gRPC endpoints. Passes report into it; readers take a
//! consistent snapshot under one short lock. Every pass also feeds the Prometheus counters
//! ([`crate::prometheus`]).

use std::collections::VecDeque;
use std::sync::Mutex;

use canvas_shared::hot::{DirtySummary, Residency, SaveQueue};
use serde::Serialize;
use tokio::sync::watch;

use crate::dirty::read_dirty;
use crate::prometheus::SaverPrometheus;
use crate::report::{LoopState, PassOutcome};

/// How many recent passes and errors are kept.
pub(crate) const RECENT_LIMIT: usize = 20;

/// One entry of `recentSaves`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentSave {
    /// Epoch ms when the pass ended.
    pub at: i64,
    pub projects: u64,
    pub objects: u64,
    pub duration_ms: f64,
    /// Project saves of this pass that failed (extension).
    pub failed: u64,
    /// BatchWriteItem retries in this pass (extension).
    pub retries: u64,
}

/// One entry of `recentErrors`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentError {
    pub at: i64,
    /// `null` for errors not tied to one project (the claim itself failed, the store is not ready).
    pub project_id: Option<String>,
    /// Present for an object the durable store refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_id: Option<String>,
    pub message: String,
}

/// The `autoSave` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoSave {
    pub is_running: bool,
    pub interval_ms: u64,
    /// Passes that saved at least one project (the contract calls them `totalSaves`; a pass saves many projects).
    #[serde(rename = "totalSaves")]
    pub saving_passes: u64,
    pub total_objects_saved: u64,
    pub average_duration_ms: f64,
    pub success_rate: f64,
    pub failed_saves: u64,
    pub recent_saves: Vec<RecentSave>,
    pub recent_errors: Vec<RecentError>,
    // Extensions.
    pub state: LoopState,
    pub successful_saves: u64,
    pub lost_leases: u64,
    pub retries: u64,
    /// Writes not needed: DynamoDB already held a newer (or the same) stamp of the item.
    pub superseded_writes: u64,
    /// Objects DynamoDB refused; each is held back in Redis until it changes again.
    pub rejected_objects: u64,
    pub passes: u64,
    pub owner: String,
    pub lease_ms: u64,
}

/// The `dirtyProjects` object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DirtyProjects {
    /// `null` only when the dirty index could not be read (then `error` says why).
    pub count: Option<usize>,
    pub oldest_modification: Option<i64>,
    pub project_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DirtyProjects {
    pub(crate) fn from_summary(summary: DirtySummary) -> Self {
        Self {
            count: Some(summary.count),
            oldest_modification: summary.oldest_modification,
            project_ids: summary.project_ids,
            error: None,
        }
    }

    pub(crate) fn unavailable(error: String) -> Self {
        Self {
            count: None,
            oldest_modification: None,
            project_ids: Vec::new(),
            error: Some(error),
        }
    }
}

/// One of the biggest projects in `memory.biggestProjects`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSize {
    pub project_id: String,
    /// Total object JSON bytes, as of the project's last save or load.
    pub bytes: u64,
}

/// The `memory` object (extension): what the hot state holds, and how it is kept bounded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryFigures {
    /// `CANVAS_IDLE_EVICT_MS` of this saver (0: projects are never evicted).
    pub idle_evict_ms: u64,
    /// Projects this saver evicted from the hot state.
    pub evictions: u64,
    /// Projects loaded in the hot state now; `null` when it could not be read (then `error` says why).
    pub resident_projects: Option<u64>,
    /// Cold loads by every gateway since the hot state started.
    pub cold_loads: Option<u64>,
    /// Redis `used_memory` (bytes).
    pub redis_used_memory: Option<u64>,
    /// The biggest resident projects, biggest first.
    pub biggest_projects: Vec<ProjectSize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole `GET /metrics` document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetricsDoc {
    pub auto_save: AutoSave,
    pub dirty_projects: DirtyProjects,
    pub memory: MemoryFigures,
}

#[derive(Debug)]
struct Figures {
    passes: u64,
    /// Passes that saved at least one project.
    saving_passes: u64,
    total_objects: u64,
    total_duration_ms: f64,
    succeeded: u64,
    failed: u64,
    lost: u64,
    retries: u64,
    superseded: u64,
    rejected: u64,
    evictions: u64,
    recent_saves: VecDeque<RecentSave>,
    recent_errors: VecDeque<RecentError>,
}

/// The figures of one saver process.
#[derive(Debug)]
pub struct Metrics {
    interval_ms: u64,
    lease_ms: u64,
    idle_evict_ms: u64,
    owner: String,
    state: watch::Sender<LoopState>,
    figures: Mutex<Figures>,
    prometheus: SaverPrometheus,
}

/// Longest error message kept (store errors can carry a whole request context).
pub(crate) const MESSAGE_LIMIT: usize = 500;

fn clip(message: &str) -> String {
    if message.len() <= MESSAGE_LIMIT {
        return message.to_string();
    }
    let mut end = MESSAGE_LIMIT;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

fn push_capped<T>(list: &mut VecDeque<T>, item: T) {
    list.push_back(item);
    while list.len() > RECENT_LIMIT {
        list.pop_front();
    }
}

impl Metrics {
    pub fn new(interval_ms: u64, lease_ms: u64, owner: String) -> Self {
        Self {
            interval_ms,
            lease_ms,
            idle_evict_ms: 0,
            owner,
            state: watch::Sender::new(LoopState::WaitingForStore),
            figures: Mutex::new(Figures {
                passes: 0,
                saving_passes: 0,
                total_objects: 0,
                total_duration_ms: 0.0,
                succeeded: 0,
                failed: 0,
                lost: 0,
                retries: 0,
                superseded: 0,
                rejected: 0,
                evictions: 0,
                recent_saves: VecDeque::new(),
                recent_errors: VecDeque::new(),
            }),
            prometheus: SaverPrometheus::default(),
        }
    }

    /// Reports the idle time after which this saver evicts projects (0: never).
    pub fn with_idle_evict_ms(mut self, idle_evict_ms: u64) -> Self {
        self.idle_evict_ms = idle_evict_ms;
        self
    }

    /// Records one eviction step.
    pub(crate) fn record_eviction(&self, outcome: &crate::eviction::EvictionOutcome) {
        self.prometheus.evictions.inc_by(outcome.evicted);
        let mut f = self.lock();
        f.evictions += outcome.evicted;
        let at = canvas_shared::time::now_ms();
        for (project_id, message) in &outcome.errors {
            push_capped(
                &mut f.recent_errors,
                RecentError {
                    at,
                    project_id: project_id.clone(),
                    object_id: None,
                    message: clip(message),
                },
            );
        }
    }

    /// The `memory` object, with what the hot state holds now.
    pub fn memory(&self, residency: Result<Residency, String>) -> MemoryFigures {
        let evictions = self.lock().evictions;
        match residency {
            Ok(r) => MemoryFigures {
                idle_evict_ms: self.idle_evict_ms,
                evictions,
                resident_projects: Some(r.resident),
                cold_loads: Some(r.cold_loads),
                redis_used_memory: r.used_memory,
                biggest_projects: r
                    .biggest
                    .into_iter()
                    .map(|(project_id, bytes)| ProjectSize { project_id, bytes })
                    .collect(),
                error: None,
            },
            Err(error) => MemoryFigures {
                idle_evict_ms: self.idle_evict_ms,
                evictions,
                resident_projects: None,
                cold_loads: None,
                redis_used_memory: None,
                biggest_projects: Vec::new(),
                error: Some(error),
            },
        }
    }

    /// The Prometheus counters fed by [`Metrics::record_pass`].
    pub fn prometheus(&self) -> &SaverPrometheus {
        &self.prometheus
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Figures> {
        // Figures stay consistent even if a holder panicked: every update is a few plain assignments.
        self.figures.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    pub fn set_state(&self, state: LoopState) {
        self.state.send_replace(state);
    }

    pub fn state(&self) -> LoopState {
        *self.state.borrow()
    }

    /// Follows the loop state (the gRPC health service reports from it).
    pub fn watch_state(&self) -> watch::Receiver<LoopState> {
        self.state.subscribe()
    }

    /// Records an error that is not part of a pass outcome (e.g. the store is not ready).
    pub fn record_error(&self, at: i64, project_id: Option<String>, message: String) {
        push_capped(
            &mut self.lock().recent_errors,
            RecentError {
                at,
                project_id,
                object_id: None,
                message: clip(&message),
            },
        );
    }

    /// Records one pass. Passes that found nothing to do only count in `passes`.
    pub fn record_pass(&self, outcome: &PassOutcome) {
        self.prometheus.record_pass(outcome);
        let mut f = self.lock();
        f.passes += 1;
        f.retries += outcome.retries;
        for (project_id, message) in &outcome.errors {
            push_capped(
                &mut f.recent_errors,
                RecentError {
                    at: outcome.at,
                    project_id: project_id.clone(),
                    object_id: None,
                    message: clip(message),
                },
            );
        }
        f.superseded += outcome.superseded;
        f.rejected += outcome.refused.len() as u64;
        for refused in &outcome.refused {
            push_capped(
                &mut f.recent_errors,
                RecentError {
                    at: outcome.at,
                    project_id: Some(refused.project_id.clone()),
                    object_id: Some(refused.object_id.clone()),
                    message: clip(&refused.message),
                },
            );
        }
        if outcome.projects() == 0 {
            return;
        }
        f.succeeded += outcome.succeeded;
        f.failed += outcome.failed + outcome.lost;
        f.lost += outcome.lost;
        f.total_objects += outcome.objects;
        if outcome.succeeded > 0 {
            f.saving_passes += 1;
            f.total_duration_ms += outcome.duration_ms;
        }
        push_capped(
            &mut f.recent_saves,
            RecentSave {
                at: outcome.at,
                projects: outcome.projects(),
                objects: outcome.objects,
                duration_ms: round1(outcome.duration_ms),
                failed: outcome.failed + outcome.lost,
                retries: outcome.retries,
            },
        );
    }

    /// The `autoSave` object as of now.
    pub fn auto_save(&self) -> AutoSave {
        let state = self.state();
        let f = self.lock();
        let attempts = f.succeeded + f.failed;
        AutoSave {
            is_running: matches!(state, LoopState::Running | LoopState::Draining),
            interval_ms: self.interval_ms,
            saving_passes: f.saving_passes,
            total_objects_saved: f.total_objects,
            average_duration_ms: if f.saving_passes == 0 {
                0.0
            } else {
                round1(f.total_duration_ms / f.saving_passes as f64)
            },
            success_rate: if attempts == 0 {
                100.0
            } else {
                round1(f.succeeded as f64 * 100.0 / attempts as f64)
            },
            failed_saves: f.failed,
            recent_saves: f.recent_saves.iter().cloned().collect(),
            recent_errors: f.recent_errors.iter().cloned().collect(),
            state,
            successful_saves: f.succeeded,
            lost_leases: f.lost,
            retries: f.retries,
            superseded_writes: f.superseded,
            rejected_objects: f.rejected,
            passes: f.passes,
            owner: self.owner.clone(),
            lease_ms: self.lease_ms,
        }
    }
}

/// The whole document: this process's figures and the dirty index read from the hot state now.
pub(crate) async fn document(metrics: &Metrics, hot: &dyn SaveQueue) -> MetricsDoc {
    let dirty_projects = match read_dirty(hot).await {
        Ok(summary) => DirtyProjects::from_summary(summary),
        Err(e) => DirtyProjects::unavailable(e.to_string()),
    };
    let residency = crate::dirty::read_residency(hot).await;
    MetricsDoc {
        auto_save: metrics.auto_save(),
        dirty_projects,
        memory: metrics.memory(residency),
    }
}

/// What the hot state holds now, waiting as long as for the dirty index.
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::{OpLabels, ResultLabels};

    #[test]
    fn success_rate_is_100_before_any_attempt() {
        let m = Metrics::new(5000, 10_000, "o".into());
        let a = m.auto_save();
        assert_eq!(a.success_rate, 100.0);
        assert!(!a.is_running);
        m.record_pass(&PassOutcome::default());
        assert_eq!(m.auto_save().success_rate, 100.0);
        assert_eq!(m.auto_save().passes, 1);
        assert!(m.auto_save().recent_saves.is_empty());
    }

    #[test]
    fn figures_add_up_and_lists_are_capped() {
        let m = Metrics::new(5000, 10_000, "o".into());
        for i in 0..30 {
            m.record_pass(&PassOutcome {
                at: i,
                duration_ms: 10.0,
                succeeded: 3,
                failed: 1,
                lost: 0,
                objects: 7,
                retries: 2,
                errors: vec![(Some("p".into()), format!("e{i}"))],
                ..PassOutcome::default()
            });
        }
        let a = m.auto_save();
        assert_eq!(a.saving_passes, 30);
        assert_eq!(a.total_objects_saved, 210);
        assert_eq!(a.failed_saves, 30);
        assert_eq!(a.success_rate, 75.0);
        assert_eq!(a.average_duration_ms, 10.0);
        assert_eq!(a.retries, 60);
        assert_eq!(a.recent_saves.len(), RECENT_LIMIT);
        assert_eq!(a.recent_errors.len(), RECENT_LIMIT);
        assert_eq!(a.recent_errors.last().unwrap().message, "e29");
        assert_eq!(a.recent_saves.first().unwrap().at, 10);
    }

    #[test]
    fn json_field_names_match_the_contract() {
        let m = Metrics::new(5000, 10_000, "o".into());
        let doc = MetricsDoc {
            auto_save: m.auto_save(),
            dirty_projects: DirtyProjects::from_summary(DirtySummary::default()),
            memory: m.memory(Ok(Residency::default())),
        };
        let v = serde_json::to_value(doc).unwrap();
        for key in [
            "isRunning",
            "intervalMs",
            "totalSaves",
            "totalObjectsSaved",
            "averageDurationMs",
            "successRate",
            "failedSaves",
            "recentSaves",
            "recentErrors",
        ] {
            assert!(v["autoSave"].get(key).is_some(), "autoSave.{key} missing");
        }
        for key in ["count", "oldestModification", "projectIds"] {
            assert!(
                v["dirtyProjects"].get(key).is_some(),
                "dirtyProjects.{key} missing"
            );
        }
        assert!(v["dirtyProjects"]["oldestModification"].is_null());
    }

    #[test]
    fn counters_follow_passes() {
        let m = Metrics::new(5000, 10_000, "o".into());
        m.record_pass(&PassOutcome {
            duration_ms: 12.0,
            succeeded: 2,
            objects: 5,
            puts: 4,
            deletes: 1,
            requests: 3,
            retries: 1,
            ..PassOutcome::default()
        });
        m.record_pass(&PassOutcome::default());
        let p = m.prometheus();
        let get = |result| p.passes.get_or_create(&ResultLabels { result }).get();
        assert_eq!((get("ok"), get("idle"), get("failed")), (1, 1, 0));
        assert_eq!(
            p.items_written.get_or_create(&OpLabels { op: "put" }).get(),
            4
        );
        assert_eq!(
            p.items_written
                .get_or_create(&OpLabels { op: "delete" })
                .get(),
            1
        );
        assert_eq!(p.batch_requests.get(), 3);
        assert_eq!(p.batch_retries.get(), 1);
        assert_eq!(p.project_saves.get(), 2);
    }
}
