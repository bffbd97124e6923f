//! The lifecycle: hook order, what is connected when, and start-up failures that leave nothing
//! running.

use crate::common::{on_each_server, Events, RunningApp};
use anyhow::Context as _;
use faststream_core::error::{chain, HandlerError};
use faststream_core::{App, BrokerConfig, Error, HookStage, NatsBroker};

mod ordered {
    use super::Events;
    use faststream_core::{
        after_shutdown, after_startup, on_shutdown, on_startup, subscriber, NatsBroker, State,
    };

    #[on_startup]
    async fn open_database(broker: NatsBroker, State(events): State<Events>) {
        events.push(format!(
            "on_startup:open_database:connected={}",
            broker.is_connected()
        ));
    }

    #[on_startup(order = -1)]
    async fn load_config(broker: NatsBroker, State(events): State<Events>) {
        events.push(format!(
            "on_startup:load_config:connected={}",
            broker.is_connected()
        ));
    }

    #[after_startup]
    async fn seed(broker: NatsBroker, State(events): State<Events>) -> anyhow::Result<()> {
        events.push(format!(
            "after_startup:seed:connected={}",
            broker.is_connected()
        ));
        broker
            .key_value("lifecycle")
            .await?
            .put("k", "v".into())
            .await?;
        Ok(())
    }

    #[subscriber("k", kv_watch = "lifecycle")]
    async fn on_k(msg: String, State(events): State<Events>) {
        events.push(format!("handled:{msg}"));
    }

    #[on_shutdown]
    async fn farewell(broker: NatsBroker, State(events): State<Events>) -> anyhow::Result<()> {
        // The connection is still up: reading the bucket works.
        let value = broker.key_value("lifecycle").await?.get("k").await?;
        let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
        events.push(format!("on_shutdown:farewell:k={value:?}"));
        Ok(())
    }

    #[after_shutdown]
    async fn cleanup(State(events): State<Events>) {
        events.push("after_shutdown:cleanup");
    }
}

#[tokio::test]
async fn hooks_run_in_lifecycle_order() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::ordered"))
            .with_state(events.clone());
        let running = RunningApp::spawn(app);
        events.wait_for_event("handled:v").await?;
        running.stop().await??;
        assert_eq!(
            events.snapshot(),
            [
                "on_startup:load_config:connected=false",
                "on_startup:open_database:connected=false",
                "after_startup:seed:connected=true",
                "handled:v",
                "on_shutdown:farewell:k=Some(\"v\")",
                "after_shutdown:cleanup",
            ]
        );
        Ok(())
    })
    .await
}

mod failing_after_startup {
    use faststream_core::{after_startup, subscriber};

    #[after_startup]
    async fn broken() -> anyhow::Result<()> {
        anyhow::bail!("database unreachable")
    }

    #[subscriber("k", kv_watch = "half_started")]
    async fn watcher(_msg: String) {}
}

#[tokio::test]
async fn failing_after_startup_hook_stops_everything() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::failing_after_startup"));
        let result = RunningApp::spawn(app).finish().await?;
        let error = result.err().context("run() should fail")?;
        assert!(
            matches!(
                error,
                Error::Hook {
                    stage: HookStage::AfterStartup,
                    source: HandlerError::Failed(_),
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            chain(&error),
            format!(
                "after_startup hook `{}::failing_after_startup::broken` failed: \
                 it returned an error: database unreachable",
                module_path!()
            )
        );
        // The watch had started; with the app gone, its connection is closed too.
        crate::common::wait_for_no_connections(&server).await
    })
    .await
}

mod panicking_on_startup {
    use faststream_core::on_startup;

    #[on_startup]
    async fn explodes() {
        panic!("config file missing");
    }
}

#[tokio::test]
async fn panicking_on_startup_hook_fails_before_connecting() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::panicking_on_startup"));
        let connections_before = crate::common::total_connections(&server).await?;
        let error = crate::common::startup_error(app).await?;
        assert_eq!(
            chain(&error),
            format!(
                "on_startup hook `{}::panicking_on_startup::explodes` failed: \
                 it panicked: config file missing",
                module_path!()
            )
        );
        assert_eq!(
            crate::common::total_connections(&server).await?,
            connections_before,
            "it connected"
        );
        Ok(())
    })
    .await
}

