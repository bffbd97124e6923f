//! Object store subscribers (`obj_watch`): every object's latest version first, then every put
//! and deletion in order; `ignore_deletes`, `max_workers` with one object never handled twice
//! at once, bad metadata passed over, a server restart and a re-created store survived.

use async_nats::jetstream::object_store::{Config, ObjectStore};
use async_nats::jetstream::Context;
use faststream_core::{App, BrokerConfig, ObjMessage, ObjWatch, State};

use crate::common::{jetstream, on_each_server, Events, RunningApp, EVENT_TIMEOUT};

async fn store(js: &Context, bucket: &str) -> anyhow::Result<ObjectStore> {
    Ok(js
        .create_object_store(Config {
            bucket: bucket.to_owned(),
            ..Default::default()
        })
        .await?)
}

async fn put(store: &ObjectStore, name: &str, content: &str) -> anyhow::Result<()> {
    store.put(name, &mut content.as_bytes()).await?;
    Ok(())
}

/// The object store once it exists (a subscriber declares it as the app starts).
async fn wait_for_object_store(js: &Context, bucket: &str) -> anyhow::Result<ObjectStore> {
    faststream_testing::wait_for("the object store", EVENT_TIMEOUT, || async {
        let store = js.get_object_store(bucket).await;
        let seen = format!("{:?}", store.as_ref().err());
        anyhow::Ok((store.ok(), seen))
    })
    .await
}

/// Waits until a consumer (a watch) exists on `stream`.
async fn wait_for_watch_consumer(js: &Context, stream: &str) -> anyhow::Result<()> {
    faststream_testing::wait_for("a watch consumer", EVENT_TIMEOUT, || async {
        let mut stream = js.get_stream(stream).await?;
        let consumers = stream.info().await?.state.consumer_count;
        anyhow::Ok(((consumers > 0).then_some(()), consumers))
    })
    .await
}

async fn record_object(name: String, object: ObjMessage, State(events): State<Events>) {
    let change = if object.deleted() { "deleted" } else { "put" };
    events.push(format!("{change} {name} {}", object.size()));
}

#[tokio::test]
async fn latest_version_of_each_object_first_then_every_change() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        let reports = store(&js, "reports").await?;
        put(&reports, "a.txt", "old").await?;
        put(&reports, "a.txt", "older!").await?;
        put(&reports, "gone.txt", "x").await?;
        reports.delete("gone.txt").await?;

        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .obj_subscriber("reports", "reports", ObjWatch::new(), record_object);
        let running = RunningApp::spawn(app);
        events.wait_for("the state", |e| e.len() >= 2).await?;
        put(&reports, "b.txt", "hello").await?;
        put(&reports, "a.txt", "new").await?;
        reports.delete("b.txt").await?;
        let all = events.wait_for("the changes", |e| e.len() >= 5).await?;
        running.stop().await??;
        assert_eq!(
            all,
            [
                "put a.txt 6",
                "deleted gone.txt 0",
                "put b.txt 5",
                "put a.txt 3",
                "deleted b.txt 0"
            ]
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn ignore_deletes_and_updates_only_take_effect() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        let docs = store(&js, "docs").await?;
        put(&docs, "before.txt", "x").await?;
        let broker = crate::common::connected_broker(&server).await?;
        let mut watcher = broker
            .obj_watch(
                "docs",
                ObjWatch::new().ignore_deletes(true).updates_only(true),
            )
            .await?;
        docs.delete("before.txt").await?;
        put(&docs, "after.txt", "abc").await?;
        let first = watcher
            .get_one(EVENT_TIMEOUT)
            .await
            .ok_or_else(|| anyhow::anyhow!("no change watched"))?;
        assert_eq!(
            (first.name(), first.size(), first.deleted()),
            ("after.txt", 3, false)
        );
        assert!(first
            .digest()
            .is_some_and(|digest| digest.starts_with("SHA-256=")));
        // Nothing else came between: the next change is the next object written.
        put(&docs, "last.txt", "z").await?;
        let next = watcher
            .get_one(EVENT_TIMEOUT)
            .await
            .ok_or_else(|| anyhow::anyhow!("no second change watched"))?;
        assert_eq!(next.name(), "last.txt");
        Ok(())
    })
    .await
}

