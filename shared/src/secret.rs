//! Configuration secrets (the gateway's JWT signing secret, the saver's operator token), held so that `Debug`,
//! logs and error reports never print them. Reading one is explicit: [`Secret::expose`].

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A secret string. `Debug` prints `<redacted>`; clap parses straight into it, so a parsed configuration never
/// holds the bare value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// The secret itself, for the one place that must use it (a key, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(secret: &str) -> Self {
        Self(Arc::from(secret))
    }
}

impl From<String> for Secret {
    fn from(secret: String) -> Self {
        Self(Arc::from(secret))
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(secret: &str) -> Result<Self, Self::Err> {
        Ok(Self::from(secret))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let secret = Secret::from("hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(<redacted>)");
        assert_eq!(secret.expose(), "hunter2-hunter2");
    }
}
