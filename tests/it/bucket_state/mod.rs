//! Bucket state: a watch knows when it has delivered the bucket's state (caught up), the app can
//! hold its `after_startup` hooks until every subscriber has handled it, and `KvView` keeps a
//! live, typed map of a bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::EVENT_TIMEOUT;
use crate::common::{
    connected_broker, jetstream, on_each_server, on_each_server_before_and_since,
    on_each_server_since, startup_error, Events, RunningApp,
};
use anyhow::Context as _;
use faststream_core::kv::{BucketConfig, WatchEvent};
use faststream_core::{App, Error, KvView, KvWatch, State};
use futures_util::StreamExt as _;
use serde::Deserialize;

/// Writes `keys` keys (`k.0`, `k.1`, ...) `revisions` times each, pipelined; returns the last
/// revision.
async fn fill(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    keys: u64,
    revisions: u64,
) -> anyhow::Result<u64> {
    let messages = (0..revisions).flat_map(|round| {
        (0..keys).map(move |key| (format!("$KV.{bucket}.k.{key}"), format!("{round}").into()))
    });
    crate::common::publish_all(js, messages).await
}

/// Reads events until the watch is caught up; returns the entries read and the catch-up.
async fn read_until_caught_up(
    watcher: &mut faststream_core::KvWatcher,
) -> anyhow::Result<(u64, faststream_core::kv::CatchUp)> {
    let mut entries = 0;
    let caught_up = tokio::time::timeout(EVENT_TIMEOUT * 2, async {
        loop {
            match watcher.next_event().await {
                Some(WatchEvent::Entry(_)) => entries += 1,
                Some(WatchEvent::CaughtUp(catch_up)) => return Ok(catch_up),
                Some(other) => anyhow::bail!("unexpected event {other:?}"),
                None => anyhow::bail!("the watch ended"),
            }
        }
    })
    .await
    .context("no catch-up")??;
    Ok((entries, caught_up))
}

mod startup {
    use super::*;

    /// Handles slowly, so that an app not waiting for the catch-up would run its hooks first.
    pub async fn slow_count(State(handled): State<Arc<AtomicU64>>) {
        tokio::time::sleep(Duration::from_micros(100)).await;
        handled.fetch_add(1, Ordering::SeqCst);
    }

    pub async fn record_handled(
        State(handled): State<Arc<AtomicU64>>,
        State(events): State<Events>,
    ) {
        events.push(format!(
            "after_startup saw {}",
            handled.load(Ordering::SeqCst)
        ));
    }

    pub async fn never_returns() {
        std::future::pending::<()>().await;
    }
}

#[derive(Debug, Deserialize, PartialEq)]
struct Flag {
    enabled: bool,
}

/// Waits until `done` holds for the view, checking at each change.
async fn wait_for_view<T>(
    view: &mut KvView<T>,
    what: &str,
    done: impl Fn(&KvView<T>) -> bool,
) -> anyhow::Result<()> {
    tokio::time::timeout(EVENT_TIMEOUT, async {
        while !done(view) {
            view.changed().await?;
        }
        anyhow::Ok(())
    })
    .await
    .with_context(|| format!("waiting for {what}: {view:?}"))?
}

mod with_views {
    use super::*;

    pub async fn on_order(order: String, flags: KvView<Flag>, State(events): State<Events>) {
        let audited = flags.get("audit").is_some_and(|flag| flag.enabled);
        events.push(format!("{order} audited={audited}"));
    }

    pub async fn started(flags: KvView<Flag>, State(events): State<Events>) {
        events.push(format!("started with {} flags", flags.len()));
    }

    pub async fn too_early(_flags: KvView<Flag>) {}
}

mod catch_up;
mod handler_views;
mod paged_catch_up;
mod unconfirmed;
mod views;