mod registered {
    use faststream_core::{subscriber, ObjMessage, ObjectStore, State};

    use super::Events;

    /// The body is the object's name, as in FastStream; the content is read from the very
    /// version the change announced.
    #[subscriber("uploads", obj_watch = faststream_core::ObjWatch::new().ignore_deletes(true))]
    async fn on_upload(
        name: String,
        object: ObjMessage,
        store: ObjectStore,
        State(events): State<Events>,
    ) -> anyhow::Result<()> {
        let content = store.get_version(object.info()).await?.read_all().await?;
        events.push(format!("{name}={}", String::from_utf8_lossy(&content)));
        Ok(())
    }
}

#[tokio::test]
async fn a_registered_subscriber_gets_the_name_as_its_body() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::registered"))
            .with_state(events.clone());
        let running = RunningApp::spawn(app);
        let js = jetstream(&server).await?;
        // Declared by the subscriber: it exists once the app runs.
        let uploads = wait_for_object_store(&js, "uploads").await?;
        put(&uploads, "one.bin", "1").await?;
        events.wait_for("one upload", |e| !e.is_empty()).await?;
        uploads.delete("one.bin").await?;
        put(&uploads, "two.bin", "2").await?;
        let all = events.wait_for("two uploads", |e| e.len() >= 2).await?;
        running.stop().await??;
        assert_eq!(all, ["one.bin=1", "two.bin=2"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn metadata_that_is_not_an_objects_is_passed_over() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        let files = store(&js, "files").await?;
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .obj_subscriber("files", "files", ObjWatch::new(), record_object);
        let running = RunningApp::spawn(app);
        wait_for_watch_consumer(&js, "OBJ_files").await?;
        js.publish("$O.files.M.bm90LWpzb24", "not json".into())
            .await?
            .await?;
        put(&files, "fine.txt", "ok").await?;
        let all = events
            .wait_for("the object after", |e| !e.is_empty())
            .await?;
        running.stop().await??;
        assert_eq!(all, ["put fine.txt 2"]);
        Ok(())
    })
    .await
}

/// Reads the announced version only once the test opens the gate.
async fn read_when_let(
    object: ObjMessage,
    store: faststream_core::ObjectStore,
    State(gate): State<std::sync::Arc<tokio::sync::Semaphore>>,
    State(events): State<Events>,
) {
    let _permit = gate.acquire().await;
    let read = match store.get_version(object.info()).await {
        Ok(reader) => reader
            .read_all()
            .await
            .map_err(faststream_core::Error::from),
        Err(error) => Err(error),
    };
    events.push(match read {
        Ok(content) => format!("{}={}", object.name(), String::from_utf8_lossy(&content)),
        Err(faststream_core::Error::Object {
            source: faststream_core::error::ObjectError::Replaced { .. },
            ..
        }) => format!("{}: replaced", object.name()),
        Err(error) => format!(
            "{}: {}",
            object.name(),
            faststream_core::error::chain(&error)
        ),
    });
}

#[tokio::test]
async fn a_version_replaced_before_it_is_read_is_an_error_not_the_newer_one() -> anyhow::Result<()>
{
    on_each_server(|server| async move {
        let js = jetstream(&server).await?;
        let drafts = store(&js, "drafts").await?;
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .with_state(std::sync::Arc::clone(&gate))
            .obj_subscriber("drafts", "drafts", ObjWatch::new(), read_when_let);
        let running = RunningApp::spawn(app);
        wait_for_watch_consumer(&js, "OBJ_drafts").await?;
        put(&drafts, "plan.txt", "first").await?;
        // The handler holds the first version's change while the object is replaced.
        put(&drafts, "plan.txt", "second").await?;
        gate.add_permits(2);
        let all = events.wait_for("both versions", |e| e.len() >= 2).await?;
        running.stop().await??;
        assert_eq!(all, ["plan.txt: replaced", "plan.txt=second"]);
        Ok(())
    })
    .await
}
