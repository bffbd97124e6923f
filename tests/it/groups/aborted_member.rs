//! A member abandoned at the shutdown timeout (its handler never returns) leaves the group:
//! its membership task ends with it instead of heartbeating on, detached, until the runtime
//! ends.

use super::*;
use futures_util::StreamExt as _;

/// What the app of this test records, and the gate its `on_shutdown` hook waits at.
#[derive(Clone)]
struct Probe {
    events: Events,
    release: Arc<tokio::sync::watch::Sender<bool>>,
}

/// Never returns: the member is abandoned at the shutdown timeout.
async fn stuck(message: KvMessage, State(probe): State<Probe>) {
    probe.events.push(format!("began {}", message.key()));
    std::future::pending::<()>().await;
}

async fn probe_started(State(probe): State<Probe>) {
    probe.events.push("started");
}

/// Holds the shutdown after the subscribers were stopped, connection still up, until released.
async fn hold_shutdown(State(probe): State<Probe>) {
    probe.events.push("on_shutdown");
    let mut release = probe.release.subscribe();
    let _ = tokio::time::timeout(Duration::from_secs(60), release.wait_for(|open| *open)).await;
}

#[tokio::test]
async fn a_member_abandoned_at_the_shutdown_timeout_stops_heartbeating() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const SHUTDOWN: Duration = Duration::from_secs(1);
        // Measured: the key deleted 3 ms after the hook began (the member is abandoned just
        // before it); before the fix it was never deleted, heartbeats going on every 0.4 s.
        const LEAVE_BOUND: Duration = Duration::from_secs(5);
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let probe = Probe {
            events: Events::default(),
            release: Arc::new(tokio::sync::watch::Sender::new(false)),
        };
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(probe.clone())
            .wait_for_catch_up(EVENT_TIMEOUT)
            .shutdown_timeout(SHUTDOWN)
            .subscriber("stuck", PATTERN, group_watch("abandoned", 1), stuck)
            .hook(HookStage::AfterStartup, "started", probe_started)
            .hook(HookStage::OnShutdown, "hold", hold_shutdown);
        let running = RunningApp::spawn(app);
        probe.events.wait_for_event("started").await?;
        let info = info_until(&broker, "abandoned", "one member", |info| {
            info.members.len() == 1
        })
        .await?;
        let member = info.members[0].id.clone();
        store.put("orders.1", "v".into()).await?;
        probe.events.wait_for_event("began orders.1").await?;

        let stopping = tokio::spawn(running.stop());
        probe.events.wait_for_event("on_shutdown").await?;
        // The member was abandoned; the app's connection is still up (the hook holds it).
        let members = jetstream(&server)
            .await?
            .get_key_value(format!("KVG_{BUCKET}_abandoned_members"))
            .await?;
        let abandoned = Instant::now();
        let members_ref = &members;
        let member_ref = &member;
        let left = faststream_testing::wait_for(
            "the abandoned member to leave (its key deleted)",
            LEAVE_BOUND,
            || async {
                let entry = members_ref.entry(member_ref.as_str()).await?;
                let seen = format!("{entry:?}");
                let left = entry
                    .filter(|entry| entry.operation != async_nats::jetstream::kv::Operation::Put);
                anyhow::Ok((left, seen))
            },
        )
        .await?;
        println!(
            "abandoned member left {} after the hook began",
            millis(abandoned.elapsed())
        );
        // And writes nothing after: no new revision for three heartbeat intervals.
        let mut watch = members.watch_all_from_revision(left.revision + 1).await?;
        let quiet = SESSION / 5 * 3;
        let next = tokio::time::timeout(quiet, watch.next()).await;
        assert!(next.is_err(), "written after it left: {next:?}");

        probe.release.send_replace(true);
        stopping.await??.map_err(anyhow::Error::from)?;
        Ok(())
    })
    .await
}
