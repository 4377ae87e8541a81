//! A fault-injecting durable store for tests: throttling, partial UnprocessedItems, outages and slowness that
//! a real emulator cannot produce on demand, and late writes: a request that timed out on the caller's side yet
//! executes afterwards, as an abandoned DynamoDB request can. It wraps a real store, so what does get written is
//! really written.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{DurableError, DurableStore, ItemWrite, LoadedProject, WriteOutcome};
use crate::cause::Cause;
use crate::ids::ProjectId;

/// Faults to inject; change them at any time from the test.
#[derive(Debug, Default)]
pub struct Faults {
    /// The next N batches fail with a throttling error.
    pub throttle_next: AtomicUsize,
    /// The next N batches process only their first half; the rest comes back unprocessed.
    pub partial_next: AtomicUsize,
    /// While set, every call fails as unavailable.
    pub down: AtomicBool,
    /// Delay added to every batch (ms).
    pub delay_ms: AtomicU64,
    /// The next N batches hang until the caller gives up on them; their writes are kept, to be applied later by
    /// [`FaultyStore::release_held`] (a timed-out request that still executes).
    pub hold_next: AtomicUsize,
    /// Batches attempted (including failed ones) and items actually written.
    pub batches: AtomicUsize,
    pub items_written: AtomicUsize,
    held: Mutex<Vec<ItemWrite>>,
}

/// How long a held batch hangs: far longer than any caller waits.
const HOLD: Duration = Duration::from_secs(3600);

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// [`DurableStore`] wrapper that injects [`Faults`].
#[derive(Clone)]
pub struct FaultyStore<S> {
    inner: S,
    pub faults: Arc<Faults>,
}

impl<S: DurableStore> FaultyStore<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            faults: Arc::new(Faults::default()),
        }
    }

    /// Applies every held write now, as the late execution of the requests that timed out, and reports what
    /// became of them.
    pub async fn release_held(&self) -> Result<WriteOutcome, DurableError> {
        let held = std::mem::take(&mut *self.faults.held.lock().unwrap_or_else(|e| e.into_inner()));
        self.inner.write_batch(&held).await
    }
}

#[async_trait]
impl<S: DurableStore> DurableStore for FaultyStore<S> {
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<WriteOutcome, DurableError> {
        let f = &self.faults;
        f.batches.fetch_add(1, Ordering::SeqCst);
        if take_one(&f.hold_next) {
            f.held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(writes);
            tokio::time::sleep(HOLD).await;
            return Err(DurableError::Unavailable(Cause::described(
                "held batch never answered",
            )));
        }
        let delay = f.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if f.down.load(Ordering::SeqCst) {
            return Err(DurableError::Unavailable(Cause::described(
                "injected outage",
            )));
        }
        if take_one(&f.throttle_next) {
            return Err(DurableError::Throttled(Cause::described(
                "injected ProvisionedThroughputExceededException",
            )));
        }
        let (now, later) = if writes.len() > 1 && take_one(&f.partial_next) {
            writes.split_at(writes.len() / 2)
        } else {
            (writes, &[][..])
        };
        let mut outcome = self.inner.write_batch(now).await?;
        f.items_written
            .fetch_add(now.len() - outcome.not_written(), Ordering::SeqCst);
        outcome.unprocessed.extend_from_slice(later);
        Ok(outcome)
    }

    async fn load_project(&self, project: &ProjectId) -> Result<LoadedProject, DurableError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(DurableError::Unavailable(Cause::described(
                "injected outage",
            )));
        }
        self.inner.load_project(project).await
    }

    async fn persist_seq(&self, project: &ProjectId, seq: u64) -> Result<(), DurableError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(DurableError::Unavailable(Cause::described(
                "injected outage",
            )));
        }
        self.inner.persist_seq(project, seq).await
    }

    async fn ensure_table(&self, create: bool) -> Result<(), DurableError> {
        self.inner.ensure_table(create).await
    }

    async fn ping(&self) -> Result<(), DurableError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(DurableError::Unavailable(Cause::described(
                "injected outage",
            )));
        }
        self.inner.ping().await
    }
}
