//! The change feed (`GET /api/projects/{p}/changes`, Server-Sent Events) against a real redis-server and dynalite
//! on two gateways: from `since`, from a `Last-Event-ID`, from beyond the journal (a snapshot event first), live
//! edits made on the other gateway, and `saved` watermarks.

mod common;

use std::time::Duration;

use canvas_testkit::{RedisServer, WsClient};
use common::{project, spawn_gateway, spawn_gateway_with, start_saver, Options, TestGateway};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One event as the stream carried it.
#[derive(Debug)]
struct Event {
    id: Option<u64>,
    kind: String,
    data: Value,
}

/// A consumer reading the stream line by line (HTTP/1.0, so the body is the raw stream).
struct Feed {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Feed {
    async fn open(g: &TestGateway, p: &str, query: &str, headers: &[(&str, &str)]) -> Self {
        let mut stream = TcpStream::connect(g.addr).await.unwrap();
        let mut request =
            format!("GET /api/projects/{p}/changes{query} HTTP/1.0\r\nHost: test\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut lines = BufReader::new(stream).lines();
        let status = lines.next_line().await.unwrap().unwrap();
        assert!(status.contains(" 200 "), "{status}");
        let mut content_type = String::new();
        loop {
            let header = lines.next_line().await.unwrap().unwrap();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-type: ") {
                content_type = v.to_string();
            }
        }
        assert_eq!(content_type, "text/event-stream");
        Self { lines }
    }

    async fn next(&mut self) -> Event {
        let (mut id, mut kind, mut data) = (None, String::from("message"), String::new());
        loop {
            let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("stream open");
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Event {
                    id,
                    kind,
                    data: serde_json::from_str(&data).unwrap(),
                };
            }
            if let Some(v) = line.strip_prefix("id: ") {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("event: ") {
                kind = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }

    /// The next event that is not a `saved` watermark.
    async fn next_edit(&mut self) -> Event {
        loop {
            let event = self.next().await;
            if event.kind != "saved" {
                return event;
            }
        }
    }
}

async fn edits(client: &mut WsClient, count: u64) -> u64 {
    let mut seq = 0;
    for n in 0..count {
        let ack = client
            .request(json!({"type":"update","id":"o1","patch":{"n":n}}))
            .await
            .unwrap();
        seq = ack["seq"].as_u64().unwrap();
    }
    seq
}

async fn editor(g: &TestGateway, p: &str) -> WsClient {
    let (mut client, _) = WsClient::join(&g.ws(p)).await.unwrap();
    let ack = client
        .request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(ack["seq"], 1, "{ack}");
    client
}

#[tokio::test]
async fn the_feed_replays_from_since_or_last_event_id_then_goes_live_with_saved_watermarks() {
    let redis = RedisServer::start();
    let (g1, g2) = (
        spawn_gateway(&redis.url()).await,
        spawn_gateway(&redis.url()).await,
    );
    let p = project("feed");
    let mut client = editor(&g2, &p).await;
    assert_eq!(edits(&mut client, 5).await, 6);

    let mut feed = Feed::open(&g1, &p, "?since=3", &[]).await;
    for seq in 4..=6 {
        let event = feed.next_edit().await;
        assert_eq!((event.id, event.kind.as_str()), (Some(seq), "updated"));
        assert_eq!(event.data["seq"], seq);
        assert_eq!(event.data["type"], "updated");
    }
    // Live, from the other gateway.
    edits(&mut client, 1).await;
    let live = feed.next_edit().await;
    assert_eq!((live.id, live.kind.as_str()), (Some(7), "updated"));

    // Last-Event-ID takes the place of since.
    let mut resumed = Feed::open(&g1, &p, "?since=0", &[("Last-Event-ID", "5")]).await;
    let ids: Vec<Option<u64>> = vec![resumed.next_edit().await.id, resumed.next_edit().await.id];
    assert_eq!(ids, [Some(6), Some(7)]);

    let saver = start_saver(&redis.url()).await;
    let saved = loop {
        let event = feed.next().await;
        if event.kind == "saved" && event.data["seq"] == 7 {
            break event;
        }
    };
    assert_eq!(
        (saved.id, saved.data.clone()),
        (None, json!({"type":"saved","seq":7}))
    );
    saver.cancel();
}

#[tokio::test]
async fn the_feed_from_beyond_the_journal_starts_with_a_snapshot() {
    let redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            journal_len: 10,
            ..Options::default()
        },
    )
    .await;
    let p = project("feed-beyond");
    let mut client = editor(&g, &p).await;
    let last = edits(&mut client, 250).await;

