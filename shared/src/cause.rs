//! The cause of a store failure, kept as the error that happened rather than flattened into text.
//!
//! Store errors (the hot state's and the durable store's) are cloned into
//! metrics, logs and replies, so their payload must be cheap to clone; it must also keep the original error, so
//! that a log shows its whole source chain and a caller that needs to can downcast it instead of reading its text.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// Why a store call failed: the underlying error, or a condition the store detected itself.
#[derive(Clone)]
pub struct Cause(Arc<dyn Error + Send + Sync + 'static>);

/// A condition with no error beneath it, or an error with a more helpful description than its own.
#[derive(Debug, thiserror::Error)]
#[error("{text}")]
struct Described {
    text: String,
    #[source]
    source: Option<Box<dyn Error + Send + Sync + 'static>>,
}

impl Cause {
    /// Keeps `err` as it is.
    pub fn new(err: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(err))
    }

    /// A condition the store detected itself (nothing failed beneath it).
    pub fn described(text: impl Into<String>) -> Self {
        Self(Arc::new(Described {
            text: text.into(),
            source: None,
        }))
    }

    /// `err`, shown as `text` (for errors whose own `Display` says too little), with `err` as the source.
    pub fn explained(text: impl Into<String>, err: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(Described {
            text: text.into(),
            source: Some(Box::new(err)),
        }))
    }

    /// The error that happened, to downcast.
    pub fn error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl Error for Cause {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_error_and_its_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let cause = Cause::explained("redis connection dropped", io);
        assert_eq!(cause.to_string(), "redis connection dropped");
        let source = cause.source().expect("source kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the original error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);

        let plain = Cause::new(std::io::Error::other("x"));
        assert!(plain.error().downcast_ref::<std::io::Error>().is_some());
        assert_eq!(
            Cause::described("table is gone").to_string(),
            "table is gone"
        );
    }
}
