//! Canvas objects and the edits clients make to them: validation and RFC 7396 merge patch.
//!
//! Objects are free JSON apart from `id` and `type`; `version` is owned by the server. Everything a client sends
//! passes through here before any store sees it, so stores may assume ids are valid, `version` was stripped and
//! an update cannot change `id` or remove `type`.

use serde_json::{Map, Value};

use crate::error::{ErrorCode, Rejection};
use crate::ids::ObjectId;
use crate::limits::Limits;

/// The server-owned property that counts an object's applied edits.
pub const VERSION_FIELD: &str = "version";

/// Top-level names the durable store uses for its own attributes (keys, edit time, and a tombstone's delete time
/// and purge time). An object may not use them, or it would not come back as it was written (an item with
/// `deletedAt` reads as deleted; one with `purgeAt` would be removed by DynamoDB's time to live).
pub const RESERVED_FIELDS: [&str; 5] =
    ["projectId", "objectId", "updatedAt", "deletedAt", "purgeAt"];

/// Deepest nesting accepted (objects and arrays, the object itself counting as one). DynamoDB's rule: nested
/// attributes go at most 32 levels deep, a top-level attribute being level 1, so a top-level property may hold at
/// most 31 nested objects or arrays.
pub const MAX_DEPTH: usize = 32;

/// DynamoDB's rule for attribute names (top-level and map keys alike): at least 1 byte, at most 65535 bytes of
/// UTF-8.
pub const MAX_NAME_BYTES: usize = 65535;

/// DynamoDB's number rules: at most 38 significant digits (leading and trailing zeros do not count), and a
/// non-zero magnitude from 1E-130 to 9.9999999999999999999999999999999999999E+125.
const MAX_SIGNIFICANT_DIGITS: usize = 38;
const MIN_DECIMAL_EXPONENT: i64 = -130;
const MAX_DECIMAL_EXPONENT: i64 = 125;

/// The largest object, as JSON, that is always a storable DynamoDB item whatever `CANVAS_MAX_OBJECT_BYTES` says.
///
/// DynamoDB's item limit is 400 KB (binary units: 409,600 bytes), sized as the names plus the values: a string or
/// a name counts its UTF-8 bytes, a number about one byte per two significant digits plus one, null and booleans
/// one byte, a list or map 3 bytes plus one per element. Per JSON byte the worst case is a list of one-digit
/// numbers (`0,` is 2 bytes of JSON and at most 4 as DynamoDB sizes it, counting a spare byte for rounding and
/// one for the sign), so an item is never more than twice its JSON. 192 KiB of JSON is at most 384 KiB as an
/// item, which leaves more than 16 KiB for the attributes the durable store adds (`projectId`, `objectId`,
/// `updatedAt`, at most a few hundred bytes). Because the same bound holds for any object, the hot store's size
/// check after a merge keeps an update's result storable too.
pub const MAX_STORABLE_OBJECT_BYTES: usize = 192 * 1024;

/// Checks what the durable store could not hold, so that a bad value is refused at the door instead of failing
/// every later save of its project. Property names, numbers and nesting are checked here; the size is checked by
/// [`check_size`] against a limit that never exceeds [`MAX_STORABLE_OBJECT_BYTES`].
fn check_storable(value: &Value, depth: usize) -> Result<(), Rejection> {
    match value {
        Value::Number(n) => check_number(&n.to_string()),
        Value::Array(_) | Value::Object(_) if depth > MAX_DEPTH => Err(bad(format!(
            "objects may nest at most {MAX_DEPTH} levels deep"
        ))),
        Value::Array(items) => items.iter().try_for_each(|v| check_storable(v, depth + 1)),
        Value::Object(map) => check_properties(map, depth + 1),
        _ => Ok(()),
    }
}

/// Checks the names and values of one level of properties, `depth` being the level of the values.
fn check_properties(map: &Map<String, Value>, depth: usize) -> Result<(), Rejection> {
    map.iter().try_for_each(|(name, value)| {
        check_name(name)?;
        check_storable(value, depth)
    })
}

fn check_name(name: &str) -> Result<(), Rejection> {
    if name.is_empty() {
        return Err(bad(
            "property names must not be empty (at any depth): the durable store cannot hold an empty name",
        ));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(bad(format!(
            "a property name is {} bytes; at most {MAX_NAME_BYTES} are allowed",
            name.len()
        )));
    }
    Ok(())
}

/// Checks a number as the text the stores will hold (serde_json's spelling of it).
fn check_number(text: &str) -> Result<(), Rejection> {
    let out_of_range = || {
        bad(format!(
            "number {text} cannot be stored: at most {MAX_SIGNIFICANT_DIGITS} significant digits and a magnitude \
             from 1e-130 to 9.99e125 (or 0)"
        ))
    };
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (
            &unsigned[..at],
            unsigned[at + 1..]
                .parse::<i64>()
                .map_err(|_| out_of_range())?,
        ),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<u8> = whole.bytes().chain(fraction.bytes()).collect();
    let Some(first) = digits.iter().position(|d| *d != b'0') else {
        return Ok(()); // zero
    };
    let last = digits.iter().rposition(|d| *d != b'0').unwrap_or(first);
    let significant = last - first + 1;
    // The power of ten of the first significant digit.
    let magnitude = whole.len() as i64 - 1 - first as i64 + exponent;
    if significant > MAX_SIGNIFICANT_DIGITS
        || !(MIN_DECIMAL_EXPONENT..=MAX_DECIMAL_EXPONENT).contains(&magnitude)
    {
        return Err(out_of_range());
    }
    Ok(())
}

