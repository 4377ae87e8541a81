//! One client's WebSocket: a reader that turns frames into edits and replies, and a writer that sends the
//! connection's queue in `seq` order. Either ending ends the connection; SIGTERM closes it with 1001, the
//! expiry of the connection's token with 1008. Edits (and resyncs) pass a per-connection token bucket first.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use canvas_shared::protocol::{parse_client_frame, snapshot_frame, ClientMessage, ServerMessage};
use canvas_shared::{ErrorCode, ProjectId};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use crate::auth::{Identity, Role};
use crate::edit;
use crate::hub::Member;
use crate::limits::{ConnectionGuard, TokenBucket};
use crate::outbound::{Outbound, Sequencer};
use crate::outbox::{outbox, OutboxReceiver, OutboxSender};
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

/// When a credential that expires at `expires_at` (epoch seconds) stops being accepted, on the runtime's clock.
fn expiry_instant(expires_at: Option<i64>) -> Option<Instant> {
    let expires_at = expires_at?;
    let left_ms = expires_at
        .saturating_mul(1000)
        .saturating_sub(canvas_shared::time::now_ms());
    let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
    // Far-future expiries are capped at 30 years (tokio's own "far future").
    Some(Instant::now() + left.min(Duration::from_secs(30 * 365 * 24 * 3600)))
}

/// Per-connection rate limits.
struct Throttle {
    presence: PresenceLimiter,
    edits: TokenBucket,
    edits_per_second: f64,
    edit_burst: u32,
}

impl Throttle {
    fn new(state: &AppState) -> Self {
        let abuse = &state.tuning.abuse;
        Self {
            presence: PresenceLimiter::default(),
            edits: TokenBucket::new(abuse.edits_per_second, abuse.edit_burst),
            edits_per_second: abuse.edits_per_second,
            edit_burst: abuse.edit_burst,
        }
    }

    /// None if the edit may go ahead, else the `rate_limited` reply.
    fn edit(&mut self, req_id: Option<&str>, what: &str) -> Option<Outbound> {
        if self.edits.allow(Instant::now()) {
            return None;
        }
        let message = format!(
            "too many edits: this connection may send {} edits or resyncs per second (bursts of {}); \
             this {what} was not applied, retry later",
            self.edits_per_second, self.edit_burst
        );
        Some(error_reply(req_id, ErrorCode::RateLimited, &message))
    }
}

