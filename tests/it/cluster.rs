//! A three-node JetStream cluster on loopback with an R3 bucket: the watch keeps the
//! Reliability guarantees while the stream leader is killed and restarted twice under a
//! writer. Asserted from what the handlers recorded and from the server's consumer list.

use std::time::{Duration, Instant};

use crate::common::{cluster_jetstream, Events, RunningApp, EVENT_TIMEOUT};
use anyhow::Context as _;
use faststream_core::kv::BucketConfig;
use faststream_core::{App, BrokerConfig, KvMessage, KvWatch, NatsBroker, State};
use faststream_testing::NatsCluster;
use futures_util::TryStreamExt as _;

const BUCKET: &str = "replicated";
/// The watch's timeout: a consumer lost with its node is noticed by the silence.
const WATCH_TIMEOUT: Duration = Duration::from_secs(2);
/// From a node being healthy again to the next entry handled: measured 3-7 ms; a loaded 2-core
/// machine gets 1 s.
const RESUME_BOUND: Duration = Duration::from_secs(1);
/// From the stream taking writes again after a leader's kill to the marker written then being
/// handled: the watch's part (noticing the lost consumer by its silence, `WATCH_TIMEOUT`, and
/// re-creating it once the new leader places it; on 2.9.10 creates kept timing out for up to
/// ~10 s after the stream took writes again). Measured 0.04 ms to 1.6 s.
const MARKER_BOUND: Duration = Duration::from_secs(12);
/// From a leader's kill to the stream taking writes again: the servers' election, not this
/// project's code; measured 4.2-6.8 s, bounded so that a cluster that stops electing fails.
const ELECTION_BOUND: Duration = Duration::from_secs(15);

async fn record_history(message: KvMessage, State(events): State<Events>) {
    events.push(format!("{}@{}", message.key(), message.revision()));
}

#[derive(Clone)]
struct Latest(Events);

async fn record_latest(message: KvMessage, State(latest): State<Latest>) {
    latest
        .0
        .push(format!("{}@{}", message.key(), message.revision()));
}

fn revision(event: &str) -> u64 {
    event
        .rsplit_once('@')
        .and_then(|(_, revision)| revision.parse().ok())
        .unwrap_or(0)
}

/// The index of the node leading the bucket's stream.
async fn stream_leader(
    cluster: &NatsCluster,
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<usize> {
    faststream_testing::wait_for("the stream's leader", EVENT_TIMEOUT, || async {
        let stream = js.get_stream(format!("KV_{BUCKET}")).await?;
        let leader = stream
            .cached_info()
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.leader.clone());
        anyhow::Ok(leader.and_then(|leader| cluster.node_named(&leader)))
    })
    .await
}

/// Puts a marker on `k.0`, retrying until the stream takes it; its revision and when.
async fn put_marker(
    js: &async_nats::jetstream::Context,
    round: usize,
) -> anyhow::Result<(u64, Instant)> {
    let mut js = js.clone();
    // Short requests: a put sent to a leader that just died is not answered.
    js.set_timeout(Duration::from_millis(500));
    faststream_testing::wait_for("the marker put", EVENT_TIMEOUT, || async {
        let store = js.get_key_value(BUCKET).await?;
        let revision = store.put("k.0", format!("marker{round}").into()).await?;
        anyhow::Ok(Some((revision, Instant::now())))
    })
    .await
}

/// The names of the consumers on the bucket's stream, as the cluster reports them.
async fn consumers(js: &async_nats::jetstream::Context) -> anyhow::Result<Vec<String>> {
    let stream = js.get_stream(format!("KV_{BUCKET}")).await?;
    Ok(stream.consumer_names().try_collect().await?)
}

#[tokio::test]
async fn an_r3_bucket_keeps_every_guarantee_while_its_leader_is_killed_twice() -> anyhow::Result<()>
{
    faststream_testing::init_test_logging();
    for binary in crate::common::servers() {
        let version = binary.version.clone();
        run(binary)
            .await
            .with_context(|| format!("on a nats-server {version} cluster"))?;
    }
    Ok(())
}

