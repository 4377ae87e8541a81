//! The main path: two gateways on one Redis, clients on each, edits applied and fanned out in `seq` order; the
//! fan-out and seq checks run on a Redis Cluster too.

mod common;

use canvas_testkit::{RedisServer, WsClient};
use common::{project, spawn_gateway, Hot};
use serde_json::{json, Value};

#[tokio::test]
async fn clients_on_different_gateways_see_each_others_edits() {
    clients_on_different_gateways_see_each_others_edits_on(Hot::single()).await;
}

#[tokio::test]
async fn clients_on_different_gateways_see_each_others_edits_on_a_cluster() {
    clients_on_different_gateways_see_each_others_edits_on(Hot::cluster()).await;
}

async fn clients_on_different_gateways_see_each_others_edits_on(redis: Hot) {
    let (g1, g2) = (
        spawn_gateway(redis.target()).await,
        spawn_gateway(redis.target()).await,
    );
    let p = project("fanout");
    let (mut alice, snap) = WsClient::join(&g1.ws(&p)).await.unwrap();
    assert_eq!(snap["projectId"], p.as_str());
    assert_eq!(snap["seq"], 0);
    assert_eq!(snap["objects"], json!([]));
    let (mut bob, _) = WsClient::join(&g2.ws(&p)).await.unwrap();

    let ack = alice
        .request(json!({"type":"create","object":{"id":"o1","type":"rect","x":10,"y":20,"fill":"#f00","version":99}}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["id"], "o1");
    assert_eq!(ack["version"], 1);
    assert_eq!(ack["seq"], 1);
    let created = bob.recv_type("created").await.unwrap();
    assert_eq!(
        created["object"],
        json!({"id":"o1","type":"rect","x":10,"y":20,"fill":"#f00","version":1})
    );
    assert_eq!(created["seq"], 1);
    assert_eq!(created["by"], "anonymous");

    let ack = bob
        .request(json!({"type":"update","id":"o1","patch":{"x":15,"fill":null}}))
        .await
        .unwrap();
    assert_eq!(
        (ack["version"].clone(), ack["seq"].clone()),
        (json!(2), json!(2))
    );
    let updated = alice.recv_type("updated").await.unwrap();
    assert_eq!(updated["id"], "o1");
    assert_eq!(updated["patch"], json!({"x":15,"fill":null}));
    assert_eq!(
        (updated["version"].clone(), updated["seq"].clone()),
        (json!(2), json!(2))
    );

    let ack = alice
        .request(json!({"type":"delete","id":"o1"}))
        .await
        .unwrap();
    assert_eq!(ack["seq"], 3);
    assert!(
        ack.get("version").is_none(),
        "a delete's ack has no version: {ack}"
    );
    let deleted = bob.recv_type("deleted").await.unwrap();
    assert_eq!(
        deleted,
        json!({"type":"deleted","id":"o1","seq":3,"by":"anonymous"})
    );

    // The sender never gets its own broadcast.
    alice
        .assert_silent(std::time::Duration::from_millis(200))
        .await
        .unwrap();
}

#[tokio::test]
async fn merge_patch_keeps_json_exact() {
    let redis = RedisServer::start();
    let g = spawn_gateway(&redis.url()).await;
    let p = project("exact");
    let (mut c, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    let object = json!({"id":"o1","type":"path","points":[],"style":{"stroke":"#000","dash":[1,2]},
        "big":12345678901234567i64,"frac":0.30000000000000004,"text":"é😀\"\\\n","empty":{}});
    c.request(json!({"type":"create","object":object}))
        .await
        .unwrap();
    c.request(json!({"type":"update","id":"o1","patch":{"style":{"dash":null,"width":2},"points":[[1,2]],"type":"path"}}))
        .await
        .unwrap();
    c.send(&json!({"type":"resync"})).await.unwrap();
    let snap = c.recv_type("snapshot").await.unwrap();
    assert_eq!(
        snap["objects"][0],
        json!({"id":"o1","type":"path","points":[[1,2]],"style":{"stroke":"#000","width":2},
            "big":12345678901234567i64,"frac":0.30000000000000004,"text":"é😀\"\\\n","empty":{},"version":2})
    );
}

/// Every frame a client sees that carries `seq` (acks and broadcasts) must count up by exactly one.
#[tokio::test]
async fn seq_is_gap_free_for_every_client() {
    seq_is_gap_free_for_every_client_on(Hot::single()).await;
}

#[tokio::test]
async fn seq_is_gap_free_for_every_client_on_a_cluster() {
    seq_is_gap_free_for_every_client_on(Hot::cluster()).await;
}

async fn seq_is_gap_free_for_every_client_on(redis: Hot) {
    let (g1, g2) = (
        spawn_gateway(redis.target()).await,
        spawn_gateway(redis.target()).await,
    );
    let p = project("seq");
    let mut clients = Vec::new();
    for i in 0..4 {
        let g = if i % 2 == 0 { &g1 } else { &g2 };
        clients.push(WsClient::join(&g.ws(&p)).await.unwrap().0);
    }
    const EDITS: usize = 25;
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..EDITS {
                let id = format!("c{i}-{n}");
                c.send(&json!({"type":"create","reqId":id,"object":{"id":id,"type":"dot"}}))
                    .await
                    .unwrap();
            }
            let mut seqs = Vec::new();
            while seqs.len() < 4 * EDITS {
                let v = c.recv().await.unwrap();
                if let Some(s) = v["seq"].as_u64() {
                    seqs.push(s);
                }
            }
            seqs
        }));
    }
    for task in tasks {
        let seqs = task.await.unwrap();
        let expected: Vec<u64> = (1..=(4 * EDITS) as u64).collect();
        assert_eq!(seqs, expected, "a client saw seq out of order or with gaps");
    }
}

