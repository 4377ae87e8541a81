//! Shared by the saver's integration tests: real redis-server and dynalite on free ports, an in-process saver
//! on free ports with a short interval, edit helpers that go through the hot state as a gateway would, and
//! read-back helpers that Query DynamoDB.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use canvas_saver::{RunningSaver, Saver, SaverSettings};
use canvas_shared::config::DynamoArgs;
use canvas_shared::durable::dynamo::DynamoStore;
use canvas_shared::durable::item;
use canvas_shared::durable::DurableStore;
use canvas_shared::hot::redis::{RedisHotState, RedisTarget};
use canvas_shared::hot::{Applied, EditContext, HotStore, SaveQueue};
use canvas_shared::ids::{ObjectId, ProjectId};

use canvas_shared::Limits;
use canvas_testkit::edits;
use canvas_testkit::http::{http_request, HttpResponse};
use canvas_testkit::{Dynalite, LeasedCluster, RedisServer};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub const INTERVAL_MS: u64 = 200;

/// Redis + dynalite + clients to both, with the table created. On a cluster, `redis` is an idle server nobody
/// uses and `cluster` holds the hot state.
pub struct Env {
    pub redis: RedisServer,
    pub cluster: Option<LeasedCluster>,
    pub dynalite: Dynalite,
    pub hot: RedisHotState,
    pub store: DynamoStore,
}

pub fn table_name() -> String {
    "canvas_objects".to_string()
}

pub async fn dynamo(dynalite: &Dynalite, table: &str) -> DynamoStore {
    DynamoStore::connect(&DynamoArgs {
        endpoint: Some(dynalite.endpoint()),
        region: "us-east-1".into(),
        table: table.into(),
        max_attempts: 3,
    })
    .await
}

impl Env {
    pub async fn start() -> Self {
        Self::with_dynalite(Dynalite::start()).await
    }

    pub async fn with_dynalite(dynalite: Dynalite) -> Self {
        let redis = RedisServer::start();
        let hot = RedisHotState::connect(&redis.url()).expect("redis client");
        Self::assemble(redis, None, hot, dynalite).await
    }

    /// The hot state on a leased 3 + 3 Redis Cluster.
    pub async fn on_a_cluster() -> Self {
        let cluster = canvas_testkit::lease_cluster();
        let hot = RedisHotState::open(RedisTarget::cluster_from_list(&cluster.nodes_env()))
            .expect("cluster client");
        Self::assemble(RedisServer::start(), Some(cluster), hot, Dynalite::start()).await
    }

    async fn assemble(
        redis: RedisServer,
        cluster: Option<LeasedCluster>,
        hot: RedisHotState,
        dynalite: Dynalite,
    ) -> Self {
        let store = dynamo(&dynalite, &table_name()).await;
        store.ensure_table(true).await.expect("table");
        Self {
            redis,
            cluster,
            dynalite,
            hot,
            store,
        }
    }

    /// The environment a saver process needs to find the hot state.
    pub fn redis_env(&self) -> (&'static str, String) {
        match &self.cluster {
            Some(cluster) => ("REDIS_CLUSTER_NODES", cluster.nodes_env()),
            None => ("REDIS_URL", self.redis.url()),
        }
    }

    pub fn hot(&self) -> Arc<dyn HotStore> {
        Arc::new(self.hot.clone())
    }
}

/// Settings for an in-process saver: free ports, a short interval and lease, quick retries.
pub fn settings() -> SaverSettings {
    SaverSettings {
        interval: Duration::from_millis(INTERVAL_MS),
        lease: Duration::from_millis(2000),
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        create_table: true,
        shutdown_grace: Duration::from_secs(10),
        max_projects_per_pass: 1000,
        concurrency: 4,
        max_attempts: 6,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
        operator_token: None,
        owner: format!("test-saver-{}", uuid::Uuid::new_v4().simple()),
        table: table_name(),
        store_retry: Duration::from_millis(100),
        idle_evict: None,
    }
}

/// An in-process saver; cancelled (with final saves) on [`TestSaver::stop`].
pub struct TestSaver {
    pub running: Option<RunningSaver>,
    pub shutdown: CancellationToken,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: Arc<canvas_saver::Metrics>,
}

pub async fn spawn_saver(
    hot: Arc<dyn HotStore>,
    durable: Arc<dyn DurableStore>,
    settings: SaverSettings,
) -> TestSaver {
    spawn_saver_on(hot, durable, settings).await
}

/// [`spawn_saver`] on the saver's half of a hot state alone (a test may wrap it).
pub async fn spawn_saver_on(
    hot: Arc<dyn SaveQueue>,
    durable: Arc<dyn DurableStore>,
    settings: SaverSettings,
) -> TestSaver {
    let shutdown = CancellationToken::new();
    let running = Saver::new(settings, hot, durable)
        .start(shutdown.clone())
        .await
        .expect("saver starts");
    TestSaver {
        http: running.http_addr.expect("http"),
        grpc: running.grpc_addr.expect("grpc"),
        metrics: Arc::clone(&running.metrics),
        running: Some(running),
        shutdown,
    }
}

