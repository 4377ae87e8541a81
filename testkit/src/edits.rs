//! Edits and objects as tests write them: builders that validate like the gateway's door (and panic on input a
//! test should not have written), and the `by_id` view that compares a project's objects regardless of order.

use std::collections::BTreeMap;

use canvas_shared::object::{Edit, NewObject, Patch};
use canvas_shared::{Limits, ObjectId};
use serde_json::{json, Value};

fn object_id(id: &str) -> ObjectId {
    ObjectId::parse(id).unwrap_or_else(|e| panic!("test object id {id:?}: {e}"))
}

/// A create of `body` (an object with `id` and `type`).
pub fn create(body: Value) -> Edit {
    let object = NewObject::from_json(body, &Limits::default())
        .unwrap_or_else(|r| panic!("test object refused: {}", r.message));
    Edit::Create(object)
}

/// An update of object `id` with merge patch `patch`; `if_version` makes it conditional.
pub fn update_at(id: &str, patch: Value, if_version: Option<u64>) -> Edit {
    let id = object_id(id);
    let patch = Patch::from_json(&id, patch, &Limits::default())
        .unwrap_or_else(|r| panic!("test patch refused: {}", r.message));
    Edit::Update {
        id,
        patch,
        if_version,
    }
}

/// An unconditional update.
pub fn update(id: &str, patch: Value) -> Edit {
    update_at(id, patch, None)
}

/// A delete of object `id`; `if_version` makes it conditional.
pub fn delete_at(id: &str, if_version: Option<u64>) -> Edit {
    Edit::Delete {
        id: object_id(id),
        if_version,
    }
}

/// An unconditional delete.
pub fn delete(id: &str) -> Edit {
    delete_at(id, None)
}

/// A small rectangle with the given `x`.
pub fn rect_at(id: &str, x: i64) -> Value {
    json!({"id": id, "type": "rect", "x": x, "y": 2})
}

/// Objects keyed by their `id`; an object without one, or an id seen twice, fails the test.
pub fn by_id(objects: impl IntoIterator<Item = Value>) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for object in objects {
        let id = object["id"]
            .as_str()
            .unwrap_or_else(|| panic!("object without an id: {object}"))
            .to_string();
        assert!(
            map.insert(id, object).is_none(),
            "an object id appears twice"
        );
    }
    map
}
