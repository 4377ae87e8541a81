//! A connection's reader: turns the client's frames into edits, presence and replies, and queues the replies
//! for the writer. Edits and resyncs pass a per-connection token bucket first.

use super::socket::{Message, SocketError, WebSocket};
use canvas_shared::hot::OUTCOME_UNKNOWN_MESSAGE;
use canvas_shared::protocol::{parse_client_frame, ClientMessage, ServerMessage};
use canvas_shared::{ErrorCode, Rejection};
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

use super::close_code;
use super::outbox::{Outbound, OutboxSender};
use super::Conn;
use crate::abuse::TokenBucket;
use crate::auth::Role;
use crate::edit::{self, EditFailure};
use crate::presence::PresenceLimiter;
use crate::state::AppState;

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

/// What the socket yields: a message, an error, or None once it has ended.
pub(super) type Received = Option<Result<Message, SocketError>>;

pub(super) async fn read_loop(
    state: &AppState,
    conn: &Conn,
    mut early: Option<Received>,
    mut stream: SplitStream<WebSocket>,
    tx: &OutboxSender,
    expiry: Option<Instant>,
    used_presence: &mut bool,
) {
    let mut throttle = Throttle::new(state);
    loop {
        let received = match early.take() {
            Some(item) => item,
            None => stream.next().await,
        };
        let Some(received) = received else { return };
        if expiry.is_some_and(|at| Instant::now() >= at) {
            // The token has expired: nothing more from this client is handled. The writer closes the connection
            // with 1008 (even when the client stopped reading and a write is blocked).
            std::future::pending::<()>().await;
        }
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
                if exceeds_frame_limit(e) {
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
        if let Some(Outbound::Ack { .. } | Outbound::Error { .. }) = &reply {
            state
                .metrics
                .reply_latency
                .observe(started.elapsed().as_secs_f64());
        }
        if let Some(Outbound::Error { code, .. }) = &reply {
            state.metrics.record_rejected(code.as_str());
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
        ClientMessage::Resync { since } => throttle.edit(req_id, "resync").or_else(|| {
            Some(Outbound::Resync {
                req_id: frame.req_id.clone(),
                since,
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
                Err(EditFailure::Refused(r)) => Some(rejection_reply(req_id, &r)),
                Err(EditFailure::OutcomeUnknown) => Some(Outbound::UnknownOutcome {
                    frame: ServerMessage::UnknownOutcome {
                        req_id,
                        message: OUTCOME_UNKNOWN_MESSAGE,
                    }
                    .to_text(),
                }),
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

/// The error reply to a refused edit, with the object's current version when a condition did not match.
fn rejection_reply(req_id: Option<&str>, rejection: &Rejection) -> Outbound {
    Outbound::Error {
        code: rejection.code,
        frame: ServerMessage::Error {
            req_id,
            code: rejection.code,
            message: &rejection.message,
            version: rejection.current_version,
        }
        .to_text(),
    }
}

pub(super) fn error_frame(req_id: Option<&str>, code: ErrorCode, message: &str) -> String {
    ServerMessage::Error {
        req_id,
        code,
        message,
        version: None,
    }
    .to_text()
}

/// True if the read failed because the client's frame or message is larger than the gateway accepts: the
/// socket's limits are tungstenite's, which reports them as a capacity error.
fn exceeds_frame_limit(error: SocketError) -> bool {
    matches!(error, SocketError::Capacity(_))
}