fn check_reserved(body: &Map<String, Value>) -> Result<(), Rejection> {
    match RESERVED_FIELDS
        .iter()
        .find(|name| body.contains_key(**name))
    {
        Some(name) => Err(bad(format!(
            "`{name}` is reserved for storage; use another property name"
        ))),
        None => Ok(()),
    }
}

/// A validated object as a client created it (no `version`).
#[derive(Debug, Clone, PartialEq)]
pub struct NewObject {
    pub id: ObjectId,
    /// All properties, including `id` and `type`, without `version`.
    pub body: Map<String, Value>,
}

/// A validated merge patch: an object without `version`, without `id`, and with `type` (if present) a non-empty string.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch(pub Map<String, Value>);

/// One validated edit of a project.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    Create(NewObject),
    /// `if_version`: apply only while the object is at this version.
    Update {
        id: ObjectId,
        patch: Patch,
        if_version: Option<u64>,
    },
    /// `if_version`: delete only while the object is at this version.
    Delete {
        id: ObjectId,
        if_version: Option<u64>,
    },
}

impl Edit {
    pub fn object_id(&self) -> &ObjectId {
        match self {
            Edit::Create(o) => &o.id,
            Edit::Update { id, .. } | Edit::Delete { id, .. } => id,
        }
    }

    /// The version a conditional update or delete requires the object to be at.
    pub fn if_version(&self) -> Option<u64> {
        match self {
            Edit::Create(_) => None,
            Edit::Update { if_version, .. } | Edit::Delete { if_version, .. } => *if_version,
        }
    }

    /// Short name used in metrics and logs.
    /// Every value [`Edit::kind`] returns.
    pub const KINDS: [&'static str; 3] = ["create", "update", "delete"];

    pub fn kind(&self) -> &'static str {
        match self {
            Edit::Create(_) => "create",
            Edit::Update { .. } => "update",
            Edit::Delete { .. } => "delete",
        }
    }
}

fn bad(message: impl Into<String>) -> Rejection {
    Rejection::new(ErrorCode::BadRequest, message)
}

/// Reads an object id from a JSON value.
pub fn parse_object_id(value: Option<&Value>, field: &str) -> Result<ObjectId, Rejection> {
    match value {
        Some(Value::String(s)) => ObjectId::parse(s.as_str())
            .map_err(|e| bad(format!("`{field}` is not a valid object id: {e}"))),
        Some(_) => Err(bad(format!("`{field}` must be a string"))),
        None => Err(bad(format!("`{field}` is missing"))),
    }
}

fn check_type(value: &Value) -> Result<(), Rejection> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(()),
        Value::String(_) => Err(bad("`type` must not be empty")),
        _ => Err(bad("`type` must be a non-empty string")),
    }
}

fn check_size(what: &str, body: &Map<String, Value>, limits: &Limits) -> Result<(), Rejection> {
    let size = serde_json::to_string(body)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    let limit = limits.max_object_bytes.min(MAX_STORABLE_OBJECT_BYTES);
    if size > limit {
        return Err(Rejection::new(
            ErrorCode::TooLarge,
            format!("{what} is {size} bytes as JSON; the limit is {limit} bytes"),
        ));
    }
    Ok(())
}

impl NewObject {
    /// Validates the `object` of a `create` message.
    pub fn from_json(value: Value, limits: &Limits) -> Result<Self, Rejection> {
        let Value::Object(mut body) = value else {
            return Err(bad("`object` must be a JSON object"));
        };
        let id = parse_object_id(body.get("id"), "object.id")?;
        match body.get("type") {
            Some(t) => check_type(t)?,
            None => return Err(bad("`object.type` is missing")),
        }
        body.remove(VERSION_FIELD);
        check_reserved(&body)?;
        check_properties(&body, 2)?;
        check_size("the object", &body, limits)?;
        Ok(Self { id, body })
    }
}

impl Patch {
    /// Validates the `patch` of an `update` of object `id`.
    pub fn from_json(id: &ObjectId, value: Value, limits: &Limits) -> Result<Self, Rejection> {
        let Value::Object(mut patch) = value else {
            return Err(bad("`patch` must be a JSON object"));
        };
        patch.remove(VERSION_FIELD);
        match patch.get("id") {
            None => {}
            Some(Value::String(s)) if s == id.as_str() => {
                patch.remove("id");
            }
            Some(_) => return Err(bad("`id` cannot change")),
        }
        if let Some(t) = patch.get("type") {
            if t.is_null() {
                return Err(bad("`type` cannot be removed"));
            }
            check_type(t)?;
        }
        check_reserved(&patch)?;
        check_properties(&patch, 2)?;
        check_size("the patch", &patch, limits)?;
        Ok(Self(patch))
    }
}

