//! The Object API's errors, mapped to statuses and `{"error":{"code":…,"message":…}}` bodies in one place.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use canvas_shared::{ErrorCode, Rejection};

use crate::error::ApiError;

/// A refused Object API request.
#[derive(Debug)]
pub(crate) struct ObjectApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The object's current version, when an `If-Match` did not match it.
    current_version: Option<u64>,
}

impl ObjectApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Rejection::new(ErrorCode::BadRequest, message).into()
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The JSON body, also what the idempotency memory keeps of a refused write.
    pub(crate) fn body(&self) -> String {
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        if let Some(version) = self.current_version {
            error["version"] = version.into();
        }
        serde_json::json!({ "error": error }).to_string()
    }
}

impl From<Rejection> for ObjectApiError {
    fn from(rejection: Rejection) -> Self {
        let status = match rejection.code {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            // A conditional write that lost: the precondition (If-Match) failed.
            ErrorCode::Conflict if rejection.current_version.is_some() => {
                StatusCode::PRECONDITION_FAILED
            }
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            code: rejection.code.as_str(),
            message: rejection.message,
            current_version: rejection.current_version,
        }
    }
}

impl From<ApiError> for ObjectApiError {
    fn from(error: ApiError) -> Self {
        Self {
            status: error.status(),
            code: error.code(),
            message: error.to_string(),
            current_version: None,
        }
    }
}

impl IntoResponse for ObjectApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: a 401 names the scheme it wants.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"canvas\""),
            );
        }
        response
    }
}
