//! Waiting at start-up until the watches and views have caught up.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::kv::watcher::WatchStatus;

/// A watch or view that start-up may wait for: what it is, where it stands, and whether it
/// has caught up (for a subscriber: handled its bucket's state; for a view: holds it).
pub(super) struct CatchUpWait {
    pub(super) description: String,
    /// `None` for a group member, which waits only to join.
    pub(super) status: Option<WatchStatus>,
    pub(super) done: tokio::sync::watch::Receiver<bool>,
}

/// Waits until every one of `waits` has caught up, up to `timeout`; the error names each one
/// still behind and how far.
pub(super) async fn wait_for_catch_up<'a>(
    waits: impl Iterator<Item = &'a CatchUpWait> + Clone,
    timeout: Duration,
) -> Result<()> {
    let all_done = futures_util::future::join_all(waits.clone().map(|wait| {
        let mut done = wait.done.clone();
        async move {
            // An error means the watch ended (connection closed for good): nothing to wait for.
            let _ = done.wait_for(|done| *done).await;
        }
    }));
    if tokio::time::timeout(timeout, all_done).await.is_ok() {
        return Ok(());
    }
    let behind = waits
        .filter(|wait| !*wait.done.borrow())
        .map(|wait| {
            let Some(status) = &wait.status else {
                return format!("{}: has not joined its group", wait.description);
            };
            let behind = if status.is_caught_up() {
                format!(
                    "read its bucket's state, still handling it ({:?})",
                    status.phase()
                )
            } else {
                status.behind()
            };
            format!("{}: {behind}", wait.description)
        })
        .collect();
    Err(Error::CatchUpTimeout { timeout, behind })
}
