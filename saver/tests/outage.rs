//! DynamoDB down for a while (dynalite stopped, then restarted on its data folder): nothing is lost, the failures
//! show in the metrics, and the save loop keeps running.

mod common;

use std::sync::Arc;
use std::time::Duration;

use canvas_testkit::Dynalite;
use common::*;
use serde_json::json;

#[tokio::test]
async fn dynamodb_outage_loses_nothing_and_shows_in_metrics() {
    let mut env = Env::with_dynalite(Dynalite::start_persistent()).await;
    let hot = env.hot();
    open(hot.as_ref(), "out1").await;
    open(hot.as_ref(), "out2").await;
    for i in 0..30 {
        create(hot.as_ref(), "out1", rect(&format!("o{i}"), i)).await;
    }
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(env.store.clone()), settings()).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    assert_persisted(hot.as_ref(), &env.store, "out1").await;

    env.dynalite.stop();
    let down_at = tokio::time::Instant::now();
    for i in 0..30 {
        update(
            hot.as_ref(),
            "out1",
            &format!("o{i}"),
            json!({"x": 1000 + i}),
        )
        .await;
        create(hot.as_ref(), "out2", rect(&format!("n{i}"), i)).await;
    }
    delete(hot.as_ref(), "out1", "o0").await;
    // Down for at least three intervals, and until a failed save has been counted.
    tokio::time::sleep(Duration::from_millis(3 * INTERVAL_MS)).await;
    wait_until(Duration::from_secs(30), "a failed save counted", || async {
        saver.metrics.auto_save().failed_saves > 0
    })
    .await;
    let outage = down_at.elapsed();
    let during = metrics_json(saver.http).await;
    assert_eq!(during["autoSave"]["isRunning"], true);
    assert!(during["dirtyProjects"]["count"].as_u64().unwrap() >= 1);
    let (status, _) = http_get(saver.http, "/readyz", None).await;
    assert_eq!(status, 503);

    env.dynalite.restart();
    wait_clean(hot.as_ref(), Duration::from_secs(30)).await;
    for p in ["out1", "out2"] {
        assert_persisted(hot.as_ref(), &env.store, p).await;
    }
    let m = metrics_json(saver.http).await;
    let a = &m["autoSave"];
    assert_eq!(a["isRunning"], true);
    assert!(a["failedSaves"].as_u64().unwrap() > 0, "{m}");
    assert!(a["successRate"].as_f64().unwrap() < 100.0, "{m}");
    assert!(!a["recentErrors"].as_array().unwrap().is_empty(), "{m}");
    assert_eq!(m["dirtyProjects"]["count"], 0);
    eprintln!("outage lasted {outage:?} before the first failure was counted");
    saver.stop().await;
}
