//! React to NATS JetStream Key-Value changes with annotated async functions.
//!
//! ```no_run
//! use faststream_core::{after_startup, subscriber, App, NatsBroker};
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
//!     App::new(NatsBroker::from_env()).run().await?;
//!     Ok(())
//! }
//! ```
//!
//! The parts, each in its own module: [`App`] (the lifecycle), [`NatsBroker`] (the connection,
//! credentials and the bucket cache), [`kv`] (bucket configuration, watch settings, messages,
//! the resumable [`KvWatcher`] and the subscriber loop), [`extract`] (handler arguments),
//! [`handler`] (calling async fns with extracted arguments) and [`registry`] (what the macros
//! register). Real nats-server processes for tests are the `faststream-testing` crate.
//!
//! Handlers in a library crate of yours are linked into the service only if the service names
//! that crate: add `use my_handlers as _;` to the binary.

#![warn(missing_docs)]

mod app;
mod broker;
mod context;
mod error;
pub mod extract;
pub mod handler;
pub mod kv;
mod logging;
pub mod registry;
mod signal;
mod state;

pub use app::App;
pub use broker::{NatsBroker, DEFAULT_NATS_URL};
pub use context::{AppContext, SubscriberContext};
pub use error::{Error, Result};
pub use extract::{Json, Path, State};
pub use faststream_macros::{after_shutdown, after_startup, on_shutdown, on_startup, subscriber};
pub use kv::{KeyValue, KvMessage, KvWatch, KvWatcher, Operation};
pub use registry::HookStage;

/// What the macros' generated code reaches for. Not public API.
#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