mod missing_state {
    use faststream_core::{after_startup, subscriber, State};

    #[after_startup]
    async fn needs_u64(State(_value): State<u64>) {}

    #[subscriber("k", kv_watch = "never_declared")]
    async fn needs_u32(State(_value): State<u32>) {}
}

#[tokio::test]
async fn missing_state_is_reported_before_connecting() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::missing_state"));
        let connections_before = crate::common::total_connections(&server).await?;
        let error = crate::common::startup_error(app).await?;
        let Error::Setup { problems } = &error else {
            anyhow::bail!("expected a setup error, got {error:?}");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].starts_with(&format!(
                "subscriber `{}::missing_state::needs_u32` (",
                module_path!()
            )) && problems[0].ends_with("no state of type `u32`: give it with `App::with_state`"),
            "{problems:?}"
        );
        assert_eq!(
            problems[1],
            format!(
                "after_startup hook `{}::missing_state::needs_u64`: no state of type `u64`: \
                 give it with `App::with_state`",
                module_path!()
            )
        );
        assert_eq!(
            crate::common::total_connections(&server).await?,
            connections_before,
            "it connected"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn duplicate_registrations_are_rejected() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        async fn handler(_msg: String) {}
        async fn hook() {}
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .subscriber("twice", "a", faststream_core::KvWatch::new("b"), handler)
            .subscriber("twice", "b", faststream_core::KvWatch::new("b"), handler)
            .hook(faststream_core::HookStage::OnStartup, "setup", hook)
            .hook(faststream_core::HookStage::OnStartup, "setup", hook);
        let error = crate::common::startup_error(app).await?;
        assert_eq!(
            error.to_string(),
            "invalid application setup:\n  - subscriber name `twice` is registered more than \
             once\n  - on_startup hook `setup` is registered more than once"
        );
        Ok(())
    })
    .await
}

/// Lets a test hold a hook until it says so.
#[derive(Clone, Default)]
struct Gate(std::sync::Arc<tokio::sync::Notify>);

/// A hook of each stage recording itself; `held` waits at the gate, then records its end.
mod interrupted {
    use super::{Events, Gate};
    use faststream_core::{NatsBroker, State};
    use std::time::Duration;

    pub async fn held(State(events): State<Events>, State(gate): State<Gate>) {
        events.push("held:begin");
        gate.0.notified().await;
        events.push("held:end");
    }

    pub async fn later(State(events): State<Events>) {
        events.push("later");
    }

    pub async fn slow_handler(msg: String, State(events): State<Events>) {
        events.push(format!("begin {msg}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        events.push(format!("end {msg}"));
    }

    pub async fn on_shutdown(broker: NatsBroker, State(events): State<Events>) {
        events.push(format!("on_shutdown:connected={}", broker.is_connected()));
    }

    pub async fn after_shutdown(State(events): State<Events>) {
        events.push("after_shutdown");
    }
}

/// Adds to `app` the hooks the interrupted start-up tests share: `a_held` (waiting at the
/// gate) and `b_later` at `stage`, and a recording hook at each shutdown stage.
fn with_held_start(app: App, stage: HookStage, events: &Events, gate: &Gate) -> App {
    app.with_state(events.clone())
        .with_state(gate.clone())
        .hook(stage, "a_held", interrupted::held)
        .hook(stage, "b_later", interrupted::later)
        .hook(
            HookStage::OnShutdown,
            "on_shutdown",
            interrupted::on_shutdown,
        )
        .hook(
            HookStage::AfterShutdown,
            "after_shutdown",
            interrupted::after_shutdown,
        )
}

/// Runs `app` until the returned sender fires. With `open`, the gate is opened as the request
/// is delivered: hooks run in the app's own task, so the held one goes on only after the app
/// has taken the request.
fn run_until_stopped(
    app: App,
    open: Option<Gate>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<faststream_core::Result<()>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
        if let Some(gate) = open {
            gate.0.notify_one();
        }
    }));
    (stop, running)
}

