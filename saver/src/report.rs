//! What the save loop reports: where the loop is in its life ([`LoopState`]) and what each pass did
//! ([`PassOutcome`]). The JSON figures (`metrics.rs`) and the Prometheus counters (`prometheus.rs`)
//! both read these; neither depends on the other for them.

use serde::Serialize;

/// Where the save loop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopState {
    /// Started, waiting for the durable store (table) to be ready.
    WaitingForStore,
    /// Saving every interval.
    Running,
    /// Shutdown requested: final saves in progress.
    Draining,
    /// The loop has ended.
    Stopped,
}

impl LoopState {
    /// Every state, in the order the loop goes through them.
    pub(crate) const ALL: [LoopState; 4] = [
        LoopState::WaitingForStore,
        LoopState::Running,
        LoopState::Draining,
        LoopState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LoopState::WaitingForStore => "waiting_for_store",
            LoopState::Running => "running",
            LoopState::Draining => "draining",
            LoopState::Stopped => "stopped",
        }
    }
}

/// What one pass did, as reported to `Metrics::record_pass`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassOutcome {
    /// Epoch ms when the pass ended.
    pub at: i64,
    pub duration_ms: f64,
    /// Project saves that succeeded (claim completed).
    pub succeeded: u64,
    /// Project saves that failed (work put back).
    pub failed: u64,
    /// Project saves given up because the lease was taken over.
    pub lost: u64,
    /// Items put or deleted.
    pub objects: u64,
    /// Of `objects`: Puts and Deletes.
    pub puts: u64,
    pub deletes: u64,
    /// Writes the durable store already held an equal or newer stamp of (not in `objects`).
    pub superseded: u64,
    /// Objects the durable store refused, held back until they change again.
    pub refused: Vec<RefusedObject>,
    /// Write requests sent (retries included).
    pub requests: u64,
    pub retries: u64,
    pub errors: Vec<(Option<String>, String)>,
}

/// An object the durable store refused: held back in the hot state, reported to operators.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedObject {
    pub project_id: String,
    pub object_id: String,
    /// The stamp of the refused version (a newer one is saved normally).
    pub stamp: i64,
    /// The store's own message.
    pub message: String,
}

impl PassOutcome {
    pub fn projects(&self) -> u64 {
        self.succeeded + self.failed + self.lost
    }
}
