//! The `gateway` binary: Redis as the hot state, DynamoDB for cold loads.

use std::sync::Arc;

use canvas_gateway::auth::Auth;
use canvas_gateway::config::Config;
use canvas_gateway::{serve, AppState};
use canvas_shared::durable::dynamo::DynamoStore;
use canvas_shared::hot::redis::RedisHotState;
use canvas_shared::shutdown::{self, SignalMessages};
use canvas_shared::telemetry;
use clap::Parser;

/// mimalloc gives memory back after a burst (thousands of sockets connecting at once leave their handshake
/// buffers behind): with glibc's allocator, 10,000 idle connections measured 68-118 MB depending on how the
/// burst went, since freed pages between long-lived allocations stayed resident.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = telemetry::init("canvas-gateway", &config.telemetry);
    let auth = Auth::from_args(&config.auth)?;
    let hot = RedisHotState::open(config.redis.target())?
        .with_journal_len(config.journal.journal_len)
        .with_object_cache_bytes(config.object_cache_bytes);
    let durable = DynamoStore::connect(&config.dynamo).await;
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "gateway listening");
    let state = AppState::new(
        Arc::new(hot),
        Arc::new(durable),
        (&config.limits).into(),
        auth,
        config.tuning.clone(),
        shutdown::on_signals(SignalMessages {
            draining: "closing every socket with 1001",
            abandoned: "sockets still open are dropped without a close frame",
        }),
    );
    serve(listener, state).await?;
    tracing::info!("gateway stopped");
    Ok(())
}
