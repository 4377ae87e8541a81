//! One client's WebSocket connection: a [`reader`] that turns frames into edits and replies, and a [`writer`]
//! that sends the connection's [`outbox`] in `seq` order ([`seq_order`]). Either ending ends the connection;
//! SIGTERM closes it with 1001, the expiry of the connection's token with 1008. [`handshakes`] bounds the
//! sockets still in their HTTP handshake.

pub(crate) mod handshakes;
pub(crate) mod outbox;
mod reader;
pub(crate) mod seq_order;
pub(crate) mod socket;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use canvas_shared::protocol::ServerMessage;
use canvas_shared::ProjectId;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;

use self::outbox::{outbox, Outbound};
use self::socket::WebSocket;
use self::writer::Writer;
use crate::abuse::ConnectionGuard;
use crate::auth::Identity;
use crate::hub::Member;
use crate::state::AppState;

/// Close codes used by the gateway.
pub(crate) mod close_code {
    pub(crate) const GOING_AWAY: u16 = 1001;
    pub(crate) const POLICY: u16 = 1008;
    pub(crate) const TOO_BIG: u16 = 1009;
    pub(crate) const TRY_AGAIN_LATER: u16 = 1013;
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

/// Runs one upgraded socket until it closes. `_guard` keeps the connection counted against its user's and
/// IP's limits until then, `_tracked` keeps shutdown waiting for it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    state: AppState,
    socket: WebSocket,
    project: ProjectId,
    identity: Identity,
    since: Option<u64>,
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
    // Keeps the project from being evicted while this client is in it.
    let _occupant = state.occupancy.enter(&conn.project).await;
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
    // The first thing a client gets is its snapshot, or the edits it missed since `since`.
    let _ = tx.try_send(Outbound::Resync {
        req_id: None,
        since,
    });
    let mut used_presence = false;
    tokio::select! {
        _ = Writer::new(&state, &conn, sink, &kill, expiry).run(rx) => {}
        _ = reader::read_loop(&state, &conn, early, stream, &tx, expiry, &mut used_presence) => {}
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

pub(super) async fn sleep_until(deadline: Option<Instant>) {
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
