//! The batch writer: turns one pass's item writes (across projects) into groups of at most 25 distinct keys (one
//! request each: the store sends a group's conditional writes at once), runs several at once, retries throttling,
//! transient errors and unprocessed writes with capped exponential backoff and full jitter, and reports per
//! project, so that one project's failure never fails another's. A write the store already holds a newer stamp of
//! is done (superseded: a later save wrote the key first).
//!
//! Before every request (first try and retries alike) it renews the lease of every project in it: a project whose
//! lease was taken over is dropped from the request and never written again in this pass, because the new owner
//! will write newer data and must not be overwritten with ours. A request also never outlives the lease time left.
//!
//! Tracing: each request is a `batch_write` span under the `save_project` span of the first project it carries
//! (a request may span projects; it `follows_from` the others' spans, exported as OTLP links).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use canvas_shared::durable::{DurableError, DurableStore, ItemWrite, WriteOp, MAX_BATCH_ITEMS};
use canvas_shared::ids::{ObjectId, ProjectId};
use futures_util::StreamExt;
use rand::Rng;
use tracing::Instrument;

use crate::lease::{LeaseState, Leases, Renewal};
use crate::report::RefusedObject;
use crate::save_error::{RetryReason, SaveError, StopReason};

/// Most attempts per request while the store is unreachable (it is then likely down for every request).
const UNAVAILABLE_ATTEMPTS: u32 = 3;

/// How the writer retries and how wide it goes.
#[derive(Debug, Clone)]
pub(crate) struct BatchSettings {
    /// Requests in flight at once.
    pub(crate) concurrency: usize,
    /// Attempts per request (the first one included).
    pub(crate) max_attempts: u32,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
}

/// What happened to one project's writes.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProjectWrites {
    pub(crate) expected: usize,
    pub(crate) written: usize,
    /// Retries of requests carrying this project's items.
    pub(crate) retries: u64,
    /// The first error that made this project's save fail.
    pub(crate) error: Option<SaveError>,
}

impl ProjectWrites {
    pub(crate) fn complete(&self) -> bool {
        self.error.is_none() && self.written >= self.expected
    }
}

/// What the writer did in one pass.
#[derive(Debug, Default)]
pub(crate) struct WriteReport {
    pub(crate) projects: HashMap<ProjectId, ProjectWrites>,
    pub(crate) items_written: u64,
    /// Of `items_written`: Puts and Deletes.
    pub(crate) puts: u64,
    pub(crate) deletes: u64,
    /// Writes not needed because the store already held an equal or newer stamp of their key (not in
    /// `items_written`).
    pub(crate) superseded: u64,
    /// Objects the store refused: held back (counted done for their project, so it completes and the object is
    /// written again only once it changes).
    pub(crate) refused: Vec<RefusedObject>,
    pub(crate) requests: u64,
    pub(crate) retries: u64,
    /// Set when the store looked down or missing: later writes of the pass are not worth starting.
    pub(crate) stopped: Option<StopReason>,
}

