//! The edit rate of HTTP writes: one token bucket per user on this gateway, with the socket's settings
//! (`CANVAS_MAX_EDITS_PER_SECOND`, `CANVAS_EDIT_BURST`), so a script cannot out-edit a socket.

use std::collections::HashMap;
use std::sync::Mutex;

use canvas_shared::{ErrorCode, Rejection};
use tokio::time::Instant;

use crate::abuse::TokenBucket;
use crate::config::AbuseArgs;

/// Users tracked at most; past it the buckets start over (full), which only ever lets more through.
const MAX_TRACKED_USERS: usize = 100_000;

pub(crate) struct WriteLimits {
    per_second: f64,
    burst: u32,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl WriteLimits {
    pub(crate) fn new(args: &AbuseArgs) -> Self {
        Self {
            per_second: args.edits_per_second,
            burst: args.edit_burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one write of `user`, or refuses it with `rate_limited`.
    pub(crate) fn allow(&self, user: &str) -> Result<(), Rejection> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_TRACKED_USERS && !buckets.contains_key(user) {
            buckets.clear();
        }
        let bucket = buckets
            .entry(user.to_string())
            .or_insert_with(|| TokenBucket::new(self.per_second, self.burst));
        if bucket.allow(Instant::now()) {
            return Ok(());
        }
        Err(Rejection::new(
            ErrorCode::RateLimited,
            format!(
                "too many edits: a user may make {} edits per second (bursts of {}); this write was not applied, \
                 retry later",
                self.per_second, self.burst
            ),
        ))
    }
}
