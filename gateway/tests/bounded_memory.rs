//! Redis holds only the projects in use, against real redis-server, dynalite, gateways and savers: an idle,
//! fully saved project is evicted (all of its keys) and comes back with its objects and seq; a client on any
//! gateway, unsaved work or a claim keeps it; edits, joins and reads racing an eviction never see half a
//! project; reads of projects nobody stored leave nothing behind; a project's bytes are bounded, and a big
//! project is read over HTTP as a streamed body.

mod common;

use std::time::Duration;

use canvas_saver::{Saver, SaverSettings};
use canvas_shared::durable::DurableStore;
use canvas_shared::hot::redis::RedisHotState;
use canvas_shared::hot::SaveQueue;
use canvas_shared::Limits;
use canvas_testkit::http::http_request;
use canvas_testkit::{http_get, RedisServer, WsClient};
use common::{durable, project, spawn_gateway, spawn_gateway_with, Options};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn settings(idle_evict_ms: u64) -> SaverSettings {
    SaverSettings {
        idle_evict: Some(Duration::from_millis(idle_evict_ms)),
        ..common::saver_settings("evict-test")
    }
}

async fn saver(redis_url: &str, idle_evict_ms: u64) -> Saver {
    common::saver(redis_url, settings(idle_evict_ms)).await
}

/// Runs a saver (saving and evicting) until the returned token is cancelled.
async fn start_saver(redis_url: &str, idle_evict_ms: u64) -> CancellationToken {
    common::start_saver_with(redis_url, settings(idle_evict_ms)).await
}

