//! [`Subscription`]: the settings of a subject subscriber, core or JetStream, as
//! `#[subscriber("subject", ..)]`'s options set them.

use std::time::Duration;

use super::jstream::JStream;
use super::policy::{AckPolicy, DeliverPolicy, PullSub};

/// How a `#[subscriber("subject", ..)]` receives its messages. The attribute's options set
/// these; an app can also add a subscriber in code with one.
///
/// - core NATS: every instance gets every message, or with [`queue`](Self::queue) each message
///   goes to one instance of the queue group;
/// - JetStream ([`stream`](Self::stream)): the stream is declared when the app starts and a
///   pull consumer reads it: durable with [`durable`](Self::durable) (instances with the same
///   durable name share its messages, each message to one of them), otherwise one of its own
///   per instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub(crate) queue: Option<String>,
    pub(crate) stream: Option<JStream>,
    pub(crate) durable: Option<String>,
    pub(crate) pull: PullSub,
    pub(crate) deliver_policy: DeliverPolicy,
    pub(crate) ack_policy: AckPolicy,
    pub(crate) max_workers: usize,
    pub(crate) ordered_by: Option<String>,
    pub(crate) no_reply: bool,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Vec<Duration>,
    pub(crate) ack_wait: Duration,
}

impl Default for Subscription {
    fn default() -> Self {
        Self::new()
    }
}

impl Subscription {
    /// A core subscription, one message at a time, answering requests.
    pub fn new() -> Self {
        Self {
            queue: None,
            stream: None,
            durable: None,
            pull: PullSub::default(),
            deliver_policy: DeliverPolicy::default(),
            ack_policy: AckPolicy::default(),
            max_workers: 1,
            ordered_by: None,
            no_reply: false,
            max_attempts: 5,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            ack_wait: Duration::from_secs(30),
        }
    }

    /// A queue group: each message goes to one of the subscribers in it. With a stream and no
    /// [`durable`](Self::durable) name, the queue group's name is the durable name, so its
    /// instances share the consumer (FastStream's push consumer with a deliver group).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Reads a JetStream stream instead of core NATS.
    pub fn stream(mut self, stream: impl Into<JStream>) -> Self {
        self.stream = Some(stream.into());
        self
    }

    /// The durable consumer's name: it outlives the app, resumes where it stopped, and
    /// instances with the same name share its messages.
    pub fn durable(mut self, durable: impl Into<String>) -> Self {
        self.durable = Some(durable.into());
        self
    }

    /// The pull batch (default: [`PullSub::default`]).
    pub fn pull_sub(mut self, pull: impl Into<PullSub>) -> Self {
        self.pull = pull.into();
        self
    }

    /// Where a new consumer starts (default: [`DeliverPolicy::All`]).
    pub fn deliver_policy(mut self, policy: DeliverPolicy) -> Self {
        self.deliver_policy = policy;
        self
    }

    /// When deliveries are acknowledged (default: [`AckPolicy::RejectOnError`], as in FastStream).
    pub fn ack_policy(mut self, policy: AckPolicy) -> Self {
        self.ack_policy = policy;
        self
    }

    /// Up to `max_workers` calls at once (1 to 4096; default 1). With
    /// [`ordered_by`](Self::ordered_by), never two of one key at once, in arrival order.
    pub fn max_workers(mut self, max_workers: usize) -> Self {
        self.max_workers = max_workers;
        self
    }

    /// With `max_workers > 1`, the messages of one key are handled one at a time in the order
    /// they arrive: `key` is a `{name}` placeholder of the subject pattern, or `"subject"` for
    /// the whole subject. Within one instance: instances sharing a durable consumer each
    /// order only what they receive (for one key at a time across instances, use a Key-Value
    /// consumer group).
    pub fn ordered_by(mut self, key: impl Into<String>) -> Self {
        self.ordered_by = Some(key.into());
        self
    }

    /// Never answers requests: the handler's return value goes only to its publishers.
    pub fn no_reply(mut self, no_reply: bool) -> Self {
        self.no_reply = no_reply;
        self
    }

    /// Calls a JetStream delivery gets under [`AckPolicy::NackOnError`] before it is kept as a
    /// dead letter (default 5, at least 1).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts.max(1);
        self
    }

    /// The wait before each new attempt, the last one repeated (default 1 s, 5 s, 30 s).
    pub fn backoff(mut self, backoff: impl IntoIterator<Item = Duration>) -> Self {
        self.backoff = backoff.into_iter().collect();
        self
    }

    /// How long the server waits for a JetStream delivery to be settled before delivering it
    /// again (default 30 s). A handler that runs longer is kept alive with progress
    /// acknowledgements.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// The stream, for a JetStream subscriber.
    pub fn jstream(&self) -> Option<&JStream> {
        self.stream.as_ref()
    }

    /// The consumer's durable name: [`durable`](Self::durable), else the queue group's name for
    /// a stream.
    pub(crate) fn durable_name(&self) -> Option<&str> {
        self.durable
            .as_deref()
            .or(self.queue.as_deref().filter(|_| self.stream.is_some()))
    }

    /// The wait before attempt `attempt + 1` (attempts count from 1).
    pub(crate) fn delay_after(&self, attempt: u64) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(index)
            .or(self.backoff.last())
            .copied()
            .unwrap_or_default()
    }

    /// The problems of these settings for a subscriber of `pattern`, one sentence each.
    pub(crate) fn problems(&self, pattern: &faststream_rules::KeyPattern) -> Vec<String> {
        let mut problems = Vec::new();
        if !(1..=faststream_rules::MAX_WORKERS).contains(&self.max_workers) {
            problems.push(format!(
                "max_workers must be 1 to {}, got {}",
                faststream_rules::MAX_WORKERS,
                self.max_workers
            ));
        }
        if !(1..=faststream_rules::MAX_PULL_BATCH).contains(&self.pull.batch_size) {
            problems.push(format!(
                "pull_sub's batch must be 1 to {}, got {}",
                faststream_rules::MAX_PULL_BATCH,
                self.pull.batch_size
            ));
        }
        if let Some(queue) = &self.queue {
            if let Err(error) = faststream_rules::validate_queue(queue) {
                problems.push(error.to_string());
            }
        }
        if let Some(durable) = &self.durable {
            if let Err(error) = faststream_rules::validate_durable(durable) {
                problems.push(error.to_string());
            }
        }
        if let Some(key) = &self.ordered_by {
            let known = pattern.params().iter().any(|param| &param.name == key);
            if key != "subject" && !known {
                problems.push(format!(
                    "ordered_by `{key}` is neither `subject` nor a placeholder of `{}`",
                    pattern.as_str()
                ));
            }
        }
        match &self.stream {
            Some(stream) => problems.extend(stream.problems()),
            None => {
                let stream_only = [
                    (self.durable.is_some(), "durable"),
                    (self.ack_policy != AckPolicy::default(), "ack_policy"),
                    (
                        self.deliver_policy != DeliverPolicy::default(),
                        "deliver_policy",
                    ),
                ];
                for (set, option) in stream_only {
                    if set {
                        problems.push(format!(
                            "`{option}` needs a stream: it applies to JetStream consumers"
                        ));
                    }
                }
            }
        }
        problems
    }
}
