//! The Redis edit script merges patches on raw JSON text (shared/src/hot/scripts/json.lua, edit.lua), and so does a
//! process that knows the object's stored text (shared/src/hot/redis/raw_merge.rs: the script then only checks and
//! writes); the memory hot state and every client use `canvas_shared::object::merge_patch`. They must agree on
//! meaning, and the two raw mergers byte for byte (a process follows the other side's merges from broadcasts): this
//! property test applies random objects and random patches through a real redis-server twice, once merging in the
//! process and once in the script, and through `MemoryHotState`, and checks after every step that the stored JSON
//! equals the Rust merge result and that both Redis texts are the same bytes.

use std::sync::atomic::{AtomicUsize, Ordering};

use canvas_shared::hot::memory::MemoryHotState;
use canvas_shared::hot::redis::RedisHotState;
use canvas_shared::hot::{EditContext, EditStore};
use canvas_shared::object::{merge_patch, Edit, NewObject, Patch, RESERVED_FIELDS, VERSION_FIELD};
use canvas_shared::{Limits, ObjectId, ProjectId};
use canvas_testkit::RedisServer;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};

mod support;
use support::fuzz::{generated, Fuzz};

/// Top-level names a client cannot send in an object (validation strips or refuses them).
fn top_level_ok(key: &str) -> bool {
    key != "id" && key != "type" && key != VERSION_FIELD && !RESERVED_FIELDS.contains(&key)
}

/// An object and a few patches that pass validation (nested values are unrestricted but for what validation
/// refuses: numbers DynamoDB cannot store, nesting deeper than 32). Values are redrawn until they pass.
fn case(f: &mut Fuzz) -> (Value, Vec<Value>) {
    let limits = Limits::default();
    let id = ObjectId::parse("o1").expect("id");
    let object = loop {
        let mut object: Map<String, Value> = f
            .map(3)
            .into_iter()
            .filter(|(k, _)| top_level_ok(k))
            .collect();
        object.insert("id".into(), Value::String("o1".into()));
        object.insert("type".into(), Value::String("rect".into()));
        let object = Value::Object(object);
        if NewObject::from_json(object.clone(), &limits).is_ok() {
            break object;
        }
    };
    let patches = (0..1 + f.below(4))
        .map(|_| loop {
            let mut patch: Map<String, Value> = f
                .map(3)
                .into_iter()
                .filter(|(k, _)| top_level_ok(k))
                .collect();
            if f.chance(10) {
                patch.insert("type".into(), Value::String("rect".into()));
            }
            if f.chance(10) {
                patch.insert("id".into(), Value::String("o1".into()));
            }
            let patch = Value::Object(patch);
            if Patch::from_json(&id, patch.clone(), &limits).is_ok() {
                break patch;
            }
        })
        .collect();
    (object, patches)
}

/// JSON text read back as a value, as the test reads what the stores hold: every number in the expected value
/// and in the stored one is then parsed exactly once from the same text. (Parsing twice can move a float by one
/// ULP: serde_json's default float parsing is not round-trip exact.)
fn reparse(v: &Value) -> Value {
    serde_json::from_str(&v.to_string()).expect("round trip")
}

struct Stores {
    rt: tokio::runtime::Runtime,
    /// Merges updates itself: it keeps each object's text from the script's answers.
    redis: RedisHotState,
    /// Keeps no text: every update is merged by the script.
    redis_script: RedisHotState,
    memory: MemoryHotState,
    next: AtomicUsize,
    limits: Limits,
}

