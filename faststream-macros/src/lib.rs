//! Macros of `faststream-core`: the attributes `#[subscriber]`, `#[publisher]` and the four
//! lifecycle hooks, and `router!`.
//!
//! Use them through `faststream_core`, which re-exports them; the generated code refers to
//! `::faststream_core` and does not work without it.
//!
//! Each attribute leaves the function as written (it stays callable) and adds, next to it, a
//! registration collected at start-up. The registration spells out each argument type and the
//! return type, so a wrong type is reported once, at that type. Names written as literals are checked
//! at compile time with the same rules as at run time (`faststream-rules`).
//!
//! On an error the function is still emitted unchanged, together with the errors, so the rest of
//! the crate keeps compiling and rust-analyzer keeps working.
//!
//! Set `FASTSTREAM_MACROS_DEBUG=1` while building to print every expansion to stderr.

#![forbid(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]

use faststream_rules::HookStage;
use proc_macro::TokenStream;

// One module per phase (`parse` → `check` → `emit`, with `errors` gathering what `check` finds),
// and one thin driver per macro (`subscriber`, `publisher`, `router`, `hook`) that knows its
// options and calls them.
mod check;
mod emit;
mod errors;
mod hook;
mod parse;
mod publisher;
mod router;
mod subscriber;

/// Calls an `async fn` for every message on a NATS subject, or for every change of the keys
/// matching a pattern in a NATS Key-Value bucket (with `kv_watch`).
///
/// # Subjects
///
/// ```
/// use faststream_core::{subscriber, AckPolicy, DeliverPolicy, Json, NatsMessage};
///
/// #[derive(serde::Deserialize)]
/// struct Order {
///     total: u64,
/// }
///
/// // Core NATS: every instance gets every message on `orders.<anything>.created`.
/// #[subscriber("orders.{id}.created")]
/// async fn on_created(msg: NatsMessage, order: Json<Order>) {}
///
/// // Instances of the `workers` queue group share the messages.
/// #[subscriber("emails.>", queue = "workers", max_workers = 8)]
/// async fn send(msg: NatsMessage) {}
///
/// // JetStream: a durable pull consumer of the `ORDERS` stream, from new messages on,
/// // handling up to 8 at once but those of one `{id}` in order.
/// #[subscriber(
///     "orders.{id}.>",
///     stream = "ORDERS",
///     durable = "billing",
///     pull_sub = 16,
///     deliver_policy = DeliverPolicy::New,
///     ack_policy = AckPolicy::NackOnError,
///     max_workers = 8,
///     ordered_by = "id",
/// )]
/// async fn bill(order: Json<Order>) -> anyhow::Result<()> {
///     Ok(())
/// }
/// ```
///
/// - The first argument, a string literal, is the subject pattern: `.`-separated tokens where
///   `*` matches one token, a final `>` matches the rest and `{name}` is a named path parameter
///   (subscribed as `*`, read with the `Path` extractor). Other tokens are printable
///   characters without whitespace, `*`, `>`, `{` or `}`. A `router!` prefix of the module is
///   written in front of it at start-up.
/// - `queue` (optional), a string literal: the queue group whose members share the messages.
/// - `stream` (optional): the JetStream stream to consume, a string literal checked at compile
///   time or an expression of a type that is `Into<JStream>`. Without it the subscriber reads
///   core NATS.
/// - `durable` (needs `stream`), a string literal: the durable consumer's name.
/// - `pull_sub` (needs `stream`): a pull consumer. An integer literal from 1 to 10000 is the
///   batch size (`PullSub::new(16)`), `true` the default settings, and any other expression a
///   `PullSub`.
/// - `deliver_policy` and `ack_policy` (need `stream`): expressions of type `DeliverPolicy` and
///   `AckPolicy`.
/// - `max_workers` (optional), an integer literal from 1 to 4096: how many calls run at once.
/// - `ordered_by` (optional), a string literal: the name of a `{placeholder}` of the subject,
///   whose messages with the same value are handled one at a time and in order; or `"subject"`
///   for the whole subject.
/// - `no_reply` (optional), `true` or `false`: with `true`, a request's reply subject is not
///   answered with what the function returns.
/// - `subscription` (optional), an expression of type `faststream_core::Subscription`: the
///   settings the other options are applied on, for those without an option of their own
///   (`max_attempts`, `backoff`, `ack_wait`).
///
/// Stream and durable names must be at most 255 bytes, without whitespace, `.`, `*`, `>`, `/`
/// or `\`; a queue group name has no whitespace. Each option may be written once.
///
/// # Key-Value watches
///
/// ```
/// use faststream_core::{subscriber, KvMessage, KvWatch};
///
/// const AUDIT_BUCKET: &str = "audit";
///
/// #[subscriber("users.{id}.profile", kv_watch = "profiles")]
/// async fn on_profile(entry: KvMessage) -> anyhow::Result<()> {
///     println!("{} changed", entry.key());
///     Ok(())
/// }
///
/// // Any expression of type `KvWatch` works too:
/// #[subscriber("audit.>", kv_watch = KvWatch::new(AUDIT_BUCKET))]
/// async fn on_audit(entry: KvMessage) {}
///
/// // Shorthands: the same as `kv_watch = KvWatch::new("shop").max_workers(8).group("billing")`.
/// #[subscriber("orders.{id}", kv_watch = "shop", max_workers = 8, group = "billing")]
/// async fn bill(entry: KvMessage) {}
/// ```
///
/// - The first argument, a string literal, is the watch pattern: `.`-separated tokens where `*`
///   matches one token, a final `>` matches the rest and `{name}` is a named path parameter.
///   Other tokens use A-Z, a-z, 0-9, `-`, `/`, `_` and `=`. A `router!` prefix of the module is
///   written in front of it, as FastStream's router prefixes a `kv_watch` subscriber's key.
/// - `kv_watch` is the bucket: a string literal, checked at compile time, or an expression of
///   type `faststream_core::KvWatch`.
/// - `max_workers` (optional), an integer literal from 1 to 4096: `KvWatch::max_workers`.
/// - `group` (optional, only with `kv_watch`), a string literal holding a consumer-group name,
///   checked at compile time: `KvWatch::group` with the group's default settings. For a name
///   that is not a literal, or other settings, call `.group(..)` in a `kv_watch` expression
///   instead.
///
/// `max_workers` and `group` are applied on top of the `kv_watch` value, expression or not, and
/// replace what it set. The subject options (`queue`, `stream`, `durable`, `pull_sub`,
/// `deliver_policy`, `ack_policy`, `ordered_by`, `no_reply`, `subscription`) cannot be used
/// with `kv_watch`.
///
/// # The function
///
/// The function must be a free `async fn` without generic parameters or `impl Trait` arguments.
/// Each argument type must be an extractor, and the return type a supported handler output.
/// What it returns is published by each [`macro@publisher`] stacked with it.
#[proc_macro_attribute]
pub fn subscriber(args: TokenStream, item: TokenStream) -> TokenStream {
    subscriber::expand(args.into(), item.into()).into()
}

