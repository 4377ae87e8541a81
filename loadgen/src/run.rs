//! The coordinator: spawns one task per client, runs the phases (connect → warmup →
//! measured window → drain → close) on one shared timeline, and folds the clients' outcomes
//! into the report. Every phase has a deadline, so a run always ends by itself.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::client::{run_client, ClientSpec, Control, Shared};
use crate::config::Config;
use crate::report::{self, Durations, Report, ReportInputs};
use crate::stats::{Aggregate, Clock, Latencies};

/// Longest wait for outstanding acks / broadcasts after sending stops.
pub const DRAIN_MAX: Duration = Duration::from_secs(2);
/// The drain ends early once nothing is outstanding and nothing arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// How long client tasks get to close their sockets and hand back their figures.
const JOIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Histogram shards (lock striping).
const SHARDS: usize = 16;
/// Cap on distinct warnings copied into the report.
const MAX_WARNINGS: usize = 20;

/// What a run produced.
pub struct RunResult {
    pub report: Report,
    /// False when not a single client connected (the only failing exit).
    pub any_connected: bool,
}

/// Runs the whole load test. `warnings` are carried into the report.
pub async fn run(cfg: Config, mut warnings: Vec<String>) -> RunResult {
    let started = Instant::now();
    let clock = Clock::new();
    let total = cfg.total_clients();
    let (projects, clients) = (cfg.projects, cfg.clients);
    if cfg.rate > 1000.0 {
        warnings.push(format!(
            "--rate {} per client is above 1000/s: sends are batched per 1 ms timer tick",
            cfg.rate
        ));
    }
    let echo = cfg.echo();
    let warmup = cfg.warmup;
    let duration = cfg.duration;
    let rate = cfg.rate;
    let shared = Arc::new(Shared {
        connect_sem: Semaphore::new(cfg.connect_concurrency),
        connect_deadline: started + cfg.connect_timeout,
        cfg,
        latencies: Latencies::new(SHARDS),
        clock,
        outstanding: AtomicI64::new(0),
        last_activity_us: AtomicU64::new(0),
    });

    eprintln!(
        "loadgen: connecting {total} clients ({projects} projects x {clients}) to {} gateway(s), \
         projects {}-0..",
        echo.urls.len(),
        echo.project_prefix
    );
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (ctl_tx, ctl_rx) = watch::channel(Control::Wait);
    let mut handles = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for p in 0..projects {
        for c in 0..clients {
            let spec = ClientSpec {
                global: u64::from(p) * u64::from(clients) + u64::from(c),
                project: p,
                local: c,
            };
            handles.push(tokio::spawn(run_client(
                shared.clone(),
                spec,
                ready_tx.clone(),
                ctl_rx.clone(),
            )));
        }
    }
    drop(ready_tx);
    drop(ctl_rx);

    // Connect phase: until every client reported or the connect deadline.
    let (mut reported, mut ready) = (0u64, 0u64);
    while reported < total {
        match timeout_at(shared.connect_deadline, ready_rx.recv()).await {
            Ok(Some(ok)) => {
                reported += 1;
                ready += u64::from(ok);
            }
            _ => break,
        }
    }
    let t0 = Instant::now();
    let measure_start = t0 + warmup;
    let measure_end = measure_start + duration;
    eprintln!(
        "loadgen: {ready}/{total} clients ready after {:.2}s",
        (t0 - started).as_secs_f64()
    );

    let mut durations = Durations {
        connect_secs: (t0 - started).as_secs_f64(),
        ..Durations::default()
    };
    if ready > 0 {
        ctl_tx.send_replace(Control::Run(t0));
        eprintln!(
            "loadgen: running {:.1}s warmup + {:.1}s measured",
            warmup.as_secs_f64(),
            duration.as_secs_f64()
        );
        sleep_until(measure_end).await;
        if rate > 0.0 {
            drain(&shared, measure_end).await;
        }
        durations.warmup_secs = warmup.as_secs_f64();
        durations.measured_secs = duration.as_secs_f64();
        durations.drain_secs = Instant::now()
            .saturating_duration_since(measure_end)
            .as_secs_f64();
    }
    ctl_tx.send_replace(Control::Stop);

    let join_deadline = Instant::now() + JOIN_TIMEOUT;
    let mut agg = Aggregate::new(total);
    let mut setup_warnings = BTreeSet::new();
    let mut creators_failed = BTreeSet::new();
    for mut h in handles {
        match timeout_at(join_deadline, &mut h).await {
            Ok(Ok(o)) => {
                if let Some(w) = &o.setup_warning {
                    setup_warnings.insert(w.clone());
                }
                if o.local == 0 && !o.connected && rate > 0.0 {
                    creators_failed.insert(o.project);
                }
                agg.add(o, t0.into_std(), measure_end.into_std());
            }
            Ok(Err(_)) => agg.unfinished += 1,
            Err(_) => {
                h.abort();
                agg.unfinished += 1;
            }
        }
    }
    durations.total_secs = started.elapsed().as_secs_f64();

    warnings.extend(setup_warnings);
    if !creators_failed.is_empty() {
        let list: Vec<String> = creators_failed.iter().map(u32::to_string).collect();
        warnings.push(format!(
            "object creator (client 0) did not connect in project(s) {}: their updates \
             get not_found",
            list.join(", ")
        ));
    }
    if agg.unfinished > 0 {
        warnings.push(format!(
            "{} client task(s) did not finish in time; their figures are missing",
            agg.unfinished
        ));
    }
    if warnings.len() > MAX_WARNINGS {
        let extra = warnings.len() - MAX_WARNINGS;
        warnings.truncate(MAX_WARNINGS);
        warnings.push(format!("... and {extra} more warnings"));
    }

    let report = report::build(
        &agg,
        ReportInputs {
            config: echo,
            durations,
            ack: shared.latencies.ack.merged(),
            fanout: shared.latencies.fanout.merged(),
            warnings,
        },
    );
    RunResult {
        any_connected: agg.connected > 0,
        report,
    }
}

/// Waits (at most [`DRAIN_MAX`]) until no edit is outstanding and no frame arrived for
/// [`DRAIN_QUIET`], so late broadcasts are still counted.
async fn drain(shared: &Shared, measure_end: Instant) {
    let deadline = measure_end + DRAIN_MAX;
    let quiet_us = DRAIN_QUIET.as_micros() as u64;
    while Instant::now() < deadline {
        let outstanding = shared.outstanding.load(Ordering::Relaxed);
        let last = shared.last_activity_us.load(Ordering::Relaxed);
        let idle = shared.clock.now_us().saturating_sub(last) >= quiet_us;
        if outstanding <= 0 && idle {
            return;
        }
        sleep(Duration::from_millis(20)).await;
    }
}
