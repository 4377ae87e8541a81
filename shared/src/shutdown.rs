//! How every binary stops: the first SIGTERM or SIGINT cancels a token that every part of the process watches
//! (the gateway closes its sockets with 1001, the saver stops claiming and makes a final save); a second signal
//! ends the drain and exits at once. Work that must finish before the process exits is counted by a
//! [`TaskTracker`], and [`drain`] waits for it within a grace period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// What a process tells its operator when each signal arrives.
#[derive(Debug, Clone, Copy)]
pub struct SignalMessages {
    /// Logged on the first signal: what the process finishes before it exits.
    pub draining: &'static str,
    /// Logged on the second signal, just before the process exits: what is left undone.
    pub abandoned: &'static str,
}

/// Exit status after a second signal cut the drain short.
pub const ABANDONED_EXIT_CODE: i32 = 1;

/// A token cancelled on the first SIGTERM or SIGINT; the second one exits the process.
pub fn on_signals(messages: SignalMessages) -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received: {}", messages.draining);
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!(
            "second shutdown signal: exiting now; {}",
            messages.abandoned
        );
        std::process::exit(ABANDONED_EXIT_CODE);
    });
    token
}

/// Stops `tasks` accepting more and waits for the ones it holds, at most `grace`. True if they all finished.
pub async fn drain(tasks: &TaskTracker, grace: Duration) -> bool {
    tasks.close();
    tokio::time::timeout(grace, tasks.wait()).await.is_ok()
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!(
                "cannot install signal handlers; only Ctrl-C stops the process cleanly"
            );
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tracked_work_and_gives_up_after_the_grace() {
        let tasks = TaskTracker::new();
        let held = tasks.token();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(held);
        });
        assert!(drain(&tasks, Duration::from_secs(5)).await);
        release.await.unwrap();

        let stuck = TaskTracker::new();
        let _forever = stuck.token();
        assert!(!drain(&stuck, Duration::from_millis(20)).await);
    }
}
