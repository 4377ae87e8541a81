//! A fault-injecting durable store for tests: throttling, partial UnprocessedItems, outages and slowness that
//! a real emulator cannot produce on demand. It wraps a real store, so what does get written is really written.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{DurableError, DurableStore, ItemWrite};
use crate::ids::ProjectId;
use crate::stored::StoredObject;

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
    /// Batches attempted (including failed ones) and items actually written.
    pub batches: AtomicUsize,
    pub items_written: AtomicUsize,
}

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
}

#[async_trait]
impl<S: DurableStore> DurableStore for FaultyStore<S> {
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<Vec<ItemWrite>, DurableError> {
        let f = &self.faults;
        f.batches.fetch_add(1, Ordering::SeqCst);
        let delay = f.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if f.down.load(Ordering::SeqCst) {
            return Err(DurableError::Unavailable("injected outage".into()));
        }
        if take_one(&f.throttle_next) {
            return Err(DurableError::Throttled(
                "injected ProvisionedThroughputExceededException".into(),
            ));
        }
        let (now, later) = if writes.len() > 1 && take_one(&f.partial_next) {
            writes.split_at(writes.len() / 2)
        } else {
            (writes, &[][..])
        };
        let mut unprocessed = self.inner.write_batch(now).await?;
        f.items_written
            .fetch_add(now.len() - unprocessed.len(), Ordering::SeqCst);
        unprocessed.extend_from_slice(later);
        Ok(unprocessed)
    }

    async fn load_project(&self, project: &ProjectId) -> Result<Vec<StoredObject>, DurableError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(DurableError::Unavailable("injected outage".into()));
        }
        self.inner.load_project(project).await
    }

    async fn ensure_table(&self, create: bool) -> Result<(), DurableError> {
        self.inner.ensure_table(create).await
    }

    async fn ping(&self) -> Result<(), DurableError> {
        if self.faults.down.load(Ordering::SeqCst) {
            return Err(DurableError::Unavailable("injected outage".into()));
        }
        self.inner.ping().await
    }
}
