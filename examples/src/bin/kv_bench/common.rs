//! What every workload shares: the server's address, the bucket the registered subscribers
//! watch, the counter a consumer's handler advances, the JSON flag values and a small random
//! number generator.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Notify;

/// How long any consumer, writer or child waits before the run counts as failed.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// The server, `NATS_URL` or faststream-core's default.
pub fn url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| faststream_core::DEFAULT_NATS_URL.to_owned())
}

/// The bucket the registered subscribers watch (set from the command line of a child).
static BUCKET: OnceLock<String> = OnceLock::new();

/// The bucket set with [`set_bucket`], empty before.
pub fn bucket() -> String {
    BUCKET.get().cloned().unwrap_or_default()
}

/// Sets the bucket of this process once; later calls keep the first.
pub fn set_bucket(bucket: &str) {
    let _ = BUCKET.set(bucket.to_owned());
}

/// Counts handled entries and wakes the benchmark at the target.
pub struct Progress {
    handled: AtomicUsize,
    target: usize,
    /// Notified once, when the target is reached.
    pub done: Notify,
}

impl Progress {
    /// A counter at 0 that wakes `done` at `target`.
    pub fn new(target: usize) -> Self {
        Self {
            handled: AtomicUsize::new(0),
            target,
            done: Notify::new(),
        }
    }

    /// Counts one entry.
    pub fn handled_one(&self) {
        if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == self.target {
            self.done.notify_one();
        }
    }
}

/// The value of every key in the view and membership workloads, e.g. `{"enabled":true,"n":123}`.
#[derive(serde::Deserialize)]
pub struct Flag {
    /// Read by the view's readers, so that a get is not optimised away.
    pub enabled: bool,
    /// Likewise.
    pub n: u64,
}

/// The JSON of a [`Flag`] with `n`.
pub fn flag_json(n: u64) -> bytes::Bytes {
    format!(r#"{{"enabled":true,"n":{n}}}"#).into()
}

/// A small xorshift generator: random keys without a dependency, a few cycles per number.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
