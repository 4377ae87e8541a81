//! Failures around the gateway: Redis restarting under connected clients, a gateway killed mid-session, a client
//! that stops reading, SIGTERM, and cold loads racing on two gateways.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use canvas_gateway::config::{AbuseArgs, TuningArgs};
use canvas_shared::durable::{DurableStore, ItemWrite, WriteOp};
use canvas_shared::stored::StoredObject;
use canvas_shared::{ObjectId, ProjectId};
use canvas_testkit::{free_port, http_get, wait_for_port, ChildProcess, RedisServer, WsClient};
use common::{durable, project, spawn_gateway, spawn_gateway_with, Hot, Options, TABLE};
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// The real `gateway` binary on a free port.
struct GatewayProcess {
    process: ChildProcess,
    port: u16,
}

impl GatewayProcess {
    fn start(redis_url: &str) -> Self {
        let port = free_port();
        let process = ChildProcess::command("gateway", env!("CARGO_BIN_EXE_gateway"))
            .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
            .env("REDIS_URL", redis_url)
            .env(
                "DYNAMODB_ENDPOINT",
                canvas_testkit::shared_dynalite().endpoint(),
            )
            .env("CANVAS_TABLE", TABLE)
            .env("CANVAS_AUTH_DISABLED", "true")
            .env("GATEWAY_SHUTDOWN_GRACE_MS", "3000")
            .env("RUST_LOG", "warn")
            .spawn();
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "gateway did not listen"
        );
        Self { process, port }
    }

    fn ws(&self, project: &str) -> String {
        format!("ws://127.0.0.1:{}/ws/projects/{project}", self.port)
    }

    fn signal(&self, sig: i32) {
        self.process.signal(sig);
    }
}

#[tokio::test]
async fn a_killed_gateway_loses_no_acknowledged_edit() {
    let redis = RedisServer::start();
    let doomed = GatewayProcess::start(&redis.url());
    let survivor = spawn_gateway(&redis.url()).await;
    let p = project("kill");
    let (mut c, _) = WsClient::join(&doomed.ws(&p)).await.unwrap();
    let mut acked = Vec::new();
    for n in 0..50 {
        let ack = c
            .request(json!({"type":"create","object":{"id":format!("o{n}"),"type":"rect","n":n}}))
            .await
            .unwrap();
        assert_eq!(ack["type"], "ack");
        acked.push(format!("o{n}"));
    }
    // Fire more without waiting, then kill -9 mid-stream.
    for n in 50..80 {
        c.send(&json!({"type":"create","reqId":format!("late{n}"),"object":{"id":format!("o{n}"),"type":"rect"}}))
            .await
            .unwrap();
    }
    while let Ok(v) = c.recv_within(Duration::from_millis(5)).await {
        if v["type"] == "ack" {
            acked.push(v["id"].as_str().unwrap().to_string());
        }
    }
    doomed.signal(libc::SIGKILL);
    let (_, snap) = WsClient::join(&survivor.ws(&p)).await.unwrap();
    let ids: Vec<&str> = snap["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    for id in &acked {
        assert!(
            ids.contains(&id.as_str()),
            "acked {id} missing after the gateway died"
        );
    }
}

