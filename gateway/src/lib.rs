//! The canvas gateway: a stateless WebSocket server. Clients connect to any gateway; each edit is applied
//! atomically to the shared hot state (see [`edit`]), published, fanned out by every gateway's [`hub`] to its
//! local clients, and acked to the sender.
//!
//! Map of the crate:
//! - [`http`]: routes (upgrade, health, the objects read, demo page); [`object_api`]: HTTP writes of single
//!   objects; [`change_feed`]: the Server-Sent Events feed of a project's edits; [`admission`]: the project id,
//!   Origin and credential checks every route makes; [`auth`]: who may do what.
//! - [`connection`]: one client connection (its reader, writer, outbox, the `seq` order of what it is sent, and
//!   the bound on open handshakes); [`replay`]: resuming from the journal instead of a snapshot.
//! - [`edit`]: where an edit is applied; [`loader`]: cold load of projects from the durable store;
//!   [`occupancy`]: which projects have clients here (they are never evicted).
//! - [`hub`]: local fan-out, pub/sub subscriptions and their repair; [`presence`]: cursor rate limits.
//! - [`abuse`]: abuse limits (edit rate, connections per user and per IP, Origin allow-list).

// Items are `pub` only where other crates use them; inside, `pub(crate)` and narrower.
#![warn(unreachable_pub)]

mod abuse;
mod admission;
pub mod auth;
mod change_feed;
pub mod config;
mod connection;
mod edit;
mod error;
mod http;
mod hub;
mod loader;
mod metrics;
mod object_api;
mod objects_body;
mod occupancy;
mod presence;
mod replay;
mod state;

use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use state::AppState;

/// Serves until `state.shutdown` is cancelled, then closes every socket with 1001 and waits for them (at most
/// `grace`) before returning.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    serve_with(listener, state, axum::Router::new()).await
}

/// [`serve`], with more routes beside the gateway's (the one-process dev mode adds the saver's).
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    extra: axum::Router,
) -> std::io::Result<()> {
    let grace = Duration::from_millis(state.tuning.shutdown_grace_ms);
    let shutdown = state.shutdown.clone();
    let connections = state.connections.clone();
    let max_pending_handshakes = state.tuning.max_pending_handshakes;
    let app = http::router(state).merge(extra);
    // The peer address feeds the per-IP connection limit.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Small frames must leave at once: without TCP_NODELAY an ack or broadcast can sit behind Nagle's
    // algorithm and the peer's delayed ACK for tens of milliseconds.
    let listener =
        connection::handshakes::HandshakeLimitedListener::new(listener, max_pending_handshakes)
            .tap_io(|conn| {
                let _ = conn.stream().set_nodelay(true);
            });
    let server =
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let server = tokio::spawn(async move { server.await });
    shutdown.cancelled().await;
    // Sockets see the same token and close themselves; wait for them, within the grace period.
    let deadline = tokio::time::Instant::now() + grace;
    let closed = canvas_shared::shutdown::drain(&connections, grace).await;
    if !closed {
        tracing::warn!("grace period over with connections still open; exiting");
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    match tokio::time::timeout(remaining, server).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => {
            if closed {
                tracing::warn!("grace period over with the server still stopping; exiting");
            }
            Ok(())
        }
    }
}
