//! Conversion between object JSON and DynamoDB attribute maps, lossless for every JSON value.
//!
//! An item holds the object's properties, `projectId` and `objectId` (the keys) and `updatedAt` (the stamp every
//! write is conditional on). A tombstone holds only the keys, `updatedAt`, `deletedAt` and `purgeAt` (when
//! DynamoDB's time to live may remove it); items whose `objectId` begins with `~` belong to the system. Neither is
//! an object.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Number, Value};

use super::SEQ_ITEM_ID;
use crate::ids::{ObjectId, ProjectId};
use crate::stored::{StoredObject, Tombstone};

pub const PROJECT_KEY: &str = "projectId";
pub const OBJECT_KEY: &str = "objectId";
pub const UPDATED_AT: &str = "updatedAt";
pub const DELETED_AT: &str = "deletedAt";
/// A tombstone's expiry in epoch seconds: the attribute the table's time to live is enabled on.
pub const PURGE_AT: &str = "purgeAt";
/// How long a tombstone outlives its delete. It only has to outlive every write of the object that can still be in
/// flight (an abandoned request lives for seconds, not days); a week leaves room for any retry or clock slip.
pub const TOMBSTONE_RETENTION_SECS: i64 = 7 * 24 * 3600;
/// The first character of a system item's `objectId`.
pub const SYSTEM_PREFIX: char = '~';

/// The condition on every write: the key holds nothing, or something older. `:stamp` is the write's stamp.
pub const NEWER_ONLY: &str = "attribute_not_exists(#updatedAt) OR #updatedAt < :stamp";
/// The attribute of the `seq` watermark item.
pub const SEQ: &str = "seq";

pub fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(to_attribute).collect()),
        Value::Object(map) => AttributeValue::M(
            map.iter()
                .map(|(k, v)| (k.clone(), to_attribute(v)))
                .collect(),
        ),
    }
}

fn number(n: &str) -> Value {
    if let Ok(i) = n.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = n.parse::<u64>() {
        return Value::Number(u.into());
    }
    n.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(n.into()))
}

pub fn from_attribute(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(n) => number(n),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(items) => Value::Array(items.iter().map(from_attribute).collect()),
        AttributeValue::M(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), from_attribute(v)))
                .collect(),
        ),
        AttributeValue::Ss(items) => {
            Value::Array(items.iter().cloned().map(Value::String).collect())
        }
        AttributeValue::Ns(items) => Value::Array(items.iter().map(|n| number(n)).collect()),
        _ => Value::Null,
    }
}

/// The full item for a put.
pub fn to_item(project: &ProjectId, object: &StoredObject) -> HashMap<String, AttributeValue> {
    let mut item: HashMap<String, AttributeValue> =
        match serde_json::from_str::<Map<String, Value>>(&object.json) {
            Ok(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), to_attribute(v)))
                .collect(),
            Err(_) => HashMap::new(),
        };
    item.insert(PROJECT_KEY.into(), AttributeValue::S(project.to_string()));
    item.insert(OBJECT_KEY.into(), AttributeValue::S(object.id.to_string()));
    item.insert(
        UPDATED_AT.into(),
        AttributeValue::N(object.updated_at.to_string()),
    );
    item
}

/// The primary key of an item.
pub fn key(project: &ProjectId, id: &ObjectId) -> HashMap<String, AttributeValue> {
    key_of_id(project, id.as_str())
}

/// The primary key of an item by its raw object id (system items have ids no object may take).
pub fn key_of_id(project: &ProjectId, id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PROJECT_KEY.to_string(),
            AttributeValue::S(project.to_string()),
        ),
        (OBJECT_KEY.to_string(), AttributeValue::S(id.to_string())),
    ])
}

/// A system item (its object id starts with [`SYSTEM_PREFIX`]), never an object.
pub fn is_system_item(item: &HashMap<String, AttributeValue>) -> bool {
    matches!(item.get(OBJECT_KEY), Some(AttributeValue::S(id)) if id.starts_with(SYSTEM_PREFIX))
}

