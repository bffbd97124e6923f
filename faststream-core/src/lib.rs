//! React to NATS JetStream Key-Value changes, and serve the rest of a NATS service (subjects,
//! queue groups, request/reply, publishers, JetStream streams), with annotated async functions.
//!
//! ```no_run
//! use faststream_core::{after_startup, subscriber, App, BrokerConfig, NatsBroker};
//!
//! #[after_startup]
//! async fn setup(broker: NatsBroker) -> anyhow::Result<()> {
//!     let key_value = broker.key_value("bucket").await?;
//!     key_value.put("key", "Hello!".into()).await?;
//!     Ok(())
//! }
//!
//! #[subscriber("key", kv_watch = "bucket")]
//! async fn handler(msg: String) {
//!     assert_eq!(msg, "Hello!");
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     App::new(BrokerConfig::from_env()).run().await?;
//!     Ok(())
//! }
//! ```
//!
//! The parts, each in its own module, and the one direction data flows through them:
//!
//! | layer | module | what it does |
//! | --- | --- | --- |
//! | lifecycle | `app` ([`App`]) | hooks, connect, declare buckets, start and stop the watches |
//! | registry | `registry` | what the macros register, sorted and checked for duplicates |
//! | handler, dispatch | [`handler`], `dispatch` | async fns made callable; the loops feeding a handler from a watch or a group |
//! | extractors | [`extract`] | handler and hook arguments built from a message |
//! | context | [`AppContext`], [`SubscriberContext`] | what extractors read besides the message: state, views, broker |
//! | observability | `observe` | metrics, readiness, the per-entry span; `/metrics` and `/health/*` |
//! | broker | [`BrokerConfig`], [`NatsBroker`] | the configuration (servers, credentials, TLS), the connection and the bucket cache |
//! | Key-Value | [`kv`] | buckets, watch settings, messages, the resumable [`KvWatcher`] and the live [`KvView`] |
//! | object storage | [`object`] | object stores, the [`ObjectStore`] handle, streamed and verified reads |
//! | messaging | [`nats`] | subscriptions of subjects and streams, publishing, requests, acknowledgement, dead letters |
//! | errors | [`error`] | every error type, each keeping its cause |
//!
//! Each module imports only from the layers below it, so, for example, `kv` knows nothing of
//! handlers and the broker knows nothing of the app. The naming rules, limits and hook stages
//! the macros also apply come from `faststream-rules`; real nats-server processes for tests, from
//! `faststream-testing`.
//!
//! Handlers in a library crate of yours are linked into the service only if the service names
//! that crate: add `use my_handlers as _;` to the binary.

#![warn(missing_docs, missing_debug_implementations)]
#![deny(rustdoc::broken_intra_doc_links)]

mod app;
mod asyncapi;
mod broker;
mod context;
mod dispatch;
pub mod error;
pub mod extract;
/// The guide: every feature explained, chapter by chapter, with examples that compile.
pub mod guide;
pub mod handler;
pub mod kv;
mod logging;
pub mod nats;
pub mod object;
mod observe;
mod registry;
mod signal;
mod type_map;

pub use app::App;
pub use asyncapi::{AppInfo, AsyncApi};
pub use broker::{
    Authentication, BrokerConfig, NatsBroker, DEFAULT_NATS_URL, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SUBSCRIPTION_CAPACITY,
};
pub use context::{AppContext, MessageKind, SubscriberContext};
pub use error::app_error::{Error, Result};
pub use extract::json::Json;
pub use extract::path::Path;
pub use extract::state::State;
pub use faststream_macros::{
    after_shutdown, after_startup, on_shutdown, on_startup, publisher, router, subscriber,
};
pub use faststream_rules::HookStage;
pub use kv::key_value::KeyValue;
pub use kv::message::{KvMessage, Operation};
pub use kv::options::KvWatch;
pub use kv::view::KvView;
pub use kv::watcher::KvWatcher;
pub use nats::{
    AckPolicy, DeliverPolicy, JStream, NatsMessage, Outgoing, Publisher, PullSub, Subscription,
};
pub use object::store::ObjectStore;
pub use object::{ObjMessage, ObjWatch};
#[cfg(feature = "otlp")]
pub use observe::otlp;
pub use observe::trace::ENTRY_TARGET;
pub use observe::HTTP_ADDR_VAR;
/// The Prometheus client the `/metrics` endpoint is built on, for
/// [`App::prometheus_registry`].
pub use prometheus_client;

/// What the macros' generated code reaches for. Not public API.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

/// The README's code blocks, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
