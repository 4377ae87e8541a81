//! A real six-node Redis Cluster (three primaries, three replicas) on free loopback ports, in its own temp folder,
//! for tests of the services' cluster mode: failover, node restarts and slot moves happen for real.
//!
//! Start-up waits until the cluster is *settled*, so that a client connecting right after [`RedisCluster::start`]
//! never sees `CLUSTERDOWN` or a half-known slot map: every running node answers `cluster_state:ok`, every
//! running node's `CLUSTER NODES` describes the same cluster (same roles, same replica-of, same slot ranges: the
//! data `CLUSTER SLOTS` is computed from), all 16384 slots are held by running primaries, no slot is half
//! migrated, no running node is flagged failing by anyone, no running primary is slotless, and every running
//! replica has its replication link up (so `WAIT 1` right after start does not stall on a replica still doing
//! its first sync: the primaries are started with `repl-diskless-sync-delay 0` for the same reason).
//!
//! Without that wait a client does see `CLUSTERDOWN`: `redis-cli --cluster create` returns before the
//! primaries report `ok` (a primary holds back for up to 2 s after its start) and while the replicas still sync.
//!
//! Measured on the project's 2-core machine (redis 7.0.15, node timeout 1000 ms, `cargo test --workspace --test
//! redis_cluster -- --nocapture`): [`RedisCluster::start`] takes 2.1 s (0.1 s to start six servers, 1 s inside
//! `redis-cli --cluster create`, which sleeps while the nodes meet, 0.9 s until every primary reports `ok`).
//! After SIGKILLing a primary, [`RedisCluster::wait_for_failover`] returns 2.2–2.6 s after the kill: the node is
//! flagged failing after the node timeout (1 s), failed by a majority ≈ 0.8 s later, and its replica is elected
//! after its ranked delay (0.5–1 s). Until then the dead primary's slots are unreachable, and once it is
//! flagged failed every node answers `CLUSTERDOWN` for every slot (full coverage is required). Failover time
//! grows with the node timeout: 4.0 s at 2000 ms (same machine, redis-cli polling);
//! [`RedisCluster::start_with_node_timeout`] picks another one. A restarted node is back as a synced replica in
//! 0.1–0.7 s. Moving one slot holding 302 keys with [`RedisCluster::move_slot`] takes 20 ms.
//!
//! The fixture's calls block the calling thread (they poll the nodes). From an async test whose servers run
//! in-process, wrap the slow ones (failover waits, restarts, slot moves) in [`RedisCluster::blocking`] so the
//! runtime keeps serving meanwhile. The handle is `Clone`; the nodes are SIGKILLed when the last clone drops,
//! or when the test process dies.

mod spawner;
pub mod topology;

use std::net::TcpListener;
use std::ops::Range;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::net::{starting_a_server, wait_for_port};
use crate::redis::{redis_cli_bin, redis_server_bin};
use crate::TempDir;
use spawner::Spawner;
pub use topology::{NodeView, Topology, SLOTS};

/// How long start-up, failover, restart and slot moves may take before the fixture gives up (with the cluster's
/// state in the panic message).
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// Default `cluster-node-timeout`: short, so that failover tests take seconds; long enough that a busy 2-core
/// machine does not flag a healthy node.
const NODE_TIMEOUT: Duration = Duration::from_millis(1000);
const NODE_COUNT: usize = 6;

/// A running Redis Cluster; see the module documentation.
#[derive(Clone)]
pub struct RedisCluster {
    inner: Arc<Inner>,
}

struct Inner {
    /// Client port and cluster-bus port of each node, in start order.
    ports: Vec<(u16, u16)>,
    node_timeout: Duration,
    children: Mutex<Vec<Option<Child>>>,
    last_kill: Mutex<Option<Instant>>,
    spawner: Spawner,
    dir: TempDir,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut children = lock(&self.children);
        for child in children.iter_mut().filter_map(Option::take) {
            kill(child);
        }
    }
}

impl RedisCluster {
    /// Starts six nodes, creates the cluster (one replica per primary) and waits until it is settled.
    pub fn start() -> Self {
        Self::start_with_node_timeout(NODE_TIMEOUT)
    }

