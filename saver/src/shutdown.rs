//! Turns SIGTERM / SIGINT into a cancellation signal so that the saver can stop claiming, finish what it holds and
//! make a final save before it exits. A second signal exits at once.

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received: stopping the timer and saving what is dirty");
        trigger.cancel();
        wait_for_signal().await;
        tracing::warn!(
            "second shutdown signal: exiting now; unsaved claims are taken over after their lease"
        );
        std::process::exit(1);
    });
    token
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
                "cannot install signal handlers; only Ctrl-C will stop the saver cleanly"
            );
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
