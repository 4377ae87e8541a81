//! Prometheus figures of one gateway process, served as text at `/metrics/prometheus`.
//!
//! Counters are cheap atomics; label sets are small fixed enums, so cardinality stays bounded whatever clients
//! send (project ids are never labels).

use canvas_shared::hot::UpdateMerges;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EditLabels {
    /// create | update | delete
    pub kind: &'static str,
    /// ok, or the error code
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CatchUpLabels {
    /// client (a connect or resync with `since`) | bus (this gateway repairing what pub/sub lost)
    pub cause: &'static str,
    /// journal | snapshot
    pub via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct MergeLabels {
    /// gateway (Redis only checked the object's text and wrote) | redis (the edit script merged)
    pub at: &'static str,
}

pub struct GatewayMetrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_opened: Counter,
    pub edits: Family<EditLabels, Counter>,
    /// Time from a frame's arrival to its reply (ack or error) being queued; exported as `ack_latency_seconds`.
    pub reply_latency: Histogram,
    pub fanout_messages: Counter,
    pub slow_clients_dropped: Counter,
    pub pubsub_reconnects: Counter,
    pub rejected_frames: Family<CodeLabels, Counter>,
    pub cold_loads: Counter,
    pub catch_ups: Family<CatchUpLabels, Counter>,
    update_merges: Family<MergeLabels, Counter>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("canvas_gateway");
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open WebSocket connections",
            connections.clone(),
        );
        let connections_opened = Counter::default();
        registry.register(
            "connections_opened",
            "WebSocket connections accepted",
            connections_opened.clone(),
        );
        let edits = Family::<EditLabels, Counter>::default();
        registry.register("edits", "Edits by kind and result", edits.clone());
        // 50 µs .. ~1.6 s
        let reply_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "ack_latency_seconds",
            "Time from a frame's arrival to its ack or error being queued",
            reply_latency.clone(),
        );
        let fanout_messages = Counter::default();
        registry.register(
            "fanout_messages",
            "Broadcast frames queued to local clients",
            fanout_messages.clone(),
        );
        let slow_clients_dropped = Counter::default();
        registry.register(
            "slow_clients_dropped",
            "Clients dropped because their outgoing queue filled",
            slow_clients_dropped.clone(),
        );
        let pubsub_reconnects = Counter::default();
        registry.register(
            "pubsub_reconnects",
            "Times the pub/sub connection was re-established",
            pubsub_reconnects.clone(),
        );
        let rejected_frames = Family::<CodeLabels, Counter>::default();
        registry.register(
            "rejected_frames",
            "Client frames answered with an error, by code",
            rejected_frames.clone(),
        );
        let cold_loads = Counter::default();
        registry.register(
            "cold_loads",
            "Projects loaded from the durable store",
            cold_loads.clone(),
        );
        let catch_ups = Family::<CatchUpLabels, Counter>::default();
        registry.register(
            "catch_ups",
            "Clients brought up to date after missing edits, by cause and by journal replay or snapshot",
            catch_ups.clone(),
        );
        let update_merges = Family::<MergeLabels, Counter>::default();
        registry.register(
            "update_merges",
            "Updates by where they were merged: in the gateway, or by the edit script in Redis",
            update_merges.clone(),
        );
        // Series start at zero rather than appearing with their first event, so that a dashboard's rate() of
        // an error that never happened reads 0, not "no data".
        for code in canvas_shared::ErrorCode::ALL {
            drop(rejected_frames.get_or_create(&CodeLabels {
                code: code.as_str(),
            }));
        }
        for at in ["gateway", "redis"] {
            drop(update_merges.get_or_create(&MergeLabels { at }));
        }
        for kind in canvas_shared::object::Edit::KINDS {
            drop(edits.get_or_create(&EditLabels { kind, result: "ok" }));
        }
        Self {
            registry,
            connections,
            connections_opened,
            edits,
            reply_latency,
            fanout_messages,
            slow_clients_dropped,
            pubsub_reconnects,
            rejected_frames,
            cold_loads,
            catch_ups,
            update_merges,
        }
    }
}

impl GatewayMetrics {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Brings the merge counters up to the store's totals (the store counts; this only exports).
    pub fn record_update_merges(&self, totals: UpdateMerges) {
        for (at, total) in [("gateway", totals.here), ("redis", totals.by_script)] {
            let counter = self.update_merges.get_or_create(&MergeLabels { at });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    pub fn record_edit(&self, kind: &'static str, result: &'static str) {
        self.edits.get_or_create(&EditLabels { kind, result }).inc();
    }

    pub fn record_catch_up(&self, cause: &'static str, via: &'static str) {
        self.catch_ups
            .get_or_create(&CatchUpLabels { cause, via })
            .inc();
    }

    pub fn record_rejected(&self, code: &'static str) {
        self.rejected_frames
            .get_or_create(&CodeLabels { code })
            .inc();
    }
}
