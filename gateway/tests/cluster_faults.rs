//! A Redis Cluster losing a primary, and moving a project's slot, while clients on two gateways edit and a
//! saver saves: edits resume on the promoted replica, the gateways subscribe again and repair their clients, the
//! saver carries on, and nothing acknowledged is lost (beyond what asynchronous replication can lose: edits the
//! dead primary had not yet passed on, which these tests rule out by waiting for the replica before the kill).

mod common;

use std::time::Duration;

use canvas_shared::hot::redis::RedisTarget;
use canvas_testkit::{RedisCluster, WsClient};
use common::{keys_of, project, spawn_gateway, start_saver};
use serde_json::{json, Value};

fn target(cluster: &RedisCluster) -> RedisTarget {
    RedisTarget::cluster_from_list(&cluster.nodes_env())
}

/// A key in the project's slot, to fence replication with (`SET` then `WAIT 1` on the slot's primary).
fn fence_key(p: &str) -> String {
    format!("canvas:{{{}}}:fence", keys_of(p).bucket.tag)
}

/// What it took to get one edit acknowledged.
#[derive(Debug, Default, Clone, Copy)]
struct Attempts {
    /// Refused as `unavailable`: provably never applied.
    unavailable: usize,
    /// Answered `unknown_outcome`: may or may not have been applied.
    unknown: usize,
}

