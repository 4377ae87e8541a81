//! The move from the key layout before buckets to the bucketed one, on a real redis-server: a Redis written the
//! old way (one project saved, one with unsaved changes, one under a saver's claim) comes out of the migration
//! with every object, seq, unsaved change and claim intact, as the store reads them, nothing left under an old
//! name, and every loaded project resident (so that one loaded before idle eviction existed is evicted too).

mod support;

use canvas_shared::hot::redis::{migrate_to_buckets, RedisHotState};
use canvas_shared::hot::{EditStore, LeaseClock, SaveQueue};
use canvas_testkit::RedisServer;
use support::pid;

/// Writes one project the way the old layout did.
fn write_old_project(redis: &RedisServer, p: &str, seq: u64, objects: &[(&str, &str)]) {
    let base = format!("canvas:{{{p}}}:");
    let mut meta = vec!["HSET".to_string(), format!("{base}meta")];
    for (field, value) in [
        ("seq", seq.to_string()),
        ("savedSeq", seq.to_string()),
        ("stamp", "1000".to_string()),
        ("loadedAt", "1".to_string()),
    ] {
        meta.push(field.into());
        meta.push(value);
    }
    redis.cli(&meta.iter().map(String::as_str).collect::<Vec<_>>());
    for (id, json) in objects {
        redis.cli(&["HSET", &format!("{base}objects"), id, json]);
        redis.cli(&["HSET", &format!("{base}mtimes"), id, "1000"]);
    }
    redis.cli(&["ZADD", "canvas:resident", "5", p]);
    redis.cli(&["ZADD", "canvas:sizes", "100", p]);
}

#[tokio::test]
async fn an_old_layout_comes_out_whole_in_buckets() {
    let redis = RedisServer::start();
    write_old_project(
        &redis,
        "saved",
        7,
        &[("a", r#"{"id":"a","type":"rect","version":1}"#)],
    );
    write_old_project(
        &redis,
        "Org:unsaved",
        3,
        &[("b", r#"{"id":"b","type":"rect","version":2}"#)],
    );
    redis.cli(&["SADD", "canvas:{Org:unsaved}:changed", "b"]);
    redis.cli(&["ZADD", "canvas:dirty", "2000", "Org:unsaved"]);
    write_old_project(
        &redis,
        "claimed",
        4,
        &[("c", r#"{"id":"c","type":"rect","version":1}"#)],
    );
    redis.cli(&["SADD", "canvas:{claimed}:saving", "c"]);
    redis.cli(&[
        "HSET",
        "canvas:{claimed}:lease",
        "token",
        "old-saver:1",
        "since",
        "1500",
    ]);
    redis.cli(&["ZADD", "canvas:leases", "0", "claimed"]);
    redis.cli(&[
        "XADD",
        "canvas:{saved}:journal",
        "6-0",
        "o",
        "c1",
        "f",
        "{}",
    ]);
    redis.cli(&[
        "XADD",
        "canvas:{saved}:journal",
        "7-0",
        "o",
        "c1",
        "f",
        "{}",
    ]);
    redis.cli(&["SET", "canvas:{saved}:idem:alice:k1", "{\"ok\":true}"]);
    redis.cli(&["SET", "canvas:cold_loads", "12"]);
    // Loaded before idle eviction existed: no resident entry.
    write_old_project(
        &redis,
        "ancient",
        1,
        &[("d", r#"{"id":"d","type":"rect","version":1}"#)],
    );
    redis.cli(&["ZREM", "canvas:resident", "ancient"]);

    let report = migrate_to_buckets(&redis.url()).await.expect("migration");
    assert_eq!(report.projects, 4, "{report:?}");
    assert_eq!(report.index_entries, 3 + 4 + 1 + 1, "{report:?}");
    assert_eq!(report.resident_added, 1, "{report:?}");
    let left = redis.cli(&["--scan", "--pattern", "canvas:{saved}*"]);
    assert_eq!(left, "", "old keys left behind");
    for old in [
        "canvas:dirty",
        "canvas:leases",
        "canvas:resident",
        "canvas:sizes",
        "canvas:cold_loads",
    ] {
        assert_eq!(redis.cli(&["EXISTS", old]), "0", "{old} left behind");
    }
    let again = migrate_to_buckets(&redis.url()).await.expect("second run");
    assert_eq!(
        again.projects + again.keys + again.index_entries + again.resident_added,
        0,
        "{again:?}"
    );

    let hot = RedisHotState::connect(&redis.url())
        .expect("redis client")
        .with_lease_clock(LeaseClock::pinned(10_000));
    let saved = hot.snapshot(&pid("saved")).await.expect("saved project");
    assert_eq!((saved.seq, saved.objects.len()), (7, 1));
    assert_eq!(
        hot.journal_after(&pid("saved"), 6, 10)
            .await
            .expect("journal")
            .entries
            .map(|entries| entries.len()),
        Some(1),
        "the journal moved with its project"
    );

    let summary = hot.dirty_summary().await.expect("summary");
    assert_eq!(summary.count, 2, "{summary:?}");
    assert_eq!(summary.oldest_modification, Some(1500));
    let mut claimed: Vec<(String, u64, i64)> = hot
        .claim_dirty("new-saver", 10, 5_000)
        .await
        .expect("claims")
        .into_iter()
        .map(|c| (c.project.to_string(), c.seq, c.dirty_since))
        .collect();
    claimed.sort();
    assert_eq!(
        claimed,
        [
            ("Org:unsaved".to_string(), 3, 2000),
            ("claimed".to_string(), 4, 1500)
        ],
        "the unsaved project and the expired claim are both taken"
    );
    let residency = hot.residency(3).await.expect("residency");
    assert_eq!(
        (residency.resident, residency.cold_loads),
        (4, 12),
        "every loaded project is resident, so its idle time counts"
    );
}
