//! A connection's outgoing queue: the hub and the connection's reader put [`Outbound`]s in, its writer takes
//! them out.
//!
//! Why not a tokio mpsc channel: a bounded channel allocates its first block of 32 slots (1.3 KiB) and a
//! 512-byte cache-padded header when it is created, for every connection, idle or not; with 10,000 idle
//! sockets that was a quarter of the gateway's heap. This queue allocates only while something is queued.
//! It is bounded: [`OutboxSender::try_send`] fails when the queue is full, which is how the hub spots a
//! client that stopped reading, and [`OutboxSender::send`] waits for room, which is how the reader applies
//! backpressure to a client that sends faster than it reads its replies.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// A message for one connection's writer.
#[derive(Debug)]
pub enum Outbound {
    /// Another client's edit (`seq` > 0) or an ephemeral frame (`seq` == 0), encoded once for all recipients.
    Broadcast { seq: u64, frame: Arc<str> },
    /// This connection's own edit came back through the bus.
    Echo { seq: u64 },
    /// The ack of this connection's edit.
    Ack { seq: u64, frame: String },
    /// A reply outside the `seq` order (pong).
    Reply(String),
    /// An error reply (outside the `seq` order), with its code for the metrics.
    Error {
        code: canvas_shared::ErrorCode,
        frame: String,
    },
    /// Bring the client up to date (on connect, on `resync`): the edits after `since` from the journal when it
    /// still holds them all, else a fresh snapshot.
    Resync {
        req_id: Option<String>,
        since: Option<u64>,
    },
    /// The bus lost messages the journal could not supply: a fresh snapshot, retried until one is sent.
    Repair,
    /// An edit's outcome is unknown: send this `unknown_outcome` frame, then a fresh snapshot from which the
    /// client learns whether it was applied.
    UnknownOutcome { frame: String },
    /// Close the socket with this code.
    Close { code: u16, reason: &'static str },
}

/// Why [`OutboxSender::try_send`] did not queue a message.
#[derive(Debug)]
pub enum TrySendError {
    /// The queue holds its capacity: the client is not keeping up.
    Full,
    /// The connection's writer is gone.
    Closed,
}

/// Capacity kept when the queue runs empty; beyond it the buffer is freed.
const SHRINK_ABOVE: usize = 16;

struct Shared {
    state: Mutex<State>,
    /// Wakes the receiver: something was queued, or the last sender left.
    queued: Notify,
    /// Wakes a sender waiting for room.
    room: Notify,
    senders: AtomicUsize,
    capacity: usize,
}

struct State {
    queue: VecDeque<Outbound>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queue holding at most `capacity` messages (at least 1).
pub(crate) fn outbox(capacity: usize) -> (OutboxSender, OutboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            closed: false,
        }),
        queued: Notify::new(),
        room: Notify::new(),
        senders: AtomicUsize::new(1),
        capacity: capacity.max(1),
    });
    (OutboxSender(Arc::clone(&shared)), OutboxReceiver(shared))
}

/// Puts messages into a connection's queue; cheap to clone.
pub struct OutboxSender(Arc<Shared>);

impl OutboxSender {
    /// Queues `message` unless the queue is full or its receiver is gone.
    pub fn try_send(&self, message: Outbound) -> Result<(), TrySendError> {
        self.try_send_or_return(message).map_err(|(e, _)| e)
    }

    /// Queues `message`, waiting while the queue is full; fails only once the receiver is gone.
    pub async fn send(&self, mut message: Outbound) -> Result<(), TrySendError> {
        loop {
            match self.try_send_or_return(message) {
                Ok(()) => return Ok(()),
                Err((TrySendError::Full, back)) => {
                    message = back;
                    // A pop between the failed attempt and here leaves a permit, so this cannot miss it.
                    self.0.room.notified().await;
                }
                Err((closed, _)) => return Err(closed),
            }
        }
    }

    fn try_send_or_return(&self, message: Outbound) -> Result<(), (TrySendError, Outbound)> {
        {
            let mut state = self.0.lock();
            if state.closed {
                return Err((TrySendError::Closed, message));
            }
            if state.queue.len() >= self.0.capacity {
                return Err((TrySendError::Full, message));
            }
            state.queue.push_back(message);
        }
        self.0.queued.notify_one();
        Ok(())
    }
}

