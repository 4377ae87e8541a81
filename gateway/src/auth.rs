//! Who may connect to which project, and with which role.
//!
//! The gateway asks [`Auth::authorize`] before every upgrade and every HTTP read; everything else only sees the
//! resulting [`Identity`].
//!
//! Tokens are JWTs, from `Authorization: Bearer <jwt>` or `?token=<jwt>`, signed either with the shared HS256
//! secret (`CANVAS_JWT_SECRET`) or with the private half of a configured public key (RS256/384/512, PS256/384/512,
//! ES256/384 or EdDSA; `CANVAS_JWT_PUBLIC_KEY[_FILE]`, algorithm inferred from the key or set with
//! `CANVAS_JWT_ALGORITHM`), so that an identity provider can issue them. Both may be configured at once; a
//! token's `alg` header picks the key, and an algorithm that was not configured is refused (no algorithm
//! confusion). Claims: `sub` (user id) and `exp` (epoch seconds) are required; `projects` maps a project id, or
//! `"*"`, to `"viewer"` or `"editor"`, an exact id winning over `"*"`. `nbf`, and `iss`/`aud` when configured,
//! are checked too. See `docs/security.md`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{header, HeaderMap};
use canvas_shared::ProjectId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use canvas_shared::secret::Secret;

use crate::error::ApiError;

/// Longest token accepted (bytes); longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Shorter HS256 secrets are accepted with a warning (RFC 7518 wants a key at least as long as the hash).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest `sub` accepted: it is sent to every other client as `by`.
pub const MAX_SUB_CHARS: usize = 256;

/// Auth settings.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// HS256 secret for client JWTs.
    #[arg(long = "jwt-secret", env = "CANVAS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// PEM public key (RSA, EC P-256/P-384 or Ed25519) that verifies JWTs signed by an identity provider.
    #[arg(
        long = "jwt-public-key",
        env = "CANVAS_JWT_PUBLIC_KEY",
        hide_env_values = true
    )]
    pub jwt_public_key: Option<String>,
    /// File holding the PEM public key (instead of CANVAS_JWT_PUBLIC_KEY).
    #[arg(long = "jwt-public-key-file", env = "CANVAS_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Algorithm of the public key (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA); default:
    /// inferred from the key (RSA → RS256, EC P-256 → ES256, P-384 → ES384, Ed25519 → EdDSA).
    #[arg(long = "jwt-algorithm", env = "CANVAS_JWT_ALGORITHM")]
    pub jwt_algorithm: Option<String>,
    /// Required `iss` claim; unset = not checked.
    #[arg(long = "jwt-issuer", env = "CANVAS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim; unset = not checked.
    #[arg(long = "jwt-audience", env = "CANVAS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf` (seconds).
    #[arg(
        long = "jwt-leeway-secs",
        env = "CANVAS_JWT_LEEWAY_SECS",
        default_value_t = 0
    )]
    pub jwt_leeway_secs: u64,
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

impl Role {
    fn parse(value: &Value) -> Option<Role> {
        match value.as_str()? {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            _ => None,
        }
    }
}

/// The authenticated user of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub role: Role,
    /// Epoch seconds from which the credential is no longer accepted (`exp` plus the configured leeway); an
    /// open connection is closed with 1008 then.
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
    Jwt(Arc<JwtVerifier>),
}

impl Auth {
    /// Auth is on unless explicitly disabled; enabling it without a secret or key is a configuration error.
    pub fn from_args(args: &AuthArgs) -> anyhow::Result<Self> {
        if args.disabled {
            tracing::warn!(
                "AUTH IS DISABLED: every client is an anonymous editor of every project"
            );
            return Ok(Auth::Disabled);
        }
        Ok(Auth::Jwt(Arc::new(JwtVerifier::from_args(args)?)))
    }

    /// Whether users are authenticated (per-user limits only make sense then).
    pub fn enabled(&self) -> bool {
        matches!(self, Auth::Jwt(_))
    }

    /// Checks the request's credential for `project`: 401 when it is missing or invalid, 403 when it grants no
    /// role on `project`.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        project: &ProjectId,
    ) -> Result<Identity, ApiError> {
        match self {
            Auth::Disabled => Ok(Identity::anonymous_editor()),
            Auth::Jwt(verifier) => {
                let token = token_from(headers, query_token)?;
                let claims = verifier.verify(token)?;
                let Some(role) = claims.role_on(project) else {
                    return Err(ApiError::Forbidden(format!(
                        "the token of {:?} grants no role on project {:?}: its `projects` claim must map \
                         this project id (or \"*\") to \"viewer\" or \"editor\"",
                        claims.sub,
                        project.as_str()
                    )));
                };
                Ok(Identity {
                    user: claims.sub,
                    role,
                    expires_at: Some(claims.expires_at),
                })
            }
        }
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::Unauthorized(message.into())
}

