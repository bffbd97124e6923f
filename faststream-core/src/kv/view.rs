//! `KvView<T>`: a read-only map of the keys matching a pattern, kept in sync by one watch.
//!
//! Readers must never wait for the writer, so the view's state is a persistent (structurally
//! shared) map behind an atomic pointer: a read loads the pointer and looks the key up, taking
//! no lock; the watch's task applies a batch of entries to its own copy (which shares every
//! untouched node with the published one) and publishes it with one pointer swap. A snapshot is
//! that pointer: consistent with the revision it reflects, for as long as it is held.
//!
//! What leaves the view: deletes, purges and expiries (the markers of nats-server 2.11+), and
//! values that fail to decode. On a bucket with a `ttl` but no limit markers the server says
//! nothing when a key ages out, so the view drops keys older than the `ttl` itself, going by the
//! server's timestamp of each entry (clock skew between the server and this host shifts it).
//! After the bucket's stream is replaced (deleted and created again), the view goes on showing
//! the old state while it loads the new one, then switches to it whole.
//!
//! Reading the watch and applying its entries run side by side, handing over batches: the
//! reader is a task on the caller's runtime (it owns the watch, the expiry timer and notices
//! when every clone of the view is gone); the keeper, which decodes and builds the map, runs on
//! a thread of its own, so that a catch-up takes about as long as the watch alone rather than
//! the sum of both (a task woken by another runs after it on the same worker, so two tasks
//! would not overlap).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::FutureExt as _;
use tokio::sync::{mpsc, watch, Notify};

use super::message::{KvMessage, Operation};
use super::watcher::{KvWatcher, WatchEvent, WatchStatus};
use crate::error::{chain, BoxError, WatchError};

/// How many entries already received are handed over (and applied before the state is
/// published) at once.
const MAX_BATCH: usize = 512;
/// Batches read ahead of the one being applied.
const BATCHES_AHEAD: usize = 8;

/// Turns a value into the view's value type.
pub(crate) type Decode<T> = Arc<dyn Fn(&Bytes) -> Result<T, BoxError> + Send + Sync>;

/// Values decoded from JSON, as `Json<T>` does for handlers.
pub(crate) fn json<T: serde::de::DeserializeOwned>() -> Decode<T> {
    Arc::new(|value: &Bytes| serde_json::from_slice(value).map_err(BoxError::from))
}

/// Values as they are.
pub(crate) fn raw() -> Decode<Bytes> {
    Arc::new(|value: &Bytes| Ok(value.clone()))
}

/// A read-only, always-current map of the keys matching a pattern in one bucket, decoded into
/// `T`, kept in sync by one watch. Cheap to clone: clones share the map and the watch, which
/// stops when the last clone is dropped.
///
/// Reads (`get`, `len`, `snapshot`, ...) take no lock and make no request: they read the state
/// the watch last published. Get one with [`NatsBroker::kv_view`](crate::NatsBroker::kv_view)
/// (JSON values), `kv_view_raw` (bytes) or `kv_view_decoded` (your decoder), which return once
/// the view holds the bucket's state; or declare it with
/// [`App::with_kv_view`](crate::App::with_kv_view) and take it as a handler or hook argument.
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
    shared: Arc<Shared<T>>,
    changes: watch::Receiver<()>,
}

struct Shared<T> {
    bucket: Arc<str>,
    pattern: String,
    state: ArcSwap<ViewState<T>>,
    status: WatchStatus,
    /// `true` once the view holds the bucket's state.
    ready: watch::Receiver<bool>,
}

/// The view's map and the revision it reflects.
struct ViewState<T> {
    entries: imbl::HashMap<Arc<str>, Slot<T>>,
    revision: u64,
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
            entries: imbl::HashMap::new(),
            revision: 0,
        }
    }
}

/// One key's value, and its revision (which tells an expiry deadline still applies).
struct Slot<T> {
    value: Arc<T>,
    revision: u64,
}

