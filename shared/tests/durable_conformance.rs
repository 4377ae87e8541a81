//! One conformance suite for [`DurableStore`], run against both implementations so they cannot drift:
//! `DynamoStore` on dynalite (one dynalite per test binary, a fresh table per test, created with
//! `ensure_table(true)`) and `EmbeddedStore` (a redb file in a fresh temp folder). Each check is an async
//! function over an [`Env`]; `conformance!` turns it into one `#[tokio::test]` per implementation
//! (`dynamo::<check>`, `embedded::<check>`). `dynamo_only` documents DynamoDB's own limits that the saver must
//! respect. The DynamoDB store runs behind `ValidatingStore`, which refuses what real DynamoDB refuses and
//! dynalite does not, so that no check here can pass by storing what DynamoDB would refuse.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use aws_sdk_dynamodb::types::AttributeValue;
use canvas_shared::config::DynamoArgs;
use canvas_shared::durable::dynamo::DynamoStore;
use canvas_shared::durable::embedded::EmbeddedStore;
use canvas_shared::durable::item::PROJECT_KEY;
use canvas_shared::durable::validating::ValidatingStore;
use canvas_shared::durable::{
    DurableError, DurableStore, ItemWrite, LoadedProject, WriteOp, WriteOutcome, MAX_BATCH_ITEMS,
};
use canvas_shared::ids::ProjectId;
use canvas_shared::stored::{StoredObject, Tombstone};
use canvas_testkit::TempDir;
use serde_json::{json, Value};
use support::{oid, parse, pid, stored, tricky_object};

macro_rules! conformance {
    ($($check:ident),+ $(,)?) => {
        mod dynamo {
            $(
                #[tokio::test]
                async fn $check() {
                    let mut env = super::Env::dynamo().await;
                    super::$check(&mut env).await;
                }
            )+
        }

        mod embedded {
            $(
                #[tokio::test]
                async fn $check() {
                    let mut env = super::Env::embedded();
                    super::$check(&mut env).await;
                }
            )+
        }
    };
}

conformance!(
    put_overwrite_delete,
    projects_are_isolated,
    unknown_project_is_empty,
    load_reads_every_page,
    json_round_trip_is_exact,
    numbers_keep_their_value,
    updated_at_round_trips,
    ensure_table_is_idempotent,
    deleting_a_missing_item_is_fine,
    full_batch_of_25,
    batch_over_25_is_rejected,
    duplicate_keys_in_a_batch_are_rejected,
    data_survives_reopening,
    an_older_stamp_never_replaces_a_newer_one,
    a_tombstone_hides_the_object_and_holds_off_older_writes,
);

// ---------------------------------------------------------------------------------------------------------------
// Environments

enum Backend {
    Dynamo { endpoint: String, table: String },
    Embedded { _dir: TempDir, path: PathBuf },
}

struct Env {
    store: Option<Box<dyn DurableStore>>,
    backend: Backend,
}

async fn connect_dynamo(endpoint: &str, table: &str) -> DynamoStore {
    DynamoStore::connect(&DynamoArgs {
        endpoint: Some(endpoint.to_string()),
        region: "us-east-1".into(),
        table: table.into(),
        max_attempts: 3,
    })
    .await
}

fn unique_table() -> String {
    format!(
        "conformance_{}_{}",
        std::process::id(),
        canvas_testkit::net::unique()
    )
}

impl Env {
    async fn dynamo() -> Self {
        let endpoint = canvas_testkit::shared_dynalite().endpoint();
        let table = unique_table();
        let store = connect_dynamo(&endpoint, &table).await;
        store.ensure_table(true).await.expect("create the table");
        Self {
            store: Some(Box::new(ValidatingStore::new(store))),
            backend: Backend::Dynamo { endpoint, table },
        }
    }

