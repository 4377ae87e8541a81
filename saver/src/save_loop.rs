//! The save loop, where the write path starts: waits until the durable store is ready (creating the table when
//! asked), then runs a save pass ([`crate::save_pass`]) every interval. Errors are counted and logged and the loop keeps going. On shutdown it stops the timer, lets the pass
//! in flight finish, and runs final passes until nothing is left to claim — all within the grace period.
//!
//! Why a grace period bounds everything: an orchestrator kills the process after its own timeout anyway. Should
//! the grace period end mid-pass, the claims of that pass simply stay under their lease, which expires and lets
//! another saver (or the next start) take them over; nothing acknowledged is lost.

use std::sync::Arc;

use canvas_shared::time::now_ms;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::report::{LoopState, PassOutcome};
use crate::save_pass::{drain_pause, run_pass, PassContext};

/// Waits for the store; false if shutdown came first.
async fn wait_for_store(
    ctx: &PassContext,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> bool {
    let mut last_error: Option<String> = None;
    loop {
        let attempt = ctx.durable.ensure_table(ctx.settings.create_table);
        let result = tokio::select! {
            r = attempt => r,
            _ = shutdown.cancelled() => return false,
        };
        match result {
            Ok(()) => {
                tracing::info!(table = %ctx.settings.table, "durable store is ready; saving starts");
                return true;
            }
            Err(e) => {
                let message = format!("durable store not ready: {e}");
                tracing::warn!(error = %e, retry_ms = ctx.settings.store_retry.as_millis() as u64, "durable store not ready; retrying");
                if last_error.as_deref() != Some(message.as_str()) {
                    metrics.record_error(now_ms(), None, message.clone());
                    last_error = Some(message);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ctx.settings.store_retry) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// Runs the save loop until `shutdown` and the final saves are done.
pub(crate) async fn run_loop(
    ctx: Arc<PassContext>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    metrics.set_state(LoopState::WaitingForStore);
    if !wait_for_store(&ctx, &metrics, &shutdown).await {
        tracing::info!("shutdown before the durable store was ready; nothing was claimed");
        metrics.set_state(LoopState::Stopped);
        return;
    }
    metrics.set_state(LoopState::Running);
    let mut tick = tokio::time::interval(ctx.settings.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let pass = run_pass(&ctx);
        tokio::pin!(pass);
        tokio::select! {
            outcome = &mut pass => {
                record(&metrics, &outcome);
                metrics.record_eviction(&crate::eviction::evict_idle(&ctx).await);
                // A pass that hit the cap left work behind: go again now rather than after a whole interval.
                if outcome.projects() as usize >= ctx.settings.max_projects_per_pass {
                    tick.reset_immediately();
                }
            }
            _ = shutdown.cancelled() => {
                // Finish the pass in flight, within the grace period.
                let end = Instant::now() + ctx.settings.shutdown_grace;
                deadline = Some(end);
                metrics.set_state(LoopState::Draining);
                tracing::info!("shutdown requested; finishing the pass in flight");
                match tokio::time::timeout_at(end, &mut pass).await {
                    Ok(outcome) => record(&metrics, &outcome),
                    Err(_) => {
                        tracing::warn!("grace period ended during a pass; its claims are left to expire and be taken over");
                        metrics.set_state(LoopState::Stopped);
                        return;
                    }
                }
                break;
            }
        }
    }
    drain(
        &ctx,
        &metrics,
        deadline.unwrap_or_else(|| Instant::now() + ctx.settings.shutdown_grace),
    )
    .await;
    metrics.set_state(LoopState::Stopped);
}

fn record(metrics: &Metrics, outcome: &PassOutcome) {
    metrics.record_pass(outcome);
}

/// Final passes until nothing is left to claim or the deadline.
async fn drain(ctx: &PassContext, metrics: &Metrics, deadline: Instant) {
    metrics.set_state(LoopState::Draining);
    tracing::info!(
        grace_ms = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64,
        "final save of everything dirty"
    );
    loop {
        match tokio::time::timeout_at(deadline, run_pass(ctx)).await {
            Ok(outcome) => {
                record(metrics, &outcome);
                let claimed_nothing = outcome.projects() == 0;
                if claimed_nothing && outcome.errors.is_empty() {
                    tracing::info!("final save done: nothing left to claim");
                    return;
                }
                if outcome.failed + outcome.lost > 0 || claimed_nothing {
                    // Failing (store or Redis down): pause before trying again.
                    let pause = Instant::now() + drain_pause(&ctx.settings);
                    if pause >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(pause).await;
                }
            }
            Err(_) => break,
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    tracing::warn!("grace period ended before everything was saved; the rest stays dirty in Redis for the next saver");
}
