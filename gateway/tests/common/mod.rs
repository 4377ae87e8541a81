//! `spawn_gateway()`: runs the real gateway in-process on a random port, against a real redis-server and the
//! shared dynalite, and hands back URLs to talk to it as clients do.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use canvas_gateway::auth::Auth;
use canvas_gateway::config::TuningArgs;
use canvas_gateway::{serve, AppState};
use canvas_shared::config::DynamoArgs;
use canvas_shared::durable::dynamo::DynamoStore;
use canvas_shared::durable::DurableStore;
use canvas_shared::hot::redis::RedisHotState;
use canvas_shared::Limits;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const TABLE: &str = "gateway_tests";

pub struct TestGateway {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestGateway {
    pub fn ws(&self, project: &str) -> String {
        format!("ws://{}/ws/projects/{project}", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// The durable store the gateways of this test binary use (dynalite, table created).
pub async fn durable() -> DynamoStore {
    let dynalite = canvas_testkit::shared_dynalite();
    let store = DynamoStore::connect(&DynamoArgs {
        endpoint: Some(dynalite.endpoint()),
        region: "us-east-1".into(),
        table: TABLE.into(),
    })
    .await;
    store.ensure_table(true).await.expect("create test table");
    store
}

pub struct Options {
    pub limits: Limits,
    pub tuning: TuningArgs,
    pub auth: Auth,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            tuning: TuningArgs::default(),
            auth: Auth::Disabled,
        }
    }
}

pub async fn spawn_gateway(redis_url: &str) -> TestGateway {
    spawn_gateway_with(redis_url, Options::default()).await
}

pub async fn spawn_gateway_with(redis_url: &str, options: Options) -> TestGateway {
    let hot = RedisHotState::connect(redis_url).expect("redis url");
    let durable = durable().await;
    let shutdown = CancellationToken::new();
    let state = AppState::new(
        Arc::new(hot),
        Arc::new(durable),
        options.limits,
        options.auth,
        options.tuning,
        shutdown.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(serve(listener, state));
    TestGateway {
        addr,
        shutdown,
        task,
    }
}

/// A project id no other test uses.
pub fn project(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}
