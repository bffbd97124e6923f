//! What `faststream-macros` (at compile time) and `faststream-core` (at run time) must agree on,
//! in one place: the NATS Key-Value naming rules, the NATS subject and JetStream naming rules,
//! the limits of a handler, and the hook stages.
//!
//! The macros check the literals a user writes in `#[subscriber("key", kv_watch = "bucket")]`,
//! `#[subscriber("orders.{id}", stream = "ORDERS")]` or `router!(prefix = "orders.")` with the
//! same functions the runtime applies to names built from expressions, so a name the compiler
//! accepted is never rejected at start-up, and the other way round. The same goes for the
//! largest `max_workers` or pull batch and the most arguments a handler may take: the macro's
//! error and the runtime's check quote the one constant.

#![forbid(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]
#![warn(missing_docs, missing_debug_implementations)]

mod limits;
mod names;
mod stage;
mod subjects;

pub use limits::{MAX_HANDLER_ARGS, MAX_PULL_BATCH, MAX_WORKERS};
pub use names::{
    validate_bucket, validate_group, validate_key, KeyPattern, NameError, PathParam, MAX_GROUP_NAME,
};
pub use stage::HookStage;
pub use subjects::{
    validate_durable, validate_queue, validate_stream, validate_subject, validate_subject_prefix,
    MAX_STREAM_NAME,
};
