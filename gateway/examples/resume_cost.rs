//! Resume versus snapshot for a large project: a client that missed 20 edits of a 5,000-object project reconnects
//! with `?since=` (and gets the 20 edits and `caught_up`) or without (and gets the full snapshot). Prints the
//! median bytes received and time from connect until the client is live again, over a gateway running in-process
//! on a real redis-server (started here) with the embedded durable store.
//! `cargo run --release -p canvas-gateway --example resume_cost -- 5000 20 15` (objects, missed edits, rounds).

use std::sync::Arc;
use std::time::{Duration, Instant};

use canvas_gateway::auth::Auth;
use canvas_gateway::config::TuningArgs;
use canvas_gateway::{serve, AppState};
use canvas_shared::durable::embedded::EmbeddedStore;
use canvas_shared::hot::redis::RedisHotState;
use canvas_shared::hot::EditStore;
use canvas_shared::ids::{ObjectId, ProjectId};
use canvas_shared::stored::StoredObject;
use canvas_shared::Limits;
use canvas_testkit::{RedisServer, WsClient};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Connects and reads until a frame of type `until`: (bytes of every text frame, time from connect to it).
async fn live_again(url: &str, until: &str) -> (usize, Duration) {
    let started = Instant::now();
    let mut client = WsClient::connect(url).await.expect("connect");
    let mut bytes = 0;
    loop {
        let message = client.inner().next().await.expect("open").expect("frame");
        if let Message::Text(text) = message {
            bytes += text.len();
            let frame: Value = serde_json::from_str(&text).expect("json");
            if frame["type"] == until {
                let elapsed = started.elapsed();
                client.close().await;
                return (bytes, elapsed);
            }
        }
    }
}

fn median<T: Ord + Copy>(mut values: Vec<T>) -> T {
    values.sort_unstable();
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let objects: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(5000);
    let missed: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20);
    let rounds: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(15);
    let redis = RedisServer::start();
    let hot = Arc::new(RedisHotState::connect(&redis.url())?);
    let dir = canvas_testkit::TempDir::new("resume-cost");
    let durable = Arc::new(EmbeddedStore::open(&dir.path().join("canvas.redb"))?);
    let project = ProjectId::parse("big")?;
    let stored: Vec<StoredObject> = (0..objects)
        .map(|i| StoredObject {
            id: ObjectId::parse(format!("o{i}")).expect("id"),
            json: json!({"id": format!("o{i}"), "type": "rect", "x": i % 1000, "y": i / 1000, "width": 100, "height": 50, "fill": "#3366ff", "label": format!("shape {i}")}).to_string(),
            updated_at: 1,
        })
        .collect();
    hot.load(&project, &stored, 0, 0).await?;
    let shutdown = CancellationToken::new();
    let state = AppState::new(
        hot,
        durable,
        Limits::default(),
        Auth::Disabled,
        TuningArgs::default(),
        shutdown.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/ws/projects/big", listener.local_addr()?);
    tokio::spawn(serve(listener, state));

    // One edit so that the client's seq is an edit the journal holds, then the edits it misses.
    let (mut editor, _) = WsClient::join(&url).await?;
    let ack = editor
        .request(json!({"type":"update","id":"o0","patch":{"x":-1}}))
        .await?;
    let since = ack["seq"].as_u64().expect("seq");
    for n in 0..missed {
        editor
            .request(json!({"type":"update","id":format!("o{}", n + 1),"patch":{"x":n}}))
            .await?;
    }
    let (mut resumed, mut snapshots) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        resumed.push(live_again(&format!("{url}?since={since}"), "caught_up").await);
        snapshots.push(live_again(&url, "snapshot").await);
    }
    let report = |name: &str, runs: &[(usize, Duration)]| {
        let bytes = median(runs.iter().map(|r| r.0).collect());
        let micros = median(runs.iter().map(|r| r.1.as_micros()).collect());
        println!(
            "{name:>8}: {bytes:>8} bytes, live after {:.2} ms (median of {rounds})",
            micros as f64 / 1000.0
        );
    };
    println!("{objects} objects, {missed} missed edits:");
    report("resume", &resumed);
    report("snapshot", &snapshots);
    shutdown.cancel();
    Ok(())
}
