//! The one-process dev mode: gateway and saver logic in one process, on an in-memory hot state (same semantics
//! as Redis) and an embedded on-disk durable store (redb, under `./data`). No servers needed.
//!
//! The saver's figures are served beside the gateway's routes under `/saver/` (`/saver/metrics`).

// Items are `pub` only where other crates use them; inside, `pub(crate)` and narrower.
#![warn(unreachable_pub)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canvas_gateway::auth::{Auth, AuthArgs};
use canvas_gateway::config::TuningArgs;
use canvas_gateway::{serve_with, AppState};
use canvas_saver::{Saver, SaverSettings, DEFAULT_INTERVAL_MS};
use canvas_shared::config::{EvictionArgs, JournalArgs, LimitsArgs, TelemetryArgs};
use canvas_shared::durable::embedded::EmbeddedStore;
use canvas_shared::hot::memory::MemoryHotState;
use canvas_shared::shutdown::{self, SignalMessages};
use canvas_shared::telemetry;
use clap::Parser;

/// Collaborative canvas, all in one process.
#[derive(Parser, Debug)]
#[command(name = "canvas", version)]
struct Config {
    /// Address to serve the demo page and the WebSocket API on.
    #[arg(long = "addr", env = "CANVAS_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Folder for the embedded database.
    #[arg(long = "data-dir", env = "CANVAS_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Save interval (ms).
    #[arg(
        long = "save-interval-ms",
        env = "SAVE_INTERVAL_MS",
        default_value_t = DEFAULT_INTERVAL_MS,
        // A zero interval would spin the save loop (and panics tokio's interval): refused with a clear error.
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    save_interval_ms: u64,
    /// Require JWTs even in dev mode (set CANVAS_JWT_SECRET too). Auth is off otherwise, so `--auth-disabled`
    /// only restates the default, and asking for both is refused.
    #[arg(
        long = "auth",
        env = "CANVAS_DEV_AUTH",
        default_value_t = false,
        conflicts_with = "disabled"
    )]
    auth: bool,
    #[command(flatten)]
    limits: LimitsArgs,
    #[command(flatten)]
    journal: JournalArgs,
    #[command(flatten)]
    eviction: EvictionArgs,
    #[command(flatten)]
    tuning: TuningArgs,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(flatten)]
    jwt: AuthArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = telemetry::init("canvas-dev", &config.telemetry);
    let auth = if config.auth {
        Auth::from_args(&config.jwt)?
    } else {
        tracing::warn!(
            "dev mode: AUTH IS OFF, every client edits every project (pass --auth to require JWTs)"
        );
        Auth::Disabled
    };
    let db_path = config.data_dir.join("canvas.redb");
    let durable = Arc::new(EmbeddedStore::open(&db_path)?);
    let hot = Arc::new(MemoryHotState::new().with_journal_len(config.journal.journal_len));
    // A second Ctrl-C ends the drain (sockets and the final save) at once.
    let shutdown = shutdown::on_signals(SignalMessages {
        draining: "closing every socket and saving what is dirty (Ctrl-C again to stop at once)",
        abandoned: "edits not yet saved are lost",
    });
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let state = AppState::new(
        hot.clone(),
        durable.clone(),
        (&config.limits).into(),
        auth,
        config.tuning.clone(),
        shutdown.clone(),
    );
    let saver = Saver::new(
        SaverSettings {
            interval: Duration::from_millis(config.save_interval_ms),
            idle_evict: config.eviction.idle(),
            ..SaverSettings::default()
        },
        hot,
        durable,
    );
    let saver_routes = axum::Router::new().nest("/saver", saver.http_router());
    let saver = saver.start(shutdown.clone()).await?;
    println!(
        "canvas is running: open http://{addr}/ (data in {})",
        db_path.display()
    );
    serve_with(listener, state, saver_routes).await?;
    // The saver makes its final save of everything dirty before it stops.
    saver.wait().await?;
    println!("canvas stopped; everything is saved");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_disabled_is_accepted_but_refused_beside_auth() {
        let config = Config::try_parse_from(["canvas", "--auth-disabled"]).expect("parses");
        assert!(!config.auth && config.jwt.disabled);
        let both = Config::try_parse_from(["canvas", "--auth", "--auth-disabled"]);
        assert!(both.is_err(), "--auth with --auth-disabled must be refused");
    }

    #[test]
    fn a_zero_save_interval_is_refused() {
        let zero = Config::try_parse_from(["canvas", "--save-interval-ms", "0"]);
        assert!(
            zero.is_err(),
            "a zero save interval must be refused at start"
        );
        assert!(Config::try_parse_from(["canvas", "--save-interval-ms", "1"]).is_ok());
    }

    #[test]
    fn the_save_interval_defaults_to_the_saver_default() {
        let config = Config::try_parse_from(["canvas"]).expect("parses");
        assert_eq!(
            Duration::from_millis(config.save_interval_ms),
            SaverSettings::default().interval
        );
    }
}
