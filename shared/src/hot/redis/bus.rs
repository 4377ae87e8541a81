//! Fan-out on a single Redis: one pub/sub connection per process, subscribed to the channel of every project this
//! process has a client in, rebuilt (and every channel subscribed again) whenever it fails, with the losses
//! reported so that the gateway repairs what its clients missed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use redis::Client;

use super::connection::RESPONSE_TIMEOUT;
use super::outlet::Outlet;
use super::subscriptions::{FailedUnsubscribe, Subscriptions};
use crate::hot::keys::ProjectKeys;
use crate::hot::{Bus, BusMessage, HotError};
use crate::ids::ProjectId;

/// Starts the bus on `client`; it connects, and keeps reconnecting, in the background, telling `outlet`.
pub(super) fn open(client: Client, outlet: Outlet) -> Arc<dyn Bus> {
    let bus = Arc::new(RedisBus {
        client,
        // One connection carries every subscription: one that does not answer an unsubscribe may be half-open, and
        // nothing would notice until a subscribe while its subscribers miss broadcasts.
        subscriptions: Subscriptions::new("pub/sub", FailedUnsubscribe::GivesUp),
    });
    tokio::spawn(run_bus(Arc::clone(&bus), outlet));
    bus
}

/// A bus that can never connect: every subscribe fails with `error`.
pub(super) fn broken(error: HotError) -> Arc<dyn Bus> {
    Arc::new(Broken(error))
}

struct Broken(HotError);

#[async_trait]
impl Bus for Broken {
    async fn subscribe(&self, _project: &ProjectId) -> Result<(), HotError> {
        Err(self.0.clone())
    }

    async fn unsubscribe(&self, _project: &ProjectId) -> Result<(), HotError> {
        Ok(())
    }
}

/// One pub/sub connection per process, with the set of channels it should be subscribed to.
struct RedisBus {
    client: Client,
    subscriptions: Subscriptions<PubSubSink>,
}

#[async_trait]
impl Bus for RedisBus {
    async fn subscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        self.subscriptions.subscribe(project).await
    }

    async fn unsubscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        self.subscriptions.unsubscribe(project).await;
        Ok(())
    }
}

fn parse_message(msg: &redis::Msg) -> Option<BusMessage> {
    parse_payload(msg.get_channel_name(), msg.get_payload_bytes())
}

/// A published edit: `origin \n seq \n traceparent \n frame` on a project's channel.
pub(super) fn parse_payload(channel: &str, payload: &[u8]) -> Option<BusMessage> {
    let project = ProjectKeys::project_of_channel(channel)?;
    let payload = std::str::from_utf8(payload).ok()?;
    let (origin, rest) = payload.split_once('\n')?;
    let (seq, rest) = rest.split_once('\n')?;
    let (trace, frame) = rest.split_once('\n')?;
    Some(BusMessage {
        project,
        origin: origin.to_string(),
        seq: seq.parse().ok()?,
        frame: Arc::from(frame),
        trace: (!trace.is_empty()).then(|| trace.to_string()),
    })
}

/// Keeps the pub/sub connection alive: connects, (re)subscribes every wanted channel, forwards messages, and
/// reports losses so the owner can resend snapshots. Ends when the owner is gone.
async fn run_bus(bus: Arc<RedisBus>, mut outlet: Outlet) {
    let mut delay = Duration::from_millis(50);
    loop {
        if outlet.is_closed() {
            return;
        }
        let pubsub =
            match tokio::time::timeout(RESPONSE_TIMEOUT, bus.client.get_async_pubsub()).await {
                Ok(Ok(p)) => p,
                _ => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
        let (sink, mut stream) = pubsub.split();
        if !bus.subscriptions.subscribe_all(sink).await {
            tokio::time::sleep(delay).await;
            continue;
        }
        delay = Duration::from_millis(50);
        if !outlet
            .subscribed("pub/sub reconnected; subscriptions restored")
            .await
        {
            return;
        }
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        if let Some(message) = parse_message(&msg) {
                            if !outlet.message(message).await {
                                return;
                            }
                        }
                    }
                    None => break,
                },
                _ = bus.subscriptions.lost.notified() => break,
                _ = outlet.closed() => return,
            }
        }
        bus.subscriptions.give_up().await;
        tracing::warn!("pub/sub connection lost; reconnecting");
        if !outlet.disconnected().await {
            return;
        }
    }
}
