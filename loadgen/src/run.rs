//! The coordinator: spawns one task per client, runs the phases (connect → warmup →
//! measured window → drain → close) on one shared timeline, and folds the clients' outcomes
//! into the report. Every phase has a deadline, so a run always ends by itself.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout_at, Instant};

use crate::client::{run_client, ClientSpec, Control, Shared};
use crate::config::Config;
use crate::report::{self, Durations, Report, ReportInputs};
use crate::stats::{Aggregate, ClientOutcome, Clock, Latencies};

/// Longest wait for outstanding acks / broadcasts after sending stops.
pub(crate) const DRAIN_MAX: Duration = Duration::from_secs(2);
/// The drain ends early once nothing is outstanding and nothing arrived for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(250);
/// How long client tasks get to close their sockets and hand back their figures.
const JOIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Histogram shards (lock striping).
const SHARDS: usize = 16;
/// Cap on distinct warnings copied into the report.
const MAX_WARNINGS: usize = 20;

/// What a run produced.
pub(crate) struct RunResult {
    pub report: Report,
    /// False when not a single client connected (the only failing exit).
    pub any_connected: bool,
}

/// Runs the whole load test. `warnings` are carried into the report.
pub(crate) async fn run(cfg: Config, mut warnings: Vec<String>) -> RunResult {
    let started = Instant::now();
    warnings.extend(rate_warning(cfg.rate));
    let echo = cfg.echo();
    let shared = Arc::new(Shared {
        connect_sem: Semaphore::new(cfg.connect_concurrency),
        connect_deadline: started + cfg.connect_timeout,
        cfg,
        latencies: Latencies::new(SHARDS),
        clock: Clock::new(),
        outstanding: AtomicI64::new(0),
        last_activity_us: AtomicU64::new(0),
    });
    eprintln!(
        "loadgen: connecting {} clients ({} projects x {}) to {} gateway(s), projects {}-0..",
        shared.cfg.total_clients(),
        shared.cfg.projects,
        shared.cfg.clients,
        echo.urls.len(),
        echo.project_prefix
    );

    let (ctl_tx, ctl_rx) = watch::channel(Control::Wait);
    let (handles, ready_rx) = spawn_clients(&shared, ctl_rx);
    let ready = await_connections(&shared, ready_rx).await;
    let timeline = Timeline::starting_now(&shared.cfg, started);
    eprintln!(
        "loadgen: {ready}/{} clients ready after {:.2}s",
        shared.cfg.total_clients(),
        timeline.connect_secs()
    );
    let mut durations = if ready > 0 {
        load(&shared, &ctl_tx, &timeline).await
    } else {
        timeline.durations_without_load()
    };
    ctl_tx.send_replace(Control::Stop);

    let collected = collect(handles, &shared.cfg, &timeline).await;
    durations.total_secs = started.elapsed().as_secs_f64();
    collected.warn_into(&mut warnings);
    cap_warnings(&mut warnings);

    let report = report::build(
        &collected.aggregate,
        ReportInputs {
            config: echo,
            durations,
            ack: shared.latencies.ack.merged(),
            fanout: shared.latencies.fanout.merged(),
            warnings,
        },
    );
    RunResult {
        any_connected: collected.aggregate.connected > 0,
        report,
    }
}

fn rate_warning(rate: f64) -> Option<String> {
    (rate > 1000.0).then(|| {
        format!("--rate {rate} per client is above 1000/s: sends are batched per 1 ms timer tick")
    })
}

/// Starts one task per client; each reports on the returned channel whether it connected.
fn spawn_clients(
    shared: &Arc<Shared>,
    control: watch::Receiver<Control>,
) -> (
    Vec<JoinHandle<ClientOutcome>>,
    mpsc::UnboundedReceiver<bool>,
) {
    let (ready_tx, ready_rx) = mpsc::unbounded_channel();
    let (projects, clients) = (shared.cfg.projects, shared.cfg.clients);
    let mut handles = Vec::with_capacity(usize::try_from(shared.cfg.total_clients()).unwrap_or(0));
    for project in 0..projects {
        for local in 0..clients {
            let spec = ClientSpec {
                global: u64::from(project) * u64::from(clients) + u64::from(local),
                project,
                local,
            };
            handles.push(tokio::spawn(run_client(
                shared.clone(),
                spec,
                ready_tx.clone(),
                control.clone(),
            )));
        }
    }
    (handles, ready_rx)
}

