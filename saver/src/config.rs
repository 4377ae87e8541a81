//! The saver's configuration: the command line / environment (`SaverConfig`, read by the `saver` binary) and the
//! plain runtime settings (`SaverSettings`) that the library runs on, so that the one-process dev mode and tests
//! can start a saver without going through clap or the environment.

use std::net::SocketAddr;
use std::time::Duration;

use canvas_shared::config::{
    millis, DynamoArgs, EvictionArgs, RedisArgs, TelemetryArgs, DEFAULT_IDLE_EVICT_MS,
};

use crate::operator_token::OperatorToken;

// Each default is written here once: clap shows and applies them, `SaverSettings::default` builds from them, and
// the one-process dev mode takes its interval from here.
/// Time between save passes (ms).
pub const DEFAULT_INTERVAL_MS: u64 = 5000;
const DEFAULT_LEASE_MS: u64 = 10_000;
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
const DEFAULT_MAX_PROJECTS_PER_PASS: usize = 1000;
const DEFAULT_CONCURRENCY: usize = 8;
const DEFAULT_MAX_ATTEMPTS: u32 = 6;
const DEFAULT_BACKOFF_BASE_MS: u64 = 50;
const DEFAULT_BACKOFF_MAX_MS: u64 = 2000;
const DEFAULT_STORE_RETRY_MS: u64 = 1000;

/// Command line and environment of the `saver` binary.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "saver",
    version,
    about = "Saves changed canvas objects from Redis to DynamoDB every interval"
)]
pub struct SaverConfig {
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub dynamo: DynamoArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub eviction: EvictionArgs,

    /// Time between save passes (ms).
    #[arg(
        long = "save-interval-ms",
        env = "SAVE_INTERVAL_MS",
        default_value_t = DEFAULT_INTERVAL_MS,
        // A zero interval would spin the save loop (and panics tokio's interval): refused with a clear error.
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub save_interval_ms: u64,
    /// How long a claimed project stays claimed without renewal (ms).
    #[arg(
        long = "save-lease-ms",
        env = "SAVE_LEASE_MS",
        default_value_t = DEFAULT_LEASE_MS
    )]
    pub save_lease_ms: u64,
    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(
        long = "http-addr",
        env = "SAVER_HTTP_ADDR",
        default_value = "127.0.0.1:9090"
    )]
    pub http_addr: SocketAddr,
    /// Address of the gRPC server (SaverMetrics, health, reflection).
    #[arg(
        long = "grpc-addr",
        env = "SAVER_GRPC_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub grpc_addr: SocketAddr,
    /// Create the DynamoDB table when it is missing (dev and tests). Otherwise readiness fails until it exists.
    #[arg(
        long = "create-table",
        env = "CANVAS_CREATE_TABLE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub create_table: bool,
    /// After SIGTERM/SIGINT, how long final saves may take before the process exits anyway (ms).
    #[arg(
        long = "shutdown-grace-ms",
        env = "SAVER_SHUTDOWN_GRACE_MS",
        default_value_t = DEFAULT_SHUTDOWN_GRACE_MS
    )]
    pub shutdown_grace_ms: u64,
    /// Most projects claimed in one pass; the rest wait for the next pass (or another saver).
    #[arg(
        long = "max-projects-per-pass",
        env = "SAVER_MAX_PROJECTS_PER_PASS",
        default_value_t = DEFAULT_MAX_PROJECTS_PER_PASS
    )]
    pub max_projects_per_pass: usize,
    /// BatchWriteItem requests in flight at once.
    #[arg(long = "concurrency", env = "SAVER_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Attempts per BatchWriteItem request within one pass (throttling, UnprocessedItems, transient errors).
    // Its own id: the flattened DynamoDB arguments have a `max_attempts` too (the SDK's), and clap ids must be unique.
    #[arg(
        id = "saver_max_attempts",
        value_name = "MAX_ATTEMPTS",
        long = "max-attempts",
        env = "SAVER_MAX_ATTEMPTS",
        default_value_t = DEFAULT_MAX_ATTEMPTS
    )]
    pub max_attempts: u32,
    /// First retry backoff (ms); doubles each attempt, with full jitter.
    #[arg(
        long = "backoff-base-ms",
        env = "SAVER_BACKOFF_BASE_MS",
        default_value_t = DEFAULT_BACKOFF_BASE_MS
    )]
    pub backoff_base_ms: u64,
    /// Largest retry backoff (ms).
    #[arg(
        long = "backoff-max-ms",
        env = "SAVER_BACKOFF_MAX_MS",
        default_value_t = DEFAULT_BACKOFF_MAX_MS
    )]
    pub backoff_max_ms: u64,
    /// Bearer token required by `/metrics` and gRPC `GetMetrics` when set (`/healthz`, `/readyz` and the
    /// gRPC health service stay open for probes).
    #[arg(
        long = "operator-token",
        env = "SAVER_OPERATOR_TOKEN",
        hide_env_values = true
    )]
    pub operator_token: Option<OperatorToken>,
    /// Lease owner id (shows in Redis and logs); default: host name, process id and a random suffix.
    #[arg(long = "owner-id", env = "SAVER_OWNER_ID")]
    pub owner_id: Option<String>,
    /// Test hook: delay every BatchWriteItem request by this many ms (used to kill a saver mid-batch).
    #[arg(
        long = "debug-write-delay-ms",
        env = "SAVER_DEBUG_WRITE_DELAY_MS",
        hide = true
    )]
    pub debug_write_delay_ms: Option<u64>,
}

