//! The real `saver` binary as a child process: kill -9 in the middle of a save and a restart lose no acknowledged
//! edit; SIGTERM makes a final save of everything dirty and exits 0.

mod common;

use std::time::Duration;

use canvas_testkit::{free_port, set_local_aws_env, ChildProcess, TempDir};
use common::*;
use serde_json::json;

/// A `saver` child process, SIGKILLed on drop.
struct SaverProcess {
    process: ChildProcess,
    http: std::net::SocketAddr,
}

impl SaverProcess {
    fn start(env: &Env, logs: &TempDir, name: &str, extra: &[(&str, &str)]) -> Self {
        set_local_aws_env();
        let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let (redis_var, redis_value) = env.redis_env();
        let mut command = ChildProcess::command(name, env!("CARGO_BIN_EXE_saver"))
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER_NODES")
            .env(redis_var, redis_value)
            .env("DYNAMODB_ENDPOINT", env.dynalite.endpoint())
            .env("CANVAS_TABLE", table_name())
            .env("CANVAS_CREATE_TABLE", "true")
            .env("SAVE_INTERVAL_MS", "200")
            .env("SAVE_LEASE_MS", "1500")
            .env("SAVER_HTTP_ADDR", http.to_string())
            .env("SAVER_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("SAVER_OWNER_ID", name)
            .env("RUST_LOG", "info")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("SAVER_DEBUG_WRITE_DELAY_MS")
            .env_remove("SAVER_OPERATOR_TOKEN")
            .log_in(logs.path());
        for (k, v) in extra {
            command = command.env(k, v);
        }
        Self {
            process: command.spawn(),
            http,
        }
    }

    fn logs(&self) -> String {
        self.process.logs()
    }

    async fn wait_ready(&self) {
        let http = self.http;
        wait_until(
            Duration::from_secs(20),
            "saver binary serving /metrics",
            || async move {
                match tokio::net::TcpStream::connect(http).await {
                    Ok(_) => {
                        let (status, body) = http_get(http, "/metrics", None).await;
                        status == 200
                            && serde_json::from_str::<serde_json::Value>(&body)
                                .map(|m| m["autoSave"]["passes"].as_u64().unwrap_or(0) >= 1)
                                .unwrap_or(false)
                    }
                    Err(_) => false,
                }
            },
        )
        .await;
    }
}

async fn total_items(env: &Env, projects: &[String]) -> usize {
    let mut n = 0;
    for p in projects {
        n += query(&env.store, p).await.len();
    }
    n
}

#[tokio::test]
async fn kill_9_mid_batch_then_restart_loses_no_acked_edit() {
    kill_9_mid_batch_then_restart_loses_no_acked_edit_on(Env::start().await).await;
}

#[tokio::test]
async fn kill_9_mid_batch_then_restart_loses_no_acked_edit_on_a_cluster() {
    kill_9_mid_batch_then_restart_loses_no_acked_edit_on(Env::on_a_cluster().await).await;
}

async fn kill_9_mid_batch_then_restart_loses_no_acked_edit_on(env: Env) {
    let logs = TempDir::new("saver-kill");
    let hot = env.hot();
    let projects: Vec<String> = (0..8).map(|i| format!("k{i}")).collect();
    for p in &projects {
        open(hot.as_ref(), p).await;
        for i in 0..100 {
            create(hot.as_ref(), p, rect(&format!("o{i:03}"), i)).await;
        }
    }
    // Slow BatchWriteItem, two in flight: the pass takes seconds, so the kill lands inside it.
    let first = SaverProcess::start(
        &env,
        &logs,
        "first",
        &[
            ("SAVER_DEBUG_WRITE_DELAY_MS", "300"),
            ("SAVER_CONCURRENCY", "2"),
        ],
    );
    wait_until(Duration::from_secs(20), "first items written", || async {
        total_items(&env, &projects).await > 0
    })
    .await;
    // Acknowledged edits while the save runs.
    for p in &projects {
        update(hot.as_ref(), p, "o000", json!({"x": -1})).await;
        delete(hot.as_ref(), p, "o099").await;
    }
    let mut first = first;
    first.process.kill(); // SIGKILL
    let landed = total_items(&env, &projects).await;
    assert!(
        landed < 800,
        "the kill must land mid-pass (landed {landed})\n{}",
        first.logs()
    );
    // More acknowledged edits while no saver runs.
    for p in &projects {
        create(hot.as_ref(), p, rect("late", 7)).await;
    }

    let second = SaverProcess::start(&env, &logs, "second", &[]);
    wait_clean(hot.as_ref(), Duration::from_secs(20)).await;
    for p in &projects {
        assert_persisted(hot.as_ref(), &env.store, p).await;
    }
    assert!(
        second.logs().contains("save pass finished"),
        "{}",
        second.logs()
    );
}

#[tokio::test]
async fn sigterm_makes_a_final_save_and_exits_zero() {
    let env = Env::start().await;
    let logs = TempDir::new("saver-term");
    let hot = env.hot();
    // A long interval: after the first (empty) pass only the final flush can save anything.
    let mut saver = SaverProcess::start(&env, &logs, "term", &[("SAVE_INTERVAL_MS", "600000")]);
    saver.wait_ready().await;
    let projects: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
    for p in &projects {
        open(hot.as_ref(), p).await;
        for i in 0..30 {
            create(hot.as_ref(), p, rect(&format!("o{i}"), i)).await;
        }
        update(hot.as_ref(), p, "o1", json!({"x": 100})).await;
        delete(hot.as_ref(), p, "o2").await;
    }
    assert_eq!(total_items(&env, &projects).await, 0);

    saver.process.signal(canvas_testkit::process::SIGTERM);
    let exit = saver
        .process
        .wait_exit(Duration::from_secs(20))
        .await
        .unwrap_or_else(|| panic!("saver did not exit after SIGTERM\n{}", saver.logs()));
    assert!(exit.success(), "exit status {exit:?}\n{}", saver.logs());
    for p in &projects {
        assert_persisted(hot.as_ref(), &env.store, p).await;
    }
    assert_eq!(hot.dirty_summary().await.unwrap().count, 0);
    assert!(saver.logs().contains("final save done"), "{}", saver.logs());
}
