//! Bad input of every kind gets the documented error code, and the connection (and everyone else's) stays usable.

mod common;

use canvas_gateway::config::TuningArgs;
use canvas_shared::Limits;
use canvas_testkit::{http_get, RedisServer, WsClient};
use common::{project, spawn_gateway, spawn_gateway_with, Options};
use serde_json::{json, Value};

async fn expect_error(c: &mut WsClient, frame: &str, code: &str) -> Value {
    c.send_text(frame).await.unwrap();
    let reply = c.recv_type("error").await.unwrap();
    assert_eq!(reply["code"], code, "frame {frame} got {reply}");
    assert!(
        reply["message"].as_str().is_some_and(|m| !m.is_empty()),
        "an error says what went wrong"
    );
    // Still usable.
    let pong = c.request(json!({"type":"ping"})).await.unwrap();
    assert_eq!(pong["type"], "pong");
    reply
}

#[tokio::test]
async fn every_malformed_frame_gets_a_clear_error_and_the_socket_stays_open() {
    let redis = RedisServer::start();
    let limits = Limits {
        max_object_bytes: 2048,
        max_objects_per_project: 3,
        ..Limits::default()
    };
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            limits,
            ..Options::default()
        },
    )
    .await;
    let p = project("bad");
    let (mut c, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    let (mut other, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    c.request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
        .await
        .unwrap();
    other.recv_type("created").await.unwrap();

    for frame in [
        "not json",
        "[1,2]",
        "42",
        r#"{"no":"type"}"#,
        r#"{"type":"explode"}"#,
        r#"{"type":7}"#,
        r#"{"type":"create"}"#,
        r#"{"type":"create","object":"x"}"#,
        r#"{"type":"create","object":{"type":"rect"}}"#,
        r#"{"type":"create","object":{"id":"has space","type":"rect"}}"#,
        r#"{"type":"create","object":{"id":"o2"}}"#,
        r#"{"type":"create","object":{"id":"o2","type":""}}"#,
        r#"{"type":"create","object":{"id":"o2","type":"r","updatedAt":1}}"#,
        r#"{"type":"update","id":"o1"}"#,
        r#"{"type":"update","id":"o1","patch":[1]}"#,
        r#"{"type":"update","id":"o1","patch":{"id":"o9"}}"#,
        r#"{"type":"update","id":"o1","patch":{"type":null}}"#,
        r#"{"type":"update","id":"o1","patch":{"type":"ellipse"}}"#,
        r#"{"type":"delete"}"#,
        r#"{"type":"delete","id":5}"#,
        r#"{"type":"ping","reqId":7}"#,
    ] {
        expect_error(&mut c, frame, "bad_request").await;
    }
    let reply = expect_error(
        &mut c,
        r#"{"type":"update","reqId":"r-77","id":"o1","patch":"x"}"#,
        "bad_request",
    )
    .await;
    assert_eq!(
        reply["reqId"], "r-77",
        "the reqId is echoed when it could be read"
    );

    expect_error(
        &mut c,
        r#"{"type":"create","object":{"id":"o1","type":"rect"}}"#,
        "conflict",
    )
    .await;
    expect_error(
        &mut c,
        r#"{"type":"update","id":"ghost","patch":{"x":1}}"#,
        "not_found",
    )
    .await;
    expect_error(&mut c, r#"{"type":"delete","id":"ghost"}"#, "not_found").await;
    let big = "x".repeat(3000);
    expect_error(
        &mut c,
        &json!({"type":"create","object":{"id":"big","type":"r","blob":big}}).to_string(),
        "too_large",
    )
    .await;
    // Growing an object past the limit through patches is refused too.
    let half = "y".repeat(1500);
    c.request(json!({"type":"update","id":"o1","patch":{"a":half}}))
        .await
        .unwrap();
    expect_error(
        &mut c,
        &json!({"type":"update","id":"o1","patch":{"b":half}}).to_string(),
        "too_large",
    )
    .await;
    c.request(json!({"type":"create","object":{"id":"o2","type":"r"}}))
        .await
        .unwrap();
    c.request(json!({"type":"create","object":{"id":"o3","type":"r"}}))
        .await
        .unwrap();
    expect_error(
        &mut c,
        r#"{"type":"create","object":{"id":"o4","type":"r"}}"#,
        "too_large",
    )
    .await;

    // Nothing bad reached the stored state: o1 (version 2), o2, o3.
    let (_, body) = http_get(&g.http(&format!("/api/projects/{p}/objects")), &[])
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    let mut ids: Vec<String> = body["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["o1", "o2", "o3"]);
    let o1 = body["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == "o1")
        .unwrap();
    assert_eq!(o1["version"], 2);
    assert_eq!(o1["type"], "rect");

    // The other client was served throughout and saw only valid edits.
    let mut kinds = Vec::new();
    for _ in 0..3 {
        kinds.push(
            other.recv().await.unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(kinds, ["updated", "created", "created"]);
}

#[tokio::test]
async fn oversized_frame_closes_with_1009_and_others_are_unaffected() {
    let redis = RedisServer::start();
    let limits = Limits {
        max_frame_bytes: 4096,
        ..Limits::default()
    };
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            limits,
            ..Options::default()
        },
    )
    .await;
    let p = project("frame");
    let (mut c, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    let (mut other, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    c.send_text(format!(
        r#"{{"type":"ping","pad":"{}"}}"#,
        "z".repeat(10_000)
    ))
    .await
    .unwrap();
    let close = c.closed().await.unwrap();
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1009));
    assert_eq!(
        other.request(json!({"type":"ping"})).await.unwrap()["type"],
        "pong"
    );
}

#[tokio::test]
async fn bad_project_ids_are_refused_before_the_upgrade() {
    let redis = RedisServer::start();
    let g = spawn_gateway(&redis.url()).await;
    for bad in ["has%20space", &"x".repeat(129), "semi;colon", "%7Bbrace%7D"] {
        let err = WsClient::connect(&g.ws(bad)).await.err().expect("refused");
        assert!(err.to_string().contains("400"), "{bad}: {err}");
        let (status, _) = http_get(&g.http(&format!("/api/projects/{bad}/objects")), &[])
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad}");
    }
}

#[tokio::test]
async fn binary_frames_are_refused_politely() {
    let redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            tuning: TuningArgs::default(),
            ..Options::default()
        },
    )
    .await;
    let (mut c, _) = WsClient::join(&g.ws(&project("bin"))).await.unwrap();
    use futures_util::SinkExt;
    c.inner()
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![1, 2, 3].into(),
        ))
        .await
        .unwrap();
    assert_eq!(c.recv_type("error").await.unwrap()["code"], "bad_request");
    assert_eq!(
        c.request(json!({"type":"ping"})).await.unwrap()["type"],
        "pong"
    );
}

