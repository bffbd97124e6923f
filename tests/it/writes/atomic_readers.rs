//! What each reader sees of an atomic commit: a watch handler gets each key as its own call,
//! in commit order, `KvMessage::batch` telling which commit; a view applies the commit whole,
//! even when the commit's last write is not of its keys; a consumer-group member sees the keys
//! separately (the group's mirror drops batch headers) at the bucket's revisions.

use std::time::{Duration, Instant};

use faststream_core::kv::group::GroupSettings;
use faststream_core::{App, BrokerConfig, HookStage, KvMessage, KvView, KvWatch, State};
use faststream_testing::NatsServer;

use super::atomic_bucket;
use crate::common::{
    connected_broker, on_each_server_since, record_started, Events, Recorder, RunningApp,
    EVENT_TIMEOUT,
};

/// A call as the handler saw it: key, revision, and the commit it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    key: String,
    revision: u64,
    batch: Option<(String, u64, bool)>,
}

async fn record(message: KvMessage, State(seen): State<Recorder<Seen>>) {
    seen.push(Seen {
        key: message.key().to_owned(),
        revision: message.revision(),
        batch: message
            .batch()
            .map(|batch| (batch.id().to_owned(), batch.sequence(), batch.is_commit())),
    });
}

/// Runs `record` on `acct.*` of `bucket` with `watch` until the returned app is stopped.
async fn recording_app(
    server: &NatsServer,
    watch: KvWatch,
) -> anyhow::Result<(RunningApp, Recorder<Seen>)> {
    let seen = Recorder::<Seen>::default();
    let events = Events::default();
    let app = App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .with_state(seen.clone())
        .with_state(events.clone())
        .wait_for_catch_up(EVENT_TIMEOUT)
        .subscriber("record", "acct.*", watch, record)
        .hook(HookStage::AfterStartup, "started", record_started);
    let running = RunningApp::spawn(app);
    events.wait_for_event("started").await?;
    Ok((running, seen))
}

#[tokio::test]
async fn a_watch_handler_gets_each_key_of_a_commit_as_its_own_call() -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let kv = atomic_bucket(&server, "readers_watch", 5).await?;
        let (running, seen) = recording_app(&server, KvWatch::new("readers_watch")).await?;
        let committed = kv
            .atomic()
            .put("acct.a", "1".into())
            .put("acct.b", "2".into())
            .put("acct.c", "3".into())
            .commit()
            .await?;
        let calls = seen.wait_for_count(3).await?;
        let id = committed.batch_id().to_owned();
        let expected: Vec<Seen> = committed
            .revisions()
            .iter()
            .zip(1..)
            .map(|((key, revision), sequence)| Seen {
                key: key.clone(),
                revision: *revision,
                batch: Some((id.clone(), sequence, sequence == 3)),
            })
            .collect();
        assert_eq!(calls, expected);
        // A write alone has no batch.
        let alone = kv.put("acct.a", "4".into()).await?;
        let calls = seen.wait_for_count(4).await?;
        assert_eq!((calls[3].revision, &calls[3].batch), (alone, &None));
        running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_group_member_sees_a_commits_keys_separately_at_the_buckets_revisions(
) -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let kv = atomic_bucket(&server, "readers_group", 5).await?;
        let watch = KvWatch::new("readers_group").group(
            GroupSettings::new("members")
                .partitions(4)
                .session_timeout(Duration::from_secs(2)),
        );
        let (running, seen) = recording_app(&server, watch).await?;
        let committed = kv
            .atomic()
            .put("acct.a", "1".into())
            .put("acct.b", "2".into())
            .put("acct.c", "3".into())
            .commit()
            .await?;
        let mut calls = seen.wait_for_count(3).await?;
        // Partitions run side by side: the keys in any order, each at its revision, no batch.
        calls.sort_by_key(|seen| seen.revision);
        let expected: Vec<Seen> = committed
            .revisions()
            .iter()
            .map(|(key, revision)| Seen {
                key: key.clone(),
                revision: *revision,
                batch: None,
            })
            .collect();
        assert_eq!(calls, expected);
        running.stop().await??;
        Ok(())
    })
    .await
}

/// Waits until `view` shows `a` and `b` as given.
async fn wait_for_view(view: &KvView<i64>, a: i64, b: i64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut changes = view.clone();
    tokio::time::timeout(EVENT_TIMEOUT, async {
        loop {
            let snapshot = view.snapshot();
            let values = (
                snapshot.get("acct.a").map(|v| **v),
                snapshot.get("acct.b").map(|v| **v),
            );
            if values == (Some(a), Some(b)) {
                return anyhow::Ok(());
            }
            changes.changed().await?;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("the view never showed a={a} b={b}: {:?}", view.keys()))??;
    Ok(started.elapsed())
}

#[tokio::test]
async fn a_view_applies_a_commit_whole_even_if_its_last_write_is_of_other_keys(
) -> anyhow::Result<()> {
    on_each_server_since(2, 12, |server| async move {
        let kv = atomic_bucket(&server, "readers_view", 5).await?;
        let a = kv.put_json("acct.a", &60i64).await?;
        let b = kv.put_json("acct.b", &40i64).await?;
        let broker = connected_broker(&server).await?;
        let view: KvView<i64> = broker.kv_view("readers_view", "acct.*").await?;
        assert_eq!(
            (
                view.get("acct.a").map(|v| *v),
                view.get("acct.b").map(|v| *v)
            ),
            (Some(60), Some(40))
        );

        // The commit's last write (`log.last`) is not of the view's keys: the view learns from
        // the server that it has the rest, and applies the two transfers together.
        let committed = kv
            .atomic()
            .update_json("acct.a", &50i64, a)
            .update_json("acct.b", &50i64, b)
            .put_json("log.last", &"a->b 10")
            .commit()
            .await?;
        let took = wait_for_view(&view, 50, 50).await?;
        assert_eq!(view.revision(), committed.revision("acct.b").unwrap_or(0));
        assert!(took < Duration::from_secs(2), "the view took {took:?}");

        // And when the last write is of its keys.
        let committed = kv
            .atomic()
            .put_json("log.last", &"b->a 30")
            .update_json("acct.b", &20i64, committed.revision("acct.b").unwrap_or(0))
            .update_json("acct.a", &80i64, committed.revision("acct.a").unwrap_or(0))
            .commit()
            .await?;
        wait_for_view(&view, 80, 20).await?;
        assert_eq!(view.revision(), committed.last_revision());
        println!(
            "nats-server {}: a commit ending outside the view's keys was applied after {took:?}",
            server.binary().version
        );
        Ok(())
    })
    .await
}
