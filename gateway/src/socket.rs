//! One client's WebSocket: a reader that turns frames into edits and replies, and a writer that sends the
//! connection's queue in `seq` order. Either ending ends the connection; SIGTERM closes it with 1001.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use canvas_shared::protocol::{parse_client_frame, snapshot_frame, ClientMessage, ServerMessage};
use canvas_shared::{ErrorCode, ProjectId};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::auth::{Identity, Role};
use crate::edit;
use crate::hub::Member;
use crate::loader;
use crate::outbound::{Outbound, Sequencer};
use crate::presence::PresenceLimiter;
use crate::state::AppState;

/// Close codes used by the gateway.
pub mod close_code {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A connection's identity within the gateway.
struct Conn {
    id: Arc<str>,
    project: ProjectId,
    identity: Identity,
}

/// Runs one upgraded socket until it closes.
pub async fn run(state: AppState, socket: WebSocket, project: ProjectId, identity: Identity) {
    let conn = Conn {
        id: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
        project,
        identity,
    };
    let (tx, rx) = mpsc::channel(state.tuning.outgoing_queue.max(16));
    let kill = CancellationToken::new();
    state
        .hub
        .join(
            &conn.project,
            Arc::clone(&conn.id),
            Member {
                tx: tx.clone(),
                kill: kill.clone(),
            },
        )
        .await;
    // The first thing a client gets is its snapshot.
    let _ = tx.try_send(Outbound::Resync { req_id: None });
    let (sink, stream) = socket.split();
    let mut used_presence = false;
    tokio::select! {
        _ = write_loop(&state, &conn, sink, rx, &kill) => {}
        _ = read_loop(&state, &conn, stream, &tx, &mut used_presence) => {}
    }
    state.hub.leave(&conn.project, &conn.id).await;
    if used_presence {
        let frame = ServerMessage::PresenceLeft {
            client_id: &conn.id,
        }
        .to_text();
        let _ = state
            .hot
            .publish_ephemeral(&conn.project, &conn.id, &frame)
            .await;
    }
}

async fn read_loop(
    state: &AppState,
    conn: &Conn,
    mut stream: SplitStream<WebSocket>,
    tx: &mpsc::Sender<Outbound>,
    used_presence: &mut bool,
) {
    let mut presence = PresenceLimiter::default();
    while let Some(received) = stream.next().await {
        let text = match received {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(_)) => {
                let reply = error_frame(
                    None,
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text",
                );
                if tx.send(Outbound::Reply(reply)).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Message::Close(_)) => return,
            Ok(_) => continue,
            Err(e) => {
                let text = e.to_string();
                if text.contains("Space limit exceeded") || text.contains("too long") {
                    let _ = tx
                        .send(Outbound::Close {
                            code: close_code::TOO_BIG,
                            reason: "frame too large",
                        })
                        .await;
                    // Let the writer send the close frame before the connection ends.
                    std::future::pending::<()>().await;
                }
                return;
            }
        };
        let reply = handle_text(state, conn, text.as_str(), tx, &mut presence, used_presence).await;
        if let Some(reply) = reply {
            if tx.send(reply).await.is_err() {
                return;
            }
        }
    }
}

async fn handle_text(
    state: &AppState,
    conn: &Conn,
    text: &str,
    tx: &mpsc::Sender<Outbound>,
    presence: &mut PresenceLimiter,
    used_presence: &mut bool,
) -> Option<Outbound> {
    let frame = match parse_client_frame(text, &state.limits) {
        Ok(frame) => frame,
        Err(e) => {
            let r = &e.rejection;
            return Some(Outbound::Reply(error_frame(
                e.req_id.as_deref(),
                r.code,
                &r.message,
            )));
        }
    };
    let req_id = frame.req_id.as_deref();
    match frame.message {
        ClientMessage::Ping => Some(Outbound::Reply(ServerMessage::Pong { req_id }.to_text())),
        ClientMessage::Resync => Some(Outbound::Resync {
            req_id: frame.req_id.clone(),
        }),
        ClientMessage::Presence { x, y, name } => {
            if presence.allow(Instant::now()) {
                *used_presence = true;
                let frame = ServerMessage::Presence {
                    client_id: &conn.id,
                    by: &conn.identity.user,
                    name: name.as_deref(),
                    x,
                    y,
                }
                .to_text();
                let _ = state
                    .hot
                    .publish_ephemeral(&conn.project, &conn.id, &frame)
                    .await;
            }
            None
        }
        ClientMessage::Edit(edit) => {
            if conn.identity.role == Role::Viewer {
                let reply = error_frame(
                    req_id,
                    ErrorCode::Forbidden,
                    "viewers cannot edit this project",
                );
                return Some(Outbound::Reply(reply));
            }
            let _ = tx;
            match edit::apply(state, &conn.project, &edit, &conn.identity.user, &conn.id).await {
                Ok(applied) => {
                    let ack = ServerMessage::Ack {
                        req_id,
                        id: &applied.id,
                        version: applied.version,
                        seq: applied.seq,
                    };
                    Some(Outbound::Ack {
                        seq: applied.seq,
                        frame: ack.to_text(),
                    })
                }
                Err(r) => Some(Outbound::Reply(error_frame(req_id, r.code, &r.message))),
            }
        }
    }
}

