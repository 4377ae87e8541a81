//! Test harness shared by every crate's integration tests.
//!
//! Starts real servers (redis-server, a six-node Redis Cluster, dynalite) on free loopback ports, each in its own
//! temp folder, and stops them when dropped; and a small WebSocket client that speaks the canvas protocol as a browser would.

pub mod cluster_pool;
pub mod dynalite;
pub mod edits;
pub mod net;
pub mod process;
pub mod redis;
pub mod redis_cluster;
pub mod ws;

pub use cluster_pool::{lease_cluster, LeasedCluster};
pub use dynalite::Dynalite;
pub use net::{free_port, set_local_aws_env, wait_for_port};
pub use process::ChildProcess;
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;
pub use ws::WsClient;

/// The workspace root (for finding `tools/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default()
}

/// A fresh temp folder removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "canvas-{label}-{}-{}",
            std::process::id(),
            net::unique()
        ));
        let _ = std::fs::create_dir_all(&path);
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub mod http;
pub use http::http_get;

/// One dynalite for a whole test binary, with a `canvas_objects`-style table per caller; it exits by itself when
/// the test process ends (tools/dynalite/run.js watches its parent).
pub fn shared_dynalite() -> &'static Dynalite {
    static SHARED: std::sync::OnceLock<Dynalite> = std::sync::OnceLock::new();
    SHARED.get_or_init(Dynalite::start)
}

pub mod otlp;
pub use otlp::OtlpReceiver;
