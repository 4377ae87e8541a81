//! The saver against real redis-server and dynalite: what lands in DynamoDB, how many writes it takes, edits
//! racing a save, throttling and partial batches, lost leases, two savers sharing the work, and a big claim read
//! and written a bounded group at a time (put back whole when a later group fails).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use canvas_shared::durable::dynamo::DynamoStore;
use canvas_shared::durable::faulty::FaultyStore;
use canvas_shared::durable::validating::ValidatingStore;
use canvas_shared::durable::{
    DurableError, DurableStore, ItemWrite, LoadedProject, WriteOp, WriteOutcome,
};
use canvas_shared::hot::{
    Claim, ClaimCursor, ClaimPage, DirtySummary, Eviction, HotError, HotStore, PageBounds,
    Reachable, Residency, SaveQueue,
};
use canvas_shared::ids::{ObjectId, ProjectId};
use common::*;
use serde_json::json;

#[tokio::test]
async fn create_update_delete_reach_dynamodb() {
    create_update_delete_reach_dynamodb_on(Env::start().await).await;
}

#[tokio::test]
async fn create_update_delete_reach_dynamodb_on_a_cluster() {
    create_update_delete_reach_dynamodb_on(Env::on_a_cluster().await).await;
}

async fn create_update_delete_reach_dynamodb_on(env: Env) {
    let hot = env.hot();
    open(hot.as_ref(), "p1").await;
    for i in 0..3 {
        create(hot.as_ref(), "p1", rect(&format!("o{i}"), i)).await;
    }
    update(
        hot.as_ref(),
        "p1",
        "o0",
        json!({"x": 15, "fill": null, "nested": {"a": [1, 2.5, "z"]}}),
    )
    .await;
    update(
        hot.as_ref(),
        "p1",
        "o0",
        json!({"label": "héllo \"quoted\""}),
    )
    .await;
    delete(hot.as_ref(), "p1", "o1").await;

    let saver = spawn_saver(Arc::clone(&hot), Arc::new(env.store.clone()), settings()).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    assert_persisted(hot.as_ref(), &env.store, "p1").await;
    let items = query(&env.store, "p1").await;
    assert_eq!(items.len(), 2);
    assert_eq!(items["o0"]["version"], 3);
    assert_eq!(items["o0"]["x"], 15);
    assert!(items["o0"].get("fill").is_none());
    assert_eq!(items["o0"]["nested"], json!({"a": [1, 2.5, "z"]}));

    // A later delete and update travel the same path.
    delete(hot.as_ref(), "p1", "o2").await;
    update(hot.as_ref(), "p1", "o0", json!({"x": 16})).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    assert_persisted(hot.as_ref(), &env.store, "p1").await;
    let items = query(&env.store, "p1").await;
    assert_eq!(items.keys().collect::<Vec<_>>(), ["o0"]);
    assert_eq!(items["o0"]["version"], 4);

    let m = metrics_json(saver.http).await;
    assert_eq!(m["autoSave"]["totalObjectsSaved"], 5, "{m}");
    assert_eq!(m["autoSave"]["failedSaves"], 0);
    assert_eq!(m["autoSave"]["successRate"], 100.0);
    saver.stop().await;
}

#[tokio::test]
async fn five_objects_updated_ten_times_cost_five_writes() {
    let env = Env::start().await;
    let hot = env.hot();
    open(hot.as_ref(), "wa").await;
    for i in 0..5 {
        create(hot.as_ref(), "wa", rect(&format!("o{i}"), 0)).await;
    }
    for round in 1..=10 {
        for i in 0..5 {
            update(hot.as_ref(), "wa", &format!("o{i}"), json!({"x": round})).await;
        }
    }
    let store = FaultyStore::new(env.store.clone());
    let faults = Arc::clone(&store.faults);
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(store), settings()).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    assert_eq!(faults.items_written.load(Ordering::SeqCst), 5);
    assert_eq!(faults.batches.load(Ordering::SeqCst), 1);
    let m = metrics_json(saver.http).await;
    assert_eq!(m["autoSave"]["totalObjectsSaved"], 5);
    let items = query(&env.store, "wa").await;
    assert!(items.values().all(|o| o["x"] == 10 && o["version"] == 11));
    saver.stop().await;
}

