//! Prometheus figures of one saver process, served as text at `GET /metrics/prometheus` (the JSON `/metrics` stays
//! the contract's document).
//!
//! Counters and the pass-duration histogram are fed by every pass ([`SaverPrometheus::record_pass`], called by
//! `Metrics::record_pass`); the dirty figures are read from the hot state at scrape time, like `/metrics`'
//! `dirtyProjects`. Label sets are small fixed enums (project ids are never labels), so cardinality stays bounded.
//!
//! | metric | type | meaning |
//! | --- | --- | --- |
//! | `canvas_saver_passes_total{result}` | counter | passes: `idle` (claimed nothing), `ok`, `partial`, `failed` |
//! | `canvas_saver_items_written_total{op}` | counter | items written to the durable store: `put`, `delete` |
//! | `canvas_saver_batch_requests_total` | counter | write requests (groups of conditional puts) sent, retries included |
//! | `canvas_saver_batch_retries_total` | counter | write requests retried |
//! | `canvas_saver_superseded_writes_total` | counter | writes not needed: DynamoDB already held a newer stamp of the item |
//! | `canvas_saver_rejected_objects_total` | counter | objects DynamoDB refused (held back until they change again) |
//! | `canvas_saver_project_saves_total` | counter | project saves that completed |
//! | `canvas_saver_failed_project_saves_total` | counter | project saves that failed (work put back) |
//! | `canvas_saver_lost_leases_total` | counter | project saves given up because another saver took the lease |
//! | `canvas_saver_evictions_total` | counter | idle projects this saver removed from the hot state |
//! | `canvas_saver_resident_projects` | gauge | projects loaded in the hot state, at scrape |
//! | `canvas_saver_cold_loads` | gauge | cold loads by every gateway since the hot state started, at scrape |
//! | `canvas_saver_redis_used_memory_bytes` | gauge | Redis `used_memory`, at scrape |
//! | `canvas_saver_biggest_project_bytes{rank}` | gauge | object bytes of the biggest resident projects (rank 1 = biggest), at scrape |
//! | `canvas_saver_save_pass_duration_seconds` | histogram | duration of passes that claimed something |
//! | `canvas_saver_dirty_projects` | gauge | projects with unsaved changes (being saved included), at scrape |
//! | `canvas_saver_oldest_unsaved_change_age_seconds` | gauge | age of the oldest unsaved change (0 if none) |
//! | `canvas_saver_dirty_index_up` | gauge | 1 if the dirty index could be read for this scrape (else the two above are absent) |
//! | `canvas_saver_loop_state{state}` | gauge | 1 for the save loop's current state |
//! | `canvas_saver_save_interval_seconds` | gauge | the configured interval |

use canvas_shared::hot::SaveQueue;
use canvas_shared::time::now_ms;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::dirty::{read_dirty, DirtyUnreadable};
use crate::report::{LoopState, PassOutcome};

/// Every metric name starts with this.
pub(crate) const PREFIX: &str = "canvas_saver";

/// The content type of the exposition (prometheus-client writes OpenMetrics text, which Prometheus scrapes
/// natively).
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// idle | ok | partial | failed
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// put | delete
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StateLabels {
    pub state: &'static str,
}

const PASS_RESULTS: [&str; 4] = ["idle", "ok", "partial", "failed"];

