//! How a JetStream subscriber reads and settles its deliveries: [`AckPolicy`],
//! [`DeliverPolicy`] and [`PullSub`], FastStream's names.

use std::time::Duration;

/// When a JetStream delivery is acknowledged, and what a failed call does to it (FastStream's
/// `AckPolicy`, with its default, [`RejectOnError`](Self::RejectOnError)).
///
/// Whatever the policy, a delivery whose arguments cannot be built (a payload that is not
/// valid JSON for `Json<T>`) is never tried again: it is terminated and kept as a dead letter
/// at once, as no retry can make it readable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AckPolicy {
    /// Acknowledged before the call: never delivered again, even if the call fails.
    AckFirst,
    /// Acknowledged after the call, however it ended.
    Ack,
    /// Acknowledged after a call that succeeded; a failed call terminates it (FastStream's
    /// `reject`) and keeps it as a dead letter. The default, as in FastStream.
    #[default]
    RejectOnError,
    /// Acknowledged after a call that succeeded; a failed call hands it back to be delivered
    /// again after the subscription's backoff (FastStream hands it back at once), until
    /// `max_attempts` calls have failed, when it is terminated and kept as a dead letter.
    NackOnError,
    /// The handler settles it through [`NatsMessage`](crate::NatsMessage) (`ack`, `nak`,
    /// `term`, `in_progress`); one it never settles is delivered again after the consumer's
    /// ack wait.
    Manual,
}

/// Where a new consumer starts in its stream (FastStream's `DeliverPolicy`). A durable
/// consumer that already exists goes on from where it was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliverPolicy {
    /// Every message the stream holds. The default.
    #[default]
    All,
    /// The last message of the stream.
    Last,
    /// Only messages stored from now on.
    New,
    /// The last message of each subject.
    LastPerSubject,
    /// From this stream sequence on.
    ByStartSequence(u64),
}

impl DeliverPolicy {
    pub(crate) fn to_nats(self) -> async_nats::jetstream::consumer::DeliverPolicy {
        use async_nats::jetstream::consumer::DeliverPolicy as Nats;
        match self {
            Self::All => Nats::All,
            Self::Last => Nats::Last,
            Self::New => Nats::New,
            Self::LastPerSubject => Nats::LastPerSubject,
            Self::ByStartSequence(start_sequence) => Nats::ByStartSequence { start_sequence },
        }
    }
}

/// How a JetStream subscriber pulls (FastStream's `PullSub`): up to `batch_size` messages per
/// pull request, a new request sent before the last batch runs out. Every JetStream
/// subscriber pulls; this sets the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullSub {
    pub(crate) batch_size: usize,
    pub(crate) expires: Duration,
}

impl PullSub {
    /// Pulls up to `batch_size` messages at a time (at least 1).
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size: batch_size.max(1),
            ..Self::default()
        }
    }

    /// How long one pull request waits on the server for messages (default 30 s).
    pub fn timeout(mut self, expires: Duration) -> Self {
        self.expires = expires;
        self
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

impl Default for PullSub {
    /// Batches of 100, each pull request waiting up to 30 s.
    fn default() -> Self {
        Self {
            batch_size: 100,
            expires: Duration::from_secs(30),
        }
    }
}

impl From<usize> for PullSub {
    fn from(batch_size: usize) -> Self {
        Self::new(batch_size)
    }
}
