//! Measurement bookkeeping, kept apart from the networking so it can be unit-tested.
//!
//! - [`SeqTracker`] counts `seq` jumps and regressions as one client sees them.
//! - [`BitSet`] records which per-client edit numbers were acked / received.
//! - [`Latencies`] holds shared, sharded HDR histograms: per-client histograms would cost
//!   ~140 KB each, far too much for 10,000 connections, so clients buffer a few samples
//!   locally ([`LatencyBuf`]) and flush them into a shard under a short lock.
//! - [`ClientOutcome`] is what one connection task hands back at the end, and
//!   [`Aggregate`] folds all of them together, including the "receipts missing" accounting.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Highest latency the histograms resolve (60 s, in microseconds); larger samples saturate.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Samples a client buffers before taking a shard lock.
const LOCAL_BUF: usize = 64;

/// Tracks the project `seq` one client observes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct SeqTracker {
    last: Option<u64>,
    /// Times `seq` jumped by more than one.
    pub gaps: u64,
    /// Sequence numbers skipped over by those jumps.
    pub skipped: u64,
    /// Times `seq` was not above the last one seen (duplicates included).
    pub regressions: u64,
}

impl SeqTracker {
    /// A `snapshot` sets the baseline without counting anything.
    pub(crate) fn reset(&mut self, seq: u64) {
        self.last = Some(seq);
    }

    /// An `ack`, `created`, `updated` or `deleted` carrying `seq`.
    pub(crate) fn observe(&mut self, seq: u64) {
        match self.last {
            None => self.last = Some(seq),
            Some(last) if seq > last => {
                let skipped = seq - last - 1;
                if skipped > 0 {
                    self.gaps += 1;
                    self.skipped += skipped;
                }
                self.last = Some(seq);
            }
            Some(_) => self.regressions += 1,
        }
    }

    /// Last sequence number seen, if any.
    pub(crate) fn last(&self) -> Option<u64> {
        self.last
    }
}

/// Growable bit set indexed by per-client edit number.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Sets bit `n`; returns false when it was already set.
    pub(crate) fn insert(&mut self, n: u64) -> bool {
        let (w, b) = ((n / 64) as usize, n % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let mask = 1u64 << b;
        let fresh = self.words[w] & mask == 0;
        self.words[w] |= mask;
        fresh
    }

    #[cfg(test)]
    pub(crate) fn contains(&self, n: u64) -> bool {
        let (w, b) = ((n / 64) as usize, n % 64);
        self.words
            .get(w)
            .is_some_and(|word| word & (1u64 << b) != 0)
    }

    /// Number of bits set.
    pub(crate) fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Number of bits set in both sets.
    pub(crate) fn intersection_len(&self, other: &BitSet) -> u64 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| u64::from((a & b).count_ones()))
            .sum()
    }
}

/// One clock for the whole process: wall-clock microseconds derived from a monotonic
/// `Instant`, so `lg.t` stamps and fan-out measurements never go backwards.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base: Instant,
    base_unix_us: u64,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let base_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Self {
            base: Instant::now(),
            base_unix_us,
        }
    }

    /// Unix microseconds at `at`.
    pub(crate) fn unix_us(&self, at: Instant) -> u64 {
        self.base_unix_us + at.saturating_duration_since(self.base).as_micros() as u64
    }

    pub(crate) fn now_us(&self) -> u64 {
        self.unix_us(Instant::now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants known to be valid: 1 µs .. 60 s at 3 significant figures.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| {
        Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant figures is valid"))
    })
}

/// A set of histograms shared by all clients, sharded to keep lock contention low.
#[derive(Debug)]
pub(crate) struct ShardedHistogram {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl ShardedHistogram {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    fn record_all(&self, shard: usize, samples: &[u64]) {
        let idx = shard % self.shards.len();
        let mut h = match self.shards[idx].lock() {
            Ok(h) => h,
            Err(poisoned) => poisoned.into_inner(),
        };
        for &v in samples {
            h.saturating_record(v.clamp(1, MAX_LATENCY_US));
        }
    }

    /// All shards merged into one histogram.
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for shard in &self.shards {
            let h = match shard.lock() {
                Ok(h) => h,
                Err(poisoned) => poisoned.into_inner(),
            };
            // Same bounds everywhere, so `add` cannot fail; ignore the impossible error.
            let _ = out.add(&*h);
        }
        out
    }
}

/// Ack and fan-out latency histograms (microseconds).
#[derive(Debug)]
pub(crate) struct Latencies {
    pub ack: ShardedHistogram,
    pub fanout: ShardedHistogram,
}

impl Latencies {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            ack: ShardedHistogram::new(shards),
            fanout: ShardedHistogram::new(shards),
        }
    }
}

