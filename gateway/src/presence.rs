//! Presence (cursor positions) is ephemeral: fanned out like edits, never stored, and rate-limited per
//! connection so a chatty mouse cannot flood a room. Excess updates are dropped silently: the next one
//! supersedes them anyway.

use tokio::time::Instant;

use crate::abuse::TokenBucket;

/// Presence updates allowed per second per connection (with a burst of the same size).
pub(crate) const PRESENCE_PER_SECOND: f64 = 20.0;

/// A token bucket of [`PRESENCE_PER_SECOND`].
#[derive(Debug)]
pub(crate) struct PresenceLimiter(TokenBucket);

impl Default for PresenceLimiter {
    fn default() -> Self {
        Self(TokenBucket::new(
            PRESENCE_PER_SECOND,
            PRESENCE_PER_SECOND as u32,
        ))
    }
}

impl PresenceLimiter {
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        self.0.allow(now)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_limits_then_refills() {
        let mut l = PresenceLimiter::default();
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| l.allow(t0)).count();
        assert_eq!(allowed, PRESENCE_PER_SECOND as usize);
        assert!(l.allow(t0 + Duration::from_millis(100)));
    }
}