fn position(events: &[String], event: &str) -> anyhow::Result<usize> {
    events
        .iter()
        .position(|e| e == event)
        .with_context(|| format!("`{event}` not recorded: {events:?}"))
}

#[tokio::test]
async fn shutdown_during_after_startup_hooks_is_graceful() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = crate::common::bucket_with_history(&server, "midstart").await?;
        let events = Events::default();
        let gate = Gate::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .subscriber(
                "slow",
                "k",
                faststream_core::KvWatch::new("midstart"),
                interrupted::slow_handler,
            );
        let app = with_held_start(app, HookStage::AfterStartup, &events, &gate);
        let (stop, running) = run_until_stopped(app, Some(gate));
        events.wait_for_event("held:begin").await?;
        store.put("k", "1".into()).await?;
        events.wait_for_event("begin 1").await?;
        // The signal arrives while the first after_startup hook and a handler call are running.
        let _ = stop.send(());
        tokio::time::timeout(crate::common::EVENT_TIMEOUT, running).await???;
        let events = events.snapshot();
        assert!(
            !events.iter().any(|e| e == "later"),
            "a later start-up hook ran: {events:?}"
        );
        let on_shutdown = position(&events, "on_shutdown:connected=true")?;
        assert!(position(&events, "held:end")? < on_shutdown, "{events:?}");
        assert!(position(&events, "end 1")? < on_shutdown, "{events:?}");
        assert!(
            on_shutdown < position(&events, "after_shutdown")?,
            "{events:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn shutdown_during_on_startup_hooks_runs_the_shutdown_hooks() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let gate = Gate::default();
        let app = App::new(BrokerConfig::new(server.url())).without_registered();
        let app = with_held_start(app, HookStage::OnStartup, &events, &gate);
        let connections_before = crate::common::total_connections(&server).await?;
        let (stop, running) = run_until_stopped(app, Some(gate));
        events.wait_for_event("held:begin").await?;
        let _ = stop.send(());
        tokio::time::timeout(crate::common::EVENT_TIMEOUT, running).await???;
        assert_eq!(
            events.snapshot(),
            [
                "held:begin",
                "held:end",
                "on_shutdown:connected=false",
                "after_shutdown"
            ]
        );
        assert_eq!(
            crate::common::total_connections(&server).await?,
            connections_before,
            "it connected"
        );
        Ok(())
    })
    .await
}

/// Writes `late` to the bucket, then waits up to 2 s for a handler to take it.
async fn write_during_on_shutdown(
    broker: NatsBroker,
    faststream_core::State(events): faststream_core::State<Events>,
) -> anyhow::Result<()> {
    broker
        .key_value("closing")
        .await?
        .put("k", "late".into())
        .await?;
    let handled = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        events.wait_for_event("begin late").await
    })
    .await
    .is_ok_and(|waited| waited.is_ok());
    events.push(format!("on_shutdown:late_handled={handled}"));
    Ok(())
}