#[tokio::test]
async fn projects_are_isolated() {
    let redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway(&redis.url()).await,
        spawn_gateway(&redis.url()).await,
    );
    let (pa, pb) = (project("iso-a"), project("iso-b"));
    let (mut a, _) = WsClient::join(&g1.ws(&pa)).await.unwrap();
    let (mut b1, _) = WsClient::join(&g1.ws(&pb)).await.unwrap();
    let (mut b2, _) = WsClient::join(&g2.ws(&pb)).await.unwrap();
    for n in 0..5 {
        a.request(json!({"type":"create","object":{"id":format!("a{n}"),"type":"rect"}}))
            .await
            .unwrap();
    }
    b1.assert_silent(std::time::Duration::from_millis(300))
        .await
        .unwrap();
    b2.assert_silent(std::time::Duration::from_millis(50))
        .await
        .unwrap();
    let ack = b1
        .request(json!({"type":"create","object":{"id":"a0","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(
        ack["type"], "ack",
        "same object id in another project is independent"
    );
    assert_eq!(ack["seq"], 1);
}

#[tokio::test]
async fn concurrent_updates_to_one_object_all_count() {
    let redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway(&redis.url()).await,
        spawn_gateway(&redis.url()).await,
    );
    let p = project("contend");
    let (mut owner, _) = WsClient::join(&g1.ws(&p)).await.unwrap();
    owner
        .request(json!({"type":"create","object":{"id":"shared","type":"rect","n":0}}))
        .await
        .unwrap();
    const CLIENTS: usize = 20;
    const UPDATES: usize = 10;
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let url = if i % 2 == 0 { g1.ws(&p) } else { g2.ws(&p) };
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = WsClient::join(&url).await.unwrap();
            let mut versions = Vec::new();
            for n in 0..UPDATES {
                let ack = c
                    .request(
                        json!({"type":"update","id":"shared","patch":{"last":format!("{i}-{n}")}}),
                    )
                    .await
                    .unwrap();
                assert_eq!(ack["type"], "ack", "{ack}");
                versions.push(ack["version"].as_u64().unwrap());
            }
            versions
        }));
    }
    let mut all: Vec<u64> = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let expected: Vec<u64> = (2..=(1 + CLIENTS * UPDATES) as u64).collect();
    assert_eq!(all, expected, "every update got its own version");
    owner.send(&json!({"type":"resync"})).await.unwrap();
    let snap = owner.recv_type("snapshot").await.unwrap();
    let object = &snap["objects"][0];
    assert_eq!(
        object["version"],
        json!(1 + CLIENTS * UPDATES),
        "version = 1 (create) + number of updates"
    );
    assert_eq!(snap["seq"], json!(1 + CLIENTS * UPDATES));
}

#[tokio::test]
async fn health_readiness_and_objects_api() {
    let redis = RedisServer::start();
    let g = spawn_gateway(&redis.url()).await;
    let p = project("api");
    assert_eq!(
        canvas_testkit::http_get(&g.http("/healthz"), &[])
            .await
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        canvas_testkit::http_get(&g.http("/readyz"), &[])
            .await
            .unwrap()
            .0,
        200
    );
    let (mut c, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    c.request(json!({"type":"create","object":{"id":"o1","type":"rect","x":1}}))
        .await
        .unwrap();
    let (status, body) =
        canvas_testkit::http_get(&g.http(&format!("/api/projects/{p}/objects")), &[])
            .await
            .unwrap();
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["projectId"], p.as_str());
    assert_eq!(
        body["objects"],
        json!([{"id":"o1","type":"rect","x":1,"version":1}])
    );
    let (status, _) = canvas_testkit::http_get(&g.http("/api/projects/bad%20id/objects"), &[])
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, page) = canvas_testkit::http_get(&g.http("/"), &[]).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        page.contains("<canvas") || page.contains("<html"),
        "demo page served"
    );
}

