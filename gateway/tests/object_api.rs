//! The Object API over HTTP on two gateways sharing one Redis: every status of its table, idempotent retries, and
//! REST writes reaching sockets on the other gateway as ordinary edits.

mod common;

use canvas_gateway::config::{AbuseArgs, TuningArgs};
use canvas_shared::Limits;
use canvas_testkit::http::{http_request, HttpResponse};
use canvas_testkit::{RedisServer, WsClient};
use common::{jwt_auth, project, spawn_gateway_with, token, Options, TestGateway};
use serde_json::{json, Value};

fn authed() -> Options {
    Options {
        auth: jwt_auth(),
        ..Options::default()
    }
}

async fn call(
    g: &TestGateway,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<Value>,
) -> (HttpResponse, Value) {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(auth) = auth.as_deref() {
        headers.push(("Authorization", auth));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let text = body.map(|b| b.to_string());
    let response = http_request(method, &g.http(path), &headers, text.as_deref())
        .await
        .expect("http request");
    let value = serde_json::from_str(&response.body).unwrap_or(Value::Null);
    (response, value)
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn every_status_of_the_object_api() {
    let mut redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            limits: Limits {
                max_frame_bytes: 4096,
                ..Limits::default()
            },
            ..authed()
        },
    )
    .await;
    let p = project("rest-status");
    let editor = token("alice", json!({ p.as_str(): "editor" }));
    let viewer = token("victor", json!({ p.as_str(): "viewer" }));
    let stranger = token("sam", json!({"other": "editor"}));
    let objects = format!("/api/projects/{p}/objects");
    let o1 = format!("{objects}/o1");

    let (r, body) = call(
        &g,
        "POST",
        &objects,
        Some(&editor),
        &[],
        Some(json!({"id":"o1","type":"rect","x":1})),
    )
    .await;
    assert_eq!(r.status, 201, "{body}");
    assert_eq!(
        body,
        json!({"object":{"id":"o1","type":"rect","x":1,"version":1},"seq":1})
    );

    let (r, body) = call(&g, "GET", &o1, Some(&viewer), &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(body, json!({"id":"o1","type":"rect","x":1,"version":1}));
    assert_eq!(r.header("etag"), Some("\"1\""));

    let (r, body) = call(
        &g,
        "PATCH",
        &o1,
        Some(&editor),
        &[("If-Match", "\"1\"")],
        Some(json!({"x":2,"fill":"#f00"})),
    )
    .await;
    assert_eq!(r.status, 200, "{body}");
    assert_eq!(
        body,
        json!({"object":{"id":"o1","type":"rect","x":2,"fill":"#f00","version":2},"seq":2})
    );

    // 412: If-Match names a version that is gone; the body tells the current one, nothing changed.
    let (r, body) = call(
        &g,
        "PATCH",
        &o1,
        Some(&editor),
        &[("If-Match", "\"1\"")],
        Some(json!({"x":3})),
    )
    .await;
    assert_eq!((r.status, error_code(&body)), (412, "conflict"), "{body}");
    assert_eq!(body["error"]["version"], 2);
    let (r, body) = call(
        &g,
        "DELETE",
        &o1,
        Some(&editor),
        &[("If-Match", "\"7\"")],
        None,
    )
    .await;
    assert_eq!(
        (r.status, body["error"]["version"].clone()),
        (412, json!(2))
    );

    // 409: create of an existing id.
    let (r, body) = call(
        &g,
        "POST",
        &objects,
        Some(&editor),
        &[],
        Some(json!({"id":"o1","type":"rect"})),
    )
    .await;
    assert_eq!((r.status, error_code(&body)), (409, "conflict"), "{body}");
    assert!(body["error"].get("version").is_none());

    // 400: a bad project id, a bad body, a patch changing type, a bad If-Match.
    let (r, body) = call(
        &g,
        "GET",
        "/api/projects/bad%20id/objects/o1",
        Some(&editor),
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, error_code(&body)), (400, "bad_request"));
    let (r, body) = call(
        &g,
        "POST",
        &objects,
        Some(&editor),
        &[],
        Some(json!({"type":"rect"})),
    )
    .await;
    assert_eq!((r.status, error_code(&body)), (400, "bad_request"));
    let (r, body) = call(
        &g,
        "PATCH",
        &o1,
        Some(&editor),
        &[],
        Some(json!({"type":"circle"})),
    )
    .await;
    assert_eq!((r.status, error_code(&body)), (400, "bad_request"));
    let (r, _) = call(
        &g,
        "PATCH",
        &o1,
        Some(&editor),
        &[("If-Match", "2")],
        Some(json!({})),
    )
    .await;
    assert_eq!(r.status, 400);

    // 401 and 403.
    let (r, body) = call(&g, "GET", &o1, None, &[], None).await;
    assert_eq!(r.status, 401, "{body}");
    assert!(r.header("www-authenticate").is_some());
    let (r, body) = call(&g, "GET", &o1, Some(&stranger), &[], None).await;
    assert_eq!((r.status, error_code(&body)), (403, "forbidden"));
    let (r, body) = call(&g, "PATCH", &o1, Some(&viewer), &[], Some(json!({"x":9}))).await;
    assert_eq!((r.status, error_code(&body)), (403, "forbidden"));

    // 404.
    let (r, body) = call(
        &g,
        "GET",
        &format!("{objects}/nope"),
        Some(&viewer),
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, error_code(&body)), (404, "not_found"));
    let (r, body) = call(
        &g,
        "DELETE",
        &format!("{objects}/nope"),
        Some(&editor),
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, error_code(&body)), (404, "not_found"));

    // 413: a body over the frame limit.
    let big = "x".repeat(5000);
    let (r, body) = call(
        &g,
        "POST",
        &objects,
        Some(&editor),
        &[],
        Some(json!({"id":"o2","type":"rect","big":big})),
    )
    .await;
    assert_eq!((r.status, error_code(&body)), (413, "too_large"));

    // Nothing refused took a seq; the delete is the third edit.
    let (r, body) = call(
        &g,
        "DELETE",
        &o1,
        Some(&editor),
        &[("If-Match", "\"2\"")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(body, json!({"id":"o1","seq":3}));

    // 503: the shared state is gone.
    redis.kill();
    let (r, body) = call(
        &g,
        "POST",
        &objects,
        Some(&editor),
        &[],
        Some(json!({"id":"o3","type":"rect"})),
    )
    .await;
    assert_eq!(
        (r.status, error_code(&body)),
        (503, "unavailable"),
        "{body}"
    );
}

#[tokio::test]
async fn writes_over_the_rate_are_refused() {
    let redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            tuning: TuningArgs {
                abuse: AbuseArgs {
                    edits_per_second: 0.01,
                    edit_burst: 2,
                    ..AbuseArgs::default()
                },
                ..TuningArgs::default()
            },
            ..Options::default()
        },
    )
    .await;
    let objects = format!("/api/projects/{}/objects", project("rest-rate"));
    let mut statuses = Vec::new();
    for i in 0..3 {
        let (r, body) = call(
            &g,
            "POST",
            &objects,
            None,
            &[],
            Some(json!({"id":format!("o{i}"),"type":"dot"})),
        )
        .await;
        statuses.push((r.status, error_code(&body).to_string()));
    }
    assert_eq!(
        statuses[..2],
        [(201, "<none>".to_string()), (201, "<none>".to_string())]
    );
    assert_eq!(statuses[2], (429, "rate_limited".to_string()));
}