/// The counters and histogram of one saver process.
#[derive(Debug)]
pub struct SaverPrometheus {
    registry: Registry,
    pub passes: Family<ResultLabels, Counter>,
    pub items_written: Family<OpLabels, Counter>,
    pub batch_requests: Counter,
    pub batch_retries: Counter,
    pub project_saves: Counter,
    pub failed_project_saves: Counter,
    pub lost_leases: Counter,
    pub superseded_writes: Counter,
    pub rejected_objects: Counter,
    pub evictions: Counter,
    pub save_pass_duration: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RankLabels {
    /// 1 = the biggest project (project ids are never labels).
    pub rank: u64,
}

impl Default for SaverPrometheus {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let passes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "passes",
            "Save passes by result: idle (claimed nothing), ok, partial (some project saves failed), failed",
            passes.clone(),
        );
        let items_written = Family::<OpLabels, Counter>::default();
        registry.register(
            "items_written",
            "Items written to the durable store, by operation (put, delete)",
            items_written.clone(),
        );
        let batch_requests = Counter::default();
        registry.register(
            "batch_requests",
            "Write requests (groups of conditional puts) sent, retries included",
            batch_requests.clone(),
        );
        let batch_retries = Counter::default();
        registry.register(
            "batch_retries",
            "Write requests retried (throttling, unprocessed items, transient errors)",
            batch_retries.clone(),
        );
        let project_saves = Counter::default();
        registry.register(
            "project_saves",
            "Project saves completed (everything claimed was written)",
            project_saves.clone(),
        );
        let failed_project_saves = Counter::default();
        registry.register(
            "failed_project_saves",
            "Project saves that failed; their changes were put back and stay dirty",
            failed_project_saves.clone(),
        );
        let lost_leases = Counter::default();
        registry.register(
            "lost_leases",
            "Project saves given up because another saver took the lease over",
            lost_leases.clone(),
        );
        let superseded_writes = Counter::default();
        registry.register(
            "superseded_writes",
            "Writes not needed because DynamoDB already held an equal or newer stamp of the item",
            superseded_writes.clone(),
        );
        let rejected_objects = Counter::default();
        registry.register(
            "rejected_objects",
            "Objects DynamoDB refused; each is held back in Redis until it changes again",
            rejected_objects.clone(),
        );
        let evictions = Counter::default();
        registry.register(
            "evictions",
            "Idle, fully saved projects this saver removed from the hot state",
            evictions.clone(),
        );
        // 1 ms .. ~65 s
        let save_pass_duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        registry.register(
            "save_pass_duration_seconds",
            "Duration of save passes that claimed at least one project (claim to release)",
            save_pass_duration.clone(),
        );
        // Every label value from the start, so that rate() sees the first increase.
        for result in PASS_RESULTS {
            let _ = passes.get_or_create(&ResultLabels { result });
        }
        for op in ["put", "delete"] {
            let _ = items_written.get_or_create(&OpLabels { op });
        }
        Self {
            registry,
            passes,
            items_written,
            batch_requests,
            batch_retries,
            project_saves,
            failed_project_saves,
            lost_leases,
            superseded_writes,
            rejected_objects,
            evictions,
            save_pass_duration,
        }
    }
}

/// The `result` label of a pass.
pub(crate) fn pass_result(outcome: &PassOutcome) -> &'static str {
    let unsaved = outcome.failed + outcome.lost;
    if outcome.projects() == 0 {
        if outcome.errors.is_empty() {
            "idle"
        } else {
            "failed"
        }
    } else if unsaved == 0 && outcome.errors.is_empty() {
        "ok"
    } else if outcome.succeeded > 0 {
        "partial"
    } else {
        "failed"
    }
}

impl SaverPrometheus {
    pub fn record_pass(&self, outcome: &PassOutcome) {
        self.passes
            .get_or_create(&ResultLabels {
                result: pass_result(outcome),
            })
            .inc();
        self.items_written
            .get_or_create(&OpLabels { op: "put" })
            .inc_by(outcome.puts);
        self.items_written
            .get_or_create(&OpLabels { op: "delete" })
            .inc_by(outcome.deletes);
        self.batch_requests.inc_by(outcome.requests);
        self.batch_retries.inc_by(outcome.retries);
        self.project_saves.inc_by(outcome.succeeded);
        self.failed_project_saves.inc_by(outcome.failed);
        self.lost_leases.inc_by(outcome.lost);
        self.superseded_writes.inc_by(outcome.superseded);
        self.rejected_objects.inc_by(outcome.refused.len() as u64);
        if outcome.projects() > 0 {
            self.save_pass_duration
                .observe(outcome.duration_ms / 1000.0);
        }
    }
}