/// Applies an RFC 7396 JSON merge patch to `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn oid(s: &str) -> ObjectId {
        ObjectId::parse(s).unwrap()
    }

    #[test]
    fn storage_names_are_refused_in_objects_and_patches() {
        // `deletedAt` would make the saved item read back as a deleted object, `purgeAt` would let the table's
        // time to live remove it: neither may be acked.
        for name in ["projectId", "objectId", "updatedAt", "deletedAt", "purgeAt"] {
            let body = json!({"id": "o1", "type": "rect", name: 1});
            let err = NewObject::from_json(body, &Limits::default())
                .expect_err(&format!("{name} refused in an object"));
            assert_eq!(err.code, ErrorCode::BadRequest, "{name}");
            let patch = json!({ name: 1 });
            assert!(
                Patch::from_json(&oid("o1"), patch, &Limits::default()).is_err(),
                "{name} refused in a patch"
            );
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7396_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, expected) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, expected);
        }
    }

    #[test]
    fn create_strips_version_and_requires_id_and_type() {
        let limits = Limits::default();
        let o =
            NewObject::from_json(json!({"id":"o1","type":"rect","version":9}), &limits).unwrap();
        assert!(!o.body.contains_key("version"));
        for bad_obj in [
            json!([]),
            json!({"type":"r"}),
            json!({"id":"o 1","type":"r"}),
            json!({"id":"o1"}),
            json!({"id":"o1","type":""}),
            json!({"id":"o1","type":3}),
        ] {
            let err = NewObject::from_json(bad_obj, &limits).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest);
        }
    }

    #[test]
    fn values_dynamodb_cannot_store_are_refused() {
        let limits = Limits::default();
        for bad_value in [json!(1e126), json!(-1e126), json!(5e-324), json!(f64::MAX)] {
            let err = NewObject::from_json(json!({"id":"o1","type":"r","v":bad_value}), &limits)
                .unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad_value}");
        }
        let ok = json!({"id":"o1","type":"r","v":[0, 1e125, -2.5e-130]});
        assert!(NewObject::from_json(ok, &limits).is_ok());
        let mut deep = json!(1);
        for _ in 0..31 {
            deep = json!([deep]);
        }
        let at_limit = json!({"id":"o1","type":"r","v":deep.clone()});
        assert!(NewObject::from_json(at_limit, &limits).is_ok());
        let too_deep = json!({"id":"o1","type":"r","v":[deep]});
        assert!(NewObject::from_json(too_deep, &limits).is_err());
        assert!(Patch::from_json(&oid("o1"), json!({"v":[[[[1e200]]]]}), &limits).is_err());
    }

    #[test]
    fn names_and_numbers_dynamodb_refuses_are_bad_requests() {
        let limits = Limits::default();
        let id = oid("o1");
        for bad_props in [
            json!({"": 1}),
            json!({"style": {"": 1}}),
            json!({"a": [{"b": {"": null}}]}),
            json!({("n".repeat(MAX_NAME_BYTES + 1)): 1}),
        ] {
            let mut object = json!({"id":"o1","type":"r"});
            object
                .as_object_mut()
                .unwrap()
                .extend(bad_props.as_object().unwrap().clone());
            let err = NewObject::from_json(object, &limits).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad_props}");
            let err = Patch::from_json(&id, bad_props.clone(), &limits).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{bad_props}");
        }
        for (text, storable) in [
            ("9.999999999999999e125", true),
            ("1e-130", true),
            ("-1e-130", true),
            ("1.2345678901234567e-130", true),
            ("9.99e-131", false),
            ("1e126", false),
            ("-1e126", false),
        ] {
            assert_eq!(check_number(text).is_ok(), storable, "{text}");
        }
        // More than 38 significant digits, as stored text.
        assert!(check_number("1.23456789012345678901234567890123456789").is_err());
        assert!(check_number("12345678901234567890123456789012345678").is_ok());
    }

    #[test]
    fn oversized_objects_are_too_large() {
        let limits = Limits {
            max_object_bytes: 100,
            ..Limits::default()
        };
        let err = NewObject::from_json(
            json!({"id":"o1","type":"r","blob":"x".repeat(200)}),
            &limits,
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::TooLarge);
    }

    #[test]
    fn patches_cannot_touch_identity() {
        let limits = Limits::default();
        let id = oid("o1");
        assert!(Patch::from_json(&id, json!({"id":"o2"}), &limits).is_err());
        assert!(Patch::from_json(&id, json!({"type":null}), &limits).is_err());
        assert!(Patch::from_json(&id, json!({"type":""}), &limits).is_err());
        assert!(Patch::from_json(&id, json!([1]), &limits).is_err());
        let p = Patch::from_json(&id, json!({"id":"o1","version":4,"x":1}), &limits).unwrap();
        assert_eq!(Value::Object(p.0), json!({"x":1}));
    }
}