impl<T> Clone for Slot<T> {
    fn clone(&self) -> Self {
        Self {
            value: Arc::clone(&self.value),
            revision: self.revision,
        }
    }
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
        let shared = Arc::new(Shared {
            bucket: Arc::from(watcher.bucket()),
            pattern,
            state: ArcSwap::from_pointee(ViewState::default()),
            status: watcher.status(),
            ready,
        });
        let changes_sender = Arc::new(changes_sender);
        let next_deadline = Arc::new(NextDeadline {
            nanos: AtomicU64::new(NO_DEADLINE),
            moved: Notify::new(),
        });
        let (inputs, received) = mpsc::channel(BATCHES_AHEAD);
        let keeper = Keeper {
            shared: Arc::clone(&shared),
            decode,
            working: ViewState::default(),
            expiry: ttl.map(|ttl| Expiry {
                ttl,
                deadlines: BinaryHeap::new(),
            }),
            caught_up: false,
            changes: Arc::clone(&changes_sender),
            ready: ready_sender,
            next_deadline: Arc::clone(&next_deadline),
        };
        let reader = Reader {
            inputs,
            views: changes_sender,
            next_deadline,
        };
        std::thread::Builder::new()
            .name("faststream-view".to_owned())
            .spawn(move || keeper.run(received))
            .map_err(WatchError::ViewThread)?;
        tokio::spawn(reader.run(watcher));
        Ok(Self { shared, changes })
    }
}

impl<T> KvView<T> {
    /// Waits until the view holds the bucket's state.
    pub(crate) async fn wait_caught_up(&self) -> Result<(), WatchError> {
        let mut ready = self.shared.ready.clone();
        let caught_up = ready.wait_for(|ready| *ready).await.is_ok();
        if caught_up {
            Ok(())
        } else {
            Err(WatchError::ClosedBeforeCaughtUp)
        }
    }

    /// Set to `true` once the view holds the bucket's state.
    pub(crate) fn ready(&self) -> watch::Receiver<bool> {
        self.shared.ready.clone()
    }

    /// The value of `key`; `None` if the key has no value (see the type's docs).
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.shared
            .state
            .load()
            .entries
            .get(key)
            .map(|slot| Arc::clone(&slot.value))
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> bool {
        self.shared.state.load().entries.contains_key(key)
    }

    /// How many keys have a value.
    pub fn len(&self) -> usize {
        self.shared.state.load().entries.len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.shared.state.load().entries.is_empty()
    }

    /// The revision of the last entry the view reflects (0 before any).
    pub fn revision(&self) -> u64 {
        self.shared.state.load().revision
    }

    /// The keys with a value, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.snapshot().keys()
    }

    /// The whole map as it is now: consistent (one revision) and unchanged for as long as it is
    /// held, whatever the watch applies meanwhile. Taking one costs a pointer copy.
    pub fn snapshot(&self) -> KvViewSnapshot<T> {
        KvViewSnapshot {
            state: self.shared.state.load_full(),
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
        &self.shared.bucket
    }

    /// The key pattern viewed.
    pub fn pattern(&self) -> &str {
        &self.shared.pattern
    }

    /// The view's watch: caught up, lag, phase.
    pub fn status(&self) -> &WatchStatus {
        &self.shared.status
    }
}

impl<T> Clone for KvView<T> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            changes: self.changes.clone(),
        }
    }
}

impl<T> fmt::Debug for KvView<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.load();
        f.debug_struct("KvView")
            .field("bucket", &self.shared.bucket)
            .field("pattern", &self.shared.pattern)
            .field("keys", &state.entries.len())
            .field("revision", &state.revision)
            .finish()
    }
}

/// A [`KvView`]'s map at one revision.
pub struct KvViewSnapshot<T> {
    state: Arc<ViewState<T>>,
}

