//! The one-process dev mode's wiring: the save loop in-process on the memory hot state and the embedded store,
//! with no servers of its own.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use canvas_saver::{Saver, SaverSettings};
use canvas_shared::durable::embedded::EmbeddedStore;
use canvas_shared::durable::DurableStore;
use canvas_shared::hot::memory::MemoryHotState;
use canvas_shared::hot::HotStore;
use canvas_testkit::TempDir;
use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

async fn embedded_objects(store: &EmbeddedStore, project: &str) -> BTreeMap<String, Value> {
    store
        .load_project(&pid(project))
        .await
        .unwrap()
        .objects
        .into_iter()
        .map(|o| (o.id.to_string(), serde_json::from_str(&o.json).unwrap()))
        .collect()
}

#[tokio::test]
async fn saves_memory_state_into_the_embedded_store() {
    let dir = TempDir::new("saver-dev");
    let store = EmbeddedStore::open(&dir.path().join("canvas.redb")).unwrap();
    let hot: Arc<dyn HotStore> = Arc::new(MemoryHotState::new());
    let settings = SaverSettings {
        interval: Duration::from_millis(50),
        ..SaverSettings::default()
    };
    let shutdown = CancellationToken::new();
    let running = Saver::new(settings, hot.clone(), Arc::new(store.clone()))
        .start(shutdown.clone())
        .await
        .unwrap();
    assert!(running.http_addr.is_none() && running.grpc_addr.is_none());

    open(hot.as_ref(), "dev").await;
    create(hot.as_ref(), "dev", rect("a", 1)).await;
    create(hot.as_ref(), "dev", rect("b", 2)).await;
    update(hot.as_ref(), "dev", "a", json!({"x": 3})).await;
    wait_clean(hot.as_ref(), Duration::from_secs(5)).await;
    assert_eq!(
        embedded_objects(&store, "dev").await,
        hot_objects(hot.as_ref(), "dev").await
    );

    delete(hot.as_ref(), "dev", "b").await;
    shutdown.cancel();
    running.wait().await.unwrap();
    let saved = embedded_objects(&store, "dev").await;
    assert_eq!(saved.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(saved["a"]["version"], 2);
}