/// A client's local sample buffer for one [`ShardedHistogram`].
#[derive(Debug)]
pub(crate) struct LatencyBuf {
    shard: usize,
    buf: Vec<u64>,
}

impl LatencyBuf {
    pub(crate) fn new(shard: usize) -> Self {
        Self {
            shard,
            buf: Vec::new(),
        }
    }

    pub(crate) fn record(&mut self, target: &ShardedHistogram, us: u64) {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(LOCAL_BUF);
        }
        self.buf.push(us);
        if self.buf.len() >= LOCAL_BUF {
            self.flush(target);
        }
    }

    pub(crate) fn flush(&mut self, target: &ShardedHistogram) {
        if !self.buf.is_empty() {
            target.record_all(self.shard, &self.buf);
            self.buf.clear();
        }
    }
}

/// Counts by string key (error codes, failure reasons), sorted for a stable report.
pub(crate) type Counts = BTreeMap<String, u64>;

pub(crate) fn bump(counts: &mut Counts, key: &str) {
    if let Some(v) = counts.get_mut(key) {
        *v += 1;
    } else {
        counts.insert(key.to_string(), 1);
    }
}

/// Everything one connection task reports at the end.
#[derive(Debug, Default)]
pub(crate) struct ClientOutcome {
    pub project: u32,
    /// Index of the client inside its project.
    pub local: u32,
    /// Connected and received its first snapshot.
    pub connected: bool,
    pub connect_failure: Option<String>,
    /// Something the report should mention about this client's setup (object creation).
    pub setup_warning: Option<String>,
    /// When the client became ready (snapshot received, objects created).
    pub ready_at: Option<Instant>,
    /// When the server side ended the connection (before we closed it), and why.
    pub disconnected_at: Option<Instant>,
    pub disconnect_reason: Option<String>,
    /// Edits issued in any phase.
    pub sent_total: u64,
    /// Edits issued inside the measured window, and what became of them.
    pub sent_measured: u64,
    pub acked_measured: u64,
    pub errored_measured: u64,
    /// Scheduled sends inside the measured window that were skipped (timer late or the
    /// socket backed up).
    pub missed_sends: u64,
    pub seq: SeqTracker,
    /// Snapshots after the first one (resync / gateway resubscribe).
    pub extra_snapshots: u64,
    /// Sockets this client dropped on purpose (`--drop-every`), and how each reconnect caught up.
    pub drops: u64,
    pub resumed: u64,
    pub resumed_by_snapshot: u64,
    pub errors: Counts,
    pub malformed_frames: u64,
    /// Acks whose reqId matched nothing outstanding.
    pub unexpected_acks: u64,
    /// `updated` frames carrying this client's own edit (the sender should get an ack only).
    pub own_echoes: u64,
    /// The same (sender, n) received more than once.
    pub duplicate_receipts: u64,
    /// Edit numbers of this client's edits sent in the measured window and acked.
    pub acked: BitSet,
    /// Edit numbers received per sender (index inside the project).
    pub received: HashMap<u32, BitSet>,
}

impl ClientOutcome {
    pub(crate) fn new(project: u32, local: u32) -> Self {
        Self {
            project,
            local,
            ..Self::default()
        }
    }

    /// Connected before `start` and not dropped by the server until we closed it.
    pub(crate) fn whole_time(&self, start: Instant) -> bool {
        self.connected
            && self.ready_at.is_some_and(|t| t <= start)
            && self.disconnected_at.is_none()
    }

    /// Still connected at `at` (used for "connections held" at the end of the duration).
    pub(crate) fn held_at(&self, at: Instant) -> bool {
        self.connected
            && self.ready_at.is_some_and(|t| t <= at)
            && self.disconnected_at.is_none_or(|t| t >= at)
    }
}

/// Receipt accounting totals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReceiptTotals {
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
}

/// Per-client data needed for receipts accounting.
#[derive(Debug, Default)]
struct ReceiptClient {
    whole_time: bool,
    acked: BitSet,
    received: HashMap<u32, BitSet>,
}

/// All client outcomes folded together.
#[derive(Debug, Default)]
pub(crate) struct Aggregate {
    pub planned: u64,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_failure_reasons: Counts,
    pub disconnects: u64,
    pub disconnect_reasons: Counts,
    pub held_at_end: u64,
    pub whole_time: u64,
    pub sent_total: u64,
    pub sent_measured: u64,
    pub acked_measured: u64,
    pub errored_measured: u64,
    pub missed_sends: u64,
    pub seq_gaps: u64,
    pub seq_skipped: u64,
    pub seq_regressions: u64,
    pub extra_snapshots: u64,
    pub drops: u64,
    pub resumed: u64,
    pub resumed_by_snapshot: u64,
    pub errors: Counts,
    pub malformed_frames: u64,
    pub unexpected_acks: u64,
    pub own_echoes: u64,
    pub duplicate_receipts: u64,
    /// Tasks that had to be aborted at the end (their figures are lost).
    pub unfinished: u64,
    projects: BTreeMap<u32, BTreeMap<u32, ReceiptClient>>,
}

