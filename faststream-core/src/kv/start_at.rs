//! `StartAt`: where a new watch, or a new consumer group, starts reading a bucket.

/// Where a new watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// The latest entry of every matching key, then every change (the default).
    LatestPerKey,
    /// Every retained revision (`include_history`).
    Beginning,
    /// Only changes made after the watch starts (`updates_only`).
    NewOnly,
}
