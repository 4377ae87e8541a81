//! The gateway's HTTP surface: the WebSocket upgrade, health and readiness, the read-only objects API and the
//! demo page. Handlers are thin: checks in contract order (project id, then token), then one call.

use std::collections::HashMap;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use canvas_shared::ProjectId;

use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::AppState;
use crate::{loader, socket};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws/projects/{project}", get(upgrade))
        .route("/api/projects/{project}/objects", get(objects))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
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
        .with_state(state)
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

/// Checks the project id, then the credential.
fn admit(
    state: &AppState,
    raw_project: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(ProjectId, Identity), ApiError> {
    let project = ProjectId::parse(raw_project)
        .map_err(|e| ApiError::BadRequest(format!("invalid project id: {e}")))?;
    let identity =
        state
            .auth
            .authorize(headers, query.get("token").map(String::as_str), &project)?;
    Ok((project, identity))
}

async fn upgrade(
    State(state): State<AppState>,
    Path(raw_project): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (project, identity) = match admit(&state, &raw_project, &headers, &query) {
        Ok(admitted) => admitted,
        Err(e) => return e.into_response(),
    };
    if state.shutdown.is_cancelled() {
        return ApiError::Unavailable("gateway is shutting down".into()).into_response();
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let max = state.limits.max_frame_bytes;
    ws.max_frame_size(max)
        .max_message_size(max)
        .on_upgrade(move |socket| socket::run(state, socket, project, identity))
}

async fn objects(
    State(state): State<AppState>,
    Path(raw_project): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let (project, _identity) = match admit(&state, &raw_project, &headers, &query) {
        Ok(admitted) => admitted,
        Err(e) => return e.into_response(),
    };
    match loader::snapshot(&state, &project).await {
        Ok(snapshot) => {
            // Objects are stored as JSON text: splice them in rather than re-encoding.
            let body = format!(
                "{{\"projectId\":{},\"seq\":{},\"objects\":[{}]}}",
                canvas_shared::protocol::json_string(project.as_str()),
                snapshot.seq,
                snapshot.objects.join(",")
            );
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(r) => ApiError::Unavailable(r.message).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.hot.ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => ApiError::Unavailable(format!("redis unreachable: {e}")).into_response(),
    }
}
