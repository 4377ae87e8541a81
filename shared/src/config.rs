//! Configuration pieces shared by the binaries: each is a `clap::Args` group read from flags or the
//! environment variables the contract names, so every service is configured the same way.

use std::time::Duration;

use crate::limits::Limits;

/// Where the hot state lives.
#[derive(clap::Args, Debug, Clone)]
pub struct RedisArgs {
    /// Redis connection URL.
    #[arg(
        long = "redis-url",
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Comma-separated `host:port` seed nodes of a Redis Cluster; when set, the cluster is used and `REDIS_URL`
    /// is not.
    #[arg(long = "redis-cluster-nodes", env = "REDIS_CLUSTER_NODES")]
    pub redis_cluster_nodes: Option<String>,
}

impl RedisArgs {
    /// Where the hot state lives: the cluster when one is named, else the single Redis.
    pub fn target(&self) -> RedisTarget {
        match self.redis_cluster_nodes.as_deref().map(str::trim) {
            Some(nodes) if !nodes.is_empty() => RedisTarget::cluster_from_list(nodes),
            _ => RedisTarget::Single {
                url: self.redis_url.clone(),
            },
        }
    }
}

/// Where the hot state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis server (`REDIS_URL`).
    Single { url: String },
    /// A Redis Cluster, found through these seed nodes (`REDIS_CLUSTER_NODES`, `host:port` or `redis://` URLs).
    Cluster { nodes: Vec<String> },
}

impl RedisTarget {
    /// The cluster named by a comma-separated `REDIS_CLUSTER_NODES` value (blank entries are ignored).
    pub fn cluster_from_list(list: &str) -> Self {
        let nodes = list
            .split(',')
            .map(str::trim)
            .filter(|node| !node.is_empty())
            .map(str::to_string)
            .collect();
        RedisTarget::Cluster { nodes }
    }

    /// Whether fan-out uses sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`), which a cluster needs so that a message
    /// goes only to the shard owning the channel's slot.
    pub(crate) fn sharded(&self) -> bool {
        matches!(self, RedisTarget::Cluster { .. })
    }
}

impl From<&str> for RedisTarget {
    fn from(url: &str) -> Self {
        RedisTarget::Single {
            url: url.to_string(),
        }
    }
}

impl From<&String> for RedisTarget {
    fn from(url: &String) -> Self {
        RedisTarget::from(url.as_str())
    }
}

impl From<String> for RedisTarget {
    fn from(url: String) -> Self {
        RedisTarget::Single { url }
    }
}

impl From<&RedisTarget> for RedisTarget {
    fn from(target: &RedisTarget) -> Self {
        target.clone()
    }
}

/// The DynamoDB table when `CANVAS_TABLE` is not set.
pub const DEFAULT_TABLE: &str = "canvas_objects";

/// Where the durable store lives.
#[derive(clap::Args, Debug, Clone)]
pub struct DynamoArgs {
    /// DynamoDB endpoint URL (DynamoDB Local, dynalite); unset = the AWS default endpoint and credential chain.
    #[arg(long = "dynamodb-endpoint", env = "DYNAMODB_ENDPOINT")]
    pub endpoint: Option<String>,
    /// AWS region.
    #[arg(long = "aws-region", env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// DynamoDB table name.
    #[arg(long = "table", env = "CANVAS_TABLE", default_value = DEFAULT_TABLE)]
    pub table: String,
    /// Attempts the AWS SDK makes per request (its own retries, inside ours). The saver retries with its own
    /// backoff, so 1 keeps failures quick to see; cold loads benefit from the default.
    #[arg(
        long = "dynamodb-max-attempts",
        env = "DYNAMODB_MAX_ATTEMPTS",
        default_value_t = 3
    )]
    pub max_attempts: u32,
}

impl DynamoArgs {
    /// DynamoDB Local / dynalite at `endpoint`, with the default region and SDK retries.
    pub fn local(endpoint: impl Into<String>, table: impl Into<String>) -> Self {
        Self {
            endpoint: Some(endpoint.into()),
            region: "us-east-1".into(),
            table: table.into(),
            max_attempts: 3,
        }
    }
}

/// Log and trace output.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TelemetryArgs {
    /// OTLP gRPC endpoint for traces; unset = no export.
    #[arg(long = "otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `text` or `json` logs.
    #[arg(long = "log-format", env = "LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Limits on client input.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitsArgs {
    /// Largest WebSocket frame (bytes); larger frames close the socket with 1009.
    #[arg(long = "max-frame-bytes", env = "CANVAS_MAX_FRAME_BYTES", default_value_t = Limits::default().max_frame_bytes)]
    pub max_frame_bytes: usize,
    /// Largest object as JSON (bytes); never more than 192 KiB, the most that is always a storable DynamoDB item.
    #[arg(long = "max-object-bytes", env = "CANVAS_MAX_OBJECT_BYTES", default_value_t = Limits::default().max_object_bytes)]
    pub max_object_bytes: usize,
    /// Most objects per project.
    #[arg(long = "max-objects-per-project", env = "CANVAS_MAX_OBJECTS_PER_PROJECT", default_value_t = Limits::default().max_objects_per_project)]
    pub max_objects_per_project: usize,
    /// Most object JSON per project, in total (bytes).
    #[arg(long = "max-project-bytes", env = "CANVAS_MAX_PROJECT_BYTES", default_value_t = Limits::default().max_project_bytes)]
    pub max_project_bytes: usize,
}

impl From<&LimitsArgs> for Limits {
    fn from(a: &LimitsArgs) -> Self {
        Limits {
            max_frame_bytes: a.max_frame_bytes,
            max_object_bytes: a
                .max_object_bytes
                .min(crate::object::MAX_STORABLE_OBJECT_BYTES),
            max_objects_per_project: a.max_objects_per_project,
            max_project_bytes: a.max_project_bytes,
        }
    }
}

/// Default idle time after which a fully saved project with no client is evicted from the hot state (ms).
pub const DEFAULT_IDLE_EVICT_MS: u64 = 900_000;

/// When idle projects leave the hot state.
#[derive(clap::Args, Debug, Clone)]
pub struct EvictionArgs {
    /// A project that is fully saved, has no client on any gateway and was not read or edited for this long is
    /// removed from the hot state (ms); the next access loads it again. 0 = never.
    #[arg(long = "idle-evict-ms", env = "CANVAS_IDLE_EVICT_MS", default_value_t = DEFAULT_IDLE_EVICT_MS)]
    pub idle_evict_ms: u64,
}

impl EvictionArgs {
    /// The idle time, or `None` when projects are kept forever.
    pub fn idle(&self) -> Option<Duration> {
        (self.idle_evict_ms > 0).then(|| millis(self.idle_evict_ms))
    }
}

/// Parses a duration given in milliseconds.
pub fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The per-project journal that resume, repair and the change feed read.
#[derive(clap::Args, Debug, Clone)]
pub struct JournalArgs {
    /// Edits each project's journal keeps at least (a client further behind gets a full snapshot). 0 = no
    /// journal.
    #[arg(long = "journal-len", env = "CANVAS_JOURNAL_LEN", default_value_t = crate::hot::DEFAULT_JOURNAL_LEN)]
    pub journal_len: usize,
}
