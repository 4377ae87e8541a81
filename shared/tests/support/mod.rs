//! What the shared crate's tests have in common: ids, stored objects and JSON values that lossy storage would
//! change (for the storage conformance suites), and in [`fuzz`] generators of client-like input (for the property
//! tests). Each test binary uses a part of it.
#![allow(dead_code)]

pub mod fuzz;

use canvas_shared::ids::{ObjectId, ProjectId};
use canvas_shared::stored::StoredObject;
use serde_json::{json, Value};

pub fn pid(s: &str) -> ProjectId {
    ProjectId::parse(s).expect("valid project id")
}

pub fn oid(s: &str) -> ObjectId {
    ObjectId::parse(s).expect("valid object id")
}

pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("stored text is not JSON ({e}): {text}"))
}

/// Property values that a decode/re-encode through a lossy JSON library would change: floats needing 17
/// significant digits, integers beyond 2^53, empty containers (`[]` vs `{}`), unicode, escapes and control
/// characters, deep nesting and nulls inside arrays. Every number is within DynamoDB's range (magnitude 1e-130 to
/// 9.99e125); see the durable suite for what happens outside it.
pub fn tricky_props() -> Value {
    json!({
        "float": 0.30000000000000004,
        "big": 12345678901234567u64,
        "maxU64": 18446744073709551615u64,
        "neg": -9007199254740993i64,
        "small": 1.5e-7,
        "huge": 9.87654321e125,
        "negTinyExp": -2.5e-100,
        "zero": 0,
        "emptyArr": [],
        "emptyObj": {},
        "nestedEmpty": {"a": [], "b": {}, "c": [[], {}]},
        "unicode": "héllo wörld ✓ 😀 中文",
        "escapes": "quote \" backslash \\ slash / newline \n tab \t nul \u{0000} bell \u{0007} ls \u{2028}",
        "trailingBackslash": "ends with \\",
        "we\"ird\\key": "key with escapes",
        "ключ": "unicode key",
        " ": "blank key",
        "bools": [true, false, null],
        "mixed": [1, "two", 3.5, {"four": [4]}, null],
        "deep": {"l1": {"l2": {"l3": {"l4": {"l5": [1, {"l6": "bottom"}]}}}}},
        "emptyString": ""
    })
}

/// An object body with `id`, `type` and the tricky properties.
pub fn tricky_object(id: &str) -> Value {
    let mut body = tricky_props();
    body["id"] = json!(id);
    body["type"] = json!("rect");
    body
}

pub fn stored(id: &str, body: &Value, updated_at: i64) -> StoredObject {
    StoredObject {
        id: oid(id),
        json: body.to_string(),
        updated_at,
    }
}
