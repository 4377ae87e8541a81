//! The saver's optional operator token: when `SAVER_OPERATOR_TOKEN` is set, `/metrics`, `/metrics/prometheus` and
//! gRPC `GetMetrics` want `Authorization: Bearer <token>`. Health and readiness stay open so that probes need no
//! secret. This guards operator figures only; it has nothing to do with the gateway's client JWTs.

use canvas_shared::secret::Secret;
use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// The bearer token operators present. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorToken(Secret);

impl OperatorToken {
    /// An empty token guards nothing; the configuration treats it as unset.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an `Authorization` header value carries this token (constant time in the token's length).
    fn accepts(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        }) else {
            return false;
        };
        let (a, b) = (self.0.expose().as_bytes(), given.trim().as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl From<&str> for OperatorToken {
    fn from(token: &str) -> Self {
        Self(Secret::from(token))
    }
}

impl From<String> for OperatorToken {
    fn from(token: String) -> Self {
        Self(Secret::from(token))
    }
}

/// Lets clap read the token straight into the wrapper, so that the parsed configuration never holds it bare.
impl FromStr for OperatorToken {
    type Err = Infallible;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(token))
    }
}

impl fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OperatorToken(<redacted>)")
    }
}

/// Checks an `Authorization` header value against the expected token; no token set lets everyone in.
pub(crate) fn authorized(expected: Option<&OperatorToken>, header: Option<&str>) -> bool {
    expected.is_none_or(|token| token.accepts(header))
}

#[cfg(test)]
mod tests {
    use super::{authorized, OperatorToken};

    #[test]
    fn token_checks() {
        let token = OperatorToken::from("s3cret");
        let expected = Some(&token);
        assert!(authorized(None, None));
        assert!(!authorized(expected, None));
        assert!(!authorized(expected, Some("Bearer nope")));
        assert!(!authorized(expected, Some("s3cret")));
        assert!(authorized(expected, Some("Bearer s3cret")));
    }

    #[test]
    fn debug_never_prints_the_token() {
        let token = OperatorToken::from("s3cret");
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