/// Every key of the project in Redis.
fn project_keys(redis: &RedisServer, p: &str) -> Vec<String> {
    let project = canvas_shared::ids::ProjectId::parse(p).expect("project id");
    let prefix = canvas_shared::hot::keys::ProjectKeys::prefix(&project);
    let listed = redis.cli(&["--scan", "--pattern", &format!("{prefix}*")]);
    listed
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn loaded(redis: &RedisServer, p: &str) -> bool {
    redis.cli(&["EXISTS", &common::keys_of(p).meta]) == "1"
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn create(client: &mut WsClient, id: &str, extra: Value) -> u64 {
    let mut object = json!({"id": id, "type": "rect"});
    if let (Value::Object(o), Value::Object(e)) = (&mut object, extra) {
        o.extend(e);
    }
    let ack = client
        .request(json!({"type": "create", "object": object}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["seq"].as_u64().unwrap()
}

/// Waits for a `saved` frame covering at least `seq`.
async fn saved(client: &mut WsClient, seq: u64) {
    loop {
        let frame = client
            .recv_within(Duration::from_secs(15))
            .await
            .expect("a saved frame");
        if frame["type"] == "saved" && frame["seq"].as_u64().unwrap() >= seq {
            return;
        }
    }
}

fn objects_by_id(snapshot: &Value) -> std::collections::BTreeMap<String, Value> {
    snapshot["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["id"].as_str().unwrap().to_string(), o.clone()))
        .collect()
}

/// Runs save passes until one saved a project.
async fn save_now(saver: &Saver) {
    for _ in 0..200 {
        if saver.run_pass().await.succeeded > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing was saved");
}

/// A project with a few saved objects, nobody connected: returns its seq and its snapshot. Saved by `saver`,
/// or else by a saver already running.
async fn saved_project(url: &str, saver: Option<&Saver>) -> (u64, Value) {
    let (mut client, _) = WsClient::join(url).await.unwrap();
    create(&mut client, "o1", json!({"x": 1})).await;
    create(&mut client, "o2", json!({"nested": {"a": [1, 2]}})).await;
    let ack = client
        .request(json!({"type": "update", "id": "o1", "patch": {"x": 2}}))
        .await
        .unwrap();
    let seq = ack["seq"].as_u64().unwrap();
    match saver {
        Some(saver) => save_now(saver).await,
        None => saved(&mut client, seq).await,
    }
    client.close().await;
    let (client, snapshot) = WsClient::join(url).await.unwrap();
    client.close().await;
    (seq, snapshot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_project_is_evicted_and_reloads_with_its_objects_and_seq() {
    let redis = RedisServer::start();
    let gateway = spawn_gateway(&redis.url()).await;
    let stop = start_saver(&redis.url(), 300).await;
    let p = project("evict");
    let (seq, before) = saved_project(&gateway.ws(&p), None).await;

    wait_until(
        "the idle project is evicted",
        Duration::from_secs(15),
        || !loaded(&redis, &p),
    )
    .await;
    assert_eq!(
        project_keys(&redis, &p),
        Vec::<String>::new(),
        "every key goes"
    );
    assert_eq!(
        redis.cli(&["ZSCORE", &common::keys_of(&p).bucket.resident, &p]),
        "",
        "and its index entries"
    );

    let (mut client, after) = WsClient::join(&gateway.ws(&p)).await.unwrap();
    assert_eq!(after["seq"].as_u64(), Some(seq), "{after}");
    assert_eq!(objects_by_id(&after), objects_by_id(&before));
    assert_eq!(create(&mut client, "o3", json!({})).await, seq + 1);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_eviction_while_a_client_is_connected_on_the_other_gateway() {
    let redis = RedisServer::start();
    let (a, b) = (
        spawn_gateway(&redis.url()).await,
        spawn_gateway(&redis.url()).await,
    );
    let stop = start_saver(&redis.url(), 200).await;
    let p = project("present");
    let (watcher, _) = WsClient::join(&b.ws(&p)).await.unwrap();
    saved_project(&a.ws(&p), None).await;
    // Many idle times and passes later it is still there: someone is in it on the other gateway.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(loaded(&redis, &p), "evicted under a connected client");
    watcher.close().await;
    wait_until(
        "evicted once the last client left",
        Duration::from_secs(15),
        || !loaded(&redis, &p),
    )
    .await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_eviction_while_dirty_or_claimed() {
    let redis = RedisServer::start();
    let gateway = spawn_gateway(&redis.url()).await;
    let evictor = saver(&redis.url(), 100).await;
    let p = project("unsaved");
    let (mut client, _) = WsClient::join(&gateway.ws(&p)).await.unwrap();
    create(&mut client, "o1", json!({})).await;
    client.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(evictor.run_eviction().await, 0, "dirty");
    assert!(loaded(&redis, &p));

    // Claimed by a saver that is still writing.
    let other = RedisHotState::connect(&redis.url()).unwrap();
    let claims = other.claim_dirty("other-saver", 10, 60_000).await.unwrap();
    assert_eq!(claims.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(evictor.run_eviction().await, 0, "claimed");
    assert!(loaded(&redis, &p));

    durable()
        .await
        .persist_seq(&claims[0].project, claims[0].seq)
        .await
        .unwrap();
    assert!(other.complete_claim(&claims[0]).await.unwrap());
    assert_eq!(evictor.run_eviction().await, 1, "saved and idle");
    assert!(!loaded(&redis, &p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_joins_and_reads_racing_an_eviction_see_the_whole_project() {
    let redis = RedisServer::start();
    let gateway = spawn_gateway(&redis.url()).await;
    let evictor = saver(&redis.url(), 1).await;
    let p = project("race");
    let (mut seq, before) = saved_project(&gateway.ws(&p), Some(&evictor)).await;
    let mut expected = objects_by_id(&before);
    let (mut evicted, mut kept) = (0, 0);
    for round in 0..40 {
        // Idle again (the project was saved at the end of the previous round).
        tokio::time::sleep(Duration::from_millis(3)).await;
        let id = format!("r{round}");
        let body = json!({"id": id, "type": "rect", "round": round}).to_string();
        let url = gateway.http(&format!("/api/projects/{p}/objects"));
        let ws = gateway.ws(&p);
        let read = gateway.http(&format!("/api/projects/{p}/objects"));
        let (count, post, join, get) = tokio::join!(
            evictor.run_eviction(),
            http_request(
                "POST",
                &url,
                &[("Content-Type", "application/json")],
                Some(&body)
            ),
            WsClient::join(&ws),
            http_get(&read, &[]),
        );
        if count == 1 {
            evicted += 1;
        } else {
            kept += 1;
        }
        let post = post.unwrap();
        assert_eq!(post.status, 201, "{}", post.body);
        let posted: Value = serde_json::from_str(&post.body).unwrap();
        seq += 1;
        assert_eq!(
            posted["seq"].as_u64(),
            Some(seq),
            "the seq continues: {posted}"
        );
        let (client, snapshot) = join.unwrap();
        client.close().await;
        // The join and the read saw the project either before or after the edit, never less.
        for seen in [snapshot, serde_json::from_str(&get.unwrap().1).unwrap()] {
            let objects = objects_by_id(&seen);
            let at = seen["seq"].as_u64().unwrap();
            assert!(
                at == seq || at == seq - 1,
                "seq {at}, expected {seq}: {seen}"
            );
            for (id, object) in &expected {
                assert_eq!(objects.get(id), Some(object), "round {round}: {seen}");
            }
            assert_eq!(objects.len(), expected.len() + usize::from(at == seq));
        }
        expected.insert(id, posted["object"].clone());
        // Save the new object before the next round.
        save_now(&evictor).await;
    }
    assert!(
        evicted > 0,
        "some rounds evicted first (kept {kept}, evicted {evicted})"
    );
    let (client, last) = WsClient::join(&gateway.ws(&p)).await.unwrap();
    client.close().await;
    assert_eq!(objects_by_id(&last), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_random_ids_leave_no_keys() {
    let redis = RedisServer::start();
    let gateway = spawn_gateway(&redis.url()).await;
    for i in 0..1000 {
        let p = project(&format!("nobody-{i}"));
        let (status, body) = http_get(&gateway.http(&format!("/api/projects/{p}/objects")), &[])
            .await
            .unwrap();
        assert_eq!(status, 200, "{body}");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["objects"], json!([]));
        assert_eq!(body["seq"], 0);
    }
    // Joining (and leaving) one is a read too.
    for _ in 0..20 {
        let (client, snapshot) = WsClient::join(&gateway.ws(&project("nobody-ws")))
            .await
            .unwrap();
        assert_eq!(snapshot["objects"], json!([]));
        client.close().await;
    }
    wait_until("no key is left", Duration::from_secs(10), || {
        redis.cli(&["DBSIZE"]) == "0"
    })
    .await;

    // A stored project is installed by a read.
    let p = project("stored");
    let (mut client, _) = WsClient::join(&gateway.ws(&p)).await.unwrap();
    create(&mut client, "o1", json!({})).await;
    client.close().await;
    assert!(loaded(&redis, &p));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_past_its_byte_budget_refuses_growth() {
    let redis = RedisServer::start();
    let gateway = spawn_gateway_with(
        &redis.url(),
        Options {
            limits: Limits {
                max_project_bytes: 4096,
                ..Limits::default()
            },
            ..Options::default()
        },
    )
    .await;
    let p = project("budget");
    let (mut client, _) = WsClient::join(&gateway.ws(&p)).await.unwrap();
    let pad = "x".repeat(900);
    for i in 0..4 {
        create(&mut client, &format!("o{i}"), json!({"pad": pad})).await;
    }
    let refused = client
        .request(json!({"type": "create", "object": {"id": "o5", "type": "rect", "pad": pad}}))
        .await
        .unwrap();
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "too_large", "{refused}");
    let deleted = client
        .request(json!({"type": "delete", "id": "o0"}))
        .await
        .unwrap();
    assert_eq!(deleted["type"], "ack", "{deleted}");
    create(&mut client, "o5", json!({"pad": pad})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_bigger_than_the_write_buffer_reaches_every_socket() {
    let redis = RedisServer::start();
    let gateway = spawn_gateway(&redis.url()).await;
    let p = project("big");
    let (mut client, _) = WsClient::join(&gateway.ws(&p)).await.unwrap();
    let pad = "y".repeat(60 * 1024);
    for i in 0..40 {
        create(&mut client, &format!("o{i}"), json!({"pad": pad})).await;
    }
    let mut joins = Vec::new();
    for _ in 0..10 {
        let url = gateway.ws(&p);
        joins.push(tokio::spawn(async move { WsClient::join(&url).await }));
    }
    for join in joins {
        let (client, snapshot) = join.await.unwrap().expect("a big snapshot");
        assert_eq!(snapshot["objects"].as_array().unwrap().len(), 40);
        assert_eq!(snapshot["seq"], 40);
        client.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_project_is_read_over_http_as_a_streamed_body() {
    let redis = RedisServer::start();
    let gateway = spawn_gateway(&redis.url()).await;
    let p = project("big-read");
    let (mut client, _) = WsClient::join(&gateway.ws(&p)).await.unwrap();
    let pad = "z".repeat(60 * 1024);
    for i in 0..40 {
        create(&mut client, &format!("o{i}"), json!({"pad": pad})).await;
    }
    let response = http_request(
        "GET",
        &gateway.http(&format!("/api/projects/{p}/objects")),
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(response.status, 200);
    // Streamed in chunks as it is built, not sized up front as one whole body.
    assert_eq!(response.header("transfer-encoding"), Some("chunked"));
    assert_eq!(response.header("content-length"), None);
    let body: Value = serde_json::from_str(&response.body).expect("the whole body is JSON");
    assert_eq!(body["projectId"], json!(p));
    assert_eq!(body["seq"], 40);
    let objects = objects_by_id(&body);
    assert_eq!(objects.len(), 40);
    assert_eq!(objects["o7"]["pad"], json!(pad));
    // A small project's body still comes whole.
    let small = project("small-read");
    let (mut other, _) = WsClient::join(&gateway.ws(&small)).await.unwrap();
    create(&mut other, "s1", json!({})).await;
    let response = http_request(
        "GET",
        &gateway.http(&format!("/api/projects/{small}/objects")),
        &[],
        None,
    )
    .await
    .unwrap();
    assert!(response.header("content-length").is_some());
    let body: Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(objects_by_id(&body).len(), 1);
    client.close().await;
    other.close().await;
}