    fn embedded() -> Self {
        let dir = TempDir::new("durable-conformance");
        // A folder that does not exist yet: open creates it.
        let path = dir.path().join("data").join("canvas.redb");
        let store = EmbeddedStore::open(&path).expect("open redb");
        Self {
            store: Some(Box::new(store)),
            backend: Backend::Embedded { _dir: dir, path },
        }
    }

    fn store(&self) -> &dyn DurableStore {
        self.store.as_deref().expect("store is open")
    }

    /// Drops the store and opens it again (a process restart): a new client for DynamoDB, the same file again
    /// for redb.
    async fn reopen(&mut self) {
        drop(self.store.take());
        let store: Box<dyn DurableStore> = match &self.backend {
            Backend::Dynamo { endpoint, table } => {
                Box::new(ValidatingStore::new(connect_dynamo(endpoint, table).await))
            }
            Backend::Embedded { path, .. } => {
                Box::new(EmbeddedStore::open(path).expect("reopen redb"))
            }
        };
        self.store = Some(store);
    }

    /// For DynamoDB: whether the first Query page of the project stops short (has a LastEvaluatedKey), i.e.
    /// whether loading it really needs more than one request.
    async fn first_page_is_partial(&self, project: &ProjectId) -> Option<bool> {
        let Backend::Dynamo { endpoint, table } = &self.backend else {
            return None;
        };
        let client = connect_dynamo(endpoint, table).await;
        let out = client
            .client()
            .query()
            .table_name(table)
            .key_condition_expression("#p = :p")
            .expression_attribute_names("#p", PROJECT_KEY)
            .expression_attribute_values(":p", AttributeValue::S(project.to_string()))
            .send()
            .await
            .expect("raw query");
        Some(out.last_evaluated_key().is_some_and(|k| !k.is_empty()))
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

fn put(project: &str, id: &str, body: &Value, updated_at: i64) -> ItemWrite {
    ItemWrite {
        project: pid(project),
        op: WriteOp::Put(stored(id, body, updated_at)),
    }
}

fn del(project: &str, id: &str, stamp: i64) -> ItemWrite {
    ItemWrite {
        project: pid(project),
        op: WriteOp::Delete(Tombstone { id: oid(id), stamp }),
    }
}

fn obj(id: &str, version: u64, extra: Value) -> Value {
    let mut body = json!({"id": id, "type": "rect", "version": version});
    if let Value::Object(extra) = extra {
        body.as_object_mut().unwrap().extend(extra);
    }
    body
}

/// Writes one batch that must be processed in full.
async fn write(env: &Env, writes: &[ItemWrite]) {
    let outcome = send(env, writes).await;
    assert!(outcome.all_written(), "writes not written: {outcome:?}");
}

/// Writes one batch and tells what became of it.
async fn send(env: &Env, writes: &[ItemWrite]) -> WriteOutcome {
    env.store()
        .write_batch(writes)
        .await
        .unwrap_or_else(|e| panic!("write_batch of {} writes failed: {e}", writes.len()))
}

/// The project as the store hands it back.
async fn load_raw(env: &Env, project: &str) -> LoadedProject {
    env.store()
        .load_project(&pid(project))
        .await
        .unwrap_or_else(|e| panic!("load_project({project}) failed: {e}"))
}

/// The project as id → (object, updatedAt).
async fn load(env: &Env, project: &str) -> BTreeMap<String, (Value, i64)> {
    by_id(load_raw(env, project).await.objects)
}

fn by_id(objects: Vec<StoredObject>) -> BTreeMap<String, (Value, i64)> {
    let mut map = BTreeMap::new();
    for o in objects {
        let value = parse(&o.json);
        assert_eq!(value["id"], json!(o.id.as_str()), "id matches the JSON");
        assert!(
            map.insert(o.id.to_string(), (value, o.updated_at))
                .is_none(),
            "object {} loaded twice",
            o.id
        );
    }
    map
}

fn expect(entries: &[(&str, &Value, i64)]) -> BTreeMap<String, (Value, i64)> {
    entries
        .iter()
        .map(|(id, v, t)| (id.to_string(), ((*v).clone(), *t)))
        .collect()
}

/// JSON equality where numbers compare by value: integers exactly, and a float equal to an integer only when it
/// is that integer exactly (so 12345678901234567 never matches 12345678901234568.0).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let exact = |n: &serde_json::Number| {
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .or_else(|| {
                        let f = n.as_f64()?;
                        (f.fract() == 0.0 && f.abs() < 1e38).then_some(f as i128)
                    })
            };
            match (exact(x), exact(y)) {
                (Some(i), Some(j)) => i == j,
                (None, None) => x.as_f64() == y.as_f64(),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

fn rejected(result: Result<WriteOutcome, DurableError>, what: &str) -> String {
    match result {
        Err(DurableError::Rejected(message)) => message.to_string(),
        other => panic!("{what}: expected DurableError::Rejected, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Checks

async fn put_overwrite_delete(env: &mut Env) {
    let o1 = obj("o1", 1, json!({"x": 1}));
    let o2 = obj("o2", 1, json!({"x": 2, "fill": "#f00"}));
    let o3 = obj("o3", 1, json!({}));
    write(
        env,
        &[
            put("p", "o1", &o1, 100),
            put("p", "o2", &o2, 200),
            put("p", "o3", &o3, 300),
        ],
    )
    .await;
    assert_eq!(
        load(env, "p").await,
        expect(&[("o1", &o1, 100), ("o2", &o2, 200), ("o3", &o3, 300)])
    );

    // An overwrite replaces the whole object: a property it no longer has is gone.
    let o2b = obj("o2", 2, json!({"x": 20, "label": "é"}));
    let o4 = obj("o4", 1, json!({"y": [1, 2]}));
    write(
        env,
        &[
            put("p", "o2", &o2b, 250),
            del("p", "o3", 350),
            put("p", "o4", &o4, 400),
        ],
    )
    .await;
    let loaded = load(env, "p").await;
    assert_eq!(
        loaded,
        expect(&[("o1", &o1, 100), ("o2", &o2b, 250), ("o4", &o4, 400)])
    );
    assert!(loaded["o2"].0.get("fill").is_none());

    write(env, &[del("p", "o1", 450), del("p", "o4", 450)]).await;
    assert_eq!(load(env, "p").await, expect(&[("o2", &o2b, 250)]));

    // A deleted object can be written again.
    write(env, &[put("p", "o1", &o1, 500)]).await;
    assert_eq!(
        load(env, "p").await,
        expect(&[("o1", &o1, 500), ("o2", &o2b, 250)])
    );
}

async fn projects_are_isolated(env: &mut Env) {
    // Ids that are prefixes of each other, or sort right next to each other.
    let projects = ["p", "p1", "p1.x", "p1:", "p10", "p1-", "q"];
    let body = |p: &str, id: &str| obj(id, 1, json!({"project": p}));
    let mut writes = Vec::new();
    for p in projects {
        for id in ["o1", "o2"] {
            writes.push(put(p, id, &body(p, id), 1));
        }
    }
    // One batch may mix projects.
    write(env, &writes).await;
    for p in projects {
        assert_eq!(
            load(env, p).await,
            expect(&[("o1", &body(p, "o1"), 1), ("o2", &body(p, "o2"), 1)]),
            "project {p}"
        );
    }
    write(
        env,
        &[del("p1", "o1", 2), del("p1", "o2", 2), del("p", "o2", 2)],
    )
    .await;
    assert!(load(env, "p1").await.is_empty());
    assert_eq!(load(env, "p").await, expect(&[("o1", &body("p", "o1"), 1)]));
    for p in ["p1.x", "p1:", "p10", "p1-", "q"] {
        assert_eq!(load(env, p).await.len(), 2, "project {p}");
    }
}

async fn unknown_project_is_empty(env: &mut Env) {
    assert!(load(env, "never-written").await.is_empty());
    write(env, &[put("known", "o1", &obj("o1", 1, json!({})), 1)]).await;
    for p in ["know", "known2", "known.", "k", "never-written"] {
        assert!(load(env, p).await.is_empty(), "project {p}");
    }
    assert_eq!(load(env, "known").await.len(), 1);
}

async fn load_reads_every_page(env: &mut Env) {
    // 300 objects of ~8 KB: ~2.4 MB, past DynamoDB's 1 MB per Query page twice over.
    let count = 300;
    let bodies: Vec<Value> = (0..count)
        .map(|i| {
            obj(
                &format!("o{i:04}"),
                1,
                json!({"i": i, "blob": format!("{i:04}").repeat(2_000)}),
            )
        })
        .collect();
    let writes: Vec<ItemWrite> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| put("big", &format!("o{i:04}"), body, 1_000 + i as i64))
        .collect();
    for chunk in writes.chunks(MAX_BATCH_ITEMS) {
        write(env, chunk).await;
    }
    // And a neighbour, whose objects must not leak into the pages.
    write(env, &[put("big2", "o0000", &obj("o0000", 1, json!({})), 1)]).await;

    if let Some(partial) = env.first_page_is_partial(&pid("big")).await {
        assert!(
            partial,
            "the first Query page holds everything: pagination is not exercised"
        );
    }
    let loaded = load(env, "big").await;
    assert_eq!(loaded.len(), count, "every page is read");
    for (i, body) in bodies.iter().enumerate() {
        let id = format!("o{i:04}");
        assert_eq!(loaded[&id], (body.clone(), 1_000 + i as i64), "object {id}");
    }
}

async fn json_round_trip_is_exact(env: &mut Env) {
    let body = with_version(tricky_object("t1"), 3);
    write(env, &[put("json", "t1", &body, 7)]).await;
    let loaded = load(env, "json").await;
    let got = &loaded["t1"].0;
    assert_eq!(got, &body);
    assert_eq!(got["float"].as_f64(), Some(0.30000000000000004));
    assert_eq!(got["big"].as_u64(), Some(12345678901234567));
    assert_eq!(got["maxU64"].as_u64(), Some(u64::MAX));
    assert_eq!(got["neg"].as_i64(), Some(-9007199254740993));
    assert_eq!(got["emptyArr"], json!([]));
    assert_eq!(got["emptyObj"], json!({}));
    assert_eq!(got["version"].as_u64(), Some(3));
}

fn with_version(mut body: Value, version: u64) -> Value {
    body["version"] = json!(version);
    body
}

async fn numbers_keep_their_value(env: &mut Env) {
    // DynamoDB hands numbers back in its own decimal spelling (1.0 becomes 1, 1e19 becomes 10000000000000000000,
    // -0.0 becomes 0): the value must survive, though the int/float spelling may not. The embedded store keeps
    // the text as written.
    let body = obj(
        "n1",
        1,
        json!({
            "one": 1.0, "e19": 1e19, "e21": 1e21, "negZero": -0.0, "tiny": 2.5e-8, "half": 0.5,
            "min": -9223372036854775808i64, "maxI": 9223372036854775807i64, "u": 9223372036854775808u64,
            "nested": [1.5, {"x": 100.0}]
        }),
    );
    write(env, &[put("num", "n1", &body, 1)]).await;
    let got = &load(env, "num").await["n1"].0;
    assert!(
        same_value(got, &body),
        "numbers changed:\n got  {got}\n want {body}"
    );
    assert!(!same_value(
        &json!(12345678901234567u64),
        &json!(12345678901234568.0)
    ));
}

async fn updated_at_round_trips(env: &mut Env) {
    let times = [0, 1, 1_764_000_000_000, 4_102_444_800_000, i64::MAX, -1];
    let writes: Vec<ItemWrite> = times
        .iter()
        .enumerate()
        .map(|(i, t)| {
            put(
                "times",
                &format!("o{i}"),
                &obj(&format!("o{i}"), 1, json!({})),
                *t,
            )
        })
        .collect();
    write(env, &writes).await;
    let loaded = load(env, "times").await;
    for (i, t) in times.iter().enumerate() {
        assert_eq!(loaded[&format!("o{i}")].1, *t);
    }
}

async fn ensure_table_is_idempotent(env: &mut Env) {
    let o1 = obj("o1", 1, json!({}));
    write(env, &[put("ens", "o1", &o1, 1)]).await;
    for create in [true, true, false] {
        env.store()
            .ensure_table(create)
            .await
            .unwrap_or_else(|e| panic!("ensure_table({create}) on an existing table: {e}"));
    }
    env.store().ping().await.expect("ping");
    assert_eq!(
        load(env, "ens").await,
        expect(&[("o1", &o1, 1)]),
        "ensure_table keeps the data"
    );
}

async fn deleting_a_missing_item_is_fine(env: &mut Env) {
    assert!(env.store().write_batch(&[]).await.unwrap().all_written());
    write(env, &[del("gone", "never-existed", 1)]).await;
    write(env, &[put("gone", "o1", &obj("o1", 1, json!({})), 1)]).await;
    write(env, &[del("gone", "o1", 2), del("gone", "o2", 2)]).await;
    // Deleting it again (a retried save) is fine too: the tombstone is already there.
    let again = send(env, &[del("gone", "o1", 2)]).await;
    assert_eq!(again.superseded.len(), 1, "{again:?}");
    assert!(again.unprocessed.is_empty() && again.refused.is_empty());
    assert!(load(env, "gone").await.is_empty());
}

async fn full_batch_of_25(env: &mut Env) {
    let first: Vec<ItemWrite> = (0..5)
        .map(|i| {
            put(
                "full-a",
                &format!("d{i}"),
                &obj(&format!("d{i}"), 1, json!({})),
                1,
            )
        })
        .collect();
    write(env, &first).await;
    // 25 writes: 5 deletes of what is there and 20 puts over two projects.
    let mut batch: Vec<ItemWrite> = (0..5).map(|i| del("full-a", &format!("d{i}"), 2)).collect();
    for i in 0..20 {
        let project = if i % 2 == 0 { "full-a" } else { "full-b" };
        batch.push(put(
            project,
            &format!("o{i}"),
            &obj(&format!("o{i}"), 1, json!({"i": i})),
            i,
        ));
    }
    assert_eq!(batch.len(), MAX_BATCH_ITEMS);
    write(env, &batch).await;
    let a = load(env, "full-a").await;
    let b = load(env, "full-b").await;
    assert_eq!((a.len(), b.len()), (10, 10));
    assert!(a.keys().all(|k| k.starts_with('o')));
    assert_eq!(b["o7"], (obj("o7", 1, json!({"i": 7})), 7));
}

async fn batch_over_25_is_rejected(env: &mut Env) {
    // DynamoDB refuses a BatchWriteItem of more than 25 requests as a whole; the saver must split batches, and
    // the embedded store refuses them too so that dev mode catches a saver that does not.
    let writes: Vec<ItemWrite> = (0..=MAX_BATCH_ITEMS)
        .map(|i| {
            put(
                "b26",
                &format!("o{i}"),
                &obj(&format!("o{i}"), 1, json!({})),
                1,
            )
        })
        .collect();
    assert_eq!(writes.len(), 26);
    let result = env.store().write_batch(&writes).await;
    let is_retryable = matches!(&result, Err(e) if e.is_retryable());
    let message = rejected(result, "a 26-item batch");
    assert!(!message.is_empty());
    assert!(!is_retryable, "retrying the same batch cannot help");
    assert!(load(env, "b26").await.is_empty(), "nothing was written");
    write(env, &writes[..MAX_BATCH_ITEMS]).await;
    assert_eq!(load(env, "b26").await.len(), MAX_BATCH_ITEMS);
}

async fn duplicate_keys_in_a_batch_are_rejected(env: &mut Env) {
    // "Provided list of item keys contains duplicates": the same key twice in one request, even as a put and a
    // delete, or in different projects' writes of the same id (those are different keys, and fine).
    let body = obj("o1", 1, json!({}));
    for batch in [
        vec![put("dup", "o1", &body, 1), put("dup", "o1", &body, 2)],
        vec![put("dup", "o1", &body, 1), del("dup", "o1", 2)],
        vec![del("dup", "o2", 1), del("dup", "o2", 1)],
    ] {
        rejected(env.store().write_batch(&batch).await, "duplicate keys");
    }
    assert!(load(env, "dup").await.is_empty(), "nothing was written");
    write(
        env,
        &[put("dup", "o1", &body, 1), put("dup2", "o1", &body, 1)],
    )
    .await;
    assert_eq!(load(env, "dup").await.len(), 1);
    assert_eq!(load(env, "dup2").await.len(), 1);
}

async fn data_survives_reopening(env: &mut Env) {
    let o1 = obj("o1", 4, json!({"x": 0.30000000000000004}));
    let o2 = obj("o2", 1, json!({}));
    write(env, &[put("re", "o1", &o1, 10), put("re", "o2", &o2, 20)]).await;
    env.reopen().await;
    env.store().ensure_table(true).await.expect("ensure_table");
    assert_eq!(
        load(env, "re").await,
        expect(&[("o1", &o1, 10), ("o2", &o2, 20)])
    );
    write(env, &[del("re", "o2", 30)]).await;
    env.reopen().await;
    assert_eq!(load(env, "re").await, expect(&[("o1", &o1, 10)]));
}

// ---------------------------------------------------------------------------------------------------------------
// DynamoDB only

mod dynamo_only {
    use super::*;

    #[tokio::test]
    async fn missing_table_is_table_missing_naming_the_table() {
        let endpoint = canvas_testkit::shared_dynalite().endpoint();
        let table = unique_table();
        let store = connect_dynamo(&endpoint, &table).await;

        let err = store
            .ensure_table(false)
            .await
            .expect_err("ensure_table(false) on a missing table");
        let DurableError::TableMissing(message) = &err else {
            panic!("expected TableMissing, got {err:?}");
        };
        assert!(
            message.to_string().contains(&table),
            "{message:?} names {table}"
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().contains(&table));

        // Everything else says the same, rather than failing obscurely.
        assert!(matches!(
            store.ping().await,
            Err(DurableError::TableMissing(_))
        ));
        assert!(matches!(
            store.load_project(&pid("p")).await,
            Err(DurableError::TableMissing(_))
        ));
        assert!(matches!(
            store
                .write_batch(&[put("p", "o1", &obj("o1", 1, json!({})), 1)])
                .await,
            Err(DurableError::TableMissing(_))
        ));

        // Creating it makes it usable, and a check without create then passes.
        store.ensure_table(true).await.expect("create");
        store.ensure_table(false).await.expect("exists now");
        store.ping().await.expect("ping");
        assert!(store
            .load_project(&pid("p"))
            .await
            .unwrap()
            .objects
            .is_empty());
    }

    #[tokio::test]
    async fn numbers_outside_dynamodb_range_are_rejected() {
        // DynamoDB numbers have a magnitude between 1e-130 and 9.99e125; JSON (and f64) go further. Such an
        // object is valid JSON, but no write of it can succeed: DynamoDB refuses that item (and only it: every
        // write is its own request). The embedded store takes it, so only production would see it. Input
        // validation refuses these numbers before they reach the hot state; the saver holds back any it missed.
        let env = Env::dynamo().await;
        for (name, n) in [
            ("big", json!(1e126)),
            ("max", json!(f64::MAX)),
            ("subnormal", json!(5e-324)),
        ] {
            let body = obj("o1", 1, json!({ "n": n }));
            let batch = [
                put("range", "o1", &body, 1),
                put(
                    &format!("range-{name}"),
                    "fine",
                    &obj("fine", 1, json!({})),
                    1,
                ),
            ];
            let outcome = send(&env, &batch).await;
            let [(write, DurableError::ItemRefused(message))] = &outcome.refused[..] else {
                panic!("{name}: expected one refused item, got {outcome:?}");
            };
            assert_eq!(write.object_id().as_str(), "o1");
            assert!(message.to_string().contains("Number"), "{name}: {message}");
            assert!(outcome.unprocessed.is_empty() && outcome.superseded.is_empty());
            assert_eq!(
                load(&env, &format!("range-{name}")).await.len(),
                1,
                "{name}: the other item is written"
            );
        }
        assert!(
            load(&env, "range").await.is_empty(),
            "the refused item is not written"
        );
        let edge = obj(
            "o1",
            1,
            json!({"big": 9.99e125, "small": 1e-129, "neg": -9.99e125}),
        );
        write(&env, &[put("range", "o1", &edge, 1)]).await;
        assert_eq!(load(&env, "range").await["o1"].0, edge);
    }
}

async fn an_older_stamp_never_replaces_a_newer_one(env: &mut Env) {
    let newer = obj("o1", 3, json!({"x": 3}));
    let older = obj("o1", 2, json!({"x": 2}));
    write(env, &[put("late", "o1", &newer, 300)]).await;
    // A write that arrives late (a timed-out request executing after all, a resent attempt) changes nothing.
    for (body, stamp) in [(&older, 200), (&newer, 300)] {
        let outcome = send(env, &[put("late", "o1", body, stamp)]).await;
        assert_eq!(outcome.superseded.len(), 1, "stamp {stamp}: {outcome:?}");
    }
    assert_eq!(load(env, "late").await, expect(&[("o1", &newer, 300)]));
    let newest = obj("o1", 4, json!({"x": 4}));
    write(env, &[put("late", "o1", &newest, 301)]).await;
    assert_eq!(load(env, "late").await, expect(&[("o1", &newest, 301)]));
}

async fn a_tombstone_hides_the_object_and_holds_off_older_writes(env: &mut Env) {
    let o1 = obj("o1", 5, json!({}));
    let o2 = obj("o2", 1, json!({}));
    write(
        env,
        &[put("tomb", "o1", &o1, 100), put("tomb", "o2", &o2, 110)],
    )
    .await;
    write(env, &[del("tomb", "o1", 200)]).await;
    let loaded = load_raw(env, "tomb").await;
    assert_eq!(
        by_id(loaded.objects),
        expect(&[("o2", &o2, 110)]),
        "a tombstone is no object"
    );
    assert_eq!(loaded.stamp_floor, 200, "the tombstone's stamp counts");

    // The put the delete followed, arriving late, does not bring the object back.
    let outcome = send(env, &[put("tomb", "o1", &o1, 150)]).await;
    assert_eq!(outcome.superseded.len(), 1, "{outcome:?}");
    assert_eq!(load(env, "tomb").await, expect(&[("o2", &o2, 110)]));

    // The id created again after the delete carries a newer stamp, and lands.
    let again = obj("o1", 1, json!({"reborn": true}));
    write(env, &[put("tomb", "o1", &again, 250)]).await;
    assert_eq!(
        load(env, "tomb").await,
        expect(&[("o1", &again, 250), ("o2", &o2, 110)])
    );
    // A project holding only tombstones loads empty, yet remembers their stamp.
    write(env, &[del("tomb-only", "o9", 900)]).await;
    let loaded = load_raw(env, "tomb-only").await;
    assert!(loaded.objects.is_empty());
    assert_eq!(loaded.stamp_floor, 900);
}