impl Aggregate {
    pub(crate) fn new(planned: u64) -> Self {
        Self {
            planned,
            ..Self::default()
        }
    }

    /// Folds in one client. `start` is when load began (end of the connect phase) and
    /// `measure_end` when the measured window closed.
    pub(crate) fn add(&mut self, o: ClientOutcome, start: Instant, measure_end: Instant) {
        if o.connected {
            self.connected += 1;
        } else {
            self.connect_failures += 1;
            bump(
                &mut self.connect_failure_reasons,
                o.connect_failure.as_deref().unwrap_or("unknown"),
            );
        }
        if o.disconnected_at.is_some() {
            self.disconnects += 1;
            bump(
                &mut self.disconnect_reasons,
                o.disconnect_reason.as_deref().unwrap_or("unknown"),
            );
        }
        let whole_time = o.whole_time(start);
        self.whole_time += u64::from(whole_time);
        self.held_at_end += u64::from(o.held_at(measure_end));
        self.sent_total += o.sent_total;
        self.sent_measured += o.sent_measured;
        self.acked_measured += o.acked_measured;
        self.errored_measured += o.errored_measured;
        self.missed_sends += o.missed_sends;
        self.seq_gaps += o.seq.gaps;
        self.seq_skipped += o.seq.skipped;
        self.seq_regressions += o.seq.regressions;
        self.extra_snapshots += o.extra_snapshots;
        self.drops += o.drops;
        self.resumed += o.resumed;
        self.resumed_by_snapshot += o.resumed_by_snapshot;
        for (code, n) in &o.errors {
            *self.errors.entry(code.clone()).or_insert(0) += n;
        }
        self.malformed_frames += o.malformed_frames;
        self.unexpected_acks += o.unexpected_acks;
        self.own_echoes += o.own_echoes;
        self.duplicate_receipts += o.duplicate_receipts;
        if o.connected {
            self.projects.entry(o.project).or_default().insert(
                o.local,
                ReceiptClient {
                    whole_time,
                    acked: o.acked,
                    received: o.received,
                },
            );
        }
    }

    /// For each acked (measured) edit, every other client of its project that was
    /// connected the whole time should have received it exactly once.
    pub(crate) fn receipts(&self) -> ReceiptTotals {
        let mut t = ReceiptTotals::default();
        for clients in self.projects.values() {
            let whole: u64 = clients.values().filter(|c| c.whole_time).count() as u64;
            for sender in clients.values() {
                let acked = sender.acked.count();
                let receivers = whole - u64::from(sender.whole_time);
                t.expected += acked * receivers;
            }
            for receiver in clients.values().filter(|c| c.whole_time) {
                for (sender_local, got) in &receiver.received {
                    if let Some(sender) = clients.get(sender_local) {
                        t.received += got.intersection_len(&sender.acked);
                    }
                }
            }
        }
        t.missing = t.expected.saturating_sub(t.received);
        t
    }
}

