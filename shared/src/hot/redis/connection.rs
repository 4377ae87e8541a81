//! Where the hot state lives, a single Redis or a Redis Cluster, and one connection type for both: every script
//! and command of the store goes through [`RedisConn`], which either talks to one server (re-connecting by
//! itself) or routes each call to the primary owning its slot (following MOVED and ASK, refreshing the slot map
//! after a failover or a reshard).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::super::HotError;
use crate::cause::Cause;
use crate::config::RedisTarget;

/// How long one Redis command may take before the caller gets `unavailable`.
pub(crate) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A node address as the cluster client wants it.
pub(crate) fn node_url(node: &str) -> String {
    if node.contains("://") {
        node.to_string()
    } else {
        format!("redis://{node}")
    }
}

/// The connection every call of the store goes through (cheap to clone: clones share one connection).
#[derive(Clone)]
pub(crate) enum RedisConn {
    Single(ConnectionManager),
    Cluster(LazyCluster),
}

impl RedisConn {
    /// Prepares the connection; it is made on first use (a cluster's on its first call, so that a service starts,
    /// and reports not ready, while the cluster is not there yet) and re-made by itself after an outage.
    pub(crate) fn open(target: &RedisTarget) -> Result<Self, HotError> {
        match target {
            RedisTarget::Single { url } => {
                let client = Client::open(url.as_str()).map_err(|e| {
                    HotError::Unavailable(Cause::explained(
                        format!("bad REDIS_URL {url:?}: {e}"),
                        e,
                    ))
                })?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(RESPONSE_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let conn = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| HotError::Unavailable(Cause::new(e)))?;
                Ok(RedisConn::Single(conn))
            }
            RedisTarget::Cluster { nodes } => {
                let client = cluster_client(nodes, None)?;
                Ok(RedisConn::Cluster(LazyCluster {
                    client: Arc::new(client),
                    conn: Arc::new(Mutex::new(Cluster::default())),
                }))
            }
        }
    }
}

/// The cluster client for `nodes`; with `pushes`, a RESP3 client whose pushes (sharded messages, subscription
/// confirmations, disconnections) go there.
pub(crate) fn cluster_client(
    nodes: &[String],
    pushes: Option<tokio::sync::mpsc::UnboundedSender<redis::PushInfo>>,
) -> Result<ClusterClient, HotError> {
    if nodes.is_empty() {
        return Err(HotError::Unavailable(Cause::described(
            "REDIS_CLUSTER_NODES names no node",
        )));
    }
    let mut builder = ClusterClient::builder(nodes.iter().map(|node| node_url(node)))
        .connection_timeout(RESPONSE_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(6)
        .min_retry_wait(50)
        .max_retry_wait(1000);
    if let Some(pushes) = pushes {
        builder = builder
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(pushes);
    }
    builder.build().map_err(|e| {
        HotError::Unavailable(Cause::explained(
            format!("bad REDIS_CLUSTER_NODES {nodes:?}: {e}"),
            e,
        ))
    })
}

/// A cluster connection made on first use; a failed attempt is tried again on the next call. A connection whose
/// calls time out or are refused is replaced by a fresh one (at most every [`REBUILD_AFTER`]): after a failover
/// the client's own recovery can keep routing a slot to the dead primary for as long as it keeps trying, while a new
/// connection reads the slot map afresh from the nodes that answer.
#[derive(Clone)]
pub(crate) struct LazyCluster {
    client: Arc<ClusterClient>,
    conn: Arc<Mutex<Cluster>>,
}

#[derive(Default)]
struct Cluster {
    conn: Option<ClusterConnection>,
    made_at: Option<Instant>,
}

/// The shortest life of a cluster connection before a failing one is replaced.
const REBUILD_AFTER: Duration = Duration::from_secs(3);

impl LazyCluster {
    pub(crate) async fn get(&self) -> redis::RedisResult<ClusterConnection> {
        let mut cluster = self.conn.lock().await;
        if let Some(conn) = &cluster.conn {
            return Ok(conn.clone());
        }
        let conn = tokio::time::timeout(RESPONSE_TIMEOUT * 2, self.client.get_async_connection())
            .await
            .map_err(|_| {
                redis::RedisError::from((redis::ErrorKind::Io, "no Redis Cluster node answered"))
            })??;
        cluster.conn = Some(conn.clone());
        cluster.made_at = Some(Instant::now());
        Ok(conn)
    }

    /// Notes how a call ended: a timeout or a refused connection replaces a connection older than
    /// [`REBUILD_AFTER`], so that the next call starts from a fresh slot map.
    async fn after<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &result {
            if e.is_timeout() || e.is_connection_refusal() || e.is_connection_dropped() {
                let mut cluster = self.conn.lock().await;
                if cluster
                    .made_at
                    .is_some_and(|at| at.elapsed() >= REBUILD_AFTER)
                {
                    tracing::warn!(error = %e, "Redis Cluster connection failing; making a new one");
                    *cluster = Cluster::default();
                }
            }
        }
        result
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_command(cmd),
            RedisConn::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                let result = conn.req_packed_command(cmd).await;
                lazy.after(result).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                lazy.after(result).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(conn) => conn.get_db(),
            RedisConn::Cluster(_) => 0,
        }
    }
}

impl RedisConn {
    /// PING on a single Redis; on a cluster, on every primary of the slot map, so that a dead primary shows until
    /// its replica has taken over its slots.
    pub(crate) async fn ping(&self) -> redis::RedisResult<()> {
        let mut ping = redis::cmd("PING");
        match self {
            RedisConn::Single(conn) => ping.query_async(&mut conn.clone()).await,
            RedisConn::Cluster(lazy) => {
                use redis::cluster_routing::{
                    MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo,
                };
                let mut conn = lazy.get().await?;
                let routing = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                let result = conn
                    .route_command(std::mem::take(&mut ping), routing)
                    .await
                    .map(|_| ());
                lazy.after(result).await
            }
        }
    }

    /// Bytes Redis uses (`used_memory`), summed over a cluster's primaries; None when it cannot tell.
    pub(crate) async fn used_memory(&self) -> Option<u64> {
        let mut info = redis::cmd("INFO");
        info.arg("memory");
        let reply: Value = match self {
            RedisConn::Single(conn) => info.query_async(&mut conn.clone()).await.ok()?,
            RedisConn::Cluster(lazy) => {
                use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
                let mut conn = lazy.get().await.ok()?;
                conn.route_command(
                    info,
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                )
                .await
                .ok()?
            }
        };
        let mut total = None;
        sum_used_memory(&reply, &mut total);
        total
    }
}

/// Adds up the `used_memory:` lines of one INFO reply, or of each node's reply in a map of them.
fn sum_used_memory(reply: &Value, total: &mut Option<u64>) {
    let text = match reply {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::SimpleString(text) => text.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::Map(pairs) => {
            for (_, value) in pairs {
                sum_used_memory(value, total);
            }
            return;
        }
        Value::Array(values) => {
            for value in values {
                sum_used_memory(value, total);
            }
            return;
        }
        _ => return,
    };
    if let Some(bytes) = text.lines().find_map(|line| {
        line.strip_prefix("used_memory:")
            .and_then(|v| v.trim().parse::<u64>().ok())
    }) {
        *total = Some(total.unwrap_or(0) + bytes);
    }
}
