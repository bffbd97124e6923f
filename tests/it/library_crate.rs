//! Handlers and hooks defined in a library crate of the user's reach the service binary that
//! names the crate once with `use user_handlers as _;`.

use crate::common::{on_each_server, RunningApp, EVENT_TIMEOUT};
use faststream_core::{App, BrokerConfig};

// The one line a service needs for a library crate's handlers.
use user_handlers as _;

#[test]
fn library_registrations_are_linked() {
    let subscribers = faststream_core::App::registered_subscribers();
    assert!(
        subscribers.contains(&"user_handlers::on_greeting"),
        "{subscribers:?}"
    );
    assert!(faststream_core::App::registered_hooks().contains(&"user_handlers::greet"));
}

#[tokio::test]
async fn library_handlers_run() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let greetings = user_handlers::Greetings::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module("user_handlers")
            .with_state(greetings.clone());
        let running = RunningApp::spawn(app);
        faststream_testing::wait_for("the greeting", EVENT_TIMEOUT, || async {
            let seen = greetings
                .0
                .lock()
                .map(|seen| seen.clone())
                .unwrap_or_default();
            (
                (seen == ["hello from a library"]).then_some(()),
                format!("{seen:?}"),
            )
        })
        .await?;
        running.stop().await??;
        Ok(())
    })
    .await
}
