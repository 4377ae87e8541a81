//! A connection's writer: takes what the outbox holds, puts acks and broadcasts in `seq` order, turns resyncs
//! into snapshots, and writes it all to the socket, one flush per drained burst. It ends the connection with
//! the close code its ending calls for.

use super::socket::{self, CloseFrame, Message, SocketError, Utf8Bytes, WebSocket};
use canvas_shared::hot::Snapshot;
use canvas_shared::protocol::{snapshot_frame, ServerMessage};
use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::outbox::{Outbound, OutboxReceiver};
use super::reader::error_frame;
use super::seq_order::{Frame, Sequencer};
use super::{close_code, sleep_until, Conn};
use crate::state::AppState;

/// A snapshot with more object bytes than this is written in fragments (see [`socket::send_fragmented`]).
const BIG_SNAPSHOT_BYTES: usize = 4 * socket::FRAGMENT_BYTES;

fn snapshot_bytes(snapshot: &Snapshot) -> usize {
    snapshot.objects.iter().map(String::len).sum()
}

/// How long a close frame may take to go out before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a failed repair snapshot waits before it is tried again.
const REPAIR_RETRY: Duration = Duration::from_secs(1);

/// Why the writer stops.
enum End {
    /// Send this close frame, then stop.
    Close { code: u16, reason: &'static str },
    /// A write did not complete: the client is too slow, the gateway is stopping, or the socket broke.
    WriteStopped,
    /// The outbox closed: the connection is over already.
    OutboxClosed,
}

/// What a write step yields: go on, or stop for this reason.
type Step<T = ()> = Result<T, End>;

pub(super) struct Writer<'a> {
    state: &'a AppState,
    conn: &'a Conn,
    sink: SplitSink<WebSocket, Message>,
    /// Cancelled by the hub when the client stops reading.
    kill: &'a CancellationToken,
    order: Sequencer,
    /// When the client's token stops being accepted.
    expiry: Option<Instant>,
    snapshot_sent: bool,
    /// Frames fed to the sink but not yet flushed.
    unflushed: bool,
    /// When a repair snapshot that failed is tried again.
    repair_at: Option<Instant>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(
        state: &'a AppState,
        conn: &'a Conn,
        sink: SplitSink<WebSocket, Message>,
        kill: &'a CancellationToken,
        expiry: Option<Instant>,
    ) -> Self {
        Self {
            state,
            conn,
            sink,
            kill,
            order: Sequencer::default(),
            expiry,
            snapshot_sent: false,
            unflushed: false,
            repair_at: None,
        }
    }

    /// Writes until the connection ends.
    pub(super) async fn run(mut self, mut outbox: OutboxReceiver) {
        let end = loop {
            if let Err(end) = self.step(&mut outbox).await {
                break end;
            }
        };
        self.finish(end).await;
    }