#[tokio::test]
async fn an_edit_during_a_save_is_saved_by_a_later_pass() {
    let env = Env::start().await;
    let hot = env.hot();
    open(hot.as_ref(), "race").await;
    create(hot.as_ref(), "race", rect("o1", 1)).await;
    let store = FaultyStore::new(env.store.clone());
    let faults = Arc::clone(&store.faults);
    faults.delay_ms.store(600, Ordering::SeqCst);
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(store), settings()).await;

    // The first save is now held open inside BatchWriteItem.
    wait_until(Duration::from_secs(5), "first batch in flight", || async {
        faults.batches.load(Ordering::SeqCst) >= 1
    })
    .await;
    update(hot.as_ref(), "race", "o1", json!({"x": 2})).await;
    create(hot.as_ref(), "race", rect("o2", 5)).await;
    faults.delay_ms.store(0, Ordering::SeqCst);

    // The first pass ends having saved the old state; the project must still be dirty for the new edits.
    wait_until(Duration::from_secs(5), "first pass done", || async {
        saver.metrics.auto_save().saving_passes >= 1
    })
    .await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    assert_persisted(hot.as_ref(), &env.store, "race").await;
    let items = query(&env.store, "race").await;
    assert_eq!(items["o1"]["x"], 2);
    assert_eq!(items["o1"]["version"], 2);
    assert!(items.contains_key("o2"));
    assert!(saver.metrics.auto_save().saving_passes >= 2);
    saver.stop().await;
}

#[tokio::test]
async fn throttling_and_partial_batches_still_land() {
    let env = Env::start().await;
    let hot = env.hot();
    for p in ["t1", "t2"] {
        open(hot.as_ref(), p).await;
        for i in 0..40 {
            create(hot.as_ref(), p, rect(&format!("o{i}"), i)).await;
        }
    }
    let store = FaultyStore::new(env.store.clone());
    let faults = Arc::clone(&store.faults);
    faults.throttle_next.store(3, Ordering::SeqCst);
    faults.partial_next.store(3, Ordering::SeqCst);
    let mut s = settings();
    s.max_attempts = 10;
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(store), s).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    for p in ["t1", "t2"] {
        assert_persisted(hot.as_ref(), &env.store, p).await;
    }
    assert_eq!(faults.throttle_next.load(Ordering::SeqCst), 0);
    assert_eq!(faults.partial_next.load(Ordering::SeqCst), 0);
    assert_eq!(faults.items_written.load(Ordering::SeqCst), 80);
    let a = saver.metrics.auto_save();
    assert!(a.retries >= 6, "retries counted: {}", a.retries);
    assert_eq!(a.failed_saves, 0);
    assert_eq!(a.total_objects_saved, 80);
    saver.stop().await;
}

#[tokio::test]
async fn a_save_that_lost_its_lease_does_not_write() {
    let env = Env::start().await;
    let hot = env.hot();
    open(hot.as_ref(), "lease").await;
    for i in 0..50 {
        create(hot.as_ref(), "lease", rect(&format!("o{i:02}"), i)).await;
    }
    let store = FaultyStore::new(env.store.clone());
    let faults = Arc::clone(&store.faults);
    faults.delay_ms.store(700, Ordering::SeqCst);
    let mut s = settings();
    s.concurrency = 1;
    s.lease = Duration::from_millis(3000);
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(store), s).await;
    wait_until(Duration::from_secs(5), "first batch in flight", || async {
        faults.batches.load(Ordering::SeqCst) >= 1
    })
    .await;

    // The lease runs out (as if the saver had stalled) and another saver takes the project over.
    env.redis.cli(&[
        "ZADD",
        &common::keys_of("lease").bucket.leases,
        "0",
        "lease",
    ]);
    let stolen = hot.claim_dirty("intruder", 10, 60_000).await.unwrap();
    assert_eq!(stolen.len(), 1);
    assert_eq!(stolen[0].project.as_str(), "lease");

    wait_until(
        Duration::from_secs(5),
        "pass ends with a lost lease",
        || async { saver.metrics.auto_save().lost_leases == 1 },
    )
    .await;
    // Only the request already in flight landed; nothing was sent after the takeover.
    assert_eq!(faults.batches.load(Ordering::SeqCst), 1);
    assert_eq!(faults.items_written.load(Ordering::SeqCst), 25);
    assert_eq!(query(&env.store, "lease").await.len(), 25);
    // The lost claim was neither completed nor put back: the new owner holds all of the work.
    let held = hot.read_claim(&stolen[0]).await.unwrap();
    assert_eq!(held.len(), 50);
    assert!(saver
        .metrics
        .auto_save()
        .recent_errors
        .iter()
        .any(|e| e.message.contains("lease lost")));

    // The new owner gives up; the saver saves everything.
    faults.delay_ms.store(0, Ordering::SeqCst);
    hot.abandon_claim(&stolen[0]).await.unwrap();
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    assert_persisted(hot.as_ref(), &env.store, "lease").await;
    saver.stop().await;
}