/// The whole exposition: this process's counters, then the figures read now (dirty index, loop state, interval).
pub(crate) async fn render(
    counters: &SaverPrometheus,
    state: LoopState,
    interval_ms: u64,
    hot: &dyn SaveQueue,
) -> String {
    let mut scrape = Registry::with_prefix(PREFIX);
    let dirty = read_dirty(hot).await;
    let up = Gauge::<i64>::default();
    scrape.register(
        "dirty_index_up",
        "1 if the dirty index in Redis could be read for this scrape",
        up.clone(),
    );
    match dirty {
        Ok(summary) => {
            up.set(1);
            let count = Gauge::<i64>::default();
            count.set(summary.count as i64);
            scrape.register(
                "dirty_projects",
                "Projects with unsaved changes (those being saved now included), read at scrape time",
                count,
            );
            let age = Gauge::<f64, AtomicU64>::default();
            let age_ms = summary
                .oldest_modification
                .map(|at| (now_ms() - at).max(0))
                .unwrap_or(0);
            age.set(age_ms as f64 / 1000.0);
            scrape.register(
                "oldest_unsaved_change_age_seconds",
                "Age of the oldest unsaved change (0 when nothing is dirty), read at scrape time",
                age,
            );
        }
        Err(DirtyUnreadable::TimedOut) => {
            tracing::warn!("dirty index did not answer in time for a Prometheus scrape");
        }
        Err(e) => {
            tracing::warn!(error = %e, "dirty index unreadable for a Prometheus scrape");
        }
    }
    match crate::dirty::read_residency(hot).await {
        Ok(residency) => {
            let gauge = |value: u64| {
                let g = Gauge::<i64>::default();
                g.set(i64::try_from(value).unwrap_or(i64::MAX));
                g
            };
            scrape.register(
                "resident_projects",
                "Projects loaded in the hot state, read at scrape time",
                gauge(residency.resident),
            );
            scrape.register(
                "cold_loads",
                "Cold loads by every gateway since the hot state started, read at scrape time",
                gauge(residency.cold_loads),
            );
            if let Some(used) = residency.used_memory {
                scrape.register(
                    "redis_used_memory_bytes",
                    "Redis used_memory, read at scrape time",
                    gauge(used),
                );
            }
            let biggest = Family::<RankLabels, Gauge>::default();
            for (rank, (_, bytes)) in residency.biggest.iter().enumerate() {
                biggest
                    .get_or_create(&RankLabels {
                        rank: rank as u64 + 1,
                    })
                    .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
            }
            scrape.register(
                "biggest_project_bytes",
                "Object bytes of the biggest resident projects by rank (1 = biggest), read at scrape time",
                biggest,
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "hot state residency unreadable for a Prometheus scrape")
        }
    }
    let states = Family::<StateLabels, Gauge>::default();
    for s in LoopState::ALL {
        states
            .get_or_create(&StateLabels { state: s.as_str() })
            .set(i64::from(s == state));
    }
    scrape.register(
        "loop_state",
        "1 for the save loop's current state (waiting_for_store, running, draining, stopped)",
        states,
    );
    let interval = Gauge::<f64, AtomicU64>::default();
    interval.set(interval_ms as f64 / 1000.0);
    scrape.register(
        "save_interval_seconds",
        "Configured time between save passes",
        interval,
    );

    let mut out = String::new();
    let encoded = encode_registry(&mut out, &counters.registry)
        .and_then(|()| encode_registry(&mut out, &scrape))
        .and_then(|()| encode_eof(&mut out));
    if encoded.is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_results() {
        let idle = PassOutcome::default();
        assert_eq!(pass_result(&idle), "idle");
        let claim_failed = PassOutcome {
            errors: vec![(None, "redis down".into())],
            ..PassOutcome::default()
        };
        assert_eq!(pass_result(&claim_failed), "failed");
        let ok = PassOutcome {
            succeeded: 2,
            ..PassOutcome::default()
        };
        assert_eq!(pass_result(&ok), "ok");
        let partial = PassOutcome {
            succeeded: 1,
            lost: 1,
            errors: vec![(Some("p".into()), "lost".into())],
            ..PassOutcome::default()
        };
        assert_eq!(pass_result(&partial), "partial");
        let failed = PassOutcome {
            failed: 1,
            errors: vec![(Some("p".into()), "rejected".into())],
            ..PassOutcome::default()
        };
        assert_eq!(pass_result(&failed), "failed");
    }
}
