//! The order in which a connection's writer sends acks and broadcasts.
//!
//! A client tracks `seq` across acks and broadcasts, and treats a jump as lost messages. The edit script
//! publishes every edit in `seq` order, but the sender's ack comes back on a different path (the script's
//! reply) than the other clients' edits (the bus). The [`Sequencer`] holds an ack until the sender's own edit
//! has come back through the bus, so that the sender sees acks and broadcasts in `seq` order too. If the bus
//! lost the echo, the ack goes out after [`ACK_HOLD`] anyway: an ack is never withheld. A broadcast older than
//! such an ack that arrives after it would then be out of order; it is not sent, and the connection resyncs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The longest an ack waits for its echo.
pub(crate) const ACK_HOLD: Duration = Duration::from_millis(250);
/// Released-early acks remembered so that their late echo is ignored.
const MAX_ORPHAN_ECHOES: usize = 1024;

/// A frame ready to send: shared by every recipient of a broadcast, or owned by one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Shared(Arc<str>),
    Owned(String),
}

impl Frame {
    pub fn as_str(&self) -> &str {
        match self {
            Frame::Shared(s) => s,
            Frame::Owned(s) => s,
        }
    }
}

impl From<Frame> for tungstenite::Utf8Bytes {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Shared(s) => Self::from(&*s),
            Frame::Owned(s) => Self::from(s),
        }
    }
}

/// One place in the outgoing order.
#[derive(Debug)]
enum Slot {
    Ready(Frame),
    /// This connection's own edit at this `seq` came back through the bus before its ack: everything after it
    /// waits until the ack arrives (or the deadline passes).
    AwaitingAck {
        seq: u64,
        until: Instant,
    },
}

/// Puts a connection's acks and broadcasts in `seq` order and drops broadcasts a snapshot already covers.
///
/// The bus delivers every edit of a project in `seq` order, the connection's own ones as echoes. The ack of an
/// own edit takes the echo's place in that order: if the ack comes first it waits for its echo; if the echo
/// comes first, later frames wait for the ack. Either wait ends after [`ACK_HOLD`].
#[derive(Debug, Default)]
pub(crate) struct Sequencer {
    /// `seq` of the last snapshot sent: broadcasts at or below it are already in the client's state.
    floor: u64,
    /// Highest `seq` of a broadcast or echo taken in: the bus delivers in `seq` order, so one at or below it is
    /// a second delivery (a repair replaying from the journal what may already have come).
    high: u64,
    /// Acks whose echo has not come yet.
    early_acks: BTreeMap<u64, (String, Instant)>,
    /// Frames held behind an echo whose ack has not come yet.
    queue: VecDeque<Slot>,
    /// Acks that gave up waiting for their echo; a late echo is then just ignored.
    released_early: BTreeSet<u64>,
    /// The highest `seq` of an ack that gave up waiting: a broadcast below it would reach the client out of order.
    released_high: u64,
    /// A broadcast was held back because it came after a newer ack: the client needs a resync to get it.
    needs_resync: bool,
}

impl Sequencer {
    /// Another client's edit (or an ephemeral frame, `seq` 0).
    pub(crate) fn on_broadcast(&mut self, seq: u64, frame: Arc<str>) -> Vec<Frame> {
        if seq == 0 {
            // Ephemeral frames are not part of the seq order.
            return vec![Frame::Shared(frame)];
        }
        if seq <= self.floor.max(self.high) {
            return Vec::new();
        }
        if seq < self.released_high {
            // The client already has a newer ack: this edit can only reach it in order through a resync.
            self.needs_resync = true;
            return Vec::new();
        }
        self.high = seq;
        self.push(Slot::Ready(Frame::Shared(frame)))
    }

    /// Whether a broadcast was held back for coming after a newer ack (asks once; a snapshot settles it).
    pub(crate) fn take_needs_resync(&mut self) -> bool {
        std::mem::take(&mut self.needs_resync)
    }

    /// This connection's own edit came back through the bus.
    pub(crate) fn on_echo(&mut self, seq: u64, now: Instant) -> Vec<Frame> {
        if self.released_early.remove(&seq)
            || seq <= self.floor.max(self.high) && !self.early_acks.contains_key(&seq)
        {
            return Vec::new();
        }
        self.high = self.high.max(seq);
        match self.early_acks.remove(&seq) {
            Some((ack, _)) => self.push(Slot::Ready(Frame::Owned(ack))),
            None => self.push(Slot::AwaitingAck {
                seq,
                until: now + ACK_HOLD,
            }),
        }
    }