/// The token from `Authorization: Bearer`, else from `?token=`.
fn token_from<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Result<&'a str, ApiError> {
    let token = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| unauthorized("the Authorization header is not valid text"))?;
            let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(unauthorized(
                    "the Authorization header must be `Bearer <jwt>`",
                ));
            }
            token.trim()
        }
        None => query.unwrap_or("").trim(),
    };
    if token.is_empty() {
        return Err(unauthorized(
            "no token: send a JWT as `Authorization: Bearer <jwt>` or as `?token=<jwt>`",
        ));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(unauthorized(format!(
            "the token is {} bytes; at most {MAX_TOKEN_BYTES} are accepted",
            token.len()
        )));
    }
    Ok(token)
}

/// A verified token's claims that the gateway uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    /// `exp` plus the leeway, epoch seconds.
    pub expires_at: i64,
    pub projects: HashMap<String, Role>,
}

impl Claims {
    /// The role on `project`: its exact id wins over `"*"`.
    pub fn role_on(&self, project: &ProjectId) -> Option<Role> {
        self.projects
            .get(project.as_str())
            .or_else(|| self.projects.get("*"))
            .copied()
    }
}

/// One accepted signing key with the algorithms it verifies.
struct VerifyingKey {
    key: DecodingKey,
    validation: Validation,
    /// Where it was configured, for error messages.
    source: &'static str,
}

/// Verifies tokens against the configured secret and/or public key.
pub struct JwtVerifier {
    keys: Vec<VerifyingKey>,
    leeway: u64,
}