fn error_frame(req_id: Option<&str>, code: ErrorCode, message: &str) -> String {
    ServerMessage::Error {
        req_id,
        code,
        message,
    }
    .to_text()
}

/// How long a close frame may take to go out before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

async fn close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(frame)).await;
}

async fn write_loop(
    state: &AppState,
    conn: &Conn,
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Outbound>,
    kill: &CancellationToken,
) {
    let mut seq = Sequencer::default();
    let mut snapshot_sent = false;
    loop {
        let deadline = seq.next_deadline();
        let outbound = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => {
                close(&mut sink, close_code::GOING_AWAY, "server shutting down").await;
                return;
            }
            _ = kill.cancelled() => {
                tracing::info!(project = %conn.project, conn = %conn.id, "dropping slow client");
                close(&mut sink, close_code::POLICY, "client too slow: outgoing queue full").await;
                return;
            }
            _ = sleep_until(deadline) => {
                for ack in seq.overdue(Instant::now()) {
                    if send(&mut sink, ack.into()).await.is_err() { return; }
                }
                continue;
            }
            outbound = rx.recv() => match outbound {
                Some(o) => o,
                None => return,
            },
        };
        let frames: Vec<Utf8Bytes> = match outbound {
            Outbound::Broadcast { seq: s, frame } => seq
                .on_broadcast(s, frame)
                .map(|f| Utf8Bytes::from(&*f))
                .into_iter()
                .collect(),
            Outbound::Echo { seq: s } => seq.on_echo(s).map(Utf8Bytes::from).into_iter().collect(),
            Outbound::Ack { seq: s, frame } => seq
                .on_ack(s, frame, Instant::now())
                .map(Utf8Bytes::from)
                .into_iter()
                .collect(),
            Outbound::Reply(text) => vec![text.into()],
            Outbound::Close { code, reason } => {
                close(&mut sink, code, reason).await;
                return;
            }
            Outbound::Resync { req_id } => match loader::snapshot(state, &conn.project).await {
                Ok(snapshot) => {
                    state.hub.observe_seq(&conn.project, snapshot.seq);
                    let mut text = snapshot_frame(
                        conn.project.as_str(),
                        snapshot.seq,
                        Some(&conn.id),
                        &snapshot.objects,
                    );
                    if let Some(req_id) = req_id {
                        // Insert the reqId after the opening brace: {"reqId":"..",...
                        let id = canvas_shared::protocol::json_string(&req_id);
                        text.insert_str(1, &format!("\"reqId\":{id},"));
                    }
                    snapshot_sent = true;
                    let mut frames = vec![Utf8Bytes::from(text)];
                    frames.extend(
                        seq.on_snapshot(snapshot.seq)
                            .into_iter()
                            .map(Utf8Bytes::from),
                    );
                    frames
                }
                Err(r) if !snapshot_sent => {
                    let _ = send(&mut sink, error_frame(None, r.code, &r.message).into()).await;
                    close(
                        &mut sink,
                        close_code::TRY_AGAIN_LATER,
                        "state unavailable; reconnect later",
                    )
                    .await;
                    return;
                }
                Err(r) => {
                    let mut frames: Vec<Utf8Bytes> =
                        seq.release_all().into_iter().map(Utf8Bytes::from).collect();
                    frames.push(error_frame(req_id.as_deref(), r.code, &r.message).into());
                    frames
                }
            },
        };
        for frame in frames {
            // A client that stops reading blocks the send; the hub then marks it slow, and we must notice.
            let sent = tokio::select! {
                sent = send(&mut sink, frame) => sent.is_ok(),
                _ = kill.cancelled() => false,
                _ = state.shutdown.cancelled() => false,
            };
            if !sent {
                if !kill.is_cancelled() {
                    close(&mut sink, close_code::GOING_AWAY, "server shutting down").await;
                }
                return;
            }
        }
    }
}

async fn send(
    sink: &mut SplitSink<WebSocket, Message>,
    text: Utf8Bytes,
) -> Result<(), axum::Error> {
    sink.send(Message::Text(text)).await
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