    /// As [`RedisCluster::start`], with another `cluster-node-timeout` (failover takes about twice as long).
    pub fn start_with_node_timeout(node_timeout: Duration) -> Self {
        let starting = starting_a_server();
        let ports = free_ports(2 * NODE_COUNT);
        let cluster = Self {
            inner: Arc::new(Inner {
                ports: (0..NODE_COUNT)
                    .map(|i| (ports[i], ports[NODE_COUNT + i]))
                    .collect(),
                node_timeout,
                children: Mutex::new((0..NODE_COUNT).map(|_| None).collect()),
                last_kill: Mutex::new(None),
                spawner: Spawner::new(),
                dir: TempDir::new("redis-cluster"),
            }),
        };
        for index in 0..NODE_COUNT {
            cluster.spawn_node(index);
        }
        drop(starting);
        let mut create = Command::new(redis_cli_bin());
        create
            .arg("--cluster")
            .arg("create")
            .args(cluster.nodes())
            .args(["--cluster-replicas", "1", "--cluster-yes"]);
        let out = run(create);
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        cluster.wait_settled();
        cluster
    }

    /// Runs a slow, blocking fixture call (a failover wait, a restart, a slot move) on tokio's blocking pool, so
    /// that servers running in the test's own runtime keep working meanwhile:
    /// `cluster.blocking(|c| c.wait_for_failover()).await`.
    pub async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&RedisCluster) -> T + Send + 'static,
    ) -> T {
        let cluster = self.clone();
        match tokio::task::spawn_blocking(move || call(&cluster)).await {
            Ok(value) => value,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// `127.0.0.1:PORT` of all six nodes, running or not.
    pub fn nodes(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// The value for `REDIS_CLUSTER_NODES`: every node, comma-separated.
    pub fn nodes_env(&self) -> String {
        self.nodes().join(",")
    }

    /// `redis://127.0.0.1:PORT` of all six nodes (seeds for a cluster client).
    pub fn seed_urls(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The client ports of all six nodes, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.inner.ports.iter().map(|(port, _)| *port).collect()
    }

    /// The nodes whose process is running.
    pub fn running(&self) -> Vec<u16> {
        let children = lock(&self.inner.children);
        self.inner
            .ports
            .iter()
            .zip(children.iter())
            .filter(|(_, child)| child.is_some())
            .map(|((port, _), _)| *port)
            .collect()
    }

    /// The cluster as the first running node that answers sees it.
    pub fn topology(&self) -> Topology {
        self.running()
            .into_iter()
            .find_map(|port| self.topology_of(port).ok())
            .expect("no running cluster node answers CLUSTER NODES")
    }

    /// The cluster as the node on `port` sees it.
    pub fn topology_of(&self, port: u16) -> Result<Topology, String> {
        let text: String = query(port, redis::cmd("CLUSTER").arg("NODES"))
            .map_err(|e| format!("CLUSTER NODES on {port}: {e}"))?;
        Topology::parse(&text)
    }

    /// Ports of the current primaries that hold slots, by first slot.
    pub fn primaries(&self) -> Vec<u16> {
        let topology = self.topology();
        let mut primaries: Vec<&NodeView> = topology
            .primaries()
            .into_iter()
            .filter(|n| !n.slots.is_empty())
            .collect();
        primaries.sort_by_key(|n| n.slots.iter().map(|r| *r.start()).min());
        primaries.iter().map(|n| n.port).collect()
    }

    /// Ports of the current replicas (running or not), sorted.
    pub fn replicas(&self) -> Vec<u16> {
        let mut replicas: Vec<u16> = self.topology().replicas().iter().map(|n| n.port).collect();
        replicas.sort_unstable();
        replicas
    }

    /// The port of the primary the replica on `port` follows.
    pub fn primary_of_replica(&self, port: u16) -> Option<u16> {
        let topology = self.topology();
        let id = topology.node(port)?.primary_id.clone()?;
        topology.by_id(&id).map(|n| n.port)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`, so hash tags count as they do for the server).
    pub fn keyslot(&self, key: &str) -> u16 {
        self.running()
            .into_iter()
            .find_map(|port| query::<u16>(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)).ok())
            .expect("no running cluster node answers CLUSTER KEYSLOT")
    }

    /// The port of the primary serving `slot`.
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        let topology = self.topology();
        topology
            .owner(slot)
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no primary holds slot {slot}: {topology:#?}"))
    }

    /// The port of the primary serving `key`.
    pub fn primary_for_key(&self, key: &str) -> u16 {
        self.primary_for_slot(self.keyslot(key))
    }

    /// The node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> String {
        let topology = self.topology();
        topology
            .node(port)
            .map(|n| n.id.clone())
            .unwrap_or_else(|| panic!("no node on port {port}: {topology:#?}"))
    }

    /// SIGKILLs the node on `port` (nothing is persisted: it comes back empty and resyncs from its primary).
    pub fn kill_node(&self, port: u16) {
        let index = self.index(port);
        let child = lock(&self.inner.children)[index].take();
        if let Some(child) = child {
            kill(child);
        }
        *lock(&self.inner.last_kill) = Some(Instant::now());
    }

    /// SIGKILLs the primary serving `slot`; returns its port. The cluster fails over by itself after the node
    /// timeout: [`RedisCluster::wait_for_failover`].
    pub fn kill_primary_of_slot(&self, slot: u16) -> u16 {
        let port = self.primary_for_slot(slot);
        self.kill_node(port);
        port
    }

    /// Waits until the cluster has recovered from the last kill (a replica promoted to take every slot of a
    /// killed primary, and the cluster settled again on the running nodes); returns the time since the kill.
    pub fn wait_for_failover(&self) -> Duration {
        self.wait_settled();
        let killed_at = *lock(&self.inner.last_kill);
        killed_at.map(|at| at.elapsed()).unwrap_or_default()
    }

    /// Starts the node on `port` again (killing it first if it runs), with its old identity: a primary that was
    /// failed over rejoins as a replica of its successor. Waits until the cluster has settled with it.
    pub fn restart_node(&self, port: u16) {
        let index = self.index(port);
        if let Some(child) = lock(&self.inner.children)[index].take() {
            kill(child);
        }
        self.spawn_node(index);
        self.wait_settled();
    }

    /// Moves `slot`, with its keys, to the primary on `to_port`, the way `redis-cli --cluster reshard` does it
    /// (IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE): clients that keep running meanwhile see `ASK`
    /// and `MOVED` redirections, never a lost key. Waits until every node knows the new owner.
    pub fn move_slot(&self, slot: u16, to_port: u16) {
        self.migrate_slot(slot, to_port);
        self.wait_settled();
    }

    /// Moves every slot of `slots` to the primary on `to_port`.
    pub fn move_slots(&self, slots: Range<u16>, to_port: u16) {
        for slot in slots {
            self.migrate_slot(slot, to_port);
        }
        self.wait_settled();
    }

    /// Moves the slot `key` lives in to the primary on `to_port`; returns the slot.
    pub fn move_slot_of_key(&self, key: &str, to_port: u16) -> u16 {
        let slot = self.keyslot(key);
        self.move_slot(slot, to_port);
        slot
    }

    /// Moves `count` slots (redis-cli picks them) from the primary on `from_port` to the one on `to_port` with
    /// `redis-cli --cluster reshard`, then waits until the cluster has settled.
    pub fn reshard(&self, count: u16, from_port: u16, to_port: u16) {
        let mut reshard = Command::new(redis_cli_bin());
        reshard
            .args(["--cluster", "reshard", &format!("127.0.0.1:{from_port}")])
            .args(["--cluster-from", &self.node_id(from_port)])
            .args(["--cluster-to", &self.node_id(to_port)])
            .args(["--cluster-slots", &count.to_string(), "--cluster-yes"]);
        let out = run(reshard);
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_settled();
    }

    /// Runs `redis-cli -p PORT ARGS...` against one node; returns its trimmed output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut cli = Command::new(redis_cli_bin());
        cli.args(["-p", &port.to_string()]).args(args);
        output_text(run(cli))
    }

    /// Runs `redis-cli -c ARGS...` (following MOVED/ASK) against the first running node.
    pub fn cli_cluster(&self, args: &[&str]) -> String {
        let port = self
            .running()
            .first()
            .copied()
            .expect("no running cluster node");
        self.cli_cluster_on(port, args)
    }

    /// Runs `redis-cli -c -p PORT ARGS...`: enters the cluster at `port`, follows MOVED/ASK from there.
    pub fn cli_cluster_on(&self, port: u16, args: &[&str]) -> String {
        let mut cli = Command::new(redis_cli_bin());
        cli.args(["-c", "-p", &port.to_string()]).args(args);
        output_text(run(cli))
    }

    /// `SET key value` on the key's primary, then `WAIT 1` on the same connection: once this returns, a replica
    /// holds the value and survives the primary's death. Returns how many replicas acknowledged it.
    pub fn set_replicated(&self, key: &str, value: &str) -> u32 {
        let port = self.primary_for_key(key);
        let mut connection = connect(port).unwrap_or_else(|e| panic!("connect to {port}: {e}"));
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<()>(&mut connection)
            .unwrap_or_else(|e| panic!("SET {key} on {port}: {e}"));
        redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query(&mut connection)
            .unwrap_or_else(|e| panic!("WAIT on {port}: {e}"))
    }

    /// The last lines of the log of the node on `port`.
    pub fn logs(&self, port: u16) -> String {
        let text =
            std::fs::read_to_string(self.node_dir(port).join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Waits until the cluster is settled on its running nodes (see the module documentation); returns how long
    /// that took. Panics with the cluster's state after 30 s.
    pub fn wait_settled(&self) -> Duration {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < SETTLE_WITHIN {
            match self.check_settled() {
                Ok(()) => return started.elapsed(),
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut state = String::new();
        for port in self.running() {
            state.push_str(&format!(
                "\n--- node {port}: CLUSTER NODES\n{}\n--- log\n{}",
                self.cli(port, &["CLUSTER", "NODES"]),
                self.logs(port)
            ));
        }
        panic!("the Redis Cluster did not settle within {SETTLE_WITHIN:?}: {last}{state}");
    }

    /// `Ok` when settled, else what is not yet.
    fn check_settled(&self) -> Result<(), String> {
        let running = self.running();
        let mut agreed: Option<(u16, Topology)> = None;
        for &port in &running {
            let info: String = query(port, redis::cmd("CLUSTER").arg("INFO"))
                .map_err(|e| format!("CLUSTER INFO on {port}: {e}"))?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("node {port} is not cluster_state:ok"));
            }
            let topology = self.topology_of(port)?;
            if let Some(open) = topology.nodes.iter().find(|n| !n.open_slots.is_empty()) {
                return Err(format!(
                    "node {} has open slots {:?}",
                    open.port, open.open_slots
                ));
            }
            for &other in &running {
                match topology.node(other) {
                    None => return Err(format!("node {port} does not know node {other}")),
                    Some(n) if n.failing() || !n.connected => {
                        return Err(format!("node {port} sees node {other} as {:?}", n.flags))
                    }
                    Some(_) => {}
                }
            }
            match &agreed {
                None => agreed = Some((port, topology)),
                Some((first, seen)) if seen.shape() != topology.shape() => {
                    return Err(format!("nodes {first} and {port} disagree on the cluster"))
                }
                Some(_) => {}
            }
        }
        let Some((_, topology)) = agreed else {
            return Err("no node is running".into());
        };
        if topology.covered() != SLOTS {
            return Err(format!("{} of {SLOTS} slots are held", topology.covered()));
        }
        for node in topology.primaries() {
            let alive = running.contains(&node.port);
            if !node.slots.is_empty() && !alive {
                return Err(format!("stopped node {} still holds slots", node.port));
            }
            if node.slots.is_empty() && alive {
                return Err(format!("running primary {} holds no slot", node.port));
            }
        }
        for node in topology.replicas() {
            if !running.contains(&node.port) {
                continue;
            }
            let info: String = query(node.port, redis::cmd("INFO").arg("replication"))
                .map_err(|e| format!("INFO replication on {}: {e}", node.port))?;
            if !info.contains("master_link_status:up") {
                return Err(format!(
                    "replica {} is not in sync with its primary",
                    node.port
                ));
            }
        }
        Ok(())
    }

    /// One MIGRATING/IMPORTING round trip for `slot`; the caller waits for the cluster to settle.
    fn migrate_slot(&self, slot: u16, to_port: u16) {
        let from_port = self.primary_for_slot(slot);
        if from_port == to_port {
            return;
        }
        let from_id = self.node_id(from_port);
        let to_id = self.node_id(to_port);
        let admin = |port: u16, cmd: &mut redis::Cmd| {
            query::<redis::Value>(port, cmd).unwrap_or_else(|e| {
                panic!("moving slot {slot} from {from_port} to {to_port}: on {port}: {e}")
            })
        };
        admin(
            to_port,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("IMPORTING")
                .arg(&from_id),
        );
        admin(
            from_port,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("MIGRATING")
                .arg(&to_id),
        );
        loop {
            let keys: Vec<Vec<u8>> = query(
                from_port,
                redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            )
            .unwrap_or_else(|e| panic!("CLUSTER GETKEYSINSLOT {slot} on {from_port}: {e}"));
            if keys.is_empty() {
                break;
            }
            admin(
                from_port,
                redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(to_port)
                    .arg("")
                    .arg(0)
                    .arg(5000)
                    .arg("REPLACE")
                    .arg("KEYS")
                    .arg(keys),
            );
        }
        // The new owner first, so that it serves the slot before the old owner starts answering MOVED.
        admin(
            to_port,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id),
        );
        admin(
            from_port,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&to_id),
        );
        for port in self.primaries() {
            if port != to_port && port != from_port && self.running().contains(&port) {
                // Gossip would tell them too; saying it directly only shortens the wait.
                let _ = query::<redis::Value>(
                    port,
                    redis::cmd("CLUSTER")
                        .arg("SETSLOT")
                        .arg(slot)
                        .arg("NODE")
                        .arg(&to_id),
                );
            }
        }
    }

    fn index(&self, port: u16) -> usize {
        self.inner
            .ports
            .iter()
            .position(|(p, _)| *p == port)
            .unwrap_or_else(|| panic!("port {port} is not a node of this cluster"))
    }

    fn node_dir(&self, port: u16) -> PathBuf {
        self.inner.dir.path().join(port.to_string())
    }

    fn spawn_node(&self, index: usize) {
        let (port, bus_port) = self.inner.ports[index];
        let dir = self.node_dir(port);
        let _ = std::fs::create_dir_all(&dir);
        let bin = redis_server_bin();
        let mut command = Command::new(&bin);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
            .args(["--cluster-port", &bus_port.to_string()])
            .args([
                "--cluster-node-timeout",
                &self.inner.node_timeout.as_millis().to_string(),
            ])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = self.inner.spawner.spawn(command).unwrap_or_else(|e| {
            panic!(
                "cannot start {bin} ({e}); install redis-server or run scripts/install-test-deps"
            )
        });
        lock(&self.inner.children)[index] = Some(child);
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "redis-server did not start on port {port}:\n{}",
            self.logs(port)
        );
    }
}

/// `count` distinct ports that were free a moment ago (held together while choosing, so none repeats).
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("no free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("bound listener has an address")
                .port()
        })
        .collect()
}

fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let connection = client.get_connection_with_timeout(Duration::from_secs(1))?;
    // MIGRATE of a batch is the slowest thing the fixture asks for; its own timeout is 5 s.
    connection.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(connection)
}

/// One command on a fresh connection to one node (no redirections followed).
fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    cmd.query(&mut connect(port)?)
}

fn run(mut command: Command) -> std::process::Output {
    let program = command.get_program().to_string_lossy().into_owned();
    command.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}); install redis-tools or run scripts/install-test-deps")
    })
}

fn output_text(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A panicking test thread must not make the fixture's own cleanup panic too.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
