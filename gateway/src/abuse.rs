//! Abuse limits enforced by the gateway itself: a token bucket per connection for edits, counters of open
//! connections per user and per client IP (held through RAII guards, so a count can never leak), and the
//! browser Origin allow-list. Settings come from [`AbuseArgs`](crate::config::AbuseArgs); what each limit is and
//! what happens when it is exceeded is documented in `docs/security.md`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::HeaderMap;
use tokio::time::Instant;

use crate::config::AbuseArgs;
use crate::error::ApiError;

/// A token bucket: `burst` tokens at most, refilled at `per_second`. A rate of 0 means unlimited.
///
/// Hand-written rather than `governor`'s: each bucket belongs to one connection's reader (no sharing, so no atomics),
/// it takes `now` from its caller (so that tests step time exactly, on tokio's paused clock as on the real one), and
/// it allows fractional rates and a burst of any size with the same few lines; governor's strengths (keyed,
/// concurrent limiters with lock-free state) are not needed here.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. `burst` is raised to 1 so that a positive rate always lets something through.
    pub(crate) fn new(per_second: f64, burst: u32) -> Self {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second
        } else {
            0.0
        };
        let burst = f64::from(burst.max(1));
        Self {
            per_second,
            burst,
            tokens: burst,
            last: None,
        }
    }

    pub(crate) fn unlimited(&self) -> bool {
        self.per_second == 0.0
    }

    /// Takes one token if there is one.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        if self.unlimited() {
            return true;
        }
        let elapsed = self
            .last
            .map_or(Duration::ZERO, |l| now.saturating_duration_since(l));
        self.last = Some(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    users: HashMap<String, usize>,
    ips: HashMap<IpAddr, usize>,
}

impl Counts {
    fn release(&mut self, user: Option<&str>, ip: Option<IpAddr>) {
        if let Some(user) = user {
            if let Some(n) = self.users.get_mut(user) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.users.remove(user);
                }
            }
        }
        if let Some(ip) = ip {
            if let Some(n) = self.ips.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.ips.remove(&ip);
                }
            }
        }
    }
}

/// Open WebSocket connections of this gateway, per user and per client IP.
#[derive(Debug)]
pub(crate) struct ConnectionLimiter {
    per_user: usize,
    per_ip: usize,
    counts: Mutex<Counts>,
}

impl ConnectionLimiter {
    /// Limits of 0 mean unlimited.
    pub(crate) fn new(per_user: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            per_user,
            per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The critical sections cannot panic, but never let a poisoned lock take the gateway down.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one more connection of `user` (None: not counted per user, e.g. auth disabled) from `ip` (None:
    /// unknown, not counted per IP), or refuses it when either is at its limit.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        user: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<ConnectionGuard, ApiError> {
        let mut counts = self.counts();
        let user = user.filter(|_| self.per_user > 0);
        let ip = ip.filter(|_| self.per_ip > 0);
        if let Some(user) = user {
            if counts.users.get(user).copied().unwrap_or(0) >= self.per_user {
                return Err(ApiError::TooManyRequests(format!(
                    "user {user:?} already has {} open connections on this gateway (the limit, \
                     CANVAS_MAX_CONNECTIONS_PER_USER); close one and retry",
                    self.per_user
                )));
            }
        }
        if let Some(ip) = ip {
            if counts.ips.get(&ip).copied().unwrap_or(0) >= self.per_ip {
                return Err(ApiError::TooManyRequests(format!(
                    "{ip} already has {} open connections on this gateway (the limit, \
                     CANVAS_MAX_CONNECTIONS_PER_IP); close one and retry",
                    self.per_ip
                )));
            }
        }
        if let Some(user) = user {
            *counts.users.entry(user.to_string()).or_insert(0) += 1;
        }
        if let Some(ip) = ip {
            *counts.ips.entry(ip).or_insert(0) += 1;
        }
        Ok(ConnectionGuard {
            limiter: Arc::clone(self),
            user: user.map(str::to_string),
            ip,
        })
    }

    /// Open connections counted for `user`.
    #[cfg(test)]
    pub(crate) fn user_connections(&self, user: &str) -> usize {
        self.counts().users.get(user).copied().unwrap_or(0)
    }

    /// Open connections counted for `ip`.
    #[cfg(test)]
    pub(crate) fn ip_connections(&self, ip: IpAddr) -> usize {
        self.counts().ips.get(&ip).copied().unwrap_or(0)
    }
}

/// One counted connection; dropping it (however the connection ends) releases the count.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    limiter: Arc<ConnectionLimiter>,
    user: Option<String>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.limiter.counts().release(self.user.as_deref(), self.ip);
    }
}

/// Browser origins allowed to connect. Empty: every origin.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    allowed: Vec<String>,
}

fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl OriginPolicy {
    pub(crate) fn new(allowed: &[String]) -> Self {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|o| normalize_origin(o))
            .filter(|o| !o.is_empty())
            .collect();
        // A lone "*" is the same as no list.
        if allowed.iter().any(|o| o == "*") {
            return Self::default();
        }
        Self { allowed }
    }

    /// Requests without an `Origin` header (non-browser clients) pass; a browser's must be on the list.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.allowed.is_empty() {
            return Ok(());
        }
        let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().map(normalize_origin).unwrap_or_default();
        if self.allowed.contains(&origin) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "origin {origin:?} is not allowed; add it to CANVAS_ALLOWED_ORIGINS to let pages from it connect"
            )))
        }
    }
}

/// What the HTTP layer checks before an upgrade, built once per gateway from its [`AbuseArgs`].
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub origins: OriginPolicy,
    pub connections: Arc<ConnectionLimiter>,
    pub trust_forwarded_for: bool,
}

impl Admission {
    pub(crate) fn new(args: &AbuseArgs) -> Self {
        Self {
            origins: OriginPolicy::new(&args.allowed_origins),
            connections: ConnectionLimiter::new(
                args.max_connections_per_user,
                args.max_connections_per_ip,
            ),
            trust_forwarded_for: args.trust_forwarded_for,
        }
    }

    /// The client's IP: the TCP peer, or, behind a trusted proxy, the last `X-Forwarded-For` entry (the one the
    /// proxy added).
    pub(crate) fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        if self.trust_forwarded_for {
            // Only the very last entry: everything before it came from the client and could be forged.
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|entry| entry.trim().parse::<IpAddr>().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bursts_then_refills_at_its_rate() {
        let mut b = TokenBucket::new(10.0, 5);
        let t0 = Instant::now();
        assert_eq!((0..20).filter(|_| b.allow(t0)).count(), 5);
        assert!(!b.allow(t0 + Duration::from_millis(50)));
        assert!(b.allow(t0 + Duration::from_millis(150)));
        // Never more than the burst, however long it rested.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!((0..20).filter(|_| b.allow(later)).count(), 5);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut b = TokenBucket::new(0.0, 1);
        let t0 = Instant::now();
        assert!((0..10_000).all(|_| b.allow(t0)));
    }

    #[test]
    fn guards_release_their_counts() {
        let l = ConnectionLimiter::new(2, 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = l.acquire(Some("alice"), Some(ip)).unwrap();
        let b = l.acquire(Some("alice"), Some(ip)).unwrap();
        assert!(matches!(
            l.acquire(Some("alice"), Some(ip)),
            Err(ApiError::TooManyRequests(_))
        ));
        let c = l.acquire(Some("bob"), Some(ip)).unwrap();
        assert!(matches!(
            l.acquire(Some("carol"), Some(ip)),
            Err(ApiError::TooManyRequests(_))
        ));
        // A refused acquire counted nothing.
        assert_eq!(l.user_connections("carol"), 0);
        assert_eq!(l.ip_connections(ip), 3);
        drop(a);
        assert_eq!(l.user_connections("alice"), 1);
        drop((b, c));
        assert_eq!(l.ip_connections(ip), 0);
        assert!(l.counts().users.is_empty() && l.counts().ips.is_empty());
    }

    #[test]
    fn zero_limits_count_nothing() {
        let l = ConnectionLimiter::new(0, 0);
        let guards: Vec<_> = (0..100)
            .map(|_| l.acquire(Some("u"), "::1".parse().ok()).unwrap())
            .collect();
        assert_eq!(l.user_connections("u"), 0);
        drop(guards);
    }

    #[test]
    fn origin_list_applies_to_browsers_only() {
        let p = OriginPolicy::new(&["https://canvas.example/".into(), " ".into()]);
        let mut h = HeaderMap::new();
        assert!(p.check(&h).is_ok());
        h.insert("origin", "https://Canvas.example".parse().unwrap());
        assert!(p.check(&h).is_ok());
        h.insert("origin", "https://evil.example".parse().unwrap());
        assert!(matches!(p.check(&h), Err(ApiError::Forbidden(_))));
        assert!(OriginPolicy::new(&["*".into()]).check(&h).is_ok());
        assert!(OriginPolicy::new(&[]).check(&h).is_ok());
    }

    #[test]
    fn forwarded_for_is_used_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        let peer: Option<IpAddr> = "127.0.0.1".parse().ok();
        let args = AbuseArgs::default();
        assert_eq!(Admission::new(&args).client_ip(peer, &h), peer);
        let trusted = Admission::new(&AbuseArgs {
            trust_forwarded_for: true,
            ..AbuseArgs::default()
        });
        assert_eq!(trusted.client_ip(peer, &h), "5.6.7.8".parse().ok());
        assert_eq!(trusted.client_ip(peer, &HeaderMap::new()), peer);
    }
}
