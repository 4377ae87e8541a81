//! Who may connect to which project, and with which role.
//!
//! The gateway asks [`Auth::authorize`] before every upgrade and every HTTP read; everything else only sees the
//! resulting [`Identity`].

use axum::http::HeaderMap;
use canvas_shared::ProjectId;

use crate::error::ApiError;

/// Auth settings.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// HS256 secret for client JWTs.
    #[arg(long = "jwt-secret", env = "CANVAS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Accept every connection as an anonymous editor. For local development only.
    #[arg(
        long = "auth-disabled",
        env = "CANVAS_AUTH_DISABLED",
        default_value_t = false
    )]
    pub disabled: bool,
}

/// What a connection may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Editor,
}

/// The authenticated user of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub role: Role,
    /// Epoch seconds when the credential expires.
    pub expires_at: Option<i64>,
}

impl Identity {
    pub fn anonymous_editor() -> Self {
        Self {
            user: "anonymous".into(),
            role: Role::Editor,
            expires_at: None,
        }
    }
}

/// How requests are authenticated.
#[derive(Clone)]
pub enum Auth {
    Disabled,
    Jwt { secret: String },
}

impl Auth {
    /// Auth is on unless explicitly disabled; enabling it without a secret is a configuration error.
    pub fn from_args(args: &AuthArgs) -> anyhow::Result<Self> {
        if args.disabled {
            tracing::warn!(
                "AUTH IS DISABLED: every client is an anonymous editor of every project"
            );
            return Ok(Auth::Disabled);
        }
        match args.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
            Some(secret) => Ok(Auth::Jwt { secret: secret.to_string() }),
            None => anyhow::bail!(
                "auth is required: set CANVAS_JWT_SECRET (HS256 secret), or CANVAS_AUTH_DISABLED=true for local development"
            ),
        }
    }

    /// Checks the request's credential for `project`.
    pub fn authorize(
        &self,
        _headers: &HeaderMap,
        _query_token: Option<&str>,
        _project: &ProjectId,
    ) -> Result<Identity, ApiError> {
        match self {
            Auth::Disabled => Ok(Identity::anonymous_editor()),
            Auth::Jwt { .. } => Err(ApiError::Unauthorized(
                "JWT verification is not implemented yet".into(),
            )),
        }
    }
}