/// Records, per project, which savers have a write in flight, and counts moments when two did at once.
#[derive(Clone)]
struct Recording {
    inner: DynamoStore,
    owner: &'static str,
    in_flight: Arc<Mutex<HashMap<ProjectId, Vec<&'static str>>>>,
    overlaps: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
}

#[async_trait]
impl DurableStore for Recording {
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<WriteOutcome, DurableError> {
        let mut projects: Vec<ProjectId> = writes.iter().map(|w| w.project.clone()).collect();
        projects.sort();
        projects.dedup();
        {
            let mut book = self.in_flight.lock().unwrap();
            for p in &projects {
                let owners = book.entry(p.clone()).or_default();
                if owners.iter().any(|o| *o != self.owner) {
                    self.overlaps.fetch_add(1, Ordering::SeqCst);
                }
                owners.push(self.owner);
            }
        }
        // Hold the request open a little so that overlaps, if the claims allowed them, would show.
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..15))).await;
        let result = self.inner.write_batch(writes).await;
        {
            let mut book = self.in_flight.lock().unwrap();
            for p in &projects {
                if let Some(owners) = book.get_mut(p) {
                    if let Some(i) = owners.iter().position(|o| *o == self.owner) {
                        owners.remove(i);
                    }
                }
            }
        }
        if let Ok(outcome) = &result {
            self.writes
                .fetch_add(writes.len() - outcome.not_written(), Ordering::SeqCst);
        }
        result
    }

    async fn load_project(&self, project: &ProjectId) -> Result<LoadedProject, DurableError> {
        self.inner.load_project(project).await
    }

    async fn persist_seq(&self, project: &ProjectId, seq: u64) -> Result<(), DurableError> {
        self.inner.persist_seq(project, seq).await
    }

    async fn ensure_table(&self, create: bool) -> Result<(), DurableError> {
        self.inner.ensure_table(create).await
    }

    async fn ping(&self) -> Result<(), DurableError> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn two_savers_share_200_projects_without_overlap_or_loss() {
    two_savers_share_200_projects_without_overlap_or_loss_on(Env::start().await).await;
}

#[tokio::test]
async fn two_savers_share_200_projects_without_overlap_or_loss_on_a_cluster() {
    two_savers_share_200_projects_without_overlap_or_loss_on(Env::on_a_cluster().await).await;
}

