//! Fan-out on this gateway: which local connections are in which project, and delivery of bus messages to them.
//!
//! The hub subscribes to a project's channel when its first local client joins and unsubscribes when the last
//! leaves. Delivery never waits on a client: a connection whose queue is full is dropped as too slow.
//!
//! Pub/sub may lose messages (while it reconnects, or on its first connect). The hub then repairs each affected
//! project from its journal: it replays the edits after the last one its clients have, holding back live
//! messages meanwhile so that every client still sees `seq` order, and falls back to a snapshot per client
//! only when the journal no longer covers what was lost. It does the same when it sees a `seq` gap on the bus.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use canvas_shared::hot::{Bus, BusEvent, BusMessage, EditStore, HotError, JournalEntry};
use canvas_shared::protocol::ServerMessage;
use canvas_shared::ProjectId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::connection::outbox::{Outbound, OutboxSender, TrySendError};
use crate::metrics::GatewayMetrics;
use crate::replay::Replay;

/// Live messages one project holds back while it is repaired; beyond them its clients get snapshots instead.
const MAX_HELD_DURING_REPAIR: usize = 10_000;
/// How long a repair keeps trying to read the journal before its clients get snapshots instead.
const REPAIR_PATIENCE: Duration = Duration::from_secs(10);

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
    /// Every member has each edit up to this `seq` (from the bus, a repair, or its first snapshot); unknown
    /// until the first snapshot or bus message. A repair replays from here.
    delivered: Option<u64>,
    /// The repair under way, if any.
    repair: Option<Repair>,
}

/// A repair in progress: its generation (a newer loss restarts it) and the live messages held back meanwhile.
struct Repair {
    generation: u64,
    held: Vec<BusMessage>,
}

/// How a repair ended.
enum Repaired {
    /// Every lost edit was replayed; the project's `savedSeq` when it was read.
    FromJournal { saved_seq: u64 },
    /// Each member gets a snapshot.
    BySnapshot,
}