impl<T> KvViewSnapshot<T> {
    /// The value of `key` in this snapshot.
    pub fn get(&self, key: &str) -> Option<&Arc<T>> {
        self.state.entries.get(key).map(|slot| &slot.value)
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
            .keys()
            .map(|key| key.to_string())
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Every key and value, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<T>)> + '_ {
        self.state
            .entries
            .iter()
            .map(|(key, slot)| (&**key, &slot.value))
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

/// What the reader hands the keeper.
enum Input {
    /// Events read from the watch, in order.
    Events(Vec<WatchEvent>),
    /// The earliest expiry deadline has passed.
    Expire,
}

/// `Keeper::next_deadline` when there is none.
const NO_DEADLINE: u64 = u64::MAX;

/// The task reading a view's watch for its keeper.
struct Reader {
    inputs: mpsc::Sender<Input>,
    /// The views' change channel: closed once every clone of the view is gone.
    views: Arc<watch::Sender<()>>,
    next_deadline: Arc<NextDeadline>,
}

/// The keeper's earliest expiry deadline, in nanoseconds since the Unix epoch, and a wake-up
/// for the reader's timer when it moves.
struct NextDeadline {
    nanos: AtomicU64,
    moved: Notify,
}

/// The thread keeping a view: applies the watch's entries and publishes the state.
struct Keeper<T> {
    shared: Arc<Shared<T>>,
    decode: Decode<T>,
    /// The state being built; published by a (cheap, structurally shared) clone.
    working: ViewState<T>,
    expiry: Option<Expiry>,
    /// Publishing waits for the first catch-up, and for the catch-up after a start over, so
    /// readers never see half a state.
    caught_up: bool,
    changes: Arc<watch::Sender<()>>,
    ready: watch::Sender<bool>,
    /// Its earliest expiry deadline, for the reader's timer.
    next_deadline: Arc<NextDeadline>,
}

/// Keys to drop when they outlive the bucket's `ttl`, by deadline (lazily: a key rewritten
/// since has another revision and is left alone).
struct Expiry {
    ttl: Duration,
    deadlines: BinaryHeap<Reverse<(SystemTime, u64, Arc<str>)>>,
}

impl Reader {
    /// Reads the watch in batches (whatever has arrived, up to [`MAX_BATCH`]) for the keeper,
    /// and tells it when an expiry deadline passes; ends with the watch, or once every clone of
    /// the view is gone (dropping the watcher deletes its consumer, and the keeper's thread
    /// ends with the channel).
    async fn run(self, mut watcher: KvWatcher) {
        let mut expired_at = NO_DEADLINE;
        loop {
            let deadline = self.next_deadline.nanos.load(Ordering::Acquire);
            // Told once per deadline: the keeper moves it on when it has expired what is due.
            let timer = (deadline != NO_DEADLINE && deadline != expired_at).then_some(deadline);
            let first = tokio::select! {
                biased;
                () = self.views.closed() => return,
                () = self.next_deadline.moved.notified() => continue,
                () = sleep_until(timer), if timer.is_some() => {
                    expired_at = deadline;
                    if self.inputs.send(Input::Expire).await.is_err() {
                        return;
                    }
                    continue;
                }
                event = watcher.next_event() => event,
            };
            let Some(first) = first else { return };
            let mut batch = Vec::with_capacity(MAX_BATCH);
            batch.push(first);
            let mut ended = false;
            while batch.len() < MAX_BATCH {
                match watcher.next_event().now_or_never() {
                    Some(Some(event)) => batch.push(event),
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            if self.inputs.send(Input::Events(batch)).await.is_err() || ended {
                return;
            }
        }
    }
}

impl<T: Send + Sync + 'static> Keeper<T> {
    fn run(mut self, mut inputs: mpsc::Receiver<Input>) {
        while let Some(input) = inputs.blocking_recv() {
            let changed = match input {
                Input::Events(batch) => {
                    let mut changed = false;
                    for event in batch {
                        changed |= self.apply(event);
                    }
                    changed
                }
                Input::Expire => self.expire(),
            };
            if changed && self.caught_up {
                self.publish();
            }
            let deadline = self
                .expiry
                .as_ref()
                .and_then(Expiry::next_deadline)
                .and_then(|deadline| deadline.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(NO_DEADLINE, |since| {
                    u64::try_from(since.as_nanos()).unwrap_or(NO_DEADLINE)
                });
            if self.next_deadline.nanos.swap(deadline, Ordering::AcqRel) != deadline {
                self.next_deadline.moved.notify_one();
            }
        }
        tracing::debug!(bucket = %self.shared.bucket, pattern = %self.shared.pattern,
            "view stopped");
    }

    /// Applies one event; `true` if the state changed.
    fn apply(&mut self, event: WatchEvent) -> bool {
        match event {
            WatchEvent::Entry(entry) => {
                self.apply_entry(&entry);
                true
            }
            WatchEvent::CaughtUp(catch_up) => {
                self.caught_up = true;
                tracing::info!(bucket = %self.shared.bucket, pattern = %self.shared.pattern,
                    keys = self.working.entries.len(), entries = catch_up.entries,
                    elapsed = ?catch_up.elapsed,
                    "view of `{}` in bucket `{}` caught up: {} keys from {} entries in {:?}",
                    self.shared.pattern, self.shared.bucket, self.working.entries.len(),
                    catch_up.entries, catch_up.elapsed);
                self.publish();
                self.ready.send_replace(true);
                false
            }
            WatchEvent::StartedOver => {
                // Built afresh from the new stream; readers keep the old state meanwhile.
                self.caught_up = false;
                self.working = ViewState::default();
                if let Some(expiry) = self.expiry.as_mut() {
                    expiry.deadlines.clear();
                }
                false
            }
        }
    }

    fn apply_entry(&mut self, entry: &KvMessage) {
        let key = entry.key();
        let revision = entry.revision();
        self.working.revision = revision;
        if entry.operation() != Operation::Put {
            self.working.entries.remove(key);
            return;
        }
        // A decoder that panics fails that value, not the view.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.decode)(entry.value())
        }))
        .unwrap_or_else(|_| Err("the decoder panicked".into()));
        let value = match decoded {
            Ok(value) => Arc::new(value),
            Err(error) => {
                tracing::warn!(bucket = %self.shared.bucket, key, revision,
                    error = %chain(&*error),
                    "{key} | {revision} - the value does not decode; the key is left out of the \
                     view until a value that does");
                self.working.entries.remove(key);
                return;
            }
        };
        // A fresh key costs an allocation; looking the old one up to share it costs more.
        let key: Arc<str> = Arc::from(key);
        if let Some(expiry) = self.expiry.as_mut() {
            expiry.track(&key, revision, entry.created());
        }
        self.working.entries.insert(key, Slot { value, revision });
        if let Some(expiry) = self.expiry.as_mut() {
            // Rewritten keys leave stale deadlines behind; keep them to about the live keys.
            if expiry.deadlines.len() > 2 * self.working.entries.len() + 1024 {
                expiry.drop_stale(&self.working.entries);
            }
        }
    }

