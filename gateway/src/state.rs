//! The shared state every handler gets: stores, hub, limits, auth. Cheap to clone (an `Arc` inside).

use std::sync::Arc;

use canvas_shared::durable::DurableStore;
use canvas_shared::hot::EditStore;
use canvas_shared::Limits;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::config::TuningArgs;
use crate::hub::Hub;
use crate::loader::Loader;
use crate::metrics::GatewayMetrics;
use crate::occupancy::Occupancy;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub hot: Arc<dyn EditStore>,
    pub durable: Arc<dyn DurableStore>,
    pub hub: Arc<Hub>,
    pub(crate) loader: Loader,
    pub(crate) occupancy: Arc<Occupancy>,
    pub metrics: Arc<GatewayMetrics>,
    pub limits: Limits,
    pub auth: Auth,
    pub tuning: TuningArgs,
    /// Cancelled on SIGTERM: connections close with 1001.
    pub shutdown: CancellationToken,
    /// The open sockets, which shutdown waits for.
    pub connections: TaskTracker,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        hot: Arc<dyn EditStore>,
        durable: Arc<dyn DurableStore>,
        limits: Limits,
        auth: Auth,
        tuning: TuningArgs,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = Arc::new(GatewayMetrics::default());
        let hub = Hub::start(Arc::clone(&hot), Arc::clone(&metrics));
        let loader = Loader::new(
            Arc::clone(&hot),
            Arc::clone(&durable),
            Arc::clone(&hub),
            Arc::clone(&metrics),
        );
        let occupancy = Occupancy::start(Arc::clone(&hot));
        Self(Arc::new(Inner {
            occupancy,
            hot,
            durable,
            hub,
            loader,
            metrics,
            limits,
            auth,
            tuning,
            shutdown,
            connections: TaskTracker::new(),
        }))
    }
}