/// The connect phase: waits until every client reported or the connect deadline passed; returns how many are
/// ready.
async fn await_connections(shared: &Shared, mut ready_rx: mpsc::UnboundedReceiver<bool>) -> u64 {
    let total = shared.cfg.total_clients();
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
    ready
}

/// The run's shared instants: load starts at `t0`, the measured window is `measure_start..measure_end`.
struct Timeline {
    started: Instant,
    t0: Instant,
    warmup: Duration,
    duration: Duration,
    measure_end: Instant,
}

impl Timeline {
    fn starting_now(cfg: &Config, started: Instant) -> Self {
        let t0 = Instant::now();
        Timeline {
            started,
            t0,
            warmup: cfg.warmup,
            duration: cfg.duration,
            measure_end: t0 + cfg.warmup + cfg.duration,
        }
    }

    fn connect_secs(&self) -> f64 {
        (self.t0 - self.started).as_secs_f64()
    }

    fn durations_without_load(&self) -> Durations {
        Durations {
            connect_secs: self.connect_secs(),
            ..Durations::default()
        }
    }
}

/// Warmup, measured window and drain: releases the clients at `t0` and returns when the load is over.
async fn load(shared: &Shared, control: &watch::Sender<Control>, timeline: &Timeline) -> Durations {
    control.send_replace(Control::Run(timeline.t0));
    eprintln!(
        "loadgen: running {:.1}s warmup + {:.1}s measured",
        timeline.warmup.as_secs_f64(),
        timeline.duration.as_secs_f64()
    );
    sleep_until(timeline.measure_end).await;
    if shared.cfg.rate > 0.0 {
        drain(shared, timeline.measure_end).await;
    }
    Durations {
        warmup_secs: timeline.warmup.as_secs_f64(),
        measured_secs: timeline.duration.as_secs_f64(),
        drain_secs: Instant::now()
            .saturating_duration_since(timeline.measure_end)
            .as_secs_f64(),
        ..timeline.durations_without_load()
    }
}

/// Every client's figures, and what went wrong while gathering them.
struct Collected {
    aggregate: Aggregate,
    setup_warnings: BTreeSet<String>,
    /// Projects whose object creator (client 0) never connected.
    creators_failed: BTreeSet<u32>,
}

/// Joins the client tasks (all within [`JOIN_TIMEOUT`]) and folds their outcomes.
async fn collect(
    handles: Vec<JoinHandle<ClientOutcome>>,
    cfg: &Config,
    timeline: &Timeline,
) -> Collected {
    let join_deadline = Instant::now() + JOIN_TIMEOUT;
    let mut collected = Collected {
        aggregate: Aggregate::new(cfg.total_clients()),
        setup_warnings: BTreeSet::new(),
        creators_failed: BTreeSet::new(),
    };
    for mut handle in handles {
        match timeout_at(join_deadline, &mut handle).await {
            Ok(Ok(outcome)) => {
                if let Some(w) = &outcome.setup_warning {
                    collected.setup_warnings.insert(w.clone());
                }
                if outcome.local == 0 && !outcome.connected && cfg.rate > 0.0 {
                    collected.creators_failed.insert(outcome.project);
                }
                let (t0, end) = (timeline.t0.into_std(), timeline.measure_end.into_std());
                collected.aggregate.add(outcome, t0, end);
            }
            Ok(Err(_)) => collected.aggregate.unfinished += 1,
            Err(_) => {
                handle.abort();
                collected.aggregate.unfinished += 1;
            }
        }
    }
    collected
}

impl Collected {
    fn warn_into(&self, warnings: &mut Vec<String>) {
        warnings.extend(self.setup_warnings.iter().cloned());
        if !self.creators_failed.is_empty() {
            let list: Vec<String> = self.creators_failed.iter().map(u32::to_string).collect();
            warnings.push(format!(
                "object creator (client 0) did not connect in project(s) {}: their updates \
                 get not_found",
                list.join(", ")
            ));
        }
        if self.aggregate.unfinished > 0 {
            warnings.push(format!(
                "{} client task(s) did not finish in time; their figures are missing",
                self.aggregate.unfinished
            ));
        }
    }
}

fn cap_warnings(warnings: &mut Vec<String>) {
    if warnings.len() > MAX_WARNINGS {
        let extra = warnings.len() - MAX_WARNINGS;
        warnings.truncate(MAX_WARNINGS);
        warnings.push(format!("... and {extra} more warnings"));
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