impl JwtVerifier {
    pub fn from_args(args: &AuthArgs) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        let validation = |algorithms: Vec<Algorithm>| {
            let mut v = Validation::new(Algorithm::HS256);
            v.algorithms = algorithms;
            v.leeway = args.jwt_leeway_secs;
            v.validate_exp = true;
            v.validate_nbf = true;
            v.set_required_spec_claims(&["exp", "sub"]);
            match args.jwt_audience.as_deref().filter(|a| !a.is_empty()) {
                Some(aud) => {
                    v.set_audience(&[aud]);
                    v.required_spec_claims.insert("aud".into());
                }
                None => v.validate_aud = false,
            }
            if let Some(iss) = args.jwt_issuer.as_deref().filter(|i| !i.is_empty()) {
                v.set_issuer(&[iss]);
                v.required_spec_claims.insert("iss".into());
            }
            v
        };
        if let Some(secret) = args
            .jwt_secret
            .as_ref()
            .map(Secret::expose)
            .filter(|s| !s.is_empty())
        {
            if secret.len() < MIN_SECRET_BYTES {
                tracing::warn!(
                    "CANVAS_JWT_SECRET is only {} bytes; use at least {MIN_SECRET_BYTES} random bytes \
                     (`openssl rand -base64 48`)",
                    secret.len()
                );
            }
            keys.push(VerifyingKey {
                key: DecodingKey::from_secret(secret.as_bytes()),
                validation: validation(vec![Algorithm::HS256]),
                source: "CANVAS_JWT_SECRET",
            });
        }
        let pem = match (&args.jwt_public_key, &args.jwt_public_key_file) {
            (Some(pem), _) if !pem.trim().is_empty() => Some(pem.clone().into_bytes()),
            (_, Some(path)) => Some(std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read CANVAS_JWT_PUBLIC_KEY_FILE {}: {e}",
                    path.display()
                )
            })?),
            _ => None,
        };
        if let Some(pem) = pem {
            let algorithm = match args.jwt_algorithm.as_deref().filter(|a| !a.is_empty()) {
                Some(name) => Some(name.parse::<Algorithm>().map_err(|_| {
                    anyhow::anyhow!(
                        "CANVAS_JWT_ALGORITHM={name:?} is not one of RS256, RS384, RS512, PS256, PS384, PS512, \
                         ES256, ES384, EdDSA"
                    )
                })?),
                None => None,
            };
            let (key, algorithm) = public_key(&pem, algorithm)?;
            keys.push(VerifyingKey {
                key,
                validation: validation(vec![algorithm]),
                source: "the configured public key",
            });
        }
        if keys.is_empty() {
            anyhow::bail!(
                "auth is required: set CANVAS_JWT_SECRET (HS256 secret) and/or CANVAS_JWT_PUBLIC_KEY / \
                 CANVAS_JWT_PUBLIC_KEY_FILE (PEM public key of your identity provider), or \
                 CANVAS_AUTH_DISABLED=true for local development"
            );
        }
        let verifier = Self {
            keys,
            leeway: args.jwt_leeway_secs,
        };
        tracing::info!(algorithms = %verifier.accepted(), "JWT auth enabled");
        Ok(verifier)
    }

    fn accepted(&self) -> String {
        self.keys
            .iter()
            .flat_map(|k| k.validation.algorithms.iter().map(|a| format!("{a:?}")))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Verifies the signature and the registered claims, then reads the gateway's own claims.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            unauthorized(format!(
                "the token is not a well-formed JWT ({}); expected header.payload.signature in base64url \
                 with a supported `alg`",
                describe(e.kind())
            ))
        })?;
        let Some(key) = self
            .keys
            .iter()
            .find(|k| k.validation.algorithms.contains(&header.alg))
        else {
            return Err(unauthorized(format!(
                "the token is signed with {:?}; this gateway accepts {}",
                header.alg,
                self.accepted()
            )));
        };
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &key.validation).map_err(|e| {
            unauthorized(match e.kind() {
                ErrorKind::InvalidSignature => format!(
                    "the token's signature does not verify: it was not signed with the key matching {}",
                    key.source
                ),
                ErrorKind::ExpiredSignature => {
                    "the token has expired (`exp` is in the past); get a fresh one".to_string()
                }
                ErrorKind::ImmatureSignature => {
                    "the token is not valid yet (`nbf` is in the future)".to_string()
                }
                ErrorKind::MissingRequiredClaim(claim) => format!(
                    "the token has no valid `{claim}` claim; tokens must carry `sub` (user id, a string) and \
                     `exp` (expiry, epoch seconds){}",
                    if claim == "iss" || claim == "aud" {
                        " and the configured `iss`/`aud`"
                    } else {
                        ""
                    }
                ),
                ErrorKind::InvalidClaimFormat(claim) => {
                    format!("the token's `{claim}` claim must be a number of epoch seconds")
                }
                ErrorKind::InvalidIssuer => {
                    "the token's `iss` is not the configured CANVAS_JWT_ISSUER".to_string()
                }
                ErrorKind::InvalidAudience => {
                    "the token's `aud` is not the configured CANVAS_JWT_AUDIENCE".to_string()
                }
                other => format!("the token is invalid ({})", describe(other)),
            })
        })?;
        self.claims(data.claims)
    }

    fn claims(&self, claims: Value) -> Result<Claims, ApiError> {
        let sub = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_SUB_CHARS => s.clone(),
            _ => {
                return Err(unauthorized(format!(
                    "the token's `sub` claim must be a non-empty string of at most {MAX_SUB_CHARS} characters"
                )))
            }
        };
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or_else(|| {
            unauthorized("the token's `exp` claim must be a number of epoch seconds")
        })?;
        let leeway = i64::try_from(self.leeway).unwrap_or(i64::MAX);
        let expires_at = exp.saturating_add(leeway);
        // RFC 7519: `exp` is the time "on or after which" the token is refused (the library allows the second itself).
        if canvas_shared::time::now_ms() / 1000 >= expires_at {
            return Err(unauthorized(
                "the token has expired (`exp` is in the past); get a fresh one",
            ));
        }
        let mut projects = HashMap::new();
        match claims.get("projects") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (project, role) in map {
                    let role = Role::parse(role).ok_or_else(|| {
                        unauthorized(format!(
                            "the token's `projects` claim maps {project:?} to {role}; roles are \"viewer\" or \
                             \"editor\""
                        ))
                    })?;
                    projects.insert(project.clone(), role);
                }
            }
            Some(_) => return Err(unauthorized(
                "the token's `projects` claim must be an object mapping project ids (or \"*\") to \
                     \"viewer\" or \"editor\"",
            )),
        }
        Ok(Claims {
            sub,
            expires_at,
            projects,
        })
    }
}

/// A short description of a decoding failure, without echoing the token.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidToken => "it does not have three dot-separated parts".into(),
        ErrorKind::Base64(_) => "a part is not valid base64url".into(),
        ErrorKind::Json(e) => format!("a part is not valid JSON: {e}"),
        ErrorKind::Utf8(_) => "a part is not valid UTF-8".into(),
        ErrorKind::InvalidAlgorithmName => "unknown `alg`".into(),
        ErrorKind::InvalidAlgorithm => "`alg` does not match the key".into(),
        other => format!("{other:?}"),
    }
}

