//! What a bus tells its owner, said the same way by the single-node and the sharded bus: each edit is shown to the
//! object texts this process keeps before it is passed on (a broadcast keeps them current), and once every wanted
//! channel is subscribed the owner hears `Connected` the first time and `Resubscribed` after, since clients that
//! joined before may have missed messages either way.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::object_cache::ObjectCache;
use crate::hot::{BusEvent, BusMessage};

pub(super) struct Outlet {
    events: mpsc::Sender<BusEvent>,
    objects: Arc<ObjectCache>,
    connected_before: bool,
}

impl Outlet {
    pub(super) fn new(events: mpsc::Sender<BusEvent>, objects: Arc<ObjectCache>) -> Self {
        Self {
            events,
            objects,
            connected_before: false,
        }
    }

    /// The owner is gone: the bus should stop.
    pub(super) fn is_closed(&self) -> bool {
        self.events.is_closed()
    }

    /// Ends when the owner is gone.
    pub(super) async fn closed(&self) {
        self.events.closed().await
    }

    /// Every wanted channel is subscribed; `restored` is logged when that follows a loss. False once the owner is
    /// gone.
    pub(super) async fn subscribed(&mut self, restored: &str) -> bool {
        let event = if self.connected_before {
            tracing::info!("{restored}");
            BusEvent::Resubscribed
        } else {
            BusEvent::Connected
        };
        self.connected_before = true;
        self.events.send(event).await.is_ok()
    }

    /// Passes an edit on. False once the owner is gone.
    pub(super) async fn message(&self, message: BusMessage) -> bool {
        self.objects.observe(&message);
        self.events.send(BusEvent::Message(message)).await.is_ok()
    }

    /// The bus lost subscriptions and is getting them back. False once the owner is gone.
    pub(super) async fn disconnected(&self) -> bool {
        self.events.send(BusEvent::Disconnected).await.is_ok()
    }
}
