//! Every built-in extractor and output type, custom extractors, all four hooks, handlers in a
//! nested module and every kind of key pattern.

use std::sync::Arc;

use bytes::Bytes;
use faststream_core::error::Rejection;
use faststream_core::extract::{FromMessage, Message};
use faststream_core::{
    after_shutdown, after_startup, on_shutdown, on_startup, subscriber, App, BrokerConfig, Json,
    KvMessage, KvWatch, NatsBroker, State, SubscriberContext,
};

#[derive(Clone, Default)]
struct Counter(Arc<std::sync::atomic::AtomicU64>);

/// A user-defined extractor: the key, split on `.`.
struct KeyTokens(Vec<String>);

impl FromMessage for KeyTokens {
    fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
        Ok(KeyTokens(
            message.key().split('.').map(str::to_owned).collect(),
        ))
    }
}

const BUCKET: &str = "shared";

#[subscriber("text", kv_watch = "bucket")]
async fn text(msg: String) {
    let _ = msg;
}

#[subscriber("maybe", kv_watch = "bucket")]
async fn maybe(json: Option<Json<String>>, text: Result<String, Rejection>) {
    let _ = (json, text);
}

#[after_startup]
async fn maybe_state(counter: Option<State<Counter>>) {
    let _ = counter;
}

#[subscriber("raw.*", kv_watch = "bucket")]
async fn raw(value: Vec<u8>, message: KvMessage) -> anyhow::Result<()> {
    let _ = (value, message.revision());
    Ok(())
}

#[subscriber("bytes.>", kv_watch = "bucket")]
async fn shared_bytes(State(counter): State<Counter>, value: Bytes) -> Result<(), std::io::Error> {
    counter
        .0
        .fetch_add(value.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

#[subscriber("users.{id}.profile", kv_watch = KvWatch::new(BUCKET))]
async fn profile(
    broker: NatsBroker,
    tokens: KeyTokens,
    message: KvMessage,
    State(counter): State<Counter>,
    text: String,
) {
    let _ = (broker, tokens.0, message, counter, text);
}

#[subscriber("no_args", kv_watch = "bucket")]
async fn no_args() {}

#[subscriber("a.{x}.*.{y}.>", kv_watch = "bucket-2_x")]
pub(crate) async fn wildcards(_: KvMessage) {}

mod nested {
    pub mod deeper {
        use faststream_core::{subscriber, KvMessage, NatsBroker};

        #[subscriber("orders.*", kv_watch = "orders")]
        pub async fn order(message: KvMessage, broker: NatsBroker) -> anyhow::Result<()> {
            let _ = (message, broker);
            Ok(())
        }

        #[faststream_core::on_startup(order = 3)]
        async fn prepare_orders() {}
    }
}

#[on_startup(order = -1)]
async fn create(broker: NatsBroker) -> anyhow::Result<()> {
    let _ = broker;
    Ok(())
}

#[after_startup]
async fn ready(State(counter): State<Counter>, broker: NatsBroker) {
    let _ = (counter, broker);
}

#[on_shutdown(order = 10)]
async fn stopping() -> Result<(), std::io::Error> {
    Ok(())
}

#[after_shutdown(order = -1)]
async fn stopped(State(_counter): State<Counter>) {}

fn main() {
    // The functions stay callable as written.
    let _ = text(String::new());

    let crate_name = module_path!();
    let strip = |names: Vec<&'static str>| -> Vec<String> {
        names
            .into_iter()
            .map(|name| name[crate_name.len() + 2..].to_owned())
            .collect()
    };
    assert_eq!(
        strip(faststream_core::App::registered_subscribers()),
        [
            "maybe",
            "nested::deeper::order",
            "no_args",
            "profile",
            "raw",
            "shared_bytes",
            "text",
            "wildcards",
        ]
    );
    assert_eq!(
        strip(faststream_core::App::registered_hooks()),
        [
            "create",
            "maybe_state",
            "nested::deeper::prepare_orders",
            "ready",
            "stopped",
            "stopping",
        ]
    );

    let app = App::new(BrokerConfig::new("nats://127.0.0.1:1")).with_state(Counter::default());
    drop(app);
}