    /// The ack of this connection's edit.
    pub(crate) fn on_ack(&mut self, seq: u64, frame: String, now: Instant) -> Vec<Frame> {
        let waiting = self
            .queue
            .iter()
            .position(|slot| matches!(slot, Slot::AwaitingAck { seq: s, .. } if *s == seq));
        if let Some(i) = waiting {
            self.queue[i] = Slot::Ready(Frame::Owned(frame));
            return self.drain();
        }
        if seq <= self.floor {
            // A snapshot already covered this edit; the client still needs the reply to its request.
            return vec![Frame::Owned(frame)];
        }
        self.early_acks.insert(seq, (frame, now + ACK_HOLD));
        Vec::new()
    }

    /// A snapshot at `seq` was sent: acks it covers go out, broadcasts it covers are dropped.
    pub(crate) fn on_snapshot(&mut self, seq: u64) -> Vec<Frame> {
        self.floor = seq;
        self.needs_resync = false;
        let mut out = Vec::new();
        let held = std::mem::take(&mut self.queue);
        for slot in held {
            match slot {
                Slot::Ready(Frame::Owned(ack)) => out.push(Frame::Owned(ack)),
                Slot::Ready(Frame::Shared(frame)) => {
                    self.queue.push_back(Slot::Ready(Frame::Shared(frame)))
                }
                waiting @ Slot::AwaitingAck { .. } => self.queue.push_back(waiting),
            }
        }
        // Broadcasts the snapshot covers are dropped; echoes it covers no longer hold anything back.
        self.queue.retain(|slot| match slot {
            Slot::Ready(Frame::Shared(_)) => false,
            Slot::Ready(Frame::Owned(_)) => true,
            Slot::AwaitingAck { seq: s, .. } => *s > seq,
        });
        let later = self.early_acks.split_off(&(seq + 1));
        let covered = std::mem::replace(&mut self.early_acks, later);
        out.extend(covered.into_values().map(|(frame, _)| Frame::Owned(frame)));
        out.extend(self.drain());
        out
    }

