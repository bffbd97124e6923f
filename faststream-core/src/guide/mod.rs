//!
//! Each chapter is a module of its own, in the order a service is built: start with
//! [`getting_started`](crate::guide::getting_started), then read what the service needs.
//! Every Rust example in it is compiled as a doc test, so it matches the version of the crate
//! it documents. The benchmark method and figures are in `BENCHMARKS.md`, and the layout of
//! the crates in `ARCHITECTURE.md`, both at the root of the repository.
//!
//! | chapter | what it covers |
//! | --- | --- |
//! | [`getting_started`](crate::guide::getting_started) | a first service, the `[dependencies]` it needs, subscribers and key patterns |
//! | [`extractors`](crate::guide::extractors) | handler arguments: the value, `Json<T>`, `Path<T>`, `KvMessage`, `State<T>`, your own; return types |
//! | [`watch_options`](crate::guide::watch_options) | [`KvWatch`](crate::KvWatch) and each of FastStream's options |
//! | [`watcher`](crate::guide::watcher) | watching without a handler: `get_one`, `next`, streams |
//! | [`bucket_state`](crate::guide::bucket_state) | caught up, live typed views ([`KvView`](crate::KvView)), expiry |
//! | [`consumer_groups`](crate::guide::consumer_groups) | several instances sharing the work: partitions, ordering, the delivery guarantee, clusters, operating a group |
//! | [`messaging`](crate::guide::messaging) | subjects, queue groups, request/reply, publishers, JetStream streams and acknowledgement, routers |
//! | [`buckets`](crate::guide::buckets) | declaring and configuring buckets, the [`KeyValue`](crate::KeyValue) handle, per-key TTLs |
//! | [`objects`](crate::guide::objects) | object stores: `obj_watch` subscribers ([`ObjWatch`](crate::ObjWatch), [`ObjMessage`](crate::ObjMessage)), declaring stores, the [`ObjectStore`](crate::ObjectStore) handle, streamed and verified reads |
//! | [`writes`](crate::guide::writes) | writes that cannot lose an update: JSON values, read-modify-write, write-back from a handler, atomic commits of several keys |
//! | [`asyncapi`](crate::guide::asyncapi) | the AsyncAPI document the service serves (`/asyncapi`, `.json`, `.yaml`) and writes without connecting; payload schemas, the options, the Key-Value and object extension fields |
//! | [`errors`](crate::guide::errors) | [`Error`](crate::Error), its variants and causes |
//! | [`lifecycle`](crate::guide::lifecycle) | hooks, their order, what [`App::run`](crate::App::run) does step by step, signals |
//! | [`reliability`](crate::guide::reliability) | what a subscriber is promised through restarts, outages, clusters, failing handlers, shutdown |
//! | [`authentication`](crate::guide::authentication) | credentials, TLS, the `NATS_*` variables |
//! | [`library_crates`](crate::guide::library_crates) | handlers in a library crate of yours |
//! | [`logs`](crate::guide::logs) | the log output and the per-entry span |
//! | [`observability`](crate::guide::observability) | metrics, health endpoints, traces, OTLP |
//! | [`servers`](crate::guide::servers) | supported nats-server versions |
//! | [`testing`](crate::guide::testing) | testing your service against a real nats-server with `faststream-testing` |
//! | [`from_faststream`](crate::guide::from_faststream) | FastStream's API mapped to this crate's, and every difference and why |

#[doc = include_str!("getting_started.md")]
pub mod getting_started {}

#[doc = include_str!("extractors.md")]
pub mod extractors {}

#[doc = include_str!("watch_options.md")]
pub mod watch_options {}

#[doc = include_str!("watcher.md")]
pub mod watcher {}

#[doc = include_str!("bucket_state.md")]
pub mod bucket_state {}

#[doc = include_str!("consumer_groups.md")]
pub mod consumer_groups {}

#[doc = include_str!("messaging.md")]
pub mod messaging {}

#[doc = include_str!("buckets.md")]
pub mod buckets {}

#[doc = include_str!("objects.md")]
pub mod objects {}
#[doc = include_str!("writes.md")]
pub mod writes {}

#[doc = include_str!("asyncapi.md")]
pub mod asyncapi {}

#[doc = include_str!("errors.md")]
pub mod errors {}

#[doc = include_str!("lifecycle.md")]
pub mod lifecycle {}

#[doc = include_str!("reliability.md")]
pub mod reliability {}

#[doc = include_str!("authentication.md")]
pub mod authentication {}

#[doc = include_str!("library_crates.md")]
pub mod library_crates {}

#[doc = include_str!("logs.md")]
pub mod logs {}

#[doc = include_str!("observability.md")]
pub mod observability {}

#[doc = include_str!("servers.md")]
pub mod servers {}

#[doc = include_str!("testing.md")]
pub mod testing {}

#[doc = include_str!("from_faststream.md")]
pub mod from_faststream {}
