//! Fan-out on this gateway: which local connections are in which project, and delivery of bus messages to them.
//!
//! The hub subscribes to a project's channel when its first local client joins and unsubscribes when the last
//! leaves. Delivery never waits on a client: a connection whose queue is full is dropped as too slow.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use canvas_shared::hot::{Bus, BusEvent, BusMessage, EditStore};
use canvas_shared::ProjectId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connection::outbox::{Outbound, OutboxSender, TrySendError};
use crate::metrics::GatewayMetrics;

/// A local connection as the hub sees it.
#[derive(Clone)]
pub struct Member {
    pub tx: OutboxSender,
    /// Cancelled when the connection must go (too slow).
    pub kill: CancellationToken,
}

#[derive(Default)]
struct Room {
    members: HashMap<Arc<str>, Member>,
    /// Highest `seq` seen on this gateway, the floor for a reload after the hot state lost the project.
    last_seq: u64,
    /// The project's channel is subscribed (or the bus will subscribe it on reconnect).
    subscribed: bool,
}

pub struct Hub {
    rooms: Mutex<HashMap<ProjectId, Room>>,
    bus: Arc<dyn Bus>,
    /// Projects whose channel this gateway has subscribed; the lock serializes subscribe/unsubscribe.
    subscriptions: tokio::sync::Mutex<HashSet<ProjectId>>,
    metrics: Arc<GatewayMetrics>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// Opens the bus and starts delivering its messages.
    pub fn start(hot: &dyn EditStore, metrics: Arc<GatewayMetrics>) -> Arc<Self> {
        let (events_tx, events_rx) = mpsc::channel(8192);
        let bus = hot.open_bus(events_tx);
        let hub = Arc::new(Self {
            rooms: Mutex::new(HashMap::new()),
            bus,
            subscriptions: tokio::sync::Mutex::new(HashSet::new()),
            metrics,
        });
        tokio::spawn(deliver(Arc::downgrade(&hub), events_rx));
        hub
    }

    /// Adds a connection to a project, subscribing to its channel if it is the first here. Returns once the
    /// channel is subscribed, so that a snapshot taken afterwards misses no broadcast.
    pub async fn join(&self, project: &ProjectId, conn: Arc<str>, member: Member) {
        let subscribed = {
            let mut rooms = lock(&self.rooms);
            let room = rooms.entry(project.clone()).or_default();
            room.members.insert(conn, member);
            room.subscribed
        };
        // Only the first member of a room (or one that joins while that first subscribe is still on its way)
        // waits; everybody else joins without touching the subscription lock. A burst of joins must not queue
        // behind each other: each waiting upgrade holds its HTTP read buffer.
        if !subscribed {
            self.reconcile(project).await;
        }
    }

    /// Removes a connection, unsubscribing when it was the last here.
    pub async fn leave(&self, project: &ProjectId, conn: &str) {
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
            self.reconcile(project).await;
        }
    }

    /// Makes the channel's subscription match the room's membership as it is now. Every join and leave that
    /// may change what is wanted runs this after changing the membership, one at a time, so the last to run
    /// sees the final membership: a quick leave-then-join cannot end unsubscribed.
    async fn reconcile(&self, project: &ProjectId) {
        let mut subscribed = self.subscriptions.lock().await;
        let wanted = lock(&self.rooms).contains_key(project);
        if wanted && !subscribed.contains(project) {
            // On failure the bus keeps the channel wanted and subscribes on reconnect (then sends Resubscribed).
            if let Err(e) = self.bus.subscribe(project).await {
                tracing::warn!(%project, error = %e, "subscribe failed; will resubscribe on reconnect");
            }
            subscribed.insert(project.clone());
        } else if !wanted && subscribed.remove(project) {
            let _ = self.bus.unsubscribe(project).await;
        }
        if let Some(room) = lock(&self.rooms).get_mut(project) {
            room.subscribed = subscribed.contains(project);
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
                Err(TrySendError::Full) => {
                    if !member.kill.is_cancelled() {
                        self.metrics.slow_clients_dropped.inc();
                    }
                    member.kill.cancel();
                }
                Err(TrySendError::Closed) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use canvas_shared::hot::memory::MemoryHotState;
    use std::time::Duration;

    fn member() -> (Member, crate::connection::outbox::OutboxReceiver) {
        let (tx, rx) = crate::connection::outbox::outbox(64);
        let member = Member {
            tx,
            kill: CancellationToken::new(),
        };
        (member, rx)
    }

    /// Joins and leaves racing on one project must leave the channel subscribed exactly while someone is in it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_joins_and_leaves_end_subscribed_while_a_member_remains() {
        let hot = MemoryHotState::new();
        let hub = Hub::start(&hot, Arc::new(GatewayMetrics::default()));
        let project = ProjectId::parse("race").unwrap();
        for round in 0..50 {
            let mut tasks = Vec::new();
            for i in 0..8 {
                let hub = Arc::clone(&hub);
                let project = project.clone();
                tasks.push(tokio::spawn(async move {
                    let id: Arc<str> = Arc::from(format!("c{round}-{i}"));
                    let (m, _rx) = member();
                    hub.join(&project, Arc::clone(&id), m).await;
                    tokio::task::yield_now().await;
                    hub.leave(&project, &id).await;
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert!(
                !hub.subscriptions.lock().await.contains(&project),
                "round {round}: subscribed with nobody in the room"
            );
        }
        let (m, mut rx) = member();
        hub.join(&project, Arc::from("stays"), m).await;
        assert!(hub.subscriptions.lock().await.contains(&project));
        hot.publish_ephemeral(&project, "someone-else", "{\"type\":\"presence\"}")
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(
            matches!(got, Ok(Some(Outbound::Broadcast { seq: 0, .. }))),
            "the remaining member gets the project's messages: {got:?}"
        );
    }
}
