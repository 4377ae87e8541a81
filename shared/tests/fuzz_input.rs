//! Property tests over everything a client controls: frame parsing, validation of objects and patches, and RFC 7396
//! merge patch. Over 100,000 generated cases in all, run by the normal `cargo test`; none may panic, and each
//! checks invariants rather than just "no crash".
//!
//! Case counts per property are set so the file stays well under a minute in a debug build.

use std::collections::BTreeMap;

use canvas_shared::object::{
    merge_patch, Edit, NewObject, Patch, MAX_DEPTH, RESERVED_FIELDS, VERSION_FIELD,
};
use canvas_shared::protocol::{parse_client_frame, ClientMessage, MAX_REQ_ID_LEN};
use canvas_shared::{ErrorCode, Limits, ObjectId};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

mod support;
use support::fuzz::{generated, Fuzz, ID_CHARS};

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Failures print their minimal input; nothing is written into the source tree.
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// Small limits so that size checks are exercised too.
fn limits() -> Limits {
    Limits {
        max_frame_bytes: 64 * 1024,
        max_object_bytes: 600,
        max_objects_per_project: 100,
        ..Limits::default()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Invariants

/// Deepest nesting of a value (a scalar is 0, `{}` or `[]` is 1).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Every number is one DynamoDB can store.
fn numbers_storable(value: &Value) -> bool {
    match value {
        Value::Number(n) => n
            .as_f64()
            .is_some_and(|f| f == 0.0 || (f.abs() >= 1e-130 && f.abs() < 1e126)),
        Value::Array(items) => items.iter().all(numbers_storable),
        Value::Object(map) => map.values().all(numbers_storable),
        _ => true,
    }
}

/// What the durable store could not hold never gets through validation.
fn check_storable(body: &Map<String, Value>) -> Result<(), TestCaseError> {
    let value = Value::Object(body.clone());
    prop_assert!(depth(&value) <= MAX_DEPTH, "too deep: {}", value);
    prop_assert!(numbers_storable(&value), "unstorable number: {}", value);
    Ok(())
}

fn size(body: &Map<String, Value>) -> usize {
    serde_json::to_string(body)
        .map(|s| s.len())
        .unwrap_or(usize::MAX)
}

fn check_new_object(o: &NewObject, limits: &Limits) -> Result<(), TestCaseError> {
    prop_assert!(
        !o.body.contains_key(VERSION_FIELD),
        "version kept: {:?}",
        o.body
    );
    prop_assert_eq!(
        o.body.get("id"),
        Some(&Value::String(o.id.as_str().to_string()))
    );
    prop_assert!(matches!(o.body.get("type"), Some(Value::String(t)) if !t.is_empty()));
    for name in RESERVED_FIELDS {
        prop_assert!(!o.body.contains_key(name), "reserved {} kept", name);
    }
    prop_assert!(size(&o.body) <= limits.max_object_bytes);
    check_storable(&o.body)
}

fn check_patch(id: &ObjectId, p: &Patch, limits: &Limits) -> Result<(), TestCaseError> {
    prop_assert!(!p.0.contains_key(VERSION_FIELD));
    prop_assert!(!p.0.contains_key("id"));
    if let Some(t) = p.0.get("type") {
        prop_assert!(matches!(t, Value::String(s) if !s.is_empty()));
    }
    for name in RESERVED_FIELDS {
        prop_assert!(!p.0.contains_key(name));
    }
    prop_assert!(size(&p.0) <= limits.max_object_bytes);
    check_storable(&p.0)?;
    // Applied to any valid object, an accepted patch keeps its id and a non-empty type.
    let mut object = Value::Object(Map::from_iter([
        ("id".to_string(), Value::String(id.as_str().into())),
        ("type".to_string(), Value::String("rect".into())),
    ]));
    merge_patch(&mut object, &Value::Object(p.0.clone()));
    prop_assert_eq!(&object["id"], &Value::String(id.as_str().into()));
    prop_assert!(matches!(&object["type"], Value::String(s) if !s.is_empty()));
    Ok(())
}

/// Checks one parsed frame against its input.
fn check_frame(input: &Value, text: &str, limits: &Limits) -> Result<(), TestCaseError> {
    let parsed = parse_client_frame(text, limits);
    let expected_req_id = match input.get("reqId") {
        Some(Value::String(s)) if s.len() <= MAX_REQ_ID_LEN => Some(s.clone()),
        _ => None,
    };
    match parsed {
        Ok(frame) => {
            prop_assert!(input.is_object());
            prop_assert_eq!(frame.req_id, expected_req_id);
            let kind = input["type"].as_str().unwrap_or("");
            match frame.message {
                ClientMessage::Edit(Edit::Create(o)) => {
                    prop_assert_eq!(kind, "create");
                    check_new_object(&o, limits)?;
                    prop_assert_eq!(&input["object"]["id"], &Value::String(o.id.as_str().into()));
                }
                ClientMessage::Edit(Edit::Update { id, patch, .. }) => {
                    prop_assert_eq!(kind, "update");
                    prop_assert_eq!(&input["id"], &Value::String(id.as_str().into()));
                    check_patch(&id, &patch, limits)?;
                }
                ClientMessage::Edit(Edit::Delete { id, .. }) => {
                    prop_assert_eq!(kind, "delete");
                    prop_assert_eq!(&input["id"], &Value::String(id.as_str().into()));
                }
                ClientMessage::Ping => prop_assert_eq!(kind, "ping"),
                ClientMessage::Resync { .. } => prop_assert_eq!(kind, "resync"),
                ClientMessage::Presence { x, y, name } => {
                    prop_assert_eq!(kind, "presence");
                    prop_assert!(x.is_finite() && y.is_finite());
                    prop_assert!(name.is_none_or(|n| n.chars().count() <= 64));
                }
            }
        }
        Err(e) => {
            prop_assert!(!e.rejection.message.is_empty());
            prop_assert!(matches!(
                e.rejection.code,
                ErrorCode::BadRequest | ErrorCode::TooLarge
            ));
            // The reqId is echoed exactly when it could be read (a string of at most 64 characters).
            prop_assert_eq!(e.req_id, expected_req_id);
        }
    }
    Ok(())
}

/// RFC 7396 section 2, written out independently of the implementation under test.
fn reference_merge(target: &Value, patch: &Value) -> Value {
    let Value::Object(patch) = patch else {
        return patch.clone();
    };
    let mut result: BTreeMap<String, Value> = match target {
        Value::Object(t) => t.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    };
    for (name, value) in patch {
        if value.is_null() {
            result.remove(name);
        } else {
            let current = result.remove(name).unwrap_or(Value::Null);
            result.insert(name.clone(), reference_merge(&current, value));
        }
    }
    Value::Object(result.into_iter().collect())
}

/// No value reached through an object patch is null (patch nulls delete, they are never stored).
fn nulls_only_from_target(target: &Value, patch: &Value, result: &Value) -> bool {
    match (patch, result) {
        (Value::Object(p), Value::Object(r)) => p.iter().all(|(k, pv)| match r.get(k) {
            None => true,
            Some(rv) => {
                let tv = target.get(k).unwrap_or(&Value::Null);
                if pv.is_object() {
                    !rv.is_null() && nulls_only_from_target(tv, pv, rv)
                } else {
                    rv == pv
                }
            }
        }),
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Properties

proptest! {
    #![proptest_config(config(30_000))]

    /// Arbitrary text never panics the parser, and only JSON objects are ever accepted.
    #[test]
    fn arbitrary_text_frames_never_panic(text in prop_oneof![any::<String>(), generated(Fuzz::frame_text)]) {
        let limits = limits();
        if let Ok(frame) = parse_client_frame(&text, &limits) {
            let value: Value = serde_json::from_str(&text).expect("accepted text is JSON");
            prop_assert!(value.is_object());
            check_frame(&value, &text, &limits)?;
            let _ = frame;
        }
    }
}

proptest! {
    #![proptest_config(config(30_000))]

    /// JSON shaped like client frames: accepted frames satisfy every invariant, refused ones echo the reqId.
    #[test]
    fn frame_shaped_json_is_parsed_or_refused_cleanly(frame in generated(Fuzz::frame)) {
        let text = frame.to_string();
        check_frame(&frame, &text, &limits())?;
    }
}

proptest! {
    #![proptest_config(config(25_000))]

    /// merge_patch is RFC 7396: equal to the reference, idempotent, nulls remove, untouched keys stay.
    #[test]
    fn merge_patch_is_rfc_7396((target, patch) in generated(|f| (f.json(3), f.json(3)))) {
        let mut once = target.clone();
        merge_patch(&mut once, &patch);
        prop_assert_eq!(&once, &reference_merge(&target, &patch));

        let mut twice = once.clone();
        merge_patch(&mut twice, &patch);
        prop_assert_eq!(&twice, &once, "applying a patch twice changes nothing more");

        match &patch {
            Value::Object(p) => {
                prop_assert!(once.is_object());
                for (k, v) in p {
                    if v.is_null() {
                        prop_assert!(once.get(k).is_none(), "null removes {:?}", k);
                    } else if !v.is_object() {
                        prop_assert_eq!(once.get(k), Some(v));
                    }
                }
                if let Value::Object(t) = &target {
                    for (k, v) in t {
                        if !p.contains_key(k) {
                            prop_assert_eq!(once.get(k), Some(v), "untouched key {:?} kept", k);
                        }
                    }
                }
                prop_assert!(nulls_only_from_target(&target, &patch, &once));
            }
            other => prop_assert_eq!(&once, other),
        }
    }
}

proptest! {
    #![proptest_config(config(12_000))]

    /// Object validation never panics; accepted objects have no `version`, keep their id and a type.
    #[test]
    fn new_object_validation_holds_its_invariants(value in generated(|f| if f.chance(90) { f.new_object() } else { f.json(3) })) {
        let limits = limits();
        if let Ok(o) = NewObject::from_json(value.clone(), &limits) {
            check_new_object(&o, &limits)?;
            prop_assert_eq!(&value["id"], &Value::String(o.id.as_str().into()));
            // Everything but `version` is kept as sent.
            let mut expected = value.as_object().cloned().unwrap_or_default();
            expected.remove(VERSION_FIELD);
            prop_assert_eq!(o.body, expected);
        }
    }
}

proptest! {
    #![proptest_config(config(12_000))]

    /// Patch validation never panics; accepted patches cannot change `id` or remove `type`.
    #[test]
    fn patch_validation_holds_its_invariants(
        (id, value) in generated(|f| {
            let id = f.text_of(ID_CHARS, 1, 12);
            let patch = f.patch(&id);
            (id, patch)
        })
    ) {
        let limits = limits();
        let id = ObjectId::parse(id).expect("generated id is valid");
        match Patch::from_json(&id, value.clone(), &limits) {
            Ok(p) => {
                check_patch(&id, &p, &limits)?;
                let mut expected = value.as_object().cloned().unwrap_or_default();
                expected.remove(VERSION_FIELD);
                expected.remove("id");
                prop_assert_eq!(p.0, expected);
            }
            Err(e) => prop_assert!(matches!(e.code, ErrorCode::BadRequest | ErrorCode::TooLarge)),
        }
    }
}

/// The generators reach every branch: each message kind is accepted sometimes and refused sometimes, so the
/// properties above are not passing vacuously.
#[test]
fn generators_cover_accepted_and_refused_input() {
    let limits = limits();
    let mut accepted: BTreeMap<&str, usize> = BTreeMap::new();
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    let mut echoed = 0;
    for seed in 0..3_000u64 {
        let frame = Fuzz(seed).frame();
        let kind = match frame["type"].as_str() {
            Some("create") => "create",
            Some("update") => "update",
            Some("delete") => "delete",
            Some("ping") => "ping",
            Some("resync") => "resync",
            Some("presence") => "presence",
            _ => "other",
        };
        match parse_client_frame(&frame.to_string(), &limits) {
            Ok(_) => *accepted.entry(kind).or_default() += 1,
            Err(e) => {
                *refused.entry(kind).or_default() += 1;
                echoed += usize::from(e.req_id.is_some());
            }
        }
    }
    for kind in ["create", "update", "delete", "ping", "resync", "presence"] {
        assert!(
            accepted.get(kind).copied().unwrap_or(0) >= 10,
            "{kind} accepted: {accepted:?}"
        );
    }
    for kind in ["create", "update", "delete", "presence", "other"] {
        assert!(
            refused.get(kind).copied().unwrap_or(0) >= 10,
            "{kind} refused: {refused:?}"
        );
    }
    assert!(echoed >= 100, "refusals with an echoed reqId: {echoed}");
    let objects = (0..3_000u64)
        .filter(|seed| NewObject::from_json(Fuzz(*seed).new_object(), &limits).is_ok())
        .count();
    assert!(
        (300..2_700).contains(&objects),
        "accepted objects: {objects}"
    );
    let patches = (0..3_000u64)
        .filter(|seed| {
            let id = ObjectId::parse("o1").unwrap();
            Patch::from_json(&id, Fuzz(*seed).patch("o1"), &limits).is_ok()
        })
        .count();
    assert!(
        (300..2_900).contains(&patches),
        "accepted patches: {patches}"
    );
}
