//! `KvView<T>`: a read-only map of the keys matching a pattern, kept in sync by one watch.
//!
//! Readers must never wait for the writer, so the view's state is a persistent (structurally
//! shared) map behind an atomic pointer: a read loads the pointer and looks the key up, taking
//! no lock; the keeper applies a batch of entries to its own copy (which shares every untouched
//! part with the published one: `entries.rs`) and publishes it with one pointer swap. A
//! snapshot is that pointer: consistent with the revision it reflects, for as long as it is
//! held.
//!
//! What leaves the view: deletes, purges and expiries (the markers of nats-server 2.11+), and
//! values that fail to decode. On a bucket with a `ttl` but no limit markers the server says
//! nothing when a key ages out, so the view drops keys older than the `ttl` itself, going by the
//! server's timestamp of each entry (clock skew between the server and this host shifts it).
//! After the bucket's stream is replaced (deleted and created again), the view goes on showing
//! the old state while it loads the new one, then switches to it whole.
//!
//! A handler given a view of the bucket its entry came from gets it once the view has passed
//! the entry's stream position (`position.rs`).
//!
//! Reading the watch and applying its entries run side by side, handing over batches: the
//! reader is a task on the caller's runtime (it owns the watch, the expiry timer and notices
//! when every clone of the view is gone, and turns each entry into what the map needs of it:
//! `handover.rs`); the keeper, which decodes the values and builds the map, runs on a thread of
//! its own, so that the two overlap (a task woken by another runs after it on the same worker,
//! so two tasks would not) and a slow decoder holds the view back, nothing else.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch, Notify};

mod commit;
mod decode;
mod entries;
mod handover;
mod keeper;
mod options;
mod position;
mod reader;
mod snapshot;
mod state;

pub(crate) use decode::{json, raw, Decode};
use handover::{NextDeadline, Preparer, BATCHES_AHEAD, NO_DEADLINE};
use keeper::Keeper;
pub use options::{KvViewOptions, DEFAULT_VIEW_CATCH_UP_TIMEOUT};
use position::Progress;
pub use position::ViewBehind;
use reader::Reader;
pub use snapshot::KvViewSnapshot;
use state::{PublishedView, ViewState};

use crate::error::WatchError;
use crate::kv::watcher::{KvWatcher, WatchStatus};

/// A read-only, always-current map of the keys matching a pattern in one bucket, decoded into
/// `T`, kept in sync by one watch. Cheap to clone: clones share the map and the watch, which
/// stops when the last clone is dropped.
///
/// Reads (`get`, `len`, `snapshot`, ...) take no lock and make no request: they read the state
/// the watch last published. Get one with [`NatsBroker::kv_view`](crate::NatsBroker::kv_view)
/// (JSON values), `kv_view_raw` (bytes) or `kv_view_decoded` (your decoder), which return once
/// the view holds the bucket's state; or declare it with
/// [`App::with_kv_view`](crate::App::with_kv_view) and take it as a handler or hook argument
/// (a handler is given it once it has passed the handler's entry, when it views the same
/// bucket: see the [guide](crate::guide::bucket_state#a-handlers-view-is-not-behind-its-entry)).
///
/// A key is absent (`get` returns `None`) when it has no value: never written, deleted,
/// purged, expired, or its latest value does not decode into `T` (logged with key and
/// revision; the key's earlier value is not kept, so the view never shows a stale value).
///
/// ```no_run
/// # async fn demo(broker: faststream_core::NatsBroker) -> anyhow::Result<()> {
/// use faststream_core::KvView;
///
/// #[derive(serde::Deserialize)]
/// struct Flag {
///     enabled: bool,
/// }
///
/// let mut flags: KvView<Flag> = broker.kv_view("flags", ">").await?; // once caught up
/// if flags.get("checkout.new-ui").is_some_and(|flag| flag.enabled) {
///     // ...
/// }
/// flags.changed().await?; // the next change
/// println!("{} flags at revision {}", flags.len(), flags.revision());
/// # Ok(())
/// # }
/// ```
pub struct KvView<T> {
    published: Arc<PublishedView<T>>,
    changes: watch::Receiver<()>,
}

/// The view's watch has ended (the connection closed for good); the view keeps its last state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the view's watch has ended: the NATS connection is closed")]
pub struct ViewClosed;