impl TestSaver {
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(Duration::from_secs(20), running.wait())
                .await
                .expect("saver stops in time")
                .expect("saver stops cleanly");
        }
    }
}

impl Drop for TestSaver {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.abort();
        }
    }
}

pub fn pid(s: &str) -> ProjectId {
    ProjectId::parse(s).unwrap()
}

pub fn oid(s: &str) -> ObjectId {
    ObjectId::parse(s).unwrap()
}

static LIMITS: std::sync::LazyLock<Limits> = std::sync::LazyLock::new(Limits::default);

fn ctx() -> EditContext<'static> {
    EditContext {
        by: "tester",
        origin: "test-conn",
        now_ms: canvas_shared::time::now_ms(),
        limits: &LIMITS,
        seq_floor: 0,
    }
}

/// Loads an empty project, as a gateway does for a project the durable store does not hold.
pub async fn open(hot: &dyn HotStore, project: &str) {
    hot.load(&pid(project), &[], 0, 0).await.expect("load");
}

pub async fn create(hot: &dyn HotStore, project: &str, object: Value) -> Applied {
    hot.apply(&pid(project), &edits::create(object), ctx())
        .await
        .expect("create applied")
}

pub async fn update(hot: &dyn HotStore, project: &str, id: &str, patch: Value) -> Applied {
    hot.apply(&pid(project), &edits::update(id, patch), ctx())
        .await
        .expect("update applied")
}

pub async fn delete(hot: &dyn HotStore, project: &str, id: &str) -> Applied {
    hot.apply(&pid(project), &edits::delete(id), ctx())
        .await
        .expect("delete applied")
}

pub fn rect(id: &str, x: i64) -> Value {
    serde_json::json!({"id": id, "type": "rect", "x": x, "y": 2, "fill": "#f00", "tags": [], "meta": {}})
}

/// Every item of a project, read back with Query (all pages), as object id → object JSON (with `version`).
pub async fn query(store: &DynamoStore, project: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = store
            .client()
            .query()
            .table_name(store.table())
            .key_condition_expression("projectId = :p")
            .expression_attribute_values(":p", AttributeValue::S(project.into()))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("query");
        for raw in page.items() {
            let Some(object) = item::from_item(raw) else {
                // The project's seq watermark: a system item, never an object.
                if item::is_system_item(raw) {
                    continue;
                }
                // A deleted object's tombstone: absent for every reader.
                assert!(raw.contains_key(item::DELETED_AT), "our item: {raw:?}");
                continue;
            };
            assert!(
                matches!(raw.get("updatedAt"), Some(AttributeValue::N(_))),
                "updatedAt is a number"
            );
            assert!(
                matches!(raw.get("version"), Some(AttributeValue::N(_))),
                "version is a number"
            );
            out.insert(
                object.id.to_string(),
                serde_json::from_str(&object.json).unwrap(),
            );
        }
        match page.last_evaluated_key() {
            Some(k) if !k.is_empty() => start = Some(k.clone()),
            _ => break,
        }
    }
    out
}

/// The project's objects in the hot state, as object id → JSON.
pub async fn hot_objects(hot: &dyn HotStore, project: &str) -> BTreeMap<String, Value> {
    hot.snapshot(&pid(project))
        .await
        .expect("snapshot")
        .objects
        .iter()
        .map(|json| {
            let v: Value = serde_json::from_str(json).unwrap();
            (v["id"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Polls until `check` is true or the timeout passes.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until nothing is dirty or being saved.
pub async fn wait_clean(hot: &dyn HotStore, timeout: Duration) {
    wait_until(timeout, "no dirty projects", || async {
        hot.dirty_summary()
            .await
            .map(|s| s.count == 0)
            .unwrap_or(false)
    })
    .await;
}

/// Asserts DynamoDB holds exactly what the hot state holds for the project.
pub async fn assert_persisted(hot: &dyn HotStore, store: &DynamoStore, project: &str) {
    let want = hot_objects(hot, project).await;
    let got = query(store, project).await;
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "object ids of {project}"
    );
    for (id, object) in &want {
        assert_eq!(&got[id], object, "object {project}/{id}");
    }
}

/// GET `path` on `addr`, with the operator token when given: status and body.
pub async fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let response = http_fetch(addr, path, token).await;
    (response.status, response.body)
}

/// GET `path` on `addr` with the whole response (headers too), through testkit's one HTTP client.
pub async fn http_fetch(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    http_request("GET", &format!("http://{addr}{path}"), &headers, None)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

pub async fn metrics_json(addr: SocketAddr) -> Value {
    let (status, body) = http_get(addr, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("metrics JSON")
}

/// The Redis keys of project `p`, as the hot state names them.
#[allow(dead_code)]
pub fn keys_of(p: &str) -> canvas_shared::hot::keys::ProjectKeys {
    let project = canvas_shared::ids::ProjectId::parse(p).expect("project id");
    canvas_shared::hot::keys::ProjectKeys::new(&project)
}
