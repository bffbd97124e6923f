//! NATS Key-Value, with no knowledge of handlers or the app: bucket configuration, the bucket
//! handle, watch and view settings, the messages a watch yields, the resumable watcher itself,
//! and the live views a watcher keeps.

pub(crate) mod bucket;
pub(crate) mod features;
pub mod group;
pub(crate) mod key_value;
pub(crate) mod message;
pub(crate) mod options;
pub(crate) mod start_at;
pub(crate) mod view;
pub(crate) mod watcher;
pub(crate) mod writes;

// `KeyValue`, `KvMessage`, `Operation`, `KvWatch`, `KvWatcher` and `KvView` are used by
// nearly every service: the crate root exports them, and this module the rest, so every public
// name has one path.
pub use bucket::{BucketConfig, Placement, Republish, StorageType, MAX_HISTORY};
pub use message::BatchInfo;
pub use options::{DEFAULT_INACTIVE_THRESHOLD, DEFAULT_WATCH_TIMEOUT, MAX_WORKERS};
pub use view::{
    KvViewOptions, KvViewSnapshot, ViewBehind, ViewClosed, DEFAULT_VIEW_CATCH_UP_TIMEOUT,
};
pub use watcher::{CatchUp, RecreateReason, WatchEvent, WatchPhase, WatchStatus};
pub use writes::{
    Committed, ConflictRetry, KvBatch, Modified, Versioned, DEFAULT_CONFLICT_ATTEMPTS,
    MAX_ATOMIC_WRITES,
};