    /// Waits for the next thing to do and does it.
    async fn step(&mut self, outbox: &mut OutboxReceiver) -> Step {
        let (state, kill, conn, expiry) = (self.state, self.kill, self.conn, self.expiry);
        let deadline = self.order.next_deadline();
        let outbound = tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => {
                return Err(End::Close { code: close_code::GOING_AWAY, reason: "server shutting down" });
            }
            _ = kill.cancelled() => {
                tracing::info!(project = %conn.project, conn = %conn.id, "dropping slow client");
                return Err(End::Close { code: close_code::POLICY, reason: "client too slow: outgoing queue full" });
            }
            _ = sleep_until(expiry) => return Err(token_expired(conn)),
            _ = sleep_until(deadline) => return self.send_overdue().await,
            _ = sleep_until(self.repair_at) => Outbound::Repair,
            outbound = outbox.recv() => outbound.ok_or(End::OutboxClosed)?,
        };
        let frames = self.frames_for(outbound).await?;
        self.feed(frames).await?;
        // Everything queued for this socket goes out in one write: flushed only once the queue is drained
        // (or the write buffer fills), so a burst of broadcasts costs one syscall, not one per frame.
        if self.unflushed && outbox.is_empty() {
            self.unflushed = false;
            let stops = self.stops();
            stops.guard(self.sink.flush()).await?;
        }
        Ok(())
    }

    /// The frames one outbox message puts on the wire now (acks and broadcasts may be held for ordering).
    async fn frames_for(&mut self, outbound: Outbound) -> Step<Vec<Utf8Bytes>> {
        let frames = match outbound {
            Outbound::Broadcast { seq, frame } => {
                let mut frames = texts(self.order.on_broadcast(seq, frame));
                if self.order.take_needs_resync() {
                    frames.extend(self.resync(None).await?);
                }
                frames
            }
            Outbound::Echo { seq } => texts(self.order.on_echo(seq, Instant::now())),
            Outbound::Ack { seq, frame } => texts(self.order.on_ack(seq, frame, Instant::now())),
            Outbound::Reply(text) | Outbound::Error { frame: text, .. } => vec![text.into()],
            Outbound::Close { code, reason } => return Err(End::Close { code, reason }),
            Outbound::Resync { req_id, since } => return self.catch_up(req_id, since).await,
            Outbound::Repair => return self.repair().await,
            Outbound::UnknownOutcome { frame } => {
                // Before the snapshot, which a big one is written at once.
                self.feed(vec![Utf8Bytes::from(frame)]).await?;
                return self.resync(None).await;
            }
        };
        Ok(frames)
    }

    /// The edits the client missed since `since` when the journal still holds them, else a snapshot.
    async fn catch_up(
        &mut self,
        req_id: Option<String>,
        since: Option<u64>,
    ) -> Step<Vec<Utf8Bytes>> {
        if let Some(since) = since {
            if let Some(frames) = self.resume(since, req_id.as_deref()).await? {
                self.state.metrics.record_catch_up("client", "journal");
                return Ok(frames);
            }
            self.state.metrics.record_catch_up("client", "snapshot");
        }
        self.resync(req_id).await
    }

    /// Sends the journal's edits after `since`, then `caught_up`; `None` (nothing more to send than what was
    /// fed, which the snapshot that follows supersedes) when the journal cannot cover them.
    async fn resume(&mut self, since: u64, req_id: Option<&str>) -> Step<Option<Vec<Utf8Bytes>>> {
        let (state, conn) = (self.state, self.conn);
        let Some(mut replay) = state.loader.replay_for_client(&conn.project, since).await else {
            return Ok(None);
        };
        loop {
            match replay.next_page(state.hot.as_ref()).await {
                Ok(Some(entries)) => {
                    let frames = entries
                        .iter()
                        .map(|entry| Utf8Bytes::from(&*entry.frame))
                        .collect();
                    self.feed(frames).await?;
                }
                Ok(None) => break,
                Err(_) => return Ok(None),
            }
        }
        state.hub.observe_catch_up(&conn.project, replay.seq);
        let caught_up = ServerMessage::CaughtUp {
            req_id,
            seq: replay.seq,
            saved_seq: replay.saved_seq,
            client_id: &conn.id,
        }
        .to_text();
        self.snapshot_sent = true;
        let mut frames = vec![Utf8Bytes::from(caught_up)];
        // Broadcasts the replay covered are dropped and acks it covered go out, as after a snapshot.
        frames.extend(texts(self.order.on_snapshot(replay.seq)));
        Ok(Some(frames))
    }

    /// A snapshot after the bus lost messages; tried again later while it fails (the client cannot ask for
    /// what it does not know it missed).
    async fn repair(&mut self) -> Step<Vec<Utf8Bytes>> {
        self.repair_at = None;
        match Box::pin(self.state.loader.shared_snapshot(&self.conn.project)).await {
            Ok(snapshot) => self.snapshot_out(&snapshot, None).await,
            Err(r) => {
                tracing::warn!(project = %self.conn.project, conn = %self.conn.id, error = %r.message, "repair snapshot failed; retrying");
                self.repair_at = Some(Instant::now() + REPAIR_RETRY);
                Ok(Vec::new())
            }
        }
    }

    /// A fresh snapshot, with the acks it releases. Without a first snapshot the client cannot work, so that
    /// failing ends the connection with 1013; a later failure releases what was held and reports the error.
    async fn resync(&mut self, req_id: Option<String>) -> Step<Vec<Utf8Bytes>> {
        match Box::pin(self.state.loader.shared_snapshot(&self.conn.project)).await {
            Ok(snapshot) => self.snapshot_out(&snapshot, req_id.as_deref()).await,
            Err(r) if !self.snapshot_sent => {
                let error = error_frame(None, r.code, &r.message);
                let stops = self.stops();
                stops
                    .guard(self.sink.send(Message::Text(error.into())))
                    .await?;
                Err(End::Close {
                    code: close_code::TRY_AGAIN_LATER,
                    reason: "state unavailable; reconnect later",
                })
            }
            Err(r) => {
                let mut frames = texts(self.order.release_all());
                frames.push(error_frame(req_id.as_deref(), r.code, &r.message).into());
                Ok(frames)
            }
        }
    }

    /// The snapshot's frames; a big one is written at once, in fragments, and only what it released is returned.
    async fn snapshot_out(
        &mut self,
        snapshot: &Snapshot,
        req_id: Option<&str>,
    ) -> Step<Vec<Utf8Bytes>> {
        if snapshot_bytes(snapshot) > BIG_SNAPSHOT_BYTES {
            self.send_big_snapshot(snapshot, req_id).await
        } else {
            Ok(self.snapshot_frames(snapshot, req_id))
        }
    }

    fn snapshot_frames(&mut self, snapshot: &Snapshot, req_id: Option<&str>) -> Vec<Utf8Bytes> {
        let text = self.snapshot_text(snapshot, req_id, &snapshot.objects);
        let mut frames = vec![Utf8Bytes::from(text)];
        frames.extend(texts(self.snapshot_done(snapshot)));
        frames
    }

    /// The snapshot frame with these objects (all of the snapshot's, or none for the head of a big one).
    fn snapshot_text(
        &self,
        snapshot: &Snapshot,
        req_id: Option<&str>,
        objects: &[String],
    ) -> String {
        let conn = self.conn;
        let mut text = snapshot_frame(
            conn.project.as_str(),
            snapshot.seq,
            snapshot.saved_seq,
            Some(&conn.id),
            objects,
        );
        if let Some(req_id) = req_id {
            // Insert the reqId after the opening brace: {"reqId":"..",...
            let id = canvas_shared::protocol::json_string(req_id);
            text.insert_str(1, &format!("\"reqId\":{id},"));
        }
        text
    }

    /// A snapshot went out: what it covers is settled, and the frames it released follow.
    fn snapshot_done(&mut self, snapshot: &Snapshot) -> Vec<Frame> {
        self.state
            .hub
            .observe_catch_up(&self.conn.project, snapshot.seq);
        self.snapshot_sent = true;
        self.order.on_snapshot(snapshot.seq)
    }

    /// Writes a big snapshot straight from the shared read, one bounded fragment at a time, so that neither this
    /// connection nor its socket's write buffer holds the whole frame.
    async fn send_big_snapshot(
        &mut self,
        snapshot: &Snapshot,
        req_id: Option<&str>,
    ) -> Step<Vec<Utf8Bytes>> {
        let empty = self.snapshot_text(snapshot, req_id, &[]);
        // `…"objects":[]}` without its `]}`: the objects and the closing brackets follow.
        let head = &empty[..empty.len() - 2];
        let mut parts: Vec<&str> = Vec::with_capacity(2 * snapshot.objects.len() + 2);
        parts.push(head);
        for (i, object) in snapshot.objects.iter().enumerate() {
            if i > 0 {
                parts.push(",");
            }
            parts.push(object);
        }
        parts.push("]}");
        let stops = self.stops();
        stops
            .guard(socket::send_fragmented(&mut self.sink, &parts))
            .await?;
        Ok(texts(self.snapshot_done(snapshot)))
    }

    /// Acks whose echo never came, and frames held behind them, once their wait is over.
    async fn send_overdue(&mut self) -> Step {
        let stops = self.stops();
        for frame in self.order.overdue(Instant::now()) {
            stops
                .guard(self.sink.send(Message::Text(frame.into())))
                .await?;
        }
        Ok(())
    }

    async fn feed(&mut self, frames: Vec<Utf8Bytes>) -> Step {
        self.unflushed |= !frames.is_empty();
        let stops = self.stops();
        for frame in frames {
            stops.guard(self.sink.feed(Message::Text(frame))).await?;
        }
        Ok(())
    }

    fn stops(&self) -> Stops<'a> {
        Stops {
            state: self.state,
            kill: self.kill,
            conn: self.conn,
            expiry: self.expiry,
        }
    }

    /// After a write did not complete, a slow client is dropped without ceremony (it is not reading); otherwise
    /// the gateway is shutting down (or the socket broke) and the client is told to go away.
    async fn finish(mut self, end: End) {
        match end {
            End::Close { code, reason } => self.close(code, reason).await,
            End::WriteStopped if !self.kill.is_cancelled() => {
                self.close(close_code::GOING_AWAY, "server shutting down")
                    .await
            }
            End::WriteStopped | End::OutboxClosed => {}
        }
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: Utf8Bytes::from_static(reason),
        }));
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.sink.send(frame)).await;
    }
}

