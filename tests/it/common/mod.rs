//! Shared by the integration tests: the servers to test against, a recorder that handlers write
//! to and tests wait on, and an app running in the background.

mod recorder;

use std::time::Duration;

use anyhow::Context as _;
use faststream_core::{App, BrokerConfig, NatsBroker};
use faststream_testing::{NatsServer, ServerBinary, ServerVersions};
pub use recorder::Recorder;

/// The event lines handlers and hooks record, in order.
pub type Events = Recorder<String>;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for an event before failing.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Every nats-server binary to test against (see `ServerBinary::discover`).
pub fn servers() -> Vec<ServerBinary> {
    match ServerBinary::discover() {
        Ok(binaries) => binaries,
        Err(error) => panic!(
            "no nats-server to test against: {error:#}. `cargo xtask test` installs both \
             versions the suite needs"
        ),
    }
}

/// The servers in `versions`. None found fails the test, naming the versions it needs and how
/// to get them; under `FASTSTREAM_ALLOW_SKIPS` it records a skip instead and returns none (see
/// `faststream_testing::require_servers`). The test is named by its thread, else by the caller's
/// source line.
#[track_caller]
pub fn servers_in(versions: ServerVersions) -> anyhow::Result<Vec<ServerBinary>> {
    let caller = std::panic::Location::caller().to_string();
    faststream_testing::require_servers(versions, &servers(), &caller)
}

/// Starts a server of each version in turn and runs `test` against it; the failure names the
/// server version.
pub async fn on_each_server<F, Fut>(test: F) -> anyhow::Result<()>
where
    F: Fn(NatsServer) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    on_servers(servers(), test).await
}

/// [`on_each_server`] for a feature of nats-server `major.minor` and later: runs on every such
/// server found, and fails when there is none ([`servers_in`]); older servers are not started
/// (their refusal is tested on its own, with [`on_each_server_before`]).
#[track_caller]
pub fn on_each_server_since<F, Fut>(
    major: u32,
    minor: u32,
    test: F,
) -> impl std::future::Future<Output = anyhow::Result<()>>
where
    F: Fn(NatsServer) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let binaries = servers_in(ServerVersions::Since(major, minor));
    async move { on_servers(binaries?, test).await }
}

/// [`on_each_server`] for what servers before `major.minor` do (refuse a feature): runs on every
/// such server found, and fails when there is none ([`servers_in`]).
#[track_caller]
pub fn on_each_server_before<F, Fut>(
    major: u32,
    minor: u32,
    test: F,
) -> impl std::future::Future<Output = anyhow::Result<()>>
where
    F: Fn(NatsServer) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let binaries = servers_in(ServerVersions::Before(major, minor));
    async move { on_servers(binaries?, test).await }
}

/// [`on_each_server`] for a test that branches on `version_at_least(major, minor)`: both
/// branches must run, so it fails unless a server on each side of `major.minor` is found
/// ([`servers_in`]; under the opt-out, the missing side is recorded and the other one runs).
#[track_caller]
pub fn on_each_server_before_and_since<F, Fut>(
    major: u32,
    minor: u32,
    test: F,
) -> impl std::future::Future<Output = anyhow::Result<()>>
where
    F: Fn(NatsServer) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let caller = std::panic::Location::caller().to_string();
    let found = servers();
    let before =
        faststream_testing::require_servers(ServerVersions::Before(major, minor), &found, &caller);
    let since =
        faststream_testing::require_servers(ServerVersions::Since(major, minor), &found, &caller);
    async move {
        let (mut binaries, since) = (before?, since?);
        binaries.extend(since);
        on_servers(binaries, test).await
    }
}

/// Starts a server of each of `binaries` in turn and runs `test` against it.
async fn on_servers<F, Fut>(binaries: Vec<ServerBinary>, test: F) -> anyhow::Result<()>
where
    F: Fn(NatsServer) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    faststream_testing::init_test_logging();
    for binary in binaries {
        tracing::info!(version = %binary.version, path = %binary.path.display(), "test server");
        let server = NatsServer::start(&binary)
            .await
            .with_context(|| format!("starting nats-server {}", binary.version))?;
        test(server)
            .await
            .with_context(|| format!("on nats-server {}", binary.version))?;
    }
    Ok(())
}

/// An app running in the background until [`RunningApp::stop`].
pub struct RunningApp {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<faststream_core::Result<()>>,
}

impl RunningApp {
    pub fn spawn(app: App) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Signals shutdown and returns what `run_until` returned.
    pub async fn stop(mut self) -> anyhow::Result<faststream_core::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.finish().await
    }

    /// Waits for the app to end by itself (for start-up failures).
    pub async fn finish(self) -> anyhow::Result<faststream_core::Result<()>> {
        let result = tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .context("the app did not stop within 60 s")?
            .context("the app task panicked")?;
        Ok(result)
    }
}

/// A raw async-nats JetStream context on `server`, for writing to buckets from the outside.
pub async fn jetstream(server: &NatsServer) -> anyhow::Result<async_nats::jetstream::Context> {
    let client = async_nats::connect(server.url()).await?;
    Ok(async_nats::jetstream::new(client))
}

/// The configurations of the consumers on a bucket's stream, as the server reports them.
pub async fn consumer_configs(
    server: &NatsServer,
    bucket: &str,
) -> anyhow::Result<Vec<async_nats::jetstream::consumer::Config>> {
    use futures_util::TryStreamExt as _;
    let stream = jetstream(server)
        .await?
        .get_stream(format!("KV_{bucket}"))
        .await?;
    let infos: Vec<_> = stream.consumers().try_collect().await?;
    Ok(infos.into_iter().map(|info| info.config).collect())
}