impl SaverConfig {
    /// The runtime settings this configuration describes.
    pub fn settings(&self) -> SaverSettings {
        let defaults = SaverSettings::default();
        SaverSettings {
            interval: Duration::from_millis(self.save_interval_ms.max(1)),
            lease: Duration::from_millis(self.save_lease_ms.max(300)),
            http_addr: Some(self.http_addr),
            grpc_addr: Some(self.grpc_addr),
            create_table: self.create_table,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            max_projects_per_pass: self.max_projects_per_pass.max(1),
            concurrency: self.concurrency.max(1),
            max_attempts: self.max_attempts.max(1),
            backoff_base: Duration::from_millis(self.backoff_base_ms.max(1)),
            backoff_max: Duration::from_millis(self.backoff_max_ms.max(self.backoff_base_ms)),
            operator_token: self.operator_token.clone().filter(|t| !t.is_empty()),
            owner: self.owner_id.clone().unwrap_or(defaults.owner),
            table: self.dynamo.table.clone(),
            store_retry: defaults.store_retry,
            idle_evict: self.eviction.idle(),
        }
    }
}

/// What a running saver needs to know.
#[derive(Debug, Clone)]
pub struct SaverSettings {
    pub interval: Duration,
    pub lease: Duration,
    /// `None`: no HTTP server (dev mode may serve metrics itself). Port 0 picks a free port.
    pub http_addr: Option<SocketAddr>,
    /// `None`: no gRPC server. Port 0 picks a free port.
    pub grpc_addr: Option<SocketAddr>,
    pub create_table: bool,
    pub shutdown_grace: Duration,
    pub max_projects_per_pass: usize,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub operator_token: Option<OperatorToken>,
    /// Lease owner id; unique per saver process.
    pub owner: String,
    /// Table name, for messages only.
    pub table: String,
    /// Pause between attempts to reach a store that is not ready yet.
    pub store_retry: Duration,
    /// How long a fully saved project with no client stays in the hot state unread and unedited; `None`: forever.
    pub idle_evict: Option<Duration>,
}

/// A lease owner id unique to this process: host, pid and a random suffix.
fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "saver".into());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &suffix[..8])
}

impl Default for SaverSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(DEFAULT_INTERVAL_MS),
            lease: Duration::from_millis(DEFAULT_LEASE_MS),
            http_addr: None,
            grpc_addr: None,
            create_table: false,
            shutdown_grace: Duration::from_millis(DEFAULT_SHUTDOWN_GRACE_MS),
            max_projects_per_pass: DEFAULT_MAX_PROJECTS_PER_PASS,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff_base: Duration::from_millis(DEFAULT_BACKOFF_BASE_MS),
            backoff_max: Duration::from_millis(DEFAULT_BACKOFF_MAX_MS),
            operator_token: None,
            owner: default_owner(),
            table: canvas_shared::config::DEFAULT_TABLE.into(),
            store_retry: Duration::from_millis(DEFAULT_STORE_RETRY_MS),
            idle_evict: Some(millis(DEFAULT_IDLE_EVICT_MS)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_contract() {
        let config = SaverConfig::try_parse_from(["saver"]).expect("defaults parse");
        let s = config.settings();
        assert_eq!(s.interval, Duration::from_millis(5000));
        assert_eq!(s.lease, Duration::from_millis(10_000));
        assert_eq!(s.http_addr, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(s.grpc_addr, Some("127.0.0.1:50051".parse().unwrap()));
        assert_eq!(s.concurrency, 8);
        assert!(!s.create_table);
        assert_eq!(s.shutdown_grace, Duration::from_millis(30_000));
        assert!(s.operator_token.is_none());
        assert_eq!(s.idle_evict, Some(Duration::from_millis(900_000)));
        let never = SaverConfig::try_parse_from(["saver", "--idle-evict-ms", "0"]).unwrap();
        assert_eq!(never.settings().idle_evict, None);
    }

    #[test]
    fn create_table_flag_takes_a_value_or_none() {
        let c = SaverConfig::try_parse_from(["saver", "--create-table"]).unwrap();
        assert!(c.create_table);
        let c = SaverConfig::try_parse_from(["saver", "--create-table", "false"]).unwrap();
        assert!(!c.create_table);
    }
}
