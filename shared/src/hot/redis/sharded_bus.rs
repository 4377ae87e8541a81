//! Fan-out on a Redis Cluster: sharded pub/sub, so that an edit's message travels only within the shard that owns
//! its project's slot (plain pub/sub on a cluster copies every message to every node). One cluster connection per
//! process holds an `SSUBSCRIBE` per project channel, each on the primary owning the channel's slot.
//!
//! The guarantees are the single-node bus's: a subscription lost to a broken node connection, a failover or a
//! slot moved elsewhere is subscribed again, on the slot's new owner, and the gateway is told to repair what its
//! clients missed only once every wanted channel is subscribed again.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, Mutex};

use super::bus::parse_payload;
use super::connection::{cluster_client, RESPONSE_TIMEOUT};
use super::{unavailable, unavailable_because};
use crate::hot::keys::ProjectKeys;
use crate::hot::{Bus, BusEvent, HotError};
use crate::ids::ProjectId;

/// Starts the bus on the cluster behind `nodes`; it connects, and keeps its subscriptions, in the background.
pub(super) fn open(nodes: &[String], events: mpsc::Sender<BusEvent>) -> Arc<dyn Bus> {
    let bus = Arc::new(ShardedBus {
        nodes: nodes.to_vec(),
        state: Mutex::new(BusState::default()),
        lost: tokio::sync::Notify::new(),
    });
    tokio::spawn(run_bus(Arc::clone(&bus), events));
    bus
}

struct ShardedBus {
    nodes: Vec<String>,
    state: Mutex<BusState>,
    /// Rings when a subscribe failed: every wanted channel is then subscribed again, and the gateway repairs.
    lost: tokio::sync::Notify,
}

#[derive(Default)]
struct BusState {
    channels: HashSet<String>,
    /// Present while every wanted channel is subscribed.
    conn: Option<ClusterConnection>,
}

#[async_trait]
impl Bus for ShardedBus {
    async fn subscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        let channel = ProjectKeys::new(project).channel;
        let mut state = self.state.lock().await;
        state.channels.insert(channel.clone());
        let Some(conn) = state.conn.as_mut() else {
            return Err(unavailable_because("sharded pub/sub is reconnecting"));
        };
        let failed = match tokio::time::timeout(RESPONSE_TIMEOUT, conn.ssubscribe(&channel)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => unavailable(e),
            Err(_) => unavailable_because("sharded pub/sub subscribe timed out"),
        };
        // Nothing else would retry this channel, and its clients would miss broadcasts unnoticed.
        state.conn = None;
        self.lost.notify_one();
        Err(failed)
    }

    async fn unsubscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        let channel = ProjectKeys::new(project).channel;
        let mut state = self.state.lock().await;
        state.channels.remove(&channel);
        if let Some(conn) = state.conn.as_mut() {
            // A failure leaves a subscription nobody wants; its messages are dropped on arrival.
            let _ = tokio::time::timeout(RESPONSE_TIMEOUT, conn.sunsubscribe(&channel)).await;
        }
        Ok(())
    }
}

/// What one push from the cluster means to the bus.
enum Push {
    Message(crate::hot::BusMessage),
    /// A node connection closed, or a wanted channel was unsubscribed by the server (its slot moved away).
    Lost,
    Other,
}

