//! What a connection's writer sends, and in which order.
//!
//! A client tracks `seq` across acks and broadcasts, and treats a jump as lost messages. The edit script
//! publishes every edit in `seq` order, but the sender's ack comes back on a different path (the script's
//! reply) than the other clients' edits (the bus). The [`Sequencer`] holds an ack until the sender's own edit
//! has come back through the bus, so that the sender sees acks and broadcasts in `seq` order too. If the bus
//! lost the echo, the ack goes out after [`ACK_HOLD`] anyway: an ack is never withheld.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The longest an ack waits for its echo.
pub const ACK_HOLD: Duration = Duration::from_millis(250);
/// Echoes remembered without their ack (the reply was lost, e.g. to a response timeout).
const MAX_ORPHAN_ECHOES: usize = 1024;

/// A message for one connection's writer.
#[derive(Debug)]
pub enum Outbound {
    /// Another client's edit (`seq` > 0) or an ephemeral frame (`seq` == 0), encoded once for all recipients.
    Broadcast { seq: u64, frame: Arc<str> },
    /// This connection's own edit came back through the bus.
    Echo { seq: u64 },
    /// The ack of this connection's edit.
    Ack { seq: u64, frame: String },
    /// A reply outside the `seq` order (pong, error).
    Reply(String),
    /// Send a fresh snapshot (on connect, on `resync`, after the bus lost messages).
    Resync { req_id: Option<String> },
    /// Close the socket with this code.
    Close { code: u16, reason: &'static str },
}

/// Orders acks after their echoes and drops broadcasts a snapshot already covers.
#[derive(Debug, Default)]
pub struct Sequencer {
    /// `seq` of the last snapshot sent: broadcasts at or below it are already in the client's state.
    floor: u64,
    pending: BTreeMap<u64, (String, Instant)>,
    echoed: BTreeSet<u64>,
}

impl Sequencer {
    /// A broadcast to send, unless the last snapshot covers it.
    pub fn on_broadcast(&mut self, seq: u64, frame: Arc<str>) -> Option<Arc<str>> {
        (seq == 0 || seq > self.floor).then_some(frame)
    }

    /// The connection's own edit came back: its ack, if it is waiting.
    pub fn on_echo(&mut self, seq: u64) -> Option<String> {
        if let Some((frame, _)) = self.pending.remove(&seq) {
            return Some(frame);
        }
        self.echoed.insert(seq);
        while self.echoed.len() > MAX_ORPHAN_ECHOES {
            self.echoed.pop_first();
        }
        None
    }

    /// The ack to send now, or None if it waits for its echo.
    pub fn on_ack(&mut self, seq: u64, frame: String, now: Instant) -> Option<String> {
        if self.echoed.remove(&seq) || seq <= self.floor {
            return Some(frame);
        }
        self.pending.insert(seq, (frame, now + ACK_HOLD));
        None
    }

    /// A snapshot at `seq` was sent: acks it covers go out, broadcasts it covers are dropped from now on.
    pub fn on_snapshot(&mut self, seq: u64) -> Vec<String> {
        self.floor = seq;
        self.echoed.retain(|s| *s > seq);
        let later = self.pending.split_off(&(seq + 1));
        let covered = std::mem::replace(&mut self.pending, later);
        covered.into_values().map(|(frame, _)| frame).collect()
    }

    /// Acks whose echo did not come in time.
    pub fn overdue(&mut self, now: Instant) -> Vec<String> {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(s, _)| *s)
            .collect();
        due.into_iter()
            .filter_map(|s| self.pending.remove(&s))
            .map(|(frame, _)| frame)
            .collect()
    }

    /// Every waiting ack, in `seq` order (the bus is known to have lost messages).
    pub fn release_all(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending)
            .into_values()
            .map(|(frame, _)| frame)
            .collect()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|(_, at)| *at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_waits_for_its_echo() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        assert_eq!(s.on_ack(5, "ack5".into(), now), None);
        assert_eq!(s.on_echo(5), Some("ack5".into()));
        assert!(s.next_deadline().is_none());
    }

    #[test]
    fn echo_before_ack_releases_ack_at_once() {
        let mut s = Sequencer::default();
        assert_eq!(s.on_echo(7), None);
        assert_eq!(
            s.on_ack(7, "ack7".into(), Instant::now()),
            Some("ack7".into())
        );
    }

    #[test]
    fn lost_echo_releases_ack_after_hold() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        s.on_ack(3, "ack3".into(), now);
        assert!(s.overdue(now).is_empty());
        assert_eq!(s.overdue(now + ACK_HOLD), vec!["ack3".to_string()]);
    }

    #[test]
    fn snapshot_covers_older_broadcasts_and_acks() {
        let mut s = Sequencer::default();
        let now = Instant::now();
        s.on_ack(9, "ack9".into(), now);
        s.on_ack(12, "ack12".into(), now);
        assert_eq!(s.on_snapshot(10), vec!["ack9".to_string()]);
        assert!(s.on_broadcast(10, Arc::from("b10")).is_none());
        assert!(s.on_broadcast(11, Arc::from("b11")).is_some());
        assert!(s.on_broadcast(0, Arc::from("presence")).is_some());
        assert_eq!(s.release_all(), vec!["ack12".to_string()]);
    }
}
