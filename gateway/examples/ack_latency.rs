//! Ack latency of one client making sequential edits (send, wait for the ack, repeat) against a running
//! gateway: `cargo run --release -p canvas-gateway --example ack_latency -- ws://127.0.0.1:8080 1000`.
//! Prints p50 / p90 / p99 / max in microseconds.

use std::time::Instant;

use canvas_testkit::WsClient;
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080".into());
    let edits: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let project = format!("acklat-{}", std::process::id());
    let (mut client, _) = WsClient::join(&format!("{base}/ws/projects/{project}")).await?;
    client
        .request(json!({"type":"create","object":{"id":"o","type":"rect","x":0}}))
        .await?;
    // Warm up connections and script caches.
    for n in 0..50 {
        client
            .request(json!({"type":"update","id":"o","patch":{"x":n}}))
            .await?;
    }
    let mut micros = Vec::with_capacity(edits);
    for n in 0..edits {
        let started = Instant::now();
        let ack = client
            .request(json!({"type":"update","id":"o","patch":{"x":n,"y":n}}))
            .await?;
        micros.push(started.elapsed().as_micros() as u64);
        anyhow::ensure!(ack["type"] == "ack", "edit {n} was not acked: {ack}");
    }
    micros.sort_unstable();
    let pct = |p: f64| micros[((micros.len() as f64 * p) as usize).min(micros.len() - 1)];
    println!(
        "{edits} sequential edits: p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        micros[micros.len() - 1]
    );
    Ok(())
}
