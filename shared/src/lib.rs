//! Shared by every service: ids, objects and edits, the wire protocol, limits, configuration, telemetry, and
//! the two storage traits with their implementations:
//!
//! - [`hot`]: the shared working copy (Redis, or memory in dev mode), where edits are applied atomically.
//! - [`durable`]: the source of truth (DynamoDB, or an embedded redb file in dev mode), where saves land.

// Items are `pub` only where other crates use them; inside, `pub(crate)` and narrower.
#![warn(unreachable_pub)]

pub mod cause;
pub mod config;
pub mod durable;
pub mod error;
pub mod hot;
pub mod ids;
pub mod limits;
pub mod object;
pub mod protocol;
pub mod secret;
pub mod shutdown;
pub mod stored;
pub mod telemetry;
pub mod time;

pub use cause::Cause;
pub use error::{ErrorCode, Rejection};
pub use ids::{ObjectId, ProjectId};
pub use limits::Limits;
