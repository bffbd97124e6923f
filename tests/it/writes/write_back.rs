//! Write-back from a handler: written only if the key has not changed since the revision being
//! handled; otherwise `Error::KeyChanged`, and the handler is called again with the newer
//! revision. For a plain watch, and for a consumer-group member (whose changes come from the
//! group's mirror: their revisions are the bucket's, or the write-back could never succeed).

use std::time::Duration;

use faststream_core::kv::group::GroupSettings;
use faststream_core::{App, BrokerConfig, Error, KvMessage, KvWatch, NatsBroker, State};
use faststream_testing::NatsServer;
use tokio::sync::watch;

use crate::common::{
    bucket_with_history, on_each_server, on_each_server_since, Events, RunningApp, EVENT_TIMEOUT,
};

/// What the handler shares with the test.
#[derive(Clone)]
struct Shared {
    events: Events,
    /// The first call (for a `draft`) waits until the test has changed the key.
    changed: watch::Receiver<bool>,
    bucket: &'static str,
}

/// Writes back `processed:<value>` for a value not processed yet; the call for `draft` waits
/// for the test's concurrent edit first. Records each call, and what the write-back returned.
async fn process(
    change: KvMessage,
    broker: NatsBroker,
    State(shared): State<Shared>,
) -> anyhow::Result<()> {
    let value = change.text()?.to_owned();
    shared
        .events
        .push(format!("call {} {value}", change.revision()));
    if value.starts_with("processed:") {
        return Ok(()); // our own write-back: nothing to do
    }
    if value == "draft" {
        shared.events.push("waiting");
        let mut changed = shared.changed.clone();
        changed.wait_for(|changed| *changed).await?;
    }
    let kv = broker.key_value(shared.bucket).await?;
    match kv
        .write_back(&change, format!("processed:{value}").into())
        .await
    {
        Ok(revision) => shared.events.push(format!("wrote {revision}")),
        Err(error) if error.is_key_changed() => {
            let Error::KeyChanged {
                bucket,
                operation,
                key,
                expected_revision,
                current_revision,
            } = &error
            else {
                anyhow::bail!("is_key_changed but {error:?}");
            };
            shared.events.push(format!(
                "changed {bucket} {operation} {key} expected={expected_revision} \
                 current={current_revision:?}"
            ));
            // Called again with the newer revision: nothing to do here.
        }
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

/// Runs the handler on `bucket` with `watch`, writes `draft` and, while the handler holds it,
/// `edited`; checks what the handler got.
async fn write_back_after_a_concurrent_change(
    server: &NatsServer,
    bucket: &'static str,
    watch: KvWatch,
) -> anyhow::Result<()> {
    let kv = bucket_with_history(server, bucket).await?;
    let events = Events::default();
    let (changed, changed_seen) = watch::channel(false);
    let app = App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .with_state(events.clone())
        .with_state(Shared {
            events: events.clone(),
            changed: changed_seen,
            bucket,
        })
        .wait_for_catch_up(EVENT_TIMEOUT)
        .subscriber("process", "doc.*", watch, process)
        .hook(
            faststream_core::HookStage::AfterStartup,
            "started",
            crate::common::record_started,
        );
    let running = RunningApp::spawn(app);
    events.wait_for_event("started").await?;

    let draft = kv.put("doc.1", "draft".into()).await?;
    events.wait_for_event("waiting").await?;
    let edited = kv.put("doc.1", "edited".into()).await?;
    changed.send_replace(true);

    let done = events
        .wait_for("the edit processed", |events| {
            events
                .iter()
                .any(|e| e.starts_with("call") && e.ends_with(" processed:edited"))
        })
        .await?;
    let processed = edited + 1;
    let expected = [
        "started".to_owned(),
        format!("call {draft} draft"),
        "waiting".to_owned(),
        format!("changed {bucket} write back doc.1 expected={draft} current=Some({edited})"),
        format!("call {edited} edited"),
        format!("wrote {processed}"),
        format!("call {processed} processed:edited"),
    ];
    assert_eq!(done, expected);
    // Read from the stream's leader: a consumer group's mirror answers direct gets of the
    // bucket's subjects too, with its own (partitioned) subjects, so `get` may miss the key.
    let stored = crate::common::jetstream(server)
        .await?
        .get_stream(format!("KV_{bucket}"))
        .await?
        .get_last_raw_message_by_subject(&format!("$KV.{bucket}.doc.1"))
        .await?;
    assert_eq!(
        (stored.sequence, &stored.payload[..]),
        (processed, &b"processed:edited"[..])
    );
    running.stop().await??;
    Ok(())
}

#[tokio::test]
async fn a_handler_writing_back_after_its_key_changed_gets_key_changed() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        write_back_after_a_concurrent_change(&server, "wb_watch", KvWatch::new("wb_watch")).await
    })
    .await
}

#[tokio::test]
async fn a_group_member_writes_back_at_the_buckets_revisions() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let watch = KvWatch::new("wb_group").group(
            GroupSettings::new("writers")
                .partitions(2)
                .session_timeout(Duration::from_secs(2)),
        );
        write_back_after_a_concurrent_change(&server, "wb_group", watch).await
    })
    .await
}