fn text(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn classify(push: &PushInfo, wanted: impl Fn(&str) -> bool) -> Push {
    match push.kind {
        PushKind::SMessage | PushKind::Message => {
            let (Some(channel), Some(payload)) = (
                push.data.first().and_then(text),
                push.data.get(1).and_then(text),
            ) else {
                return Push::Other;
            };
            let Ok(channel) = std::str::from_utf8(channel) else {
                return Push::Other;
            };
            if !wanted(channel) {
                return Push::Other;
            }
            parse_payload(channel, payload).map_or(Push::Other, Push::Message)
        }
        PushKind::Disconnection => Push::Lost,
        PushKind::SUnsubscribe => {
            let channel = push
                .data
                .first()
                .and_then(text)
                .and_then(|c| std::str::from_utf8(c).ok());
            match channel {
                Some(channel) if wanted(channel) => Push::Lost,
                _ => Push::Other,
            }
        }
        _ => Push::Other,
    }
}

/// Subscribes every wanted channel on `conn`; the connection is kept for later subscribes only if all succeed.
async fn subscribe_all(bus: &ShardedBus, conn: &ClusterConnection) -> bool {
    let mut state = bus.state.lock().await;
    let channels: Vec<String> = state.channels.iter().cloned().collect();
    let mut conn = conn.clone();
    for channel in &channels {
        if !matches!(
            tokio::time::timeout(RESPONSE_TIMEOUT, conn.ssubscribe(channel)).await,
            Ok(Ok(()))
        ) {
            return false;
        }
    }
    state.conn = Some(conn);
    true
}

/// Failed rounds of subscribing every channel on one connection before it is replaced by a new one.
const ROUNDS_PER_CONNECTION: u32 = 8;

/// How forwarding on one connection ended.
enum Ended {
    /// A subscription was lost: subscribe every channel again, on the same connection.
    Lost,
    /// The connection's push channel closed: make a new connection.
    Closed,
    /// The gateway is gone.
    Stopped,
}

/// Keeps the subscriptions: connects, subscribes every wanted channel (again after any loss), forwards messages,
/// and reports losses so that the gateway repairs. Ends when the receiver of `events` is dropped.
async fn run_bus(bus: Arc<ShardedBus>, events: mpsc::Sender<BusEvent>) {
    let mut delay = Duration::from_millis(50);
    let mut connected_before = false;
    let backoff = |delay: &mut Duration| {
        let wait = *delay;
        *delay = (*delay * 2).min(Duration::from_secs(2));
        tokio::time::sleep(wait)
    };
    'connect: loop {
        if events.is_closed() {
            return;
        }
        let (push_tx, mut pushes) = mpsc::unbounded_channel();
        let client = match cluster_client(&bus.nodes, Some(push_tx)) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "sharded pub/sub cannot start");
                return;
            }
        };
        let conn =
            match tokio::time::timeout(RESPONSE_TIMEOUT * 2, client.get_async_connection()).await {
                Ok(Ok(conn)) => conn,
                _ => {
                    backoff(&mut delay).await;
                    continue;
                }
            };
        loop {
            // The connection follows the cluster's slot map: each channel is subscribed on its slot's owner.
            let mut rounds = 0;
            loop {
                // Pushes from before this round say nothing about the subscriptions it makes.
                while pushes.try_recv().is_ok() {}
                if subscribe_all(&bus, &conn).await {
                    break;
                }
                rounds += 1;
                if rounds >= ROUNDS_PER_CONNECTION {
                    continue 'connect;
                }
                backoff(&mut delay).await;
                if events.is_closed() {
                    return;
                }
            }
            delay = Duration::from_millis(50);
            // Also after the first connect: a client that joined before it missed what was published until now.
            let event = if connected_before {
                tracing::info!("sharded pub/sub subscriptions restored");
                BusEvent::Resubscribed
            } else {
                BusEvent::Connected
            };
            if events.send(event).await.is_err() {
                return;
            }
            connected_before = true;
            let ended = forward(&bus, &mut pushes, &events).await;
            bus.state.lock().await.conn = None;
            match ended {
                Ended::Stopped => return,
                Ended::Lost | Ended::Closed => {
                    tracing::warn!("sharded pub/sub lost a subscription; subscribing again");
                    if events.send(BusEvent::Disconnected).await.is_err() {
                        return;
                    }
                    if matches!(ended, Ended::Closed) {
                        continue 'connect;
                    }
                }
            }
        }
    }
}

/// Forwards messages until a subscription is lost.
async fn forward(
    bus: &ShardedBus,
    pushes: &mut mpsc::UnboundedReceiver<PushInfo>,
    events: &mpsc::Sender<BusEvent>,
) -> Ended {
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return Ended::Closed };
                let push = {
                    let state = bus.state.lock().await;
                    classify(&push, |channel: &str| state.channels.contains(channel))
                };
                match push {
                    Push::Message(message) => {
                        if events.send(BusEvent::Message(message)).await.is_err() {
                            return Ended::Stopped;
                        }
                    }
                    Push::Lost => return Ended::Lost,
                    Push::Other => {}
                }
            }
            _ = bus.lost.notified() => return Ended::Lost,
            _ = events.closed() => return Ended::Stopped,
        }
    }
}
