//! Fan-out on a single Redis: one pub/sub connection per process, subscribed to the channel of every project this
//! process has a client in, rebuilt (and every channel subscribed again) whenever it fails, with the losses
//! reported so that the gateway repairs what its clients missed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::PubSubSink;
use redis::Client;
use tokio::sync::{mpsc, Mutex};

use super::connection::RESPONSE_TIMEOUT;
use super::{unavailable, unavailable_because};
use crate::hot::keys::ProjectKeys;
use crate::hot::{Bus, BusEvent, BusMessage, HotError};
use crate::ids::ProjectId;

/// Starts the bus on `client`; it connects, and keeps reconnecting, in the background.
pub(super) fn open(client: Client, events: mpsc::Sender<BusEvent>) -> Arc<dyn Bus> {
    let bus = Arc::new(RedisBus {
        client,
        state: Mutex::new(BusState::default()),
        reset: tokio::sync::Notify::new(),
    });
    tokio::spawn(run_bus(Arc::clone(&bus), events));
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
    state: Mutex<BusState>,
    /// Rings when a subscribe failed on a connection that looks alive: the connection is then dropped and
    /// rebuilt, which subscribes every wanted channel again and tells the gateway to resync its clients.
    reset: tokio::sync::Notify,
}

#[derive(Default)]
struct BusState {
    channels: HashSet<String>,
    /// Present while connected.
    sink: Option<PubSubSink>,
}

#[async_trait]
impl Bus for RedisBus {
    async fn subscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        let channel = ProjectKeys::new(project).channel;
        let mut state = self.state.lock().await;
        state.channels.insert(channel.clone());
        // While disconnected the reconnect loop subscribes every wanted channel.
        let Some(sink) = state.sink.as_mut() else {
            return Err(unavailable_because("pub/sub is reconnecting"));
        };
        let failed = match tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(&channel)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => unavailable(e),
            Err(_) => unavailable_because("pub/sub subscribe timed out"),
        };
        // Without a reconnect nothing would retry this channel, and its clients would miss broadcasts unnoticed.
        state.sink = None;
        self.reset.notify_one();
        Err(failed)
    }

    async fn unsubscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        let channel = ProjectKeys::new(project).channel;
        let mut state = self.state.lock().await;
        state.channels.remove(&channel);
        let Some(sink) = state.sink.as_mut() else {
            return Ok(());
        };
        if !matches!(
            tokio::time::timeout(RESPONSE_TIMEOUT, sink.unsubscribe(&channel)).await,
            Ok(Ok(()))
        ) {
            // A connection that does not answer may be half-open: nothing would notice until a subscribe, and
            // its subscribers would miss broadcasts meanwhile. Rebuilding it resubscribes what is wanted.
            state.sink = None;
            self.reset.notify_one();
        }
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
/// reports losses so the owner can resend snapshots. Ends when the receiver of `events` is dropped.
async fn run_bus(bus: Arc<RedisBus>, events: mpsc::Sender<BusEvent>) {
    let mut delay = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        if events.is_closed() {
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
        let (mut sink, mut stream) = pubsub.split();
        let resubscribed = {
            let mut state = bus.state.lock().await;
            let channels: Vec<String> = state.channels.iter().cloned().collect();
            let mut ok = true;
            for channel in &channels {
                if !matches!(
                    tokio::time::timeout(RESPONSE_TIMEOUT, sink.subscribe(channel)).await,
                    Ok(Ok(()))
                ) {
                    ok = false;
                    break;
                }
            }
            if ok {
                state.sink = Some(sink);
            }
            ok
        };
        if !resubscribed {
            tokio::time::sleep(delay).await;
            continue;
        }
        delay = Duration::from_millis(50);
        // Also after the first connect: a client that joined before it missed what was published until now.
        let event = if connected_before {
            tracing::info!("pub/sub reconnected; subscriptions restored");
            BusEvent::Resubscribed
        } else {
            BusEvent::Connected
        };
        if events.send(event).await.is_err() {
            return;
        }
        connected_before = true;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        if let Some(message) = parse_message(&msg) {
                            if events.send(BusEvent::Message(message)).await.is_err() {
                                return;
                            }
                        }
                    }
                    None => break,
                },
                _ = bus.reset.notified() => break,
                _ = events.closed() => return,
            }
        }
        bus.state.lock().await.sink = None;
        tracing::warn!("pub/sub connection lost; reconnecting");
        if events.send(BusEvent::Disconnected).await.is_err() {
            return;
        }
    }
}