    /// Drops keys past the bucket's `ttl`; `true` if any was.
    fn expire(&mut self) -> bool {
        let Some(expiry) = self.expiry.as_mut() else {
            return false;
        };
        let now = SystemTime::now();
        let mut expired = false;
        while let Some(Reverse((deadline, revision, key))) = expiry.deadlines.peek() {
            if *deadline > now {
                break;
            }
            if self
                .working
                .entries
                .get(&**key)
                .is_some_and(|slot| slot.revision == *revision)
            {
                self.working.entries.remove(&**key);
                expired = true;
            }
            expiry.deadlines.pop();
        }
        expired
    }

    fn publish(&mut self) {
        self.shared.state.store(Arc::new(self.working.clone()));
        self.changes.send_replace(());
    }
}

impl Expiry {
    fn track(&mut self, key: &Arc<str>, revision: u64, created: SystemTime) {
        self.deadlines
            .push(Reverse((created + self.ttl, revision, Arc::clone(key))));
    }

    /// Keeps only the deadlines of the keys' current revisions.
    fn drop_stale<T>(&mut self, entries: &imbl::HashMap<Arc<str>, Slot<T>>) {
        self.deadlines.retain(|Reverse((_, revision, key))| {
            entries
                .get(&**key)
                .is_some_and(|slot| slot.revision == *revision)
        });
    }

    fn next_deadline(&self) -> Option<SystemTime> {
        self.deadlines
            .peek()
            .map(|Reverse((deadline, _, _))| *deadline)
    }
}

/// Sleeps until `deadline` (nanoseconds since the Unix epoch) by the system clock: the
/// server's timestamps are wall-clock time.
async fn sleep_until(deadline: Option<u64>) {
    let wait = deadline
        .map(|nanos| SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
        .and_then(|deadline| deadline.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
}