/// Publishes what an `async fn` returns to a NATS subject: stacked with a
/// [`macro@subscriber`], the result of each call is sent on.
///
/// ```
/// use faststream_core::{publisher, subscriber, Json};
///
/// #[derive(serde::Deserialize)]
/// struct Order {
///     total: u64,
/// }
///
/// #[derive(serde::Serialize)]
/// struct Bill {
///     total: u64,
/// }
///
/// #[subscriber("orders.created")]
/// #[publisher("billing.done")]
/// #[publisher("audit.bills", stream = "AUDIT")]
/// async fn bill(Json(order): Json<Order>) -> anyhow::Result<Json<Bill>> {
///     Ok(Json(Bill { total: order.total }))
/// }
/// ```
///
/// - The first argument, a string literal, is the concrete subject to publish to (no wildcard
///   and no placeholder), checked at compile time. A `router!` prefix of the module is written
///   in front of it at start-up.
/// - `stream` (optional): publish through JetStream to this stream, a string literal checked
///   at compile time or an expression of a type that is `Into<JStream>`.
/// - `publisher` (optional), an expression of type `faststream_core::Publisher`: the settings
///   `stream` is applied on, for those without an option of their own (`retries`, `backoff`).
///
/// `#[publisher]` and `#[subscriber]` may be stacked in any order, several `#[publisher]` on
/// one function, and under another name (`use faststream_core::publisher as emit;`). The
/// function must pass the checks of a [`macro@subscriber`] function, and return the value to
/// publish: `()`, or a function without a return type, is an error at compile time; `Ok(value)`
/// of a `Result` is published, and an `Err` is not.
#[proc_macro_attribute]
pub fn publisher(args: TokenStream, item: TokenStream) -> TokenStream {
    publisher::expand(args.into(), item.into()).into()
}