async fn two_savers_share_200_projects_without_overlap_or_loss_on(env: Env) {
    let hot = env.hot();
    let projects: Vec<String> = (0..200).map(|i| format!("proj{i:03}")).collect();
    for p in &projects {
        open(hot.as_ref(), p).await;
    }
    let in_flight = Arc::new(Mutex::new(HashMap::new()));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(AtomicUsize::new(0));
    let store = |owner| Recording {
        inner: env.store.clone(),
        owner,
        in_flight: Arc::clone(&in_flight),
        overlaps: Arc::clone(&overlaps),
        writes: Arc::clone(&writes),
    };
    let mut s = settings();
    s.interval = Duration::from_millis(100);
    s.lease = Duration::from_millis(1500);
    s.max_projects_per_pass = 40;
    let a = spawn_saver(Arc::clone(&hot), Arc::new(store("a")), s.clone()).await;
    s.owner = "saver-b".into();
    let b = spawn_saver(Arc::clone(&hot), Arc::new(store("b")), s).await;

    // Edits keep coming while both savers run: every project gets creates, updates and deletes.
    let mut exists: Vec<[bool; 5]> = vec![[false; 5]; projects.len()];
    let started = tokio::time::Instant::now();
    let mut round: i64 = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        for (i, p) in projects.iter().enumerate() {
            if (i as i64 + round) % 3 != 0 {
                continue;
            }
            let k = rand::random_range(0..5);
            let id = format!("o{k}");
            if !exists[i][k] {
                create(hot.as_ref(), p, rect(&id, round)).await;
                exists[i][k] = true;
            } else if rand::random_range(0..10) < 3 {
                delete(hot.as_ref(), p, &id).await;
                exists[i][k] = false;
            } else {
                update(hot.as_ref(), p, &id, json!({"x": round})).await;
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_clean(hot.as_ref(), Duration::from_secs(20)).await;
    for p in &projects {
        assert_persisted(hot.as_ref(), &env.store, p).await;
    }
    assert_eq!(
        overlaps.load(Ordering::SeqCst),
        0,
        "a project was saved by both savers at once"
    );
    let (ma, mb) = (a.metrics.auto_save(), b.metrics.auto_save());
    assert!(
        ma.successful_saves > 0 && mb.successful_saves > 0,
        "both savers took part: {} / {}",
        ma.successful_saves,
        mb.successful_saves
    );
    assert_eq!(ma.failed_saves + mb.failed_saves, 0);
    assert_eq!(
        (ma.total_objects_saved + mb.total_objects_saved) as usize,
        writes.load(Ordering::SeqCst)
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_full_project_of_10000_changed_objects_is_saved() {
    let env = Env::start().await;
    let hot = env.hot();
    open(hot.as_ref(), "big").await;
    let edits = (0..10_000).map(|i| {
        let hot = Arc::clone(&hot);
        async move {
            create(hot.as_ref(), "big", rect(&format!("o{i:05}"), i)).await;
        }
    });
    futures_util::StreamExt::for_each(
        futures_util::StreamExt::buffer_unordered(futures_util::stream::iter(edits), 64),
        |()| async {},
    )
    .await;
    let mut s = settings();
    s.concurrency = 8;
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(env.store.clone()), s).await;
    // Every write is its own conditional PutItem: 10,000 requests, which dynalite on a busy machine takes tens of
    // seconds to serve (docs/benchmarks.md has the measured rates).
    wait_clean(hot.as_ref(), Duration::from_secs(90)).await;
    assert_eq!(query(&env.store, "big").await.len(), 10_000);
    assert_eq!(saver.metrics.auto_save().failed_saves, 0);
    saver.stop().await;
}

#[tokio::test]
async fn a_timed_out_write_that_lands_late_never_undoes_a_newer_one() {
    let env = Env::start().await;
    let hot = env.hot();
    open(hot.as_ref(), "late").await;
    create(hot.as_ref(), "late", rect("kept", 1)).await;
    create(hot.as_ref(), "late", rect("gone", 1)).await;
    // The first request never answers, yet executes later on (as an abandoned DynamoDB request can).
    let store = FaultyStore::new(env.store.clone());
    store.faults.hold_next.store(1, Ordering::SeqCst);
    let mut s = settings();
    s.lease = Duration::from_millis(1000);
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(store.clone()), s).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;

    // Newer edits of both objects are saved: an update, and a delete.
    update(hot.as_ref(), "late", "kept", json!({"x": 2})).await;
    delete(hot.as_ref(), "late", "gone").await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    assert_persisted(hot.as_ref(), &env.store, "late").await;

    // Now the timed-out request lands, with the old state of both.
    let late = store.release_held().await.expect("late request");
    assert_eq!(late.superseded.len(), 2, "{late:?}");
    assert_persisted(hot.as_ref(), &env.store, "late").await;
    let items = query(&env.store, "late").await;
    assert_eq!(items.keys().collect::<Vec<_>>(), ["kept"]);
    assert_eq!(items["kept"]["x"], 2);
    assert_eq!(items["kept"]["version"], 2);
    saver.stop().await;
}

#[tokio::test]
async fn a_stalled_write_that_lands_after_a_lease_takeover_never_undoes_the_new_owners() {
    let env = Env::start().await;
    let hot = env.hot();
    open(hot.as_ref(), "takeover").await;
    create(hot.as_ref(), "takeover", rect("kept", 1)).await;
    create(hot.as_ref(), "takeover", rect("gone", 1)).await;
    // Saver A's request stalls in flight (it will execute, but only much later).
    let stalled = FaultyStore::new(env.store.clone());
    stalled.faults.hold_next.store(1, Ordering::SeqCst);
    let mut s = settings();
    s.concurrency = 1;
    s.lease = Duration::from_millis(3000);
    let a = spawn_saver(Arc::clone(&hot), Arc::new(stalled.clone()), s.clone()).await;
    wait_until(Duration::from_secs(5), "A's request in flight", || async {
        stalled.faults.batches.load(Ordering::SeqCst) >= 1
    })
    .await;

    // Newer edits arrive; A's lease runs out and saver B takes the project over and saves them.
    update(hot.as_ref(), "takeover", "kept", json!({"x": 2})).await;
    delete(hot.as_ref(), "takeover", "gone").await;
    env.redis.cli(&[
        "ZADD",
        &common::keys_of("takeover").bucket.leases,
        "0",
        "takeover",
    ]);
    s.owner = "saver-b".into();
    let b = spawn_saver(Arc::clone(&hot), Arc::new(env.store.clone()), s).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    assert_persisted(hot.as_ref(), &env.store, "takeover").await;

    // Now A's stalled request executes, with the old state of both objects: it changes nothing.
    let late = stalled.release_held().await.expect("late request");
    assert_eq!(late.superseded.len(), 2, "{late:?}");
    assert_persisted(hot.as_ref(), &env.store, "takeover").await;
    let items = query(&env.store, "takeover").await;
    assert_eq!(items.keys().collect::<Vec<_>>(), ["kept"]);
    assert_eq!(items["kept"]["x"], 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_object_the_store_refuses_is_held_back_and_the_rest_is_saved() {
    let env = Env::start().await;
    let hot = env.hot();
    open(hot.as_ref(), "poison").await;
    for id in ["a", "b", "bad"] {
        create(hot.as_ref(), "poison", rect(id, 1)).await;
    }
    // An object the door would refuse today (an empty property name), as an older gateway may have stored it.
    env.redis.cli(&[
        "HSET",
        &common::keys_of("poison").objects,
        "bad",
        r#"{"id":"bad","type":"rect","x":1,"y":1,"style":{"":1},"version":1}"#,
    ]);
    let store = ValidatingStore::new(env.store.clone());
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(store), settings()).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    let items = query(&env.store, "poison").await;
    assert_eq!(items.keys().collect::<Vec<_>>(), ["a", "b"]);
    let m = metrics_json(saver.http).await;
    assert_eq!(m["autoSave"]["rejectedObjects"], 1, "{m}");
    assert_eq!(m["autoSave"]["failedSaves"], 0, "{m}");
    let errors = m["autoSave"]["recentErrors"].as_array().expect("errors");
    assert!(
        errors.iter().any(|e| e["projectId"] == "poison"
            && e["objectId"] == "bad"
            && e["message"]
                .as_str()
                .is_some_and(|s| s.contains("ValidationException"))),
        "{m}"
    );

    // Once it changes into something storable, it is saved.
    update(hot.as_ref(), "poison", "bad", json!({"style": null})).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    assert_persisted(hot.as_ref(), &env.store, "poison").await;
    let m = metrics_json(saver.http).await;
    assert_eq!(m["autoSave"]["rejectedObjects"], 1, "{m}");
    saver.stop().await;
}

/// One step of a pass as seen from outside: a page read from the hot state, or the items a write request got done,
/// each with its count and object JSON bytes.
#[derive(Debug, Clone, Copy)]
enum Step {
    Read { items: usize, bytes: usize },
    Wrote { items: usize, bytes: usize },
}

fn json_bytes(writes: &[ItemWrite]) -> usize {
    writes
        .iter()
        .map(|w| match &w.op {
            WriteOp::Put(object) => object.json.len(),
            WriteOp::Delete(_) => 0,
        })
        .sum()
}

/// The saver's half of the hot state, logging every page the saver reads.
struct ReadLog {
    inner: Arc<dyn HotStore>,
    steps: Arc<Mutex<Vec<Step>>>,
}

#[async_trait]
impl Reachable for ReadLog {
    async fn ping(&self) -> Result<(), HotError> {
        self.inner.ping().await
    }
}

#[async_trait]
impl SaveQueue for ReadLog {
    async fn claim_dirty(
        &self,
        owner: &str,
        max: usize,
        lease_ms: u64,
    ) -> Result<Vec<Claim>, HotError> {
        self.inner.claim_dirty(owner, max, lease_ms).await
    }
    async fn read_claim_page(
        &self,
        claim: &Claim,
        cursor: &ClaimCursor,
        bounds: PageBounds,
    ) -> Result<ClaimPage, HotError> {
        let page = self.inner.read_claim_page(claim, cursor, bounds).await?;
        self.steps.lock().unwrap().push(Step::Read {
            items: page.changes.len(),
            bytes: page.changes.bytes(),
        });
        Ok(page)
    }
    async fn renew_claim(&self, claim: &Claim, lease_ms: u64) -> Result<bool, HotError> {
        self.inner.renew_claim(claim, lease_ms).await
    }
    async fn complete_claim(&self, claim: &Claim) -> Result<bool, HotError> {
        self.inner.complete_claim(claim).await
    }
    async fn abandon_claim(&self, claim: &Claim) -> Result<(), HotError> {
        self.inner.abandon_claim(claim).await
    }
    async fn dirty_summary(&self) -> Result<DirtySummary, HotError> {
        self.inner.dirty_summary().await
    }
    async fn hold_back(
        &self,
        claim: &Claim,
        refused: &[(ObjectId, i64)],
    ) -> Result<bool, HotError> {
        self.inner.hold_back(claim, refused).await
    }
    async fn idle_projects(
        &self,
        idle_before_ms: i64,
        max: usize,
    ) -> Result<Vec<ProjectId>, HotError> {
        self.inner.idle_projects(idle_before_ms, max).await
    }
    async fn evict(
        &self,
        project: &ProjectId,
        idle_before_ms: i64,
        now_ms: i64,
        persisted_seq: u64,
    ) -> Result<Eviction, HotError> {
        self.inner
            .evict(project, idle_before_ms, now_ms, persisted_seq)
            .await
    }
    async fn residency(&self, biggest: usize) -> Result<Residency, HotError> {
        self.inner.residency(biggest).await
    }
}

/// DynamoDB, logging what each write request got done into the same steps.
struct WriteLog {
    inner: DynamoStore,
    steps: Arc<Mutex<Vec<Step>>>,
}

#[async_trait]
impl DurableStore for WriteLog {
    async fn write_batch(&self, writes: &[ItemWrite]) -> Result<WriteOutcome, DurableError> {
        let outcome = self.inner.write_batch(writes).await?;
        let items = writes.len() - outcome.unprocessed.len();
        let bytes = json_bytes(writes) - json_bytes(&outcome.unprocessed);
        self.steps
            .lock()
            .unwrap()
            .push(Step::Wrote { items, bytes });
        Ok(outcome)
    }
    async fn load_project(&self, project: &ProjectId) -> Result<LoadedProject, DurableError> {
        self.inner.load_project(project).await
    }
    async fn persist_seq(&self, project: &ProjectId, seq: u64) -> Result<(), DurableError> {
        self.inner.persist_seq(project, seq).await
    }
    async fn ensure_table(&self, create: bool) -> Result<(), DurableError> {
        self.inner.ensure_table(create).await
    }
    async fn ping(&self) -> Result<(), DurableError> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn a_big_claim_is_read_and_written_a_bounded_group_at_a_time() {
    let env = Env::start().await;
    let hot = env.hot();
    // One project of 3,000 small and 400 big objects (about 7 MiB), and 30 small projects claimed with it.
    open(hot.as_ref(), "big").await;
    let edits = (0..3_400).map(|i| {
        let hot = Arc::clone(&hot);
        async move {
            let mut object = rect(&format!("o{i:04}"), i);
            if i % 8 == 0 {
                object["pad"] = json!("x".repeat(16 * 1024));
            }
            create(hot.as_ref(), "big", object).await;
        }
    });
    futures_util::StreamExt::for_each(
        futures_util::StreamExt::buffer_unordered(futures_util::stream::iter(edits), 64),
        |()| async {},
    )
    .await;
    for p in 0..30 {
        let project = format!("small{p:02}");
        open(hot.as_ref(), &project).await;
        for o in 0..3 {
            create(hot.as_ref(), &project, rect(&format!("o{o}"), o)).await;
        }
    }
    let steps = Arc::new(Mutex::new(Vec::new()));
    let reads = Arc::new(ReadLog {
        inner: Arc::clone(&hot),
        steps: Arc::clone(&steps),
    });
    let store = Arc::new(WriteLog {
        inner: env.store.clone(),
        steps: Arc::clone(&steps),
    });
    let mut s = settings();
    s.lease = Duration::from_secs(30);
    let saver = spawn_saver_on(reads, store, s).await;
    wait_clean(hot.as_ref(), Duration::from_secs(90)).await;

    assert_eq!(query(&env.store, "big").await.len(), 3_400);
    assert_persisted(hot.as_ref(), &env.store, "big").await;
    for p in 0..30 {
        assert_persisted(hot.as_ref(), &env.store, &format!("small{p:02}")).await;
    }
    assert_eq!(saver.metrics.auto_save().failed_saves, 0);
    saver.stop().await;

    // What the saver held at any moment: read from the hot state and not written yet.
    let steps = steps.lock().unwrap().clone();
    let group = PageBounds::DEFAULT;
    let (mut items, mut bytes, mut max_items, mut max_bytes, mut pages) = (0i64, 0i64, 0, 0, 0);
    for step in &steps {
        match *step {
            Step::Read { items: n, bytes: b } => {
                assert!(n <= group.max_items, "a page of {n} ids");
                assert!(b <= group.max_bytes, "a page of {b} bytes");
                pages += 1;
                items += n as i64;
                bytes += b as i64;
            }
            Step::Wrote { items: n, bytes: b } => {
                items -= n as i64;
                bytes -= b as i64;
            }
        }
        max_items = max_items.max(items);
        max_bytes = max_bytes.max(bytes);
    }
    assert!(pages >= 4, "the big claim took {pages} pages");
    // A group may go over its bounds by one object per concurrent read (16 of them).
    let slack = 16;
    assert!(
        max_items <= (group.max_items + slack) as i64,
        "{max_items} ids read and not yet written at once"
    );
    assert!(
        max_bytes <= (group.max_bytes + slack * 17 * 1024) as i64,
        "{max_bytes} bytes read and not yet written at once"
    );
}

#[tokio::test]
async fn a_big_claim_that_fails_after_its_first_groups_is_put_back_whole() {
    let env = Env::start().await;
    let hot = env.hot();
    open(hot.as_ref(), "halfway").await;
    let edits = (0..3_000).map(|i| {
        let hot = Arc::clone(&hot);
        async move {
            let mut object = rect(&format!("o{i:04}"), i);
            object["pad"] = json!("p".repeat(1024));
            create(hot.as_ref(), "halfway", object).await;
        }
    });
    futures_util::StreamExt::for_each(
        futures_util::StreamExt::buffer_unordered(futures_util::stream::iter(edits), 64),
        |()| async {},
    )
    .await;
    let store = FaultyStore::new(env.store.clone());
    let faults = Arc::clone(&store.faults);
    faults.delay_ms.store(20, Ordering::SeqCst);
    let mut s = settings();
    s.lease = Duration::from_secs(30);
    s.max_attempts = 2;
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(store), s).await;

    // The first group (1,000 ids) is written; then the store goes down before the claim's last group.
    wait_until(Duration::from_secs(30), "a first group written", || async {
        faults.items_written.load(Ordering::SeqCst) >= 1_000
    })
    .await;
    faults.down.store(true, Ordering::SeqCst);
    wait_until(Duration::from_secs(30), "the save failed", || async {
        saver.metrics.auto_save().failed_saves >= 1
    })
    .await;
    let written = faults.items_written.load(Ordering::SeqCst);
    assert!(
        written < 3_000,
        "the store went down before the claim's end ({written} written)"
    );
    faults.delay_ms.store(0, Ordering::SeqCst);
    faults.down.store(false, Ordering::SeqCst);
    wait_clean(hot.as_ref(), Duration::from_secs(60)).await;
    assert_persisted(hot.as_ref(), &env.store, "halfway").await;
    let m = saver.metrics.auto_save();
    // The claim was put back whole: the next pass sent every id again, and those the failed pass had written were
    // found in the store already (superseded). Had only the unwritten ids been put back, none would be.
    assert!(
        m.superseded_writes as usize >= written,
        "{} superseded after {written} written by the failed pass",
        m.superseded_writes
    );
    saver.stop().await;
}
