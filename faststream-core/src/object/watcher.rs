//! `ObjWatcher`: the changes of one object store, in order, as a `Stream`.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::Stream;

use crate::kv::watcher::{KvWatcher, WatchStatus};
use crate::object::ObjMessage;

/// A watch of one object store: yields each object's change (put or deleted) in revision
/// order, re-creating itself after connection losses, server restarts and gaps without losing
/// or repeating a change, and starting over on a store deleted and created again: it is a
/// [`KvWatcher`] of the store's metadata subjects, with everything that type promises.
///
/// Metadata that is not an object's (written by hand to the store's subjects) is logged and
/// passed over. Get one with [`NatsBroker::obj_watch`](crate::NatsBroker::obj_watch).
pub struct ObjWatcher {
    watcher: KvWatcher,
    ignore_deletes: bool,
}

impl ObjWatcher {
    pub(crate) fn new(watcher: KvWatcher, ignore_deletes: bool) -> Self {
        Self {
            watcher,
            ignore_deletes,
        }
    }

    /// The object store watched.
    pub fn bucket(&self) -> &str {
        self.watcher.bucket()
    }

    /// The revision of the last change read from the server, if any.
    pub fn last_revision(&self) -> Option<u64> {
        self.watcher.last_revision()
    }

    /// Whether the watch has delivered the store's state as of its start (see
    /// [`KvWatcher::is_caught_up`]).
    pub fn is_caught_up(&self) -> bool {
        self.watcher.is_caught_up()
    }

    /// A handle on this watch's progress (caught up, lag, phase) for other tasks.
    pub fn status(&self) -> WatchStatus {
        self.watcher.status()
    }

    /// The next change; `None` only once the connection is closed for good. Cancel-safe, like
    /// [`KvWatcher::next`].
    pub async fn next(&mut self) -> Option<ObjMessage> {
        std::future::poll_fn(|cx| self.poll_change(cx)).await
    }

    /// The next change if one arrives within `timeout` (FastStream's `get_one`).
    pub async fn get_one(&mut self, timeout: Duration) -> Option<ObjMessage> {
        tokio::time::timeout(timeout, self.next())
            .await
            .ok()
            .flatten()
    }

    fn poll_change(&mut self, cx: &mut Context<'_>) -> Poll<Option<ObjMessage>> {
        loop {
            let Some(meta) = ready!(Pin::new(&mut self.watcher).poll_next(cx)) else {
                return Poll::Ready(None);
            };
            match ObjMessage::from_watched(&meta, self.ignore_deletes) {
                Ok(Some(object)) => return Poll::Ready(Some(object)),
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(bucket = meta.bucket(), revision = meta.revision(),
                        error = %crate::error::chain(&error),
                        "object watch: metadata is not an object's; passed over");
                }
            }
        }
    }
}

/// The changes, as [`next`](ObjWatcher::next) yields them: the stream ends only once the
/// connection is closed for good.
impl Stream for ObjWatcher {
    type Item = ObjMessage;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ObjMessage>> {
        self.get_mut().poll_change(cx)
    }
}

impl std::fmt::Debug for ObjWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjWatcher")
            .field("watcher", &self.watcher)
            .field("ignore_deletes", &self.ignore_deletes)
            .finish()
    }
}
