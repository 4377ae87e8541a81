//! The gateway's configuration: one typed place, read from flags or the environment.

use std::net::SocketAddr;

use canvas_shared::config::{DynamoArgs, JournalArgs, LimitsArgs, RedisArgs, TelemetryArgs};
use canvas_shared::hot::redis::DEFAULT_OBJECT_CACHE_BYTES;
use clap::Parser;

use crate::auth::AuthArgs;

/// Stateless WebSocket gateway of the collaborative canvas.
#[derive(Parser, Debug, Clone)]
#[command(name = "gateway", version)]
pub struct Config {
    /// Address to listen on.
    #[arg(long = "addr", env = "GATEWAY_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub dynamo: DynamoArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    #[command(flatten)]
    pub limits: LimitsArgs,

    #[command(flatten)]
    pub journal: JournalArgs,

    /// Bytes of object text the gateway keeps to merge updates itself (Redis then only checks that the stored
    /// text is unchanged and writes the result); 0: Redis merges every update.
    #[arg(
        long = "object-cache-bytes",
        env = "GATEWAY_OBJECT_CACHE_BYTES",
        default_value_t = DEFAULT_OBJECT_CACHE_BYTES
    )]
    pub object_cache_bytes: u64,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// Connection handling knobs.
#[derive(clap::Args, Debug, Clone)]
pub struct TuningArgs {
    /// Frames queued for one client before it is dropped as too slow.
    #[arg(
        long = "outgoing-queue",
        env = "GATEWAY_OUTGOING_QUEUE",
        default_value_t = 1024
    )]
    pub outgoing_queue: usize,
    /// How long SIGTERM waits for sockets to close before exiting (ms).
    #[arg(
        long = "shutdown-grace-ms",
        env = "GATEWAY_SHUTDOWN_GRACE_MS",
        default_value_t = 10_000
    )]
    pub shutdown_grace_ms: u64,
    /// Accepted connections allowed in their HTTP/WebSocket handshake at once; beyond it the gateway stops
    /// accepting until one finishes (a connect storm then queues in the kernel, not in memory). 0: no bound.
    #[arg(
        long = "max-pending-handshakes",
        env = "GATEWAY_MAX_PENDING_HANDSHAKES",
        default_value_t = 128
    )]
    pub max_pending_handshakes: usize,

    #[command(flatten)]
    pub abuse: AbuseArgs,
}

impl Default for TuningArgs {
    fn default() -> Self {
        Self {
            outgoing_queue: 1024,
            shutdown_grace_ms: 10_000,
            max_pending_handshakes: 128,
            abuse: AbuseArgs::default(),
        }
    }
}

/// Default sustained edits per second per connection: far above what a person does (the demo client sends a
/// dragged object's position every 150 ms), low enough that one runaway client cannot take a real share of Redis.
pub const DEFAULT_EDITS_PER_SECOND: f64 = 100.0;
/// Default edit burst per connection: lets bulk operations (paste or move a few hundred objects at once) through.
pub const DEFAULT_EDIT_BURST: u32 = 500;
/// Default open WebSocket connections per user (`sub`) on one gateway.
pub const DEFAULT_MAX_CONNECTIONS_PER_USER: usize = 64;
/// Default open WebSocket connections per client IP on one gateway.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 1024;

/// Abuse limits (see `docs/security.md`). Frame, object and project-size limits are in `LimitsArgs`, the
/// outgoing queue bound in [`TuningArgs`].
#[derive(clap::Args, Debug, Clone)]
pub struct AbuseArgs {
    /// Edits (create, update, delete) and resyncs one connection may send per second, sustained (token bucket
    /// refill rate); beyond it they are refused with `rate_limited`. 0 = unlimited.
    #[arg(
        long = "max-edits-per-second",
        env = "CANVAS_MAX_EDITS_PER_SECOND",
        default_value_t = DEFAULT_EDITS_PER_SECOND
    )]
    pub edits_per_second: f64,
    /// Edits one connection may send in a burst (token bucket size).
    #[arg(
        long = "edit-burst",
        env = "CANVAS_EDIT_BURST",
        default_value_t = DEFAULT_EDIT_BURST
    )]
    pub edit_burst: u32,
    /// Open WebSocket connections one user (JWT `sub`) may hold on this gateway; more get HTTP 429.
    /// 0 = unlimited. Not applied when auth is disabled (everyone is `anonymous`).
    #[arg(
        long = "max-connections-per-user",
        env = "CANVAS_MAX_CONNECTIONS_PER_USER",
        default_value_t = DEFAULT_MAX_CONNECTIONS_PER_USER
    )]
    pub max_connections_per_user: usize,
    /// Open WebSocket connections one client IP may hold on this gateway; more get HTTP 429. 0 = unlimited.
    #[arg(
        long = "max-connections-per-ip",
        env = "CANVAS_MAX_CONNECTIONS_PER_IP",
        default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP
    )]
    pub max_connections_per_ip: usize,
    /// Browser origins allowed to connect (comma separated, e.g. `https://canvas.example.com`). Empty = all.
    /// A request with an `Origin` header not in the list gets HTTP 403; requests without one (non-browser
    /// clients) are allowed.
    #[arg(
        long = "allowed-origins",
        env = "CANVAS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Take the client IP for the per-IP limit from the last `X-Forwarded-For` entry (set it only behind a
    /// proxy that adds that header, e.g. the HAProxy of deploy/).
    #[arg(
        long = "trust-forwarded-for",
        env = "CANVAS_TRUST_FORWARDED_FOR",
        default_value_t = false
    )]
    pub trust_forwarded_for: bool,
}

impl Default for AbuseArgs {
    fn default() -> Self {
        Self {
            edits_per_second: DEFAULT_EDITS_PER_SECOND,
            edit_burst: DEFAULT_EDIT_BURST,
            max_connections_per_user: DEFAULT_MAX_CONNECTIONS_PER_USER,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            allowed_origins: Vec::new(),
            trust_forwarded_for: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_defaults_match_default_impls() {
        let config = Config::try_parse_from(["gateway", "--auth-disabled"]).unwrap();
        let abuse = config.tuning.abuse;
        let expected = AbuseArgs::default();
        assert_eq!(abuse.edits_per_second, expected.edits_per_second);
        assert_eq!(abuse.edit_burst, expected.edit_burst);
        assert_eq!(
            abuse.max_connections_per_user,
            expected.max_connections_per_user
        );
        assert_eq!(
            abuse.max_connections_per_ip,
            expected.max_connections_per_ip
        );
        assert_eq!(abuse.trust_forwarded_for, expected.trust_forwarded_for);
        assert_eq!(
            config.tuning.outgoing_queue,
            TuningArgs::default().outgoing_queue
        );
    }

    #[test]
    fn origins_are_comma_separated() {
        let config = Config::try_parse_from([
            "gateway",
            "--allowed-origins",
            "https://a.example,https://b.example",
        ])
        .unwrap();
        assert_eq!(
            config.tuning.abuse.allowed_origins,
            vec!["https://a.example", "https://b.example"]
        );
    }
}