/// Converts a `Duration` to histogram microseconds.
pub(crate) fn as_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_in_order_counts_nothing() {
        let mut s = SeqTracker::default();
        s.reset(10);
        for seq in 11..=20 {
            s.observe(seq);
        }
        assert_eq!((s.gaps, s.skipped, s.regressions), (0, 0, 0));
        assert_eq!(s.last(), Some(20));
    }

    #[test]
    fn seq_jumps_and_regressions() {
        let mut s = SeqTracker::default();
        s.reset(5);
        s.observe(6);
        s.observe(9); // jump: 7 and 8 skipped
        s.observe(8); // regression (late arrival)
        s.observe(9); // duplicate counts as regression
        s.observe(10);
        s.observe(20); // jump: 9 skipped
        assert_eq!(s.gaps, 2);
        assert_eq!(s.skipped, 2 + 9);
        assert_eq!(s.regressions, 2);
        // A new snapshot re-bases without counting.
        s.reset(3);
        s.observe(4);
        assert_eq!((s.gaps, s.regressions), (2, 2));
    }

    #[test]
    fn seq_without_snapshot_takes_first_value() {
        let mut s = SeqTracker::default();
        s.observe(100);
        s.observe(101);
        assert_eq!((s.gaps, s.regressions), (0, 0));
    }

    #[test]
    fn bitset_basics() {
        let mut b = BitSet::default();
        assert_eq!(b.count(), 0);
        assert!(b.insert(0));
        assert!(b.insert(130));
        assert!(!b.insert(130));
        assert!(b.contains(130) && b.contains(0) && !b.contains(1) && !b.contains(10_000));
        assert_eq!(b.count(), 2);
        let mut c = BitSet::default();
        c.insert(130);
        c.insert(5);
        assert_eq!(b.intersection_len(&c), 1);
        assert_eq!(c.intersection_len(&b), 1);
    }

    fn outcome(project: u32, local: u32, ready: Instant) -> ClientOutcome {
        let mut o = ClientOutcome::new(project, local);
        o.connected = true;
        o.ready_at = Some(ready);
        o
    }

    #[test]
    fn receipts_missing_accounting() {
        let t0 = Instant::now();
        let start = t0 + Duration::from_secs(1);
        let end = start + Duration::from_secs(10);
        // Project 0: clients 0, 1, 2 whole-time; client 3 dropped mid-run.
        let mut a = outcome(0, 0, t0);
        for n in [0, 1, 2, 3] {
            a.acked.insert(n);
        }
        let mut b = outcome(0, 1, t0);
        b.acked.insert(0);
        let mut c = outcome(0, 2, t0);
        let mut d = outcome(0, 3, t0);
        d.disconnected_at = Some(start + Duration::from_secs(2));
        d.disconnect_reason = Some("close 1011".into());
        d.acked.insert(7);

        // b got all of a's edits plus one unacked (n=9: not counted); c missed a's n=3.
        let mut from_a = BitSet::default();
        for n in [0, 1, 2, 3, 9] {
            from_a.insert(n);
        }
        b.received.insert(0, from_a);
        let mut from_a = BitSet::default();
        for n in [0, 1, 2] {
            from_a.insert(n);
        }
        c.received.insert(0, from_a);
        // a got b's edit; c did not.
        let mut from_b = BitSet::default();
        from_b.insert(0);
        a.received.insert(1, from_b);
        // a and b got d's edit, c did not; d's own receipts do not count (not whole-time).
        let mut from_d = BitSet::default();
        from_d.insert(7);
        a.received.insert(3, from_d.clone());
        b.received.insert(3, from_d.clone());
        d.received.insert(0, from_d);

        // A second project with one client: it has nobody to fan out to.
        let mut lone = outcome(1, 0, t0);
        lone.acked.insert(0);

        // A client that never connected does not count anywhere.
        let mut failed = ClientOutcome::new(0, 4);
        failed.connect_failure = Some("http 401".into());

        // A client that became ready after the start is not whole-time.
        let mut late = outcome(0, 5, start + Duration::from_millis(1));
        late.received.insert(0, BitSet::default());

        let mut agg = Aggregate::new(7);
        for o in [a, b, c, d, lone, failed, late] {
            agg.add(o, start, end);
        }
        // whole-time receivers in project 0: a, b, c (3).
        // a: 4 acked × 2 receivers = 8; b: 1 × 2 = 2; d: 1 × 3 = 3; c: 0. Project 1: 0.
        let r = agg.receipts();
        assert_eq!(r.expected, 13);
        // received: b←a 4, c←a 3, a←b 1, a←d 1, b←d 1 = 10
        assert_eq!(r.received, 10);
        assert_eq!(r.missing, 3);
        assert_eq!(agg.connected, 6);
        assert_eq!(agg.connect_failures, 1);
        assert_eq!(agg.connect_failure_reasons.get("http 401"), Some(&1));
        assert_eq!(agg.disconnects, 1);
        assert_eq!(agg.whole_time, 4);
        // held at the end: everyone connected except d (dropped before the end).
        assert_eq!(agg.held_at_end, 5);
    }

    #[test]
    fn latency_buffers_flush_into_shards() {
        let lat = Latencies::new(4);
        let mut b1 = LatencyBuf::new(0);
        let mut b2 = LatencyBuf::new(7);
        for v in 1..=100u64 {
            b1.record(&lat.ack, v * 1000);
            b2.record(&lat.ack, v * 1000);
        }
        // Not yet flushed: 64 of each are in, 36 of each are buffered.
        assert_eq!(lat.ack.merged().len(), 128);
        b1.flush(&lat.ack);
        b2.flush(&lat.ack);
        let h = lat.ack.merged();
        assert_eq!(h.len(), 200);
        assert_eq!(lat.fanout.merged().len(), 0);
        // Values above the histogram range saturate instead of being dropped.
        let mut b3 = LatencyBuf::new(1);
        b3.record(&lat.fanout, u64::MAX);
        b3.record(&lat.fanout, 0);
        b3.flush(&lat.fanout);
        assert_eq!(lat.fanout.merged().len(), 2);
    }

    #[test]
    fn clock_is_monotonic_and_unix() {
        let c = Clock::new();
        let a = c.now_us();
        let b = c.now_us();
        assert!(b >= a);
        assert!(a > 1_600_000_000_000_000); // after 2020
    }
}
