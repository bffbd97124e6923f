//! Consumer groups: the instances of a service share a bucket's changes.
//!
//! Built from nats-server's own parts (2.11+), with no other coordinator:
//! - a **mirror** of the bucket's stream, filtered to the group's keys, whose subject transform
//!   puts each key in a fixed partition (`p.<partition>.<key>`); a mirror keeps the bucket's
//!   sequence numbers and times, so a message is still the bucket's revision;
//! - one **durable pull consumer per partition**, `max_ack_pending` = `in_flight`, and a
//!   pinned-client priority group: the server delivers to one member at a time and moves the
//!   pin when that member goes quiet; the member holding the pin keeps each key's changes in
//!   order, and on taking a partition over reads what the member before left unsettled
//!   (`takeover`) so that a key's newer change never overtakes an older one there;
//! - a **members bucket** where each member heartbeats, with the partitions it holds; every
//!   member computes the same assignment of partitions from it (`assignment`: balanced, and a
//!   member joining or leaving moves only the partitions it must) and pulls only its own;
//! - a **dead-letter stream** for the changes given up;
//! - a **hand-backs bucket** counting, per partition, the deliveries handed back without a
//!   call, so that they are not counted as attempts.
//!
//! A bucket deleted and created again under a running group is noticed, and the group starts
//! over on it (`replaced`); a mirror left without its consumer on the bucket's stream (that
//! stream's leader died) is started again (`mirror`).

mod admin;
pub(crate) mod assignment;
pub(crate) mod dead_letters;
pub(crate) mod declare;
pub(crate) mod handbacks;
pub(crate) mod layout;
pub(crate) mod membership;
pub(crate) mod mirror;
pub(crate) mod partition;
pub(crate) mod replaced;
mod roster;
pub(crate) mod settings;
pub(crate) mod takeover;

pub use admin::{GroupInfo, KvGroup, MemberInfo, PartitionInfo};
pub use dead_letters::DeadLetter;
pub use settings::{
    GroupSettings, DEFAULT_BACKOFF, DEFAULT_CALL_TIMEOUT, DEFAULT_MAX_ATTEMPTS, DEFAULT_PARTITIONS,
    DEFAULT_SESSION_TIMEOUT, MAX_PARTITIONS,
};
