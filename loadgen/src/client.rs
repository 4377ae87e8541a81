//! One simulated canvas client: one tokio task per WebSocket connection.
//!
//! Lifecycle: connect (bounded by a shared semaphore) → read the `snapshot` → the first client
//! of each project creates the objects → report ready → wait for the start signal → send
//! `update`s open-loop on a timer while reading acks and broadcasts → stop sending at the end
//! of the measured window → on the stop signal close the socket cleanly → hand back a
//! [`ClientOutcome`].
//!
//! The socket is split into sink and stream and both are driven from one `select!` loop, so
//! reading never waits behind a slow write (no read/write deadlock with a server that is
//! itself blocked writing to us).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, StreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{interval_at, sleep_until, timeout_at, Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async_with_config, MaybeTlsStream, WebSocketStream};

use crate::config::Config;
use crate::protocol::{self, Frame, UpdateFields, CREATE_REQ_PREFIX};
use crate::stats::{as_us, bump, ClientOutcome, Clock, Latencies, LatencyBuf};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Creates in flight per creator while setting up objects.
const CREATE_WINDOW: usize = 256;
/// Most sends issued on one timer tick when catching up (rates above 1,000/s per client,
/// where ticks are coarser than the send interval).
const MAX_BURST: u64 = 16;
/// Frames queued behind a slow socket before further scheduled sends count as missed.
const OUTQ_CAP: usize = 64;
/// How long a clean close may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Read buffer per connection: small, because 10,000 idle sockets must fit.
const READ_BUFFER: usize = 8 * 1024;

/// What the coordinator tells every client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Connect and set up, then wait.
    Wait,
    /// Load starts at this instant (warmup, then the measured window).
    Run(Instant),
    /// Stop everything and close the socket.
    Stop,
}

/// State shared by all client tasks.
pub(crate) struct Shared {
    pub cfg: Config,
    pub connect_sem: Semaphore,
    pub latencies: Latencies,
    pub clock: Clock,
    /// Every client's connect + setup must finish by then.
    pub connect_deadline: Instant,
    /// Edits issued and not yet answered, over all clients: the drain ends early at 0.
    pub outstanding: AtomicI64,
    /// Unix µs of the last ack / error / broadcast anyone received: the drain waits for quiet.
    pub last_activity_us: AtomicU64,
}

/// Which client this is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientSpec {
    pub global: u64,
    pub project: u32,
    pub local: u32,
}

/// The run's time windows as one client sees them.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    measure_start: Instant,
    measure_end: Instant,
    measure_start_us: u64,
    measure_end_us: u64,
}

/// Runs one client to completion and returns its figures.
pub(crate) async fn run_client(
    shared: Arc<Shared>,
    spec: ClientSpec,
    ready: mpsc::UnboundedSender<bool>,
    mut control: watch::Receiver<Control>,
) -> ClientOutcome {
    let mut out = ClientOutcome::new(spec.project, spec.local);
    let ws = match connect(&shared, spec).await {
        Ok(ws) => ws,
        Err(reason) => {
            out.connect_failure = Some(reason);
            let _ = ready.send(false);
            return out;
        }
    };
    let (sink, stream) = ws.split();
    let shard = spec.global as usize;
    let mut conn = Conn {
        tag: protocol::client_tag(&shared.cfg.run_id, spec.global),
        rng: SmallRng::seed_from_u64(rand::rng().random::<u64>() ^ spec.global),
        shared,
        spec,
        sink,
        stream,
        out,
        pending: HashMap::new(),
        got_snapshot: false,
        existing: None,
        creates_outstanding: HashSet::new(),
        creates_failed: 0,
        timeline: None,
        ack_buf: LatencyBuf::new(shard),
        fan_buf: LatencyBuf::new(shard),
        resuming: false,
    };
    match conn.setup().await {
        Ok(()) => {
            conn.out.connected = true;
            conn.out.ready_at = Some(Instant::now().into_std());
            let _ = ready.send(true);
            conn.run(&mut control).await;
        }
        Err(reason) => {
            conn.out.connect_failure = Some(reason);
            let _ = ready.send(false);
        }
    }
    conn.finish()
}

