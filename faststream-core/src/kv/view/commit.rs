//! Holding an atomic commit's entries until the view has all of them, so that the keeper
//! applies (and publishes) the commit in one swap.
//!
//! A commit's entries are stored at consecutive revisions and keep their batch headers
//! ([`KvMessage::batch`]); its last one says `Nats-Batch-Commit`. A view's watch may see only
//! some of them (its keys), and a consumer may be handed the first ones while the server is still
//! storing the rest. So the reader holds a commit open from its first entry until:
//! - the commit's last entry arrives; or
//! - an entry of something else arrives (the commit's entries are consecutive: it is whole); or
//! - the latest revision of the view's keys, looked up on the server, is the last one held: the
//!   rest of the commit is of other keys. That lookup (a direct or message get) is isolated from
//!   a commit being stored (nats-server holds the stream's lock, or since 2.14.x its isolation
//!   lock, across the commit), so it sees all of the commit or none of it.

use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;

use crate::kv::message::KvMessage;
use crate::kv::watcher::{HeadLookup, WatchEvent};

/// The first pause after a failed lookup; it doubles, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_millis(500);

/// The commit whose entries are being held, if any.
#[derive(Debug, Default)]
pub(super) struct OpenCommit {
    open: Option<(String, u64)>,
}

impl OpenCommit {
    /// Follows the events in order: an entry of a commit other than its last opens it (or keeps
    /// it open); anything else closes what was open.
    pub(super) fn track(&mut self, event: &WatchEvent) {
        match event {
            WatchEvent::Entry(entry) => self.track_entry(entry),
            WatchEvent::StartedOver => self.open = None,
            WatchEvent::CaughtUp(_) => {}
        }
    }

    fn track_entry(&mut self, entry: &KvMessage) {
        self.open = entry
            .batch()
            .filter(|batch| !batch.is_commit())
            .map(|batch| (batch.id().to_owned(), entry.revision()));
    }

    /// Whether a commit is being held.
    pub(super) fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// The revision of the last entry held of the open commit.
    fn last_revision(&self) -> Option<u64> {
        self.open.as_ref().map(|(_, revision)| *revision)
    }
}

/// How waiting for the rest of an open commit ended.
pub(super) enum Rest {
    /// An event arrived (pushed to the batch; it may have closed the commit).
    Arrived,
    /// The view's keys have nothing more of the commit.
    Whole,
    /// The watch ended.
    Ended,
}

/// Waits for the next event (`next_event`, the watch's), or until a lookup shows that the view's keys have
/// nothing more of the commit `open` holds (then closes it).
pub(super) async fn wait_for_rest<F>(
    open: &mut OpenCommit,
    lookup: &HeadLookup,
    next_event: F,
    batch: &mut Vec<WatchEvent>,
) -> Rest
where
    F: std::future::Future<Output = Option<WatchEvent>>,
{
    let Some(last) = open.last_revision() else {
        return Rest::Whole;
    };
    let mut delay = Duration::ZERO;
    let mut head: Option<BoxFuture<'_, Option<u64>>> = Some(look_up(lookup, delay));
    let event = next_event;
    tokio::pin!(event);
    loop {
        tokio::select! {
            biased;
            event = &mut event => {
                return match event {
                    Some(event) => {
                        open.track(&event);
                        batch.push(event);
                        Rest::Arrived
                    }
                    None => Rest::Ended,
                };
            }
            found = async { head.as_mut()?.await }, if head.is_some() => {
                match found {
                    Some(head_revision) if head_revision == last => {
                        open.open = None;
                        return Rest::Whole;
                    }
                    // Later entries of the view's keys are on their way: wait for them.
                    Some(head_revision) if head_revision > last => head = None,
                    // Failed, or answered by a replica behind this watch: ask again.
                    _ => {
                        delay = if delay.is_zero() { FIRST_RETRY } else { (delay * 2).min(MAX_RETRY) };
                        head = Some(look_up(lookup, delay));
                    }
                }
            }
        }
    }
}

fn look_up(lookup: &HeadLookup, delay: Duration) -> BoxFuture<'_, Option<u64>> {
    async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        lookup.revision().await
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_nats::HeaderMap;

    use super::*;
    use crate::kv::message::{MessageParts, Operation};

    fn entry(revision: u64, batch: Option<(&str, u64, bool)>) -> WatchEvent {
        let headers = batch.map(|(id, sequence, commit)| {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Batch-Id", id);
            headers.insert("Nats-Batch-Sequence", sequence.to_string());
            if commit {
                headers.insert("Nats-Batch-Commit", "1");
            }
            headers
        });
        WatchEvent::Entry(KvMessage::from(MessageParts {
            bucket: Arc::from("b"),
            key: format!("k.{revision}"),
            value: bytes::Bytes::new(),
            value_size: 0,
            revision,
            delta: 0,
            created: time::OffsetDateTime::UNIX_EPOCH,
            operation: Operation::Put,
            headers,
        }))
    }

    #[test]
    fn a_commit_is_open_from_its_first_entry_to_its_last() {
        let mut open = OpenCommit::default();
        open.track(&entry(1, None));
        assert!(!open.is_open());
        open.track(&entry(2, Some(("x", 1, false))));
        assert_eq!(open.last_revision(), Some(2));
        open.track(&entry(3, Some(("x", 2, false))));
        assert_eq!(open.last_revision(), Some(3));
        open.track(&entry(4, Some(("x", 3, true))));
        assert!(!open.is_open());
        // Another commit's entry: the first one is whole (its last write not of these keys).
        open.track(&entry(5, Some(("y", 1, false))));
        open.track(&entry(7, Some(("z", 1, false))));
        assert_eq!(open.open.as_ref().map(|(id, _)| id.as_str()), Some("z"));
        // An entry written alone closes it too, and so does a start over.
        open.track(&entry(9, None));
        assert!(!open.is_open());
        open.track(&entry(10, Some(("w", 1, false))));
        open.track(&WatchEvent::StartedOver);
        assert!(!open.is_open());
    }
}