/// The `seq` a watermark item holds (0 for any other item).
pub fn seq_of(item: &HashMap<String, AttributeValue>) -> u64 {
    match (item.get(OBJECT_KEY), item.get(SEQ)) {
        (Some(AttributeValue::S(id)), Some(AttributeValue::N(n))) if id == SEQ_ITEM_ID => {
            n.parse().unwrap_or(0)
        }
        _ => 0,
    }
}

/// The tombstone item of a deleted object: `deletedAt` is the delete's stamp, as is `updatedAt`; `purgeAt` is
/// when the table's time to live may remove it ([`TOMBSTONE_RETENTION_SECS`] after the delete).
pub fn tombstone_item(
    project: &ProjectId,
    tombstone: &Tombstone,
) -> HashMap<String, AttributeValue> {
    let mut item = key(project, &tombstone.id);
    let stamp = AttributeValue::N(tombstone.stamp.to_string());
    item.insert(UPDATED_AT.into(), stamp.clone());
    item.insert(DELETED_AT.into(), stamp);
    let purge_at = tombstone.stamp.div_euclid(1000) + TOMBSTONE_RETENTION_SECS;
    item.insert(PURGE_AT.into(), AttributeValue::N(purge_at.to_string()));
    item
}

/// The item's `updatedAt` (0 when it has none).
pub fn stamp_of(item: &HashMap<String, AttributeValue>) -> i64 {
    match item.get(UPDATED_AT) {
        Some(AttributeValue::N(n)) => n.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Reads an item back into an object; None for tombstones, system items and items that are not ours.
pub fn from_item(item: &HashMap<String, AttributeValue>) -> Option<StoredObject> {
    if item.contains_key(DELETED_AT) {
        return None;
    }
    let id = match item.get(OBJECT_KEY) {
        Some(AttributeValue::S(s)) if !s.starts_with(SYSTEM_PREFIX) => {
            ObjectId::parse(s.as_str()).ok()?
        }
        _ => return None,
    };
    let updated_at = stamp_of(item);
    let body: Map<String, Value> = item
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), PROJECT_KEY | OBJECT_KEY | UPDATED_AT))
        .map(|(k, v)| (k.clone(), from_attribute(v)))
        .collect();
    Some(StoredObject {
        id,
        json: serde_json::to_string(&body).ok()?,
        updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_round_trips_through_attributes() {
        let value = json!({"a":[],"b":{},"c":0.30000000000000004,"d":-12,"e":18446744073709551615u64,"f":null,"g":[true,"x",{"h":[1.5]}],"i":""});
        assert_eq!(from_attribute(&to_attribute(&value)), value);
    }

    #[test]
    fn tombstones_carry_their_purge_time_a_retention_after_the_delete() {
        let project = ProjectId::parse("p1").unwrap();
        let tombstone = Tombstone {
            id: ObjectId::parse("o1").unwrap(),
            stamp: 1_700_000_123_456,
        };
        let item = tombstone_item(&project, &tombstone);
        assert_eq!(
            item.get(PURGE_AT),
            Some(&AttributeValue::N(
                (1_700_000_123 + TOMBSTONE_RETENTION_SECS).to_string()
            ))
        );
        assert!(from_item(&item).is_none(), "a tombstone is no object");
    }

    #[test]
    fn items_round_trip_and_hide_storage_keys() {
        let project = ProjectId::parse("p1").unwrap();
        let object = StoredObject {
            id: ObjectId::parse("o1").unwrap(),
            json: r#"{"id":"o1","type":"rect","version":3,"x":1}"#.into(),
            updated_at: 1234,
        };
        let item = to_item(&project, &object);
        assert!(item.contains_key("projectId") && item.contains_key("objectId"));
        let back = from_item(&item).unwrap();
        assert_eq!(back.updated_at, 1234);
        let tombstone = Tombstone {
            id: ObjectId::parse("o1").unwrap(),
            stamp: 1300,
        };
        let dead = tombstone_item(&project, &tombstone);
        assert!(from_item(&dead).is_none(), "a tombstone is no object");
        assert_eq!(stamp_of(&dead), 1300);
        let a: Value = serde_json::from_str(&back.json).unwrap();
        let b: Value = serde_json::from_str(&object.json).unwrap();
        assert_eq!(a, b);
    }
}
