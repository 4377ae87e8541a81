//! `GET /metrics/prometheus`: the figures after real saves (redis-server + dynalite, throttling and an outage
//! injected), the dirty gauges read at scrape time, the JSON `/metrics` agreeing, and the operator token.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use canvas_saver::Saver;
use canvas_shared::durable::faulty::FaultyStore;
use common::*;

/// Samples of an exposition: `name{labels}` → value. Also checks the text is well formed.
fn parse(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no EOF marker:\n{text}");
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(
            series.starts_with("canvas_saver_"),
            "unprefixed series {series}"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from {samples:#?}"))
}

/// GET with the response head kept: (status, head as lower-case `name: value` lines, body).
async fn fetch(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String, String) {
    let response = http_fetch(addr, path, token).await;
    let head = response
        .headers
        .iter()
        .map(|(name, value)| format!("{name}: {}", value.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join("\r\n");
    (response.status, head, response.body)
}

async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, head, body) = fetch(addr, "/metrics/prometheus", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    parse(&body)
}

#[tokio::test]
async fn prometheus_figures_follow_real_saves() {
    let env = Env::start().await;
    let hot = env.hot();
    let store = FaultyStore::new(env.store.clone());
    let faults = Arc::clone(&store.faults);
    // Passes run on demand (no loop), so every figure is exact.
    let saver = Saver::new(settings(), hot.clone(), Arc::new(store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = saver.http_router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let m = scrape(addr).await;
    for result in ["idle", "ok", "partial", "failed"] {
        assert_eq!(
            get(
                &m,
                &format!("canvas_saver_passes_total{{result=\"{result}\"}}")
            ),
            0.0
        );
    }
    assert_eq!(get(&m, "canvas_saver_items_written_total{op=\"put\"}"), 0.0);
    assert_eq!(get(&m, "canvas_saver_dirty_index_up"), 1.0);
    assert_eq!(get(&m, "canvas_saver_dirty_projects"), 0.0);
    assert_eq!(
        get(&m, "canvas_saver_oldest_unsaved_change_age_seconds"),
        0.0
    );
    assert_eq!(
        get(&m, "canvas_saver_save_pass_duration_seconds_count"),
        0.0
    );
    assert_eq!(get(&m, "canvas_saver_save_interval_seconds"), 0.2);
    assert_eq!(
        get(&m, "canvas_saver_loop_state{state=\"waiting_for_store\"}"),
        1.0
    );
    assert_eq!(get(&m, "canvas_saver_loop_state{state=\"running\"}"), 0.0);

    // Two live objects and one created then deleted: 2 Puts and 1 Delete.
    open(hot.as_ref(), "prom1").await;
    for id in ["o1", "o2", "o3"] {
        create(hot.as_ref(), "prom1", rect(id, 1)).await;
    }
    delete(hot.as_ref(), "prom1", "o3").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = scrape(addr).await;
    assert_eq!(get(&m, "canvas_saver_dirty_projects"), 1.0);
    let age = get(&m, "canvas_saver_oldest_unsaved_change_age_seconds");
    assert!((0.3..30.0).contains(&age), "age {age}");

    // The first request is throttled and retried.
    faults.throttle_next.store(1, Ordering::SeqCst);
    let outcome = saver.run_pass().await;
    assert_eq!((outcome.succeeded, outcome.failed), (1, 0), "{outcome:?}");
    assert_persisted(hot.as_ref(), &env.store, "prom1").await;
    let m = scrape(addr).await;
    assert_eq!(get(&m, "canvas_saver_passes_total{result=\"ok\"}"), 1.0);
    assert_eq!(get(&m, "canvas_saver_items_written_total{op=\"put\"}"), 2.0);
    assert_eq!(
        get(&m, "canvas_saver_items_written_total{op=\"delete\"}"),
        1.0
    );
    assert_eq!(get(&m, "canvas_saver_batch_requests_total"), 2.0);
    assert_eq!(get(&m, "canvas_saver_batch_retries_total"), 1.0);
    assert_eq!(get(&m, "canvas_saver_project_saves_total"), 1.0);
    assert_eq!(get(&m, "canvas_saver_failed_project_saves_total"), 0.0);
    assert_eq!(get(&m, "canvas_saver_lost_leases_total"), 0.0);
    assert_eq!(
        get(&m, "canvas_saver_save_pass_duration_seconds_count"),
        1.0
    );
    let sum = get(&m, "canvas_saver_save_pass_duration_seconds_sum");
    assert!(sum > 0.0 && sum < 30.0, "duration sum {sum}");
    assert_eq!(
        get(
            &m,
            "canvas_saver_save_pass_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        1.0
    );
    assert_eq!(get(&m, "canvas_saver_dirty_projects"), 0.0);
    assert_eq!(
        get(&m, "canvas_saver_oldest_unsaved_change_age_seconds"),
        0.0
    );

    // The JSON contract agrees, and is unchanged in shape.
    let json = metrics_json(addr).await;
    assert_eq!(json["autoSave"]["totalObjectsSaved"], 3);
    assert_eq!(json["autoSave"]["retries"], 1);
    assert_eq!(json["autoSave"]["totalSaves"], 1);
    assert_eq!(json["dirtyProjects"]["count"], 0);

    // A pass with nothing to do is idle and stays out of the duration histogram.
    saver.run_pass().await;
    let m = scrape(addr).await;
    assert_eq!(get(&m, "canvas_saver_passes_total{result=\"idle\"}"), 1.0);
    assert_eq!(
        get(&m, "canvas_saver_save_pass_duration_seconds_count"),
        1.0
    );

    // The store goes down: the save fails, its work is put back and the project stays dirty.
    update(hot.as_ref(), "prom1", "o1", serde_json::json!({"x": 9})).await;
    faults.down.store(true, Ordering::SeqCst);
    let outcome = saver.run_pass().await;
    assert_eq!(outcome.failed, 1, "{outcome:?}");
    let m = scrape(addr).await;
    assert_eq!(get(&m, "canvas_saver_passes_total{result=\"failed\"}"), 1.0);
    assert_eq!(get(&m, "canvas_saver_failed_project_saves_total"), 1.0);
    assert_eq!(get(&m, "canvas_saver_dirty_projects"), 1.0);
    assert!(get(&m, "canvas_saver_batch_retries_total") >= 2.0);

    faults.down.store(false, Ordering::SeqCst);
    let outcome = saver.run_pass().await;
    assert_eq!(outcome.succeeded, 1, "{outcome:?}");
    let m = scrape(addr).await;
    assert_eq!(get(&m, "canvas_saver_passes_total{result=\"ok\"}"), 2.0);
    assert_eq!(get(&m, "canvas_saver_items_written_total{op=\"put\"}"), 3.0);
    assert_eq!(get(&m, "canvas_saver_project_saves_total"), 2.0);
    assert_eq!(
        get(&m, "canvas_saver_save_pass_duration_seconds_count"),
        3.0
    );
    assert_eq!(get(&m, "canvas_saver_dirty_projects"), 0.0);
    assert_persisted(hot.as_ref(), &env.store, "prom1").await;

    // The dirty index unreadable: the gauges are absent for this scrape and `up` says why.
    let mut env = env;
    env.redis.kill();
    let m = scrape(addr).await;
    assert_eq!(get(&m, "canvas_saver_dirty_index_up"), 0.0);
    assert!(!m.contains_key("canvas_saver_dirty_projects"), "{m:#?}");
    assert_eq!(get(&m, "canvas_saver_passes_total{result=\"ok\"}"), 2.0);
    server.abort();
}

#[tokio::test]
async fn the_operator_token_guards_the_prometheus_endpoint_and_the_loop_reports_running() {
    let env = Env::start().await;
    let mut s = settings();
    s.operator_token = Some("sekrit".into());
    let saver = spawn_saver(env.hot(), Arc::new(env.store.clone()), s).await;

    let (status, head, _) = fetch(saver.http, "/metrics/prometheus", None).await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let (status, _, _) = fetch(saver.http, "/metrics/prometheus", Some("wrong")).await;
    assert_eq!(status, 401);

    // The loop saves on its own; the scrape shows it.
    let hot = env.hot();
    open(hot.as_ref(), "prom2").await;
    create(hot.as_ref(), "prom2", rect("a", 1)).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let m = loop {
        let (status, _, body) = fetch(saver.http, "/metrics/prometheus", Some("sekrit")).await;
        assert_eq!(status, 200, "{body}");
        let m = parse(&body);
        // The first pass may find the project dirty already, so an idle pass can come after the save: wait for
        // both rather than race them.
        let idle = m
            .get("canvas_saver_passes_total{result=\"idle\"}")
            .copied()
            .unwrap_or(0.0);
        if m.get("canvas_saver_project_saves_total") == Some(&1.0) && idle >= 1.0 {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the save (and an idle pass after it) was not counted: {m:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(get(&m, "canvas_saver_loop_state{state=\"running\"}"), 1.0);
    assert_eq!(get(&m, "canvas_saver_items_written_total{op=\"put\"}"), 1.0);
    assert!(get(&m, "canvas_saver_passes_total{result=\"idle\"}") >= 1.0);
    saver.stop().await;
}