#[tokio::test]
async fn no_new_entry_is_taken_once_on_shutdown_runs() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = crate::common::bucket_with_history(&server, "closing").await?;
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber(
                "slow",
                "k",
                faststream_core::KvWatch::new("closing"),
                interrupted::slow_handler,
            )
            .hook(
                HookStage::AfterStartup,
                "started",
                crate::common::record_started,
            )
            .hook(HookStage::OnShutdown, "write", write_during_on_shutdown);
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        store.put("k", "1".into()).await?;
        events.wait_for_event("begin 1").await?;
        running.stop().await??;
        assert_eq!(
            events.snapshot(),
            [
                "started",
                "begin 1",
                "end 1",
                "on_shutdown:late_handled=false"
            ]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_start_up_hook_stuck_at_shutdown_is_abandoned_at_the_timeout() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let shutdown_timeout = std::time::Duration::from_millis(500);
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .shutdown_timeout(shutdown_timeout);
        // The gate is never opened.
        let app = with_held_start(app, HookStage::AfterStartup, &events, &Gate::default());
        let (stop, running) = run_until_stopped(app, None);
        events.wait_for_event("held:begin").await?;
        let asked = std::time::Instant::now();
        let _ = stop.send(());
        tokio::time::timeout(crate::common::EVENT_TIMEOUT, running).await???;
        let took = asked.elapsed();
        println!(
            "{}: stuck hook abandoned, run() returned after {took:?}",
            server.binary()
        );
        assert!(
            took >= shutdown_timeout && took < shutdown_timeout * 4,
            "took {took:?}"
        );
        assert_eq!(
            events.snapshot(),
            ["held:begin", "on_shutdown:connected=true", "after_shutdown"]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_empty_group_backoff_is_a_setup_error_naming_the_subscriber() -> anyhow::Result<()> {
    use faststream_core::kv::group::GroupSettings;
    use faststream_core::KvWatch;

    async fn bill(_order: String) {}

    let hook_ran = Events::default();
    // Nothing listens there: a connection attempt would end in `Error::Connect`, not a setup
    // error.
    let app = App::new(
        BrokerConfig::new("nats://127.0.0.1:1").connect_timeout(std::time::Duration::from_secs(1)),
    )
    .without_registered()
    .with_state(hook_ran.clone())
    .hook(
        HookStage::OnStartup,
        "records",
        crate::common::record_started,
    )
    .subscriber(
        "bill",
        "orders.*",
        KvWatch::new("shop").group(GroupSettings::new("billing").backoff([])),
        bill,
    );
    let error = crate::common::startup_error(app).await?;
    let Error::Setup { problems } = &error else {
        anyhow::bail!("expected a setup error, got {error:?}");
    };
    assert_eq!(
        problems,
        &[
            "subscriber `bill`: group `backoff` must list at least one wait (`[Duration::ZERO]` \
           retries at once), got none"
        ],
    );
    assert!(hook_ran.snapshot().is_empty(), "the on_startup hook ran");
    Ok(())
}

/// Runs the ignored test `name` of this test binary in a process of its own with `vars` set:
/// the environment is the process's, and setting it here would race with the other tests
/// reading it. The child's output, once it passed.
async fn pass_in_own_process(name: &str, vars: &[(&str, &str)]) -> anyhow::Result<String> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?);
    child
        .args(["--exact", "--ignored", "--nocapture", name])
        .envs(vars.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), child.output())
        .await
        .context("the child test did not end within 60 s")??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in its own process: {}\n{stdout}\n{stderr}",
        output.status
    );
    Ok(stdout.into_owned())
}

#[tokio::test]
async fn a_bad_nats_url_fails_start_up_before_any_hook() -> anyhow::Result<()> {
    pass_in_own_process(
        "lifecycle::bad_nats_url_from_the_environment",
        &[("NATS_URL", "nats://alice:s3cret@127.0.0.1:notaport")],
    )
    .await?;
    Ok(())
}

#[tokio::test]
#[ignore = "needs NATS_URL set: run in a process of its own by \
            `a_bad_nats_url_fails_start_up_before_any_hook`"]
async fn bad_nats_url_from_the_environment() -> anyhow::Result<()> {
    let hook_ran = Events::default();
    let app = App::new(BrokerConfig::from_env())
        .without_registered()
        .with_state(hook_ran.clone())
        .hook(
            HookStage::OnStartup,
            "records",
            crate::common::record_started,
        );
    let error = crate::common::startup_error(app).await?;
    assert!(
        matches!(
            &error,
            Error::InvalidUrl { url, variable: Some("NATS_URL"), .. }
                if url == "nats://127.0.0.1:notaport"
        ),
        "{error:?}"
    );
    assert_eq!(
        chain(&error),
        "invalid NATS server URL `nats://127.0.0.1:notaport` (from the environment variable \
         NATS_URL): NATS server URL is invalid: invalid port number"
    );
    assert!(hook_ran.snapshot().is_empty(), "the on_startup hook ran");
    Ok(())
}
