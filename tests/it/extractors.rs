//! Handler arguments: `Json<T>`, `Path<T>`, `KvMessage`, `State<T>`, custom extractors, and a
//! watch without a handler.

use std::time::Duration;

use crate::common::{on_each_server, Events, RunningApp};
use anyhow::Context as _;
use faststream_core::error::Rejection;
use faststream_core::extract::{FromMessage, Message};
use faststream_core::{
    App, BrokerConfig, Error, HookStage, KvWatch, Operation, Path, State, SubscriberContext,
};

#[derive(Debug, serde::Deserialize)]
struct User {
    name: String,
    age: u32,
}

mod users {
    use super::{Events, User};
    use faststream_core::{after_startup, subscriber, Json, KvMessage, Path, State};

    #[after_startup]
    async fn started(State(events): State<Events>) {
        events.push("started");
    }

    #[subscriber("users.{id}", kv_watch = "accounts")]
    async fn on_user(
        Json(user): Json<User>,
        Path(id): Path<String>,
        meta: KvMessage,
        State(events): State<Events>,
    ) {
        events.push(format!(
            "user {id}: {} {} @{}",
            user.name,
            user.age,
            meta.revision()
        ));
    }

    #[subscriber("users.{id}", kv_watch = "accounts")]
    async fn on_user_or_delete(
        Path(id): Path<u32>,
        Json(user): Json<Option<User>>,
        State(events): State<Events>,
    ) {
        match user {
            Some(user) => events.push(format!("maybe {id}: {}", user.name)),
            None => events.push(format!("maybe {id}: deleted")),
        }
    }
}