/// Reads a PEM public key; the algorithm is the given one (checked against the key) or inferred from the key.
fn public_key(
    pem: &[u8],
    algorithm: Option<Algorithm>,
) -> anyhow::Result<(DecodingKey, Algorithm)> {
    let family_key = |family: AlgorithmFamily| match family {
        AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
        AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
        AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
        _ => Err(ErrorKind::InvalidKeyFormat.into()),
    };
    if let Some(algorithm) = algorithm {
        let family = algorithm.family();
        if family == AlgorithmFamily::Hmac {
            anyhow::bail!(
                "CANVAS_JWT_ALGORITHM={algorithm:?} is an HMAC algorithm; use CANVAS_JWT_SECRET for HS256 and \
                 an RS*/PS*/ES*/EdDSA algorithm for the public key"
            );
        }
        let key = family_key(family).map_err(|e| {
            anyhow::anyhow!(
                "the configured public key is not a PEM {family:?} public key as CANVAS_JWT_ALGORITHM={algorithm:?} \
                 requires: {e}"
            )
        })?;
        return Ok((key, algorithm));
    }
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // The uncompressed point: 1 + 2 × 32 bytes on P-256, 1 + 2 × 48 on P-384.
        let point_len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
        let algorithm = match point_len {
            65 => Algorithm::ES256,
            97 => Algorithm::ES384,
            _ => anyhow::bail!(
                "cannot tell the curve of the configured EC public key; set CANVAS_JWT_ALGORITHM (ES256 or ES384)"
            ),
        };
        return Ok((key, algorithm));
    }
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Ok((key, Algorithm::EdDSA));
    }
    anyhow::bail!(
        "the configured public key is not a PEM public key (`-----BEGIN PUBLIC KEY-----` with an RSA, EC P-256/P-384 \
         or Ed25519 key, or `-----BEGIN RSA PUBLIC KEY-----`)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(id: &str) -> ProjectId {
        ProjectId::parse(id).unwrap()
    }

    #[test]
    fn exact_project_wins_over_star() {
        let claims = Claims {
            sub: "u".into(),
            expires_at: 0,
            projects: HashMap::from([
                ("*".to_string(), Role::Editor),
                ("p1".to_string(), Role::Viewer),
            ]),
        };
        assert_eq!(claims.role_on(&project("p1")), Some(Role::Viewer));
        assert_eq!(claims.role_on(&project("p2")), Some(Role::Editor));
        let none = Claims {
            projects: HashMap::new(),
            ..claims
        };
        assert_eq!(none.role_on(&project("p1")), None);
    }

    #[test]
    fn token_comes_from_bearer_header_first() {
        let mut h = HeaderMap::new();
        assert!(matches!(
            token_from(&h, None),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            token_from(&h, Some("")),
            Err(ApiError::Unauthorized(_))
        ));
        assert_eq!(token_from(&h, Some("q.q.q")).unwrap(), "q.q.q");
        h.insert("authorization", "Bearer h.h.h".parse().unwrap());
        assert_eq!(token_from(&h, Some("q.q.q")).unwrap(), "h.h.h");
        h.insert("authorization", "bearer  h.h.h ".parse().unwrap());
        assert_eq!(token_from(&h, None).unwrap(), "h.h.h");
        h.insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
        assert!(matches!(
            token_from(&h, None),
            Err(ApiError::Unauthorized(_))
        ));
        h.insert("authorization", "Bearer".parse().unwrap());
        assert!(matches!(
            token_from(&h, None),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn debug_of_the_settings_never_prints_the_secret() {
        let args = AuthArgs {
            jwt_secret: Some("a-secret-that-must-not-leak".into()),
            ..AuthArgs::default()
        };
        assert!(!format!("{args:?}").contains("a-secret-that-must-not-leak"));
    }

    #[test]
    fn auth_needs_a_secret_or_key_unless_disabled() {
        assert!(Auth::from_args(&AuthArgs::default()).is_err());
        assert!(!Auth::from_args(&AuthArgs {
            disabled: true,
            ..AuthArgs::default()
        })
        .unwrap()
        .enabled());
        let auth = Auth::from_args(&AuthArgs {
            jwt_secret: Some("s".into()),
            ..AuthArgs::default()
        })
        .unwrap();
        assert!(auth.enabled());
        let bad_key = Auth::from_args(&AuthArgs {
            jwt_public_key: Some("not a key".into()),
            ..AuthArgs::default()
        });
        assert!(bad_key.is_err());
        let hmac_alg = Auth::from_args(&AuthArgs {
            jwt_public_key: Some("not a key".into()),
            jwt_algorithm: Some("HS256".into()),
            ..AuthArgs::default()
        });
        assert!(hmac_alg.is_err());
    }
}
