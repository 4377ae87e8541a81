//! The Redis bus tells its owner whenever messages may have been lost, against a real redis-server: after its
//! first connect (clients may have joined while it was not there yet) and after a pub/sub connection that stopped
//! answering was rebuilt.

mod support;

use std::time::Duration;

use canvas_shared::hot::redis::RedisHotState;
use canvas_shared::hot::{BusEvent, EditStore};
use canvas_testkit::RedisServer;
use support::pid;
use tokio::sync::mpsc;

/// The next event that is not a message, within `within`.
async fn next_signal(rx: &mut mpsc::Receiver<BusEvent>, within: Duration) -> Option<BusEvent> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(BusEvent::Message(_))) => continue,
            Ok(other) => return other,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn the_first_connect_is_announced_so_that_earlier_joiners_catch_up() {
    let mut redis = RedisServer::start();
    redis.kill();
    let hot = RedisHotState::connect(&redis.url()).expect("redis client");
    let (tx, mut rx) = mpsc::channel(64);
    let bus = hot.open_bus(tx);
    let project = pid("early");
    assert!(
        bus.subscribe(&project).await.is_err(),
        "not connected yet: the channel waits for the connect"
    );
    redis.restart();
    let event = next_signal(&mut rx, Duration::from_secs(10)).await;
    assert!(
        matches!(event, Some(BusEvent::Connected)),
        "the owner must learn that the bus is there now: {event:?}"
    );
}

#[tokio::test]
async fn an_unsubscribe_that_gets_no_answer_rebuilds_the_connection() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let hot = RedisHotState::connect(&redis.url()).expect("redis client");
    let (tx, mut rx) = mpsc::channel(64);
    let bus = hot.open_bus(tx);
    let (stays, goes) = (pid("stays"), pid("goes"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while bus.subscribe(&stays).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bus never connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bus.subscribe(&goes).await.expect("subscribe");
    assert!(matches!(
        next_signal(&mut rx, Duration::from_secs(5)).await,
        Some(BusEvent::Connected)
    ));
    // The server stops answering for longer than a command may take, as a half-open connection would.
    let port = redis.port;
    let sleeper = std::thread::spawn(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "3"])
            .output()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    bus.unsubscribe(&goes)
        .await
        .expect("unsubscribe reports no error");
    let mut events = Vec::new();
    while let Some(event) = next_signal(&mut rx, Duration::from_secs(10)).await {
        let resubscribed = matches!(event, BusEvent::Resubscribed);
        events.push(format!("{event:?}"));
        if resubscribed {
            break;
        }
    }
    assert_eq!(
        events,
        ["Disconnected", "Resubscribed"],
        "the silent connection is replaced and its subscriptions restored"
    );
    let _ = sleeper.join();
}
