//! The JSON report: its shape (serde structs, camelCase) and how it is computed from the
//! aggregated client outcomes and histograms. Pure functions, so they are unit-tested.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::ConfigEcho;
use crate::stats::{Aggregate, Counts};

/// Whole report, printed pretty on stdout.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    pub config: ConfigEcho,
    pub durations: Durations,
    pub connections: Connections,
    pub edits: Edits,
    pub ack_latency_ms: LatencySummary,
    pub fanout_latency_ms: LatencySummary,
    pub seq: SeqReport,
    pub errors: ErrorsReport,
    pub receipts: Receipts,
    /// Protocol oddities worth a look (all zero against a correct gateway).
    pub anomalies: Anomalies,
    /// Human-readable notes (e.g. a project whose object creator failed).
    pub warnings: Vec<String>,
}

/// Phase lengths as they actually happened, in seconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Durations {
    /// From start until every client was ready (or the connect timeout).
    pub connect_secs: f64,
    pub warmup_secs: f64,
    /// The window the statistics cover.
    pub measured_secs: f64,
    /// Waiting for outstanding acks / broadcasts after sending stopped (≤ 2 s).
    pub drain_secs: f64,
    pub total_secs: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Connections {
    pub planned: u64,
    /// Clients that connected and received their snapshot.
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_failure_reasons: Counts,
    /// Connections the server closed or broke before the end of the run.
    pub disconnects: u64,
    pub disconnect_reasons: Counts,
    /// Still connected when the measured window ended (the figure for `--rate 0`).
    pub connections_held: u64,
    /// Connected before load started and never dropped: the fan-out receivers.
    pub connected_whole_time: u64,
    /// Tasks that did not finish in time and were aborted (their figures are missing).
    pub unfinished_clients: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Edits {
    /// Edits sent inside the measured window.
    pub sent: u64,
    /// Of those, acked (including acks that arrived during the drain).
    pub acked: u64,
    /// Of those, answered with an `error`.
    pub errored: u64,
    /// Of those, neither acked nor errored by the end.
    pub unanswered: u64,
    /// Scheduled sends skipped in the measured window (timer late or socket backed up).
    pub missed_sends: u64,
    /// Edits sent in any phase, warmup included.
    pub sent_including_warmup: u64,
    pub target_edits_per_sec: f64,
    /// `acked / measuredSecs`.
    pub achieved_edits_per_sec: f64,
}

/// Percentiles of a latency histogram, in milliseconds (0 everywhere when `count` is 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LatencySummary {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SeqReport {
    /// Times a client saw `seq` jump by more than one.
    pub gaps: u64,
    /// Sequence numbers skipped over by those jumps.
    pub skipped: u64,
    /// Times a client saw `seq` not above its last one.
    pub regressions: u64,
    /// Snapshots received after the initial one (gateway resubscribes).
    pub extra_snapshots: u64,
    /// Sockets dropped on purpose (`--drop-every`); reconnects that resumed from the journal (`caught_up`) and
    /// those that got a full snapshot instead.
    pub drops: u64,
    pub resumed: u64,
    pub resumed_by_snapshot: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorsReport {
    pub total: u64,
    /// `error` frames by `code`, all phases.
    pub by_code: Counts,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Receipts {
    /// Σ over acked measured edits of the project's other whole-time clients.
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Anomalies {
    /// Frames that were not JSON objects with a string `type`.
    pub malformed_frames: u64,
    /// Acks whose `reqId` matched nothing outstanding.
    pub unexpected_acks: u64,
    /// `updated` broadcasts a client got for its own edit.
    pub own_echoes: u64,
}

/// Summarises a microsecond histogram in milliseconds.
pub(crate) fn summarize(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    let ms = |us: u64| round3(us as f64 / 1000.0);
    LatencySummary {
        count: h.len(),
        p50: ms(h.value_at_quantile(0.50)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
        mean: round3(h.mean() / 1000.0),
    }
}

/// Rounds to three decimals (µs precision for milliseconds, ms precision for seconds).
pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Inputs that are not part of the aggregate.
pub(crate) struct ReportInputs {
    pub config: ConfigEcho,
    pub durations: Durations,
    pub ack: Histogram<u64>,
    pub fanout: Histogram<u64>,
    pub warnings: Vec<String>,
}

/// Builds the report from the aggregate.
pub(crate) fn build(agg: &Aggregate, inputs: ReportInputs) -> Report {
    let receipts = agg.receipts();
    let target = inputs.config.target_edits_per_sec;
    let d = inputs.durations;
    Report {
        config: inputs.config,
        durations: Durations {
            connect_secs: round3(d.connect_secs),
            warmup_secs: round3(d.warmup_secs),
            measured_secs: round3(d.measured_secs),
            drain_secs: round3(d.drain_secs),
            total_secs: round3(d.total_secs),
        },
        connections: connections(agg),
        edits: edits(agg, target, d.measured_secs),
        ack_latency_ms: summarize(&inputs.ack),
        fanout_latency_ms: summarize(&inputs.fanout),
        seq: SeqReport {
            gaps: agg.seq_gaps,
            skipped: agg.seq_skipped,
            regressions: agg.seq_regressions,
            extra_snapshots: agg.extra_snapshots,
            drops: agg.drops,
            resumed: agg.resumed,
            resumed_by_snapshot: agg.resumed_by_snapshot,
        },
        errors: ErrorsReport {
            total: agg.errors.values().sum(),
            by_code: agg.errors.clone(),
        },
        receipts: Receipts {
            expected: receipts.expected,
            received: receipts.received,
            missing: receipts.missing,
            duplicates: agg.duplicate_receipts,
        },
        anomalies: Anomalies {
            malformed_frames: agg.malformed_frames,
            unexpected_acks: agg.unexpected_acks,
            own_echoes: agg.own_echoes,
        },
        warnings: inputs.warnings,
    }
}

fn connections(agg: &Aggregate) -> Connections {
    Connections {
        planned: agg.planned,
        connected: agg.connected,
        connect_failures: agg.connect_failures,
        connect_failure_reasons: agg.connect_failure_reasons.clone(),
        disconnects: agg.disconnects,
        disconnect_reasons: agg.disconnect_reasons.clone(),
        connections_held: agg.held_at_end,
        connected_whole_time: agg.whole_time,
        unfinished_clients: agg.unfinished,
    }
}

/// Edits of the measured window; the achieved rate counts acks, over the measured seconds.
fn edits(agg: &Aggregate, target: f64, measured_secs: f64) -> Edits {
    let achieved = if measured_secs > 0.0 {
        round3(agg.acked_measured as f64 / measured_secs)
    } else {
        0.0
    };
    Edits {
        sent: agg.sent_measured,
        acked: agg.acked_measured,
        errored: agg.errored_measured,
        unanswered: agg
            .sent_measured
            .saturating_sub(agg.acked_measured + agg.errored_measured),
        missed_sends: agg.missed_sends,
        sent_including_warmup: agg.sent_total,
        target_edits_per_sec: target,
        achieved_edits_per_sec: achieved,
    }
}

/// Renders the report as pretty JSON.
pub(crate) fn to_json(report: &Report) -> String {
    serde_json::to_string_pretty(report)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise report: {e}\"}}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ClientOutcome, ShardedHistogram};
    use std::time::{Duration, Instant};

    fn counts_from<I: IntoIterator<Item = (&'static str, u64)>>(items: I) -> Counts {
        items.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn hist(values: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for v in values {
            h.record(v).expect("in range");
        }
        h
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        let s = summarize(&hist([]));
        assert_eq!(s, LatencySummary::default());
    }

    #[test]
    fn percentiles_in_milliseconds() {
        // 1..=1000 ms, one sample each.
        let s = summarize(&hist((1..=1000).map(|ms| ms * 1000)));
        assert_eq!(s.count, 1000);
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.002 + 0.001;
        assert!(close(s.p50, 500.0), "{s:?}");
        assert!(close(s.p95, 950.0), "{s:?}");
        assert!(close(s.p99, 990.0), "{s:?}");
        assert!(close(s.max, 1000.0), "{s:?}");
        assert!(close(s.mean, 500.5), "{s:?}");
    }

    #[test]
    fn skewed_distribution_tail() {
        // 990 fast samples (2 ms) and 10 slow ones (250 ms): p99 is still fast-ish, max slow.
        let s = summarize(&hist(
            std::iter::repeat_n(2_000, 990).chain(std::iter::repeat_n(250_000, 10)),
        ));
        assert!((s.p50 - 2.0).abs() < 0.01, "{s:?}");
        assert!((s.p99 - 2.0).abs() < 0.01, "{s:?}");
        assert!((s.max - 250.0).abs() < 0.5, "{s:?}");
        assert!((s.mean - (2.0 * 0.99 + 250.0 * 0.01)).abs() < 0.05, "{s:?}");
    }

    #[test]
    fn report_shape_and_rates() {
        let t0 = Instant::now();
        let end = t0 + Duration::from_secs(10);
        let mut agg = Aggregate::new(2);
        let mut a = ClientOutcome::new(0, 0);
        a.connected = true;
        a.ready_at = Some(t0);
        a.sent_measured = 100;
        a.sent_total = 110;
        a.acked_measured = 95;
        a.errored_measured = 3;
        a.errors = counts_from([("not_found", 3), ("rate_limited", 1)]);
        for n in 0..95 {
            a.acked.insert(n);
        }
        let mut b = ClientOutcome::new(0, 1);
        b.connected = true;
        b.ready_at = Some(t0);
        b.seq.reset(0);
        b.seq.observe(2);
        let mut got = crate::stats::BitSet::default();
        for n in 0..90 {
            got.insert(n);
        }
        b.received.insert(0, got);
        agg.add(a, t0, end);
        agg.add(b, t0, end);

        let sh = ShardedHistogram::new(1);
        let report = build(
            &agg,
            ReportInputs {
                config: test_echo(),
                durations: Durations {
                    measured_secs: 10.0,
                    ..Durations::default()
                },
                ack: hist([1_000, 2_000]),
                fanout: sh.merged(),
                warnings: vec![],
            },
        );
        assert_eq!(report.edits.achieved_edits_per_sec, 9.5);
        assert_eq!(report.edits.unanswered, 2);
        assert_eq!(report.errors.total, 4);
        assert_eq!(report.seq.gaps, 1);
        assert_eq!(report.receipts.expected, 95);
        assert_eq!(report.receipts.received, 90);
        assert_eq!(report.receipts.missing, 5);
        assert_eq!(report.connections.connections_held, 2);
        assert_eq!(report.ack_latency_ms.count, 2);

        let v: serde_json::Value =
            serde_json::from_str(&to_json(&report)).expect("report is valid JSON");
        for key in [
            "config",
            "durations",
            "connections",
            "edits",
            "ackLatencyMs",
            "fanoutLatencyMs",
            "seq",
            "errors",
            "receipts",
            "anomalies",
            "warnings",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["errors"]["byCode"]["not_found"], 3);
        assert_eq!(v["fanoutLatencyMs"]["count"], 0);
        assert!(v["config"].get("token").is_none());
    }

    fn test_echo() -> ConfigEcho {
        ConfigEcho {
            urls: vec!["ws://127.0.0.1:8080".into()],
            projects: 1,
            clients_per_project: 2,
            total_clients: 2,
            rate_per_client: 5.0,
            target_edits_per_sec: 10.0,
            duration_secs: 10.0,
            warmup_secs: 1.0,
            objects_per_project: 10,
            token_provided: false,
            project_prefix: "t".into(),
            run_id: "00000000".into(),
            connect_concurrency: 200,
            connect_timeout_secs: 15.0,
            out: None,
            allow_remote: false,
            drop_every_secs: 0.0,
        }
    }
}
