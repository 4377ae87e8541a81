//! Fan-out on a Redis Cluster: sharded pub/sub, so that an edit's message travels only within the shard that owns
//! its project's slot (plain pub/sub on a cluster copies every message to every node). One cluster connection per
//! process holds an `SSUBSCRIBE` per project channel, each on the primary owning the channel's slot.
//!
//! The guarantees are the single-node bus's: a subscription lost to a broken node connection, a failover or a
//! slot moved elsewhere is subscribed again, on the slot's new owner, and the gateway is told to repair what its
//! clients missed only once every wanted channel is subscribed again.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::bus::parse_payload;
use super::connection::{cluster_client, RESPONSE_TIMEOUT};
use super::outlet::Outlet;
use super::subscriptions::{FailedUnsubscribe, Subscriptions};
use crate::hot::{Bus, HotError};
use crate::ids::ProjectId;

/// Starts the bus on the cluster behind `nodes`; it connects, and keeps its subscriptions, in the background,
/// telling `outlet`.
pub(super) fn open(nodes: &[String], outlet: Outlet) -> Arc<dyn Bus> {
    let bus = Arc::new(ShardedBus {
        nodes: nodes.to_vec(),
        subscriptions: Subscriptions::new("sharded pub/sub", FailedUnsubscribe::IsHarmless),
    });
    tokio::spawn(run_bus(Arc::clone(&bus), outlet));
    bus
}

struct ShardedBus {
    nodes: Vec<String>,
    subscriptions: Subscriptions<ClusterConnection>,
}

#[async_trait]
impl Bus for ShardedBus {
    async fn subscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        self.subscriptions.subscribe(project).await
    }

    async fn unsubscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        self.subscriptions.unsubscribe(project).await;
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

async fn classify(push: &PushInfo, bus: &ShardedBus) -> Push {
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
            if !bus.subscriptions.wants(channel).await {
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
                Some(channel) if bus.subscriptions.wants(channel).await => Push::Lost,
                _ => Push::Other,
            }
        }
        _ => Push::Other,
    }
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
/// and reports losses so that the gateway repairs. Ends when the owner is gone.
async fn run_bus(bus: Arc<ShardedBus>, mut outlet: Outlet) {
    let mut delay = Duration::from_millis(50);
    let backoff = |delay: &mut Duration| {
        let wait = *delay;
        *delay = (*delay * 2).min(Duration::from_secs(2));
        tokio::time::sleep(wait)
    };
    'connect: loop {
        if outlet.is_closed() {
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
                if bus.subscriptions.subscribe_all(conn.clone()).await {
                    break;
                }
                rounds += 1;
                if rounds >= ROUNDS_PER_CONNECTION {
                    continue 'connect;
                }
                backoff(&mut delay).await;
                if outlet.is_closed() {
                    return;
                }
            }
            delay = Duration::from_millis(50);
            if !outlet
                .subscribed("sharded pub/sub subscriptions restored")
                .await
            {
                return;
            }
            let ended = forward(&bus, &mut pushes, &outlet).await;
            bus.subscriptions.give_up().await;
            match ended {
                Ended::Stopped => return,
                Ended::Lost | Ended::Closed => {
                    tracing::warn!("sharded pub/sub lost a subscription; subscribing again");
                    if !outlet.disconnected().await {
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
    outlet: &Outlet,
) -> Ended {
    loop {
        tokio::select! {
            push = pushes.recv() => {
                let Some(push) = push else { return Ended::Closed };
                let push = classify(&push, bus).await;
                match push {
                    Push::Message(message) => {
                        if !outlet.message(message).await {
                            return Ended::Stopped;
                        }
                    }
                    Push::Lost => return Ended::Lost,
                    Push::Other => {}
                }
            }
            _ = bus.subscriptions.lost.notified() => return Ended::Lost,
            _ = outlet.closed() => return Ended::Stopped,
        }
    }
}
