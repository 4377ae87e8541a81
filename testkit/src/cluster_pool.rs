//! Redis Clusters shared by the tests of one test binary, one test at a time each: starting a settled 3 + 3
//! cluster takes about two seconds, so a test leases one, flushed, and hands it back when it ends (also when it
//! fails). A test that kills nodes or moves slots starts its own [`RedisCluster`] instead.

use std::ops::Deref;
use std::sync::Mutex;

use crate::RedisCluster;

static IDLE: Mutex<Vec<RedisCluster>> = Mutex::new(Vec::new());

/// A cluster for one test: empty, every slot served.
pub struct LeasedCluster(Option<RedisCluster>);

impl Deref for LeasedCluster {
    type Target = RedisCluster;

    fn deref(&self) -> &RedisCluster {
        self.0
            .as_ref()
            .expect("a leased cluster is held until dropped")
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
pub fn lease_cluster() -> LeasedCluster {
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
