//! One conformance suite for [`HotStore`], run against both implementations so they cannot drift:
//! `RedisHotState` on a real redis-server (one server per test: the checks count every dirty project), the same
//! on a real 3 + 3 Redis Cluster (one cluster per test at a time, flushed before each), and `MemoryHotState` (the
//! one-process dev mode). Each check is an async function over `&dyn HotStore`; `conformance!` turns it into one
//! `#[tokio::test]` per implementation (`redis::<check>`, `cluster::<check>`, `memory::<check>`).
//!
//! Times are explicit (`now_ms` of edits; claims and renewals on a pinned [`LeaseClock`]), so lease expiry is
//! tested without sleeping.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canvas_shared::hot::keys::ProjectKeys;
use canvas_shared::hot::memory::MemoryHotState;
use canvas_shared::hot::redis::{RedisHotState, RedisTarget};
use canvas_shared::hot::{
    Applied, Bus, BusEvent, BusMessage, ChangeSet, Claim, ClaimCursor, DirtySummary, EditContext,
    Eviction, HotError, HotStore, JournalPage, LeaseClock, PageBounds, DEFAULT_JOURNAL_LEN,
};
use canvas_shared::ids::ProjectId;
use canvas_shared::object::{merge_patch, Edit};
use canvas_shared::protocol::Broadcast;
use canvas_shared::stored::StoredObject;
use canvas_shared::{ErrorCode, Limits};
use canvas_testkit::edits::{self, create, delete, delete_at, rect_at, update, update_at};
use serde_json::{json, Value};
use support::{oid, parse, pid, stored, tricky_object, tricky_props};
use tokio::sync::mpsc;

