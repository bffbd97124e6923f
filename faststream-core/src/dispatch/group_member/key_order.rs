//! Which of a partition's changes may start: several are in flight at once, but never two of one
//! key, and never one of a key before an earlier change of that key is settled, even one that a
//! member before this one still holds.
//!
//! The ledger knows every unsettled change of the partition it can: the ones delivered here
//! (held, running, or waiting for a retry) and, after a takeover, the **old range**: what the
//! partition's consumer delivered before this member held the pin and has not settled, read
//! from the server (`kv::group::takeover`). A change starts only when it is the lowest unsettled
//! sequence of its key that the ledger knows, and when no sequence of unknown key lies below it
//! (an old range read only in part). Old entries go when this member settles them (they come
//! back here once their holder's ack wait ends) or when the consumer's ack floor passes them
//! (their holder settled them).
//!
//! Why the old range must be read: after a member dies, the server sends the partition's new
//! changes to the next member before it redelivers the dead member's unsettled ones (those wait
//! for their ack wait, and a change kept alive by progress acks waits longer). Without the old
//! range, a key's newer change could run before its older one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Where an unsettled change of the partition is.
#[derive(Debug)]
enum Slot<T> {
    /// Delivered to another member before this one held the pin; not settled as far as known.
    Old,
    /// Delivered here, waiting for an earlier change of its key (or for the fence).
    Held(T),
    /// Its call has started here.
    Running,
    /// Asked again after a backoff: it comes back with its next delivery.
    Retrying,
}

#[derive(Debug)]
struct Entry<T> {
    key: Arc<str>,
    slot: Slot<T>,
}

/// What the ledger holds at a sequence.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Known {
    /// Nothing: a change not seen before.
    Nothing,
    /// An old range's entry, or a change waiting for its retry: its delivery is held as new.
    Waiting,
    /// A change held here: its newest delivery replaces the one held.
    Held,
    /// A change whose call runs: its newest delivery is the one to settle.
    Running,
}

/// The unsettled changes of one partition, by sequence and by key.
#[derive(Debug)]
pub(super) struct KeyOrder<T> {
    entries: BTreeMap<u64, Entry<T>>,
    by_key: HashMap<Arc<str>, BTreeSet<u64>>,
    /// `(after, up_to]`: sequences of the old range whose keys could not be read.
    unknown: Option<(u64, u64)>,
    /// Whether the old range has been read since this member got the pin: nothing starts before.
    fenced: bool,
    /// Held sequences that may have become ready since the last look: checked, not scanned for.
    candidates: BTreeSet<u64>,
    /// How many entries are [`Slot::Old`]: read on every turn of the partition's loop.
    old: usize,
    /// The highest sequence of each key done with here (acknowledged or given up), for at most
    /// [`DONE_KEYS`] keys.
    done: HashMap<Arc<str>, u64>,
}

/// How many keys a partition's task remembers the last change it was done with of: a
/// redelivery of such a change (its acknowledgement was lost, say with a consumer leader that
/// died) is acknowledged again without a call. Cleared when full.
const DONE_KEYS: usize = 65_536;

impl<T> Default for KeyOrder<T> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            by_key: HashMap::new(),
            unknown: None,
            fenced: false,
            candidates: BTreeSet::new(),
            old: 0,
            done: HashMap::new(),
        }
    }
}

impl<T> KeyOrder<T> {
    /// Whether anything of the old range is still unsettled: the consumer's ack floor is then
    /// worth reading again.
    pub(super) fn awaits_old(&self) -> bool {
        self.unknown.is_some() || self.old > 0
    }

    /// How many changes were delivered here and are not settled (held, running or retrying).
    pub(super) fn in_hand(&self) -> usize {
        self.entries.len() - self.old
    }

    /// Sets the old range read at a takeover: the consumer's ack floor, the unsettled-as-far-as
    /// known sequences above it with their keys, and the sequences whose keys were not read.
    /// Sequences already delivered here keep their place.
    pub(super) fn fence(
        &mut self,
        ack_floor: u64,
        old: impl IntoIterator<Item = (u64, String)>,
        unknown: Option<(u64, u64)>,
    ) {
        for (sequence, key) in old {
            if sequence > ack_floor && !self.entries.contains_key(&sequence) {
                self.insert(sequence, Arc::from(key), Slot::Old);
            }
        }
        self.unknown = unknown.filter(|(after, up_to)| after < up_to);
        self.fenced = true;
        self.passed(ack_floor);
        self.all_held_are_candidates();
    }

