//! Subjects, queue groups, request/reply, publishers and JetStream streams.

mod request_reply;
mod smoke;
mod support;