#[tokio::test]
async fn redis_restart_under_connected_clients() {
    let mut redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway(&redis.url()).await,
        spawn_gateway(&redis.url()).await,
    );
    let p = project("restart");
    let (mut a, _) = WsClient::join(&g1.ws(&p)).await.unwrap();
    let (mut b, _) = WsClient::join(&g2.ws(&p)).await.unwrap();
    a.request(json!({"type":"create","object":{"id":"before","type":"rect"}}))
        .await
        .unwrap();
    b.recv_type("created").await.unwrap();

    redis.kill();
    // The first edit may still be written to the connection that just died: its outcome is then unknown (and
    // said so). Once the connection is known dead, an edit is plainly refused.
    let first = a
        .request(json!({"type":"create","object":{"id":"during-0","type":"rect"}}))
        .await
        .unwrap();
    assert!(
        first["type"] == "unknown_outcome" || first["code"] == "unavailable",
        "an edit during the outage is answered, never dropped silently: {first}"
    );
    let reply = a
        .request(json!({"type":"create","object":{"id":"during","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(reply["type"], "error");
    assert_eq!(
        reply["code"], "unavailable",
        "an edit during the outage is refused, never dropped silently"
    );
    assert_eq!(http_get(&g1.http("/readyz"), &[]).await.unwrap().0, 503);

    redis.restart();
    // Both clients get a fresh snapshot once the subscription is back; seq never goes backwards.
    let snap_a = a.recv_type("snapshot").await.unwrap();
    let snap_b = b.recv_type("snapshot").await.unwrap();
    assert!(snap_a["seq"].as_u64().unwrap() >= 1 && snap_b["seq"].as_u64().unwrap() >= 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while http_get(&g1.http("/readyz"), &[]).await.unwrap().0 != 200 {
        assert!(Instant::now() < deadline, "readyz never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ack = a
        .request(json!({"type":"create","object":{"id":"after","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert!(ack["seq"].as_u64().unwrap() > snap_a["seq"].as_u64().unwrap());
    let created = b.recv_type("created").await.unwrap();
    assert_eq!(
        created["object"]["id"], "after",
        "fan-out across gateways works again"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_without_stalling_others() {
    let redis = RedisServer::start();
    let tuning = TuningArgs {
        outgoing_queue: 16,
        // This test floods on purpose: no edit rate limit.
        abuse: AbuseArgs {
            edits_per_second: 0.0,
            ..AbuseArgs::default()
        },
        ..TuningArgs::default()
    };
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            tuning,
            ..Options::default()
        },
    )
    .await;
    let p = project("slow");
    // A raw socket that completes the upgrade and then never reads again.
    let mut slow = tokio::net::TcpStream::connect(g.addr).await.unwrap();
    let request = format!(
        "GET /ws/projects/{p} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    let (mut writer, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    let (mut watcher, _) = WsClient::join(&g.ws(&p)).await.unwrap();
    writer
        .request(json!({"type":"create","object":{"id":"o","type":"rect"}}))
        .await
        .unwrap();
    let payload = "p".repeat(32 * 1024);
    let started = Instant::now();
    let watch = tokio::spawn(async move {
        let mut seen = 0;
        while seen < 400 {
            if watcher.recv().await.unwrap()["type"] == "updated" {
                seen += 1;
            }
        }
    });
    for n in 0..400 {
        let ack = writer
            .request(json!({"type":"update","id":"o","patch":{"n":n,"blob":payload}}))
            .await
            .unwrap();
        assert_eq!(ack["type"], "ack");
    }
    tokio::time::timeout(Duration::from_secs(20), watch)
        .await
        .expect("watcher kept up")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    // The slow client was dropped: its socket is closed by the server (reads reach EOF after the buffered data).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => assert!(Instant::now() < deadline, "slow client still connected"),
            Err(_) => panic!("slow client neither served nor closed"),
        }
    }
}

#[tokio::test]
async fn sigterm_closes_sockets_with_going_away_and_exits() {
    let redis = RedisServer::start();
    let mut gateway = GatewayProcess::start(&redis.url());
    let (mut c, _) = WsClient::join(&gateway.ws(&project("term"))).await.unwrap();
    let started = Instant::now();
    gateway.signal(libc::SIGTERM);
    let close = c.closed().await.unwrap();
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1001));
    let status = gateway
        .process
        .wait_exit(Duration::from_secs(5).saturating_sub(started.elapsed()))
        .await
        .expect("gateway did not exit after SIGTERM");
    assert!(status.success(), "clean exit: {status:?}");
}

async fn seed(store: &impl DurableStore, project: &str, n: usize) {
    let project = ProjectId::parse(project).unwrap();
    let writes: Vec<ItemWrite> = (0..n)
        .map(|i| ItemWrite {
            project: project.clone(),
            op: WriteOp::Put(StoredObject {
                id: ObjectId::parse(format!("o{i}")).unwrap(),
                json: json!({"id":format!("o{i}"),"type":"rect","x":i,"version":1}).to_string(),
                updated_at: 1,
            }),
        })
        .collect();
    for chunk in writes.chunks(25) {
        assert!(store.write_batch(chunk).await.unwrap().all_written());
    }
}

/// `n` clients joining `project` at the same moment, alternating between two gateways; each yields its snapshot.
fn join_at_once(
    g1: &Arc<common::TestGateway>,
    g2: &Arc<common::TestGateway>,
    project: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<serde_json::Value>> {
    (0..n)
        .map(|i| {
            let url = if i % 2 == 0 {
                g1.ws(project)
            } else {
                g2.ws(project)
            };
            tokio::spawn(async move { WsClient::join(&url).await.unwrap().1 })
        })
        .collect()
}

#[tokio::test]
async fn cold_load_race_on_two_gateways_loads_once_and_keeps_edits() {
    cold_load_race_on_two_gateways_loads_once_and_keeps_edits_on(Hot::single()).await;
}

#[tokio::test]
async fn cold_load_race_on_two_gateways_loads_once_and_keeps_edits_on_a_cluster() {
    cold_load_race_on_two_gateways_loads_once_and_keeps_edits_on(Hot::cluster()).await;
}

async fn cold_load_race_on_two_gateways_loads_once_and_keeps_edits_on(redis: Hot) {
    let store = durable().await;
    let p = project("cold");
    seed(&store, &p, 60).await;
    let (g1, g2) = (
        Arc::new(spawn_gateway(redis.target()).await),
        Arc::new(spawn_gateway(redis.target()).await),
    );

    // An editor joins first and keeps editing while ten others join at once on both gateways.
    let (mut editor, first) = WsClient::join(&g1.ws(&p)).await.unwrap();
    assert_eq!(
        first["objects"].as_array().unwrap().len(),
        60,
        "loaded from the durable store"
    );
    let edits = tokio::spawn(async move {
        for n in 0..30 {
            let ack = editor
                .request(json!({"type":"update","id":"o0","patch":{"n":n}}))
                .await
                .unwrap();
            assert_eq!(ack["type"], "ack");
        }
    });
    let joins = join_at_once(&g1, &g2, &p, 10);
    let mut last_seq = 0;
    for j in joins {
        let snap = j.await.unwrap();
        assert_eq!(snap["objects"].as_array().unwrap().len(), 60);
        let o0 = snap["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == "o0")
            .unwrap()
            .clone();
        // The snapshot's o0 reflects exactly the edits up to its seq: never a reload over them.
        assert_eq!(
            o0["version"].as_u64().unwrap(),
            1 + snap["seq"].as_u64().unwrap()
        );
        last_seq = last_seq.max(snap["seq"].as_u64().unwrap());
    }
    edits.await.unwrap();
    let (_, fin) = WsClient::join(&g2.ws(&p)).await.unwrap();
    assert_eq!(fin["seq"], 30);
    let o0 = fin["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == "o0")
        .unwrap()
        .clone();
    assert_eq!(o0["version"], 31);
    assert_eq!(o0["n"], 29);

    // Redis loses everything; ten clients join at once on both gateways: one consistent reload.
    redis.cli(&["FLUSHALL"]);
    let joins = join_at_once(&g1, &g2, &p, 10);
    let mut loaded_at = std::collections::HashSet::new();
    for j in joins {
        let snap = j.await.unwrap();
        assert_eq!(snap["objects"].as_array().unwrap().len(), 60, "{snap}");
        loaded_at.insert(redis.cli(&["HGET", &common::keys_of(&p).meta, "loadedAt"]));
    }
    assert_eq!(loaded_at.len(), 1, "installed exactly once");
}
