//! What a view's clones and its keeper share: the state last published and what the view is
//! of.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::entries::hash_key;
pub(super) use super::entries::Entries;
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
    pub(super) entries: Entries<T>,
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
            entries: Entries::default(),
            revision: 0,
        }
    }
}

/// One key's value and revision (which tells an expiry deadline still applies), with the key
/// and its hash, in one allocation; the map holds one pointer per key.
///
/// The reader makes a key's slot, without its value; the keeper decodes the value, sets it and
/// only then inserts the slot, so every slot in a map has its value. (The slot is made by the
/// reader for its memory: allocated on the thread that frees the entries, it reuses theirs.)
pub(super) struct Slot<T>(Arc<SlotData<T>>);

pub(super) struct SlotData<T> {
    pub(super) key: Box<str>,
    /// The key's hash, computed once (by the reader, where the key was just read); it fits in
    /// the allocation's size class at no cost.
    pub(super) hash: u64,
    pub(super) revision: u64,
    /// `None` only from the reader to the keeper.
    value: Option<Arc<T>>,
}

impl<T> Slot<T> {
    /// The slot of `key` at `revision`, without its value yet.
    pub(super) fn new(key: Box<str>, revision: u64) -> Self {
        Self(Arc::new(SlotData {
            hash: hash_key(&key),
            key,
            revision,
            value: None,
        }))
    }

    /// Sets its value; `false` if the slot is shared already (never, before it is inserted).
    pub(super) fn set_value(&mut self, value: Arc<T>) -> bool {
        Arc::get_mut(&mut self.0)
            .map(|slot| slot.value = Some(value))
            .is_some()
    }

    /// Its value; every slot in a map has one.
    pub(super) fn value(&self) -> Option<&Arc<T>> {
        self.0.value.as_ref()
    }
}

impl<T> std::ops::Deref for Slot<T> {
    type Target = SlotData<T>;

    fn deref(&self) -> &SlotData<T> {
        &self.0
    }
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}
