//! The extractors and options of a typical service compile as documented.

use std::time::Duration;

use faststream_core::{after_startup, subscriber, App, Json, KvMessage, KvWatch, NatsBroker, Path, State, BrokerConfig};

#[derive(serde::Deserialize)]
struct User {
    name: String,
    age: u32,
}

#[derive(Clone)]
struct Db;

impl Db {
    fn connect() -> Self {
        Db
    }
}

#[derive(serde::Deserialize)]
struct Ids {
    tenant: String,
    id: u64,
}

#[subscriber("users.{id}", kv_watch = "accounts")]
async fn on_user(Json(user): Json<User>, Path(id): Path<String>, meta: KvMessage) {
    let _ = (
        user.name,
        user.age,
        id,
        meta.bucket(),
        meta.key(),
        meta.revision(),
    );
    let _ = (meta.operation(), meta.created(), meta.delta(), meta.value());
}

#[subscriber(
    "audit.>",
    kv_watch = KvWatch::new("accounts").include_history(true).ignore_deletes(true)
)]
async fn audit(msg: String, meta: KvMessage, State(db): State<Db>) -> anyhow::Result<()> {
    let _ = (msg, meta, db);
    Ok(())
}

#[subscriber("tenants.{tenant}.users.{id}", kv_watch = KvWatch::new("accounts")
    .meta_only(true)
    .updates_only(true)
    .inactive_threshold(Duration::from_secs(60))
    .timeout(Duration::from_secs(2)))]
async fn by_name(
    Path(ids): Path<Ids>,
    Path((tenant, id)): Path<(String, u64)>,
    Json(user): Json<Option<User>>,
) {
    let _ = (ids.tenant, ids.id, tenant, id, user.map(|u| u.name));
}

#[after_startup]
async fn ready(broker: NatsBroker, State(_db): State<Db>) {
    let _ = broker.is_connected();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("FASTSTREAM_UI_RUN").is_some() {
        App::new(BrokerConfig::from_env())
            .with_state(Db::connect())
            .run()
            .await?;
    }
    Ok(())
}
