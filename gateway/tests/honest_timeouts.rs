//! An edit whose reply from Redis never came is answered `unknown_outcome` (then a snapshot that shows whether it
//! was applied), never `unavailable`; `unavailable` is kept for edits that provably never reached Redis.

mod common;

use std::time::Duration;

use canvas_testkit::{RedisServer, WsClient};
use common::{project, spawn_gateway};
use serde_json::json;

#[tokio::test]
async fn an_edit_stalled_past_the_reply_timeout_is_unknown_then_resynced() {
    let redis = RedisServer::start();
    let p = project("stall");
    let g = spawn_gateway(&redis.url()).await;
    let (mut client, _) = WsClient::join(&g.ws(&p)).await.unwrap();

    // Redis holds every command longer than the gateway waits for a reply, then runs them.
    redis.cli(&["CLIENT", "PAUSE", "3000", "ALL"]);
    let reply = client
        .request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "unknown_outcome", "{reply}");
    // The snapshot that follows shows the client what Redis holds, applied or not.
    let snapshot = client.recv_type("snapshot").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let in_redis = redis.cli(&["HEXISTS", &common::keys_of(&p).objects, "o1"]) == "1";
    let in_snapshot = snapshot["objects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["id"] == "o1");
    assert_eq!(in_snapshot, in_redis, "{snapshot}");
}

#[tokio::test]
async fn an_edit_while_redis_is_down_is_unavailable() {
    let mut redis = RedisServer::start();
    let p = project("down");
    let g = spawn_gateway(&redis.url()).await;
    let (mut client, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    redis.kill();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The first call may still go out on the connection that just died (its outcome then is unknown); once the
    // connection is known dead, nothing can reach Redis and an edit is plainly not applied.
    let _ = client
        .request(json!({"type":"create","object":{"id":"o0","type":"rect"}}))
        .await
        .unwrap();
    let reply = client
        .request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unavailable", "{reply}");
}

#[tokio::test]
async fn an_edit_whose_connection_breaks_after_sending_is_unknown_not_unavailable() {
    let mut redis = RedisServer::start();
    let p = project("broken");
    let g = spawn_gateway(&redis.url()).await;
    let (mut client, _) = WsClient::join(&g.ws(&p)).await.unwrap();

    // The edit reaches Redis, which holds it; then Redis dies before answering. The gateway cannot know whether
    // the script ran, so it must not say "not applied".
    redis.cli(&["CLIENT", "PAUSE", "2000", "ALL"]);
    let request = client.request(json!({"type":"create","object":{"id":"o1","type":"rect"}}));
    let kill_after_send = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        redis.kill();
    };
    let (reply, ()) = tokio::join!(request, kill_after_send);
    let reply = reply.unwrap();
    assert_eq!(reply["type"], "unknown_outcome", "{reply}");
}
