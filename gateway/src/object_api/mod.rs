//! The Object API: one object read, created, patched or deleted over plain HTTP, for integrations that do not
//! hold a socket. A write is an edit like a socket's: it passes the same validation, is applied by the same atomic
//! hot-state call (next `seq`, dirty mark, broadcast to every gateway's sockets with `by` = the token's `sub`), and
//! is saved by the saver. Handlers are thin: admission (project id, Origin, token), role, rate, idempotency, then
//! one edit; every refusal becomes a status and a JSON body in [`error`].

mod error;
mod write_limits;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use canvas_shared::hot::{Applied, IdempotencyClaim};
use canvas_shared::object::{Edit, NewObject, Patch};
use canvas_shared::protocol::json_string;
use canvas_shared::{ErrorCode, ObjectId, ProjectId, Rejection};
use serde_json::Value;

use crate::abuse::Admission;
use crate::admission::admit;
use crate::auth::{Identity, Role};
use crate::edit::{self, EditFailure};
use crate::state::AppState;
use error::ObjectApiError;
pub(crate) use write_limits::WriteLimits;

/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 64;
/// How long a write's response is given again to a repeat with its `Idempotency-Key`.
const IDEMPOTENCY_TTL_MS: u64 = 10 * 60 * 1000;
/// The `origin` of HTTP writes: no socket has this id, so every socket of the project gets the broadcast.
const HTTP_ORIGIN: &str = "http";
const JSON: &str = "application/json";
const MERGE_PATCH: &str = "application/merge-patch+json";

/// The Object API's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/projects/{project}/objects/{id}",
            get(read_object).patch(patch_object).delete(delete_object),
        )
        .route(
            "/api/projects/{project}/objects",
            axum::routing::post(create_object),
        )
}

/// What every request carries besides its body.
struct Request {
    state: AppState,
    admission: Arc<Admission>,
    limits: Arc<WriteLimits>,
    raw_project: String,
    query: HashMap<String, String>,
    headers: HeaderMap,
}

/// Every Object API route extracts the same parts the same way.
impl FromRequestParts<AppState> for Request {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Extension(admission) = Extension::<Arc<Admission>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Extension(limits) = Extension::<Arc<WriteLimits>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(mut path) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(query) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Self {
            state: state.clone(),
            admission,
            limits,
            raw_project: path.remove("project").unwrap_or_default(),
            query,
            headers: parts.headers.clone(),
        })
    }
}

impl Request {
    fn admit(&self) -> Result<(ProjectId, Identity), ObjectApiError> {
        Ok(admit(
            &self.state,
            &self.admission,
            &self.raw_project,
            &self.headers,
            &self.query,
        )?)
    }
}

fn object_id(raw: &str) -> Result<ObjectId, ObjectApiError> {
    ObjectId::parse(raw).map_err(|e| ObjectApiError::bad_request(format!("invalid object id: {e}")))
}

