//! The stored form of an object: what the hot state hands the durable store and the durable store hands back on a
//! cold load. Both storage layers speak it, so it belongs to neither.

use crate::ids::ObjectId;

/// An object as it travels between the hot state and the durable store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub id: ObjectId,
    /// The object as JSON text, including `version`.
    pub json: String,
    /// Epoch ms of the object's last edit.
    pub updated_at: i64,
}
