//! A process that knows an object's stored text merges an update itself and the edit script only checks that the
//! text is still the stored one. These tests run two processes' stores against one real redis-server: what one
//! knows goes stale behind its back, or is kept current from the other's broadcasts.

use std::time::Duration;

use canvas_shared::hot::redis::{RedisHotState, RedisTarget};
use canvas_shared::hot::{BusEvent, EditContext, EditStore};
use canvas_shared::object::{Edit, NewObject, Patch};
use canvas_shared::{Limits, ObjectId, ProjectId};
use canvas_testkit::RedisServer;
use serde_json::{json, Value};
use tokio::sync::mpsc;

fn ids() -> (ProjectId, ObjectId) {
    (
        ProjectId::parse("merge-here").expect("project"),
        ObjectId::parse("o1").expect("id"),
    )
}

async fn apply(store: &RedisHotState, edit: Edit) -> u64 {
    let limits = Limits::default();
    let ctx = EditContext {
        by: "u",
        origin: "c",
        now_ms: 1,
        limits: &limits,
        seq_floor: 0,
    };
    let (project, _) = ids();
    store
        .apply(&project, &edit, ctx)
        .await
        .expect("applied")
        .seq
}

fn create(body: Value) -> Edit {
    Edit::Create(NewObject::from_json(body, &Limits::default()).expect("valid object"))
}

fn update(patch: Value) -> Edit {
    let (_, id) = ids();
    Edit::Update {
        patch: Patch::from_json(&id, patch, &Limits::default()).expect("valid patch"),
        id,
        if_version: None,
    }
}

/// Waits until the bus has passed on the broadcast of `seq`.
async fn wait_for(received: &mut mpsc::Receiver<BusEvent>, seq: u64) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = received.recv().await {
            if matches!(event, BusEvent::Message(m) if m.seq >= seq) {
                return;
            }
        }
    })
    .await
    .expect("the broadcast arrives");
}

async fn stored(store: &RedisHotState) -> Value {
    let (project, _) = ids();
    let snapshot = store.snapshot(&project).await.expect("snapshot");
    serde_json::from_str(&snapshot.objects[0]).expect("json")
}

#[tokio::test]
async fn an_object_replaced_behind_a_process_back_is_merged_by_the_script() {
    let redis = RedisServer::start();
    let (project, id) = ids();
    let (a, b) = (
        RedisHotState::connect(&redis.url()).expect("url"),
        RedisHotState::connect(&redis.url()).expect("url"),
    );
    a.load(&project, &[], 0, 0).await.expect("load");
    apply(&a, create(json!({"id": "o1", "type": "rect", "x": 1}))).await;
    // Deleted and created again elsewhere: the same id at the same version 1, with other properties.
    apply(
        &b,
        Edit::Delete {
            id: id.clone(),
            if_version: None,
        },
    )
    .await;
    apply(&b, create(json!({"id": "o1", "type": "rect", "y": 2}))).await;
    apply(&a, update(json!({"z": 3}))).await;
    assert_eq!(
        stored(&a).await,
        json!({"id": "o1", "type": "rect", "y": 2, "z": 3, "version": 2})
    );
    assert_eq!(a.update_merges().by_script, 1, "{:?}", a.update_merges());
    assert_eq!(a.update_merges().here, 0);
    // What the script answered is what `a` knows now: the next update is merged here.
    apply(&a, update(json!({"z": 4}))).await;
    assert_eq!(a.update_merges().here, 1);
    assert_eq!(
        stored(&b).await,
        json!({"id": "o1", "type": "rect", "y": 2, "z": 4, "version": 3})
    );
}

#[tokio::test]
async fn a_process_follows_the_merges_of_others_from_their_broadcasts() {
    let redis = RedisServer::start();
    let open = || RedisHotState::connect(&redis.url()).expect("url");
    follows_broadcasts(open(), open()).await;
}

/// The same through sharded pub/sub.
#[tokio::test]
async fn a_process_follows_the_merges_of_others_on_a_cluster() {
    let cluster = canvas_testkit::lease_cluster();
    let open = || {
        RedisHotState::open(RedisTarget::cluster_from_list(&cluster.nodes_env())).expect("cluster")
    };
    follows_broadcasts(open(), open()).await;
}

async fn follows_broadcasts(a: RedisHotState, b: RedisHotState) {
    let (project, _) = ids();
    a.load(&project, &[], 0, 0).await.expect("load");
    let (events, mut received) = mpsc::channel(64);
    let bus = a.open_bus(events);
    let connected = tokio::time::timeout(Duration::from_secs(10), received.recv()).await;
    assert!(
        matches!(connected, Ok(Some(BusEvent::Connected))),
        "{connected:?}"
    );
    bus.subscribe(&project).await.expect("subscribe");
    let mut seq = apply(&a, create(json!({"id": "o1", "type": "rect", "x": 1}))).await;
    wait_for(&mut received, seq).await;
    for n in 0..3 {
        seq = apply(&b, update(json!({"x": n, "lg": {"n": n}}))).await;
    }
    wait_for(&mut received, seq).await;
    apply(&a, update(json!({"y": 9}))).await;
    assert_eq!(
        a.update_merges().here,
        1,
        "a merged the update against what the broadcasts told it: {:?}",
        a.update_merges()
    );
    assert_eq!(
        stored(&b).await,
        json!({"id": "o1", "type": "rect", "x": 2, "lg": {"n": 2}, "y": 9, "version": 5})
    );
}