async fn read_object(request: Request, Path((_, raw_id)): Path<(String, String)>) -> Response {
    match read(&request, &raw_id).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn read(request: &Request, raw_id: &str) -> Result<Response, ObjectApiError> {
    let (project, _identity) = request.admit()?;
    let id = object_id(raw_id)?;
    let snapshot = request.state.loader.snapshot(&project).await?;
    let object = snapshot
        .objects
        .into_iter()
        .find_map(|text| {
            let value: Value = serde_json::from_str(&text).ok()?;
            (value.get("id").and_then(Value::as_str) == Some(id.as_str())).then_some((text, value))
        })
        .ok_or_else(|| {
            Rejection::new(ErrorCode::NotFound, format!("object {id} does not exist"))
        })?;
    let (text, value) = object;
    let version = value.get("version").and_then(Value::as_u64).unwrap_or(0);
    Ok((
        [
            (header::CONTENT_TYPE, JSON.to_string()),
            (header::ETAG, format!("\"{version}\"")),
        ],
        text,
    )
        .into_response())
}

async fn create_object(request: Request, body: Body) -> Response {
    write(request, body, Write::Create).await
}

async fn patch_object(
    request: Request,
    Path((_, raw_id)): Path<(String, String)>,
    body: Body,
) -> Response {
    write(request, body, Write::Patch(raw_id)).await
}

async fn delete_object(request: Request, Path((_, raw_id)): Path<(String, String)>) -> Response {
    write(request, Body::empty(), Write::Delete(raw_id)).await
}

/// Which write, with the object id from the path.
enum Write {
    Create,
    Patch(String),
    Delete(String),
}

/// A response as the idempotency memory keeps it: status and JSON body.
struct Answer {
    status: StatusCode,
    body: String,
}

impl Answer {
    fn encode(&self) -> String {
        format!("{}\n{}", self.status.as_u16(), self.body)
    }

    fn decode(stored: &str) -> Option<Self> {
        let (status, body) = stored.split_once('\n')?;
        Some(Self {
            status: StatusCode::from_u16(status.parse().ok()?).ok()?,
            body: body.to_string(),
        })
    }

    fn into_response(self) -> Response {
        (self.status, [(header::CONTENT_TYPE, JSON)], self.body).into_response()
    }
}

impl From<ObjectApiError> for Answer {
    fn from(error: ObjectApiError) -> Self {
        Self {
            status: error.status(),
            body: error.body(),
        }
    }
}

async fn write(request: Request, body: Body, write: Write) -> Response {
    match admit_write(&request).await {
        Ok((project, identity)) => {
            let answer = match prepare(&request, body, &write).await {
                Ok(edit) => apply_once(&request, &project, &identity, &edit).await,
                Err(e) => e.into(),
            };
            answer.into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Admission, role and rate: everything that refuses a write before its body is read.
async fn admit_write(request: &Request) -> Result<(ProjectId, Identity), ObjectApiError> {
    let (project, identity) = request.admit()?;
    if identity.role == Role::Viewer {
        return Err(
            Rejection::new(ErrorCode::Forbidden, "viewers cannot edit this project").into(),
        );
    }
    request.limits.allow(&identity.user)?;
    if request.state.shutdown.is_cancelled() {
        return Err(Rejection::new(ErrorCode::Unavailable, "gateway is shutting down").into());
    }
    Ok((project, identity))
}

/// The validated edit: the same door a socket frame passes.
async fn prepare(request: &Request, body: Body, write: &Write) -> Result<Edit, ObjectApiError> {
    let limits = &request.state.limits;
    let edit = match write {
        Write::Create => Edit::Create(NewObject::from_json(
            read_json(request, body).await?,
            limits,
        )?),
        Write::Patch(raw_id) => {
            let id = object_id(raw_id)?;
            check_patch_content_type(&request.headers)?;
            let patch = Patch::from_json(&id, read_json(request, body).await?, limits)?;
            Edit::Update {
                id,
                patch,
                if_version: if_match(&request.headers)?,
            }
        }
        Write::Delete(raw_id) => Edit::Delete {
            id: object_id(raw_id)?,
            if_version: if_match(&request.headers)?,
        },
    };
    Ok(edit)
}

/// Applies the edit, unless its `Idempotency-Key` was used already: then the first answer is given again.
async fn apply_once(
    request: &Request,
    project: &ProjectId,
    identity: &Identity,
    edit: &Edit,
) -> Answer {
    let key = match idempotency_key(&request.headers) {
        Ok(key) => key,
        Err(e) => return e.into(),
    };
    let hot = &request.state.hot;
    let user = identity.user.as_str();
    if let Some(key) = key {
        match hot
            .claim_idempotency(project, user, key, IDEMPOTENCY_TTL_MS)
            .await
        {
            Ok(IdempotencyClaim::Claimed) => {}
            Ok(IdempotencyClaim::Done(stored)) => {
                if let Some(answer) = Answer::decode(&stored) {
                    return answer;
                }
            }
            Ok(IdempotencyClaim::InFlight) => {
                return ObjectApiError::from(Rejection::new(
                    ErrorCode::Conflict,
                    "a request with this Idempotency-Key is still being handled; retry it later",
                ))
                .into()
            }
            Err(e) => return ObjectApiError::from(e.to_rejection()).into(),
        }
    }
    let outcome = edit::apply(&request.state, project, edit, user, HTTP_ORIGIN).await;
    // A write that failed for want of the shared state changed nothing: its key stays free for the retry.
    // A write whose reply was lost may have been applied: its key keeps that answer, so a retry never applies it
    // twice.
    let lasting =
        !matches!(&outcome, Err(EditFailure::Refused(r)) if r.code == ErrorCode::Unavailable);
    let answer = match outcome {
        Ok(applied) => applied_answer(edit, &applied),
        Err(EditFailure::Refused(r)) => ObjectApiError::from(r).into(),
        Err(EditFailure::OutcomeUnknown) => ObjectApiError::from(Rejection::new(
            ErrorCode::Unavailable,
            "the shared state did not answer in time and the write may have been applied; read the object \
             before writing it again",
        ))
        .into(),
    };
    if let Some(key) = key {
        let settled = lasting.then(|| answer.encode());
        if let Err(e) = hot
            .settle_idempotency(project, user, key, settled.as_deref(), IDEMPOTENCY_TTL_MS)
            .await
        {
            tracing::warn!(%project, error = %e, "idempotency key not settled; a repeat will wait for it to expire");
        }
    }
    answer
}

fn applied_answer(edit: &Edit, applied: &Applied) -> Answer {
    match (edit, &applied.object) {
        (Edit::Create(_), Some(object)) => Answer {
            status: StatusCode::CREATED,
            body: format!("{{\"object\":{object},\"seq\":{}}}", applied.seq),
        },
        (Edit::Update { .. }, Some(object)) => Answer {
            status: StatusCode::OK,
            body: format!("{{\"object\":{object},\"seq\":{}}}", applied.seq),
        },
        _ => Answer {
            status: StatusCode::OK,
            body: format!(
                "{{\"id\":{},\"seq\":{}}}",
                json_string(applied.id.as_str()),
                applied.seq
            ),
        },
    }
}

/// The body as JSON, at most a socket frame's size.
async fn read_json(request: &Request, body: Body) -> Result<Value, ObjectApiError> {
    let max = request.state.limits.max_frame_bytes;
    let too_large = || {
        ObjectApiError::from(Rejection::new(
            ErrorCode::TooLarge,
            format!("the body is larger than {max} bytes"),
        ))
    };
    let declared = request
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    // Past the limit the body stops being read; any other failure means the client is gone anyway.
    let bytes = to_bytes(body, max).await.map_err(|_| too_large())?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ObjectApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn check_patch_content_type(headers: &HeaderMap) -> Result<(), ObjectApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match content_type.as_deref() {
        None | Some(JSON) | Some(MERGE_PATCH) => Ok(()),
        Some(other) => Err(ObjectApiError::bad_request(format!(
            "a patch is {MERGE_PATCH} or {JSON}, not {other}"
        ))),
    }
}

/// The version `If-Match: "<version>"` requires; `*` (or no header) requires none.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ObjectApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or_default().trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .and_then(|v| v.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ObjectApiError::bad_request(format!(
                "If-Match must be an object's ETag, a version in quotes such as \"3\"; got {value:?}"
            ))
        })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ObjectApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN => Ok(Some(key)),
        _ => Err(ObjectApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"
        ))),
    }
}
