//! Why the hot state refused an edit, defined once for both stores (the Redis script's statuses and the memory
//! store's checks) and mapped to the client's error code and message in one place.

use crate::error::{ErrorCode, Rejection};
use crate::ids::ObjectId;
use crate::limits::Limits;

/// An edit the hot state refused; nothing was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditRefusal {
    /// A create of an id that exists.
    Exists,
    /// An update or delete of an id that does not exist.
    NotFound,
    /// The object would be larger than the limit as JSON.
    ObjectTooLarge,
    /// The project already holds the most objects allowed.
    TooManyObjects,
    /// The edit would grow the project's object JSON past its budget.
    ProjectTooLarge,
    /// An update tried to change the object's `type`.
    TypeChange,
    /// A conditional update or delete named a version other than the object's current one.
    VersionMismatch { current: u64 },
}

impl EditRefusal {
    /// The refusal for a status of the edit script, `None` for a status the script does not return.
    pub(crate) fn from_script_status(status: &str, current_version: u64) -> Option<Self> {
        Some(match status {
            "exists" => Self::Exists,
            "not_found" => Self::NotFound,
            "too_large" => Self::ObjectTooLarge,
            "too_many" => Self::TooManyObjects,
            "project_too_large" => Self::ProjectTooLarge,
            "bad_type" => Self::TypeChange,
            "version_mismatch" => Self::VersionMismatch {
                current: current_version,
            },
            _ => return None,
        })
    }

    /// What the client is told about the refused edit of object `id`.
    pub fn to_rejection(self, id: &ObjectId, limits: &Limits) -> Rejection {
        match self {
            Self::Exists => Rejection::new(ErrorCode::Conflict, format!("object {id} already exists")),
            Self::NotFound => {
                Rejection::new(ErrorCode::NotFound, format!("object {id} does not exist"))
            }
            Self::ObjectTooLarge => Rejection::new(
                ErrorCode::TooLarge,
                format!(
                    "object {id} would exceed {} bytes as JSON",
                    limits.max_object_bytes
                ),
            ),
            Self::TooManyObjects => Rejection::new(
                ErrorCode::TooLarge,
                format!(
                    "the project already holds {} objects, the most allowed",
                    limits.max_objects_per_project
                ),
            ),
            Self::ProjectTooLarge => Rejection::new(
                ErrorCode::TooLarge,
                format!(
                    "the project would exceed {} bytes of objects as JSON, the most allowed",
                    limits.max_project_bytes
                ),
            ),
            Self::TypeChange => Rejection::new(ErrorCode::BadRequest, "`type` cannot change"),
            Self::VersionMismatch { current } => Rejection::new(
                ErrorCode::Conflict,
                format!("object {id} is at version {current}, not the version the edit was made against"),
            )
            .with_current_version(current),
        }
    }
}