/// Puts the subjects of the module it is written in, and of the modules below it, under a
/// prefix: FastStream's `NatsRouter(prefix = ..)`.
///
/// ```
/// mod orders {
///     faststream_core::router!(prefix = "orders.");
///
///     // Subscribes to `orders.created` and publishes to `orders.billed`.
///     #[faststream_core::subscriber("created")]
///     #[faststream_core::publisher("billed")]
///     async fn bill(order: String) -> String {
///         order
///     }
/// }
/// ```
///
/// The prefix, a string literal checked at compile time, is written in front of every subject
/// of `#[subscriber]` and `#[publisher]` as it stands, as FastStream does (`"orders."` +
/// `"created"`): it ends with `.` to add a token. It has no wildcard or placeholder, no
/// whitespace and no empty token but after its final `.`. Key-Value keys (`kv_watch`) are
/// prefixed too, as FastStream's router does. Nested modules' prefixes are joined outermost
/// first. The runtime applies it at start-up, and checks the joined subject or key.
#[proc_macro]
pub fn router(input: TokenStream) -> TokenStream {
    router::expand(input.into()).into()
}

/// Runs an `async fn` while the application starts, before the subscribers start.
///
/// ```
/// use faststream_core::{kv::BucketConfig, NatsBroker};
///
/// // Runs before connecting: a place to prepare what the service needs, not to use the broker.
/// #[faststream_core::on_startup(order = -10)]
/// async fn check_config() -> anyhow::Result<()> {
///     Ok(())
/// }
///
/// // After start-up the broker is connected.
/// #[faststream_core::after_startup]
/// async fn create_buckets(broker: NatsBroker) -> anyhow::Result<()> {
///     broker.key_value_with(BucketConfig::new("audit").history(10)).await?;
///     Ok(())
/// }
/// ```
///
/// `order` (optional, an `i32` literal, default `0`) sorts the hooks of one stage. The function
/// must be a free `async fn` without generic parameters; each argument must be a supported hook
/// argument and the return type a supported output.
#[proc_macro_attribute]
pub fn on_startup(args: TokenStream, item: TokenStream) -> TokenStream {
    hook::expand(HookStage::OnStartup, args.into(), item.into()).into()
}

/// Runs an `async fn` once the application has started, after the subscribers started.
///
/// ```
/// #[faststream_core::after_startup]
/// async fn announce() {
///     tracing::info!("ready");
/// }
/// ```
///
/// Takes the same `order = <i32>` option and has the same requirements as [`macro@on_startup`].
#[proc_macro_attribute]
pub fn after_startup(args: TokenStream, item: TokenStream) -> TokenStream {
    hook::expand(HookStage::AfterStartup, args.into(), item.into()).into()
}

/// Runs an `async fn` when the application begins to shut down, before the subscribers stop.
///
/// ```
/// #[faststream_core::on_shutdown(order = 1)]
/// async fn stop_accepting() -> anyhow::Result<()> {
///     Ok(())
/// }
/// ```
///
/// Takes the same `order = <i32>` option and has the same requirements as [`macro@on_startup`].
#[proc_macro_attribute]
pub fn on_shutdown(args: TokenStream, item: TokenStream) -> TokenStream {
    hook::expand(HookStage::OnShutdown, args.into(), item.into()).into()
}

/// Runs an `async fn` once the application has shut down, after the subscribers stopped.
///
/// ```
/// #[faststream_core::after_shutdown]
/// async fn flush_metrics() {}
/// ```
///
/// Takes the same `order = <i32>` option and has the same requirements as [`macro@on_startup`].
#[proc_macro_attribute]
pub fn after_shutdown(args: TokenStream, item: TokenStream) -> TokenStream {
    hook::expand(HookStage::AfterShutdown, args.into(), item.into()).into()
}