    let mut feed = Feed::open(&g, &p, "?since=1", &[]).await;
    let first = feed.next_edit().await;
    assert_eq!((first.id, first.kind.as_str()), (Some(last), "snapshot"));
    assert_eq!(first.data["seq"], last);
    assert_eq!(first.data["objects"][0]["n"], 249);
    edits(&mut client, 1).await;
    let live = feed.next_edit().await;
    assert_eq!((live.id, live.kind.as_str()), (Some(last + 1), "updated"));

    // No since at all: the state as it is now, then live.
    let mut fresh = Feed::open(&g, &p, "", &[]).await;
    assert_eq!(fresh.next_edit().await.kind, "snapshot");
}

#[tokio::test]
async fn a_feed_with_a_bad_since_or_project_is_refused() {
    let redis = RedisServer::start();
    let g = spawn_gateway(&redis.url()).await;
    let (status, _) = canvas_testkit::http_get(&g.http("/api/projects/p1/changes?since=x"), &[])
        .await
        .unwrap();
    assert_eq!(status, 400);
    let (status, _) = canvas_testkit::http_get(&g.http("/api/projects/bad%20id/changes"), &[])
        .await
        .unwrap();
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_viewer_may_follow_the_feed_and_a_stranger_may_not() {
    let redis = RedisServer::start();
    let g = spawn_gateway_with(
        &redis.url(),
        Options {
            auth: common::jwt_auth(),
            ..Options::default()
        },
    )
    .await;
    let p = project("feed-roles");
    let viewer = common::token("vic", json!({ p.clone(): "viewer" }));
    let editor = common::token("eve", json!({ p.clone(): "editor" }));
    let stranger = common::token("sam", json!({ "elsewhere": "editor" }));
    let feed_status = |token: Option<String>| {
        let url = g.http(&format!("/api/projects/{p}/changes?since=0"));
        async move {
            let auth = token.map(|t| format!("Bearer {t}"));
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| vec![("Authorization", a)])
                .unwrap_or_default();
            // The stream stays open; the head is all this needs.
            let response = tokio::time::timeout(
                Duration::from_millis(1500),
                canvas_testkit::http_get(&url, &headers),
            )
            .await;
            match response {
                Ok(result) => result.unwrap().0,
                Err(_) => 200,
            }
        }
    };
    assert_eq!(feed_status(None).await, 401, "no token");
    assert_eq!(
        feed_status(Some(stranger)).await,
        403,
        "not in the token's projects"
    );

    let bearer = format!("Bearer {viewer}");
    let mut feed = Feed::open(&g, &p, "?since=0", &[("Authorization", &bearer)]).await;
    let url = format!("{}?token={editor}", g.ws(&p));
    let (mut writer, _) = WsClient::join(&url).await.unwrap();
    let ack = writer
        .request(json!({"type":"create","object":{"id":"seen","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    // A project no one has opened yet starts the feed with its (empty) snapshot.
    let mut event = feed.next_edit().await;
    if event.kind == "snapshot" {
        event = feed.next_edit().await;
    }
    assert_eq!(event.kind, "created");
    assert_eq!(event.data["object"]["id"], "seen");
    assert_eq!(event.data["by"], "eve");
}
