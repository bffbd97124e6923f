//! Attribute macros of `faststream-core`: `#[subscriber]` and the four lifecycle hooks.
//!
//! Use them through `faststream_core`, which re-exports them; the generated code refers to
//! `::faststream_core` and does not work without it.
//!
//! Each macro leaves the function as written (it stays callable) and adds, next to it, a
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
// and one thin driver per attribute (`subscriber`, `hook`) that knows its options and calls them.
mod check;
mod emit;
mod errors;
mod hook;
mod parse;
mod subscriber;

/// Calls an `async fn` for every change of the keys matching a pattern in a NATS Key-Value
/// bucket.
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
/// - `kv_watch` (required) is the bucket: a string literal, checked at compile time, or an
///   expression of type `faststream_core::KvWatch`.
/// - `max_workers` (optional), an integer literal from 1 to 4096: `KvWatch::max_workers`.
/// - `group` (optional), a string literal holding a consumer-group name, checked at compile
///   time: `KvWatch::group` with the group's default settings. For a name that is not a literal,
///   or other settings, call `.group(..)` in a `kv_watch` expression instead.
///
/// `max_workers` and `group` are applied on top of the `kv_watch` value, expression or not, and
/// replace what it set.
///
/// The function must be a free `async fn` without generic parameters or `impl Trait` arguments.
/// Each argument type must be an extractor, and the return type a supported handler output.
#[proc_macro_attribute]
pub fn subscriber(args: TokenStream, item: TokenStream) -> TokenStream {
    subscriber::expand(args.into(), item.into()).into()
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