/// Sends an update of `o0` until one is acknowledged; the refusals on the way (the slot's primary is gone,
/// the outcome of a call is unknown) are what clients see during a failover. Returns the acked seq.
async fn update_until_acked(client: &mut WsClient, n: u64, within: Duration) -> (u64, Attempts) {
    let deadline = tokio::time::Instant::now() + within;
    let mut attempts = Attempts::default();
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no edit acknowledged within {within:?} ({attempts:?})"
        );
        let reply = client
            .request(json!({"type":"update","id":"o0","patch":{"n":n}}))
            .await
            .expect("reply");
        match reply["type"].as_str() {
            Some("ack") => return (reply["seq"].as_u64().expect("seq"), attempts),
            Some("error") if reply["code"] == "unavailable" => attempts.unavailable += 1,
            Some("unknown_outcome") => attempts.unknown += 1,
            _ => panic!("unexpected reply {reply}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next frame about `o0` with `n` at least `n` (a broadcast, or a resync snapshot), within `within`.
async fn sees_o0_at_least(client: &mut WsClient, n: u64, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame = client
            .recv_within(left)
            .await
            .unwrap_or_else(|e| panic!("never saw o0 at n >= {n}: {e}"));
        let seen = match frame["type"].as_str() {
            Some("updated") if frame["id"] == "o0" => frame["patch"]["n"].as_u64(),
            Some("snapshot") => frame["objects"]
                .as_array()
                .and_then(|objects| objects.iter().find(|o| o["id"] == "o0"))
                .and_then(|o| o["n"].as_u64()),
            _ => None,
        };
        if seen.is_some_and(|seen| seen >= n) {
            return frame;
        }
    }
}

async fn join_with_objects(url: &str, count: usize) -> (WsClient, WsClient) {
    let (mut alice, _) = WsClient::join(url).await.expect("join");
    for i in 0..count {
        let ack = alice
            .request(json!({"type":"create","object":{"id":format!("o{i}"),"type":"rect","n":0}}))
            .await
            .expect("ack");
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let (observer, _) = WsClient::join(url).await.expect("join");
    (alice, observer)
}

/// The test runner prints a failed test's captured output: with the services' logs in it, a failover that stalls
/// says where (a save pass that failed, a claim that waits for its lease, a subscription lost again).
fn logs_on_failure() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("warn,redis=error,canvas_saver=info,canvas_shared=info")
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_dies_and_editing_fan_out_and_saving_resume_on_its_replica() {
    logs_on_failure();
    let cluster = RedisCluster::start();
    let (g1, g2) = (
        spawn_gateway(target(&cluster)).await,
        spawn_gateway(target(&cluster)).await,
    );
    let saver = start_saver(target(&cluster)).await;
    let p = project("failover");
    let (mut alice, _) = join_with_objects(&g1.ws(&p), 20).await;
    let (mut bob, _) = WsClient::join(&g2.ws(&p)).await.expect("join");
    let (before, _) = update_until_acked(&mut alice, 1, Duration::from_secs(5)).await;
    sees_o0_at_least(&mut bob, 1, Duration::from_secs(5)).await;

    // Every acknowledged edit has reached the replica; then the project's primary dies.
    assert_eq!(cluster.set_replicated(&fence_key(&p), "x"), 1);
    let slot = cluster.keyslot(&keys_of(&p).meta);
    let ready = g2.http("/readyz");
    let readiness = tokio::spawn(async move {
        // Not ready while the cluster cannot serve every slot, ready again once the replica took over.
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            let status = canvas_testkit::http_get(&ready, &[])
                .await
                .map(|(status, _)| status)
                .unwrap_or(0);
            if seen.last() != Some(&status) {
                seen.push(status);
            }
            if seen.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        seen
    });
    let killed = cluster.kill_primary_of_slot(slot);
    let (after, attempts) = update_until_acked(&mut alice, 2, Duration::from_secs(30)).await;
    assert!(after > before, "seq {after} after {before}");
    assert_ne!(
        cluster.primary_for_slot(slot),
        killed,
        "a replica took over"
    );

    // Bob's gateway subscribed again on the new primary: he sees Alice's edit (or is repaired to it).
    sees_o0_at_least(&mut bob, 2, Duration::from_secs(20)).await;
    let (after_more, _) = update_until_acked(&mut alice, 3, Duration::from_secs(5)).await;
    sees_o0_at_least(&mut bob, 3, Duration::from_secs(10)).await;

    // Nothing acknowledged before the kill is gone, and the saver saves on the new primary.
    let (mut carol, snapshot) = WsClient::join(&g2.ws(&p)).await.expect("join");
    let objects = snapshot["objects"].as_array().expect("objects");
    assert_eq!(objects.len(), 20, "{snapshot}");
    assert_eq!(snapshot["seq"].as_u64(), Some(after_more), "{snapshot}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let frame = carol
            .recv_within(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .unwrap_or_else(|e| panic!("the saver never saved seq {after_more}: {e}"));
        if frame["type"] == "saved" && frame["seq"].as_u64() >= Some(after_more) {
            break;
        }
    }
    let readiness = readiness.await.expect("readiness poller");
    assert_eq!(
        readiness,
        [200, 503, 200],
        "readiness follows the cluster's state"
    );
    eprintln!("failover: while the slot had no primary, {attempts:?}");
    saver.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_a_projects_slot_while_it_is_edited_loses_nothing() {
    logs_on_failure();
    let cluster = RedisCluster::start();
    let (g1, g2) = (
        spawn_gateway(target(&cluster)).await,
        spawn_gateway(target(&cluster)).await,
    );
    let p = project("reshard");
    let (mut alice, _) = join_with_objects(&g1.ws(&p), 1).await;
    let (mut bob, _) = WsClient::join(&g2.ws(&p)).await.expect("join");
    let slot = cluster.keyslot(&keys_of(&p).meta);
    let from = cluster.primary_for_slot(slot);
    let to = cluster
        .primaries()
        .into_iter()
        .find(|port| *port != from)
        .expect("another primary");

    // Alice edits without pause while the slot moves; every edit is acknowledged in the end.
    let editing = tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut unknown = 0;
        for n in 1..=150u64 {
            let (seq, attempts) = update_until_acked(&mut alice, n, Duration::from_secs(20)).await;
            acked.push(seq);
            unknown += attempts.unknown as u64;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (acked, unknown)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    cluster.blocking(move |c| c.move_slot(slot, to)).await;
    let (acked, unknown) = editing.await.expect("editing");
    assert_eq!(cluster.primary_for_slot(slot), to, "the slot moved");
    assert!(
        acked.windows(2).all(|w| w[0] < w[1]),
        "seq went up by edit: {acked:?}"
    );

    // Bob ends at the last edit, on the slot's new owner; the project holds every acknowledged edit.
    sees_o0_at_least(&mut bob, 150, Duration::from_secs(20)).await;
    let (_, snapshot) = WsClient::join(&g2.ws(&p)).await.expect("join");
    let o0 = snapshot["objects"][0].clone();
    assert_eq!(o0["n"], 150, "{snapshot}");
    // The create, each acknowledged update once, and any update whose outcome was unknown at most once.
    let version = o0["version"].as_u64().expect("version");
    assert!(
        (151..=151 + unknown).contains(&version),
        "version {version} after 150 acknowledged updates ({unknown} unknown): {snapshot}"
    );
    assert_eq!(snapshot["seq"].as_u64(), acked.last().copied());
}