fn texts(frames: Vec<Frame>) -> Vec<Utf8Bytes> {
    frames.into_iter().map(Utf8Bytes::from).collect()
}

fn token_expired(conn: &Conn) -> End {
    tracing::info!(project = %conn.project, conn = %conn.id, user = %conn.identity.user, "token expired; closing");
    End::Close {
        code: close_code::POLICY,
        reason: "token expired; reconnect with a fresh token",
    }
}

/// What ends a write that does not complete: a client that stops reading blocks it; the hub then marks it slow,
/// the gateway may shut down, or the client's token may expire meanwhile, and the writer must notice each.
#[derive(Clone, Copy)]
struct Stops<'a> {
    state: &'a AppState,
    kill: &'a CancellationToken,
    conn: &'a Conn,
    expiry: Option<Instant>,
}

impl Stops<'_> {
    /// Runs a write unless one of the stops comes first.
    async fn guard(
        self,
        write: impl std::future::Future<Output = Result<(), SocketError>>,
    ) -> Step {
        tokio::select! {
            written = write => written.map_err(|_| End::WriteStopped),
            _ = self.kill.cancelled() => Err(End::WriteStopped),
            _ = self.state.shutdown.cancelled() => Err(End::WriteStopped),
            _ = sleep_until(self.expiry) => Err(token_expired(self.conn)),
        }
    }
}
