//! The saver: crash-safe, incremental auto-save from the hot state (Redis) to the durable store (DynamoDB).
//!
//! Every interval it claims dirty projects under a lease, writes only what changed (a conditional put of each changed
//! object, or of a tombstone for a deleted one, never over a newer stamp), completes the claims that were fully
//! written and puts the others back.
//! Its figures are served over HTTP (`/metrics` JSON, `/metrics/prometheus` text, `/healthz`, `/readyz`) and gRPC
//! (`SaverMetrics`, health, reflection).
//!
//! The library runs on any [`SaveQueue`] and [`DurableStore`], so the `saver` binary wires Redis and DynamoDB, the
//! one-process dev mode runs it on the memory hot state and the embedded store, and tests run it on a
//! fault-injecting store.
//!
//! Where a save happens, in the order it runs:
//! - [`save_loop`]: waits for the store, then runs a pass every interval, and drains on shutdown;
//! - [`save_pass`]: one pass, claim → read changes → write → complete or put back each claim;
//! - [`eviction`]: after each pass, idle fully saved projects leave the hot state;
//! - [`batch_writer`]: the write requests with their retries; [`lease`]: lease renewal while writing;
//!   [`save_error`]: why a project's save failed.
//!
//! Around it: [`config`] (command line / environment and runtime settings), and what operators see: [`report`]
//! (loop state, pass outcome), [`metrics`] (the JSON figures), [`prometheus`], [`dirty`] (the dirty index read at
//! request time), [`http`], [`grpc`], [`operator_token`].

// Items are `pub` only where other crates use them; inside, `pub(crate)` and narrower.
#![warn(unreachable_pub)]

mod batch_writer;
mod config;
mod dirty;
mod eviction;
mod group;
mod grpc;
mod http;
mod lease;
mod metrics;
mod operator_token;
mod prometheus;
mod report;
mod save_error;
mod save_loop;
mod save_pass;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use canvas_shared::durable::DurableStore;
use canvas_shared::hot::SaveQueue;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{SaverConfig, SaverSettings, DEFAULT_INTERVAL_MS};
pub use metrics::Metrics;
pub use operator_token::OperatorToken;
pub use report::{LoopState, PassOutcome};

/// A saver ready to start: its settings, stores and metrics.
pub struct Saver {
    ctx: Arc<save_pass::PassContext>,
    metrics: Arc<Metrics>,
}

impl Saver {
    pub fn new(
        settings: SaverSettings,
        hot: Arc<dyn SaveQueue>,
        durable: Arc<dyn DurableStore>,
    ) -> Self {
        let metrics = Arc::new(
            Metrics::new(
                settings.interval.as_millis() as u64,
                settings.lease.as_millis() as u64,
                settings.owner.clone(),
            )
            .with_idle_evict_ms(settings.idle_evict.map_or(0, |d| d.as_millis() as u64)),
        );
        Self {
            ctx: Arc::new(save_pass::PassContext {
                hot,
                durable,
                settings: Arc::new(settings),
            }),
            metrics,
        }
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub fn settings(&self) -> &SaverSettings {
        &self.ctx.settings
    }

    /// Runs one pass now (outside the loop) and records it.
    pub async fn run_pass(&self) -> PassOutcome {
        let outcome = save_pass::run_pass(&self.ctx).await;
        self.metrics.record_pass(&outcome);
        outcome
    }

    /// Runs one eviction step now (outside the loop) and records it; returns how many projects it evicted.
    pub async fn run_eviction(&self) -> u64 {
        let outcome = eviction::evict_idle(&self.ctx).await;
        self.metrics.record_eviction(&outcome);
        outcome.evicted
    }

    /// The HTTP router (for embedding in another server, e.g. the dev mode's).
    pub fn http_router(&self) -> axum::Router {
        http::router(self.http_state())
    }

    fn http_state(&self) -> http::HttpState {
        http::HttpState {
            hot: Arc::clone(&self.ctx.hot),
            durable: Arc::clone(&self.ctx.durable),
            metrics: Arc::clone(&self.metrics),
            operator_token: self.ctx.settings.operator_token.clone(),
        }
    }

    /// Binds the configured servers and starts the save loop. The loop stops when `shutdown` is cancelled (after
    /// its final saves); the servers stop right after it.
    pub async fn start(self, shutdown: CancellationToken) -> anyhow::Result<RunningSaver> {
        let settings = Arc::clone(&self.ctx.settings);
        let servers_stop = CancellationToken::new();
        let mut servers: Vec<JoinHandle<()>> = Vec::new();

        let mut http_addr = None;
        if let Some(addr) = settings.http_addr {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
            http_addr = Some(listener.local_addr()?);
            let router = self.http_router();
            let stop = servers_stop.clone();
            servers.push(tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "HTTP server failed");
                }
            }));
        }

        let mut grpc_addr = None;
        if let Some(addr) = settings.grpc_addr {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for gRPC on {addr}"))?;
            grpc_addr = Some(listener.local_addr()?);
            let hot = Arc::clone(&self.ctx.hot);
            let metrics = Arc::clone(&self.metrics);
            let token = settings.operator_token.clone();
            let stop = servers_stop.clone();
            servers.push(tokio::spawn(async move {
                if let Err(e) = grpc::serve(listener, hot, metrics, token, stop).await {
                    tracing::error!(error = %e, "gRPC server failed");
                }
            }));
        }
        tracing::info!(
            http = ?http_addr,
            grpc = ?grpc_addr,
            owner = %settings.owner,
            interval_ms = settings.interval.as_millis() as u64,
            lease_ms = settings.lease.as_millis() as u64,
            "saver started"
        );

        let ctx = Arc::clone(&self.ctx);
        let metrics = Arc::clone(&self.metrics);
        let task = tokio::spawn(async move {
            save_loop::run_loop(ctx, metrics, shutdown).await;
            servers_stop.cancel();
            for server in servers {
                let _ = server.await;
            }
            tracing::info!("saver stopped");
        });
        Ok(RunningSaver {
            http_addr,
            grpc_addr,
            metrics: self.metrics,
            task,
        })
    }
}

/// A started saver.
pub struct RunningSaver {
    /// The bound HTTP address (the real port when 0 was asked for).
    pub http_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    task: JoinHandle<()>,
}

impl RunningSaver {
    /// Waits until the loop has stopped (after shutdown and the final saves) and the servers are down.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the saver task panicked")
    }

    /// Stops everything at once, without final saves (tests simulating a crash use this).
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Runs a saver until `shutdown` is cancelled and its final saves are done.
pub async fn run(
    settings: SaverSettings,
    hot: Arc<dyn SaveQueue>,
    durable: Arc<dyn DurableStore>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Saver::new(settings, hot, durable)
        .start(shutdown)
        .await?
        .wait()
        .await
}