/// DynamoDB refuses an empty attribute name at any depth, so an object holding one would be acked and then never
/// saved: it is refused at the door instead, as a create and as a patch, and nothing is applied.
#[tokio::test]
async fn empty_property_names_are_refused_and_nothing_is_applied() {
    let redis = RedisServer::start();
    let g = spawn_gateway(&redis.url()).await;
    let p = project("emptyname");
    let (mut c, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    c.request(json!({"type":"create","object":{"id":"o1","type":"rect","style":{"fill":"red"}}}))
        .await
        .unwrap();
    for frame in [
        r#"{"type":"create","object":{"id":"o2","type":"rect","style":{"":1}}}"#,
        r#"{"type":"create","object":{"id":"o3","type":"rect","":1}}"#,
        r#"{"type":"update","id":"o1","patch":{"style":{"":1}}}"#,
        r#"{"type":"update","id":"o1","patch":{"":1}}"#,
    ] {
        expect_error(&mut c, frame, "bad_request").await;
    }
    let (_, body) = http_get(&g.http(&format!("/api/projects/{p}/objects")), &[])
        .await
        .unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    let objects = body["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 1, "only o1: {body}");
    assert_eq!(objects[0]["version"], 1, "o1 was never patched: {body}");
    assert_eq!(objects[0]["style"], json!({"fill":"red"}));
}
