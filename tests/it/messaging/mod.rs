//! Subjects, queue groups, request/reply, publishers and JetStream streams.

mod smoke;
