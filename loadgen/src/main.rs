//! `loadgen`: a load generator for the canvas gateway.
//!
//! It opens many WebSocket clients against one or more gateways, sends `update`s at a fixed
//! open-loop rate, and measures ack latency, fan-out latency, `seq` gaps and lost broadcasts,
//! printing one JSON report on stdout. It speaks only the public protocol
//! (docs/protocol.md) and refuses non-loopback targets unless `--allow-remote`.
//!
//! Exit status: 0 when the run happened (even with errors: the report says), 1 when no client
//! could connect, 2 for bad arguments, 3 when the hard deadline (warmup + duration + 30 s)
//! had to end the process.

// Items are `pub` only where other crates use them; inside, `pub(crate)` and narrower.
#![warn(unreachable_pub)]

mod client;
mod config;
mod protocol;
mod report;
mod run;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use crate::config::{Args, Config};

/// Slack on top of warmup + duration before the watchdog ends the process.
const HARD_DEADLINE_SLACK: Duration = Duration::from_secs(30);
/// File descriptors kept for things other than client sockets.
const FD_HEADROOM: u64 = 256;

fn main() -> ExitCode {
    let cfg = match Config::from_args(Args::parse()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async_main(cfg))
}

async fn async_main(cfg: Config) -> ExitCode {
    if let Err(e) = config::check_resolved_hosts(&cfg).await {
        eprintln!("loadgen: {e:#}");
        return ExitCode::from(2);
    }
    spawn_watchdog(cfg.warmup + cfg.duration + HARD_DEADLINE_SLACK);

    let mut warnings = Vec::new();
    if let Some(w) = raise_fd_limit(cfg.total_clients() + FD_HEADROOM) {
        eprintln!("loadgen: {w}");
        warnings.push(w);
    }
    let out_path = cfg.out.clone();
    let result = run::run(cfg, warnings).await;
    let json = report::to_json(&result.report);
    println!("{json}");
    if let Some(path) = out_path {
        if let Err(e) = std::fs::write(&path, format!("{json}\n")) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
        }
    }
    if result.any_connected {
        ExitCode::SUCCESS
    } else {
        eprintln!("loadgen: no client could connect");
        ExitCode::from(1)
    }
}

/// Ends the process if a run somehow overstays its hard deadline (a plain thread, so a
/// wedged runtime cannot stop it).
fn spawn_watchdog(after: Duration) {
    let spawned = std::thread::Builder::new()
        .name("loadgen-watchdog".into())
        .spawn(move || {
            std::thread::sleep(after);
            eprintln!(
                "loadgen: hard deadline of {:.0}s reached, exiting",
                after.as_secs_f64()
            );
            std::process::exit(3);
        });
    if let Err(e) = spawned {
        eprintln!("loadgen: cannot start the watchdog thread: {e}");
    }
}

/// Raises the soft RLIMIT_NOFILE towards `wanted` (best effort); returns a warning when the
/// limit stays below it.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)] // `rlim_t` is u64 on Linux but not on every unix
fn raise_fd_limit(wanted: u64) -> Option<String> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Some("cannot read the file-descriptor limit".into());
    }
    let current = rl.rlim_cur as u64;
    if current >= wanted {
        return None;
    }
    let hard = rl.rlim_max as u64;
    let target = if hard >= wanted { wanted } else { hard };
    let mut new = libc::rlimit {
        rlim_cur: target as libc::rlim_t,
        rlim_max: rl.rlim_max,
    };
    if hard < wanted {
        // Raising the hard limit needs privileges; try, then fall back to the hard limit.
        let raised = libc::rlimit {
            rlim_cur: wanted as libc::rlim_t,
            rlim_max: wanted as libc::rlim_t,
        };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return None;
        }
        new.rlim_cur = rl.rlim_max;
    }
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        return Some(format!(
            "file-descriptor limit {current} is below the {wanted} this run needs"
        ));
    }
    let now = new.rlim_cur as u64;
    (now < wanted)
        .then(|| format!("file-descriptor limit {now} is below the {wanted} this run needs"))
}

#[cfg(not(unix))]
fn raise_fd_limit(_wanted: u64) -> Option<String> {
    None
}
