//! What a view's clones and its keeper share: the state last published and what the view is
//! of.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::position::Progress;
use crate::kv::watcher::WatchStatus;

/// What every clone of a view shares with the keeper: the state the keeper last published,
/// swapped whole on each publication, and what the view is of.
pub(super) struct PublishedView<T> {
    pub(super) bucket: Arc<str>,
    pub(super) pattern: String,
    pub(super) state: ArcSwap<ViewState<T>>,
    pub(super) status: WatchStatus,
    /// `true` once the view holds the bucket's state.
    pub(super) ready: watch::Receiver<bool>,
    /// How far it has passed in the bucket's stream, for handlers given the view.
    pub(super) progress: Progress,
}

/// The view's map and the revision it reflects.
pub(super) struct ViewState<T> {
    pub(super) entries: imbl::HashMap<Arc<str>, Slot<T>>,
    pub(super) revision: u64,
}

impl<T> Clone for ViewState<T> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            revision: self.revision,
        }
    }
}

impl<T> Default for ViewState<T> {
    fn default() -> Self {
        Self {
            entries: imbl::HashMap::new(),
            revision: 0,
        }
    }
}

/// One key's value, and its revision (which tells an expiry deadline still applies).
pub(super) struct Slot<T> {
    pub(super) value: Arc<T>,
    pub(super) revision: u64,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            revision: self.revision,
        }
    }
}