impl Clone for OutboxSender {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(&self.0))
    }
}

impl Drop for OutboxSender {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.queued.notify_one();
        }
    }
}

/// Takes messages out of a connection's queue, in the order they were put in.
pub(crate) struct OutboxReceiver(Arc<Shared>);

impl OutboxReceiver {
    /// The next message; None once the queue is empty and every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Outbound> {
        loop {
            let popped = {
                let mut state = self.0.lock();
                let popped = state.queue.pop_front();
                // A burst must not leave its high-water mark allocated for the rest of an idle connection.
                if state.queue.is_empty() && state.queue.capacity() > SHRINK_ABOVE {
                    state.queue = VecDeque::new();
                }
                popped
            };
            if let Some(message) = popped {
                self.0.room.notify_one();
                return Some(message);
            }
            if self.0.senders.load(Ordering::Acquire) == 0 {
                // The last sender may have queued something just before leaving.
                return self.0.lock().queue.pop_front();
            }
            // A push between the pop and here leaves a permit, so this cannot miss it.
            self.0.queued.notified().await;
        }
    }

    /// True when nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.lock().queue.is_empty()
    }
}

impl Drop for OutboxReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        // Free what nobody will send, and wake a sender waiting for room so it sees the close.
        state.queue = VecDeque::new();
        drop(state);
        self.0.room.notify_waiters();
        self.0.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn reply(text: &str) -> Outbound {
        Outbound::Reply(text.to_string())
    }

    fn text(o: Option<Outbound>) -> String {
        match o {
            Some(Outbound::Reply(t)) => t,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn messages_come_out_in_order_and_the_bound_holds() {
        let (tx, mut rx) = outbox(2);
        assert!(rx.is_empty());
        tx.try_send(reply("a")).unwrap();
        tx.try_send(reply("b")).unwrap();
        assert!(matches!(tx.try_send(reply("c")), Err(TrySendError::Full)));
        assert!(!rx.is_empty());
        assert_eq!(text(rx.recv().await), "a");
        tx.try_send(reply("c")).unwrap();
        assert_eq!(text(rx.recv().await), "b");
        assert_eq!(text(rx.recv().await), "c");
        assert!(rx.is_empty());
    }

    #[tokio::test]
    async fn a_drained_burst_gives_its_memory_back() {
        let (tx, mut rx) = outbox(1024);
        for n in 0..500 {
            tx.try_send(reply(&n.to_string())).unwrap();
        }
        assert!(rx.0.lock().queue.capacity() >= 500);
        for _ in 0..500 {
            rx.recv().await.unwrap();
        }
        assert!(rx.0.lock().queue.capacity() <= SHRINK_ABOVE);
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_a_send_from_another_task() {
        let (tx, mut rx) = outbox(4);
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.try_send(reply("late")).unwrap();
            tx
        });
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(text(got.unwrap()), "late");
        drop(sender.await.unwrap());
    }

    #[tokio::test]
    async fn send_waits_for_room_instead_of_failing() {
        let (tx, mut rx) = outbox(1);
        tx.try_send(reply("first")).unwrap();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(reply("second")).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "send must wait while the queue is full"
        );
        assert_eq!(text(rx.recv().await), "first");
        assert!(tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap());
        assert_eq!(text(rx.recv().await), "second");
    }

    #[tokio::test]
    async fn the_receiver_ends_when_every_sender_is_gone() {
        let (tx, mut rx) = outbox(4);
        let tx2 = tx.clone();
        tx.try_send(reply("queued")).unwrap();
        drop(tx);
        drop(tx2);
        assert_eq!(text(rx.recv().await), "queued");
        let end = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(end.unwrap().is_none());
    }

    #[tokio::test]
    async fn senders_see_a_closed_queue_once_the_receiver_is_gone() {
        let (tx, rx) = outbox(1);
        tx.try_send(reply("fills it")).unwrap();
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(reply("waits")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let result = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(
            result.unwrap().unwrap(),
            Err(TrySendError::Closed)
        ));
        assert!(matches!(tx.try_send(reply("x")), Err(TrySendError::Closed)));
    }
}
