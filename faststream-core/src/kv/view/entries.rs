//! A view's keys and their slots: a persistent hash map built of small hash tables.
//!
//! The keys are spread by hash over a number of shards (a power of two, about one for every 32
//! keys), each a `hashbrown` table of slot pointers behind an `Arc`; the shards are held in
//! groups of 64, behind an `Arc` each, under one array behind an `Arc`. A clone shares
//! everything; a change copies the one shard it touches (if shared), its group and the array (a
//! pointer per group: 512 at a million keys). A read is two indexings and a table lookup.
//!
//! Against a HAMT (`imbl::HashMap`, what this replaced), a key costs about 25 bytes of table
//! instead of about 75 (a HAMT's nodes reserve room for 16 or 32 elements and hold a few keys
//! each at the deepest level), and an insert allocates nothing while the shards have room:
//! sized in advance from the catch-up's entry count, they take a whole catch-up without
//! growing.

use std::hash::BuildHasher as _;
use std::sync::{Arc, LazyLock};

use hashbrown::HashTable;

use super::state::Slot;

/// Keys a shard holds on average once the map is sized for them (below a cache line or two of
/// control bytes, and a cheap copy when a published shard changes).
const KEYS_PER_SHARD: usize = 32;
/// Past this average the shards double.
const MAX_KEYS_PER_SHARD: usize = 64;
/// Below this average (and more than one shard) they halve.
const MIN_KEYS_PER_SHARD: usize = 8;

/// Hashes keys with keys drawn at random once per process: a bucket's keys are written by
/// whoever may write the bucket, so the hash must not be predictable.
static HASHER: LazyLock<std::hash::RandomState> = LazyLock::new(std::hash::RandomState::new);

/// The hash a key is stored and looked up with.
pub(super) fn hash_key(key: &str) -> u64 {
    HASHER.hash_one(key)
}

type Shard<T> = Arc<HashTable<Slot<T>>>;
/// Shards per group (a power of two).
const GROUP: usize = 64;

/// The keys with a value, each with its slot (which holds the key and its hash).
pub(super) struct Entries<T> {
    groups: Arc<Vec<Arc<Vec<Shard<T>>>>>,
    /// How many shards there are: a power of two.
    shards: usize,
    len: usize,
}

impl<T> Clone for Entries<T> {
    fn clone(&self) -> Self {
        Self {
            groups: Arc::clone(&self.groups),
            shards: self.shards,
            len: self.len,
        }
    }
}

impl<T> Default for Entries<T> {
    fn default() -> Self {
        Self::from_tables(vec![HashTable::new()], 0)
    }
}

impl<T> Entries<T> {
    /// `tables` (a power of two of them) holding `len` keys.
    fn from_tables(tables: Vec<HashTable<Slot<T>>>, len: usize) -> Self {
        let shards = tables.len();
        let mut tables = tables.into_iter().map(Arc::new);
        let groups = (0..shards.div_ceil(GROUP))
            .map(|_| Arc::new(tables.by_ref().take(GROUP).collect()))
            .collect();
        Self {
            groups: Arc::new(groups),
            shards,
            len,
        }
    }

    /// The shard of a hash: from bits 32 and up, which the table inside does not use (it places
    /// by the low bits and tags by the top 7).
    fn shard_of(&self, hash: u64) -> usize {
        // A shard count is a power of two far below 2^25, so the mask keeps bits 32-56.
        (hash >> 32) as usize & (self.shards - 1)
    }

    fn shard(&self, index: usize) -> Option<&Shard<T>> {
        self.groups.get(index / GROUP)?.get(index % GROUP)
    }

    /// The table of shard `index`, copied first where it is shared (with its group and the
    /// array of groups).
    fn table_mut(&mut self, index: usize) -> Option<&mut HashTable<Slot<T>>> {
        let group = Arc::make_mut(&mut self.groups).get_mut(index / GROUP)?;
        let shard = Arc::make_mut(group).get_mut(index % GROUP)?;
        Some(Arc::make_mut(shard))
    }

