//! `KvViewSnapshot`: a view's map at one revision, unchanged for as long as it is held.

use std::fmt;
use std::sync::Arc;

use super::state::ViewState;

/// A [`KvView`](super::KvView)'s map at one revision.
pub struct KvViewSnapshot<T> {
    pub(super) state: Arc<ViewState<T>>,
}

impl<T> KvViewSnapshot<T> {
    /// The value of `key` in this snapshot.
    pub fn get(&self, key: &str) -> Option<&Arc<T>> {
        self.state.entries.get(key).and_then(|slot| slot.value())
    }

    /// How many keys have a value.
    pub fn len(&self) -> usize {
        self.state.entries.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.state.entries.is_empty()
    }

    /// The revision of the last entry this snapshot reflects (0 before any).
    pub fn revision(&self) -> u64 {
        self.state.revision
    }

    /// The keys with a value, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .state
            .entries
            .iter()
            .map(|(key, _)| key.to_owned())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Every key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<T>)> + '_ {
        self.state
            .entries
            .iter()
            .filter_map(|(key, slot)| Some((key, slot.value()?)))
    }
}

impl<T> Clone for KvViewSnapshot<T> {
    fn clone(&self) -> Self {
        Self {
            state: Arc::clone(&self.state),
        }
    }
}

impl<T> fmt::Debug for KvViewSnapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvViewSnapshot")
            .field("keys", &self.state.entries.len())
            .field("revision", &self.state.revision)
            .finish()
    }
}
