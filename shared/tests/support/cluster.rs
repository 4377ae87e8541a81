//! Redis Clusters shared by the tests of one test binary, one test at a time each: starting a 3 + 3 cluster
//! takes about a second, so a test leases one, flushed, and hands it back when it ends (also when it fails).

use std::sync::Mutex;

use canvas_shared::hot::redis::RedisTarget;
use canvas_testkit::RedisCluster;

static IDLE: Mutex<Vec<RedisCluster>> = Mutex::new(Vec::new());

/// A cluster for one test: empty, every slot served.
pub struct LeasedCluster(Option<RedisCluster>);

impl LeasedCluster {
    pub fn cluster(&self) -> &RedisCluster {
        self.0.as_ref().expect("leased cluster")
    }

    /// What the services are given for it (`REDIS_CLUSTER_NODES`).
    pub fn target(&self) -> RedisTarget {
        RedisTarget::cluster_from_list(&self.cluster().nodes_env())
    }
}

impl Drop for LeasedCluster {
    fn drop(&mut self) {
        if let Some(cluster) = self.0.take() {
            if let Ok(mut idle) = IDLE.lock() {
                idle.push(cluster);
            }
        }
    }
}

/// An idle cluster, flushed, or a new one.
pub fn lease() -> LeasedCluster {
    let idle = IDLE.lock().map(|mut idle| idle.pop()).unwrap_or(None);
    let cluster = match idle {
        Some(cluster) => {
            for port in cluster.primaries() {
                cluster.cli(port, &["FLUSHALL"]);
            }
            cluster
        }
        None => RedisCluster::start(),
    };
    LeasedCluster(Some(cluster))
}