/// Opens the WebSocket; the error is a short, low-cardinality reason for the report.
async fn connect(shared: &Shared, spec: ClientSpec) -> Result<Ws, String> {
    let deadline = shared.connect_deadline;
    let _permit = match timeout_at(deadline, shared.connect_sem.acquire()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(_)) => return Err("cancelled".into()),
        Err(_) => return Err("timeout waiting for a connect slot".into()),
    };
    let url = shared.cfg.ws_url(spec.global, spec.project);
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    match timeout_at(deadline, connect_async_with_config(url, Some(config), true)).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err("timeout connecting".into()),
    }
}

/// Short, stable description of a WebSocket error (used as a report key).
fn describe(e: &WsError) -> String {
    match e {
        WsError::Http(resp) => format!("http {}", resp.status().as_u16()),
        WsError::Io(io) => match io.raw_os_error() {
            Some(errno) => format!("io {:?} (os error {errno})", io.kind()),
            None => format!("io {:?}", io.kind()),
        },
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".into(),
        WsError::Protocol(p) => format!("protocol: {p}"),
        WsError::Capacity(c) => format!("capacity: {c}"),
        WsError::Tls(_) => "tls".into(),
        WsError::Url(u) => format!("url: {u}"),
        other => {
            let mut s = other.to_string();
            s.truncate(80);
            s
        }
    }
}

/// How the wait for the start signal ended.
enum Start {
    At(Instant),
    Stopped,
    Disconnected(String),
}

/// Result of handling one frame.
enum Flow {
    Continue,
    /// The server closed the connection (close frame), with a reason.
    Closed(String),
}

struct Conn {
    shared: Arc<Shared>,
    spec: ClientSpec,
    tag: String,
    rng: SmallRng,
    sink: SplitSink<Ws, Message>,
    stream: SplitStream<Ws>,
    out: ClientOutcome,
    /// Edit number → (issued at, inside the measured window).
    pending: HashMap<u64, (Instant, bool)>,
    got_snapshot: bool,
    /// Object ids in the first snapshot (only kept by the creator).
    existing: Option<HashSet<String>>,
    creates_outstanding: HashSet<u32>,
    creates_failed: u64,
    timeline: Option<Timeline>,
    ack_buf: LatencyBuf,
    fan_buf: LatencyBuf,
    /// A reconnect after a drop waits for its `caught_up` or `snapshot`.
    resuming: bool,
}

impl Conn {
    fn is_creator(&self) -> bool {
        self.spec.local == 0 && self.shared.cfg.rate > 0.0
    }

    /// Reads the snapshot and, for the creator, creates the missing objects.
    async fn setup(&mut self) -> Result<(), String> {
        let deadline = self.shared.connect_deadline;
        while !self.got_snapshot {
            let msg = timeout_at(deadline, self.stream.next())
                .await
                .map_err(|_| "timeout waiting for snapshot".to_string())?;
            if let Some(reason) = self.on_stream(msg) {
                return Err(format!("{reason} before snapshot"));
            }
        }
        if self.is_creator() {
            self.create_objects(deadline).await?;
        }
        Ok(())
    }

