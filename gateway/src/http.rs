//! The gateway's HTTP surface: the WebSocket upgrade, health and readiness, the read-only objects API and the
//! demo page. Handlers are thin: checks in contract order, then one call. The order is: project id (400), browser
//! Origin (403), token (401, or 403 when it grants no role on the project), then, for an upgrade only, the
//! connection limits per user and per IP (429).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::abuse::Admission;
use crate::admission::{admit, Admitted};
use crate::connection;
use crate::connection::socket::{UpgradeRejection as WebSocketUpgradeRejection, WebSocketUpgrade};
use crate::error::ApiError;
use crate::object_api::{self, WriteLimits};
use crate::objects_body;
use crate::replay::parse_since;
use crate::state::AppState;

/// Read buffer per WebSocket. Idle sockets are the common case and tungstenite zero-fills the whole buffer,
/// so it is small; it grows for a larger frame.
const READ_BUFFER_BYTES: usize = 512;
/// Frames queued for one socket are written together once this many bytes are buffered, or when its queue
/// is empty (the writer flushes then), whichever comes first.
const WRITE_BUFFER_BYTES: usize = 8 * 1024;

/// The gateway's routes. Connection counters live here, one set per router (one per gateway).
pub(crate) fn router(state: AppState) -> Router {
    let admission = std::sync::Arc::new(Admission::new(&state.tuning.abuse));
    let write_limits = std::sync::Arc::new(WriteLimits::new(&state.tuning.abuse));
    Router::new()
        .merge(object_api::routes())
        .route("/ws/projects/{project}", get(upgrade))
        .route("/api/projects/{project}/objects", get(objects))
        .route(
            "/api/projects/{project}/changes",
            get(crate::change_feed::changes),
        )
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics/prometheus", get(prometheus))
        .route(
            "/",
            get(|| async {
                page(
                    "text/html; charset=utf-8",
                    include_str!("../web/index.html"),
                )
            }),
        )
        .route(
            "/app.js",
            get(|| async {
                page(
                    "text/javascript; charset=utf-8",
                    include_str!("../web/app.js"),
                )
            }),
        )
        .route(
            "/style.css",
            get(|| async { page("text/css; charset=utf-8", include_str!("../web/style.css")) }),
        )
        .route("/client/{file}", get(client_module))
        .layer(Extension(admission))
        .layer(Extension(write_limits))
        .with_state(state)
}

/// The TCP peer's IP, when the server was started with connect info (see [`crate::serve`]).
pub(crate) struct PeerIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
        ))
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The JavaScript client library (`clients/js/src`), served as ES modules so the demo page imports it as is.
macro_rules! client_module {
    ($file:literal) => {
        ($file, include_str!(concat!("../../clients/js/src/", $file)))
    };
}
const CLIENT_MODULES: &[(&str, &str)] = &[
    client_module!("index.js"),
    client_module!("document.js"),
    client_module!("connection.js"),
    client_module!("outbox.js"),
    client_module!("merge-patch.js"),
    client_module!("backoff.js"),
    client_module!("errors.js"),
    client_module!("emitter.js"),
];

async fn client_module(Path(file): Path<String>) -> Response {
    match CLIENT_MODULES.iter().find(|(name, _)| *name == file) {
        Some((_, body)) => page("text/javascript; charset=utf-8", body),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn upgrade(
    State(state): State<AppState>,
    Extension(admission): Extension<std::sync::Arc<Admission>>,
    PeerIp(peer): PeerIp,
    Path(raw_project): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (project, identity) = match admit(&state, &admission, &raw_project, &headers, &query) {
        Ok(admitted) => admitted,
        Err(e) => {
            tracing::debug!(project = %raw_project, peer = ?peer, error = %e, "upgrade refused");
            return e.into_response();
        }
    };
    let since = match parse_since(query.get("since").map(String::as_str)) {
        Ok(since) => since,
        Err(e) => return e.into_response(),
    };
    if state.shutdown.is_cancelled() {
        return ApiError::Unavailable("gateway is shutting down".into()).into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    // Counted from here until the socket task ends (or the upgrade fails): the guard goes with it.
    let user = state.auth.enabled().then_some(identity.user.as_str());
    let ip = admission.client_ip(peer, &headers);
    let guard = match admission.connections.acquire(user, ip) {
        Ok(guard) => guard,
        Err(e) => {
            tracing::info!(%project, user = %identity.user, ip = ?ip, error = %e, "connection limit reached");
            return e.into_response();
        }
    };
    // Shutdown waits for this socket from here, so one upgraded while the gateway stops is closed too.
    let tracked = state.connections.token();
    let max = state.limits.max_frame_bytes;
    ws.max_frame_size(max)
        .max_message_size(max)
        // tungstenite's defaults reserve 128 KiB per socket for reading; idle sockets should cost little.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        // A big snapshot goes out a fragment at a time (connection/socket.rs), so a few frames' room is enough.
        .max_write_buffer_size(max.saturating_mul(4))
        .on_upgrade(move |socket| {
            connection::run(state, socket, project, identity, since, guard, tracked)
        })
}

async fn objects(State(state): State<AppState>, Admitted { project, .. }: Admitted) -> Response {
    match state.loader.shared_snapshot(&project).await {
        Ok(snapshot) => (
            [(header::CONTENT_TYPE, "application/json")],
            objects_body::body(project.as_str(), snapshot),
        )
            .into_response(),
        Err(r) => ApiError::Unavailable(r.message).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.hot.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => ApiError::HotState(e).into_response(),
    }
}

/// Prometheus text exposition of this gateway's figures.
async fn prometheus(State(state): State<AppState>) -> Response {
    state
        .metrics
        .record_update_merges(state.hot.update_merges());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