/// Runs one upgraded socket until it closes. `_guard` keeps the connection counted against its user's and
/// IP's limits until then, `_tracked` keeps shutdown waiting for it.
pub async fn run(
    state: AppState,
    socket: WebSocket,
    project: ProjectId,
    identity: Identity,
    _guard: ConnectionGuard,
    _tracked: TaskTrackerToken,
) {
    let expiry = expiry_instant(identity.expires_at);
    let conn = Conn {
        id: Arc::from(uuid::Uuid::new_v4().simple().to_string()),
        project,
        identity,
    };
    state.metrics.connections.inc();
    state.metrics.connections_opened.inc();
    let _counted = scopeguard(|| {
        state.metrics.connections.dec();
    });
    let (sink, mut stream) = socket.split();
    // Read once right away, before anything that may wait (joining can wait on Redis): the socket's first read
    // frees the HTTP handshake's buffer and its handshake slot (`handshakes.rs`), which must not depend on
    // Redis. A frame that is already there is handled first by the reader.
    let early = match futures_util::poll!(stream.next()) {
        std::task::Poll::Ready(item) => Some(item),
        std::task::Poll::Pending => None,
    };
    let (tx, rx) = outbox(state.tuning.outgoing_queue.max(16));
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
    let mut used_presence = false;
    tokio::select! {
        _ = write_loop(&state, &conn, sink, rx, &kill, expiry) => {}
        _ = read_loop(&state, &conn, early, stream, &tx, &mut used_presence) => {}
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

/// What the socket yields: a message, an error, or None once it has ended.
type Received = Option<Result<Message, axum::Error>>;

async fn read_loop(
    state: &AppState,
    conn: &Conn,
    mut early: Option<Received>,
    mut stream: SplitStream<WebSocket>,
    tx: &OutboxSender,
    used_presence: &mut bool,
) {
    let mut throttle = Throttle::new(state);
    loop {
        let received = match early.take() {
            Some(item) => item,
            None => stream.next().await,
        };
        let Some(received) = received else { return };
        let text = match received {
            Ok(Message::Text(text)) => text,
            Ok(Message::Binary(_)) => {
                let reply = error_reply(
                    None,
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text",
                );
                if tx.send(reply).await.is_err() {
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
        let started = std::time::Instant::now();
        let span = tracing::info_span!("ws_frame", project = %conn.project, conn = %conn.id, bytes = text.len());
        // Boxed: the future exists only while a frame is handled, and kept inline it would make every idle
        // connection's task larger.
        let reply = Box::pin(
            handle_text(state, conn, text.as_str(), &mut throttle, used_presence).instrument(span),
        )
        .await;
        match &reply {
            Some(Outbound::Ack { .. }) => {
                state
                    .metrics
                    .ack_latency
                    .observe(started.elapsed().as_secs_f64());
            }
            Some(Outbound::Error { code, .. }) => {
                state
                    .metrics
                    .ack_latency
                    .observe(started.elapsed().as_secs_f64());
                state.metrics.record_rejected(code.as_str());
            }
            _ => {}
        }
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
    throttle: &mut Throttle,
    used_presence: &mut bool,
) -> Option<Outbound> {
    let frame = match parse_client_frame(text, &state.limits) {
        Ok(frame) => frame,
        Err(e) => {
            let r = &e.rejection;
            return Some(error_reply(e.req_id.as_deref(), r.code, &r.message));
        }
    };
    let req_id = frame.req_id.as_deref();
    match frame.message {
        ClientMessage::Ping => Some(Outbound::Reply(ServerMessage::Pong { req_id }.to_text())),
        ClientMessage::Resync => throttle.edit(req_id, "resync").or_else(|| {
            Some(Outbound::Resync {
                req_id: frame.req_id.clone(),
            })
        }),
        ClientMessage::Presence { x, y, name } => {
            if throttle.presence.allow(Instant::now()) {
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
                return Some(error_reply(
                    req_id,
                    ErrorCode::Forbidden,
                    "viewers cannot edit this project",
                ));
            }
            if let Some(refused) = throttle.edit(req_id, "edit") {
                return Some(refused);
            }
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
                Err(r) => Some(error_reply(req_id, r.code, &r.message)),
            }
        }
    }
}

fn error_reply(req_id: Option<&str>, code: ErrorCode, message: &str) -> Outbound {
    Outbound::Error {
        code,
        frame: error_frame(req_id, code, message),
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
    mut rx: OutboxReceiver,
    kill: &CancellationToken,
    expiry: Option<Instant>,
) {
    let mut seq = Sequencer::default();
    let mut snapshot_sent = false;
    // Frames fed to the sink but not yet flushed.
    let mut unflushed = false;
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
            _ = sleep_until(expiry) => {
                tracing::info!(project = %conn.project, conn = %conn.id, user = %conn.identity.user, "token expired; closing");
                close(&mut sink, close_code::POLICY, "token expired; reconnect with a fresh token").await;
                return;
            }
            _ = sleep_until(deadline) => {
                for frame in seq.overdue(Instant::now()) {
                    if !unless_stopped(state, kill, send(&mut sink, frame.into())).await {
                        return stopped(&mut sink, kill).await;
                    }
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
                .into_iter()
                .map(Utf8Bytes::from)
                .collect(),
            Outbound::Echo { seq: s } => seq
                .on_echo(s, Instant::now())
                .into_iter()
                .map(Utf8Bytes::from)
                .collect(),
            Outbound::Ack { seq: s, frame } => seq
                .on_ack(s, frame, Instant::now())
                .into_iter()
                .map(Utf8Bytes::from)
                .collect(),
            Outbound::Reply(text) | Outbound::Error { frame: text, .. } => vec![text.into()],
            Outbound::Close { code, reason } => {
                close(&mut sink, code, reason).await;
                return;
            }
            Outbound::Resync { req_id } => {
                match Box::pin(state.loader.snapshot(&conn.project)).await {
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
                        let error = send(&mut sink, error_frame(None, r.code, &r.message).into());
                        if !unless_stopped(state, kill, error).await {
                            return stopped(&mut sink, kill).await;
                        }
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
                }
            }
        };
        unflushed |= !frames.is_empty();
        for frame in frames {
            if !unless_stopped(state, kill, sink.feed(Message::Text(frame))).await {
                return stopped(&mut sink, kill).await;
            }
        }
        // Everything queued for this socket goes out in one write: flushed only once the queue is drained
        // (or the write buffer fills), so a burst of broadcasts costs one syscall, not one per frame.
        if unflushed && rx.is_empty() {
            unflushed = false;
            if !unless_stopped(state, kill, sink.flush()).await {
                return stopped(&mut sink, kill).await;
            }
        }
    }
}

/// Runs a write unless the connection is dropped as too slow or the gateway shuts down first. A client that
/// stops reading blocks the write; the hub then marks it slow, and the writer must notice. True if it was written.
async fn unless_stopped(
    state: &AppState,
    kill: &CancellationToken,
    write: impl std::future::Future<Output = Result<(), axum::Error>>,
) -> bool {
    tokio::select! {
        written = write => written.is_ok(),
        _ = kill.cancelled() => false,
        _ = state.shutdown.cancelled() => false,
    }
}

/// After a write did not complete: a slow client is dropped without ceremony (it is not reading); otherwise
/// the gateway is shutting down (or the socket broke) and the client is told to go away.
async fn stopped(sink: &mut SplitSink<WebSocket, Message>, kill: &CancellationToken) {
    if !kill.is_cancelled() {
        close(sink, close_code::GOING_AWAY, "server shutting down").await;
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

/// Runs `f` when dropped (so a gauge is decremented however the connection ends).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expiry_instants_cover_past_near_and_absurd_expiries() {
        assert!(expiry_instant(None).is_none());
        let now = Instant::now();
        let past = expiry_instant(Some(0)).unwrap();
        assert!(past <= Instant::now());
        let soon = expiry_instant(Some(canvas_shared::time::now_ms() / 1000 + 10)).unwrap();
        assert!(soon > now + Duration::from_secs(8) && soon < now + Duration::from_secs(12));
        // The largest `exp` a token can carry neither overflows nor breaks the timer.
        let far = expiry_instant(Some(i64::MAX)).unwrap();
        let slept = tokio::time::timeout(Duration::from_millis(10), sleep_until(Some(far))).await;
        assert!(slept.is_err());
        let far = expiry_instant(Some(i64::MIN)).unwrap();
        assert!(far <= Instant::now());
    }
}
