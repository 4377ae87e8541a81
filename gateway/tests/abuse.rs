//! Abuse limits, from real clients: edit rate per connection (`rate_limited`, nothing applied), connections per
//! user and per IP (429 before the upgrade, slots freed when sockets close, refused attempts never counted), and
//! the browser Origin allow-list. (Frame size, object size, objects per project and the outgoing queue bound are
//! covered by bad_input.rs and resilience.rs.)

mod common;

use std::time::Duration;

use canvas_gateway::config::{AbuseArgs, TuningArgs};
use canvas_testkit::{http_get, RedisServer, WsClient};
use common::{
    jwt_auth, project, refused, spawn_gateway_with, token, try_connect, Options, TestGateway,
};
use serde_json::{json, Value};

fn with_abuse(abuse: AbuseArgs) -> TuningArgs {
    TuningArgs {
        abuse,
        ..TuningArgs::default()
    }
}

async fn objects(g: &TestGateway, p: &str, headers: &[(&str, &str)]) -> Vec<Value> {
    let (status, body) = http_get(&g.http(&format!("/api/projects/{p}/objects")), headers)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["objects"].as_array().unwrap().clone()
}

/// Retries a connection until it is admitted (a closed socket frees its slot once the server notices).
async fn connect_eventually(url: &str, headers: &[(&str, &str)]) -> WsClient {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match try_connect(url, headers).await {
            Ok(mut c) => {
                c.recv_type("snapshot").await.unwrap();
                return c;
            }
            Err((429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err((status, body)) => panic!("not admitted: {status} {body}"),
        }
    }
}

#[tokio::test]
async fn edits_beyond_the_rate_are_rate_limited_and_not_applied() {
    let redis = RedisServer::start();
    // A burst of 3, then one edit every 10 s: the burst below is deterministic.
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            tuning: with_abuse(AbuseArgs {
                edits_per_second: 0.1,
                edit_burst: 3,
                ..AbuseArgs::default()
            }),
            ..Options::default()
        },
    )
    .await;
    let p = project("rate");
    let (mut c, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    let (mut observer, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    for i in 0..10 {
        c.send(&json!({"type":"create","reqId":format!("c{i}"),"object":{"id":format!("o{i}"),"type":"rect"}}))
            .await
            .unwrap();
    }
    // Pings are not edits: never limited.
    for i in 0..20 {
        c.send(&json!({"type":"ping","reqId":format!("p{i}")}))
            .await
            .unwrap();
    }
    let mut acked = Vec::new();
    let mut limited = Vec::new();
    let mut pongs = 0;
    while pongs < 20 || acked.len() + limited.len() < 10 {
        let v = c.recv().await.unwrap();
        match v["type"].as_str().unwrap() {
            "ack" => acked.push(v["reqId"].as_str().unwrap().to_string()),
            "pong" => pongs += 1,
            "error" => {
                assert_eq!(v["code"], "rate_limited", "{v}");
                assert!(v["message"].as_str().unwrap().contains("per second"), "{v}");
                limited.push(v["reqId"].as_str().expect("reqId echoed").to_string());
            }
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(acked, ["c0", "c1", "c2"]);
    assert_eq!(
        limited,
        (3..10).map(|i| format!("c{i}")).collect::<Vec<_>>()
    );
    // Updates, deletes and resyncs draw on the same bucket.
    for frame in [
        json!({"type":"update","id":"o0","patch":{"x":1}}),
        json!({"type":"delete","id":"o0"}),
        json!({"type":"resync"}),
    ] {
        let reply = c.request(frame.clone()).await.unwrap();
        assert_eq!(reply["code"], "rate_limited", "{frame}: {reply}");
    }
    // Nothing refused was applied or broadcast.
    let ids: Vec<Value> = objects(&g, &p, &[])
        .await
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(ids.len(), 3);
    for i in 0..3 {
        assert!(ids.contains(&json!(format!("o{i}"))));
        assert_eq!(
            observer.recv_type("created").await.unwrap()["object"]["id"],
            format!("o{i}")
        );
    }
    observer
        .assert_silent(Duration::from_millis(200))
        .await
        .unwrap();
    // The bucket is per connection: the observer still has its burst.
    let ack = observer
        .request(json!({"type":"update","id":"o1","patch":{"x":5}}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack");
}

#[tokio::test]
async fn the_edit_bucket_refills_over_time() {
    let redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            tuning: with_abuse(AbuseArgs {
                edits_per_second: 10.0,
                edit_burst: 1,
                ..AbuseArgs::default()
            }),
            ..Options::default()
        },
    )
    .await;
    let p = project("refill");
    let (mut c, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    let create = |i: u32| json!({"type":"create","object":{"id":format!("o{i}"),"type":"r"}});
    assert_eq!(c.request(create(0)).await.unwrap()["type"], "ack");
    assert_eq!(c.request(create(1)).await.unwrap()["code"], "rate_limited");
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(c.request(create(1)).await.unwrap()["type"], "ack");
    assert_eq!(objects(&g, &p, &[]).await.len(), 2);
}

#[tokio::test]
async fn connections_per_user_beyond_the_limit_get_429_and_closing_frees_a_slot() {
    let redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            auth: jwt_auth(),
            tuning: with_abuse(AbuseArgs {
                max_connections_per_user: 2,
                ..AbuseArgs::default()
            }),
            ..Options::default()
        },
    )
    .await;
    let p = project("peruser");
    let alice = format!("Bearer {}", token("alice", json!({"*":"editor"})));
    let bob = format!("Bearer {}", token("bob", json!({"*":"viewer"})));
    let a = [("Authorization", alice.as_str())];
    let a1 = connect_eventually(&g.ws(&p), &a).await;
    // The limit is per user across projects.
    let a2 = connect_eventually(&g.ws(&project("elsewhere")), &a).await;
    let (status, body) = refused(&g.ws(&p), &a).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("CANVAS_MAX_CONNECTIONS_PER_USER"),
        "{body}"
    );
    // Other users are not affected; the API (not a connection) is not limited.
    let _b = connect_eventually(&g.ws(&p), &[("Authorization", bob.as_str())]).await;
    assert!(objects(&g, &p, &a).await.is_empty());
    // Repeated refusals never count: closing one socket is enough to get back in.
    for _ in 0..10 {
        assert_eq!(refused(&g.ws(&p), &a).await.0, 429);
    }
    a1.close().await;
    let mut a3 = connect_eventually(&g.ws(&p), &a).await;
    assert_eq!(
        a3.request(json!({"type":"ping"})).await.unwrap()["type"],
        "pong"
    );
    drop(a2);
    drop(a3);
    // Both slots come back once the server sees the sockets end.
    let _x = connect_eventually(&g.ws(&p), &a).await;
    let _y = connect_eventually(&g.ws(&p), &a).await;
}

#[tokio::test]
async fn connections_per_ip_beyond_the_limit_get_429_and_counts_never_leak() {
    let redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            // Auth disabled: everyone is "anonymous" and only the per-IP limit applies.
            tuning: with_abuse(AbuseArgs {
                max_connections_per_ip: 3,
                max_connections_per_user: 1,
                ..AbuseArgs::default()
            }),
            ..Options::default()
        },
    )
    .await;
    let p = project("perip");
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect_eventually(&g.ws(&p), &[]).await);
    }
    let (status, body) = refused(&g.ws(&p), &[]).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("CANVAS_MAX_CONNECTIONS_PER_IP"),
        "{body}"
    );
    // Churn: open and close many connections, some closed politely, some just dropped, some refused.
    for round in 0..15 {
        let c = open.remove(0);
        if round % 2 == 0 {
            c.close().await;
        } else {
            drop(c);
        }
        open.push(connect_eventually(&g.ws(&p), &[]).await);
        assert_eq!(refused(&g.ws(&p), &[]).await.0, 429);
    }
    // Upgrades refused for other reasons (bad project id, not a WebSocket request) count nothing either.
    for _ in 0..10 {
        assert_eq!(refused(&g.ws("bad%20id"), &[]).await.0, 400);
        let (status, _) = http_get(&g.http(&format!("/ws/projects/{p}")), &[])
            .await
            .unwrap();
        assert_ne!(status, 101);
    }
    open.clear();
    for _ in 0..3 {
        open.push(connect_eventually(&g.ws(&p), &[]).await);
    }
    for c in &mut open {
        assert_eq!(
            c.request(json!({"type":"ping"})).await.unwrap()["type"],
            "pong"
        );
    }
}

