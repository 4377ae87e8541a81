//! Why one project's save failed. Each variant keeps the error it came from; its text is what operators read in
//! `recentErrors` and the logs, so the messages stay as they were when they were plain strings.

use canvas_shared::durable::DurableError;
use canvas_shared::hot::HotError;

/// Why one project's save failed (its work is put back and it stays dirty).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum SaveError {
    #[error("reading changes failed: {0}")]
    ReadChanges(#[source] HotError),
    #[error("completing the claim failed: {0}")]
    CompleteClaim(#[source] HotError),
    /// Objects the store refused could not be recorded as held back, so the claim is not completed yet.
    #[error("recording the refused objects failed: {0}")]
    HoldBack(#[source] HotError),
    /// The objects are written, but the project's `seq` watermark is not: the claim is saved again later.
    #[error("persisting the seq watermark failed: {0}")]
    PersistWatermark(#[source] DurableError),
    #[error("lease renewal failed: {0}")]
    RenewLease(#[source] HotError),
    /// Renewed, but already too close to the lease's end (Redis answered very slowly).
    #[error("lease too close to expiry to write safely")]
    LeaseTooShort,
    #[error("only {written} of {expected} items were written")]
    Incomplete { written: usize, expected: usize },
    /// The store refused the request; retrying would not help.
    #[error("{0}")]
    Rejected(#[source] DurableError),
    #[error("gave up after {attempts} attempts: {reason}")]
    GaveUp { attempts: u32, reason: RetryReason },
    /// An earlier request showed the store down or missing, so this one was skipped.
    #[error("not attempted: {0}")]
    NotAttempted(StopReason),
}

/// Why a request is being retried.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RetryReason {
    #[error("{0} items left unprocessed")]
    Unprocessed(usize),
    #[error(transparent)]
    Store(DurableError),
    #[error("request timed out before the lease would run out")]
    TimedOut,
}

/// Why the writer stopped starting requests for the rest of the pass.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StopReason {
    #[error(transparent)]
    TableMissing(DurableError),
    #[error("the store kept failing ({0})")]
    KeptFailing(RetryReason),
}
