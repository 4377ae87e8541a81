//! The stored form of an object: what the hot state hands the durable store and the durable store hands back on a
//! cold load. Both storage layers speak it, so it belongs to neither.

use crate::ids::ObjectId;

/// An object as it travels between the hot state and the durable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub id: ObjectId,
    /// The object as JSON text, including `version`.
    pub json: String,
    /// The project's edit stamp of the object's last edit: epoch ms, made strictly increasing per project by the
    /// hot state, so that of two writes of one key the later edit always carries the greater stamp. The durable
    /// store writes an item only over an older stamp.
    pub updated_at: i64,
}

/// A deleted object as it travels to the durable store: its id and the stamp of the delete. The durable store keeps
/// it as a tombstone, so that no older write of the object can land after it and bring the object back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub id: ObjectId,
    /// The project's edit stamp of the delete (the same clock as [`StoredObject::updated_at`]).
    pub stamp: i64,
}