#[tokio::test]
async fn the_origin_allow_list_applies_to_browsers_only() {
    let redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            auth: jwt_auth(),
            tuning: with_abuse(AbuseArgs {
                allowed_origins: vec![
                    "https://canvas.example".into(),
                    "http://localhost:8080".into(),
                ],
                ..AbuseArgs::default()
            }),
            ..Options::default()
        },
    )
    .await;
    let p = project("origin");
    let auth = format!("Bearer {}", token("olga", json!({ p.clone(): "editor" })));
    let ok = |origin: Option<&'static str>| {
        let mut h = vec![("Authorization", auth.clone())];
        if let Some(o) = origin {
            h.push(("Origin", o.to_string()));
        }
        h
    };
    for origin in [
        Some("https://canvas.example"),
        Some("http://localhost:8080"),
        None,
    ] {
        let h = ok(origin);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut c = connect_eventually(&g.ws(&p), &h).await;
        assert_eq!(
            c.request(json!({"type":"ping"})).await.unwrap()["type"],
            "pong"
        );
        assert!(objects(&g, &p, &h).await.is_empty());
    }
    for origin in [
        "https://evil.example",
        "https://canvas.example.evil.com",
        "null",
    ] {
        let h = ok(Some(origin));
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = refused(&g.ws(&p), &h).await;
        assert_eq!(status, 403, "{origin}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("CANVAS_ALLOWED_ORIGINS"),
            "{body}"
        );
        let (status, _) = http_get(&g.http(&format!("/api/projects/{p}/objects")), &h)
            .await
            .unwrap();
        assert_eq!(status, 403, "{origin} (api)");
    }
    // Order: the project id first (400), then the origin (403) before the token is even looked at.
    let evil = [("Origin", "https://evil.example")];
    assert_eq!(refused(&g.ws("bad%20id"), &evil).await.0, 400);
    assert_eq!(refused(&g.ws(&p), &evil).await.0, 403);
    let good_origin_no_token = [("Origin", "https://canvas.example")];
    assert_eq!(refused(&g.ws(&p), &good_origin_no_token).await.0, 401);
}
