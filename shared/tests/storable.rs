//! Every object the door accepts is an item DynamoDB accepts, and comes back from item conversion as it went in.
//!
//! Objects are generated with what DynamoDB refuses mixed in (empty property names at any depth, deep nesting,
//! numbers of extreme magnitude or with many digits, big strings, unicode names); each one the door accepts must
//! pass the validator that implements DynamoDB's documented item rules (`durable::validating`), written apart from
//! the door's own checks.

use canvas_shared::durable::item::{from_item, to_item};
use canvas_shared::durable::validating::{check_item, item_size, MAX_ITEM_BYTES};
use canvas_shared::ids::MAX_ID_LEN;
use canvas_shared::object::{NewObject, Patch, MAX_STORABLE_OBJECT_BYTES};
use canvas_shared::stored::StoredObject;
use canvas_shared::{Limits, ObjectId, ProjectId};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// No configured limit of its own: only what the door always applies.
fn unlimited() -> Limits {
    Limits {
        max_object_bytes: usize::MAX,
        ..Limits::default()
    }
}

/// The longest project id, so that the keys the durable store adds are as big as they get.
fn project() -> ProjectId {
    ProjectId::parse("p".repeat(MAX_ID_LEN)).unwrap()
}

/// The stored form of an accepted object (with the `version` the hot store adds) as the saver would write it.
fn stored(object: &NewObject) -> StoredObject {
    let mut body = object.body.clone();
    body.insert("version".into(), json!(u64::MAX));
    StoredObject {
        id: object.id.clone(),
        json: Value::Object(body).to_string(),
        updated_at: i64::MAX,
    }
}

/// Number texts around every edge of DynamoDB's rules: 1 to 45 digits, exponents far past both ends of the range.
fn number_text() -> impl Strategy<Value = String> {
    (
        any::<bool>(),
        "[0-9]{1,45}",
        prop::option::of("[0-9]{1,20}"),
        prop::option::of(-160i32..160),
    )
        .prop_map(|(negative, whole, fraction, exponent)| {
            let whole = whole.trim_start_matches('0');
            let whole = if whole.is_empty() { "0" } else { whole };
            let mut text = format!("{}{whole}", if negative { "-" } else { "" });
            if let Some(f) = fraction {
                text.push('.');
                text.push_str(&f);
            }
            if let Some(e) = exponent {
                text.push_str(&format!("e{e}"));
            }
            text
        })
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z]{1,6}",
        2 => Just(String::new()),
        2 => "\\PC{1,4}",
        1 => Just("ключ ✓".to_string()),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        4 => number_text().prop_filter_map("JSON number", |t| serde_json::from_str::<Value>(&t).ok()),
        1 => "\\PC{0,12}".prop_map(Value::String),
        1 => (1usize..4000).prop_map(|n| Value::String("x".repeat(n))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// A value wrapped in 25 to 40 levels of arrays and objects: both sides of the nesting limit.
fn deep_value() -> impl Strategy<Value = Value> {
    (
        leaf(),
        prop::collection::vec((any::<bool>(), name()), 25..40),
    )
        .prop_map(|(leaf, wraps)| {
            wraps.into_iter().fold(leaf, |v, (as_array, key)| {
                if as_array {
                    Value::Array(vec![v])
                } else {
                    Value::Object(Map::from_iter([(key, v)]))
                }
            })
        })
}

fn properties() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((name(), prop_oneof![4 => value(), 1 => deep_value()]), 0..6)
        .prop_map(|entries| entries.into_iter().collect())
}

fn object_json() -> impl Strategy<Value = Value> {
    properties().prop_map(|mut props| {
        props.insert("id".into(), json!("o1"));
        props.insert("type".into(), json!("rect"));
        Value::Object(props)
    })
}

fn json_len(body: &Map<String, Value>) -> usize {
    serde_json::to_string(body).unwrap().len()
}

proptest! {
    #![proptest_config(config(1_000))]

    #[test]
    fn every_accepted_object_is_a_storable_item_and_round_trips(object in object_json()) {
        if let Ok(accepted) = NewObject::from_json(object, &unlimited()) {
            let stored = stored(&accepted);
            let item = to_item(&project(), &stored);
            prop_assert_eq!(check_item(&item), Ok(()), "accepted: {}", stored.json);
            let back = from_item(&item).expect("an item of ours");
            let went_in: Value = serde_json::from_str(&stored.json).unwrap();
            let came_back: Value = serde_json::from_str(&back.json).unwrap();
            prop_assert_eq!(came_back, went_in);
        }
    }

    #[test]
    fn every_accepted_patch_holds_only_storable_names_and_numbers(patch in properties()) {
        let id = ObjectId::parse("o1").unwrap();
        if let Ok(Patch(accepted)) = Patch::from_json(&id, Value::Object(patch), &unlimited()) {
            let stored = StoredObject { id, json: Value::Object(accepted).to_string(), updated_at: 0 };
            prop_assert_eq!(check_item(&to_item(&project(), &stored)), Ok(()), "accepted: {}", stored.json);
        }
    }

    /// The bound the door's size limit rests on: an item is never more than twice its object's JSON (plus the
    /// attributes the durable store adds), so an object of at most `MAX_STORABLE_OBJECT_BYTES` always fits.
    #[test]
    fn an_item_is_at_most_twice_its_json(object in object_json()) {
        if let Ok(accepted) = NewObject::from_json(object, &unlimited()) {
            let stored = stored(&accepted);
            let item = to_item(&project(), &stored);
            let keys = item_size(&to_item(&project(), &StoredObject { json: "{}".into(), ..stored.clone() })).unwrap();
            prop_assert!(item_size(&item).unwrap() <= 2 * stored.json.len() + keys);
        }
    }
}

/// The worst case of that bound, at the door's limit: a list of one-digit numbers, negative ones, and of
/// empty lists, each filling the whole object.
#[test]
fn the_largest_accepted_objects_are_storable_items() {
    for element in ["0", "-1", "[]", "{}", "null"] {
        let mut object = json!({"id": "o".repeat(MAX_ID_LEN), "type": "r", "v": []});
        let overhead = json_len(object.as_object().unwrap()) + 20; // room for `version`
        let count = (MAX_STORABLE_OBJECT_BYTES - overhead) / (element.len() + 1);
        let list = format!("[{}]", vec![element; count].join(","));
        object["v"] = serde_json::from_str(&list).unwrap();
        let accepted = NewObject::from_json(object, &unlimited()).expect("within the limit");
        let item = to_item(&project(), &stored(&accepted));
        assert_eq!(check_item(&item), Ok(()), "list of {element}");
        assert!(item_size(&item).unwrap() <= MAX_ITEM_BYTES);
    }
}

#[test]
fn objects_over_the_storable_size_are_refused_whatever_the_configured_limit() {
    let object = json!({"id": "o1", "type": "r", "blob": "x".repeat(MAX_STORABLE_OBJECT_BYTES)});
    assert!(NewObject::from_json(object, &unlimited()).is_err());
}