    /// Frames whose wait is over.
    pub(crate) fn overdue(&mut self, now: Instant) -> Vec<Frame> {
        let mut out = Vec::new();
        let due: Vec<u64> = self
            .early_acks
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            if let Some((frame, _)) = self.early_acks.remove(&seq) {
                self.released_early.insert(seq);
                self.released_high = self.released_high.max(seq);
                out.push(Frame::Owned(frame));
            }
        }
        self.queue
            .retain(|slot| !matches!(slot, Slot::AwaitingAck { until, .. } if *until <= now));
        out.extend(self.drain());
        self.trim_released();
        out
    }

    /// Everything held, in order (the bus is known to have lost messages).
    pub(crate) fn release_all(&mut self) -> Vec<Frame> {
        self.queue
            .retain(|slot| !matches!(slot, Slot::AwaitingAck { .. }));
        let mut out = self.drain();
        let early = std::mem::take(&mut self.early_acks);
        self.released_early.extend(early.keys().copied());
        if let Some(high) = early.keys().next_back() {
            self.released_high = self.released_high.max(*high);
        }
        out.extend(early.into_values().map(|(frame, _)| Frame::Owned(frame)));
        self.trim_released();
        out
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let early = self.early_acks.values().map(|(_, at)| *at);
        let held = self.queue.iter().filter_map(|slot| match slot {
            Slot::AwaitingAck { until, .. } => Some(*until),
            Slot::Ready(_) => None,
        });
        early.chain(held).min()
    }

    fn push(&mut self, slot: Slot) -> Vec<Frame> {
        self.queue.push_back(slot);
        self.drain()
    }

    /// Sends from the front until something must wait.
    fn drain(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(Slot::Ready(_)) = self.queue.front() {
            if let Some(Slot::Ready(frame)) = self.queue.pop_front() {
                out.push(frame);
            }
        }
        out
    }

    fn trim_released(&mut self) {
        while self.released_early.len() > MAX_ORPHAN_ECHOES {
            self.released_early.pop_first();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(frames: Vec<Frame>) -> Vec<String> {
        frames.iter().map(|f| f.as_str().to_string()).collect()
    }

    fn b(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn ack_waits_for_its_echo() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        assert!(s.on_ack(5, "ack5".into(), now).is_empty());
        assert_eq!(texts(s.on_broadcast(4, b("b4"))), ["b4"]);
        assert_eq!(texts(s.on_echo(5, now)), ["ack5"]);
        assert!(s.next_deadline().is_none());
    }

    #[test]
    fn broadcasts_after_an_echo_wait_for_its_ack() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        assert!(s.on_echo(7, now).is_empty());
        assert!(
            s.on_broadcast(8, b("b8")).is_empty(),
            "b8 must not overtake ack7"
        );
        assert_eq!(texts(s.on_ack(7, "ack7".into(), now)), ["ack7", "b8"]);
        assert_eq!(texts(s.on_broadcast(9, b("b9"))), ["b9"]);
    }

    #[test]
    fn presence_is_never_held() {
        let mut s = Sequencer::default();
        s.on_echo(3, Instant::now());
        assert_eq!(texts(s.on_broadcast(0, b("cursor"))), ["cursor"]);
    }

    #[test]
    fn lost_echo_releases_ack_after_hold() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        s.on_ack(3, "ack3".into(), now);
        assert!(s.overdue(now).is_empty());
        assert_eq!(texts(s.overdue(now + ACK_HOLD)), ["ack3"]);
        assert!(
            s.on_echo(3, now + ACK_HOLD).is_empty(),
            "a late echo sends nothing twice"
        );
    }

    #[test]
    fn a_broadcast_older_than_an_early_released_ack_asks_for_a_resync() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        s.on_ack(12, "ack12".into(), now);
        assert_eq!(texts(s.overdue(now + ACK_HOLD)), ["ack12"]);
        // Edit 11 of another client was slow on the bus: sending it now would put 11 after 12.
        assert!(s.on_broadcast(11, b("b11")).is_empty());
        assert!(
            s.take_needs_resync(),
            "the client must resync to get edit 11"
        );
        assert!(!s.take_needs_resync(), "asked once");
        assert_eq!(texts(s.on_broadcast(13, b("b13"))), ["b13"]);
        // The snapshot covers 11; later broadcasts flow again.
        s.on_broadcast(11, b("b11"));
        assert!(s.on_snapshot(13).is_empty());
        assert!(!s.take_needs_resync());
        assert_eq!(texts(s.on_broadcast(14, b("b14"))), ["b14"]);
    }

    #[test]
    fn lost_reply_releases_held_frames_after_hold() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        s.on_echo(3, now);
        assert!(s.on_broadcast(4, b("b4")).is_empty());
        assert_eq!(s.next_deadline(), Some(now + ACK_HOLD));
        assert_eq!(texts(s.overdue(now + ACK_HOLD)), ["b4"]);
    }

    #[test]
    fn a_second_delivery_is_dropped_and_releases_a_waiting_ack() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        assert_eq!(texts(s.on_broadcast(4, b("b4"))), ["b4"]);
        assert!(s.on_echo(5, now).is_empty());
        assert_eq!(texts(s.on_ack(5, "ack5".into(), now)), ["ack5"]);
        // The bus lost 6 and 7 (this connection's own); the repair replays from 4, then live 8 comes again.
        assert!(s.on_ack(7, "ack7".into(), now).is_empty());
        assert!(s.on_broadcast(4, b("b4")).is_empty());
        assert!(s.on_echo(5, now).is_empty(), "an echo already matched");
        assert_eq!(texts(s.on_broadcast(6, b("b6"))), ["b6"]);
        assert_eq!(texts(s.on_echo(7, now)), ["ack7"]);
        assert_eq!(texts(s.on_broadcast(8, b("b8"))), ["b8"]);
        assert!(s.on_broadcast(8, b("b8")).is_empty());
        assert!(s.next_deadline().is_none());
    }

    #[test]
    fn snapshot_covers_older_broadcasts_and_acks() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        s.on_ack(9, "ack9".into(), now);
        s.on_ack(12, "ack12".into(), now);
        assert_eq!(texts(s.on_snapshot(10)), ["ack9"]);
        assert!(s.on_broadcast(10, b("b10")).is_empty());
        assert_eq!(texts(s.on_broadcast(11, b("b11"))), ["b11"]);
        assert_eq!(texts(s.on_echo(12, now)), ["ack12"]);
        assert_eq!(texts(s.release_all()), Vec::<String>::new());
    }
}
