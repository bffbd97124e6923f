//! Subjects, queue groups, request/reply, publishers and JetStream streams.

mod message_kinds;
mod publishers;
mod queue_groups;
mod request_reply;
mod routers;
mod shutdown;
mod smoke;
mod stream_acks;
mod streams;
mod support;