    async fn create_objects(&mut self, deadline: Instant) -> Result<(), String> {
        let existing = self.existing.take().unwrap_or_default();
        let todo: Vec<u32> = (0..self.shared.cfg.objects)
            .filter(|i| !existing.contains(&protocol::object_id(*i)))
            .collect();
        let mut next = 0;
        while next < todo.len() || !self.creates_outstanding.is_empty() {
            while self.creates_outstanding.len() < CREATE_WINDOW && next < todo.len() {
                let mut s = String::with_capacity(140);
                protocol::write_create(&mut s, todo[next]);
                self.creates_outstanding.insert(todo[next]);
                next += 1;
                match timeout_at(deadline, self.sink.feed(Message::text(s))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(format!("{} while creating objects", describe(&e))),
                    Err(_) => return self.creation_timed_out(todo.len(), next),
                }
            }
            match timeout_at(deadline, self.sink.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("{} while creating objects", describe(&e))),
                Err(_) => return self.creation_timed_out(todo.len(), next),
            }
            if self.creates_outstanding.is_empty() {
                continue;
            }
            match timeout_at(deadline, self.stream.next()).await {
                Ok(msg) => {
                    if let Some(reason) = self.on_stream(msg) {
                        return Err(format!("{reason} while creating objects"));
                    }
                }
                Err(_) => return self.creation_timed_out(todo.len(), next),
            }
        }
        if self.creates_failed > 0 {
            self.out.setup_warning = Some(format!(
                "project {}: {} of {} object creates failed (see errors.byCode)",
                self.spec.project,
                self.creates_failed,
                todo.len()
            ));
        }
        Ok(())
    }

    /// Creation ran into the connect deadline: carry on, but say so.
    fn creation_timed_out(&mut self, planned: usize, issued: usize) -> Result<(), String> {
        self.out.setup_warning = Some(format!(
            "project {}: object creation timed out ({} of {planned} issued, {} unanswered)",
            self.spec.project,
            issued,
            self.creates_outstanding.len()
        ));
        Ok(())
    }

    /// Waits for the start signal, runs the load, then closes on the stop signal.
    async fn run(&mut self, control: &mut watch::Receiver<Control>) {
        let t0 = match self.wait_for_start(control).await {
            Start::At(t0) => t0,
            Start::Stopped => return self.close().await,
            Start::Disconnected(reason) => return self.disconnected(reason),
        };
        let timeline = self.start_timeline(t0);
        match self.send_until_stopped(control, t0, timeline).await {
            Ok(()) => self.close().await,
            Err(reason) => self.disconnected(reason),
        }
    }

    /// Reads what arrives (broadcasts of other clients' setup) until the coordinator says when load starts.
    async fn wait_for_start(&mut self, control: &mut watch::Receiver<Control>) -> Start {
        loop {
            let current = *control.borrow_and_update();
            match current {
                Control::Run(t0) => return Start::At(t0),
                Control::Stop => return Start::Stopped,
                Control::Wait => {}
            }
            tokio::select! {
                changed = control.changed() => {
                    if changed.is_err() {
                        return Start::Stopped;
                    }
                }
                msg = self.stream.next() => {
                    if let Some(reason) = self.on_stream(msg) {
                        return Start::Disconnected(reason);
                    }
                }
            }
        }
    }

    /// The measured window of a run whose load starts at `t0`, remembered for classifying what arrives.
    fn start_timeline(&mut self, t0: Instant) -> Timeline {
        let cfg = &self.shared.cfg;
        let measure_start = t0 + cfg.warmup;
        let measure_end = measure_start + cfg.duration;
        let clock = self.shared.clock;
        let timeline = Timeline {
            measure_start,
            measure_end,
            measure_start_us: clock.unix_us(measure_start.into_std()),
            measure_end_us: clock.unix_us(measure_end.into_std()),
        };
        self.timeline = Some(timeline);
        timeline
    }

    /// Sends on this client's schedule until the window ends and reads until the stop signal; `Err` when the
    /// connection broke.
    async fn send_until_stopped(
        &mut self,
        control: &mut watch::Receiver<Control>,
        t0: Instant,
        tl: Timeline,
    ) -> Result<(), String> {
        let rate = self.shared.cfg.rate;
        let mut sending = rate > 0.0 && Instant::now() < tl.measure_end;
        let (first, mut ticker) = self.send_ticker(t0);
        let mut scheduled: u64 = 0;
        let mut outq: VecDeque<Message> = VecDeque::new();
        let mut dirty = false;
        let mut next_drop = self.next_drop();
        loop {
            // A drop waits until nothing is in flight, so that no edit's reply is lost with the socket.
            let may_drop =
                next_drop.is_some() && self.pending.is_empty() && outq.is_empty() && !dirty;
            tokio::select! {
                msg = self.stream.next() => {
                    if let Some(reason) = self.on_stream(msg) {
                        return Err(reason);
                    }
                }
                _ = sleep_until(next_drop.unwrap_or(t0)), if may_drop => {
                    self.drop_and_resume().await?;
                    next_drop = self.next_drop();
                }
                _ = ticker.tick(), if sending => {
                    let now = Instant::now();
                    if now >= tl.measure_end {
                        sending = false;
                        outq.shrink_to_fit();
                    } else {
                        self.issue(now, first, &mut scheduled, &mut outq, &tl);
                    }
                }
                res = poll_fn(|cx| drive_sink(cx, &mut self.sink, &mut outq, &mut dirty)),
                    if dirty || !outq.is_empty() =>
                {
                    res.map_err(|e| describe(&e))?;
                }
                changed = control.changed() => {
                    if changed.is_err() || *control.borrow() == Control::Stop {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// When to drop the socket next (`--drop-every`): exponentially distributed around the mean.
    fn next_drop(&mut self) -> Option<Instant> {
        let mean = self.shared.cfg.drop_every?;
        let u: f64 = self.rng.random_range(0.0001..1.0);
        Some(Instant::now() + mean.mul_f64(-u.ln()))
    }

    /// Closes the socket as a network blip would and reconnects with `?since=` the last seq seen.
    async fn drop_and_resume(&mut self) -> Result<(), String> {
        let _ = self.sink.close().await;
        self.out.drops += 1;
        let mut url = self.shared.cfg.ws_url(self.spec.global, self.spec.project);
        if let Some(seq) = self.out.seq.last() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("since={seq}"));
        }
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            connect_async_with_config(url, Some(config), true),
        )
        .await
        .map_err(|_| "timeout reconnecting after a drop".to_string())?
        .map_err(|e| describe(&e))?;
        let (sink, stream) = ws.split();
        self.sink = sink;
        self.stream = stream;
        self.resuming = true;
        Ok(())
    }

    /// The send timer: its first tick, at a random phase within one period after `t0`, and the ticker.
    fn send_ticker(&mut self, t0: Instant) -> (Instant, Interval) {
        let rate = self.shared.cfg.rate;
        // Timer ticks no finer than 1 ms; faster rates send several frames per tick.
        let period = if rate > 0.0 {
            Duration::from_secs_f64((1.0 / rate).max(0.001))
        } else {
            Duration::from_secs(3600)
        };
        // Spread clients' send phases so they don't all fire on the same millisecond.
        let first = t0 + period.mul_f64(self.rng.random::<f64>());
        let mut ticker = interval_at(first, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        (first, ticker)
    }

    /// Issues the sends due at `now` (open loop: the schedule does not wait for acks).
    fn issue(
        &mut self,
        now: Instant,
        first: Instant,
        scheduled: &mut u64,
        outq: &mut VecDeque<Message>,
        tl: &Timeline,
    ) {
        let rate = self.shared.cfg.rate;
        let due_total = (now.saturating_duration_since(first).as_secs_f64() * rate) as u64 + 1;
        let due = due_total.saturating_sub(*scheduled);
        *scheduled = (*scheduled).max(due_total);
        let room = OUTQ_CAP.saturating_sub(outq.len()) as u64;
        let send = due.min(MAX_BURST).min(room);
        if now >= tl.measure_start {
            self.out.missed_sends += due - send;
        }
        let measured = now >= tl.measure_start && now < tl.measure_end;
        let objects = self.shared.cfg.objects.max(1);
        for _ in 0..send {
            let n = self.out.sent_total;
            self.out.sent_total += 1;
            if measured {
                self.out.sent_measured += 1;
            }
            let fields = UpdateFields {
                n,
                object: self.rng.random_range(0..objects),
                x: self.rng.random_range(0..10_000),
                y: self.rng.random_range(0..10_000),
                t_us: self.shared.clock.unix_us(now.into_std()),
                client_tag: &self.tag,
            };
            let mut s = String::with_capacity(160);
            protocol::write_update(&mut s, &fields);
            outq.push_back(Message::text(s));
            self.pending.insert(n, (now, measured));
            self.shared.outstanding.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Handles one item from the stream; `Some(reason)` when the connection is gone.
    fn on_stream(&mut self, msg: Option<Result<Message, WsError>>) -> Option<String> {
        match msg {
            None => Some("eof".into()),
            Some(Err(e)) => Some(describe(&e)),
            Some(Ok(m)) => match self.on_message(m) {
                Flow::Continue => None,
                Flow::Closed(reason) => Some(reason),
            },
        }
    }

    fn on_message(&mut self, msg: Message) -> Flow {
        match msg {
            Message::Text(text) => {
                self.on_text(text.as_str());
                Flow::Continue
            }
            Message::Close(frame) => Flow::Closed(match frame {
                Some(f) => format!("close {}", u16::from(f.code)),
                None => "close".into(),
            }),
            // Pings are answered by tungstenite; binary frames are not part of the protocol.
            _ => Flow::Continue,
        }
    }

    fn on_text(&mut self, text: &str) {
        let now = Instant::now();
        let Some(frame) = protocol::parse(text) else {
            self.out.malformed_frames += 1;
            return;
        };
        let now_us = self.shared.clock.unix_us(now.into_std());
        match frame.kind.as_str() {
            "snapshot" if self.resuming => {
                self.resuming = false;
                self.out.resumed_by_snapshot += 1;
                if let Some(seq) = frame.seq {
                    self.out.seq.reset(seq);
                }
            }
            "caught_up" => {
                self.resuming = false;
                self.out.resumed += 1;
            }
            "snapshot" => self.on_snapshot(frame),
            "ack" => {
                self.activity(now_us);
                self.observe_seq(frame.seq);
                if let Some(req) = &frame.req_id {
                    self.on_reply(req.as_str(), now, None);
                }
            }
            "error" => {
                self.activity(now_us);
                let code = frame.code.as_ref().map_or("(no code)", |c| c.as_str());
                bump(&mut self.out.errors, code);
                if let Some(req) = &frame.req_id {
                    self.on_reply(req.as_str(), now, Some(code));
                }
            }
            "updated" => {
                self.activity(now_us);
                self.observe_seq(frame.seq);
                self.on_updated(frame, now_us);
            }
            "created" | "deleted" => {
                self.activity(now_us);
                self.observe_seq(frame.seq);
            }
            _ => {}
        }
    }

    fn activity(&self, now_us: u64) {
        self.shared
            .last_activity_us
            .store(now_us, Ordering::Relaxed);
    }

    fn observe_seq(&mut self, seq: Option<u64>) {
        if let Some(seq) = seq {
            self.out.seq.observe(seq);
        }
    }

    fn on_snapshot(&mut self, frame: Frame) {
        if let Some(seq) = frame.seq {
            self.out.seq.reset(seq);
        }
        if self.got_snapshot {
            self.out.extra_snapshots += 1;
            return;
        }
        self.got_snapshot = true;
        if self.is_creator() {
            let ids = frame
                .objects
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.id.0.into_owned())
                .collect();
            self.existing = Some(ids);
        }
    }

    /// An `ack` (`error == None`) or `error` for one of our requests.
    fn on_reply(&mut self, req: &str, now: Instant, error: Option<&str>) {
        if let Some(i) = req.strip_prefix(CREATE_REQ_PREFIX) {
            if let Ok(i) = i.parse::<u32>() {
                if self.creates_outstanding.remove(&i) && error.is_some_and(|c| c != "conflict") {
                    self.creates_failed += 1;
                }
            }
            return;
        }
        let entry = req
            .parse::<u64>()
            .ok()
            .and_then(|n| self.pending.remove(&n).map(|e| (n, e)));
        let Some((n, (sent_at, measured))) = entry else {
            if error.is_none() {
                self.out.unexpected_acks += 1;
            }
            return;
        };
        self.shared.outstanding.fetch_sub(1, Ordering::Relaxed);
        if !measured {
            return;
        }
        if error.is_some() {
            self.out.errored_measured += 1;
        } else {
            self.out.acked_measured += 1;
            self.out.acked.insert(n);
            let us = as_us(now.saturating_duration_since(sent_at));
            self.ack_buf.record(&self.shared.latencies.ack, us);
        }
    }

    /// A peer's edit: count the receipt and its fan-out latency.
    fn on_updated(&mut self, frame: Frame, now_us: u64) {
        let Some(stamp) = frame.patch.and_then(|p| p.lg) else {
            return;
        };
        let cfg = &self.shared.cfg;
        let Some(sender) = protocol::parse_client_tag(stamp.c.as_str(), &cfg.run_id) else {
            return;
        };
        let clients = u64::from(cfg.clients);
        if sender / clients != u64::from(self.spec.project) {
            return;
        }
        let sender_local = (sender % clients) as u32;
        if sender_local == self.spec.local {
            self.out.own_echoes += 1;
            return;
        }
        if !self
            .out
            .received
            .entry(sender_local)
            .or_default()
            .insert(stamp.n)
        {
            self.out.duplicate_receipts += 1;
            return;
        }
        if let Some(tl) = &self.timeline {
            if stamp.t >= tl.measure_start_us && stamp.t < tl.measure_end_us {
                let us = now_us.saturating_sub(stamp.t);
                self.fan_buf.record(&self.shared.latencies.fanout, us);
            }
        }
    }

    /// The server ended the connection before we did.
    fn disconnected(&mut self, reason: String) {
        self.out.disconnected_at = Some(Instant::now().into_std());
        self.out.disconnect_reason = Some(reason);
    }

    /// Clean close: send a close frame, then keep reading (late acks still count) until the
    /// server closes its side or the close timeout passes.
    async fn close(&mut self) {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "loadgen done".into(),
        };
        if !matches!(
            timeout_at(deadline, self.sink.send(Message::Close(Some(frame)))).await,
            Ok(Ok(()))
        ) {
            return;
        }
        while let Ok(Some(Ok(msg))) = timeout_at(deadline, self.stream.next()).await {
            if let Flow::Closed(_) = self.on_message(msg) {
                break;
            }
        }
    }

    fn finish(mut self) -> ClientOutcome {
        let left = self.pending.len() as i64;
        if left > 0 {
            self.shared.outstanding.fetch_sub(left, Ordering::Relaxed);
        }
        self.ack_buf.flush(&self.shared.latencies.ack);
        self.fan_buf.flush(&self.shared.latencies.fanout);
        self.out
    }
}

/// Pushes queued frames into the sink and flushes; ready when everything is written.
fn drive_sink(
    cx: &mut Context<'_>,
    sink: &mut SplitSink<Ws, Message>,
    outq: &mut VecDeque<Message>,
    dirty: &mut bool,
) -> Poll<Result<(), WsError>> {
    while !outq.is_empty() {
        ready!(Pin::new(&mut *sink).poll_ready(cx))?;
        if let Some(m) = outq.pop_front() {
            Pin::new(&mut *sink).start_send(m)?;
            *dirty = true;
        }
    }
    if *dirty {
        ready!(Pin::new(&mut *sink).poll_flush(cx))?;
        *dirty = false;
    }
    Poll::Ready(Ok(()))
}
