//! Limits checked by the macros at compile time and by the runtime at start-up.

/// The most handler calls one subscriber may run at once (`max_workers`).
pub const MAX_WORKERS: usize = 4096;

/// The most arguments a handler or hook may take: the runtime implements its handler traits for
/// argument tuples up to this length.
pub const MAX_HANDLER_ARGS: usize = 12;

/// The most messages a pull subscriber asks a stream for at once (`pull_sub = N`).
pub const MAX_PULL_BATCH: usize = 10_000;
