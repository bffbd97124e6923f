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
            entries: Entries(imbl::HashMap::new()),
            revision: 0,
        }
    }
}

/// The keys with a value, each with its slot: a persistent map whose elements are one pointer
/// each. Its nodes reserve room for many elements (a node of 32 slots holds a few keys at the
/// deepest level of a large map), so an element's size counts several times over per key: a
/// slot pointer (with the map's 4-byte hash, 16 bytes) rather than a key and a value (40).
pub(super) struct Entries<T>(imbl::HashMap<Slot<T>, ()>);

impl<T> Clone for Entries<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T> Entries<T> {
    pub(super) fn get(&self, key: &str) -> Option<&Slot<T>> {
        self.0.get_key_value(key).map(|(slot, ())| slot)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every key and its slot, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Slot<T>)> + '_ {
        self.0.keys().map(|slot| (&*slot.key, slot))
    }

    /// Sets the slot of its key (replacing the key's previous one).
    pub(super) fn insert(&mut self, slot: Slot<T>) {
        self.0.insert(slot, ());
    }

    pub(super) fn remove(&mut self, key: &str) {
        self.0.remove(key);
    }
}

/// One key's value and revision (which tells an expiry deadline still applies), with the key,
/// in one allocation; the map knows it by its key.
pub(super) struct Slot<T>(Arc<SlotData<T>>);

pub(super) struct SlotData<T> {
    pub(super) key: Box<str>,
    pub(super) value: Arc<T>,
    pub(super) revision: u64,
}

impl<T> Slot<T> {
    pub(super) fn new(key: Box<str>, value: Arc<T>, revision: u64) -> Self {
        Self(Arc::new(SlotData {
            key,
            value,
            revision,
        }))
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

/// Hashed and compared as its key, so the map finds a slot by a `&str`.
impl<T> std::hash::Hash for Slot<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl<T> PartialEq for Slot<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl<T> Eq for Slot<T> {}

impl<T> std::borrow::Borrow<str> for Slot<T> {
    fn borrow(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_replaces_the_one_of_its_key() {
        let mut entries = ViewState::<u32>::default().entries;
        entries.insert(Slot::new("a".into(), Arc::new(1), 1));
        entries.insert(Slot::new("b".into(), Arc::new(2), 2));
        entries.insert(Slot::new("a".into(), Arc::new(3), 3));
        assert_eq!(entries.len(), 2);
        let slot = entries.get("a").map(|slot| (*slot.value, slot.revision));
        assert_eq!(slot, Some((3, 3)));
        assert!(entries.contains_key("b"));
        entries.remove("b");
        assert!(!entries.contains_key("b") && entries.get("b").is_none());
        let keys: Vec<_> = entries.iter().map(|(key, _)| key.to_owned()).collect();
        assert_eq!(keys, ["a"]);
    }
}
