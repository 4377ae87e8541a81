//! `seq` never goes backwards (a Redis that lost or rolled back a project resumes above every seq that was saved or
//! seen), and clients learn what is saved (`savedSeq` in snapshots and the objects read, `saved` after each save),
//! against real redis-server, dynalite and an in-process saver.

mod common;

use std::time::Duration;

use canvas_testkit::{http_get, RedisServer, WsClient};
use common::{project, spawn_gateway, start_saver, update_o1, Hot};
use serde_json::{json, Value};

/// Joins and creates `o1`, then edits it until the project's seq is `edits + 1`.
async fn join_and_edit(url: &str, edits: u64) -> (WsClient, u64) {
    let (mut client, _) = WsClient::join(url).await.unwrap();
    let ack = client
        .request(json!({"type":"create","object":{"id":"o1","type":"rect","n":0}}))
        .await
        .unwrap();
    let mut seq = ack["seq"].as_u64().unwrap();
    for n in 0..edits {
        seq = update_o1(&mut client, n).await;
    }
    (client, seq)
}

/// Waits for a `saved` frame covering at least `seq`.
async fn saved_at_least(client: &mut WsClient, seq: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `saved` reached seq {seq}"
        );
        let frame = client.recv_type("saved").await.unwrap();
        let saved = frame["seq"].as_u64().unwrap();
        if saved >= seq {
            return saved;
        }
    }
}

#[tokio::test]
async fn a_client_on_another_gateway_is_told_when_its_edits_are_saved() {
    a_client_on_another_gateway_is_told_when_its_edits_are_saved_on(Hot::single()).await;
}

#[tokio::test]
async fn a_client_on_another_gateway_is_told_when_its_edits_are_saved_on_a_cluster() {
    a_client_on_another_gateway_is_told_when_its_edits_are_saved_on(Hot::cluster()).await;
}

async fn a_client_on_another_gateway_is_told_when_its_edits_are_saved_on(redis: Hot) {
    let p = project("saved");
    let (a, b) = (
        spawn_gateway(redis.target()).await,
        spawn_gateway(redis.target()).await,
    );
    let (mut on_a, _) = WsClient::join(&a.ws(&p)).await.unwrap();
    let (mut on_b, seq) = join_and_edit(&b.ws(&p), 3).await;
    let (_, first) = WsClient::join(&b.ws(&p)).await.unwrap();
    assert_eq!(first["savedSeq"], 0, "nothing is saved yet: {first}");

    let saver = start_saver(redis.target()).await;
    let saved_b = saved_at_least(&mut on_b, seq).await;
    let saved_a = saved_at_least(&mut on_a, seq).await;
    assert_eq!(saved_a, saved_b, "every client hears the same watermark");

    let (status, body) = http_get(&a.http(&format!("/api/projects/{p}/objects")), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let read: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(read["seq"], seq, "{read}");
    assert_eq!(read["savedSeq"], saved_a, "{read}");
    let (_, snapshot) = WsClient::join(&a.ws(&p)).await.unwrap();
    assert_eq!(snapshot["savedSeq"], saved_a, "{snapshot}");
    saver.cancel();
}

#[tokio::test]
async fn after_redis_loses_a_project_a_gateway_with_no_room_for_it_resumes_above_the_saved_seq() {
    let redis = RedisServer::start();
    let p = project("noroom");
    let a = spawn_gateway(&redis.url()).await;
    let (mut client, seq) = join_and_edit(&a.ws(&p), 4).await;
    let saver = start_saver(&redis.url()).await;
    saved_at_least(&mut client, seq).await;
    saver.cancel();
    client.close().await;

    redis.cli(&["FLUSHALL"]);
    // A gateway that never held the project: it knows no seq of it, only the durable store does.
    let fresh = spawn_gateway(&redis.url()).await;
    let (mut client, snapshot) = WsClient::join(&fresh.ws(&p)).await.unwrap();
    assert!(
        snapshot["seq"].as_u64().unwrap() >= seq,
        "resumed at {} below the saved seq {seq}",
        snapshot["seq"]
    );
    assert!(
        update_o1(&mut client, 99).await > seq,
        "a new edit gets a new seq"
    );
}

#[tokio::test]
async fn after_redis_loses_a_project_its_seq_resumes_above_what_clients_saw() {
    let redis = RedisServer::start();
    let p = project("flushed");
    let a = spawn_gateway(&redis.url()).await;
    let (mut client, saved) = join_and_edit(&a.ws(&p), 2).await;
    let saver = start_saver(&redis.url()).await;
    saved_at_least(&mut client, saved).await;
    saver.cancel();
    // Edits after the save: seen by the client, never saved.
    let mut seen = saved;
    for n in 0..3 {
        seen = update_o1(&mut client, 100 + n).await;
    }

    redis.cli(&["FLUSHALL"]);
    let resync = client
        .request(json!({"type":"resync"}))
        .await
        .expect("resync");
    assert_eq!(resync["type"], "snapshot", "{resync}");
    assert!(
        resync["seq"].as_u64().unwrap() >= seen,
        "resumed at {} below the seen seq {seen}",
        resync["seq"]
    );
    assert!(update_o1(&mut client, 7).await > seen);
}

#[tokio::test]
async fn an_edit_right_after_a_seq_rollback_never_reuses_a_seq() {
    let redis = RedisServer::start();
    let p = project("rollback-edit");
    let a = spawn_gateway(&redis.url()).await;
    let (mut client, seen) = join_and_edit(&a.ws(&p), 5).await;

    // The hot state goes back behind the gateway's back, and the very next thing is an edit (no resync between).
    redis.cli(&["HSET", &common::keys_of(&p).meta, "seq", "2"]);
    let next = update_o1(&mut client, 60).await;
    assert!(next > seen, "seq {next} handed out again after {seen}");
}

#[tokio::test]
async fn a_rolled_back_seq_is_raised_before_any_client_sees_it() {
    let redis = RedisServer::start();
    let p = project("rollback");
    let a = spawn_gateway(&redis.url()).await;
    let (mut client, seen) = join_and_edit(&a.ws(&p), 5).await;

    // The hot state loses its last writes behind the gateway's back (AOF tail loss, a failover to a late replica).
    redis.cli(&["HSET", &common::keys_of(&p).meta, "seq", "2"]);
    let resync = client
        .request(json!({"type":"resync"}))
        .await
        .expect("resync");
    assert!(
        resync["seq"].as_u64().unwrap() >= seen,
        "a snapshot went back from {seen} to {}",
        resync["seq"]
    );
    let next = update_o1(&mut client, 50).await;
    assert!(next > seen, "seq {next} reused after {seen}");
    let (_, other) = WsClient::join(&a.ws(&p)).await.unwrap();
    assert!(other["seq"].as_u64().unwrap() >= next);
}