pub struct Hub {
    rooms: Mutex<HashMap<ProjectId, Room>>,
    hot: Arc<dyn EditStore>,
    bus: Arc<dyn Bus>,
    /// Projects whose channel this gateway has subscribed; the lock serializes subscribe/unsubscribe.
    subscriptions: tokio::sync::Mutex<HashSet<ProjectId>>,
    metrics: Arc<GatewayMetrics>,
    /// Hands out repair generations.
    repairs: std::sync::atomic::AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// Opens the bus and starts delivering its messages.
    pub fn start(hot: Arc<dyn EditStore>, metrics: Arc<GatewayMetrics>) -> Arc<Self> {
        let (events_tx, events_rx) = mpsc::channel(8192);
        let bus = hot.open_bus(events_tx);
        let hub = Arc::new(Self {
            rooms: Mutex::new(HashMap::new()),
            hot,
            bus,
            subscriptions: tokio::sync::Mutex::new(HashSet::new()),
            metrics,
            repairs: std::sync::atomic::AtomicU64::new(0),
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

    /// Records a `seq` learned outside the bus (an ack).
    pub fn observe_seq(&self, project: &ProjectId, seq: u64) {
        if let Some(room) = lock(&self.rooms).get_mut(project) {
            room.last_seq = room.last_seq.max(seq);
        }
    }

    /// A member was brought up to `seq` (a snapshot or a resume). Until the bus delivers something, that is
    /// what the room is known to hold: a loss before then is repaired from there.
    pub fn observe_catch_up(&self, project: &ProjectId, seq: u64) {
        if let Some(room) = lock(&self.rooms).get_mut(project) {
            room.last_seq = room.last_seq.max(seq);
            room.delivered.get_or_insert(seq);
        }
    }

    /// Number of local connections.
    pub fn connections(&self) -> usize {
        lock(&self.rooms).values().map(|r| r.members.len()).sum()
    }

    fn deliver_message(self: &Arc<Self>, message: BusMessage) {
        let mut rooms = lock(&self.rooms);
        let Some(room) = rooms.get_mut(&message.project) else {
            return;
        };
        room.last_seq = room.last_seq.max(message.seq);
        if message.seq > 0 {
            if let Some(repair) = &mut room.repair {
                if repair.held.len() < MAX_HELD_DURING_REPAIR {
                    repair.held.push(message);
                } else {
                    tracing::warn!(project = %message.project, "too much arrived during a repair; sending snapshots");
                    repair.held.push(message);
                    self.end_repair(room, Repaired::BySnapshot);
                }
                return;
            }
            match room.delivered {
                Some(delivered) if message.seq > delivered + 1 => {
                    tracing::info!(project = %message.project, delivered, seq = message.seq, "seq gap on the bus; repairing from the journal");
                    let project = message.project.clone();
                    self.begin_repair(&project, room, delivered, vec![message]);
                    return;
                }
                _ => room.delivered = Some(room.delivered.unwrap_or(0).max(message.seq)),
            }
        }
        self.send_to_members(room, &message);
    }

    fn send_to_members(&self, room: &Room, message: &BusMessage) {
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
                Err(TrySendError::Full) => self.drop_slow(member),
                Err(TrySendError::Closed) => {}
            }
        }
    }

    /// Never lets one client stall the others: a client whose queue is full (it stopped reading) is dropped.
    fn drop_slow(&self, member: &Member) {
        if !member.kill.is_cancelled() {
            self.metrics.slow_clients_dropped.inc();
        }
        member.kill.cancel();
    }

    /// Starts (or restarts) a repair of every room whose members may have missed messages: after the bus
    /// (re)connected, every room that already holds something.
    fn repair_all(self: &Arc<Self>) {
        let mut rooms = lock(&self.rooms);
        for (project, room) in rooms.iter_mut() {
            if let Some(delivered) = room.delivered {
                let held = room.repair.take().map(|r| r.held).unwrap_or_default();
                self.begin_repair(project, room, delivered, held);
            }
        }
    }

    fn begin_repair(
        self: &Arc<Self>,
        project: &ProjectId,
        room: &mut Room,
        from: u64,
        held: Vec<BusMessage>,
    ) {
        let generation = self
            .repairs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        room.repair = Some(Repair { generation, held });
        tokio::spawn(repair(Arc::clone(self), project.clone(), from, generation));
    }

    /// Runs `f` on the project's room while the repair of this generation is still the current one.
    fn with_repair<T>(
        &self,
        project: &ProjectId,
        generation: u64,
        f: impl FnOnce(&Self, &mut Room) -> T,
    ) -> Option<T> {
        let mut rooms = lock(&self.rooms);
        let room = rooms.get_mut(project)?;
        if room.repair.as_ref()?.generation != generation {
            return None;
        }
        Some(f(self, room))
    }

    fn deliver_replayed(&self, project: &ProjectId, room: &mut Room, entries: Vec<JournalEntry>) {
        for entry in entries {
            room.delivered = Some(room.delivered.unwrap_or(0).max(entry.seq));
            let message = BusMessage {
                project: project.clone(),
                origin: entry.origin,
                seq: entry.seq,
                frame: entry.frame,
                trace: None,
            };
            self.send_to_members(room, &message);
        }
    }

    /// Finishes the room's repair: snapshots when it came to that, then what was held back, in order.
    fn end_repair(&self, room: &mut Room, how: Repaired) {
        let Some(repair) = room.repair.take() else {
            return;
        };
        match how {
            Repaired::FromJournal { saved_seq } => {
                self.metrics.record_catch_up("bus", "journal");
                if saved_seq > 0 {
                    // A `saved` watermark may have been lost too.
                    let frame: Arc<str> =
                        Arc::from(ServerMessage::Saved { seq: saved_seq }.to_text());
                    for member in room.members.values() {
                        let saved = Outbound::Broadcast {
                            seq: 0,
                            frame: Arc::clone(&frame),
                        };
                        if let Err(TrySendError::Full) = member.tx.try_send(saved) {
                            self.drop_slow(member);
                        }
                    }
                }
            }
            Repaired::BySnapshot => {
                self.metrics.record_catch_up("bus", "snapshot");
                for member in room.members.values() {
                    if member.tx.try_send(Outbound::Repair).is_err() {
                        member.kill.cancel();
                    }
                }
            }
        }
        for message in repair.held {
            if room.delivered.is_none_or(|d| message.seq > d) {
                room.delivered = Some(message.seq);
                self.send_to_members(room, &message);
            }
        }
    }
}

/// Replays what the room's members may have missed after `from`, then ends the repair. A journal that cannot
/// be read is tried again for a while (the hot state may be restarting) before falling back to snapshots.
async fn repair(hub: Arc<Hub>, project: ProjectId, from: u64, generation: u64) {
    let deadline = tokio::time::Instant::now() + REPAIR_PATIENCE;
    let mut delay = Duration::from_millis(50);
    let opened = loop {
        match Replay::open(hub.hot.as_ref(), &project, from).await {
            Ok(opened) => break opened,
            Err(HotError::NotLoaded) => break None,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(%project, error = %e, "journal unreadable during a repair; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                if hub.with_repair(&project, generation, |_, _| ()).is_none() {
                    return;
                }
            }
            Err(_) => break None,
        }
    };
    let Some(mut replay) = opened else {
        hub.with_repair(&project, generation, |hub, room| {
            hub.end_repair(room, Repaired::BySnapshot)
        });
        return;
    };
    loop {
        match replay.next_page(hub.hot.as_ref()).await {
            Ok(Some(entries)) => {
                let delivered = hub.with_repair(&project, generation, |hub, room| {
                    hub.deliver_replayed(&project, room, entries)
                });
                if delivered.is_none() {
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::info!(%project, error = %e, "journal replay stopped; sending snapshots");
                hub.with_repair(&project, generation, |hub, room| {
                    hub.end_repair(room, Repaired::BySnapshot)
                });
                return;
            }
        }
    }
    let saved_seq = replay.saved_seq;
    hub.with_repair(&project, generation, |hub, room| {
        hub.end_repair(room, Repaired::FromJournal { saved_seq })
    });
}

async fn deliver(hub: Weak<Hub>, mut events: mpsc::Receiver<BusEvent>) {
    while let Some(event) = events.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        match event {
            BusEvent::Message(message) => hub.deliver_message(message),
            BusEvent::Connected => hub.repair_all(),
            BusEvent::Resubscribed => {
                hub.metrics.pubsub_reconnects.inc();
                hub.repair_all();
            }
            BusEvent::Disconnected => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use canvas_shared::hot::memory::MemoryHotState;
    use canvas_shared::hot::{
        Applied, EditContext, IdempotencyClaim, JournalPage, Reachable, Snapshot,
    };
    use canvas_shared::object::{Edit, NewObject, Patch};
    use canvas_shared::stored::StoredObject;
    use canvas_shared::Limits;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// The memory hot state, with a journal that cannot be read the first `failures` times.
    struct UnreadableJournal {
        inner: MemoryHotState,
        failures: AtomicUsize,
    }

    #[async_trait]
    impl Reachable for UnreadableJournal {
        async fn ping(&self) -> Result<(), HotError> {
            self.inner.ping().await
        }
    }

    #[async_trait]
    impl EditStore for UnreadableJournal {
        async fn apply(
            &self,
            p: &ProjectId,
            e: &Edit,
            c: EditContext<'_>,
        ) -> Result<Applied, HotError> {
            self.inner.apply(p, e, c).await
        }
        async fn snapshot(&self, p: &ProjectId) -> Result<Snapshot, HotError> {
            self.inner.snapshot(p).await
        }
        async fn journal_after(
            &self,
            p: &ProjectId,
            after: u64,
            max: usize,
        ) -> Result<JournalPage, HotError> {
            let failing = self
                .failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(HotError::Unavailable(canvas_shared::Cause::described(
                    "restarting",
                )));
            }
            self.inner.journal_after(p, after, max).await
        }
        async fn load(
            &self,
            p: &ProjectId,
            o: &[StoredObject],
            seq: u64,
            stamp: i64,
        ) -> Result<bool, HotError> {
            self.inner.load(p, o, seq, stamp).await
        }
        async fn raise_seq(&self, p: &ProjectId, floor: u64) -> Result<u64, HotError> {
            self.inner.raise_seq(p, floor).await
        }
        async fn mark_present(
            &self,
            gateway: &str,
            projects: &[ProjectId],
            until_ms: i64,
            ttl_ms: u64,
        ) -> Result<(), HotError> {
            self.inner
                .mark_present(gateway, projects, until_ms, ttl_ms)
                .await
        }
        async fn mark_absent(&self, gateway: &str, p: &ProjectId) -> Result<(), HotError> {
            self.inner.mark_absent(gateway, p).await
        }
        async fn publish_ephemeral(
            &self,
            p: &ProjectId,
            origin: &str,
            frame: &str,
        ) -> Result<(), HotError> {
            self.inner.publish_ephemeral(p, origin, frame).await
        }
        async fn claim_idempotency(
            &self,
            p: &ProjectId,
            user: &str,
            key: &str,
            ttl_ms: u64,
        ) -> Result<IdempotencyClaim, HotError> {
            self.inner.claim_idempotency(p, user, key, ttl_ms).await
        }
        async fn settle_idempotency(
            &self,
            p: &ProjectId,
            user: &str,
            key: &str,
            response: Option<&str>,
            ttl_ms: u64,
        ) -> Result<(), HotError> {
            self.inner
                .settle_idempotency(p, user, key, response, ttl_ms)
                .await
        }
        fn open_bus(&self, events: mpsc::Sender<BusEvent>) -> Arc<dyn Bus> {
            self.inner.open_bus(events)
        }
    }

    async fn edit(hot: &dyn EditStore, project: &ProjectId, edit: Edit) -> u64 {
        let limits = Limits::default();
        let ctx = EditContext {
            by: "bob",
            origin: "elsewhere",
            now_ms: 1,
            limits: &limits,
            seq_floor: 0,
        };
        hot.apply(project, &edit, ctx).await.expect("edit").seq
    }

    fn nudge(n: u64) -> Edit {
        let id = canvas_shared::ObjectId::parse("o1").unwrap();
        let patch = Patch::from_json(&id, serde_json::json!({"n": n}), &Limits::default()).unwrap();
        Edit::Update {
            id,
            patch,
            if_version: None,
        }
    }

    async fn next(rx: &mut crate::connection::outbox::OutboxReceiver) -> Outbound {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("something arrives")
            .expect("open")
    }

    fn broadcast_seq(outbound: Outbound) -> u64 {
        match outbound {
            Outbound::Broadcast { seq, .. } => seq,
            other => panic!("expected a broadcast, got {other:?}"),
        }
    }

    /// A project whose member has edit 1, then loses 2 and 3 on the bus and gets 4: the hub must notice the gap.
    async fn lose_two_edits(hot: &dyn EditStore, hub: &Hub, project: &ProjectId) {
        assert!(hot.load(project, &[], 0, 0).await.unwrap());
        let create = NewObject::from_json(
            serde_json::json!({"id":"o1","type":"rect"}),
            &Limits::default(),
        )
        .unwrap();
        hub.observe_catch_up(project, 0);
        edit(hot, project, Edit::Create(create)).await;
        hub.bus.unsubscribe(project).await.unwrap();
        edit(hot, project, nudge(2)).await;
        edit(hot, project, nudge(3)).await;
        hub.bus.subscribe(project).await.unwrap();
        edit(hot, project, nudge(4)).await;
    }

    #[tokio::test]
    async fn a_seq_gap_on_the_bus_is_replayed_from_the_journal_in_order() {
        let hot = MemoryHotState::new();
        let hub = Hub::start(Arc::new(hot.clone()), Arc::new(GatewayMetrics::default()));
        let project = ProjectId::parse("gap").unwrap();
        let (m, mut rx) = member();
        hub.join(&project, Arc::from("watcher"), m).await;
        lose_two_edits(&hot, &hub, &project).await;
        let got: Vec<u64> = [
            next(&mut rx).await,
            next(&mut rx).await,
            next(&mut rx).await,
            next(&mut rx).await,
        ]
        .into_iter()
        .map(broadcast_seq)
        .collect();
        assert_eq!(got, [1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_repair_whose_journal_read_fails_is_tried_again() {
        let hot = Arc::new(UnreadableJournal {
            inner: MemoryHotState::new(),
            failures: AtomicUsize::new(3),
        });
        let hub = Hub::start(hot.clone(), Arc::new(GatewayMetrics::default()));
        let project = ProjectId::parse("flaky").unwrap();
        let (m, mut rx) = member();
        hub.join(&project, Arc::from("watcher"), m).await;
        lose_two_edits(hot.as_ref(), &hub, &project).await;
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(broadcast_seq(next(&mut rx).await));
        }
        assert_eq!(got, [1, 2, 3, 4], "replayed once the journal could be read");
        assert_eq!(hot.failures.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_loss_the_journal_no_longer_covers_is_repaired_by_snapshots() {
        let hot = MemoryHotState::new().with_journal_len(1);
        let hub = Hub::start(Arc::new(hot.clone()), Arc::new(GatewayMetrics::default()));
        let project = ProjectId::parse("short").unwrap();
        let (m, mut rx) = member();
        hub.join(&project, Arc::from("watcher"), m).await;
        lose_two_edits(&hot, &hub, &project).await;
        assert_eq!(broadcast_seq(next(&mut rx).await), 1);
        assert!(matches!(next(&mut rx).await, Outbound::Repair));
        assert_eq!(
            broadcast_seq(next(&mut rx).await),
            4,
            "what was held back follows"
        );
    }

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
        let hub = Hub::start(Arc::new(hot.clone()), Arc::new(GatewayMetrics::default()));
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
