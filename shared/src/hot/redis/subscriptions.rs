//! The bookkeeping both buses share: which project channels this process wants, and the connection that holds
//! them while every one of them is subscribed. A subscribe that fails gives the connection up and rings `lost`,
//! so that the bus's own loop subscribes everything again and tells the gateway to repair: nothing else would
//! retry that channel, and its clients would miss broadcasts unnoticed.

use std::collections::HashSet;

use async_trait::async_trait;
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{Mutex, Notify};

use super::connection::RESPONSE_TIMEOUT;
use super::{unavailable, unavailable_because};
use crate::hot::keys::ProjectKeys;
use crate::hot::HotError;
use crate::ids::ProjectId;

/// A connection that can hold channel subscriptions.
#[async_trait]
pub(super) trait Subscriber: Clone + Send + Sync + 'static {
    async fn subscribe_to(&mut self, channel: &str) -> redis::RedisResult<()>;
    async fn unsubscribe_from(&mut self, channel: &str) -> redis::RedisResult<()>;
}

#[async_trait]
impl Subscriber for PubSubSink {
    async fn subscribe_to(&mut self, channel: &str) -> redis::RedisResult<()> {
        self.subscribe(channel).await
    }

    async fn unsubscribe_from(&mut self, channel: &str) -> redis::RedisResult<()> {
        self.unsubscribe(channel).await
    }
}

/// Sharded subscriptions, each made on the primary owning the channel's slot.
#[async_trait]
impl Subscriber for ClusterConnection {
    async fn subscribe_to(&mut self, channel: &str) -> redis::RedisResult<()> {
        self.ssubscribe(channel).await
    }

    async fn unsubscribe_from(&mut self, channel: &str) -> redis::RedisResult<()> {
        self.sunsubscribe(channel).await
    }
}

/// What an unsubscribe that fails says about the connection.
#[derive(Clone, Copy)]
pub(super) enum FailedUnsubscribe {
    /// The connection may be half-open (one pub/sub connection: nothing else would notice): give it up.
    GivesUp,
    /// The subscription stays, nobody wants it, and its messages are dropped on arrival.
    IsHarmless,
}

pub(super) struct Subscriptions<S> {
    state: Mutex<State<S>>,
    /// Rings when the connection was given up: the bus then subscribes every wanted channel again.
    pub(super) lost: Notify,
    /// The bus's name in errors ("pub/sub", "sharded pub/sub").
    name: &'static str,
    failed_unsubscribe: FailedUnsubscribe,
}

struct State<S> {
    channels: HashSet<String>,
    /// Present while every wanted channel is subscribed on it.
    holder: Option<S>,
}

impl<S: Subscriber> Subscriptions<S> {
    pub(super) fn new(name: &'static str, failed_unsubscribe: FailedUnsubscribe) -> Self {
        Self {
            state: Mutex::new(State {
                channels: HashSet::new(),
                holder: None,
            }),
            lost: Notify::new(),
            name,
            failed_unsubscribe,
        }
    }

    pub(super) async fn subscribe(&self, project: &ProjectId) -> Result<(), HotError> {
        let channel = ProjectKeys::new(project).channel;
        let mut state = self.state.lock().await;
        state.channels.insert(channel.clone());
        // Between connections the bus's loop subscribes every wanted channel.
        let Some(holder) = state.holder.as_mut() else {
            return Err(unavailable_because(format!(
                "{} is reconnecting",
                self.name
            )));
        };
        let failed =
            match tokio::time::timeout(RESPONSE_TIMEOUT, holder.subscribe_to(&channel)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => unavailable(e),
                Err(_) => unavailable_because(format!("{} subscribe timed out", self.name)),
            };
        state.holder = None;
        self.lost.notify_one();
        Err(failed)
    }

    pub(super) async fn unsubscribe(&self, project: &ProjectId) {
        let channel = ProjectKeys::new(project).channel;
        let mut state = self.state.lock().await;
        state.channels.remove(&channel);
        let Some(holder) = state.holder.as_mut() else {
            return;
        };
        let answered = matches!(
            tokio::time::timeout(RESPONSE_TIMEOUT, holder.unsubscribe_from(&channel)).await,
            Ok(Ok(()))
        );
        if !answered && matches!(self.failed_unsubscribe, FailedUnsubscribe::GivesUp) {
            state.holder = None;
            self.lost.notify_one();
        }
    }

    /// Subscribes every wanted channel on `holder`, which is then kept for later subscribes, if all succeed.
    pub(super) async fn subscribe_all(&self, mut holder: S) -> bool {
        let mut state = self.state.lock().await;
        let channels: Vec<String> = state.channels.iter().cloned().collect();
        for channel in &channels {
            if !matches!(
                tokio::time::timeout(RESPONSE_TIMEOUT, holder.subscribe_to(channel)).await,
                Ok(Ok(()))
            ) {
                return false;
            }
        }
        state.holder = Some(holder);
        true
    }

    /// The connection is gone: subscribes wait for the next one.
    pub(super) async fn give_up(&self) {
        self.state.lock().await.holder = None;
    }

    pub(super) async fn wants(&self, channel: &str) -> bool {
        self.state.lock().await.channels.contains(channel)
    }
}
