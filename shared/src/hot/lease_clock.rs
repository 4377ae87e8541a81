//! The one clock every lease is judged on.
//!
//! A lease is written by one saver and judged expired by another, so its expiry must not be read from either
//! saver's wall clock: two savers whose clocks disagree by more than a lease would save one project at once. The
//! Redis store reads Redis' `TIME` inside the claim and renew scripts (one clock for every saver); the memory store
//! lives in one process and reads that process's clock. Tests pin the clock to explicit times, so that lease expiry
//! is checked without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Where a store reads "now" for leases: its own clock (the default), or a pinned time a test moves by hand.
#[derive(Debug, Clone, Default)]
pub struct LeaseClock {
    pinned: Option<Arc<AtomicI64>>,
}

impl LeaseClock {
    /// The store's own clock: Redis `TIME` for Redis, the process clock for the memory store.
    pub fn store() -> Self {
        Self::default()
    }

    /// A clock that stands at `ms` until [`LeaseClock::set`] moves it; clones share the same time.
    pub fn pinned(ms: i64) -> Self {
        Self {
            pinned: Some(Arc::new(AtomicI64::new(ms))),
        }
    }

    /// Moves a pinned clock to `ms`; the store's own clock cannot be moved, so this does nothing there.
    pub fn set(&self, ms: i64) {
        if let Some(pinned) = &self.pinned {
            pinned.store(ms, Ordering::SeqCst);
        }
    }

    /// The pinned time, or `None` when the store reads its own clock.
    pub(crate) fn pinned_ms(&self) -> Option<i64> {
        self.pinned.as_ref().map(|p| p.load(Ordering::SeqCst))
    }
}
