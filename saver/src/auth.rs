//! The optional operator token: when `SAVER_OPERATOR_TOKEN` is set, `/metrics` and gRPC `GetMetrics` want
//! `Authorization: Bearer <token>`. Health and readiness stay open so that probes need no secret.

/// Checks an `Authorization` header value against the expected token (constant time in the token's length).
pub fn authorized(expected: Option<&str>, header: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let Some(given) = header.and_then(|h| {
        h.strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
    }) else {
        return false;
    };
    let (a, b) = (expected.as_bytes(), given.trim().as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::authorized;

    #[test]
    fn token_checks() {
        assert!(authorized(None, None));
        assert!(!authorized(Some("s3cret"), None));
        assert!(!authorized(Some("s3cret"), Some("Bearer nope")));
        assert!(!authorized(Some("s3cret"), Some("s3cret")));
        assert!(authorized(Some("s3cret"), Some("Bearer s3cret")));
    }
}
