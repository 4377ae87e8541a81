//! Catching up from the journal instead of a snapshot, on two gateways sharing one real redis-server: a client
//! that reconnects or resyncs with `since` gets exactly the edits it missed, in order, then `caught_up`; one
//! further behind than the journal gets a snapshot; a gateway whose pub/sub connection is killed repairs its
//! clients from the journal without sending any of them a snapshot.

mod common;

use canvas_testkit::{http_get, RedisServer, WsClient};
use common::{
    project, spawn_gateway, spawn_gateway_with, start_saver, update_o1, Options, TestGateway,
};
use serde_json::{json, Value};

/// Joins and creates `o1`; returns the client and the create's seq.
async fn join_with_object(g: &TestGateway, p: &str) -> (WsClient, u64) {
    let (mut client, _) = WsClient::join(&g.ws(p)).await.unwrap();
    let ack = client
        .request(json!({"type":"create","object":{"id":"o1","type":"rect","n":0}}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    (client, ack["seq"].as_u64().unwrap())
}

/// Every frame up to and including the first `caught_up` or `snapshot`.
async fn frames_until_caught_up(client: &mut WsClient) -> (Vec<Value>, Value) {
    let mut frames = Vec::new();
    loop {
        let frame = client.recv().await.unwrap();
        match frame["type"].as_str() {
            Some("caught_up" | "snapshot") => return (frames, frame),
            _ => frames.push(frame),
        }
    }
}

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

#[tokio::test]
async fn resume_after_missed_edits_sends_exactly_those_in_order_and_no_snapshot() {
    let redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway(&redis.url()).await,
        spawn_gateway(&redis.url()).await,
    );
    let p = project("resume");
    let (mut editor, _) = join_with_object(&g2, &p).await;
    let (mut leaving, snapshot) = WsClient::join(&g1.ws(&p)).await.unwrap();
    let since = snapshot["seq"].as_u64().unwrap();
    // Its own last edit before it drops is among what it gets back.
    let own = update_o1(&mut leaving, 1000).await;
    leaving.close().await;
    let mut last = own;
    for n in 0..19 {
        last = update_o1(&mut editor, n).await;
    }

    let mut back = WsClient::connect(&format!("{}?since={since}", g1.ws(&p)))
        .await
        .unwrap();
    let (frames, end) = frames_until_caught_up(&mut back).await;
    assert_eq!(end["type"], "caught_up", "no snapshot: {end}");
    assert_eq!(seqs(&frames), ((since + 1)..=last).collect::<Vec<_>>());
    assert_eq!(frames.len(), 20, "exactly the 20 missed edits");
    assert!(frames
        .iter()
        .all(|f| f["type"] == "updated" && f["by"] == "anonymous"));
    assert_eq!(frames[0]["patch"], json!({"n":1000}), "its own edit too");
    assert_eq!(frames[19]["patch"], json!({"n":18}));
    assert_eq!(end["seq"], last);
    assert_eq!(end["savedSeq"], 0);
    assert!(end["clientId"].is_string(), "{end}");

    // Live edits follow, with no gap and nothing twice; then a `resync` with `since` replays from there.
    let next = update_o1(&mut editor, 99).await;
    let live = back.recv_type("updated").await.unwrap();
    assert_eq!(live["seq"], next);
    back.send(&json!({"type":"resync","reqId":"again","since":last - 5}))
        .await
        .unwrap();
    let (frames, end) = frames_until_caught_up(&mut back).await;
    assert_eq!(
        (
            end["type"].clone(),
            end["reqId"].clone(),
            end["seq"].clone()
        ),
        (json!("caught_up"), json!("again"), json!(next))
    );
    assert_eq!(seqs(&frames), ((last - 4)..=next).collect::<Vec<_>>());

    // Already up to date: nothing but `caught_up`.
    let mut current = WsClient::connect(&format!("{}?since={next}", g2.ws(&p)))
        .await
        .unwrap();
    let (frames, end) = frames_until_caught_up(&mut current).await;
    assert_eq!((frames.len(), end["type"].clone()), (0, json!("caught_up")));
}

#[tokio::test]
async fn resume_from_beyond_the_journal_or_above_the_project_gets_a_snapshot() {
    let redis = RedisServer::start();
    let short = || Options {
        journal_len: 10,
        ..Options::default()
    };
    let g = spawn_gateway_with(&redis.url(), short()).await;
    let p = project("beyond");
    let (mut editor, first) = join_with_object(&g, &p).await;
    let mut last = first;
    // Enough that even `MAXLEN ~` (which trims whole stream nodes of 100 entries) has dropped the first ones.
    for n in 0..250 {
        last = update_o1(&mut editor, n).await;
    }

    let mut behind = WsClient::connect(&format!("{}?since={first}", g.ws(&p)))
        .await
        .unwrap();
    let (frames, end) = frames_until_caught_up(&mut behind).await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(
        (end["type"].clone(), end["seq"].clone()),
        (json!("snapshot"), json!(last))
    );
    assert_eq!(end["objects"][0]["n"], 249);

    // The last `CANVAS_JOURNAL_LEN` are still there.
    let mut recent = WsClient::connect(&format!("{}?since={}", g.ws(&p), last - 10))
        .await
        .unwrap();
    let (frames, end) = frames_until_caught_up(&mut recent).await;
    assert_eq!(
        (frames.len(), end["type"].clone()),
        (10, json!("caught_up"))
    );

    let ahead = behind
        .request(json!({"type":"resync","since": last + 5}))
        .await
        .unwrap();
    assert_eq!(
        (ahead["type"].clone(), ahead["seq"].clone()),
        (json!("snapshot"), json!(last))
    );

    let (status, _) = http_get(
        &format!("{}?since=soon", g.ws(&p).replacen("ws://", "http://", 1)),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 400, "a since that is not a seq is refused");
}

/// Reads the `catch_ups` counter of one cause and way from a gateway's Prometheus text.
async fn catch_ups(g: &TestGateway, cause: &str, via: &str) -> u64 {
    let (_, text) = http_get(&g.http("/metrics/prometheus"), &[]).await.unwrap();
    let series = format!("canvas_gateway_catch_ups_total{{cause=\"{cause}\",via=\"{via}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_killed_pubsub_connection_is_repaired_from_the_journal_without_snapshots() {
    let redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway(&redis.url()).await,
        spawn_gateway(&redis.url()).await,
    );
    let p = project("pubsub-kill");
    let (mut editor, created) = join_with_object(&g2, &p).await;
    let (mut watcher, snapshot) = WsClient::join(&g1.ws(&p)).await.unwrap();
    assert_eq!(snapshot["seq"], created);

    let mut seen = created;
    for round in 0..3 {
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        // Sent without waiting for acks, so that some are published while the gateways resubscribe.
        for n in 0..30 {
            editor
                .send(&json!({"type":"update","id":"o1","patch":{"n": round * 100 + n}}))
                .await
                .unwrap();
        }
        let target = seen + 30;
        while seen < target {
            let frame = watcher.recv().await.unwrap();
            assert_ne!(frame["type"], "snapshot", "repaired by a snapshot: {frame}");
            if frame["type"] == "updated" {
                assert_eq!(frame["seq"], seen + 1, "in order, none twice, none lost");
                seen += 1;
            }
        }
        let mut acks = 0;
        while acks < 30 {
            let frame = editor.recv().await.unwrap();
            assert_ne!(frame["type"], "snapshot", "repaired by a snapshot: {frame}");
            acks += u64::from(frame["type"] == "ack");
        }
    }
    assert!(catch_ups(&g1, "bus", "journal").await >= 3);
    assert_eq!(catch_ups(&g1, "bus", "snapshot").await, 0);
    assert_eq!(catch_ups(&g2, "bus", "snapshot").await, 0);
}

#[tokio::test]
async fn a_rest_write_is_live_on_the_other_gateway_saved_and_there_after_a_reload() {
    let redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway(&redis.url()).await,
        spawn_gateway(&redis.url()).await,
    );
    let p = project("rest-saved");
    let (mut watcher, _) = WsClient::join(&g2.ws(&p)).await.unwrap();
    let response = canvas_testkit::http::http_request(
        "POST",
        &g1.http(&format!("/api/projects/{p}/objects")),
        &[("Content-Type", "application/json")],
        Some(r#"{"id":"r1","type":"note","text":"from a script"}"#),
    )
    .await
    .unwrap();
    assert_eq!(response.status, 201, "{}", response.body);
    let created = watcher.recv_type("created").await.unwrap();
    assert_eq!(created["object"]["text"], "from a script");
    let seq = created["seq"].as_u64().unwrap();

    let saver = start_saver(&redis.url()).await;
    loop {
        let saved = watcher.recv_type("saved").await.unwrap();
        if saved["seq"].as_u64().unwrap() >= seq {
            break;
        }
    }
    saver.cancel();
    watcher.close().await;
    // Redis forgets the project: the next read loads it from DynamoDB.
    redis.cli(&["FLUSHALL"]);
    let (status, body) = http_get(&g1.http(&format!("/api/projects/{p}/objects")), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let read: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(read["objects"][0]["text"], "from a script", "{read}");
    assert_eq!(read["objects"][0]["version"], 1, "{read}");
}

#[tokio::test]
async fn a_seq_from_before_redis_lost_the_project_resumes_with_a_snapshot() {
    let redis = RedisServer::start();
    let g = spawn_gateway(&redis.url()).await;
    let p = project("lost");
    let (mut client, _) = join_with_object(&g, &p).await;
    let last = update_o1(&mut client, 1).await;
    client.close().await;
    // Nothing was saved: the reload has none of it, at a seq no lower than the one the client saw.
    redis.cli(&["FLUSHALL"]);
    let mut back = WsClient::connect(&format!("{}?since={last}", g.ws(&p)))
        .await
        .unwrap();
    let (frames, end) = frames_until_caught_up(&mut back).await;
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(
        end["type"], "snapshot",
        "its state is gone from the project: {end}"
    );
    assert_eq!(end["objects"], json!([]));
}
