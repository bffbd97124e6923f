//! [`Publisher`]: where a `#[publisher("subject")]` sends its handler's return value, and how.

use std::time::Duration;

use super::jstream::JStream;
use super::publish::PublishRetry;

/// The settings of a `#[publisher("subject")]`.
///
/// To a subject a JetStream stream captures (found when the app starts, or named with
/// [`stream`](Self::stream)), a message is published through JetStream: the call waits for the
/// stream to store it, sending it again as [`retries`](Self::retries) says, and a message the
/// stream did not store fails the call (a JetStream delivery being handled is then tried
/// again), so nothing is lost silently. To any other subject it is published on core NATS.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publisher {
    pub(crate) stream: Option<String>,
    pub(crate) retry: PublishRetry,
}

impl Publisher {
    /// Publishes to the subject as it is, through JetStream if a stream captures it.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stream that must store the messages (sent with `Nats-Expected-Stream`, so a
    /// message the stream would not capture fails rather than landing elsewhere).
    pub fn stream(mut self, stream: impl Into<JStream>) -> Self {
        self.stream = Some(stream.into().name);
        self
    }

    /// Attempts in all for a message a stream does not acknowledge, the first included
    /// (default 4, at least 1).
    pub fn retries(mut self, attempts: u32) -> Self {
        self.retry.attempts = attempts.max(1);
        self
    }

    /// The wait before each new attempt, the last repeated (default 100 ms, 500 ms, 2 s).
    pub fn backoff(mut self, backoff: impl IntoIterator<Item = Duration>) -> Self {
        self.retry.backoff = backoff.into_iter().collect();
        self
    }
}