    fn all_shards(&self) -> impl Iterator<Item = &Shard<T>> + '_ {
        self.groups.iter().flat_map(|group| group.iter())
    }

    pub(super) fn get(&self, key: &str) -> Option<&Slot<T>> {
        let hash = hash_key(key);
        self.shard(self.shard_of(hash))?
            .find(hash, |slot| *slot.key == *key)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every key and its slot, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Slot<T>)> + '_ {
        self.all_shards()
            .flat_map(|shard| shard.iter())
            .map(|slot| (&*slot.key, slot))
    }

    /// Sets the slot of its key (replacing the key's previous one).
    pub(super) fn insert(&mut self, slot: Slot<T>) {
        let hash = slot.hash;
        let index = self.shard_of(hash);
        let Some(table) = self.table_mut(index) else {
            return;
        };
        match table.entry(hash, |held| held.key == slot.key, |held| held.hash) {
            hashbrown::hash_table::Entry::Occupied(mut held) => *held.get_mut() = slot,
            hashbrown::hash_table::Entry::Vacant(room) => {
                room.insert(slot);
                self.len += 1;
                if self.len > self.shards * MAX_KEYS_PER_SHARD {
                    self.reshard(self.shards * 2, 0);
                }
            }
        }
    }

    pub(super) fn remove(&mut self, key: &str) {
        let hash = hash_key(key);
        let index = self.shard_of(hash);
        // Looked up first: a shard shared with a published state is copied only to change it.
        let held = |slot: &Slot<T>| *slot.key == *key;
        if self
            .shard(index)
            .is_none_or(|shard| shard.find(hash, held).is_none())
        {
            return;
        }
        let Some(table) = self.table_mut(index) else {
            return;
        };
        if let Ok(found) = table.find_entry(hash, held) {
            found.remove();
            self.len -= 1;
            let shards = self.shards;
            if shards > 1 && self.len < shards * MIN_KEYS_PER_SHARD {
                self.reshard(shards / 2, 0);
            }
        }
    }

    /// Makes room for `more` keys than it holds, so that inserting them grows nothing (a
    /// catch-up knows how many entries it brings).
    pub(super) fn reserve(&mut self, more: usize) {
        let keys = self.len.saturating_add(more);
        let wanted = keys.div_ceil(KEYS_PER_SHARD).max(1).next_power_of_two();
        if wanted > self.shards {
            self.reshard(wanted, keys);
        }
    }

    /// Spreads the keys over `count` shards (a power of two), each with room for its share of
    /// `keys` (when more than it holds).
    fn reshard(&mut self, count: usize, keys: usize) {
        let share = keys.max(self.len).div_ceil(count);
        // A quarter above the average: the keys of a shard vary around it.
        let room = share + share / 4;
        let mut tables: Vec<HashTable<Slot<T>>> =
            (0..count).map(|_| HashTable::with_capacity(room)).collect();
        let mask = count - 1;
        for slot in self.all_shards().flat_map(|shard| shard.iter()) {
            let index = (slot.hash >> 32) as usize & mask;
            if let Some(table) = tables.get_mut(index) {
                table.insert_unique(slot.hash, slot.clone(), |held| held.hash);
            }
        }
        *self = Self::from_tables(tables, self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(entries: &mut Entries<u32>, key: &str, value: u32) {
        let mut slot = Slot::new(key.into(), u64::from(value));
        assert!(slot.set_value(Arc::new(value)), "a new slot is not shared");
        entries.insert(slot);
    }

    fn value(entries: &Entries<u32>, key: &str) -> Option<u32> {
        entries
            .get(key)
            .and_then(|slot| slot.value().map(|value| **value))
    }

    #[test]
    fn a_slot_replaces_the_one_of_its_key() {
        let mut entries = Entries::default();
        put(&mut entries, "a", 1);
        put(&mut entries, "b", 2);
        put(&mut entries, "a", 3);
        assert_eq!(entries.len(), 2);
        let found = entries
            .get("a")
            .map(|slot| (slot.value().map(|value| **value), slot.revision));
        assert_eq!(found, Some((Some(3), 3)));
        assert!(entries.contains_key("b"));
        entries.remove("b");
        entries.remove("never");
        assert!(!entries.contains_key("b") && entries.get("b").is_none());
        let keys: Vec<_> = entries.iter().map(|(key, _)| key.to_owned()).collect();
        assert_eq!(keys, ["a"]);
    }

    #[test]
    fn growing_and_shrinking_keeps_every_key_and_clones_unchanged() {
        let mut entries = Entries::default();
        let mut expected = std::collections::HashMap::new();
        let mut before = None;
        for i in 0..5_000u32 {
            put(&mut entries, &format!("k.{}", i % 3_000), i);
            expected.insert(format!("k.{}", i % 3_000), i);
            if i == 2_500 {
                before = Some((entries.clone(), expected.clone()));
            }
        }
        assert!(entries.shards > 16, "{} shards", entries.shards);
        for i in (0..3_000u32).filter(|i| i % 7 != 0) {
            entries.remove(&format!("k.{i}"));
            expected.remove(&format!("k.{i}"));
        }
        assert!(entries.shards < 64, "{} shards", entries.shards);
        for map in [Some((entries, expected)), before].into_iter().flatten() {
            let (entries, expected) = map;
            assert_eq!(entries.len(), expected.len());
            assert_eq!(entries.iter().count(), expected.len());
            for (key, value) in &expected {
                assert_eq!(self::value(&entries, key), Some(*value), "{key}");
            }
            assert_eq!(self::value(&entries, "k.3000"), None);
        }
    }

    #[test]
    fn reserving_sizes_the_shards_once() {
        let mut entries = Entries::default();
        put(&mut entries, "first", 0);
        entries.reserve(10_000);
        let shards = entries.shards;
        assert_eq!(
            shards,
            (10_001usize).div_ceil(KEYS_PER_SHARD).next_power_of_two()
        );
        for i in 0..10_000u32 {
            put(&mut entries, &format!("k.{i}"), i);
        }
        assert_eq!(entries.shards, shards);
        assert_eq!(entries.len(), 10_001);
        assert_eq!(value(&entries, "first"), Some(0));
        assert_eq!(value(&entries, "k.9999"), Some(9_999));
        // Reserving less than there is changes nothing.
        entries.reserve(0);
        assert_eq!(entries.shards, shards);
    }
}
