//! Fan-out on this gateway: which local connections are in which project, and delivery of bus messages to them.
//!
//! The hub subscribes to a project's channel when its first local client joins and unsubscribes when the last
//! leaves. Delivery never waits on a client: a connection whose queue is full is dropped as too slow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use canvas_shared::hot::{Bus, BusEvent, BusMessage, HotState};
use canvas_shared::ProjectId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::GatewayMetrics;
use crate::outbound::Outbound;

/// A local connection as the hub sees it.
#[derive(Clone)]
pub struct Member {
    pub tx: mpsc::Sender<Outbound>,
    /// Cancelled when the connection must go (too slow).
    pub kill: CancellationToken,
}

#[derive(Default)]
struct Room {
    members: HashMap<Arc<str>, Member>,
    /// Highest `seq` seen on this gateway, the floor for a reload after the hot state lost the project.
    last_seq: u64,
}

pub struct Hub {
    rooms: Mutex<HashMap<ProjectId, Room>>,
    bus: Arc<dyn Bus>,
    /// Serializes subscribe/unsubscribe so a quick leave-then-join cannot end unsubscribed.
    subscriptions: tokio::sync::Mutex<()>,
    metrics: Arc<GatewayMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// Opens the bus and starts delivering its messages.
    pub fn start(hot: &dyn HotState, metrics: Arc<GatewayMetrics>) -> Arc<Self> {
        let (events_tx, events_rx) = mpsc::channel(8192);
        let bus = hot.open_bus(events_tx);
        let hub = Arc::new(Self {
            rooms: Mutex::new(HashMap::new()),
            bus,
            subscriptions: tokio::sync::Mutex::new(()),
            metrics,
        });
        tokio::spawn(deliver(Arc::downgrade(&hub), events_rx));
        hub
    }

    /// Adds a connection to a project, subscribing to its channel if it is the first here.
    pub async fn join(&self, project: &ProjectId, conn: Arc<str>, member: Member) {
        let _serial = self.subscriptions.lock().await;
        let first = {
            let mut rooms = lock(&self.rooms);
            let room = rooms.entry(project.clone()).or_default();
            room.members.insert(conn, member);
            room.members.len() == 1
        };
        if first {
            // On failure the bus keeps the channel wanted and subscribes on reconnect (then sends Resubscribed).
            if let Err(e) = self.bus.subscribe(project).await {
                tracing::warn!(%project, error = %e, "subscribe failed; will resubscribe on reconnect");
            }
        }
    }

    /// Removes a connection, unsubscribing when it was the last here.
    pub async fn leave(&self, project: &ProjectId, conn: &str) {
        let _serial = self.subscriptions.lock().await;
        let last = {
            let mut rooms = lock(&self.rooms);
            let Some(room) = rooms.get_mut(project) else {
                return;
            };
            room.members.remove(conn);
            let empty = room.members.is_empty();
            if empty {
                rooms.remove(project);
            }
            empty
        };
        if last {
            let _ = self.bus.unsubscribe(project).await;
        }
    }

    /// Highest `seq` this gateway has seen for the project.
    pub fn last_seq(&self, project: &ProjectId) -> u64 {
        lock(&self.rooms).get(project).map_or(0, |r| r.last_seq)
    }

    /// Records a `seq` learned outside the bus (a snapshot or an ack).
    pub fn observe_seq(&self, project: &ProjectId, seq: u64) {
        if let Some(room) = lock(&self.rooms).get_mut(project) {
            room.last_seq = room.last_seq.max(seq);
        }
    }

    /// Number of local connections.
    pub fn connections(&self) -> usize {
        lock(&self.rooms).values().map(|r| r.members.len()).sum()
    }

    /// Sends `message` to every local member of every room; used for shutdown and resyncs.
    fn each_member(&self, mut f: impl FnMut(&Member)) {
        for room in lock(&self.rooms).values() {
            room.members.values().for_each(&mut f);
        }
    }

    fn deliver_message(&self, message: BusMessage) {
        let mut rooms = lock(&self.rooms);
        let Some(room) = rooms.get_mut(&message.project) else {
            return;
        };
        room.last_seq = room.last_seq.max(message.seq);
        let span = match (&message.trace, message.seq) {
            (Some(parent), seq) if seq > 0 => {
                let span = tracing::info_span!(
                    "fan_out",
                    project = %message.project,
                    seq,
                    recipients = room.members.len().saturating_sub(1)
                );
                canvas_shared::telemetry::set_remote_parent(&span, parent);
                span
            }
            _ => tracing::Span::none(),
        };
        let _entered = span.enter();
        for (conn, member) in &room.members {
            let own = **conn == *message.origin;
            let outbound = if own {
                if message.seq == 0 {
                    continue;
                }
                Outbound::Echo { seq: message.seq }
            } else {
                Outbound::Broadcast {
                    seq: message.seq,
                    frame: Arc::clone(&message.frame),
                }
            };
            match member.tx.try_send(outbound) {
                Ok(()) => {
                    if !own {
                        self.metrics.fanout_messages.inc();
                    }
                }
                // Full (the client stopped reading): never let one client stall the others.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !member.kill.is_cancelled() {
                        self.metrics.slow_clients_dropped.inc();
                    }
                    member.kill.cancel();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

async fn deliver(hub: Weak<Hub>, mut events: mpsc::Receiver<BusEvent>) {
    while let Some(event) = events.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        match event {
            BusEvent::Message(message) => hub.deliver_message(message),
            BusEvent::Resubscribed => {
                hub.metrics.pubsub_reconnects.inc();
                hub.each_member(|m| {
                    if m.tx.try_send(Outbound::Resync { req_id: None }).is_err() {
                        m.kill.cancel();
                    }
                })
            }
            BusEvent::Disconnected => {}
        }
    }
}