/// `conformance!(check, ...)`; attributes before a check (e.g. `#[ignore = "..."]` for a known bug) apply to its
/// Redis test only.
macro_rules! conformance {
    ($($(#[$redis_attr:meta])* $check:ident),+ $(,)?) => {
        mod redis {
            $(
                $(#[$redis_attr])*
                #[tokio::test]
                async fn $check() {
                    let server = canvas_testkit::RedisServer::start();
                    let clock = super::LeaseClock::pinned(0);
                    let hot = super::RedisHotState::connect(&server.url())
                        .expect("redis client")
                        .with_lease_clock(clock.clone());
                    super::$check(&super::Fixture::new(hot, clock)).await;
                }
            )+
        }

        mod cluster {
            $(
                $(#[$redis_attr])*
                #[tokio::test]
                async fn $check() {
                    let cluster = canvas_testkit::lease_cluster();
                    let clock = super::LeaseClock::pinned(0);
                    let target = super::RedisTarget::cluster_from_list(&cluster.nodes_env());
                    let hot = super::RedisHotState::open(target)
                        .expect("cluster client")
                        .with_lease_clock(clock.clone());
                    super::$check(&super::Fixture::new(hot, clock)).await;
                }
            )+
        }

        mod memory {
            $(
                #[tokio::test]
                async fn $check() {
                    let clock = super::LeaseClock::pinned(0);
                    let hot = super::MemoryHotState::new().with_lease_clock(clock.clone());
                    super::$check(&super::Fixture::new(hot, clock)).await;
                }
            )+
        }
    };
}

conformance!(
    apply_create_update_delete,
    apply_rejections_change_nothing,
    conditional_edits_apply_only_at_their_version,
    too_large_object_size,
    too_large_max_objects,
    not_loaded_before_load,
    load_installs_once,
    load_seq_floor,
    snapshot_contents,
    json_exact_create,
    json_exact_merge_patches,
    json_exact_load,
    load_accepts_any_json_layout,
    bus_frames,
    an_edit_continues_above_the_callers_seq_floor,
    bus_frames_are_the_broadcast_serializer_byte_for_byte,
    bus_delivers_to_that_project_only,
    bus_ephemeral_has_seq_zero,
    bus_unsubscribe_stops_delivery,
    dirty_summary_after_edits,
    dirty_summary_lists_the_oldest_100,
    claim_finds_dirty_projects_behind_many_leased_ones,
    claim_oldest_first_and_exclusive,
    read_claim_upserts_and_deletes,
    read_claim_pages_are_bounded_and_hold_each_id_once,
    edit_during_claim_is_not_lost,
    complete_claim_clears,
    abandon_claim_restores,
    expired_lease_taken_over,
    expired_leases_taken_over_in_expiry_order,
    renew_extends_lease,
    claim_carries_seq_and_completion_raises_saved_seq,
    eviction_removes_an_idle_saved_project_and_reload_continues_its_seq,
    eviction_waits_for_the_idle_time_and_reads_count_as_access,
    eviction_skips_unsaved_and_claimed_projects,
    eviction_skips_projects_with_a_client_on_some_gateway,
    eviction_persists_the_seq_first,
    eviction_keeps_a_project_holding_a_refused_object,
    project_byte_budget,
    big_project_snapshot_is_whole_and_consistent,
    residency_counts_and_ranks_projects,
    ping,
    journal_holds_each_applied_edit_as_broadcast,
    journal_pages_and_bounds,
    journal_keeps_at_least_its_length,
);

// ---------------------------------------------------------------------------------------------------------------
// Helpers

const LIMITS: Limits = Limits {
    max_frame_bytes: 256 * 1024,
    max_object_bytes: 64 * 1024,
    max_objects_per_project: 10_000,
    max_project_bytes: 32 * 1024 * 1024,
};
const BY: &str = "alice";
const ORIGIN: &str = "conn-1";
const LEASE: u64 = 1_000;

fn ctx_with(now_ms: i64, limits: &Limits) -> EditContext<'_> {
    EditContext {
        by: BY,
        origin: ORIGIN,
        now_ms,
        limits,
        seq_floor: 0,
    }
}

/// An update applied only while the object is at `version`.
fn update_if(id: &str, version: u64, patch: Value) -> Edit {
    update_at(id, patch, Some(version))
}

/// A delete applied only while the object is at `version`.
fn delete_if(id: &str, version: u64) -> Edit {
    delete_at(id, Some(version))
}

fn rect(id: &str) -> Value {
    rect_at(id, 1)
}

async fn apply_at(
    hot: &Fixture,
    project: &ProjectId,
    edit: Edit,
    now_ms: i64,
) -> Result<Applied, HotError> {
    hot.apply(project, &edit, ctx_with(now_ms, &LIMITS)).await
}

/// Applies an edit that must succeed.
async fn ok(hot: &Fixture, project: &ProjectId, edit: Edit, now_ms: i64) -> Applied {
    let what = format!("{edit:?}");
    apply_at(hot, project, edit, now_ms)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
}

fn rejection(result: Result<Applied, HotError>) -> ErrorCode {
    match result {
        Err(HotError::Rejected(r)) => {
            assert!(!r.message.is_empty(), "a rejection explains itself");
            r.code
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Loads an empty project (a new project: nothing in the durable store).
async fn open(hot: &Fixture, project: &ProjectId) {
    assert!(hot.load(project, &[], 0, 0).await.expect("load"));
}

/// The snapshot's objects by id, parsed.
async fn objects(hot: &Fixture, project: &ProjectId) -> BTreeMap<String, Value> {
    let snapshot = hot.snapshot(project).await.expect("snapshot");
    by_id(&snapshot.objects)
}

fn by_id(texts: &[String]) -> BTreeMap<String, Value> {
    edits::by_id(texts.iter().map(|text| parse(text)))
}

async fn seq(hot: &Fixture, project: &ProjectId) -> u64 {
    hot.snapshot(project).await.expect("snapshot").seq
}

fn with_version(mut body: Value, version: u64) -> Value {
    body["version"] = json!(version);
    body
}

/// A claim's change set as (id → (json, updated_at)) and sorted deleted ids.
fn changes(set: ChangeSet) -> (BTreeMap<String, (Value, i64)>, Vec<String>) {
    let mut upserts = BTreeMap::new();
    for o in set.upserts {
        let value = parse(&o.json);
        assert_eq!(
            value["id"],
            json!(o.id.as_str()),
            "upsert id matches its JSON"
        );
        assert!(upserts
            .insert(o.id.to_string(), (value, o.updated_at))
            .is_none());
    }
    let mut deletes: Vec<String> = set.deletes.iter().map(|d| d.id.to_string()).collect();
    deletes.sort();
    (upserts, deletes)
}

fn ids(set: &ChangeSet) -> Vec<String> {
    let mut all: Vec<String> = set
        .upserts
        .iter()
        .map(|o| o.id.to_string())
        .chain(set.deletes.iter().map(|d| d.id.to_string()))
        .collect();
    all.sort();
    all
}

async fn summary(hot: &Fixture) -> DirtySummary {
    hot.dirty_summary().await.expect("dirty summary")
}

/// A store under test with the lease clock it judges leases on.
struct Fixture {
    hot: Box<dyn HotStore>,
    clock: LeaseClock,
}

impl Fixture {
    fn new(hot: impl HotStore, clock: LeaseClock) -> Self {
        Self {
            hot: Box::new(hot),
            clock,
        }
    }
}

impl std::ops::Deref for Fixture {
    type Target = dyn HotStore;

    fn deref(&self) -> &Self::Target {
        &*self.hot
    }
}

async fn claim(hot: &Fixture, owner: &str, max: usize, now_ms: i64) -> Vec<Claim> {
    hot.clock.set(now_ms);
    hot.claim_dirty(owner, max, LEASE)
        .await
        .expect("claim_dirty")
}

async fn renew(hot: &Fixture, claim: &Claim, lease_ms: u64, now_ms: i64) -> bool {
    hot.clock.set(now_ms);
    hot.renew_claim(claim, lease_ms).await.expect("renew_claim")
}

fn projects_of(claims: &[Claim]) -> Vec<String> {
    claims.iter().map(|c| c.project.to_string()).collect()
}

async fn open_bus(hot: &Fixture) -> (Arc<dyn Bus>, mpsc::Receiver<BusEvent>) {
    let (tx, rx) = mpsc::channel(256);
    (hot.open_bus(tx), rx)
}

/// Subscribes, retrying while the bus connection is still being made (Redis connects in the background).
async fn subscribe(bus: &dyn Bus, project: &ProjectId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match bus.subscribe(project).await {
            Ok(()) => return,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("subscribe to {project} failed: {e:?}"),
        }
    }
}

/// The next message; the announcement of the bus's first connect may come before it.
async fn next_message(rx: &mut mpsc::Receiver<BusEvent>) -> BusMessage {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(BusEvent::Message(m))) => return m,
            Ok(Some(BusEvent::Connected)) => continue,
            Ok(Some(other)) => panic!("expected a bus message, got {other:?}"),
            Ok(None) => panic!("bus closed"),
            Err(_) => panic!("no bus message within 5 s"),
        }
    }
}

/// Publishes an ephemeral marker and asserts it is the next message: nothing else was delivered before it.
async fn expect_only_marker(
    hot: &Fixture,
    rx: &mut mpsc::Receiver<BusEvent>,
    project: &ProjectId,
    marker: &str,
) {
    let frame = json!({"type": "presence", "marker": marker}).to_string();
    hot.publish_ephemeral(project, "marker-conn", &frame)
        .await
        .expect("publish marker");
    let m = next_message(rx).await;
    assert_eq!(
        (m.project.as_str(), &*m.frame),
        (project.as_str(), frame.as_str()),
        "a message arrived that should not have been delivered"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Applying edits

async fn apply_create_update_delete(hot: &Fixture) {
    let p = pid("p-apply");
    open(hot, &p).await;

    let a = ok(hot, &p, create(rect("o1")), 1_000).await;
    assert_eq!((&a.id, a.version, a.seq), (&oid("o1"), Some(1), 1));
    assert_eq!(
        a.object.as_deref().map(parse),
        Some(with_version(rect("o1"), 1))
    );
    let a = ok(hot, &p, update("o1", json!({"x": 10})), 1_001).await;
    assert_eq!((a.version, a.seq), (Some(2), 2));
    assert_eq!(
        a.object.as_deref().map(parse),
        Some(json!({"id": "o1", "type": "rect", "x": 10, "y": 2, "version": 2})),
        "an applied update returns the object as it now is"
    );
    let a = ok(hot, &p, update("o1", json!({"y": null})), 1_002).await;
    assert_eq!((a.version, a.seq), (Some(3), 3));
    let a = ok(hot, &p, create(rect("o2")), 1_003).await;
    assert_eq!((a.id.as_str(), a.version, a.seq), ("o2", Some(1), 4));
    assert_eq!(
        objects(hot, &p).await,
        BTreeMap::from([
            (
                "o1".into(),
                json!({"id": "o1", "type": "rect", "x": 10, "version": 3})
            ),
            ("o2".into(), with_version(rect("o2"), 1)),
        ])
    );

    let a = ok(hot, &p, delete("o1"), 1_004).await;
    assert_eq!(
        a,
        Applied {
            id: oid("o1"),
            version: None,
            seq: 5,
            object: None,
        }
    );
    assert_eq!(objects(hot, &p).await.keys().collect::<Vec<_>>(), ["o2"]);

    // A deleted id can be created again, starting over at version 1.
    let a = ok(hot, &p, create(rect("o1")), 1_005).await;
    assert_eq!((a.version, a.seq), (Some(1), 6));
    assert_eq!(seq(hot, &p).await, 6);
}

async fn apply_rejections_change_nothing(hot: &Fixture) {
    let p = pid("p-reject");
    open(hot, &p).await;
    ok(hot, &p, create(rect("o1")), 1_000).await;
    let before = hot.snapshot(&p).await.unwrap();
    let before_objects = by_id(&before.objects);

    assert_eq!(
        rejection(apply_at(hot, &p, create(rect("o1")), 1_001).await),
        ErrorCode::Conflict
    );
    assert_eq!(
        rejection(apply_at(hot, &p, update("nope", json!({"x": 1})), 1_001).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        rejection(apply_at(hot, &p, delete("nope"), 1_001).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        rejection(
            apply_at(
                hot,
                &p,
                update("o1", json!({"type": "circle", "x": 5})),
                1_001
            )
            .await
        ),
        ErrorCode::BadRequest
    );

    let after = hot.snapshot(&p).await.unwrap();
    assert_eq!(after.seq, before.seq, "a refused edit does not take a seq");
    assert_eq!(by_id(&after.objects), before_objects, "nor change anything");

    // Repeating the same `type` is no change, so it is allowed.
    let a = ok(
        hot,
        &p,
        update("o1", json!({"type": "rect", "x": 5})),
        1_002,
    )
    .await;
    assert_eq!((a.version, a.seq), (Some(2), 2));
}

async fn conditional_edits_apply_only_at_their_version(hot: &Fixture) {
    let p = pid("p-if-version");
    open(hot, &p).await;
    ok(hot, &p, create(rect("o1")), 1_000).await;
    let (bus, mut rx) = open_bus(hot).await;
    subscribe(bus.as_ref(), &p).await;

    let a = ok(hot, &p, update_if("o1", 1, json!({"x": 5})), 1_001).await;
    assert_eq!((a.version, a.seq), (Some(2), 2));

    // The same condition again is stale now: refused with the current version, nothing changed.
    let before = hot.snapshot(&p).await.unwrap();
    for stale in [update_if("o1", 1, json!({"x": 9})), delete_if("o1", 1)] {
        let what = format!("{stale:?}");
        match apply_at(hot, &p, stale, 1_002).await {
            Err(HotError::Rejected(r)) => {
                assert_eq!(r.code, ErrorCode::Conflict, "{what}");
                assert_eq!(r.current_version, Some(2), "{what}");
                assert!(!r.message.is_empty(), "{what}");
            }
            other => panic!("{what}: expected a conflict, got {other:?}"),
        }
    }
    let after = hot.snapshot(&p).await.unwrap();
    assert_eq!(
        after.seq, before.seq,
        "a refused condition does not take a seq"
    );
    assert_eq!(by_id(&after.objects), by_id(&before.objects));

    // A condition on a missing object is not_found, as without one.
    assert_eq!(
        rejection(apply_at(hot, &p, update_if("nope", 1, json!({"x": 1})), 1_003).await),
        ErrorCode::NotFound
    );
    // An ordinary create conflict has no version to report.
    match apply_at(hot, &p, create(rect("o1")), 1_003).await {
        Err(HotError::Rejected(r)) => assert_eq!(r.current_version, None),
        other => panic!("expected a conflict, got {other:?}"),
    }

    let d = ok(hot, &p, delete_if("o1", 2), 1_004).await;
    assert_eq!((d.version, d.seq), (None, 3));
    assert!(objects(hot, &p).await.is_empty());

    // Only the two applied edits were published.
    assert_eq!(next_message(&mut rx).await.seq, 2);
    assert_eq!(next_message(&mut rx).await.seq, 3);
}

async fn too_large_object_size(hot: &Fixture) {
    let p = pid("p-size");
    open(hot, &p).await;
    let limit = 300;
    let limits = Limits {
        max_object_bytes: limit,
        ..LIMITS
    };
    // The limit counts the stored JSON, `version` included: find the padding that makes it exactly `limit`.
    let body = |id: &str, pad: usize| json!({"id": id, "type": "t", "pad": "é".repeat(pad / 2) + &"x".repeat(pad % 2)});
    let stored_len = |v: &Value| with_version(v.clone(), 1).to_string().len();
    let pad = (0..limit)
        .find(|pad| stored_len(&body("o1", *pad)) == limit)
        .expect("a padding that hits the limit exactly");

    let at_limit = body("o1", pad);
    let a = hot
        .apply(&p, &create(at_limit.clone()), ctx_with(1_000, &limits))
        .await
        .expect("an object of exactly the limit is accepted");
    assert_eq!(a.seq, 1);
    let over = body("o2", pad + 1);
    assert_eq!(stored_len(&over), limit + 1);
    assert_eq!(
        rejection(hot.apply(&p, &create(over), ctx_with(1_001, &limits)).await),
        ErrorCode::TooLarge
    );

    // An update is measured after the merge: growing o1 past the limit is refused and leaves it as it was.
    assert_eq!(
        rejection(
            hot.apply(&p, &update("o1", json!({"z": 1})), ctx_with(1_002, &limits))
                .await
        ),
        ErrorCode::TooLarge
    );
    let snapshot = hot.snapshot(&p).await.unwrap();
    assert_eq!(snapshot.seq, 1);
    assert_eq!(by_id(&snapshot.objects)["o1"], with_version(at_limit, 1));

    // Shrinking is fine.
    let a = hot
        .apply(
            &p,
            &update("o1", json!({"pad": null})),
            ctx_with(1_003, &limits),
        )
        .await
        .expect("shrinking update");
    assert_eq!((a.version, a.seq), (Some(2), 2));
}

async fn too_large_max_objects(hot: &Fixture) {
    let p = pid("p-count");
    open(hot, &p).await;
    let limits = Limits {
        max_objects_per_project: 3,
        ..LIMITS
    };
    for i in 0..3 {
        hot.apply(
            &p,
            &create(rect(&format!("o{i}"))),
            ctx_with(1_000, &limits),
        )
        .await
        .expect("within the limit");
    }
    assert_eq!(
        rejection(
            hot.apply(&p, &create(rect("o3")), ctx_with(1_001, &limits))
                .await
        ),
        ErrorCode::TooLarge
    );
    // Updates still work at the limit, and a delete makes room.
    hot.apply(&p, &update("o0", json!({"x": 9})), ctx_with(1_002, &limits))
        .await
        .expect("update at the limit");
    hot.apply(&p, &delete("o1"), ctx_with(1_003, &limits))
        .await
        .expect("delete");
    let a = hot
        .apply(&p, &create(rect("o3")), ctx_with(1_004, &limits))
        .await
        .expect("room after a delete");
    assert_eq!(a.seq, 6);
    assert_eq!(objects(hot, &p).await.len(), 3);
}

// ---------------------------------------------------------------------------------------------------------------
// Loading and snapshots

async fn not_loaded_before_load(hot: &Fixture) {
    let p = pid("p-cold");
    assert!(matches!(hot.snapshot(&p).await, Err(HotError::NotLoaded)));
    for edit in [
        create(rect("o1")),
        update("o1", json!({"x": 1})),
        delete("o1"),
    ] {
        let result = apply_at(hot, &p, edit, 1_000).await;
        assert!(
            matches!(result, Err(HotError::NotLoaded)),
            "edit before load: {result:?}"
        );
    }
    // Refused edits leave no trace: nothing to save, and the project is still not loaded.
    assert_eq!(summary(hot).await.count, 0);
    assert!(claim(hot, "s1", 10, 2_000).await.is_empty());
    assert!(matches!(hot.snapshot(&p).await, Err(HotError::NotLoaded)));
    // Another project's load does not load this one.
    open(hot, &pid("p-cold-other")).await;
    assert!(matches!(hot.snapshot(&p).await, Err(HotError::NotLoaded)));
}

async fn load_installs_once(hot: &Fixture) {
    let p = pid("p-load");
    let durable = [
        stored("o1", &with_version(rect("o1"), 7), 500),
        stored("o2", &with_version(rect("o2"), 2), 600),
    ];
    assert!(
        hot.load(&p, &durable, 0, 0).await.unwrap(),
        "first load installs"
    );
    assert_eq!(
        objects(hot, &p).await,
        BTreeMap::from([
            ("o1".into(), with_version(rect("o1"), 7)),
            ("o2".into(), with_version(rect("o2"), 2)),
        ])
    );
    assert_eq!(
        summary(hot).await.count,
        0,
        "a load is not an unsaved change"
    );

    // The version continues from the stored one.
    let a = ok(hot, &p, update("o1", json!({"x": 100})), 1_000).await;
    assert_eq!((a.version, a.seq), (Some(8), 1));
    ok(hot, &p, delete("o2"), 1_001).await;
    ok(hot, &p, create(rect("o3")), 1_002).await;
    let edited = objects(hot, &p).await;

    // A second load (a racing gateway with an older read) changes nothing.
    let stale = [
        stored("o1", &with_version(rect("o1"), 7), 500),
        stored("o2", &with_version(rect("o2"), 2), 600),
        stored("o4", &with_version(rect("o4"), 1), 700),
    ];
    assert!(
        !hot.load(&p, &stale, 99, 0).await.unwrap(),
        "second load is refused"
    );
    assert_eq!(objects(hot, &p).await, edited);
    assert_eq!(seq(hot, &p).await, 3, "nor does it move seq");
    assert_eq!(edited["o1"]["version"], json!(8));
    assert!(!edited.contains_key("o2"));

    // An empty project loads too, and then takes edits.
    let empty = pid("p-load-empty");
    assert!(hot.load(&empty, &[], 0, 0).await.unwrap());
    let s = hot.snapshot(&empty).await.unwrap();
    assert_eq!((s.seq, s.objects.len()), (0, 0));
    assert!(!hot.load(&empty, &durable, 0, 0).await.unwrap());
    assert!(objects(hot, &empty).await.is_empty());
}

async fn load_seq_floor(hot: &Fixture) {
    let p = pid("p-floor");
    assert!(hot
        .load(&p, &[stored("o1", &with_version(rect("o1"), 3), 1)], 41, 0)
        .await
        .unwrap());
    assert_eq!(seq(hot, &p).await, 41);
    let a = ok(hot, &p, update("o1", json!({"x": 2})), 1_000).await;
    assert_eq!((a.version, a.seq), (Some(4), 42));
    let a = ok(hot, &p, create(rect("o2")), 1_001).await;
    assert_eq!(a.seq, 43);
    assert_eq!(seq(hot, &p).await, 43);
}

async fn snapshot_contents(hot: &Fixture) {
    let p = pid("p-snap");
    assert!(hot
        .load(
            &p,
            &[stored(
                "old",
                &json!({"id": "old", "type": "note", "text": "from disk", "version": 5}),
                1
            )],
            10,
            0
        )
        .await
        .unwrap());
    ok(
        hot,
        &p,
        create(json!({"id": "a", "type": "rect", "w": 100, "h": 50, "fill": "#f00"})),
        1_000,
    )
    .await;
    ok(
        hot,
        &p,
        create(json!({"id": "b", "type": "line", "points": [[0, 0], [1, 1]]})),
        1_001,
    )
    .await;
    ok(hot, &p, create(json!({"id": "c", "type": "text"})), 1_002).await;
    ok(hot, &p, update("a", json!({"fill": null, "w": 120})), 1_003).await;
    ok(hot, &p, delete("c"), 1_004).await;
    // A client-sent `version` is ignored on create.
    ok(
        hot,
        &p,
        create(json!({"id": "d", "type": "rect", "version": 99})),
        1_005,
    )
    .await;

    let snapshot = hot.snapshot(&p).await.unwrap();
    assert_eq!(snapshot.seq, 16);
    assert_eq!(
        by_id(&snapshot.objects),
        BTreeMap::from([
            (
                "old".into(),
                json!({"id": "old", "type": "note", "text": "from disk", "version": 5})
            ),
            (
                "a".into(),
                json!({"id": "a", "type": "rect", "w": 120, "h": 50, "version": 2})
            ),
            (
                "b".into(),
                json!({"id": "b", "type": "line", "points": [[0, 0], [1, 1]], "version": 1})
            ),
            ("d".into(), json!({"id": "d", "type": "rect", "version": 1})),
        ])
    );
    // Other projects are not in it.
    open(hot, &pid("p-snap-other")).await;
    ok(hot, &pid("p-snap-other"), create(rect("zz")), 1_006).await;
    assert_eq!(hot.snapshot(&p).await.unwrap().objects.len(), 4);
}

// ---------------------------------------------------------------------------------------------------------------
// JSON exactness: objects are free JSON and must come back exactly, whatever the implementation.

async fn json_exact_create(hot: &Fixture) {
    let p = pid("p-json");
    open(hot, &p).await;
    let body = tricky_object("t1");
    ok(hot, &p, create(body.clone()), 1_000).await;
    let got = &objects(hot, &p).await["t1"];
    assert_eq!(got, &with_version(body, 1));
    // The values that lossy JSON libraries change, checked one by one for a readable failure.
    assert_eq!(got["float"].as_f64(), Some(0.30000000000000004));
    assert_eq!(got["big"].as_u64(), Some(12345678901234567));
    assert_eq!(got["maxU64"].as_u64(), Some(u64::MAX));
    assert_eq!(got["emptyArr"], json!([]));
    assert_eq!(got["emptyObj"], json!({}));
}

async fn json_exact_merge_patches(hot: &Fixture) {
    let p = pid("p-merge");
    open(hot, &p).await;
    let mut expected = json!({
        "id": "m1", "type": "shape", "n": 5, "s": "x", "arr": [1, 2, 3],
        "obj": {"a": 1, "b": {"c": 2, "d": 3}}
    });
    ok(hot, &p, create(expected.clone()), 1_000).await;

    // (patch, the object's properties after it, written out by hand)
    let steps = [
        (
            json!({
                "obj": {"b": {"c": null, "e": []}, "f": {}},
                "n": {"x": 1, "y": null},
                "arr": {"k": []},
                "s": null,
                "missing": null,
                "new": {"deep": {"gone": null, "kept": 0.30000000000000004}}
            }),
            json!({
                "id": "m1", "type": "shape",
                "obj": {"a": 1, "b": {"d": 3, "e": []}, "f": {}},
                "n": {"x": 1},
                "arr": {"k": []},
                "new": {"deep": {"kept": 0.30000000000000004}}
            }),
        ),
        (
            json!({
                "obj": [],
                "n": 12345678901234567u64,
                "arr": "now a string",
                "new": {"deep": {"kept": null}},
                "u": "é \" \\ 😀 \n",
                "we\"ird\\key": {"x": {}}
            }),
            json!({
                "id": "m1", "type": "shape",
                "obj": [],
                "n": 12345678901234567u64,
                "arr": "now a string",
                "new": {"deep": {}},
                "u": "é \" \\ 😀 \n",
                "we\"ird\\key": {"x": {}}
            }),
        ),
        (
            // An object patch over an array or scalar replaces it with the patch minus its nulls.
            json!({"obj": {"z": null, "y": {"q": null}}, "u": {"a": [null]}, "we\"ird\\key": {"x": {"y": 1}}}),
            json!({
                "id": "m1", "type": "shape",
                "obj": {"y": {}},
                "n": 12345678901234567u64,
                "arr": "now a string",
                "new": {"deep": {}},
                "u": {"a": [null]},
                "we\"ird\\key": {"x": {"y": 1}}
            }),
        ),
        (json!({}), Value::Null),
        (
            json!({"type": "shape", "tricky": tricky_props(), "new": null, "arr": null}),
            Value::Null,
        ),
    ];
    for (i, (patch, after)) in steps.into_iter().enumerate() {
        let version = i as u64 + 2;
        // The hand-written expectation agrees with the reference merge (steps with Null expect exactly that).
        merge_patch(&mut expected, &patch);
        if !after.is_null() {
            assert_eq!(expected, after, "step {i}: hand-written expectation");
        }
        let a = ok(hot, &p, update("m1", patch.clone()), 1_001 + i as i64).await;
        assert_eq!(a.version, Some(version));
        let got = &objects(hot, &p).await["m1"];
        assert_eq!(
            got,
            &with_version(expected.clone(), version),
            "step {i}: patch {patch}"
        );
    }
}

async fn json_exact_load(hot: &Fixture) {
    let p = pid("p-json-load");
    let body = with_version(tricky_object("t1"), 4);
    assert!(hot.load(&p, &[stored("t1", &body, 1)], 0, 0).await.unwrap());
    assert_eq!(objects(hot, &p).await["t1"], body);

    // Patching what was loaded keeps everything the patch does not touch, exactly.
    ok(
        hot,
        &p,
        update(
            "t1",
            json!({"deep": {"l1": {"l2": null}}, "emptyObj": {"k": []}}),
        ),
        1_000,
    )
    .await;
    let mut expected = body.clone();
    expected["deep"] = json!({"l1": {}});
    expected["emptyObj"] = json!({"k": []});
    expected["version"] = json!(5);
    assert_eq!(objects(hot, &p).await["t1"], expected);

    // And the saver reads back the same.
    let claims = claim(hot, "s1", 10, 2_000).await;
    let (upserts, _) = changes(hot.read_claim(&claims[0]).await.unwrap());
    assert_eq!(upserts["t1"], (expected, 1_000));
}

async fn load_accepts_any_json_layout(hot: &Fixture) {
    // The trait takes JSON text from the durable store; nothing promises it is compact or canonical (a store
    // written by another tool, a pretty-printed import, escaped key spellings).
    let p = pid("p-layout");
    let pretty = "{\n  \"id\": \"o1\",\n  \"type\": \"rect\",\n  \"x\": 1,\n  \"n\": { \"a\" : [ 1, 2 ] },\n  \"version\": 3\n}";
    let escaped = r#"{"id":"o2","type":"rect","\u0078":1,"version":1}"#;
    let loaded = [
        StoredObject {
            id: oid("o1"),
            json: pretty.into(),
            updated_at: 1,
        },
        StoredObject {
            id: oid("o2"),
            json: escaped.into(),
            updated_at: 1,
        },
    ];
    assert!(hot.load(&p, &loaded, 0, 0).await.unwrap());
    assert_eq!(
        objects(hot, &p).await["o1"],
        json!({"id": "o1", "type": "rect", "x": 1, "n": {"a": [1, 2]}, "version": 3})
    );
    ok(
        hot,
        &p,
        update("o1", json!({"type": "rect", "x": 2, "n": {"b": true}})),
        1_000,
    )
    .await;
    ok(hot, &p, update("o2", json!({"x": 2})), 1_001).await;
    let got = objects(hot, &p).await;
    assert_eq!(
        got["o1"],
        json!({"id": "o1", "type": "rect", "x": 2, "n": {"a": [1, 2], "b": true}, "version": 4})
    );
    assert_eq!(
        got["o2"],
        json!({"id": "o2", "type": "rect", "x": 2, "version": 2})
    );
    // No duplicate keys either (a parser would silently keep one of them).
    let snapshot = hot.snapshot(&p).await.unwrap();
    for text in &snapshot.objects {
        assert_eq!(
            text.matches("\"x\"").count() + text.matches("\\u0078").count(),
            1,
            "{text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The bus

async fn bus_frames(hot: &Fixture) {
    let p = pid("p-bus");
    open(hot, &p).await;
    let (bus, mut rx) = open_bus(hot).await;
    subscribe(bus.as_ref(), &p).await;
    let by = "bob \"the\" builder ✓";
    let ctx = |now_ms| EditContext {
        by,
        origin: "conn-42",
        now_ms,
        limits: &LIMITS,
        seq_floor: 0,
    };

    let body =
        json!({"id": "o1", "type": "rect", "x": 0.30000000000000004, "tags": [], "meta": {}});
    hot.apply(&p, &create(body.clone()), ctx(1_000))
        .await
        .unwrap();
    let patch =
        json!({"x": 12345678901234567u64, "tags": null, "meta": {"a": {"b": null}}, "s": "é\"\\"});
    hot.apply(&p, &update("o1", patch.clone()), ctx(1_001))
        .await
        .unwrap();
    hot.apply(&p, &delete("o1"), ctx(1_002)).await.unwrap();
    // A refused edit publishes nothing.
    assert!(hot.apply(&p, &delete("o1"), ctx(1_003)).await.is_err());

    let expected = [
        json!({"type": "created", "object": with_version(body, 1), "seq": 1, "by": by}),
        json!({"type": "updated", "id": "o1", "patch": patch, "version": 2, "seq": 2, "by": by}),
        json!({"type": "deleted", "id": "o1", "seq": 3, "by": by}),
    ];
    for (i, frame) in expected.into_iter().enumerate() {
        let m = next_message(&mut rx).await;
        assert_eq!(m.project, p);
        assert_eq!(m.origin, "conn-42");
        assert_eq!(m.seq, i as u64 + 1);
        assert_eq!(parse(&m.frame), frame, "frame {i}");
    }
    expect_only_marker(hot, &mut rx, &p, "after-refused-edit").await;
}

/// An edit never gets a seq its caller has already seen, even when the store's seq went back.
async fn an_edit_continues_above_the_callers_seq_floor(hot: &Fixture) {
    let p = pid("p-floor");
    open(hot, &p).await;
    for i in 0..3 {
        ok(hot, &p, create(rect(&format!("o{i}"))), 1_000 + i).await;
    }
    let mut ctx = ctx_with(2_000, &LIMITS);
    ctx.seq_floor = 10;
    let above = hot
        .apply(&p, &update("o1", json!({"x": 5})), ctx)
        .await
        .unwrap();
    assert_eq!(above.seq, 11, "the edit continues above the floor");
    let next = ok(hot, &p, update("o1", json!({"x": 6})), 2_001).await;
    assert_eq!(next.seq, 12, "and the store's seq continues from there");
    assert_eq!(seq(hot, &p).await, 12);
}

/// The frames the store publishes are exactly [`Broadcast::to_text`]'s bytes (the Redis script writes its own,
/// so without this test the two layouts could drift apart unnoticed while staying equal as JSON).
async fn bus_frames_are_the_broadcast_serializer_byte_for_byte(hot: &Fixture) {
    let p = pid("p-bytes");
    open(hot, &p).await;
    let (bus, mut rx) = open_bus(hot).await;
    subscribe(bus.as_ref(), &p).await;
    let by = "ann \"a\" ✓ \u{2028}";
    let ctx = |now_ms| EditContext {
        by,
        origin: "conn-7",
        now_ms,
        limits: &LIMITS,
        seq_floor: 0,
    };
    let id = oid("o.1:x-y_Z");

    let created = hot
        .apply(
            &p,
            &create(
                json!({"id": id.as_str(), "type": "rect", "x": 1.5e-7, "z": [{}], "s": "\u{1}"}),
            ),
            ctx(1_000),
        )
        .await
        .unwrap();
    let patch = json!({"x": null, "big": 12345678901234567u64, "s": "é\"\\/"});
    let updated = hot
        .apply(&p, &update(id.as_str(), patch.clone()), ctx(1_001))
        .await
        .unwrap();
    let deleted = hot
        .apply(&p, &delete(id.as_str()), ctx(1_002))
        .await
        .unwrap();

    let patch_text = serde_json::to_string(&patch).unwrap();
    let created_object = created.object.clone().expect("a create returns its object");
    let expected = [
        Broadcast::Created {
            object: &created_object,
        }
        .to_text(created.seq, by),
        Broadcast::Updated {
            id: &id,
            patch: &patch_text,
            version: updated.version.expect("an update has a version"),
        }
        .to_text(updated.seq, by),
        Broadcast::Deleted { id: &id }.to_text(deleted.seq, by),
    ];
    for (i, frame) in expected.iter().enumerate() {
        let m = next_message(&mut rx).await;
        assert_eq!(&*m.frame, frame.as_str(), "frame {i}");
    }
}

async fn bus_delivers_to_that_project_only(hot: &Fixture) {
    let (a, b) = (pid("p-bus-a"), pid("p-bus-b"));
    open(hot, &a).await;
    open(hot, &b).await;
    // Two processes' buses: one in project a, one in project b; and a third in both.
    let (bus_a, mut rx_a) = open_bus(hot).await;
    let (bus_b, mut rx_b) = open_bus(hot).await;
    let (bus_ab, mut rx_ab) = open_bus(hot).await;
    subscribe(bus_a.as_ref(), &a).await;
    subscribe(bus_b.as_ref(), &b).await;
    subscribe(bus_ab.as_ref(), &a).await;
    subscribe(bus_ab.as_ref(), &b).await;

    ok(hot, &b, create(rect("in-b")), 1_000).await;
    ok(hot, &a, create(rect("in-a")), 1_001).await;

    let m = next_message(&mut rx_a).await;
    assert_eq!(
        (m.project.as_str(), m.seq),
        ("p-bus-a", 1),
        "bus a gets a's edit, and b's did not come first"
    );
    assert_eq!(parse(&m.frame)["object"]["id"], "in-a");
    let m = next_message(&mut rx_b).await;
    assert_eq!((m.project.as_str(), m.seq), ("p-bus-b", 1));
    assert_eq!(parse(&m.frame)["object"]["id"], "in-b");
    let m1 = next_message(&mut rx_ab).await;
    let m2 = next_message(&mut rx_ab).await;
    assert_eq!(
        (m1.project.as_str(), m2.project.as_str()),
        ("p-bus-b", "p-bus-a")
    );
    expect_only_marker(hot, &mut rx_a, &a, "a-only").await;
    expect_only_marker(hot, &mut rx_b, &b, "b-only").await;

    // An unloaded project's channel can be subscribed to, and a load publishes nothing.
    let c = pid("p-bus-c");
    subscribe(bus_a.as_ref(), &c).await;
    assert!(hot
        .load(&c, &[stored("x", &rect("x"), 1)], 0, 0)
        .await
        .unwrap());
    expect_only_marker(hot, &mut rx_a, &a, "after-load").await;
}

async fn bus_ephemeral_has_seq_zero(hot: &Fixture) {
    let p = pid("p-eph");
    let (bus, mut rx) = open_bus(hot).await;
    subscribe(bus.as_ref(), &p).await;
    // Presence needs no loaded project and takes no seq.
    let frame = r#"{"type":"presence","clientId":"c1","by":"ann","x":1.5,"y":-2,"name":"é\"✓"}"#;
    hot.publish_ephemeral(&p, "conn-7", frame).await.unwrap();
    let m = next_message(&mut rx).await;
    assert_eq!(
        (m.project.as_str(), m.origin.as_str(), m.seq, &*m.frame),
        ("p-eph", "conn-7", 0, frame)
    );
    open(hot, &p).await;
    assert_eq!(ok(hot, &p, create(rect("o1")), 1_000).await.seq, 1);
    assert_eq!(next_message(&mut rx).await.seq, 1);
}

async fn bus_unsubscribe_stops_delivery(hot: &Fixture) {
    let (p, marker) = (pid("p-unsub"), pid("p-unsub-marker"));
    open(hot, &p).await;
    let (bus, mut rx) = open_bus(hot).await;
    subscribe(bus.as_ref(), &p).await;
    subscribe(bus.as_ref(), &marker).await;
    ok(hot, &p, create(rect("o1")), 1_000).await;
    assert_eq!(next_message(&mut rx).await.project, p);

    bus.unsubscribe(&p).await.expect("unsubscribe");
    ok(hot, &p, update("o1", json!({"x": 2})), 1_001).await;
    hot.publish_ephemeral(&p, "conn-9", "{}").await.unwrap();
    expect_only_marker(hot, &mut rx, &marker, "after-unsubscribe").await;

    // Subscribing again resumes delivery with the next edit.
    subscribe(bus.as_ref(), &p).await;
    ok(hot, &p, update("o1", json!({"x": 3})), 1_002).await;
    let m = next_message(&mut rx).await;
    assert_eq!((m.project.as_str(), m.seq), ("p-unsub", 3));
}

// ---------------------------------------------------------------------------------------------------------------
// The dirty index and the saver's claims

async fn dirty_summary_after_edits(hot: &Fixture) {
    assert_eq!(summary(hot).await, DirtySummary::default());
    let (a, b, c) = (pid("p-d-a"), pid("p-d-b"), pid("p-d-c"));
    for p in [&a, &b, &c] {
        open(hot, p).await;
    }
    assert_eq!(summary(hot).await.count, 0, "loading is not an edit");

    ok(hot, &a, create(rect("o1")), 5_000).await;
    ok(hot, &b, create(rect("o1")), 3_000).await;
    ok(hot, &a, update("o1", json!({"x": 1})), 2_000).await;
    ok(hot, &c, create(rect("o1")), 4_000).await;
    ok(hot, &b, delete("o1"), 9_000).await;
    // Refused edits do not mark anything.
    assert!(apply_at(hot, &pid("p-d-unloaded"), create(rect("o1")), 1)
        .await
        .is_err());
    assert!(apply_at(hot, &c, delete("nope"), 1).await.is_err());

    assert_eq!(
        summary(hot).await,
        DirtySummary {
            count: 3,
            // The first edit's time is kept by later edits (even one stamped earlier).
            oldest_modification: Some(3_000),
            project_ids: vec!["p-d-b".into(), "p-d-c".into(), "p-d-a".into()],
        }
    );

    // Projects being saved still count, at their claimed time.
    let claims = claim(hot, "s1", 1, 10_000).await;
    assert_eq!(projects_of(&claims), ["p-d-b"]);
    assert_eq!(claims[0].dirty_since, 3_000);
    assert_eq!(
        summary(hot).await,
        DirtySummary {
            count: 3,
            oldest_modification: Some(3_000),
            project_ids: vec!["p-d-b".into(), "p-d-c".into(), "p-d-a".into()],
        }
    );
    assert!(hot.complete_claim(&claims[0]).await.unwrap());
    assert_eq!(
        summary(hot).await,
        DirtySummary {
            count: 2,
            oldest_modification: Some(4_000),
            project_ids: vec!["p-d-c".into(), "p-d-a".into()],
        }
    );
}

async fn dirty_summary_lists_the_oldest_100(hot: &Fixture) {
    // 150 dirty projects, edited newest-name-first; 10 of them being saved.
    for i in 0..150 {
        let p = pid(&format!("p-many-{i:03}"));
        open(hot, &p).await;
        ok(hot, &p, create(rect("o1")), 100_000 - i).await;
    }
    let claims = claim(hot, "s1", 10, 200_000).await;
    assert_eq!(claims.len(), 10);
    assert_eq!(claims[0].project.as_str(), "p-many-149");
    let s = summary(hot).await;
    assert_eq!(s.count, 150);
    assert_eq!(s.oldest_modification, Some(100_000 - 149));
    let expected: Vec<String> = (50..150).rev().map(|i| format!("p-many-{i:03}")).collect();
    assert_eq!(s.project_ids, expected, "the 100 oldest, oldest first");
}

async fn claim_finds_dirty_projects_behind_many_leased_ones(hot: &Fixture) {
    // 120 projects claimed and then edited again: the oldest entries of the dirty index are all under live
    // leases, and a claim must look past them (Redis scans the index in windows of 100).
    for i in 0..120 {
        let p = pid(&format!("p-busy-{i:03}"));
        open(hot, &p).await;
        ok(hot, &p, create(rect("o1")), 1_000 + i).await;
    }
    assert_eq!(claim(hot, "s1", 500, 10_000).await.len(), 120);
    for i in 0..120 {
        let p = pid(&format!("p-busy-{i:03}"));
        ok(hot, &p, update("o1", json!({"x": i})), 10_100 + i).await;
    }
    let fresh = pid("p-fresh");
    open(hot, &fresh).await;
    ok(hot, &fresh, create(rect("o1")), 10_300).await;
    let claims = claim(hot, "s2", 10, 10_500).await;
    assert_eq!(projects_of(&claims), ["p-fresh"]);
    assert_eq!(summary(hot).await.count, 121);
}

async fn claim_oldest_first_and_exclusive(hot: &Fixture) {
    let names = ["p-c-3", "p-c-1", "p-c-4", "Org_2:team.p-c-2"];
    let times = [3_000, 1_000, 4_000, 2_000];
    for (name, t) in names.iter().zip(times) {
        let p = pid(name);
        open(hot, &p).await;
        ok(hot, &p, create(rect("o1")), t).await;
    }
    let first = claim(hot, "saver-a", 2, 10_000).await;
    assert_eq!(projects_of(&first), ["p-c-1", "Org_2:team.p-c-2"]);
    assert_eq!(
        first.iter().map(|c| c.dirty_since).collect::<Vec<_>>(),
        [1_000, 2_000]
    );
    assert_ne!(
        first[0].token, first[1].token,
        "tokens are unique per claim"
    );

    // Another saver, while those leases live, gets only what is left.
    let second = claim(hot, "saver-b", 10, 10_500).await;
    assert_eq!(projects_of(&second), ["p-c-3", "p-c-4"]);
    assert!(second
        .iter()
        .all(|c| !first.iter().any(|f| f.token == c.token)));
    assert!(claim(hot, "saver-c", 10, 10_999).await.is_empty());
    // An edit to a claimed project makes it dirty again, yet it stays unclaimable while its lease lives.
    ok(hot, &pid("p-c-1"), update("o1", json!({"x": 1})), 10_600).await;
    assert!(claim(hot, "saver-c", 10, 10_999).await.is_empty());
    assert_eq!(summary(hot).await.count, 4);
}

async fn read_claim_upserts_and_deletes(hot: &Fixture) {
    let p = pid("p-read");
    assert!(hot
        .load(
            &p,
            &[
                stored("disk1", &with_version(rect("disk1"), 3), 100),
                stored("disk2", &with_version(rect("disk2"), 1), 100),
                stored("untouched", &with_version(rect("untouched"), 1), 100),
            ],
            0,
            0
        )
        .await
        .unwrap());
    ok(hot, &p, create(rect("new1")), 1_000).await;
    ok(hot, &p, update("new1", json!({"x": 5})), 1_500).await;
    ok(hot, &p, update("disk1", json!({"label": "é"})), 1_200).await;
    ok(hot, &p, delete("disk2"), 1_300).await;
    ok(hot, &p, create(rect("gone")), 1_400).await;
    ok(hot, &p, delete("gone"), 1_450).await;

    let claims = claim(hot, "s1", 10, 2_000).await;
    assert_eq!(projects_of(&claims), ["p-read"]);
    assert_eq!(claims[0].dirty_since, 1_000);
    let (upserts, deletes) = changes(hot.read_claim(&claims[0]).await.unwrap());
    assert_eq!(
        upserts,
        BTreeMap::from([
            (
                "new1".into(),
                (
                    json!({"id": "new1", "type": "rect", "x": 5, "y": 2, "version": 2}),
                    1_500
                )
            ),
            (
                "disk1".into(),
                (
                    json!({"id": "disk1", "type": "rect", "x": 1, "y": 2, "label": "é", "version": 4}),
                    // Stamped at 1_200 by its clock, but after an edit stamped 1_500: stamps only go up.
                    1_501
                )
            ),
        ])
    );
    assert_eq!(deletes, ["disk2", "gone"]);
    // A delete travels with its own stamp, as a tombstone.
    let mut tombstones: Vec<(String, i64)> = hot
        .read_claim(&claims[0])
        .await
        .unwrap()
        .deletes
        .into_iter()
        .map(|t| (t.id.to_string(), t.stamp))
        .collect();
    tombstones.sort();
    assert_eq!(
        tombstones,
        [("disk2".into(), 1_502), ("gone".into(), 1_504)]
    );
    // Reading is repeatable (a retried save reads the same).
    let again = hot.read_claim(&claims[0]).await.unwrap();
    assert_eq!(ids(&again), ["disk1", "disk2", "gone", "new1"]);
}

/// A claim of 5,000 changed ids (some deleted, some big) read page by page: every id comes exactly once, each page
/// keeps to its bounds, a cursor reads the same page again, and an edit made between pages stays out of the claim.
async fn read_claim_pages_are_bounded_and_hold_each_id_once(hot: &Fixture) {
    let p = pid("p-paged");
    open(hot, &p).await;
    let mut now = 1_000;
    for i in 0..5_000 {
        let mut body = rect(&format!("o{i:04}"));
        if i % 10 == 0 {
            body["pad"] = json!("x".repeat(8 * 1024));
        }
        ok(hot, &p, create(body), now).await;
        now += 1;
    }
    for i in (0..5_000).step_by(7) {
        ok(hot, &p, delete(&format!("o{i:04}")), now).await;
        now += 1;
    }
    let claims = claim(hot, "s1", 10, now).await;
    assert_eq!(projects_of(&claims), ["p-paged"]);

    for bounds in [
        PageBounds::DEFAULT,
        PageBounds {
            max_items: 1000,
            max_bytes: 256 * 1024,
        },
        PageBounds {
            max_items: 333,
            max_bytes: 1,
        },
    ] {
        let mut seen = BTreeMap::new();
        let mut cursor = ClaimCursor::default();
        let mut pages = 0;
        loop {
            let page = hot
                .read_claim_page(&claims[0], &cursor, bounds)
                .await
                .expect("read a page");
            let again = hot
                .read_claim_page(&claims[0], &cursor, bounds)
                .await
                .expect("read the page again");
            assert_eq!(
                ids(&page.changes),
                ids(&again.changes),
                "a cursor reads the same page"
            );
            pages += 1;
            let items = page.changes.len();
            assert!(
                (1..=bounds.max_items).contains(&items),
                "{items} ids in a page bounded at {bounds:?}"
            );
            assert!(
                items == 1 || page.changes.bytes() <= bounds.max_bytes,
                "{} bytes in a page of {items} bounded at {bounds:?}",
                page.changes.bytes()
            );
            if bounds.max_bytes == 1 {
                assert!(
                    page.changes.upserts.len() <= 1,
                    "one object a page when each is over the byte bound"
                );
            }
            for o in &page.changes.upserts {
                assert!(
                    seen.insert(o.id.to_string(), true).is_none(),
                    "{} twice",
                    o.id
                );
            }
            for t in &page.changes.deletes {
                assert!(
                    seen.insert(t.id.to_string(), false).is_none(),
                    "{} twice",
                    t.id
                );
            }
            if pages == 2 {
                // An edit between pages starts the next claim's changes, never this one's.
                ok(hot, &p, create(rect("late")), now).await;
            }
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        assert_eq!(seen.len(), 5_000, "every id of the claim, with {bounds:?}");
        for i in 0..5_000 {
            assert_eq!(
                seen[&format!("o{i:04}")],
                i % 7 != 0,
                "o{i:04} with {bounds:?}"
            );
        }
        assert!(pages >= 5, "{pages} pages with {bounds:?}");
        ok(hot, &p, delete("late"), now).await;
    }
}

async fn edit_during_claim_is_not_lost(hot: &Fixture) {
    let p = pid("p-race");
    open(hot, &p).await;
    ok(hot, &p, create(rect("o1")), 1_000).await;
    ok(hot, &p, create(rect("o2")), 1_100).await;
    let claims = claim(hot, "s1", 10, 2_000).await;
    assert_eq!(claims.len(), 1);

    // Edits while the save runs: a new object, and one already in the claim.
    ok(hot, &p, create(rect("o3")), 2_100).await;
    ok(hot, &p, update("o1", json!({"x": 7})), 2_200).await;
    let s = summary(hot).await;
    assert_eq!(
        (s.count, s.oldest_modification),
        (1, Some(1_000)),
        "one project, counted once"
    );

    // The claim reads the current state of its own ids (o1 already carries the new x).
    let (upserts, deletes) = changes(hot.read_claim(&claims[0]).await.unwrap());
    assert_eq!(upserts.keys().collect::<Vec<_>>(), ["o1", "o2"]);
    assert!(deletes.is_empty());
    assert!(hot.complete_claim(&claims[0]).await.unwrap());

    // The save is done, but the project is dirty again from the first edit that raced it.
    assert_eq!(
        summary(hot).await,
        DirtySummary {
            count: 1,
            oldest_modification: Some(2_100),
            project_ids: vec!["p-race".into()]
        }
    );
    let next = claim(hot, "s2", 10, 3_000).await;
    assert_eq!(projects_of(&next), ["p-race"]);
    assert_eq!(next[0].dirty_since, 2_100);
    let set = hot.read_claim(&next[0]).await.unwrap();
    assert_eq!(ids(&set), ["o1", "o3"]);
    let (upserts, _) = changes(set);
    assert_eq!(upserts["o1"].0["x"], json!(7));
    assert_eq!(upserts["o1"].1, 2_200);
}

async fn complete_claim_clears(hot: &Fixture) {
    let p = pid("p-done");
    open(hot, &p).await;
    ok(hot, &p, create(rect("o1")), 1_000).await;
    let claims = claim(hot, "s1", 10, 2_000).await;
    assert!(hot.complete_claim(&claims[0]).await.unwrap());
    assert_eq!(summary(hot).await, DirtySummary::default());
    // Nothing left to claim, even after the old lease would have expired.
    assert!(claim(hot, "s2", 10, 2_500).await.is_empty());
    assert!(claim(hot, "s2", 10, 100_000).await.is_empty());
    // A completed claim is over: it cannot be renewed or completed again.
    assert!(!renew(hot, &claims[0], LEASE, 2_100).await);
    assert!(!hot.complete_claim(&claims[0]).await.unwrap());

    // The next edit starts a fresh change set with only its own id.
    ok(hot, &p, create(rect("o2")), 5_000).await;
    let next = claim(hot, "s2", 10, 6_000).await;
    assert_eq!(next[0].dirty_since, 5_000);
    assert_eq!(ids(&hot.read_claim(&next[0]).await.unwrap()), ["o2"]);
}

async fn abandon_claim_restores(hot: &Fixture) {
    let (p, q) = (pid("p-fail"), pid("p-fail-later"));
    open(hot, &p).await;
    open(hot, &q).await;
    ok(hot, &p, create(rect("o1")), 1_000).await;
    ok(hot, &p, create(rect("o2")), 1_100).await;
    ok(hot, &q, create(rect("o1")), 1_500).await;

    // A failed save with no edit meanwhile: back in the index at its original time, ids intact.
    let claims = claim(hot, "s1", 1, 2_000).await;
    assert_eq!(projects_of(&claims), ["p-fail"]);
    hot.abandon_claim(&claims[0]).await.unwrap();
    assert_eq!(
        summary(hot).await,
        DirtySummary {
            count: 2,
            oldest_modification: Some(1_000),
            project_ids: vec!["p-fail".into(), "p-fail-later".into()]
        }
    );
    // The abandoned claim is over.
    assert!(!renew(hot, &claims[0], LEASE, 2_100).await);
    assert!(!hot.complete_claim(&claims[0]).await.unwrap());

    // Claimable again right away (no lease left), oldest first as before.
    let claims = claim(hot, "s2", 1, 2_200).await;
    assert_eq!(projects_of(&claims), ["p-fail"]);
    assert_eq!(claims[0].dirty_since, 1_000);
    assert_eq!(
        ids(&hot.read_claim(&claims[0]).await.unwrap()),
        ["o1", "o2"]
    );

    // A failed save with edits meanwhile: the ids merge, and the original (older) time wins.
    ok(hot, &p, create(rect("o3")), 2_300).await;
    ok(hot, &p, update("o1", json!({"x": 3})), 2_400).await;
    hot.abandon_claim(&claims[0]).await.unwrap();
    let s = summary(hot).await;
    assert_eq!((s.count, s.oldest_modification), (2, Some(1_000)));
    assert_eq!(s.project_ids, ["p-fail", "p-fail-later"]);
    let claims = claim(hot, "s3", 10, 3_000).await;
    assert_eq!(projects_of(&claims), ["p-fail", "p-fail-later"]);
    assert_eq!(claims[0].dirty_since, 1_000);
    assert_eq!(
        ids(&hot.read_claim(&claims[0]).await.unwrap()),
        ["o1", "o2", "o3"]
    );
    assert!(hot.complete_claim(&claims[0]).await.unwrap());
    assert!(hot.complete_claim(&claims[1]).await.unwrap());
    assert_eq!(summary(hot).await, DirtySummary::default());
}

async fn expired_lease_taken_over(hot: &Fixture) {
    let p = pid("p-crash");
    open(hot, &p).await;
    ok(hot, &p, create(rect("o1")), 1_000).await;
    ok(hot, &p, delete("o1"), 1_100).await;
    ok(hot, &p, create(rect("o2")), 1_200).await;
    let a = claim(hot, "saver-a", 10, 10_000).await.remove(0);
    // saver-a crashes. An edit meanwhile re-marks the project dirty...
    ok(hot, &p, create(rect("o3")), 10_500).await;
    // ...but its lease (10_000 + LEASE) still holds until it expires.
    assert!(claim(hot, "saver-b", 10, 10_999).await.is_empty());

    // At expiry another saver takes it over, once, with everything the crashed claim held plus the new edit.
    let taken = claim(hot, "saver-b", 10, 11_000).await;
    assert_eq!(projects_of(&taken), ["p-crash"]);
    let b = &taken[0];
    assert_ne!(b.token, a.token);
    assert_eq!(b.dirty_since, 1_000, "the crashed claim's time is kept");
    let (upserts, deletes) = changes(hot.read_claim(b).await.unwrap());
    assert_eq!(upserts.keys().collect::<Vec<_>>(), ["o2", "o3"]);
    assert_eq!(deletes, ["o1"]);

    // The old token is dead: it can neither renew, complete, nor undo the new claim.
    assert!(!renew(hot, &a, LEASE, 11_001).await);
    assert!(!hot.complete_claim(&a).await.unwrap());
    hot.abandon_claim(&a).await.unwrap();
    assert!(
        claim(hot, "saver-c", 10, 11_500).await.is_empty(),
        "the new lease still holds"
    );
    assert_eq!(ids(&hot.read_claim(b).await.unwrap()), ["o1", "o2", "o3"]);
    assert!(renew(hot, b, LEASE, 11_600).await);
    assert!(hot.complete_claim(b).await.unwrap());
    assert_eq!(summary(hot).await, DirtySummary::default());
    assert!(claim(hot, "saver-c", 10, 100_000).await.is_empty());
}

async fn expired_leases_taken_over_in_expiry_order(hot: &Fixture) {
    // Names sort the other way round from expiry, so ordering by name would pick the wrong one.
    let (late, early) = (pid("p-exp-a"), pid("p-exp-b"));
    for p in [&late, &early] {
        open(hot, p).await;
        ok(hot, p, create(rect("o1")), 1_000).await;
    }
    let c_early = claim(hot, "s1", 10, 10_000).await;
    assert_eq!(projects_of(&c_early), ["p-exp-a", "p-exp-b"]);
    // Renew p-exp-a's lease further: p-exp-b now expires first (at 11_000), p-exp-a at 12_000.
    assert!(renew(hot, &c_early[0], 2_000, 10_000).await);
    let taken = claim(hot, "s2", 1, 12_500).await;
    assert_eq!(
        projects_of(&taken),
        ["p-exp-b"],
        "the longest-expired lease first"
    );
    let taken = claim(hot, "s2", 1, 12_500).await;
    assert_eq!(projects_of(&taken), ["p-exp-a"]);
}

async fn renew_extends_lease(hot: &Fixture) {
    let p = pid("p-renew");
    open(hot, &p).await;
    ok(hot, &p, create(rect("o1")), 1_000).await;
    let c = claim(hot, "saver-a", 10, 10_000).await.remove(0);
    // Renewed at 10_800 for LEASE: it now holds until 11_800.
    assert!(renew(hot, &c, LEASE, 10_800).await);
    assert!(claim(hot, "saver-b", 10, 11_000).await.is_empty());
    assert!(claim(hot, "saver-b", 10, 11_799).await.is_empty());
    assert!(renew(hot, &c, 5_000, 11_500).await);
    assert!(claim(hot, "saver-b", 10, 16_499).await.is_empty());
    assert!(hot.complete_claim(&c).await.unwrap());
    assert!(claim(hot, "saver-b", 10, 20_000).await.is_empty());

    // Without renewal the same lease would have been taken over.
    ok(hot, &p, update("o1", json!({"x": 1})), 20_000).await;
    let c = claim(hot, "saver-a", 10, 21_000).await.remove(0);
    let taken = claim(hot, "saver-b", 10, 22_000).await;
    assert_eq!(projects_of(&taken), ["p-renew"]);
    assert!(!renew(hot, &c, LEASE, 22_001).await);
}

async fn claim_carries_seq_and_completion_raises_saved_seq(hot: &Fixture) {
    let p = pid("p-saved");
    assert!(hot.load(&p, &[], 7, 0).await.unwrap());
    assert_eq!(
        hot.snapshot(&p).await.unwrap().saved_seq,
        7,
        "what a cold load installs is saved"
    );
    ok(hot, &p, create(rect("o1")), 1_000).await;
    ok(hot, &p, create(rect("o2")), 1_100).await;
    let first = claim(hot, "s1", 10, 2_000).await.remove(0);
    assert_eq!(
        first.seq, 9,
        "the claim covers every edit up to the seq at claim time"
    );
    ok(hot, &p, update("o1", json!({"x": 3})), 2_100).await;
    assert_eq!(
        hot.snapshot(&p).await.unwrap().saved_seq,
        7,
        "nothing saved before completion"
    );
    assert!(hot.complete_claim(&first).await.unwrap());
    let snapshot = hot.snapshot(&p).await.unwrap();
    assert_eq!((snapshot.seq, snapshot.saved_seq), (10, 9));

    // A completion carrying an older seq never lowers savedSeq; a finished claim completes nothing.
    let second = claim(hot, "s1", 10, 3_000).await.remove(0);
    assert_eq!(second.seq, 10);
    let stale = Claim {
        seq: 8,
        ..second.clone()
    };
    assert!(hot.complete_claim(&stale).await.unwrap());
    assert_eq!(hot.snapshot(&p).await.unwrap().saved_seq, 9);
    assert!(!hot.complete_claim(&second).await.unwrap());
    assert_eq!(hot.snapshot(&p).await.unwrap().saved_seq, 9);
}

// ---------------------------------------------------------------------------------------------------------------
// Eviction and the byte budget. The hot state stamps reads and loads with the real clock, so these checks take
// their times from it.

const HOUR: i64 = 3_600_000;
const GATEWAY: &str = "gw-1";

fn now() -> i64 {
    canvas_shared::time::now_ms()
}

/// Saves whatever is dirty: claims and completes every claim.
async fn save_all(hot: &Fixture, at: i64) {
    for c in claim(hot, "saver", 100, at).await {
        assert!(hot.complete_claim(&c).await.unwrap());
    }
}

/// An edited, saved project, idle since before `now()`.
async fn saved_project(hot: &Fixture, name: &str) -> ProjectId {
    let p = pid(name);
    open(hot, &p).await;
    let t = now();
    ok(hot, &p, create(rect("o1")), t).await;
    ok(hot, &p, create(rect("o2")), t).await;
    ok(hot, &p, update("o1", json!({"x": 9})), t).await;
    save_all(hot, t).await;
    p
}

async fn evict_now(hot: &Fixture, p: &ProjectId) -> Eviction {
    hot.evict(p, now() + HOUR, now(), 0).await.expect("evict")
}

async fn eviction_removes_an_idle_saved_project_and_reload_continues_its_seq(hot: &Fixture) {
    let p = saved_project(hot, "p-evict").await;
    let before = hot.snapshot(&p).await.unwrap();
    assert_eq!(
        hot.idle_projects(now() + HOUR, 10).await.unwrap(),
        vec![p.clone()]
    );
    assert_eq!(
        evict_now(hot, &p).await,
        Eviction::Evicted { seq: before.seq }
    );
    assert!(matches!(hot.snapshot(&p).await, Err(HotError::NotLoaded)));
    assert!(matches!(
        apply_at(hot, &p, create(rect("o3")), now()).await,
        Err(HotError::NotLoaded)
    ));
    assert!(hot
        .idle_projects(now() + HOUR, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(hot.residency(10).await.unwrap().resident, 0);
    assert!(claim(hot, "s", 10, now()).await.is_empty());
    assert_eq!(evict_now(hot, &p).await, Eviction::Gone);

    // The next access loads it again (the durable store's copy), with a seq that continues.
    let objects: Vec<StoredObject> = by_id(&before.objects)
        .into_iter()
        .map(|(id, body)| stored(&id, &body, 1))
        .collect();
    assert!(hot.load(&p, &objects, before.seq, 1).await.unwrap());
    let after = hot.snapshot(&p).await.unwrap();
    assert_eq!(by_id(&after.objects), by_id(&before.objects));
    assert_eq!(after.seq, before.seq);
    assert_eq!(
        ok(hot, &p, create(rect("o3")), now()).await.seq,
        before.seq + 1
    );
}

async fn eviction_waits_for_the_idle_time_and_reads_count_as_access(hot: &Fixture) {
    let p = saved_project(hot, "p-recent").await;
    let edited = now();
    assert!(hot
        .idle_projects(edited - HOUR, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        hot.evict(&p, edited - HOUR, edited, 0).await.unwrap(),
        Eviction::Busy
    );
    // A read moves the last access on: idle since before the read is no longer idle.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let read_at = now();
    hot.snapshot(&p).await.unwrap();
    assert_eq!(
        hot.evict(&p, read_at - 1, now(), 0).await.unwrap(),
        Eviction::Busy
    );
    assert!(hot.snapshot(&p).await.is_ok());
    assert!(matches!(evict_now(hot, &p).await, Eviction::Evicted { .. }));
}

async fn eviction_skips_unsaved_and_claimed_projects(hot: &Fixture) {
    let p = saved_project(hot, "p-unsaved").await;
    ok(hot, &p, update("o1", json!({"x": 10})), now()).await;
    assert_eq!(evict_now(hot, &p).await, Eviction::Busy, "dirty");
    let c = claim(hot, "s", 10, now()).await.remove(0);
    assert_eq!(evict_now(hot, &p).await, Eviction::Busy, "claimed");
    hot.abandon_claim(&c).await.unwrap();
    assert_eq!(evict_now(hot, &p).await, Eviction::Busy, "put back");
    let c = claim(hot, "s", 10, now()).await.remove(0);
    assert!(hot.complete_claim(&c).await.unwrap());
    assert!(matches!(evict_now(hot, &p).await, Eviction::Evicted { .. }));
}

async fn eviction_skips_projects_with_a_client_on_some_gateway(hot: &Fixture) {
    let p = saved_project(hot, "p-present").await;
    hot.mark_present(GATEWAY, std::slice::from_ref(&p), now() + 30_000, 30_000)
        .await
        .unwrap();
    hot.mark_present("gw-2", std::slice::from_ref(&p), now() + 30_000, 30_000)
        .await
        .unwrap();
    assert_eq!(evict_now(hot, &p).await, Eviction::Busy);
    hot.mark_absent(GATEWAY, &p).await.unwrap();
    assert_eq!(
        evict_now(hot, &p).await,
        Eviction::Busy,
        "the other gateway still has a client"
    );
    // A gateway that stopped renewing (it died) no longer counts once its time is up.
    hot.mark_present("gw-2", std::slice::from_ref(&p), now() - 1, 30_000)
        .await
        .unwrap();
    assert!(matches!(evict_now(hot, &p).await, Eviction::Evicted { .. }));
}

async fn eviction_persists_the_seq_first(hot: &Fixture) {
    // Loaded and only read: nothing recorded that its seq is in the durable store.
    let p = pid("p-unpersisted");
    assert!(hot.load(&p, &[], 5, 0).await.unwrap());
    assert_eq!(evict_now(hot, &p).await, Eviction::Unpersisted { seq: 5 });
    assert!(hot.snapshot(&p).await.is_ok(), "still there");
    assert_eq!(
        hot.evict(&p, now() + HOUR, now(), 4).await.unwrap(),
        Eviction::Unpersisted { seq: 5 }
    );
    assert_eq!(
        hot.evict(&p, now() + HOUR, now(), 5).await.unwrap(),
        Eviction::Evicted { seq: 5 }
    );
}

async fn eviction_keeps_a_project_holding_a_refused_object(hot: &Fixture) {
    let p = pid("p-refused");
    open(hot, &p).await;
    ok(hot, &p, create(rect("o1")), now()).await;
    ok(hot, &p, create(rect("o2")), now()).await;
    let c = claim(hot, "s", 10, now()).await.remove(0);
    let changes = hot.read_claim(&c).await.unwrap();
    let o1 = changes
        .upserts
        .iter()
        .find(|o| o.id.as_str() == "o1")
        .expect("o1 in the claim");
    assert!(hot
        .hold_back(&c, &[(o1.id.clone(), o1.updated_at)])
        .await
        .unwrap());
    assert!(hot.complete_claim(&c).await.unwrap());
    assert_eq!(
        evict_now(hot, &p).await,
        Eviction::Busy,
        "o1 is only in the hot state"
    );
    // Saving another object does not release it; saving a newer o1 does.
    ok(hot, &p, update("o2", json!({"x": 1})), now()).await;
    save_all(hot, now()).await;
    assert_eq!(evict_now(hot, &p).await, Eviction::Busy);
    ok(hot, &p, update("o1", json!({"x": 1})), now() + 1).await;
    save_all(hot, now()).await;
    assert!(matches!(evict_now(hot, &p).await, Eviction::Evicted { .. }));

    // A claim that was taken over records nothing.
    let q = pid("p-refused-lost");
    open(hot, &q).await;
    ok(hot, &q, create(rect("o1")), 1_000).await;
    let old = claim(hot, "s", 10, 2_000).await.remove(0);
    let new = claim(hot, "s2", 10, 2_000 + LEASE as i64 + 1)
        .await
        .remove(0);
    assert!(!hot.hold_back(&old, &[(oid("o1"), 1_000)]).await.unwrap());
    assert!(hot.complete_claim(&new).await.unwrap());
    assert!(matches!(evict_now(hot, &q).await, Eviction::Evicted { .. }));
}

async fn project_byte_budget(hot: &Fixture) {
    let p = pid("p-budget");
    open(hot, &p).await;
    let limits = Limits {
        max_project_bytes: 400,
        ..LIMITS
    };
    let body = |id: &str| json!({"id": id, "type": "t", "pad": "x".repeat(100)});
    let size = with_version(body("o1"), 1).to_string().len();
    let fits = 400 / size;
    for i in 0..fits {
        hot.apply(
            &p,
            &create(body(&format!("o{i}"))),
            ctx_with(1_000, &limits),
        )
        .await
        .expect("within the budget");
    }
    let refused = hot
        .apply(&p, &create(body("over")), ctx_with(1_000, &limits))
        .await;
    assert_eq!(rejection(refused), ErrorCode::TooLarge);
    let grow = update("o0", json!({"more": "y".repeat(400)}));
    assert_eq!(
        rejection(hot.apply(&p, &grow, ctx_with(1_000, &limits)).await),
        ErrorCode::TooLarge
    );
    assert_eq!(seq(hot, &p).await, fits as u64, "refusals change nothing");
    assert_eq!(objects(hot, &p).await.len(), fits);
    // Shrinking and deleting always work, and make room again.
    hot.apply(
        &p,
        &update("o0", json!({"pad": null})),
        ctx_with(1_000, &limits),
    )
    .await
    .expect("a shrinking update");
    hot.apply(&p, &delete("o1"), ctx_with(1_000, &limits))
        .await
        .expect("a delete");
    hot.apply(&p, &create(body("again")), ctx_with(1_000, &limits))
        .await
        .expect("room after the delete");

    // A project stored before the budget was this small still loads, and then only shrinks.
    let q = pid("p-budget-old");
    let big: Vec<StoredObject> = (0..10)
        .map(|i| {
            stored(
                &format!("o{i}"),
                &with_version(body(&format!("o{i}")), 1),
                5,
            )
        })
        .collect();
    assert!(hot.load(&q, &big, 0, 5).await.unwrap());
    assert_eq!(objects(hot, &q).await.len(), 10);
    assert_eq!(
        rejection(
            hot.apply(&q, &create(body("new")), ctx_with(1_000, &limits))
                .await
        ),
        ErrorCode::TooLarge
    );
    hot.apply(&q, &delete("o3"), ctx_with(1_000, &limits))
        .await
        .expect("a delete from an over-budget project");
}

async fn big_project_snapshot_is_whole_and_consistent(hot: &Fixture) {
    // Big enough to be read in pages (by count and by bytes) from the Redis store.
    let p = pid("p-big");
    let body = |i: usize| json!({"id": format!("o{i}"), "type": "t", "pad": "z".repeat(1500)});
    let stored_objects: Vec<StoredObject> = (0..1500)
        .map(|i| stored(&format!("o{i}"), &with_version(body(i), 1), 5))
        .collect();
    assert!(hot.load(&p, &stored_objects, 3, 5).await.unwrap());
    let snapshot = hot.snapshot(&p).await.unwrap();
    assert_eq!(snapshot.seq, 3);
    let got = by_id(&snapshot.objects);
    assert_eq!(got.len(), 1500);
    assert_eq!(got["o1499"], with_version(body(1499), 1));
    ok(hot, &p, update("o7", json!({"x": 1})), now()).await;
    let snapshot = hot.snapshot(&p).await.unwrap();
    assert_eq!(snapshot.seq, 4);
    assert_eq!(by_id(&snapshot.objects)["o7"]["x"], json!(1));
}

async fn residency_counts_and_ranks_projects(hot: &Fixture) {
    let small = saved_project(hot, "p-small").await;
    let big = pid("p-bigger");
    open(hot, &big).await;
    ok(
        hot,
        &big,
        create(json!({"id": "o1", "type": "t", "pad": "x".repeat(5000)})),
        now(),
    )
    .await;
    save_all(hot, now()).await;
    let residency = hot.residency(1).await.unwrap();
    assert_eq!(residency.resident, 2);
    assert_eq!(residency.biggest.len(), 1);
    assert_eq!(residency.biggest[0].0, "p-bigger");
    assert!(residency.biggest[0].1 > 5000);
    assert!(matches!(
        evict_now(hot, &big).await,
        Eviction::Evicted { .. }
    ));
    let residency = hot.residency(10).await.unwrap();
    assert_eq!(residency.resident, 1);
    assert_eq!(
        residency
            .biggest
            .iter()
            .map(|(p, _)| p.as_str())
            .collect::<Vec<_>>(),
        [small.as_str()]
    );
}

async fn ping(hot: &Fixture) {
    hot.ping().await.expect("ping");
}

/// Leases are written and judged on Redis' clock, not the saver's: a claim's expiry in the lease index is Redis
/// `TIME` plus the lease, and a renewal moves it from Redis' now. (The saver passes no time at all.)
#[tokio::test]
async fn redis_leases_run_on_redis_time() {
    let server = canvas_testkit::RedisServer::start();
    let hot = Fixture::new(
        RedisHotState::connect(&server.url()).expect("redis client"),
        LeaseClock::store(),
    );
    let redis_now = || -> i64 {
        let time = server.cli(&["TIME"]);
        let mut parts = time
            .split_whitespace()
            .map(|p| p.parse::<i64>().expect("TIME"));
        let (secs, micros) = (parts.next().expect("secs"), parts.next().expect("micros"));
        secs * 1000 + micros / 1000
    };
    let lease_score = || -> i64 {
        server
            .cli(&[
                "ZSCORE",
                &ProjectKeys::new(&pid("p-clock")).bucket.leases,
                "p-clock",
            ])
            .trim()
            .parse()
            .expect("lease score")
    };
    let p = pid("p-clock");
    open(&hot, &p).await;
    // The edit's own time is a gateway's clock, far in the past: it must not move the lease.
    ok(&hot, &p, create(rect("o1")), 1_000).await;

    let before = redis_now();
    let claims = hot.claim_dirty("s1", 10, 60_000).await.expect("claim");
    let after = redis_now();
    assert_eq!(projects_of(&claims), ["p-clock"]);
    let expiry = lease_score();
    assert!(
        (before + 60_000..=after + 60_000).contains(&expiry),
        "lease expiry {expiry} is Redis TIME + lease ({before}..{after} + 60000)"
    );
    assert!(
        hot.claim_dirty("s2", 10, 60_000)
            .await
            .expect("claim")
            .is_empty(),
        "a live lease on Redis' clock is not taken over"
    );

    assert!(hot.renew_claim(&claims[0], 120_000).await.expect("renew"));
    assert!(
        lease_score() >= before + 120_000,
        "renewal counts from Redis' now"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Journal

fn journal_seqs(page: &JournalPage) -> Option<Vec<u64>> {
    page.entries
        .as_ref()
        .map(|entries| entries.iter().map(|e| e.seq).collect())
}

async fn journal_holds_each_applied_edit_as_broadcast(hot: &Fixture) {
    let p = pid("p-journal");
    assert!(matches!(
        hot.journal_after(&p, 0, 10).await,
        Err(HotError::NotLoaded)
    ));
    open(hot, &p).await;
    let empty = hot.journal_after(&p, 0, 10).await.expect("journal");
    assert_eq!(
        (empty.seq, journal_seqs(&empty)),
        (0, None),
        "a project just loaded holds no edit to resume from"
    );
    let (bus, mut rx) = open_bus(hot).await;
    subscribe(bus.as_ref(), &p).await;
    ok(hot, &p, create(rect("o1")), 1_000).await;
    // A refused edit is not journaled.
    assert!(apply_at(hot, &p, create(rect("o1")), 1_001).await.is_err());
    ok(hot, &p, update("o1", json!({"x": 5})), 1_002).await;
    ok(hot, &p, delete("o1"), 1_003).await;
    let page = hot.journal_after(&p, 1, 10).await.expect("journal");
    assert_eq!((page.seq, page.saved_seq), (3, 0));
    let entries = page.entries.expect("covered from the first edit");
    assert_eq!(entries.len(), 2);
    assert_eq!(next_message(&mut rx).await.seq, 1);
    for entry in &entries {
        let m = next_message(&mut rx).await;
        assert_eq!(
            (entry.seq, entry.origin.as_str(), &*entry.frame),
            (m.seq, m.origin.as_str(), &*m.frame),
            "the journal holds exactly what was broadcast"
        );
    }
    let from_two = hot.journal_after(&p, 2, 10).await.expect("journal");
    assert_eq!(journal_seqs(&from_two), Some(vec![3]));
    let caught_up = hot.journal_after(&p, 3, 10).await.expect("journal");
    assert_eq!(journal_seqs(&caught_up), Some(vec![]));
    let ahead = hot.journal_after(&p, 4, 10).await.expect("journal");
    assert_eq!(
        (ahead.seq, journal_seqs(&ahead)),
        (3, None),
        "a seq above the project's is not covered"
    );
}

async fn journal_pages_and_bounds(hot: &Fixture) {
    let p = pid("p-journal-pages");
    // A project loaded at seq 50 has an empty journal: a client at 50 may have seen an earlier life of it.
    assert!(hot.load(&p, &[], 50, 0).await.expect("load"));
    assert_eq!(
        journal_seqs(&hot.journal_after(&p, 50, 5).await.unwrap()),
        None
    );
    for i in 0..12 {
        ok(hot, &p, create(rect(&format!("o{i}"))), 1_000 + i).await;
    }
    assert_eq!(
        journal_seqs(&hot.journal_after(&p, 50, 5).await.unwrap()),
        None
    );
    let first = hot.journal_after(&p, 51, 5).await.expect("journal");
    assert_eq!(first.seq, 62);
    assert_eq!(journal_seqs(&first), Some(vec![52, 53, 54, 55, 56]));
    let next = hot.journal_after(&p, 56, 5).await.expect("journal");
    assert_eq!(journal_seqs(&next), Some(vec![57, 58, 59, 60, 61]));
    assert_eq!(
        journal_seqs(&hot.journal_after(&p, 49, 5).await.unwrap()),
        None,
        "before the load"
    );
}

async fn journal_keeps_at_least_its_length(hot: &Fixture) {
    let p = pid("p-journal-len");
    open(hot, &p).await;
    let total = DEFAULT_JOURNAL_LEN as u64 * 2 + 150;
    ok(hot, &p, create(rect("o1")), 1).await;
    for i in 1..total {
        ok(hot, &p, update("o1", json!({"x": i})), 1 + i as i64).await;
    }
    let oldest_kept = total - DEFAULT_JOURNAL_LEN as u64;
    let mut after = oldest_kept;
    let mut read = 0;
    while after < total {
        let page = hot.journal_after(&p, after, 256).await.expect("journal");
        let entries = page.entries.unwrap_or_else(|| {
            panic!("the last {DEFAULT_JOURNAL_LEN} edits are kept; missing after {after}")
        });
        read += entries.len();
        after = entries.last().expect("a page").seq;
    }
    assert_eq!(
        read, DEFAULT_JOURNAL_LEN,
        "every one of the last edits, once"
    );
    let from_start = hot.journal_after(&p, 0, 256).await.expect("journal");
    assert_eq!(
        journal_seqs(&from_start),
        None,
        "the journal is bounded: the oldest edits are gone"
    );
}