    fn all_held_are_candidates(&mut self) {
        let held = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.slot, Slot::Held(_)))
            .map(|(sequence, _)| *sequence);
        self.candidates.extend(held);
    }

    /// Forgets the old range: the pin changed hands, and the next takeover reads it again.
    pub(super) fn unfence(&mut self) {
        let old: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.slot, Slot::Old))
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in old {
            self.remove(sequence);
        }
        self.unknown = None;
        self.fenced = false;
    }

    /// What the ledger holds at `sequence`.
    pub(super) fn known(&self, sequence: u64) -> Known {
        match self.entries.get(&sequence).map(|entry| &entry.slot) {
            None => Known::Nothing,
            Some(Slot::Old | Slot::Retrying) => Known::Waiting,
            Some(Slot::Held(_)) => Known::Held,
            Some(Slot::Running) => Known::Running,
        }
    }

    /// The held delivery at `sequence`, to replace with a newer delivery of the same change.
    pub(super) fn held_mut(&mut self, sequence: u64) -> Option<&mut T> {
        match self.entries.get_mut(&sequence).map(|entry| &mut entry.slot) {
            Some(Slot::Held(item)) => Some(item),
            _ => None,
        }
    }

    /// Holds a delivery of `key` at `sequence` until it may start (an old entry or a retry
    /// becomes this member's).
    pub(super) fn hold(&mut self, sequence: u64, key: impl Into<Arc<str>>, item: T) {
        match self.entries.get_mut(&sequence) {
            Some(entry) => {
                if matches!(entry.slot, Slot::Old) {
                    self.old -= 1;
                }
                entry.slot = Slot::Held(item);
            }
            None => self.insert(sequence, key.into(), Slot::Held(item)),
        }
        self.candidates.insert(sequence);
    }

    /// The held deliveries that may start now, lowest sequence first; they are marked running.
    /// Only sequences that may have become ready are looked at: one held, or the next of a key
    /// whose change was settled, or every held one when the fence moved.
    pub(super) fn start_ready(&mut self) -> Vec<(u64, T)> {
        if !self.fenced || self.candidates.is_empty() {
            return Vec::new();
        }
        let mut ready = Vec::with_capacity(self.candidates.len());
        for sequence in std::mem::take(&mut self.candidates) {
            if self.below_unknown(sequence) {
                continue;
            }
            let Some(entry) = self.entries.get_mut(&sequence) else {
                continue;
            };
            let first = self
                .by_key
                .get(&entry.key)
                .and_then(|sequences| sequences.first());
            if first != Some(&sequence) || !matches!(entry.slot, Slot::Held(_)) {
                continue;
            }
            if let Slot::Held(item) = std::mem::replace(&mut entry.slot, Slot::Running) {
                ready.push((sequence, item));
            }
        }
        ready
    }

    /// Whether a sequence of unknown key, not yet settled, lies below `sequence`.
    fn below_unknown(&self, sequence: u64) -> bool {
        self.unknown
            .is_some_and(|(after, up_to)| after < up_to && after + 1 < sequence)
    }

    /// The change at `sequence` is settled: acknowledged, given up, or handed back.
    pub(super) fn settled(&mut self, sequence: u64) {
        self.remove(sequence);
    }

    /// The change at `sequence` is done with here (acknowledged, or given up): remembered, so
    /// that a delivery of it again (the server lost the acknowledgement) is not called again,
    /// after a later change of its key perhaps.
    pub(super) fn done(&mut self, sequence: u64) {
        let Some(entry) = self.remove(sequence) else {
            return;
        };
        if self.done.len() >= DONE_KEYS && !self.done.contains_key(&entry.key) {
            self.done.clear();
        }
        let highest = self.done.entry(entry.key).or_insert(sequence);
        *highest = (*highest).max(sequence);
    }

    /// Whether a change of `key` at `sequence` or later was done with here: `sequence`
    /// delivered again is a change whose settlement the server lost.
    pub(super) fn done_here(&self, key: &str, sequence: u64) -> bool {
        self.done
            .get(key)
            .is_some_and(|highest| *highest >= sequence)
    }

    /// The change at `sequence` was asked again after a backoff: its key waits for it.
    pub(super) fn retrying(&mut self, sequence: u64) {
        if let Some(entry) = self.entries.get_mut(&sequence) {
            if matches!(entry.slot, Slot::Old) {
                self.old -= 1;
            }
            entry.slot = Slot::Retrying;
        }
    }

    /// The consumer's ack floor: every sequence up to it is settled, whoever settled it.
    pub(super) fn passed(&mut self, ack_floor: u64) {
        let below: Vec<u64> = self
            .entries
            .range(..=ack_floor)
            .filter(|(_, entry)| matches!(entry.slot, Slot::Old))
            .map(|(sequence, _)| *sequence)
            .collect();
        for sequence in below {
            self.remove(sequence);
        }
        if let Some((after, up_to)) = self.unknown {
            if ack_floor > after {
                self.unknown = (ack_floor < up_to).then_some((ack_floor, up_to));
                self.all_held_are_candidates();
            }
        }
    }

    /// Takes every held delivery out, lowest first (to hand back when giving the partition up).
    pub(super) fn take_held(&mut self) -> Vec<(u64, T)> {
        let held: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, entry)| matches!(entry.slot, Slot::Held(_)))
            .map(|(sequence, _)| *sequence)
            .collect();
        held.into_iter()
            .filter_map(|sequence| match self.remove(sequence)?.slot {
                Slot::Held(item) => Some((sequence, item)),
                _ => None,
            })
            .collect()
    }

    /// Every held delivery, for progress acknowledgements.
    pub(super) fn held(&self) -> impl Iterator<Item = &T> {
        self.entries.values().filter_map(|entry| match &entry.slot {
            Slot::Held(item) => Some(item),
            _ => None,
        })
    }

    fn insert(&mut self, sequence: u64, key: Arc<str>, slot: Slot<T>) {
        if matches!(slot, Slot::Old) {
            self.old += 1;
        }
        self.by_key
            .entry(Arc::clone(&key))
            .or_default()
            .insert(sequence);
        self.entries.insert(sequence, Entry { key, slot });
    }

    /// Removes the entry at `sequence`; its key's next change may have become ready.
    fn remove(&mut self, sequence: u64) -> Option<Entry<T>> {
        let entry = self.entries.remove(&sequence)?;
        if matches!(entry.slot, Slot::Old) {
            self.old -= 1;
        }
        self.candidates.remove(&sequence);
        if let Some(sequences) = self.by_key.get_mut(&entry.key) {
            sequences.remove(&sequence);
            match sequences.first() {
                Some(next) => {
                    self.candidates.insert(*next);
                }
                None => {
                    self.by_key.remove(&entry.key);
                }
            }
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests;
