//! The `saver` binary: reads its configuration, connects Redis and DynamoDB, and runs the save loop with its HTTP
//! and gRPC servers until SIGTERM/SIGINT and the final save.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use canvas_saver::SaverConfig;
use canvas_shared::durable::dynamo::DynamoStore;
use canvas_shared::durable::faulty::FaultyStore;
use canvas_shared::durable::DurableStore;
use canvas_shared::hot::redis::RedisHotState;
use canvas_shared::hot::SaveQueue;
use canvas_shared::shutdown::{self, SignalMessages};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = SaverConfig::parse();
    let _telemetry = canvas_shared::telemetry::init("canvas-saver", &config.telemetry);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "saver failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: SaverConfig) -> anyhow::Result<()> {
    let hot: Arc<dyn SaveQueue> = Arc::new(RedisHotState::open(config.redis.target())?);
    let dynamo = DynamoStore::connect(&config.dynamo).await;
    let durable: Arc<dyn DurableStore> = match config.debug_write_delay_ms {
        Some(ms) if ms > 0 => {
            tracing::warn!(
                delay_ms = ms,
                "test hook: every BatchWriteItem request is delayed"
            );
            let store = FaultyStore::new(dynamo);
            store.faults.delay_ms.store(ms, Ordering::SeqCst);
            Arc::new(store)
        }
        _ => Arc::new(dynamo),
    };
    let shutdown = shutdown::on_signals(SignalMessages {
        draining: "stopping the timer and saving what is dirty",
        abandoned: "unsaved claims are taken over after their lease",
    });
    canvas_saver::run(config.settings(), hot, durable, shutdown).await
}