/// Orders writes into requests: at most [`MAX_BATCH_ITEMS`] each, no key twice in one request (a repeated key
/// keeps its first write: both come from the same read of the hot state). Project order is kept, so the oldest
/// projects go first and a project's writes sit in as few requests as possible.
pub(crate) fn pack(writes: Vec<ItemWrite>) -> Vec<Vec<ItemWrite>> {
    let mut seen: HashSet<(ProjectId, ObjectId)> = HashSet::with_capacity(writes.len());
    let mut batches: Vec<Vec<ItemWrite>> = Vec::new();
    let mut current: Vec<ItemWrite> = Vec::with_capacity(MAX_BATCH_ITEMS);
    for write in writes {
        if !seen.insert((write.project.clone(), write.object_id().clone())) {
            continue;
        }
        current.push(write);
        if current.len() == MAX_BATCH_ITEMS {
            batches.push(std::mem::replace(
                &mut current,
                Vec::with_capacity(MAX_BATCH_ITEMS),
            ));
        }
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Full-jitter backoff before retry number `attempt` (1-based): uniform in [0, min(max, base · 2^(attempt-1))].
/// One line of arithmetic, kept here rather than in a retry crate, because the retry loop around it is not generic:
/// it resends only the unprocessed part of a batch and narrows refused requests down, which no retry crate models.
pub(crate) fn backoff(settings: &BatchSettings, attempt: u32) -> Duration {
    let exp = settings
        .backoff_base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(settings.backoff_max);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(if ms == 0 {
        0
    } else {
        rand::rng().random_range(0..=ms)
    })
}

struct Shared<'a> {
    durable: &'a dyn DurableStore,
    leases: &'a Leases,
    settings: &'a BatchSettings,
    /// The `save_project` span of each project, parent of the requests carrying its items.
    spans: &'a HashMap<ProjectId, tracing::Span>,
    book: Mutex<HashMap<ProjectId, ProjectWrites>>,
    /// Set when the store looks down or overloaded: requests not started yet are skipped.
    abort: Mutex<Option<StopReason>>,
    items_written: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    superseded: AtomicU64,
    refused: Mutex<Vec<RefusedObject>>,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl Shared<'_> {
    fn book(&self) -> MutexGuard<'_, HashMap<ProjectId, ProjectWrites>> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn aborted(&self) -> Option<StopReason> {
        self.abort.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_abort(&self, reason: StopReason) {
        let mut abort = self.abort.lock().unwrap_or_else(|e| e.into_inner());
        if abort.is_none() {
            *abort = Some(reason);
        }
    }

    fn fail(&self, project: &ProjectId, error: &SaveError) {
        if let Some(entry) = self.book().get_mut(project) {
            if entry.error.is_none() {
                entry.error = Some(error.clone());
            }
        }
    }

    fn fail_all(&self, writes: &[ItemWrite], error: &SaveError) {
        for project in distinct_projects(writes) {
            self.fail(&project, error);
        }
    }

    /// Still worth writing: not failed, and still ours.
    fn open(&self, project: &ProjectId) -> bool {
        let failed = self
            .book()
            .get(project)
            .is_none_or(|entry| entry.error.is_some());
        !failed && self.leases.state(project) == Some(LeaseState::Held)
    }

    fn written(&self, writes: &[ItemWrite]) {
        let mut book = self.book();
        let mut puts = 0;
        for write in writes {
            if let Some(entry) = book.get_mut(&write.project) {
                entry.written += 1;
            }
            if matches!(write.op, WriteOp::Put(_)) {
                puts += 1;
            }
        }
        drop(book);
        self.items_written
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        self.puts.fetch_add(puts, Ordering::Relaxed);
        self.deletes
            .fetch_add(writes.len() as u64 - puts, Ordering::Relaxed);
    }

    /// Writes the store already held newer: done for their projects, but nothing was written.
    fn superseded(&self, writes: &[ItemWrite]) {
        let mut book = self.book();
        for write in writes {
            if let Some(entry) = book.get_mut(&write.project) {
                entry.written += 1;
            }
        }
        drop(book);
        self.superseded
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
    }

    /// An object the store refused: done for its project (so the project completes and the object waits in the
    /// hot state until it changes), reported to operators.
    fn held_back(&self, write: &ItemWrite, error: &DurableError) {
        if let Some(entry) = self.book().get_mut(&write.project) {
            entry.written += 1;
        }
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(RefusedObject {
                project_id: write.project.to_string(),
                object_id: write.object_id().to_string(),
                stamp: write.stamp(),
                message: error.to_string(),
            });
    }

    /// Counts one retry of a request carrying these writes, for the pass and for each of its projects.
    fn retried(&self, writes: &[ItemWrite]) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        let mut book = self.book();
        for project in distinct_projects(writes) {
            if let Some(entry) = book.get_mut(&project) {
                entry.retries += 1;
            }
        }
    }

    /// A `batch_write` span under the first project's `save_project` span (the current span when it has none),
    /// following from the other projects' spans.
    fn request_span(&self, writes: &[ItemWrite]) -> tracing::Span {
        let projects = distinct_projects(writes);
        let first = projects.first();
        let parent = first
            .and_then(|p| self.spans.get(p))
            .and_then(|s| s.id())
            .or_else(|| tracing::Span::current().id());
        let span = tracing::info_span!(
            parent: parent,
            "batch_write",
            project = first.map(|p| p.as_str()).unwrap_or_default(),
            items = writes.len(),
            projects = projects.len(),
            retries = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        for other in projects.iter().skip(1) {
            if let Some(id) = self.spans.get(other).and_then(|s| s.id()) {
                span.follows_from(id);
            }
        }
        span
    }
}

fn distinct_projects(writes: &[ItemWrite]) -> Vec<ProjectId> {
    let mut seen = HashSet::new();
    writes
        .iter()
        .filter(|w| seen.insert(&w.project))
        .map(|w| w.project.clone())
        .collect()
}

/// Writes everything, `settings.concurrency` requests at a time, and reports per project. `spans` holds the
/// `save_project` span of each project (may be empty: requests are then children of the current span).
pub(crate) async fn write_all(
    durable: &dyn DurableStore,
    leases: &Leases,
    writes: Vec<ItemWrite>,
    settings: &BatchSettings,
    spans: &HashMap<ProjectId, tracing::Span>,
) -> WriteReport {
    let mut book: HashMap<ProjectId, ProjectWrites> = HashMap::new();
    for write in &writes {
        book.entry(write.project.clone()).or_default().expected += 1;
    }
    let shared = Shared {
        durable,
        leases,
        settings,
        spans,
        book: Mutex::new(book),
        abort: Mutex::new(None),
        items_written: AtomicU64::new(0),
        puts: AtomicU64::new(0),
        deletes: AtomicU64::new(0),
        superseded: AtomicU64::new(0),
        refused: Mutex::new(Vec::new()),
        requests: AtomicU64::new(0),
        retries: AtomicU64::new(0),
    };
    futures_util::stream::iter(pack(writes))
        .map(|batch| send(&shared, batch))
        .buffer_unordered(settings.concurrency.max(1))
        .for_each(|()| async {})
        .await;
    WriteReport {
        projects: shared.book.into_inner().unwrap_or_else(|e| e.into_inner()),
        items_written: shared.items_written.into_inner(),
        puts: shared.puts.into_inner(),
        deletes: shared.deletes.into_inner(),
        superseded: shared.superseded.into_inner(),
        refused: shared
            .refused
            .into_inner()
            .unwrap_or_else(|e| e.into_inner()),
        requests: shared.requests.into_inner(),
        retries: shared.retries.into_inner(),
        stopped: shared.abort.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

/// One request, with its retries. A request the store rejects as invalid is split per project and each part
/// sent on its own, so that one project's bad item does not fail the projects that shared its request.
async fn send(shared: &Shared<'_>, batch: Vec<ItemWrite>) {
    let mut queue = vec![batch];
    while let Some(pending) = queue.pop() {
        send_one(shared, pending, &mut queue).await;
    }
}

async fn send_one(
    shared: &Shared<'_>,
    mut pending: Vec<ItemWrite>,
    queue: &mut Vec<Vec<ItemWrite>>,
) {
    let mut attempt: u32 = 0;
    let span = shared.request_span(&pending);
    async {
        loop {
            pending.retain(|w| shared.open(&w.project));
            if pending.is_empty() {
                break;
            }
            if let Some(reason) = shared.aborted() {
                shared.fail_all(&pending, &SaveError::NotAttempted(reason));
                tracing::Span::current().record("outcome", "skipped");
                break;
            }
            // The lease of every project in the request must be ours now, and for longer than the request may take.
            let projects = distinct_projects(&pending);
            let renewals =
                futures_util::future::join_all(projects.iter().map(|p| shared.leases.renew(p)))
                    .await;
            for (project, renewal) in projects.iter().zip(renewals) {
                if let Renewal::Unknown(e) = renewal {
                    shared.fail(project, &SaveError::RenewLease(e));
                }
            }
            pending.retain(|w| shared.open(&w.project));
            let budget = pending
                .iter()
                .map(|w| shared.leases.time_left(&w.project))
                .try_fold(Duration::MAX, |min, left| left.map(|l| l.min(min)));
            let Some(budget) = budget else {
                // Renewed but already too close to the lease's end (Redis answered very slowly).
                shared.fail_all(&pending, &SaveError::LeaseTooShort);
                break;
            };
            if pending.is_empty() {
                break;
            }
            attempt += 1;
            shared.requests.fetch_add(1, Ordering::Relaxed);
            let result = tokio::time::timeout(budget, shared.durable.write_batch(&pending)).await;
            // Throttling and UnprocessedItems are retried up to `max_attempts`; an unreachable store fewer times,
            // since the store's client already retries transient failures inside each attempt.
            let mut attempts_allowed = shared.settings.max_attempts;
            let reason = match result {
                Ok(Ok(outcome)) => {
                    let keys = |writes: &[ItemWrite]| -> HashSet<(ProjectId, ObjectId)> {
                        writes.iter().map(|w| (w.project.clone(), w.object_id().clone())).collect()
                    };
                    let left = keys(&outcome.unprocessed);
                    let newer = keys(&outcome.superseded);
                    for (write, error) in &outcome.refused {
                        tracing::warn!(project = %write.project, object = %write.object_id(), error = %error, "object refused by the store; held back until it changes");
                        shared.held_back(write, error);
                    }
                    let refused: Vec<ItemWrite> = outcome.refused.into_iter().map(|(w, _)| w).collect();
                    let refused = keys(&refused);
                    let (retry, done): (Vec<ItemWrite>, Vec<ItemWrite>) = pending
                        .drain(..)
                        .filter(|w| !refused.contains(&(w.project.clone(), w.object_id().clone())))
                        .partition(|w| left.contains(&(w.project.clone(), w.object_id().clone())));
                    let (superseded, done): (Vec<ItemWrite>, Vec<ItemWrite>) = done
                        .into_iter()
                        .partition(|w| newer.contains(&(w.project.clone(), w.object_id().clone())));
                    shared.written(&done);
                    shared.superseded(&superseded);
                    pending = retry;
                    if pending.is_empty() {
                        tracing::Span::current().record("outcome", "written");
                        break;
                    }
                    RetryReason::Unprocessed(pending.len())
                }
                Ok(Err(e)) if e.is_retryable() => {
                    if matches!(e, DurableError::Unavailable(_)) {
                        attempts_allowed = attempts_allowed.min(UNAVAILABLE_ATTEMPTS);
                    }
                    RetryReason::Store(e)
                }
                Ok(Err(DurableError::Rejected(message)))
                    if distinct_projects(&pending).len() > 1 =>
                {
                    tracing::warn!(error = %message, "batch rejected; retrying its projects one by one");
                    for project in distinct_projects(&pending) {
                        queue.push(pending.iter().filter(|w| w.project == project).cloned().collect());
                    }
                    tracing::Span::current().record("outcome", "split");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "batch write rejected");
                    shared.fail_all(&pending, &SaveError::Rejected(e.clone()));
                    if matches!(e, DurableError::TableMissing(_)) {
                        shared.set_abort(StopReason::TableMissing(e));
                    }
                    tracing::Span::current().record("outcome", "rejected");
                    break;
                }
                Err(_) => {
                    attempts_allowed = attempts_allowed.min(UNAVAILABLE_ATTEMPTS);
                    RetryReason::TimedOut
                }
            };
            if attempt >= attempts_allowed {
                let error = SaveError::GaveUp { attempts: attempt, reason: reason.clone() };
                tracing::warn!(error = %error, items = pending.len(), "batch write failed");
                shared.fail_all(&pending, &error);
                shared.set_abort(StopReason::KeptFailing(reason));
                tracing::Span::current().record("outcome", "failed");
                break;
            }
            shared.retried(&pending);
            let wait = backoff(shared.settings, attempt);
            tracing::debug!(attempt, reason = %reason, wait_ms = wait.as_millis() as u64, "retrying batch write");
            tokio::time::sleep(wait).await;
        }
        tracing::Span::current().record("retries", attempt.saturating_sub(1));
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use canvas_shared::durable::{LoadedProject, WriteOutcome};
    use canvas_shared::stored::Tombstone;

    fn write(project: &str, id: &str) -> ItemWrite {
        ItemWrite {
            project: ProjectId::parse(project).unwrap(),
            op: WriteOp::Delete(Tombstone {
                id: ObjectId::parse(id).unwrap(),
                stamp: 1,
            }),
        }
    }

    #[test]
    fn pack_fills_requests_of_25_distinct_keys_across_projects() {
        let mut writes = Vec::new();
        for p in 0..3 {
            for o in 0..20 {
                writes.push(write(&format!("p{p}"), &format!("o{o}")));
            }
        }
        writes.push(write("p0", "o0"));
        let batches = pack(writes);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [25, 25, 10]
        );
        for batch in &batches {
            let keys: HashSet<_> = batch.iter().map(|w| (&w.project, w.object_id())).collect();
            assert_eq!(keys.len(), batch.len());
        }
    }

    /// Rejects any request holding an object called `bad`; counts what it accepted.
    struct Picky {
        written: Mutex<Vec<ItemWrite>>,
    }

    #[async_trait::async_trait]
    impl DurableStore for Picky {
        async fn write_batch(&self, writes: &[ItemWrite]) -> Result<WriteOutcome, DurableError> {
            if writes.iter().any(|w| w.object_id().as_str() == "bad") {
                return Err(DurableError::Rejected(canvas_shared::Cause::described(
                    "item too large",
                )));
            }
            self.written.lock().unwrap().extend_from_slice(writes);
            Ok(WriteOutcome::default())
        }
        async fn load_project(&self, _: &ProjectId) -> Result<LoadedProject, DurableError> {
            Ok(LoadedProject::default())
        }
        async fn persist_seq(&self, _: &ProjectId, _: u64) -> Result<(), DurableError> {
            Ok(())
        }
        async fn ensure_table(&self, _: bool) -> Result<(), DurableError> {
            Ok(())
        }
        async fn ping(&self) -> Result<(), DurableError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_rejected_project_does_not_fail_the_projects_sharing_its_request() {
        use canvas_shared::hot::memory::MemoryHotState;
        use canvas_shared::hot::{EditContext, EditStore, SaveQueue};
        use canvas_shared::object::{Edit, NewObject};
        use canvas_shared::Limits;

        let hot = MemoryHotState::new();
        let limits = Limits::default();
        for (project, ids) in [("good", vec!["a", "b"]), ("evil", vec!["c", "bad"])] {
            let project = ProjectId::parse(project).unwrap();
            hot.load(&project, &[], 0, 0).await.unwrap();
            for id in ids {
                let object =
                    NewObject::from_json(serde_json::json!({"id": id, "type": "t"}), &limits)
                        .unwrap();
                let ctx = EditContext {
                    by: "u",
                    origin: "c",
                    now_ms: 1,
                    limits: &limits,
                    seq_floor: 0,
                };
                hot.apply(&project, &Edit::Create(object), ctx)
                    .await
                    .unwrap();
            }
        }
        let claims = hot.claim_dirty("me", 10, 60_000).await.unwrap();
        let hot: std::sync::Arc<dyn SaveQueue> = std::sync::Arc::new(hot);
        let leases = Leases::new(
            std::sync::Arc::clone(&hot),
            Duration::from_secs(60),
            &claims,
            tokio::time::Instant::now(),
        );
        let mut writes = vec![write("good", "a"), write("evil", "c"), write("good", "b")];
        writes.push(write("evil", "bad"));
        let store = Picky {
            written: Mutex::new(Vec::new()),
        };
        let settings = BatchSettings {
            concurrency: 2,
            max_attempts: 3,
            backoff_base: Duration::from_millis(1),
            backoff_max: Duration::from_millis(2),
        };
        let report = write_all(&store, &leases, writes, &settings, &HashMap::new()).await;
        let good = &report.projects[&ProjectId::parse("good").unwrap()];
        let evil = &report.projects[&ProjectId::parse("evil").unwrap()];
        assert!(good.complete(), "{good:?}");
        assert!(evil.error.is_some(), "{evil:?}");
        assert_eq!(report.items_written, 2);
        assert_eq!(store.written.lock().unwrap().len(), 2);
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let settings = BatchSettings {
            concurrency: 1,
            max_attempts: 5,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
        };
        for attempt in 1..30 {
            let cap = (10u64 << (attempt - 1).min(20)).min(50);
            assert!(backoff(&settings, attempt) <= Duration::from_millis(cap));
        }
    }
}
