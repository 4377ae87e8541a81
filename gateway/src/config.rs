//! The gateway's configuration: one typed place, read from flags or the environment.

use std::net::SocketAddr;

use canvas_shared::config::{DynamoArgs, LimitsArgs, RedisArgs, TelemetryArgs};
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
}

impl Default for TuningArgs {
    fn default() -> Self {
        Self {
            outgoing_queue: 1024,
            shutdown_grace_ms: 10_000,
        }
    }
}
