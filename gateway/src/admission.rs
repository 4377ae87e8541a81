//! The checks every request meets before it reaches a project, socket and HTTP alike, in the documented order:
//! the project id, then the browser Origin, then the credential. One place, so that the upgrade, the objects read
//! and the Object API cannot drift apart.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use canvas_shared::ProjectId;

use crate::abuse::Admission;
use crate::auth::Identity;
use crate::error::ApiError;
use crate::state::AppState;

/// Checks the project id, then the browser origin, then the credential.
pub(crate) fn admit(
    state: &AppState,
    admission: &Admission,
    raw_project: &str,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(ProjectId, Identity), ApiError> {
    let project = ProjectId::parse(raw_project)?;
    admission.origins.check(headers)?;
    let identity =
        state
            .auth
            .authorize(headers, query.get("token").map(String::as_str), &project)?;
    Ok((project, identity))
}

/// A request to a `/…/projects/{projectId}/…` read route that passed [`admit`]; as an extractor, a refused one
/// never reaches the handler.
pub(crate) struct Admitted {
    pub(crate) project: ProjectId,
    pub(crate) query: HashMap<String, String>,
}

impl FromRequestParts<AppState> for Admitted {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Extension(admission) = Extension::<Arc<Admission>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(raw_project) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(query) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let (project, _identity) = admit(state, &admission, &raw_project, &parts.headers, &query)
            .map_err(IntoResponse::into_response)?;
        Ok(Self { project, query })
    }
}