impl<T: Send + Sync + 'static> KvView<T> {
    /// Starts keeping a view with `watcher` (a reading task and a keeping thread); `ttl` is the
    /// bucket's, when the server does not report expiries itself.
    pub(crate) fn start(
        watcher: KvWatcher,
        pattern: String,
        decode: Decode<T>,
        ttl: Option<Duration>,
    ) -> Result<Self, WatchError> {
        let (changes_sender, changes) = watch::channel(());
        let (ready_sender, ready) = watch::channel(false);
        let published = Arc::new(PublishedView {
            bucket: Arc::from(watcher.bucket()),
            pattern,
            state: ArcSwap::from_pointee(ViewState::default()),
            status: watcher.status(),
            ready,
            progress: Progress::new(watcher.head_lookup(), watcher.timeout()),
        });
        let changes_sender = Arc::new(changes_sender);
        let next_deadline = Arc::new(NextDeadline {
            nanos: AtomicU64::new(NO_DEADLINE),
            moved: Notify::new(),
        });
        let (inputs, received) = mpsc::channel(BATCHES_AHEAD);
        let keeper = Keeper::new(
            Arc::clone(&published),
            decode,
            ttl,
            Arc::clone(&changes_sender),
            ready_sender,
            Arc::clone(&next_deadline),
        );
        let reader = Reader {
            inputs,
            preparer: Preparer::default(),
            views: changes_sender,
            next_deadline,
        };
        std::thread::Builder::new()
            .name("faststream-view".to_owned())
            .spawn(move || keeper.run(received))
            .map_err(WatchError::ViewThread)?;
        tokio::spawn(reader.run(watcher));
        Ok(Self { published, changes })
    }
}

impl<T> KvView<T> {
    /// Waits until the view holds the bucket's state.
    pub(crate) async fn wait_caught_up(&self) -> Result<(), WatchError> {
        let mut ready = self.published.ready.clone();
        let caught_up = ready.wait_for(|ready| *ready).await.is_ok();
        if caught_up {
            Ok(())
        } else {
            Err(WatchError::ClosedBeforeCaughtUp)
        }
    }

    /// Set to `true` once the view holds the bucket's state.
    pub(crate) fn ready(&self) -> watch::Receiver<bool> {
        self.published.ready.clone()
    }

    /// The value of `key`; `None` if the key has no value (see the type's docs).
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.published
            .state
            .load()
            .entries
            .get(key)
            .and_then(|slot| slot.value().cloned())
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.published.state.load().entries.contains_key(key)
    }

    /// How many keys have a value.
    pub fn len(&self) -> usize {
        self.published.state.load().entries.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.published.state.load().entries.is_empty()
    }

    /// The revision of the last entry the view reflects (0 before any).
    pub fn revision(&self) -> u64 {
        self.published.state.load().revision
    }

    /// The keys with a value, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.snapshot().keys()
    }

    /// The whole map as it is now: consistent (one revision) and unchanged for as long as it is
    /// held, whatever the watch applies meanwhile. Taking one costs a pointer copy.
    pub fn snapshot(&self) -> KvViewSnapshot<T> {
        KvViewSnapshot {
            state: self.published.state.load_full(),
        }
    }

    /// Waits for the next change of the view: returns at once if it changed since this clone
    /// last called `changed` (or was made), else when the watch next publishes. `Err` once the
    /// watch has ended (the connection closed for good).
    pub async fn changed(&mut self) -> Result<(), ViewClosed> {
        self.changes.changed().await.map_err(|_| ViewClosed)
    }

    /// The bucket viewed.
    pub fn bucket(&self) -> &str {
        &self.published.bucket
    }

    /// The key pattern viewed.
    pub fn pattern(&self) -> &str {
        &self.published.pattern
    }

    /// The view's watch: caught up, lag, phase.
    pub fn status(&self) -> &WatchStatus {
        &self.published.status
    }
}

impl<T> Clone for KvView<T> {
    fn clone(&self) -> Self {
        Self {
            published: Arc::clone(&self.published),
            changes: self.changes.clone(),
        }
    }
}

impl<T> fmt::Debug for KvView<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.published.state.load();
        f.debug_struct("KvView")
            .field("bucket", &self.published.bucket)
            .field("pattern", &self.published.pattern)
            .field("keys", &state.entries.len())
            .field("revision", &state.revision)
            .finish()
    }
}
