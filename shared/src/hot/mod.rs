//! The hot state: the shared, fast working copy of every open project (Redis in production, memory in dev mode).
//!
//! Everything that must be atomic lives behind two traits, one per client: [`EditStore`] (the gateway's: applying
//! an edit, with object change, `version`, `seq`, changed-set, dirty index and publish in one step, and the cold
//! load of a project) and [`SaveQueue`] (the saver's: the claim/lease protocol). The Redis and memory stores
//! implement both, and must pass the same conformance suite (`shared/tests/hot_conformance.rs`).

mod edit_store;
pub mod journal;
pub mod keys;
mod lease_clock;
pub mod memory;
pub mod redis;
mod refusal;
mod save_queue;

pub use journal::{JournalEntry, JournalPage, DEFAULT_JOURNAL_LEN, JOURNAL_PAGE};
pub use lease_clock::LeaseClock;
pub use refusal::EditRefusal;

use async_trait::async_trait;

use crate::cause::Cause;
use crate::error::{ErrorCode, Rejection};

pub use edit_store::{
    Applied, Bus, BusEvent, BusMessage, EditContext, EditStore, IdempotencyClaim, Snapshot,
    UpdateMerges,
};
pub use save_queue::{
    ChangeSet, Claim, ClaimCursor, ClaimPage, DirtySummary, Eviction, PageBounds, Residency,
    SaveQueue,
};

/// What a client is told when an edit's outcome is unknown.
pub const OUTCOME_UNKNOWN_MESSAGE: &str =
    "the shared state did not answer in time; the edit may or may not have been applied";

/// What went wrong in the hot state.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HotError {
    /// The project is not in the hot state; it must be loaded from the durable store first.
    #[error("project is not loaded in the hot state")]
    NotLoaded,
    /// The edit is refused (conflict, not_found, too_large, bad_request).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The hot state could not be reached or answered with an error: the call did not run.
    #[error("hot state unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// The call was sent but its reply never came (timed out, or the connection died after sending): it may have
    /// run. An edit that ends so must never be reported as not applied.
    #[error("hot state outcome unknown: {0}")]
    OutcomeUnknown(#[source] Cause),
}

impl HotError {
    /// The protocol error a client sees for this failure.
    pub fn to_rejection(&self) -> Rejection {
        match self {
            HotError::Rejected(r) => r.clone(),
            HotError::NotLoaded => {
                Rejection::new(ErrorCode::Unavailable, "project is loading; try again")
            }
            HotError::Unavailable(_) => Rejection::new(
                ErrorCode::Unavailable,
                "shared state is unreachable; the edit was not applied",
            ),
            HotError::OutcomeUnknown(_) => {
                Rejection::new(ErrorCode::Unavailable, OUTCOME_UNKNOWN_MESSAGE)
            }
        }
    }
}

/// A cheap reachability check for readiness probes; both halves of the hot state offer it.
#[async_trait]
pub trait Reachable: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), HotError>;
}

/// Both halves at once: what a store that serves gateways and savers implements, for wiring one store into both
/// (the dev mode, tests). Each service holds only its own half.
pub trait HotStore: EditStore + SaveQueue {}

impl<T: EditStore + SaveQueue> HotStore for T {}
