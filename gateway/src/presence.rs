//! Presence (cursor positions) is ephemeral: fanned out like edits, never stored, and rate-limited per
//! connection so a chatty mouse cannot flood a room. Excess updates are dropped silently: the next one
//! supersedes them anyway.

use std::time::Duration;

use tokio::time::Instant;

/// Presence updates allowed per second per connection (with a burst of the same size).
pub const PRESENCE_PER_SECOND: f64 = 20.0;

/// A token bucket.
#[derive(Debug)]
pub struct PresenceLimiter {
    tokens: f64,
    last: Option<Instant>,
}

impl Default for PresenceLimiter {
    fn default() -> Self {
        Self {
            tokens: PRESENCE_PER_SECOND,
            last: None,
        }
    }
}

impl PresenceLimiter {
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |l| now.saturating_duration_since(l));
        self.last = Some(now);
        self.tokens =
            (self.tokens + elapsed.as_secs_f64() * PRESENCE_PER_SECOND).min(PRESENCE_PER_SECOND);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
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
