//! Measures the saver's write rate: 10,000 changed objects over 100 projects in Redis, one save pass against
//! dynalite, beside a raw BatchWriteItem loop (25 items a request, same concurrency) to the same dynalite in the
//! same run. Starts its own redis-server and dynalite on free ports.
//!
//! `cargo run --release -p canvas-saver --example rate` (env: RATE_PROJECTS, RATE_OBJECTS, RATE_CONCURRENCY).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use canvas_saver::{Saver, SaverSettings};
use canvas_shared::config::DynamoArgs;
use canvas_shared::durable::dynamo::DynamoStore;
use canvas_shared::durable::{item, DurableStore, MAX_BATCH_ITEMS};
use canvas_shared::hot::redis::RedisHotState;
use canvas_shared::hot::{EditContext, EditStore, SaveQueue};
use canvas_shared::ids::{ObjectId, ProjectId};
use canvas_shared::object::{Edit, NewObject};
use canvas_shared::stored::StoredObject;
use canvas_shared::Limits;
use canvas_testkit::{Dynalite, RedisServer};
use futures_util::StreamExt;
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn object(project: usize, i: usize) -> serde_json::Value {
    json!({"id": format!("o{i:05}"), "type": "rect", "x": i, "y": project, "width": 100, "height": 50,
           "fill": "#ff0000", "stroke": {"color": "#000", "width": 2}, "label": format!("object {i} of project {project}")})
}

/// The raw reference: pre-built PutRequests, 25 a request, `concurrency` in flight, UnprocessedItems resent.
async fn raw_loop(
    store: &DynamoStore,
    prefix: &str,
    projects: usize,
    objects: usize,
    concurrency: usize,
) -> Duration {
    let mut requests: Vec<WriteRequest> = Vec::with_capacity(projects * objects);
    for p in 0..projects {
        let project = ProjectId::parse(format!("{prefix}{p:03}")).expect("id");
        for i in 0..objects {
            let stored = StoredObject {
                id: ObjectId::parse(format!("o{i:05}")).expect("id"),
                json: object(p, i).to_string(),
                updated_at: 1,
            };
            let put = PutRequest::builder()
                .set_item(Some(item::to_item(&project, &stored)))
                .build()
                .expect("put");
            requests.push(WriteRequest::builder().put_request(put).build());
        }
    }
    let batches: Vec<Vec<WriteRequest>> = requests
        .chunks(MAX_BATCH_ITEMS)
        .map(<[_]>::to_vec)
        .collect();
    let started = Instant::now();
    futures_util::stream::iter(batches)
        .map(|mut batch| async move {
            while !batch.is_empty() {
                let out = store
                    .client()
                    .batch_write_item()
                    .request_items(store.table(), batch)
                    .send()
                    .await
                    .expect("raw BatchWriteItem");
                batch = out
                    .unprocessed_items()
                    .and_then(|m| m.get(store.table()))
                    .cloned()
                    .unwrap_or_default();
            }
        })
        .buffer_unordered(concurrency)
        .for_each(|()| async {})
        .await;
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let projects = env_usize("RATE_PROJECTS", 100);
    let objects = env_usize("RATE_OBJECTS", 100);
    let concurrency = env_usize("RATE_CONCURRENCY", 8);
    let total = projects * objects;

    let redis = RedisServer::start();
    let dynalite = Dynalite::start();
    let hot = RedisHotState::connect(&redis.url()).expect("redis");
    let store = DynamoStore::connect(&DynamoArgs {
        endpoint: Some(dynalite.endpoint()),
        region: "us-east-1".into(),
        table: "canvas_objects".into(),
        max_attempts: 3,
    })
    .await;
    store.ensure_table(true).await.expect("table");

    // Warm up both paths (connections, dynalite's JIT).
    raw_loop(&store, "warm", 4, 100, concurrency).await;

    let limits = Limits::default();
    let started = Instant::now();
    for p in 0..projects {
        let project = ProjectId::parse(format!("proj{p:03}")).expect("id");
        hot.load(&project, &[], 0, 0).await.expect("load");
        let edits = (0..objects).map(|i| {
            let hot = hot.clone();
            let project = project.clone();
            let limits = &limits;
            async move {
                let object = NewObject::from_json(object(p, i), limits).expect("object");
                let ctx = EditContext {
                    by: "rate",
                    origin: "rate",
                    now_ms: canvas_shared::time::now_ms(),
                    limits,
                    seq_floor: 0,
                };
                hot.apply(&project, &Edit::Create(object), ctx)
                    .await
                    .expect("edit");
            }
        });
        futures_util::stream::iter(edits)
            .buffer_unordered(64)
            .for_each(|()| async {})
            .await;
    }
    println!(
        "prepared {total} changed objects over {projects} projects in Redis in {:?}",
        started.elapsed()
    );

    let raw_before = raw_loop(&store, "rawA", projects, objects, concurrency).await;

    let settings = SaverSettings {
        concurrency,
        lease: Duration::from_secs(60),
        max_projects_per_pass: projects.max(1),
        table: store.table().to_string(),
        ..SaverSettings::default()
    };
    let saver = Saver::new(settings, Arc::new(hot.clone()), Arc::new(store.clone()));
    let started = Instant::now();
    let outcome = saver.run_pass().await;
    let pass = started.elapsed();
    assert_eq!(
        outcome.objects as usize, total,
        "every object saved in one pass"
    );
    assert_eq!(outcome.failed + outcome.lost, 0);
    assert_eq!(hot.dirty_summary().await.expect("summary").count, 0);

    let raw_after = raw_loop(&store, "rawB", projects, objects, concurrency).await;

    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "concurrency {concurrency}, {} items a request",
        MAX_BATCH_ITEMS
    );
    println!(
        "raw BatchWriteItem loop (before): {total} items in {:>8.1} ms = {:>7.0} items/s",
        raw_before.as_secs_f64() * 1e3,
        rate(raw_before)
    );
    println!("saver pass (claim+read+write+complete): {total} items in {:>8.1} ms = {:>7.0} items/s  (retries {})", pass.as_secs_f64() * 1e3, rate(pass), outcome.retries);
    println!(
        "raw BatchWriteItem loop (after):  {total} items in {:>8.1} ms = {:>7.0} items/s",
        raw_after.as_secs_f64() * 1e3,
        rate(raw_after)
    );
    println!(
        "saver / raw (mean of both raw runs): {:.2}",
        rate(pass) / ((rate(raw_before) + rate(raw_after)) / 2.0)
    );
}
