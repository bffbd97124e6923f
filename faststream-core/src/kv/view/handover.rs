//! What the view's reader (a task, owning the watch) hands its keeper (a thread, building the
//! map), and the expiry deadline the keeper hands back.
//!
//! The reader turns each entry into what the map needs of it (the key's slot, with the key and
//! its hash, and the value to decode), so that the rest of the entry is freed by the thread that
//! received it (its bucket name is shared by every entry: counted up and down on one thread, not
//! bounced between two) and the slot reuses that memory (made on the keeper's thread, the slots
//! came from that thread's allocator arena while the entries' memory stayed resident in the
//! reader's: 80-100 bytes a key more at 100,000 keys). The keeper decodes the value on its own
//! thread, so that a slow decoder holds the view back and nothing else.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::Notify;

use super::state::Slot;
use crate::kv::message::{KvMessage, Operation};
use crate::kv::watcher::{CatchUp, WatchEvent};

/// How many entries already received are handed over (and applied before the state is
/// published) at once.
pub(super) const MAX_BATCH: usize = 512;
/// Batches read ahead of the one being applied.
pub(super) const BATCHES_AHEAD: usize = 8;

/// What the reader hands the keeper.
pub(super) enum Input<T> {
    /// The watch's events, in order, as changes of the map.
    Changes(Vec<Change<T>>),
    /// The earliest expiry deadline has passed.
    Expire,
}

/// One event of the watch, as a change of the map.
pub(super) enum Change<T> {
    /// A key's new value, to decode into its slot, and when the server stored it (for a `ttl`
    /// the view enforces itself).
    Put {
        slot: Slot<T>,
        value: Bytes,
        created: SystemTime,
    },
    /// A key deleted, purged or expired at `revision`.
    Remove { key: String, revision: u64 },
    /// A catch-up begins and brings this many entries: room for them in advance.
    Coming(u64),
    /// As [`WatchEvent::CaughtUp`].
    CaughtUp(CatchUp),
    /// As [`WatchEvent::StartedOver`].
    StartedOver,
}

/// Turns a view's watch events into changes, on the reader's task.
#[derive(Debug)]
pub(super) struct Preparer {
    /// The next entry is a catch-up's first.
    catch_up_starts: bool,
}

impl Default for Preparer {
    fn default() -> Self {
        Self {
            catch_up_starts: true,
        }
    }
}

impl Preparer {
    /// Appends the changes of `events` to `changes`, in order.
    pub(super) fn prepare<T>(
        &mut self,
        events: impl Iterator<Item = WatchEvent>,
        changes: &mut Vec<Change<T>>,
    ) {
        for event in events {
            match event {
                WatchEvent::Entry(entry) => {
                    if std::mem::take(&mut self.catch_up_starts) {
                        changes.push(Change::Coming(entry.delta().saturating_add(1)));
                    }
                    changes.push(change(entry));
                }
                WatchEvent::CaughtUp(catch_up) => {
                    self.catch_up_starts = false;
                    changes.push(Change::CaughtUp(catch_up));
                }
                WatchEvent::StartedOver => {
                    self.catch_up_starts = true;
                    changes.push(Change::StartedOver);
                }
            }
        }
    }
}

fn change<T>(entry: KvMessage) -> Change<T> {
    let revision = entry.revision();
    if entry.operation() != Operation::Put {
        return Change::Remove {
            key: entry.into_key(),
            revision,
        };
    }
    let value = entry.value().clone();
    let created = entry.created();
    Change::Put {
        // The entry's own key becomes the slot's: no copy.
        slot: Slot::new(entry.into_key().into_boxed_str(), revision),
        value,
        created,
    }
}

/// `Keeper::next_deadline` when there is none.
pub(super) const NO_DEADLINE: u64 = u64::MAX;

/// The keeper's earliest expiry deadline, in nanoseconds since the Unix epoch, and a wake-up
/// for the reader's timer when it moves.
pub(super) struct NextDeadline {
    pub(super) nanos: AtomicU64,
    pub(super) moved: Notify,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::kv::message::MessageParts;

    fn entry(key: &str, value: &'static [u8], revision: u64, pending: u64) -> WatchEvent {
        WatchEvent::Entry(KvMessage::from(MessageParts {
            bucket: std::sync::Arc::from("b"),
            key: key.to_owned(),
            value: Bytes::from_static(value),
            value_size: value.len(),
            revision,
            delta: pending,
            created: time::OffsetDateTime::UNIX_EPOCH,
            operation: if value.is_empty() {
                Operation::Delete
            } else {
                Operation::Put
            },
            headers: None,
        }))
    }

    /// What each change says, for comparing.
    fn describe(change: &Change<u32>) -> String {
        match change {
            Change::Put { slot, value, .. } => {
                assert!(slot.value().is_none());
                let (key, revision) = (&slot.key, slot.revision);
                assert_eq!(slot.hash, crate::kv::view::entries::hash_key(key));
                format!("put {key}={} @{revision}", String::from_utf8_lossy(value))
            }
            Change::Remove { key, revision } => format!("remove {key} @{revision}"),
            Change::Coming(entries) => format!("coming {entries}"),
            Change::CaughtUp(_) => "caught up".to_owned(),
            Change::StartedOver => "started over".to_owned(),
        }
    }

    #[test]
    fn a_catch_up_announces_its_entries_first() {
        let catch_up = CatchUp {
            entries: 2,
            elapsed: Duration::ZERO,
        };
        let events = vec![
            entry("a", b"1", 1, 1),
            entry("c", b"", 2, 0),
            WatchEvent::CaughtUp(catch_up),
            entry("a", b"2", 3, 0),
            WatchEvent::StartedOver,
            entry("d", b"7", 1, 0),
        ];
        let mut changes = Vec::new();
        Preparer::default().prepare(events.into_iter(), &mut changes);
        let described: Vec<_> = changes.iter().map(describe).collect();
        assert_eq!(
            described,
            [
                "coming 2",
                "put a=1 @1",
                "remove c @2",
                "caught up",
                "put a=2 @3",
                "started over",
                "coming 1",
                "put d=7 @1",
            ]
        );
    }
}