#[tokio::test]
async fn idempotent_retries_apply_once_per_user() {
    let redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway_with(&redis.url(), authed()).await,
        spawn_gateway_with(&redis.url(), authed()).await,
    );
    let p = project("rest-idem");
    let alice = token("alice", json!({ p.as_str(): "editor" }));
    let bob = token("bob", json!({ p.as_str(): "editor" }));
    let objects = format!("/api/projects/{p}/objects");
    let key = [("Idempotency-Key", "create-o1")];

    let (first, first_body) = call(
        &g1,
        "POST",
        &objects,
        Some(&alice),
        &key,
        Some(json!({"id":"o1","type":"rect"})),
    )
    .await;
    assert_eq!(first.status, 201);
    // The retry lands on the other gateway: same answer, nothing applied.
    let (again, again_body) = call(
        &g2,
        "POST",
        &objects,
        Some(&alice),
        &key,
        Some(json!({"id":"o1","type":"rect"})),
    )
    .await;
    assert_eq!((again.status, &again_body), (201, &first_body));

    let patch_key = [("Idempotency-Key", "move-1")];
    let (r, moved) = call(
        &g1,
        "PATCH",
        &format!("{objects}/o1"),
        Some(&alice),
        &patch_key,
        Some(json!({"x":5})),
    )
    .await;
    assert_eq!(r.status, 200);
    let (r, moved_again) = call(
        &g2,
        "PATCH",
        &format!("{objects}/o1"),
        Some(&alice),
        &patch_key,
        Some(json!({"x":5})),
    )
    .await;
    assert_eq!((r.status, &moved_again), (200, &moved));
    assert_eq!(moved["object"]["version"], 2, "applied once");

    // The same key by another user is a different request.
    let (r, body) = call(
        &g1,
        "PATCH",
        &format!("{objects}/o1"),
        Some(&bob),
        &patch_key,
        Some(json!({"x":6})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        (body["object"]["version"].clone(), body["seq"].clone()),
        (json!(3), json!(3))
    );

    // A refused write is answered the same way again too.
    let refused_key = [("Idempotency-Key", "dup")];
    let (r, refused) = call(
        &g1,
        "POST",
        &objects,
        Some(&bob),
        &refused_key,
        Some(json!({"id":"o1","type":"rect"})),
    )
    .await;
    assert_eq!(r.status, 409);
    let (r, refused_again) = call(
        &g2,
        "POST",
        &objects,
        Some(&bob),
        &refused_key,
        Some(json!({"id":"o1","type":"rect"})),
    )
    .await;
    assert_eq!((r.status, refused_again), (409, refused));

    let (r, _) = call(
        &g1,
        "POST",
        &objects,
        Some(&bob),
        &[("Idempotency-Key", &"k".repeat(65))],
        Some(json!({"id":"o9","type":"rect"})),
    )
    .await;
    assert_eq!(r.status, 400, "a key over 64 characters");

    let (r, o1) = call(
        &g2,
        "GET",
        &format!("{objects}/o1"),
        Some(&alice),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(o1["version"], 3);
}

#[tokio::test]
async fn rest_writes_reach_sockets_on_every_gateway() {
    let redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway_with(&redis.url(), authed()).await,
        spawn_gateway_with(&redis.url(), authed()).await,
    );
    let p = project("rest-live");
    let alice = token("alice", json!({ p.as_str(): "editor" }));
    let (mut watcher, _) = WsClient::join(&format!("{}?token={alice}", g2.ws(&p)))
        .await
        .unwrap();
    let objects = format!("/api/projects/{p}/objects");

    let (r, _) = call(
        &g1,
        "POST",
        &objects,
        Some(&alice),
        &[],
        Some(json!({"id":"o1","type":"rect","x":1})),
    )
    .await;
    assert_eq!(r.status, 201);
    let created = watcher.recv_type("created").await.unwrap();
    assert_eq!(
        created["object"],
        json!({"id":"o1","type":"rect","x":1,"version":1})
    );
    assert_eq!(
        (created["seq"].clone(), created["by"].clone()),
        (json!(1), json!("alice"))
    );

    let (r, _) = call(
        &g1,
        "PATCH",
        &format!("{objects}/o1"),
        Some(&alice),
        &[("Content-Type", "application/merge-patch+json")],
        Some(json!({"x":null})),
    )
    .await;
    assert_eq!(r.status, 200);
    let updated = watcher.recv_type("updated").await.unwrap();
    assert_eq!(updated["patch"], json!({"x":null}));
    assert_eq!(
        (
            updated["version"].clone(),
            updated["seq"].clone(),
            updated["by"].clone()
        ),
        (json!(2), json!(2), json!("alice"))
    );

    let (r, _) = call(
        &g1,
        "DELETE",
        &format!("{objects}/o1"),
        Some(&alice),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let deleted = watcher.recv_type("deleted").await.unwrap();
    assert_eq!(
        deleted,
        json!({"type":"deleted","id":"o1","seq":3,"by":"alice"})
    );
}
