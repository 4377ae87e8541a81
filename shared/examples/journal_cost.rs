//! What the journal adds to the edit script: the same edits against one real redis-server, first with no journal
//! (`CANVAS_JOURNAL_LEN=0`, as before the journal existed), then with the default one, read from Redis' own
//! `INFO commandstats` (EVALSHA calls and µs per call) and `INFO cpu` (server CPU per edit).
//! `cargo run --release -p canvas-shared --example journal_cost -- 20000 8` (edits per run, edits in flight).

use std::sync::Arc;
use std::time::Instant;

use canvas_shared::hot::redis::RedisHotState;
use canvas_shared::hot::{EditContext, EditStore, DEFAULT_JOURNAL_LEN};
use canvas_shared::ids::{ObjectId, ProjectId};
use canvas_shared::object::{Edit, NewObject, Patch};
use canvas_shared::Limits;
use canvas_testkit::RedisServer;
use serde_json::json;

/// A field of an `INFO` section, e.g. `used_cpu_user:1.23`.
fn field(info: &str, name: &str) -> f64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `calls` and `usec_per_call` of `cmdstat_evalsha`.
fn evalsha(info: &str) -> (f64, f64) {
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:"))
        .unwrap_or("");
    let get = |key: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (get("calls"), get("usec_per_call"))
}

async fn info(conn: &mut redis::aio::MultiplexedConnection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .expect("INFO")
}

async fn run(url: &str, journal_len: usize, edits: usize, in_flight: usize) {
    let hot = Arc::new(
        RedisHotState::connect(url)
            .expect("redis")
            .with_journal_len(journal_len),
    );
    let limits = Limits::default();
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let project = ProjectId::parse(format!("cost-{run}")).unwrap();
    hot.load(&project, &[], 0, 0).await.expect("load");
    for i in 0..in_flight {
        let object = json!({"id": format!("o{i}"), "type": "rect", "x": 0, "y": 0, "width": 100, "height": 50, "fill": "#3366ff"});
        let edit = Edit::Create(NewObject::from_json(object, &limits).unwrap());
        let ctx = EditContext {
            by: "bench",
            origin: "bench-conn",
            now_ms: 1,
            limits: &limits,
            seq_floor: 0,
        };
        hot.apply(&project, &edit, ctx).await.expect("create");
    }
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let cpu_before = info(&mut conn, "cpu").await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..in_flight {
        let (hot, project) = (Arc::clone(&hot), project.clone());
        tasks.push(tokio::spawn(async move {
            let limits = Limits::default();
            let id = ObjectId::parse(format!("o{worker}")).unwrap();
            for n in 0..edits / in_flight {
                let patch = Patch::from_json(&id, json!({"x": n, "y": n % 500}), &limits).unwrap();
                let edit = Edit::Update {
                    id: id.clone(),
                    patch,
                    if_version: None,
                };
                let ctx = EditContext {
                    by: "bench",
                    origin: "bench-conn",
                    now_ms: n as i64,
                    limits: &limits,
                    seq_floor: 0,
                };
                hot.apply(&project, &edit, ctx).await.expect("edit");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = info(&mut conn, "cpu").await;
    let (calls, usec_per_call) = evalsha(&info(&mut conn, "commandstats").await);
    let cpu = |info: &str| field(info, "used_cpu_user") + field(info, "used_cpu_sys");
    let cpu_per_edit_us = (cpu(&cpu_after) - cpu(&cpu_before)) * 1e6 / calls.max(1.0);
    println!(
        "journal {journal_len:>4}: {calls:.0} EVALSHA in {elapsed:.2} s = {:.0}/s; {usec_per_call:.2} µs per call (commandstats); {cpu_per_edit_us:.1} µs Redis CPU per edit (INFO cpu)",
        calls / elapsed
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let edits: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(20_000);
    let in_flight: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(8);
    let redis = RedisServer::start();
    // Warm-up (script load, connections), then each setting in turn, twice, on the same server.
    run(&redis.url(), DEFAULT_JOURNAL_LEN, edits / 10, in_flight).await;
    for _ in 0..2 {
        run(&redis.url(), 0, edits, in_flight).await;
        run(&redis.url(), DEFAULT_JOURNAL_LEN, edits, in_flight).await;
    }
}