#[tokio::test]
async fn prometheus_figures_count_what_happened() {
    let redis = RedisServer::start();
    let g = spawn_gateway(&redis.url()).await;
    let p = project("prom");
    let (mut a, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    let (mut b, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    a.request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
        .await
        .unwrap();
    a.request(json!({"type":"update","id":"o1","patch":{"x":1}}))
        .await
        .unwrap();
    a.request(json!({"type":"delete","id":"nope"}))
        .await
        .unwrap();
    a.send_text("garbage").await.unwrap();
    a.recv_type("error").await.unwrap();
    b.recv_type("updated").await.unwrap();
    let (status, text) = canvas_testkit::http_get(&g.http("/metrics/prometheus"), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    for line in [
        "canvas_gateway_connections 2",
        "canvas_gateway_edits_total{kind=\"create\",result=\"ok\"} 1",
        "canvas_gateway_edits_total{kind=\"update\",result=\"ok\"} 1",
        "canvas_gateway_edits_total{kind=\"delete\",result=\"not_found\"} 1",
        "canvas_gateway_rejected_frames_total{code=\"not_found\"} 1",
        "canvas_gateway_rejected_frames_total{code=\"bad_request\"} 1",
        // Codes that never happened are there too, at zero.
        "canvas_gateway_rejected_frames_total{code=\"rate_limited\"} 0",
        "canvas_gateway_edits_total{kind=\"delete\",result=\"ok\"} 0",
        "canvas_gateway_fanout_messages_total 2",
        "canvas_gateway_ack_latency_seconds_count 4",
        // The gateway had the object's text from the create's answer: it merged the update, Redis only wrote it.
        "canvas_gateway_update_merges_total{at=\"gateway\"} 1",
        "canvas_gateway_update_merges_total{at=\"redis\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}

/// Two clients on different gateways update the same object against the same version at the same moment:
/// exactly one is applied, the other is refused with `conflict` and the version it lost to, and a delete made
/// against the stale version is refused the same way.
#[tokio::test]
async fn conditional_edits_race_one_wins() {
    let redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway(&redis.url()).await,
        spawn_gateway(&redis.url()).await,
    );
    let p = project("if-version");
    let (mut alice, _) = WsClient::join(&g1.ws(&p)).await.unwrap();
    let (mut bob, _) = WsClient::join(&g2.ws(&p)).await.unwrap();
    alice
        .request(json!({"type":"create","object":{"id":"o1","type":"rect","x":0}}))
        .await
        .unwrap();
    bob.recv_type("created").await.unwrap();

    for round in 1..=5u64 {
        let (a, b) = tokio::join!(
            alice.request(
                json!({"type":"update","id":"o1","ifVersion":round,"patch":{"x":"alice"}})
            ),
            bob.request(json!({"type":"update","id":"o1","ifVersion":round,"patch":{"x":"bob"}})),
        );
        let replies = [a.unwrap(), b.unwrap()];
        let acks: Vec<_> = replies.iter().filter(|r| r["type"] == "ack").collect();
        let refusals: Vec<_> = replies.iter().filter(|r| r["type"] == "error").collect();
        assert_eq!(
            (acks.len(), refusals.len()),
            (1, 1),
            "round {round}: {replies:?}"
        );
        assert_eq!(acks[0]["version"], round + 1);
        assert_eq!(refusals[0]["code"], "conflict");
        assert_eq!(refusals[0]["version"], round + 1, "the current version");
    }

    let refused = alice
        .request(json!({"type":"delete","id":"o1","ifVersion":1}))
        .await
        .unwrap();
    assert_eq!(
        (refused["code"].clone(), refused["version"].clone()),
        (json!("conflict"), json!(6))
    );
    let bad = alice
        .request(json!({"type":"update","id":"o1","ifVersion":"6","patch":{}}))
        .await
        .unwrap();
    assert_eq!(bad["code"], "bad_request");
    let ack = alice
        .request(json!({"type":"delete","id":"o1","ifVersion":6}))
        .await
        .unwrap();
    assert_eq!(
        (ack["type"].clone(), ack["seq"].clone()),
        (json!("ack"), json!(7))
    );

    // Only applied edits took a seq: 1 create, 5 updates, 1 delete.
    let (_, snap) = WsClient::join(&g2.ws(&p)).await.unwrap();
    assert_eq!(snap["seq"], 7);
    assert_eq!(snap["objects"], json!([]));
}