impl Stores {
    fn new(redis: &RedisServer) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (hot, script) = rt.block_on(async {
            let open = || RedisHotState::connect(&redis.url()).expect("redis url");
            (open(), open().with_object_cache_bytes(0))
        });
        Self {
            rt,
            redis: hot,
            redis_script: script,
            memory: MemoryHotState::new(),
            next: AtomicUsize::new(0),
            limits: Limits::default(),
        }
    }

    /// Applies the create and the patches to both stores, checking the stored object after every step.
    fn check(&self, object: &Value, patches: &[Value]) -> Result<(), TestCaseError> {
        let project =
            ProjectId::parse(format!("lua-{}", self.next.fetch_add(1, Ordering::Relaxed)))
                .expect("project id");
        let id = ObjectId::parse("o1").expect("id");
        let create = NewObject::from_json(object.clone(), &self.limits)
            .map_err(|e| TestCaseError::fail(format!("generated object refused: {e}")))?;
        let mut expected = reparse(object);
        expected[VERSION_FIELD] = Value::from(1);
        self.rt.block_on(async {
            for (store, project) in [
                (&self.redis as &dyn EditStore, &project),
                (&self.memory, &project),
                (&self.redis_script, &script_project(&project)),
            ] {
                store
                    .load(project, &[], 0, 0)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            self.apply_both(&project, &Edit::Create(create), &expected)
                .await?;
            for (n, patch) in patches.iter().enumerate() {
                let valid = Patch::from_json(&id, patch.clone(), &self.limits)
                    .map_err(|e| TestCaseError::fail(format!("generated patch refused: {e}")))?;
                merge_patch(&mut expected, &reparse(&Value::Object(valid.0.clone())));
                expected[VERSION_FIELD] = Value::from(n as u64 + 2);
                let edit = Edit::Update {
                    id: id.clone(),
                    patch: valid,
                    if_version: None,
                };
                self.apply_both(&project, &edit, &expected).await?;
            }
            Ok(())
        })
    }

    async fn apply_both(
        &self,
        project: &ProjectId,
        edit: &Edit,
        expected: &Value,
    ) -> Result<(), TestCaseError> {
        let script_project = script_project(project);
        let mut texts = Vec::new();
        for (name, store, project) in [
            ("redis", &self.redis as &dyn EditStore, project),
            ("memory", &self.memory, project),
            ("redis (script merges)", &self.redis_script, &script_project),
        ] {
            let ctx = EditContext {
                by: "prop",
                origin: "c1",
                now_ms: 1,
                limits: &self.limits,
                seq_floor: 0,
            };
            store
                .apply(project, edit, ctx)
                .await
                .map_err(|e| TestCaseError::fail(format!("{name} refused {edit:?}: {e}")))?;
            let snapshot = store
                .snapshot(project)
                .await
                .map_err(|e| TestCaseError::fail(format!("{name} snapshot: {e}")))?;
            if snapshot.objects.len() != 1 {
                return Err(TestCaseError::fail(format!(
                    "{name}: {:?}",
                    snapshot.objects
                )));
            }
            let stored: Value = serde_json::from_str(&snapshot.objects[0]).map_err(|e| {
                TestCaseError::fail(format!(
                    "{name} stored invalid JSON ({e}): {}",
                    snapshot.objects[0]
                ))
            })?;
            if &stored != expected {
                return Err(TestCaseError::fail(format!(
                    "{name} disagrees with merge_patch after {edit:?}\n stored:   {}\n expected: {expected}",
                    snapshot.objects[0]
                )));
            }
            texts.push(snapshot.objects[0].clone());
        }
        if texts[0] != texts[2] {
            return Err(TestCaseError::fail(format!(
                "merged here and merged by the script differ after {edit:?}\n here:   {}\n script: {}",
                texts[0], texts[2]
            )));
        }
        Ok(())
    }

    /// Every update of the caching store was merged in the process, every one of the other by the script.
    fn assert_merged_where_expected(&self) {
        let (here, script) = (
            self.redis.update_merges(),
            self.redis_script.update_merges(),
        );
        assert!(here.here > 0, "no update merged in the process: {here:?}");
        assert_eq!(here.by_script, 0, "{here:?}");
        assert_eq!(script.here, 0, "{script:?}");
        assert_eq!(script.by_script, here.here, "{script:?} vs {here:?}");
    }
}

/// The same project for the store whose script merges (both stores share one Redis).
fn script_project(project: &ProjectId) -> ProjectId {
    ProjectId::parse(format!("{}-script", project.as_str())).expect("project id")
}

#[test]
fn redis_lua_merge_agrees_with_merge_patch() {
    let redis = RedisServer::start();
    let stores = Stores::new(&redis);
    let mut runner = TestRunner::new(Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&generated(case), |(object, patches)| {
        stores.check(&object, &patches)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    stores.assert_merged_where_expected();
}

/// Nesting as deep as a client may send (validation allows 32 levels): the script recurses once per level.
#[test]
fn redis_lua_merge_handles_deep_nesting() {
    let redis = RedisServer::start();
    let stores = Stores::new(&redis);
    let nest = |depth: usize, leaf: Value| {
        (0..depth).fold(leaf, |inner, i| {
            let mut m = Map::new();
            m.insert(format!("k{}", i % 3), inner);
            m.insert("s".into(), Value::String("\"}{,\\".into()));
            Value::Object(m)
        })
    };
    let mut object = nest(30, Value::from(1))
        .as_object()
        .cloned()
        .unwrap_or_default();
    object.insert("id".into(), Value::String("o1".into()));
    object.insert("type".into(), Value::String("rect".into()));
    let patches = vec![
        nest(30, Value::from(2)),
        nest(30, Value::Null),
        nest(20, Value::Array(vec![Value::Null, Value::from(3)])),
    ];
    stores
        .check(&Value::Object(object), &patches)
        .expect("agrees");
    stores.assert_merged_where_expected();
}

/// Hand-picked cases that once bit JSON-text mergers: blank keys, escaped quotes in keys and values, arrays of
/// objects (replaced, never merged), a patch object replacing a scalar, nulls inside arrays and inside objects.
#[test]
fn redis_lua_merge_handles_tricky_text() {
    let redis = RedisServer::start();
    let stores = Stores::new(&redis);
    let object = serde_json::json!({
        "id": "o1", "type": "rect", " ": 1, "a\"b": {"c\\": "}", "\"": [{"x": null}]},
        "n": 1.5e125, "tiny": 2.5e-130, "neg": -0.0, "big": 18446744073709551615u64, "arr": [{"k": 1}], "s": "x,y}z", "nul": null
    });
    let patches = vec![
        serde_json::json!({" ": null, "a\"b": {"c\\": {"deep": [1, {}]}, "\"": null}, "s": {"now": "object"}}),
        serde_json::json!({"arr": [{"k": 2}, null], "n": {"x": null}, "nul": {"inner": null}}),
        serde_json::json!({"a\"b": "scalar", "new": {"nested": {"a": null, "b": [[]], "c": {}}}}),
        serde_json::json!({}),
    ];
    stores.check(&object, &patches).expect("agrees");
    stores.assert_merged_where_expected();
}