#[tokio::test]
async fn json_path_and_metadata() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let store = crate::common::bucket_with_history(&server, "accounts").await?;
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::users"))
            .with_state(events.clone());
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        store
            .put("users.7", r#"{"name":"ann","age":30}"#.into())
            .await?;
        store.put("users.8", "{not json".into()).await?; // logged, both handlers skip it
        store.put("users.8", r#"{"name":"bob"}"#.into()).await?; // missing field
        store.delete("users.7").await?;
        store
            .put("users.x", r#"{"name":"cy","age":5}"#.into())
            .await?; // `x` is no u32
        store
            .put("users.9", r#"{"name":"dee","age":41}"#.into())
            .await?;
        // Both subscribers run in their own tasks: wait for each one's last entry.
        let all = events
            .wait_for("the last user in both subscribers", |e| {
                e.iter().any(|e| e == "maybe 9: dee") && e.iter().any(|e| e.starts_with("user 9:"))
            })
            .await?;
        running.stop().await??;
        let on_user: Vec<_> = all.iter().filter(|e| e.starts_with("user ")).collect();
        assert_eq!(
            on_user,
            ["user 7: ann 30 @1", "user x: cy 5 @5", "user 9: dee 41 @6"]
        );
        let maybe: Vec<_> = all.iter().filter(|e| e.starts_with("maybe ")).collect();
        assert_eq!(maybe, ["maybe 7: ann", "maybe 7: deleted", "maybe 9: dee"]);
        Ok(())
    })
    .await
}

mod optional {
    use super::{Events, User};
    use faststream_core::error::Rejection;
    use faststream_core::{after_startup, subscriber, Json, KvMessage, State};

    #[after_startup]
    async fn started(State(events): State<Events>) {
        events.push("started");
    }

    /// Called for every entry, the user `None` when the value is not one.
    #[subscriber("people.*", kv_watch = "directory")]
    async fn maybe_user(user: Option<Json<User>>, meta: KvMessage, State(events): State<Events>) {
        let user = user.map_or("none".to_owned(), |Json(user)| user.name);
        events.push(format!(
            "option {} @{}: {user}",
            meta.key(),
            meta.revision()
        ));
    }

    /// Called for every entry, with the reason when the value is not a user.
    #[subscriber("people.*", kv_watch = "directory")]
    async fn user_or_reason(
        user: Result<Json<User>, Rejection>,
        meta: KvMessage,
        State(events): State<Events>,
    ) {
        let outcome = match user {
            Ok(Json(user)) => user.name,
            Err(rejection) => format!("rejected: {rejection}"),
        };
        events.push(format!(
            "result {} @{}: {outcome}",
            meta.key(),
            meta.revision()
        ));
    }
}

/// `Option<T>` and `Result<T, Rejection>`: the handler is called for entries `T` cannot be
/// built from (bad JSON, a wrong shape, a deletion), with `None` or the rejection.
#[tokio::test]
async fn option_and_result_extractors_call_the_handler_anyway() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::optional"))
            .with_state(events.clone());
        // The app's broker, connected by the app, writes as a handler would.
        let broker = app.broker();
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        assert!(broker.is_connected());
        let store = broker.key_value("directory").await?;
        store
            .put("people.ann", r#"{"name":"ann","age":30}"#.into())
            .await?;
        store.put("people.bad", "{not json".into()).await?;
        store.put("people.bob", r#"{"name":"bob"}"#.into()).await?; // no age
        store.delete("people.ann").await?;
        let all = events
            .wait_for("the deletion in both subscribers", |events| {
                events
                    .iter()
                    .filter(|e| e.contains("people.ann @4"))
                    .count()
                    == 2
            })
            .await?;
        running.stop().await??;
        let option: Vec<_> = all.iter().filter(|e| e.starts_with("option ")).collect();
        assert_eq!(
            option,
            [
                "option people.ann @1: ann",
                "option people.bad @2: none",
                "option people.bob @3: none",
                "option people.ann @4: none",
            ]
        );
        let result: Vec<_> = all.iter().filter(|e| e.starts_with("result ")).collect();
        assert_eq!(result.len(), 4, "{result:?}");
        assert_eq!(result[0], "result people.ann @1: ann");
        assert!(
            result[1].starts_with("result people.bad @2: rejected: value is not valid JSON"),
            "{result:?}"
        );
        assert!(result[2].contains("rejected:"), "{result:?}");
        assert!(
            result[3].starts_with("result people.ann @4: rejected: DEL has no value"),
            "{result:?}"
        );
        Ok(())
    })
    .await
}

#[derive(Debug, serde::Deserialize)]
struct Ids {
    tenant: String,
    id: u64,
}

/// A custom extractor: the value's length.
struct ValueLen(usize);

impl FromMessage for ValueLen {
    fn from_message(message: &Message, _: &SubscriberContext) -> Result<Self, Rejection> {
        Ok(ValueLen(message.payload().len()))
    }
}

