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

pub use bucket::{BucketConfig, Placement, Republish, StorageType, MAX_HISTORY};
pub use group::{GroupSettings, KvGroup};
pub use key_value::KeyValue;
pub use message::{KvMessage, Operation};
pub use options::{KvWatch, DEFAULT_INACTIVE_THRESHOLD, DEFAULT_WATCH_TIMEOUT, MAX_WORKERS};
pub use view::{KvView, KvViewOptions, KvViewSnapshot, ViewClosed};
pub use watcher::{CatchUp, KvWatcher, RecreateReason, WatchEvent, WatchPhase, WatchStatus};
