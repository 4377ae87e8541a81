//! The Redis Cluster fixture does what cluster tests rely on: right after start every node serves every slot,
//! a killed primary is replaced by its replica without losing replicated writes, a restarted node rejoins, and a
//! slot moved with its keys keeps them readable, also to a client writing in it during the move.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use canvas_testkit::redis_cluster::SLOTS;
use canvas_testkit::RedisCluster;

/// Keys spread over every primary, two per primary at least.
fn keys_on_every_primary(cluster: &RedisCluster) -> BTreeMap<String, u16> {
    let primaries = cluster.primaries();
    let mut keys = BTreeMap::new();
    for i in 0.. {
        let key = format!("fixture:{i}");
        let primary = cluster.primary_for_key(&key);
        if keys.values().filter(|p| **p == primary).count() < 2 {
            keys.insert(key, primary);
        }
        if keys.len() == 2 * primaries.len() {
            break;
        }
    }
    keys
}

#[tokio::test]
async fn starts_settled_with_every_slot_served_everywhere() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("cluster started in {:?}", started.elapsed());

    assert_eq!(cluster.nodes().len(), 6);
    assert_eq!(cluster.nodes_env().split(',').count(), 6);
    assert!(cluster.seed_urls()[0].starts_with("redis://127.0.0.1:"));
    assert_eq!(cluster.primaries().len(), 3);
    assert_eq!(cluster.replicas().len(), 3);

    let first = cluster.topology_of(cluster.ports()[0]).expect("topology");
    assert_eq!(first.covered(), SLOTS);
    for port in cluster.ports() {
        let view = cluster.topology_of(port).expect("topology");
        assert_eq!(
            view.shape(),
            first.shape(),
            "node {port} sees another cluster"
        );
        assert_eq!(view.covered(), SLOTS);
    }
    // The slow calls can run off an async test's runtime.
    assert_eq!(cluster.blocking(|c| c.primaries().len()).await, 3);
    for replica in cluster.replicas() {
        let primary = cluster
            .primary_of_replica(replica)
            .expect("replica has a primary");
        assert!(cluster.primaries().contains(&primary));
    }

    // No CLUSTERDOWN, no half-known map: every node takes a write for any slot right away (following MOVED).
    for (i, port) in cluster.ports().into_iter().enumerate() {
        for j in 0..8 {
            let key = format!("early:{i}:{j}");
            assert_eq!(
                cluster.cli_cluster_on(port, &["SET", &key, "v"]),
                "OK",
                "SET {key} via {port}"
            );
        }
    }
}

#[test]
fn survives_a_primary_kill_a_restart_and_slot_moves() {
    let cluster = RedisCluster::start();
    let keys = keys_on_every_primary(&cluster);
    for key in keys.keys() {
        assert!(
            cluster.set_replicated(key, &format!("value of {key}")) >= 1,
            "{key} replicated"
        );
    }

    // Kill the primary of the first key's slot; its replica takes over.
    let (victim_key, _) = keys.iter().next().expect("a key");
    let slot = cluster.keyslot(victim_key);
    let replicas_before = cluster.replicas();
    let killed = cluster.kill_primary_of_slot(slot);
    let took = cluster.wait_for_failover();
    eprintln!("failover of {killed} took {took:?} after the kill");
    let successor = cluster.primary_for_slot(slot);
    assert_ne!(successor, killed);
    assert!(
        replicas_before.contains(&successor),
        "a replica was promoted"
    );
    for key in keys.keys() {
        assert_eq!(
            cluster.cli_cluster(&["GET", key]),
            format!("value of {key}")
        );
    }

    // The killed node comes back as a replica of its successor.
    let started = Instant::now();
    cluster.restart_node(killed);
    eprintln!("restarted node rejoined in {:?}", started.elapsed());
    assert!(cluster.replicas().contains(&killed));
    assert_eq!(cluster.primary_of_replica(killed), Some(successor));

    // Move the slot of a key to another primary: the key moves with it.
    let target = cluster
        .primaries()
        .into_iter()
        .find(|p| *p != successor)
        .expect("another primary");
    // Enough keys in the slot that the move takes several MIGRATE batches, and a client incrementing a counter in
    // it all along: every increment lands exactly once, through the ASK and MOVED redirections.
    let owner = cluster.primary_for_slot(slot);
    for i in 0..300 {
        let filler = format!("{{{victim_key}}}:filler:{i}");
        assert_eq!(cluster.cli(owner, &["SET", &filler, "x"]), "OK");
    }
    let counter = format!("{{{victim_key}}}:counter");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (cluster, counter, stop) = (cluster.clone(), counter.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut done = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let reply = cluster.cli_cluster(&["INCR", &counter]);
                assert_eq!(
                    reply.parse::<u64>().ok(),
                    Some(done + 1),
                    "INCR during the move: {reply}"
                );
                done += 1;
            }
            done
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let started = Instant::now();
    let moved = cluster.move_slot_of_key(victim_key, target);
    let took = started.elapsed();
    std::thread::sleep(std::time::Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    let increments = writer.join().expect("writer");
    eprintln!("moved slot {slot} with 302 keys in {took:?}; {increments} increments in all");
    assert!(increments > 0);
    assert_eq!(
        cluster.cli(target, &["GET", &counter]),
        increments.to_string()
    );
    assert_eq!(
        cluster
            .cli(target, &["DBSIZE"])
            .parse::<u64>()
            .ok()
            .map(|n| n >= 302),
        Some(true)
    );
    assert_eq!(moved, slot);
    assert_eq!(cluster.primary_for_key(victim_key), target);
    assert_eq!(
        cluster.cli(target, &["GET", victim_key]),
        format!("value of {victim_key}")
    );
    for key in keys.keys() {
        assert_eq!(
            cluster.cli_cluster(&["GET", key]),
            format!("value of {key}")
        );
    }

    // redis-cli's own resharding of a batch of slots.
    let before = cluster
        .topology()
        .node(successor)
        .expect("successor")
        .slot_count();
    cluster.reshard(100, successor, target);
    let after = cluster
        .topology()
        .node(successor)
        .expect("successor")
        .slot_count();
    assert_eq!(before - after, 100);
    for key in keys.keys() {
        assert_eq!(
            cluster.cli_cluster(&["GET", key]),
            format!("value of {key}")
        );
    }
}
