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
use canvas_shared::hot::redis::{RedisHotState, RedisTarget};
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
        max_attempts: 3,
    })
    .await;
    store.ensure_table(true).await.expect("create test table");
    store
}

pub struct Options {
    pub limits: Limits,
    pub tuning: TuningArgs,
    pub auth: Auth,
    pub journal_len: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            tuning: TuningArgs::default(),
            auth: Auth::Disabled,
            journal_len: canvas_shared::hot::DEFAULT_JOURNAL_LEN,
        }
    }
}

pub async fn spawn_gateway(redis: impl Into<RedisTarget>) -> TestGateway {
    spawn_gateway_with(redis, Options::default()).await
}

pub async fn spawn_gateway_with(redis: impl Into<RedisTarget>, options: Options) -> TestGateway {
    let hot = RedisHotState::open(redis)
        .expect("redis url")
        .with_journal_len(options.journal_len);
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

/// Saver settings for tests: a short interval, no servers, the gateways' table.
pub fn saver_settings(label: &str) -> canvas_saver::SaverSettings {
    canvas_saver::SaverSettings {
        interval: std::time::Duration::from_millis(50),
        http_addr: None,
        grpc_addr: None,
        create_table: false,
        table: TABLE.into(),
        owner: format!("{label}-{}", uuid::Uuid::new_v4().simple()),
        ..canvas_saver::SaverSettings::default()
    }
}

/// A saver against `redis` and the gateways' table, not started.
pub async fn saver(
    redis: impl Into<RedisTarget>,
    settings: canvas_saver::SaverSettings,
) -> canvas_saver::Saver {
    let hot = Arc::new(RedisHotState::open(redis).expect("redis url"));
    let store: Arc<dyn DurableStore> = Arc::new(durable().await);
    canvas_saver::Saver::new(settings, hot, store)
}

/// Runs a saver with these settings until the returned token is cancelled.
pub async fn start_saver_with(
    redis: impl Into<RedisTarget>,
    settings: canvas_saver::SaverSettings,
) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let running = saver(redis, settings)
        .await
        .start(shutdown.clone())
        .await
        .expect("saver starts");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        let _ = running.wait().await;
    });
    shutdown
}

/// Runs a saver against `redis` and the gateways' table until the returned token is cancelled.
pub async fn start_saver(redis: impl Into<RedisTarget>) -> CancellationToken {
    start_saver_with(redis, saver_settings("test-saver")).await
}

/// A project id no other test uses.
pub fn project(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4().simple())
}

// ---- auth and abuse helpers ----

/// The HS256 secret of [`jwt_auth`] gateways.
pub const SECRET: &str = "test-secret-of-the-gateway-tests";

/// Auth with the HS256 [`SECRET`].
pub fn jwt_auth() -> Auth {
    jwt_auth_with(canvas_gateway::auth::AuthArgs {
        jwt_secret: Some(SECRET.into()),
        ..Default::default()
    })
}

pub fn jwt_auth_with(args: canvas_gateway::auth::AuthArgs) -> Auth {
    Auth::from_args(&args).expect("auth settings")
}

/// Epoch seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// A JWT with these claims, signed with `alg` and `key`.
pub fn sign(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    claims: &serde_json::Value,
) -> String {
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, key).expect("sign")
}

/// An HS256 JWT signed with [`SECRET`].
pub fn hs256(claims: &serde_json::Value) -> String {
    sign(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

/// A valid HS256 token for `user` with these project grants, valid for an hour.
pub fn token(user: &str, projects: serde_json::Value) -> String {
    hs256(&serde_json::json!({"sub": user, "exp": now_secs() + 3600, "projects": projects}))
}

/// A test key file's contents (gateway/tests/keys).
pub fn key_file(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Tries a WebSocket upgrade; Ok(client) when it succeeds, Err((status, JSON body)) when the server refused it.
pub async fn try_connect(
    url: &str,
    headers: &[(&str, &str)],
) -> Result<canvas_testkit::WsClient, (u16, serde_json::Value)> {
    use tokio_tungstenite::tungstenite::Error;
    match canvas_testkit::WsClient::connect_with_headers(url, headers).await {
        Ok(client) => Ok(client),
        Err(e) => match e.downcast::<Error>() {
            Ok(Error::Http(response)) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(serde_json::Value::Null);
                Err((status, body))
            }
            Ok(other) => panic!("upgrade failed without an HTTP answer: {other}"),
            Err(other) => panic!("upgrade failed without an HTTP answer: {other:#}"),
        },
    }
}

/// The status and JSON body of a refused upgrade; panics if the upgrade succeeded.
pub async fn refused(url: &str, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    match try_connect(url, headers).await {
        Ok(_) => panic!("upgrade to {url} was accepted"),
        Err(refusal) => refusal,
    }
}

/// Updates object `o1` with `{"n": n}`, which must be acked; returns the ack's seq.
pub async fn update_o1(client: &mut canvas_testkit::WsClient, n: u64) -> u64 {
    let ack = client
        .request(serde_json::json!({"type":"update","id":"o1","patch":{"n":n}}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["seq"].as_u64().unwrap()
}

/// The Redis keys of project `p`, as the gateway names them.
pub fn keys_of(p: &str) -> canvas_shared::hot::keys::ProjectKeys {
    let project = canvas_shared::ids::ProjectId::parse(p).expect("project id");
    canvas_shared::hot::keys::ProjectKeys::new(&project)
}

/// Where a test's hot state runs: a redis-server of its own, or a leased 3 + 3 Redis Cluster. The same test body
/// runs on both.
pub enum Hot {
    Single(canvas_testkit::RedisServer),
    Cluster(canvas_testkit::LeasedCluster),
}

impl Hot {
    pub fn single() -> Self {
        Hot::Single(canvas_testkit::RedisServer::start())
    }

    pub fn cluster() -> Self {
        Hot::Cluster(canvas_testkit::lease_cluster())
    }

    /// What the services are given for it.
    pub fn target(&self) -> RedisTarget {
        match self {
            Hot::Single(server) => RedisTarget::from(server.url()),
            Hot::Cluster(cluster) => RedisTarget::cluster_from_list(&cluster.nodes_env()),
        }
    }
}

impl Hot {
    /// A redis-cli command against it (on a cluster: every primary for FLUSHALL, else the node owning the key).
    pub fn cli(&self, args: &[&str]) -> String {
        match self {
            Hot::Single(server) => server.cli(args),
            Hot::Cluster(cluster) if args.first() == Some(&"FLUSHALL") => {
                for port in cluster.primaries() {
                    cluster.cli(port, args);
                }
                "OK".into()
            }
            Hot::Cluster(cluster) => cluster.cli_cluster(args),
        }
    }
}
