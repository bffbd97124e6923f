//! Slow and stuck handlers: a handler timeout moves on, a slow subscriber never delays another,
//! and shutdown lets in-flight handlers finish, up to the shutdown timeout.

mod common;

use std::time::{Duration, Instant};

use common::{bucket_with_history, on_each_server, record_started, Recorder, RunningApp};
use faststream_core::{App, HookStage, KvWatch, NatsBroker, State};

/// Sleeps for as many milliseconds as the value says, then records the value.
async fn sleep_then_record(msg: String, State(events): State<Recorder>) {
    events.push(format!("begin {msg}"));
    let millis = msg.parse().unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(millis)).await;
    events.push(format!("end {msg}"));
}

#[tokio::test]
async fn handler_timeout_abandons_the_call_and_moves_on() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = bucket_with_history(&server, "timeouts").await?;
        let events = Recorder::default();
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .handler_timeout(Duration::from_millis(200))
            .subscriber("sleepy", "k", KvWatch::new("timeouts"), sleep_then_record)
            .hook(HookStage::AfterStartup, "started", record_started);
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        store.put("k", "60000".into()).await?; // would take a minute
        store.put("k", "1".into()).await?;
        events.wait_for_event("end 1").await?;
        running.stop().await??;
        assert_eq!(
            events.events(),
            ["started", "begin 60000", "begin 1", "end 1"]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_slow_subscriber_never_delays_another() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        #[derive(Clone)]
        struct Fast(Recorder);
        async fn fast(msg: String, State(fast): State<Fast>) {
            fast.0.push(msg);
        }
        let store = bucket_with_history(&server, "isolation").await?;
        let slow = Recorder::default();
        let quick = Recorder::default();
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .with_state(slow.clone())
            .with_state(Fast(quick.clone()))
            .subscriber("slow", "k", KvWatch::new("isolation"), sleep_then_record)
            .subscriber("fast", "k", KvWatch::new("isolation"), fast)
            .hook(HookStage::AfterStartup, "started", record_started);
        let running = RunningApp::spawn(app);
        slow.wait_for_event("started").await?;
        store.put("k", "60000".into()).await?;
        slow.wait_for_event("begin 60000").await?;
        for i in 0..20 {
            store.put("k", format!("{i}").into()).await?;
        }
        // All 21 reach the fast subscriber while the slow one is still in its first call.
        quick.wait_for("every value", |e| e.len() == 21).await?;
        assert_eq!(slow.events(), ["started", "begin 60000"]);
        drop(running); // abandons the minute-long call
        Ok(())
    })
    .await
}

#[tokio::test]
async fn shutdown_finishes_in_flight_handlers_within_the_timeout() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = bucket_with_history(&server, "graceful").await?;
        let events = Recorder::default();
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .shutdown_timeout(Duration::from_secs(10))
            .subscriber(
                "in_flight",
                "k",
                KvWatch::new("graceful"),
                sleep_then_record,
            )
            .hook(HookStage::AfterStartup, "started", record_started);
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        store.put("k", "300".into()).await?;
        events.wait_for_event("begin 300").await?;
        running.stop().await??;
        // The call in flight was allowed to finish before `run` returned.
        assert_eq!(events.events(), ["started", "begin 300", "end 300"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn shutdown_abandons_handlers_past_the_timeout() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = bucket_with_history(&server, "abandon").await?;
        let events = Recorder::default();
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .shutdown_timeout(Duration::from_millis(300))
            .subscriber("stuck", "k", KvWatch::new("abandon"), sleep_then_record)
            .hook(HookStage::AfterStartup, "started", record_started);
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        store.put("k", "60000".into()).await?;
        events.wait_for_event("begin 60000").await?;
        let stopping = Instant::now();
        running.stop().await??;
        let took = stopping.elapsed();
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
        assert_eq!(events.events(), ["started", "begin 60000"]);
        Ok(())
    })
    .await
}
