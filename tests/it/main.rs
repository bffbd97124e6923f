//! The integration tests against real nats-server binaries, as one test binary: one link of
//! the dependency tree for all of them. Each module is a topic; `common` and `group_support`
//! are what several of them share.
//!
//! Tests that change process-wide state run in binaries of their own (tests/own_process).
//! Here every app takes only its own subscribers and hooks (`App::without_registered` or
//! `App::only_module`), as the registrations of every module (and of the `user-handlers`
//! crate) are linked into this one binary.

mod common;
mod group_support;

mod bad_input;
mod bad_input_soak;
mod bucket_state;
mod buckets;
mod cluster;
mod concurrency;
mod connect;
mod expiry;
mod extractors;
mod group_cluster;
mod group_cluster_kills;
mod group_processes;
mod groups;
mod library_crate;
mod lifecycle;
mod messaging;
mod obj_watch;
mod obj_watch_faults;
mod objects;
mod observability;
mod options;
mod reliability;
mod shutdown_and_timeouts;
mod stream_cluster;
mod stream_processes;
mod watch;
mod writes;