/// A handler recording `OP key "value" size=N` for each entry.
pub async fn record_entry(
    message: faststream_core::KvMessage,
    faststream_core::State(events): faststream_core::State<Events>,
) {
    events.push(format!(
        "{} {} {:?} size={}",
        message.operation(),
        message.key(),
        String::from_utf8_lossy(message.value()),
        message.value_size()
    ));
}

/// A hook recording `started`, to know when every watch is running.
pub async fn record_started(faststream_core::State(events): faststream_core::State<Events>) {
    events.push("started");
}

/// Messages the server received from clients, summed over the open connections: unchanged
/// across a call means the call made no request.
pub async fn client_messages(server: &NatsServer) -> anyhow::Result<u64> {
    let connz = server.monitor("/connz").await?;
    let connections = connz["connections"]
        .as_array()
        .context("connz without connections")?;
    Ok(connections
        .iter()
        .filter_map(|connection| connection["in_msgs"].as_u64())
        .sum())
}

/// Creates `bucket` keeping 64 revisions per key, through a fresh connection. Tests that write
/// one key several times in a row need it: with the default history of 1 the server drops a
/// superseded revision, and a watch that had not been sent it yet never sees it.
pub async fn bucket_with_history(
    server: &NatsServer,
    bucket: &str,
) -> anyhow::Result<faststream_core::KeyValue> {
    let broker = NatsBroker::connect(BrokerConfig::new(server.url())).await?;
    Ok(broker
        .key_value_with(faststream_core::kv::BucketConfig::new(bucket).history(64))
        .await?)
}

/// Runs `app`, which must stop by itself with an error (a start-up failure), and returns it.
pub async fn startup_error(app: App) -> anyhow::Result<faststream_core::Error> {
    RunningApp::spawn(app)
        .finish()
        .await?
        .err()
        .context("run() should have failed")
}

/// A broker connected to `server`.
pub async fn connected_broker(server: &NatsServer) -> anyhow::Result<faststream_core::NatsBroker> {
    let broker = NatsBroker::connect(BrokerConfig::new(server.url())).await?;
    Ok(broker)
}

/// Waits until the server has no client connection left.
pub async fn wait_for_no_connections(server: &NatsServer) -> anyhow::Result<()> {
    faststream_testing::wait_for("no connection left", EVENT_TIMEOUT, || async {
        let connz = server.monitor("/connz").await?;
        anyhow::Ok((
            (connz["num_connections"].as_u64() == Some(0)).then_some(()),
            connz,
        ))
    })
    .await
}

/// Client connections the server has accepted since it started (the harness's readiness probe
/// counts too, hence comparisons with a baseline).
pub async fn total_connections(server: &NatsServer) -> anyhow::Result<u64> {
    server.varz().await?["total_connections"]
        .as_u64()
        .context("varz without total_connections")
}

/// The Reliability section's promises, checked from what two watchers of one bucket recorded
/// through faults: the `include_history` watcher saw revisions `1..=last` exactly once, in
/// order; the default watcher (events `key@revision`) saw, per key, strictly increasing
/// revisions ending at the key's current one, for all `keys` keys.
pub async fn assert_watch_guarantees(
    store: &async_nats::jetstream::kv::Store,
    history: &[u64],
    latest: &[String],
    last: u64,
    keys: u64,
) -> anyhow::Result<()> {
    assert_eq!(history, (1..=last).collect::<Vec<_>>(), "include_history");
    let mut per_key: std::collections::BTreeMap<&str, u64> = std::collections::BTreeMap::new();
    for event in latest {
        let (key, revision) = event.split_once('@').context("event")?;
        let revision: u64 = revision.parse()?;
        let previous = per_key.insert(key, revision);
        assert!(
            previous < Some(revision),
            "{key}: {previous:?} then {revision}"
        );
    }
    for (key, seen) in &per_key {
        let current = store.entry(*key).await?.context("entry")?.revision;
        assert_eq!(*seen, current, "{key} is stale");
    }
    assert_eq!(per_key.len() as u64, keys);
    Ok(())
}

/// A JetStream context with every node's URL of `cluster`, which reconnects to whichever is up.
pub async fn cluster_jetstream(
    cluster: &faststream_testing::NatsCluster,
) -> anyhow::Result<async_nats::jetstream::Context> {
    let addresses = cluster
        .urls()
        .iter()
        .map(|url| url.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(addresses)
        .await?;
    Ok(async_nats::jetstream::new(client))
}

/// Publishes every `(subject, value)`, pipelined; returns the last revision.
pub async fn publish_all(
    js: &async_nats::jetstream::Context,
    messages: impl Iterator<Item = (String, bytes::Bytes)>,
) -> anyhow::Result<u64> {
    let mut acks = Vec::new();
    let mut last = 0;
    for (subject, value) in messages {
        acks.push(js.publish(subject, value).await?);
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                last = last.max(ack.await?.sequence);
            }
        }
    }
    for ack in acks {
        last = last.max(ack.await?.sequence);
    }
    Ok(last)
}

/// Held while a test runs a three-node cluster: one cluster at a time. Their recovery bounds
/// (elections, hand-overs, restarts) are measured for one cluster on a 2-core machine; nine
/// server processes electing at once beside the rest of the suite stretched them past any
/// bound worth asserting.
pub async fn one_cluster_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    CLUSTER.lock().await
}