async fn run(binary: faststream_testing::ServerBinary) -> anyhow::Result<()> {
    const MIN_WRITES: u64 = 500;
    const KEYS: u64 = 40;
    let _cluster_slot = crate::common::one_cluster_at_a_time().await;
    let mut cluster = NatsCluster::start(&binary, 3).await?;
    // The service is given every node, as a production service lists its cluster.
    let service_url = cluster.urls().join(",");

    // An R3 bucket can be created only once the meta group has a leader: retry.
    let admin = NatsBroker::connect(BrokerConfig::new(service_url.clone())).await?;
    faststream_testing::wait_for("the R3 bucket created", EVENT_TIMEOUT, || async {
        admin
            .key_value_with(BucketConfig::new(BUCKET).history(64).replicas(3))
            .await
            .map(Some)
            .map_err(anyhow::Error::from)
    })
    .await?;

    let history = Events::default();
    let latest = Events::default();
    let app = App::new(BrokerConfig::new(service_url))
        .without_registered()
        .with_state(history.clone())
        .with_state(Latest(latest.clone()))
        .subscriber(
            "history",
            ">",
            KvWatch::new(BUCKET)
                .include_history(true)
                .timeout(WATCH_TIMEOUT),
            record_history,
        )
        .subscriber(
            "latest",
            ">",
            KvWatch::new(BUCKET).timeout(WATCH_TIMEOUT),
            record_latest,
        );
    let running = RunningApp::spawn(app);

    // The writer knows every node and retries failed puts (a leader election takes seconds).
    let js = cluster_jetstream(&cluster).await?;
    let writer_js = cluster_jetstream(&cluster).await?;
    let (stop_writer, writer_stopped) = tokio::sync::oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        // Retried too: a stream info request to a new R3 stream can go unanswered for the
        // request timeout (10 s) on a busy machine (nats-server 2.9.10, once beside the suite).
        let store = faststream_testing::wait_for(
            "the writer's bucket",
            Duration::from_secs(30),
            || async { anyhow::Ok(Some(writer_js.get_key_value(BUCKET).await?)) },
        )
        .await?;
        let mut stopped = writer_stopped;
        let mut i = 0u64;
        // Until told to stop, and at least MIN_WRITES.
        while i < MIN_WRITES || stopped.try_recv().is_err() {
            faststream_testing::wait_for("the writer's put", Duration::from_secs(30), || async {
                let key = format!("k.{}", i % KEYS);
                anyhow::Ok(Some(store.put(key, i.to_string().into()).await?))
            })
            .await?;
            i += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::Ok(i)
    });

    let mut figures = Vec::new();
    for round in 0..2 {
        let handled = history.snapshot().len();
        history
            .wait_for("entries before the kill", |e| e.len() >= handled + 100)
            .await?;
        let leader = stream_leader(&cluster, &js).await?;
        cluster.kill(leader).await?;
        let killed = Instant::now();
        // A marker written as soon as the stream takes writes again (new leader elected).
        let (marker, writable) = put_marker(&js, round).await?;
        history.wait_for_event(&format!("k.0@{marker}")).await?;
        let lag = writable.elapsed();
        let after_kill = killed.elapsed();
        cluster.restart(leader).await?;
        let back = Instant::now();
        let seen = history.snapshot().len();
        history
            .wait_for("an entry after the node came back", |e| e.len() > seen)
            .await?;
        let after_restart = back.elapsed();
        figures.push(format!(
            "round {round}: leader n{leader} killed, writable again {:?} later, marker \
             handled {lag:?} after that ({after_kill:?} after the kill); restarted, next \
             entry {after_restart:?} after it was healthy",
            after_kill - lag
        ));
        anyhow::ensure!(
            after_kill - lag < ELECTION_BOUND && lag < MARKER_BOUND && after_restart < RESUME_BOUND,
            "slow resume: {}",
            figures.join("; ")
        );
    }
    let _ = stop_writer.send(());
    let writes = writer.await??;

    let last = js
        .get_stream(format!("KV_{BUCKET}"))
        .await?
        .cached_info()
        .state
        .last_sequence;
    anyhow::ensure!(
        last >= writes,
        "the stream lost writes: last sequence {last} after {writes} writes"
    );
    history
        .wait_for("every revision", |e| {
            e.last().is_some_and(|e| revision(e) == last)
        })
        .await?;
    latest
        .wait_for("the last revision", |e| {
            e.iter().any(|e| revision(e) == last)
        })
        .await?;
    // Consumers equal live watchers within 5 s, whatever attempts the elections cost.
    let counted = Instant::now();
    let names = loop {
        let names = consumers(&js).await?;
        if names.len() == 2 || counted.elapsed() > Duration::from_secs(5) {
            break names;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "R3 cluster of nats-server {}: {}; consumers after: {} ({:?} after the last entry)",
        binary.version,
        figures.join("; "),
        names.len(),
        counted.elapsed()
    );
    running.stop().await??;
    anyhow::ensure!(names.len() == 2, "consumers left on the stream: {names:?}");

    let history: Vec<u64> = history.snapshot().iter().map(|e| revision(e)).collect();
    let store = js.get_key_value(BUCKET).await?;
    crate::common::assert_watch_guarantees(&store, &history, &latest.snapshot(), last, KEYS)
        .await?;
    Ok(())
}