#[derive(Clone)]
struct Prefix(&'static str);

#[tokio::test]
async fn several_placeholders_states_and_custom_extractors() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        async fn by_tuple(
            Path((tenant, id)): Path<(String, u64)>,
            State(events): State<Events>,
            State(prefix): State<Prefix>,
        ) {
            events.push(format!("{}tuple {tenant}/{id}", prefix.0));
        }
        async fn by_name(
            Path(ids): Path<Ids>,
            ValueLen(len): ValueLen,
            State(events): State<Events>,
        ) {
            events.push(format!("struct {}/{} len={len}", ids.tenant, ids.id));
        }
        let events = Events::default();
        let pattern = "tenants.{tenant}.users.{id}";
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .with_state(Prefix("> "))
            .subscriber("by_tuple", pattern, KvWatch::new("tenants"), by_tuple)
            .subscriber("by_name", pattern, KvWatch::new("tenants"), by_name)
            .hook(
                HookStage::AfterStartup,
                "started",
                crate::common::record_started,
            );
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        let broker = crate::common::connected_broker(&server).await?;
        let store = broker.key_value("tenants").await?;
        store.put("tenants.acme.users.12", "abc".into()).await?;
        store.put("tenants.acme.users.nope", "x".into()).await?;
        store.put("tenants.zen.users.3", "wxyz".into()).await?;
        let all = events
            .wait_for("both handlers", |e| {
                e.iter().filter(|e| e.contains("zen")).count() == 2
            })
            .await?;
        running.stop().await??;
        let tuple: Vec<_> = all.iter().filter(|e| e.contains("tuple")).collect();
        assert_eq!(tuple, ["> tuple acme/12", "> tuple zen/3"]);
        let named: Vec<_> = all.iter().filter(|e| e.starts_with("struct")).collect();
        assert_eq!(named, ["struct acme/12 len=3", "struct zen/3 len=4"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn path_without_placeholders_is_a_setup_error() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        async fn wants_path(Path(_id): Path<u32>) {}
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .subscriber("wants_path", "users.*", KvWatch::new("b"), wants_path);
        let error = crate::common::startup_error(app).await?;
        assert!(matches!(error, Error::Setup { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "invalid application setup:\n  - subscriber `wants_path`: `Path<u32>` needs \
             `{name}` placeholders, and the pattern `users.*` has none"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn watch_without_a_handler() -> anyhow::Result<()> {
    use futures_util::StreamExt as _;
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let store = broker.key_value("plain").await?;
        store.put("orders.1", "one".into()).await?;
        store.put("orders.2", "two".into()).await?;
        store.put("orders.1", r#""uno""#.into()).await?;

        let mut watcher = broker.kv_watch("orders.*", KvWatch::new("plain")).await?;
        let first = watcher
            .get_one(Duration::from_secs(5))
            .await
            .context("first")?;
        assert_eq!((first.key(), first.text()?), ("orders.2", "two"));
        let second = watcher
            .get_one(Duration::from_secs(5))
            .await
            .context("second")?;
        assert_eq!(second.key(), "orders.1");
        assert_eq!(second.json::<String>()?, "uno");

        let mut changes = watcher.boxed();
        store.delete("orders.2").await?;
        let deleted = tokio::time::timeout(Duration::from_secs(5), changes.next())
            .await?
            .context("stream ended")?;
        assert_eq!(
            (deleted.key(), deleted.operation()),
            ("orders.2", Operation::Delete)
        );

        let missing = broker
            .kv_watch("x", KvWatch::new("nowhere").declare(false))
            .await;
        assert!(
            matches!(missing, Err(Error::BucketNotFound { .. })),
            "{:?}",
            missing.err()
        );
        let bad = broker.kv_watch("a..b", KvWatch::new("plain")).await;
        assert!(matches!(bad, Err(Error::InvalidName(_))), "{:?}", bad.err());
        Ok(())
    })
    .await
}

/// Copies each `in.<id>` to `out.<id>` through the `KeyValue` argument: the bucket watched.
async fn copy_out(
    message: faststream_core::KvMessage,
    kv: faststream_core::KeyValue,
) -> anyhow::Result<()> {
    let id = message.key().trim_start_matches("in.");
    kv.put(format!("out.{id}"), message.value().clone()).await?;
    Ok(())
}

#[tokio::test]
async fn the_key_value_argument_is_the_bucket_watched() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .subscriber("copy_out", "in.*", KvWatch::new("copies"), copy_out);
        let running = RunningApp::spawn(app);
        let broker = crate::common::connected_broker(&server).await?;
        let copies = broker.key_value("copies").await?;
        copies.put("in.1", "one".into()).await?;
        let copied = faststream_testing::wait_for("the copy", crate::common::EVENT_TIMEOUT, || {
            let copies = copies.clone();
            async move {
                let value = copies.get("out.1").await?;
                anyhow::Ok((value.clone(), format!("{value:?}")))
            }
        })
        .await?;
        running.stop().await??;
        assert_eq!(copied.as_ref(), b"one");
        Ok(())
    })
    .await
}
