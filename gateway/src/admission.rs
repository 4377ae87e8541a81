//! The checks every request meets before it reaches a project, socket and HTTP alike, in the documented order:
//! the project id, then the browser Origin, then the credential. One place, so that the upgrade, the objects read
//! and the Object API cannot drift apart.

use std::collections::HashMap;

use axum::http::HeaderMap;
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
