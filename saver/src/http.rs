//! The operator HTTP endpoints: `GET /metrics` (the contract's JSON, with the dirty figures read from the hot state
//! now), `GET /metrics/prometheus` (the same process's figures as Prometheus / OpenMetrics text; guarded by the
//! operator token like `/metrics`), `GET /healthz` (the process runs) and `GET /readyz` (Redis and the durable store answer; a missing table
//! is named in the 503 so that whoever deploys knows what to create).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use canvas_shared::durable::{DurableError, DurableStore};
use canvas_shared::hot::SaveQueue;
use serde_json::json;

use crate::metrics::{document, Metrics};
use crate::operator_token::{authorized, OperatorToken};
use crate::prometheus;

/// How long a readiness probe waits for each store.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the handlers share.
#[derive(Clone)]
pub(crate) struct HttpState {
    pub(crate) hot: Arc<dyn SaveQueue>,
    pub(crate) durable: Arc<dyn DurableStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) operator_token: Option<OperatorToken>,
}

pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/metrics/prometheus", get(prometheus_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// The 401 when an operator token is set and the request does not carry it.
fn refuse(state: &HttpState, headers: &HeaderMap) -> Option<Response> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorized(state.operator_token.as_ref(), header) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": "a valid operator token is required: Authorization: Bearer <SAVER_OPERATOR_TOKEN>"})),
        )
            .into_response(),
    )
}

async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&state, &headers) {
        return refused;
    }
    Json(document(&state.metrics, state.hot.as_ref()).await).into_response()
}

async fn prometheus_text(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse(&state, &headers) {
        return refused;
    }
    let metrics = &state.metrics;
    let body = prometheus::render(
        metrics.prometheus(),
        metrics.state(),
        metrics.interval_ms(),
        state.hot.as_ref(),
    )
    .await;
    ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], body).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let redis = match tokio::time::timeout(PROBE_TIMEOUT, state.hot.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("Redis unreachable: {e}")),
        Err(_) => Err("Redis did not answer in time".to_string()),
    };
    let dynamodb = match tokio::time::timeout(PROBE_TIMEOUT, state.durable.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(DurableError::TableMissing(message))) => Err(message.to_string()),
        Ok(Err(e)) => Err(format!("DynamoDB unreachable: {e}")),
        Err(_) => Err("DynamoDB did not answer in time".to_string()),
    };
    let status = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_string(),
        Err(e) => e.clone(),
    };
    let ready = redis.is_ok() && dynamodb.is_ok();
    let body = json!({
        "ready": ready,
        "redis": status(&redis),
        "dynamodb": status(&dynamodb),
        "saveLoop": state.metrics.state(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}
