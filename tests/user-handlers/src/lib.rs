//! A user's library crate holding handlers and hooks. A service binary picks them up with one
//! line: `use user_handlers as _;`.

use faststream_core::{after_startup, subscriber, NatsBroker, State};

/// Where the handlers report what they saw (given with `App::with_state`).
#[derive(Clone, Default)]
pub struct Greetings(pub std::sync::Arc<std::sync::Mutex<Vec<String>>>);

/// Writes a greeting once the app has started.
#[after_startup]
async fn greet(broker: NatsBroker) -> anyhow::Result<()> {
    broker
        .key_value("library")
        .await?
        .put("greeting", "hello from a library".into())
        .await?;
    Ok(())
}

/// Records each greeting.
#[subscriber("greeting", kv_watch = "library")]
async fn on_greeting(msg: String, State(greetings): State<Greetings>) {
    if let Ok(mut seen) = greetings.0.lock() {
        seen.push(msg);
    }
}
