//! Size and count limits applied to client input, with the documented defaults.

/// Limits applied to every edit. The defaults are the contract's documented ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket frame accepted (bytes); larger frames close the socket with 1009.
    pub max_frame_bytes: usize,
    /// Largest object, serialized as JSON (bytes), after a create or an update.
    pub max_object_bytes: usize,
    /// Most objects one project may hold.
    pub max_objects_per_project: usize,
    /// Most object JSON one project may hold in total (bytes); an edit that would grow it past this is refused.
    pub max_project_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 256 * 1024,
            max_object_bytes: 64 * 1024,
            max_objects_per_project: 10_000,
            max_project_bytes: 32 * 1024 * 1024,
        }
    }
}
