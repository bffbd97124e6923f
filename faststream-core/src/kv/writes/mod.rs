//! Writes that cannot lose an update: JSON values, read-modify-write retried on a conflict,
//! write-back from a handler only if its key has not changed, and atomic commits of several
//! keys (ADR-50 atomic batch publish, nats-server 2.12+).
//!
//! Everything here stands on one server primitive: a write carrying
//! `Nats-Expected-Last-Subject-Sequence` is stored only if the key's last revision (a delete
//! marker counts; 0 means no entry at all) is the one expected, else refused with JetStream
//! error 10071 `wrong last sequence: <current>`.

use std::hash::{BuildHasher as _, Hasher as _};
use std::time::Duration;

mod atomic;
mod commit;
mod conflict;
mod modify;
mod typed;

pub use atomic::{Committed, KvBatch, MAX_ATOMIC_WRITES};

/// How many times [`KeyValue::modify`](crate::KeyValue::modify) reads and writes a key before
/// giving up with [`Error::TooManyConflicts`](crate::Error::TooManyConflicts), unless
/// [`ConflictRetry::attempts`] says otherwise.
pub const DEFAULT_CONFLICT_ATTEMPTS: u32 = 10;

/// The first pause after a conflict, before jitter; it doubles up to [`DEFAULT_MAX_BACKOFF`].
const DEFAULT_FIRST_BACKOFF: Duration = Duration::from_millis(1);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_millis(50);

/// How a read-modify-write retries when the key changed between its read and its write: at most
/// [`attempts`](Self::attempts) reads and writes; the first retry at once (under light
/// contention it nearly always succeeds), then after a jittered backoff (after the n-th conflict
/// in a row, between half and all of `first * 2^(n-2)`, at most `max`), so that writers
/// contending for one key spread out instead of colliding again in step.
///
/// Set it per handle with [`KeyValue::with_conflict_retry`](crate::KeyValue::with_conflict_retry).
/// It also bounds how often an atomic commit is sent again when the server had too many
/// commits in flight (JetStream error 10210).
///
/// ```
/// use std::time::Duration;
/// use faststream_core::kv::{ConflictRetry, DEFAULT_CONFLICT_ATTEMPTS};
///
/// let retry = ConflictRetry::new();
/// assert_eq!(retry.max_attempts(), DEFAULT_CONFLICT_ATTEMPTS);
/// let patient = retry.attempts(100).backoff(Duration::from_millis(5), Duration::from_secs(1));
/// assert_eq!(patient.max_attempts(), 100);
/// assert_eq!(ConflictRetry::new().attempts(0).max_attempts(), 1); // at least one
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictRetry {
    attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
}

impl ConflictRetry {
    /// [`DEFAULT_CONFLICT_ATTEMPTS`] attempts; the first retry at once, then a backoff from
    /// 1 ms doubling up to 50 ms.
    pub const fn new() -> Self {
        Self {
            attempts: DEFAULT_CONFLICT_ATTEMPTS,
            first_backoff: DEFAULT_FIRST_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// At most `attempts` reads and writes (at least 1: 1 means no retry).
    #[must_use]
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The backoff after the second conflict in a row (`first`, jittered), doubling with each
    /// further one up to `max` (the first conflict is retried at once).
    #[must_use]
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.first_backoff = first;
        self.max_backoff = max.max(first);
        self
    }

    /// The most reads and writes one call makes.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// The pause after the `conflicts`-th conflict in a row (from 1): none after the first,
    /// then jittered, between half and all of `first * 2^(conflicts-2)`, at most `max`. For
    /// retry loops of your own, such as an atomic commit read and sent again after
    /// [`Error::KeyChanged`](crate::Error::KeyChanged).
    pub fn pause_after(&self, conflicts: u32) -> Duration {
        // The first retry is at once: under light contention it nearly always succeeds, and
        // pausing would only slow it; from the second on, contenders spread out.
        if conflicts <= 1 {
            return Duration::ZERO;
        }
        let doubling = 2u32.saturating_pow((conflicts - 2).min(16));
        let cap = self
            .first_backoff
            .saturating_mul(doubling)
            .min(self.max_backoff);
        cap / 2 + cap.mul_f64(random_fraction() / 2.0)
    }
}

impl Default for ConflictRetry {
    fn default() -> Self {
        Self::new()
    }
}

/// A number in `[0, 1)`, different on each call: jitter, not cryptography. Each `RandomState`
/// is keyed afresh, which is all the randomness needed here (no dependency for it).
fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos().into()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What a read-modify-write ([`KeyValue::modify`](crate::KeyValue::modify),
/// [`modify_json`](crate::KeyValue::modify_json)) did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Modified<T> {
    /// The key's value as this call leaves it: the value written, or, when the function asked
    /// to write nothing, the value it was given (`None`: the key had no value).
    pub value: Option<T>,
    /// The revision written, or, when nothing was written, the revision read (0: the key had no
    /// entry at all).
    pub revision: u64,
    /// Whether a value was written (`false`: the function returned `None`).
    pub written: bool,
    /// How many times the key was read (1 + the conflicts retried).
    pub attempts: u32,
}

impl<T> Modified<T> {
    /// How many times the key changed between a read and the write: `attempts - 1`.
    pub fn conflicts(&self) -> u32 {
        self.attempts.saturating_sub(1)
    }
}

/// A decoded value and the revision it was read at: what
/// [`KeyValue::entry_json`](crate::KeyValue::entry_json) returns, ready for an
/// [`update_json`](crate::KeyValue::update_json) at that revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision.
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_bounded() {
        let retry = ConflictRetry::new();
        assert_eq!(retry.pause_after(1), Duration::ZERO);
        for conflicts in 2..=20 {
            let cap = (DEFAULT_FIRST_BACKOFF * 2u32.pow((conflicts - 2).min(16)))
                .min(DEFAULT_MAX_BACKOFF);
            let pause = retry.pause_after(conflicts);
            assert!(pause >= cap / 2 && pause <= cap, "{conflicts}: {pause:?}");
        }
        let pauses: std::collections::HashSet<_> = (0..20).map(|_| retry.pause_after(8)).collect();
        assert!(pauses.len() > 10, "not jittered: {pauses:?}");
        let fixed = ConflictRetry::new().backoff(Duration::ZERO, Duration::ZERO);
        assert_eq!(fixed.pause_after(3), Duration::ZERO);
    }
}
