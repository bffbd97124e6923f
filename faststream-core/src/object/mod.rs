//! Object storage: watching an object store's changes (`obj_watch`).

pub(crate) mod message;
pub(crate) mod options;
pub(crate) mod watcher;

pub use message::{ObjMessage, ObjectMetaError};
pub use options::ObjWatch;
pub use watcher::ObjWatcher;
