//! NATS messaging without handlers: core subjects and queue groups, JetStream streams and
//! their consumers, publishing and requests. It sits beside `kv`, below dispatch, and knows
//! nothing of handlers.
//!
//! - [`Subscription`]: how a subject subscriber receives ([`JStream`], [`PullSub`],
//!   [`AckPolicy`], [`DeliverPolicy`]);
//! - [`NatsMessage`]: a message received, with its JetStream metadata and acknowledgement;
//! - [`Publisher`] and [`Outgoing`]: sending, through JetStream where a stream captures the
//!   subject;
//! - [`StreamDeadLetter`]: a JetStream delivery given up, kept for an operator.

pub(crate) mod dead_letters;
mod jstream;
mod message;
mod policy;
pub(crate) mod publish;
mod publisher;
pub(crate) mod source;
mod subscription;

pub use dead_letters::StreamDeadLetter;
pub use jstream::{JStream, RetentionPolicy, StorageType};
pub use message::{JetStreamInfo, NatsMessage};
pub(crate) use message::{CONTENT_TYPE, CORRELATION_ID};
pub use policy::{AckPolicy, DeliverPolicy, PullSub};
pub use publish::Outgoing;
pub use publisher::Publisher;
pub use subscription::Subscription;
