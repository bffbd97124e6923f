//! JetStream stream subscribers on a three-node cluster (nats-server 2.15 and later): an R3
//! stream's subscriber while the stream's leader is killed and restarted under a writer that
//! retries, and a `#[publisher]` whose R3 stream loses its quorum (two nodes of three killed).
//! Also what the process tests share with these: the calls recorded, and a steady writer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::{servers_in, Recorder, RunningApp};
use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use faststream_core::{App, BrokerConfig, JStream, NatsMessage, State, Subscription};
use faststream_testing::{NatsCluster, ServerBinary, ServerVersions};
use futures_util::StreamExt as _;
use tokio::task::JoinHandle;

/// How long a test waits for a leader, a stream, or every message to be handled.
const WAIT: Duration = Duration::from_secs(60);

/// A call of a stream subscriber's handler, timed when the test learnt of it.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) member: String,
    pub(crate) sequence: u64,
    pub(crate) delivered: u64,
    pub(crate) at: Instant,
}

/// Publishes `count` messages to a stream at a steady rate.
pub(crate) struct Writer {
    /// Each message the stream acknowledged: its sequence, and when.
    pub(crate) acknowledged: Recorder<(u64, Instant)>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Writer {
    /// Publishes message `i` to `<prefix>.<i % 8>` every `period`. A publish the stream does
    /// not acknowledge is sent again for up to 30 s if `retry` (a cluster electing a leader),
    /// else fails the writer.
    pub(crate) fn start(
        jetstream: jetstream::Context,
        prefix: &'static str,
        count: u64,
        period: Duration,
        retry: bool,
    ) -> Self {
        let acknowledged = Recorder::default();
        let sink = acknowledged.clone();
        let task = tokio::spawn(async move {
            let mut pace = tokio::time::interval(period);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for i in 0..count {
                pace.tick().await;
                let subject = format!("{prefix}.{}", i % 8);
                let publish = || async {
                    let ack = jetstream.publish(subject.clone(), i.to_string().into());
                    anyhow::Ok(Some(ack.await?.await?.sequence))
                };
                let sequence = if retry {
                    let what = format!("publishing {i}");
                    faststream_testing::wait_for(&what, Duration::from_secs(30), publish).await?
                } else {
                    publish().await?.context("published")?
                };
                sink.push((sequence, Instant::now()));
            }
            Ok(())
        });
        Self { acknowledged, task }
    }

    /// The sequences the stream acknowledged, once every message is written.
    pub(crate) async fn finish(self) -> anyhow::Result<Vec<u64>> {
        tokio::time::timeout(Duration::from_secs(90), self.task)
            .await
            .context("the writer did not finish")?
            .context("the writer panicked")??;
        let acknowledged = self.acknowledged.snapshot();
        Ok(acknowledged
            .into_iter()
            .map(|(sequence, _)| sequence)
            .collect())
    }
}

/// A JetStream context on `urls` that reconnects to whichever is up, with short requests: a
/// request to a leader that just died is not answered, and the callers retry.
async fn short_jetstream(urls: &[String]) -> anyhow::Result<jetstream::Context> {
    let addresses = urls
        .iter()
        .map(|url| url.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(addresses)
        .await?;
    let mut jetstream = jetstream::new(client);
    jetstream.set_timeout(Duration::from_secs(1));
    Ok(jetstream)
}

/// Retries `call` until it succeeds, at most [`WAIT`].
async fn retry<T, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    faststream_testing::wait_for(what, WAIT, || {
        let attempt = call();
        async move { attempt.await.map(Some) }
    })
    .await
}

/// The index of the node leading `stream`.
async fn stream_leader(
    cluster: &NatsCluster,
    js: &jetstream::Context,
    stream: &str,
) -> anyhow::Result<usize> {
    retry(&format!("the leader of {stream}"), || async {
        let stream = js.get_stream(stream).await?;
        let cluster_info = stream.cached_info().cluster.as_ref();
        let leader = cluster_info.and_then(|info| info.leader.as_deref());
        cluster
            .node_named(leader.context("no leader")?)
            .context("not a node")
    })
    .await
}

/// Publishes `payload` to `subject`, retrying until the stream acknowledges it; its sequence.
async fn publish(js: &jetstream::Context, subject: &str, payload: String) -> anyhow::Result<u64> {
    retry(&format!("publishing to {subject}"), || async {
        let ack = js
            .publish(subject.to_owned(), payload.clone().into())
            .await?;
        Ok(ack.await?.sequence)
    })
    .await
}

/// Every message of `stream`: its payloads, read with an ordered consumer.
async fn payloads(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<String>> {
    let handle = retry(&format!("the stream {stream}"), || async {
        Ok(js.get_stream(stream).await?)
    })
    .await?;
    let last = handle.cached_info().state.last_sequence;
    let mut payloads = Vec::new();
    if last == 0 {
        return Ok(payloads);
    }
    let mut messages = handle
        .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
        .await?
        .messages()
        .await?;
    loop {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .with_context(|| format!("reading {stream}"))?
            .with_context(|| format!("{stream} ended"))??;
        payloads.push(String::from_utf8_lossy(&message.payload).into_owned());
        if message.info().map_err(anyhow::Error::msg)?.stream_sequence >= last {
            return Ok(payloads);
        }
    }
}

async fn record_call(message: NatsMessage, State(calls): State<Recorder<Call>>) {
    if let Some(info) = message.jetstream_info() {
        calls.push(Call {
            member: "app".to_owned(),
            sequence: info.stream_sequence,
            delivered: info.delivered,
            at: Instant::now(),
        });
    }
}

/// Waits for a call of a message with sequence `sequence` or later; how long after `since`.
async fn handled_from(
    calls: &Recorder<Call>,
    sequence: u64,
    since: Instant,
    what: &str,
) -> anyhow::Result<Duration> {
    let calls = calls
        .wait_for_within(what, WAIT, |calls| {
            calls.iter().any(|call| call.sequence >= sequence)
        })
        .await?;
    let call = calls
        .iter()
        .find(|call| call.sequence >= sequence)
        .context("the call")?;
    Ok(call.at.saturating_duration_since(since))
}

/// The subscriber of an R3 stream resumes after the stream's leader is killed (an election)
/// and goes on after the node is restarted; every message the writer saw acknowledged is
/// handled.
#[tokio::test]
async fn an_r3_stream_subscriber_resumes_after_its_leader_is_killed() -> anyhow::Result<()> {
    faststream_testing::init_test_logging();
    for binary in servers_in(ServerVersions::Since(2, 15))? {
        let version = binary.version.clone();
        leader_killed(binary)
            .await
            .with_context(|| format!("on a nats-server {version} cluster"))?;
    }
    Ok(())
}

async fn leader_killed(binary: ServerBinary) -> anyhow::Result<()> {
    const MESSAGES: u64 = 2_000;
    const ACK_WAIT: Duration = Duration::from_secs(2);
    // From the kill to a message stored after it handled: the stream's election (stored
    // again 4.2-8.2 s after the kill), then the consumer's when its leader was on the same
    // node (the pull goes on at the new leader's `409 Leadership Change`): measured 4.2-10.5
    // s; elections are the servers' and not configurable, hence 15 s.
    const RESUME_BOUND: Duration = Duration::from_secs(15);
    // From the node healthy again to a message published then handled: measured 1-4 ms; a
    // loaded 2-core machine gets 1 s.
    const RESTART_BOUND: Duration = Duration::from_secs(1);
    let started = Instant::now();
    let _cluster_slot = crate::common::one_cluster_at_a_time().await;
    let mut cluster = NatsCluster::start(&binary, 3).await?;
    let urls = cluster.urls();
    let calls: Recorder<Call> = Recorder::default();
    let subscription = Subscription::new()
        .stream(JStream::new("CWORK").replicas(3))
        .durable("svc")
        .ack_wait(ACK_WAIT)
        .max_workers(4);
    let app = App::new(BrokerConfig::new(urls.join(",")))
        .without_registered()
        .with_state(calls.clone())
        .subject_subscriber("replicated", "cwork.>", subscription, record_call);
    let running = RunningApp::spawn(app);
    let js = short_jetstream(&urls).await?;
    retry("the stream declared", || async {
        Ok(js.get_stream("CWORK").await?)
    })
    .await?;
    let writer = Writer::start(
        short_jetstream(&urls).await?,
        "cwork",
        MESSAGES,
        Duration::from_millis(2),
        true,
    );
    calls
        .wait_for_within("300 calls", WAIT, |c| c.len() >= 300)
        .await?;

    let leader = stream_leader(&cluster, &js, "CWORK").await?;
    let consumer_leader = retry("the consumer's leader", || async {
        let info = js.get_stream("CWORK").await?.consumer_info("svc").await?;
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        cluster
            .node_named(&leader.context("no leader")?)
            .context("not a node")
    })
    .await?;
    cluster.kill(leader).await?;
    let killed_at = Instant::now();
    let acknowledged = writer
        .acknowledged
        .wait_for_within("a message stored after the kill", WAIT, |acks| {
            acks.last().is_some_and(|(_, at)| *at > killed_at)
        })
        .await?;
    let (first_after, writable_at) = *acknowledged
        .iter()
        .find(|(_, at)| *at > killed_at)
        .context("stored after the kill")?;
    let writable = writable_at - killed_at;
    let resumed = handled_from(
        &calls,
        first_after,
        killed_at,
        "a message stored after the kill",
    )
    .await?;

    cluster.restart(leader).await?;
    let healthy_at = Instant::now();
    let marker = publish(&js, "cwork.marker", "marker".to_owned()).await?;
    let after_restart = handled_from(&calls, marker, healthy_at, "the marker").await?;

    let mut written = writer.finish().await?;
    written.push(marker);
    let wanted: BTreeSet<u64> = written.iter().copied().collect();
    let calls = calls
        .wait_for_within("every acknowledged message handled", WAIT, |calls| {
            let seen: BTreeSet<u64> = calls.iter().map(|call| call.sequence).collect();
            wanted.is_subset(&seen)
        })
        .await?;
    running.stop().await??;
    let mut per_message: BTreeMap<u64, usize> = BTreeMap::new();
    for call in &calls {
        *per_message.entry(call.sequence).or_default() += 1;
    }
    let repeated = per_message.values().filter(|count| **count > 1).count();
    println!(
        "R3 stream on nats-server {}: leader n{leader} killed (consumer leader \
         n{consumer_leader}), stored again {writable:?} later, \
         a message stored then handled {resumed:?} after the kill; restarted, a message \
         handled {after_restart:?} after it was healthy; {} acknowledged messages, {} calls, {} \
         messages in all, {repeated} handled twice; test {:?}",
        binary.version,
        written.len(),
        calls.len(),
        per_message.len(),
        started.elapsed()
    );
    anyhow::ensure!(
        resumed < RESUME_BOUND && after_restart < RESTART_BOUND,
        "slow to resume: {resumed:?} after the kill, {after_restart:?} after the restart"
    );
    Ok(())
}

/// A stream subscriber whose `#[publisher]` goes to an R3 stream, `QOUT`; it reads `QIN`, an
/// R1 stream the test keeps on the node left running.
mod quorum {
    use anyhow::Context as _;
    use faststream_core::{publisher, subscriber, NatsMessage};

    /// Publishes the sequence of each message it reads.
    #[subscriber("qin.>", stream = "QIN", durable = "svc", max_workers = 4)]
    #[publisher("qout.done")]
    async fn forward(message: NatsMessage) -> anyhow::Result<String> {
        let info = message.jetstream_info().context("not a stream delivery")?;
        Ok(info.stream_sequence.to_string())
    }
}

/// The calls of `QIN`'s subscriber that ended with `outcome`, as `/metrics` counts them.
async fn handled(metrics: &str, outcome: &str) -> anyhow::Result<f64> {
    let response = faststream_testing::http_get(metrics, &[]).await?;
    anyhow::ensure!(
        response.status == 200,
        "/metrics answered {}",
        response.status
    );
    let labels = [
        r#"bucket="QIN""#.to_owned(),
        format!(r#"outcome="{outcome}""#),
    ];
    Ok(response
        .body
        .lines()
        .filter(|line| line.starts_with("faststream_kv_handled_total{"))
        .filter(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// While the publisher's R3 stream has no quorum (two nodes of three killed) its calls fail
/// (counted as `error`) and the messages they read are kept; once the nodes are back, every
/// message `QIN` acknowledged is in `QOUT`, or kept as a dead letter of `QIN`. Twice: with
/// `QOUT`'s leader among the nodes killed (nobody answers a publish), and with its leader
/// left running without a quorum (a publish is taken, never acknowledged).
#[tokio::test]
async fn a_publisher_without_quorum_fails_its_calls_and_loses_nothing() -> anyhow::Result<()> {
    faststream_testing::init_test_logging();
    for binary in servers_in(ServerVersions::Since(2, 15))? {
        for leader_kept in [false, true] {
            let version = binary.version.clone();
            without_quorum(&binary, leader_kept)
                .await
                .with_context(|| format!("on a nats-server {version} cluster"))?;
        }
    }
    Ok(())
}

/// Steps `stream`'s leader down until `wanted` holds for its node; that node.
async fn lead_on(
    cluster: &NatsCluster,
    js: &jetstream::Context,
    stream: &str,
    wanted: impl Fn(usize) -> bool,
) -> anyhow::Result<usize> {
    for _ in 0..20 {
        let leader = stream_leader(cluster, js, stream).await?;
        if wanted(leader) {
            return Ok(leader);
        }
        let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}");
        js.client().request(subject, "".into()).await?;
        retry("another leader", || async {
            let now = stream_leader(cluster, js, stream).await?;
            anyhow::ensure!(now != leader, "still n{leader}");
            Ok(())
        })
        .await?;
    }
    anyhow::bail!("{stream}'s leader never moved where wanted")
}

async fn without_quorum(binary: &ServerBinary, leader_kept: bool) -> anyhow::Result<()> {
    // Measured 2.63 s: nobody answers, each of the publisher's 4 attempts fails at once, and
    // its backoff (100 ms, 500 ms, 2 s) makes the rest; 1.4 s more for a loaded machine.
    const FAILURE_BOUND: Duration = Duration::from_secs(4);
    // Measured 22.64 s: the leader takes each publish and never answers, so each attempt
    // waits the JetStream request timeout (5 s): 4 x 5 s + 2.6 s of backoff.
    const FAILURE_BOUND_LEADER_KEPT: Duration = Duration::from_secs(25);
    // From the nodes back to every message published or kept: measured 0.02-5.2 s (a delivery
    // that could be kept nowhere was handed back for 5 s); 3 s more for a loaded machine.
    const SETTLE_BOUND: Duration = Duration::from_secs(8);
    let started = Instant::now();
    let _cluster_slot = crate::common::one_cluster_at_a_time().await;
    let mut cluster = NatsCluster::start(binary, 3).await?;
    let urls = cluster.urls();
    let js = short_jetstream(&urls).await?;
    for (name, subjects, replicas) in [("QOUT", "qout.>", 3), ("QIN", "qin.>", 1)] {
        let config = stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            num_replicas: replicas,
            ..Default::default()
        };
        retry(&format!("creating {name}"), || async {
            Ok(js.get_or_create_stream(config.clone()).await?)
        })
        .await?;
    }
    let keeper = stream_leader(&cluster, &js, "QIN").await?;
    lead_on(&cluster, &js, "QOUT", |node| {
        (node == keeper) == leader_kept
    })
    .await?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let metrics = format!("http://{}/metrics", listener.local_addr()?);
    let app = App::new(BrokerConfig::new(urls.join(",")))
        .only_module(concat!(module_path!(), "::quorum"))
        .http_listener(listener);
    let running = RunningApp::spawn(app);
    // Writes to `QIN` go to the node that stays up.
    let kept = short_jetstream(&[cluster.node(keeper).url()]).await?;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        acknowledged.push(publish(&kept, "qin.before", i.to_string()).await?);
    }
    retry("5 calls published", || async {
        let ok = handled(&metrics, "ok").await?;
        anyhow::ensure!(ok >= 5.0, "{ok} calls ok");
        Ok(())
    })
    .await?;

    let others: Vec<usize> = (0..3).filter(|node| *node != keeper).collect();
    for node in &others {
        cluster.kill(*node).await?;
    }
    let killed_at = Instant::now();
    for i in 5..15 {
        acknowledged.push(publish(&kept, "qin.during", i.to_string()).await?);
    }
    retry("a call failed", || async {
        let errors = handled(&metrics, "error").await?;
        anyhow::ensure!(errors >= 1.0, "{errors} calls failed");
        Ok(())
    })
    .await?;
    let failed = killed_at.elapsed();
    // Calls go on failing: the first four could not be kept as dead letters either (creating
    // the dead-letter stream needs the quorum too), so they were handed back, not dropped.
    retry("8 calls failed", || async {
        let errors = handled(&metrics, "error").await?;
        anyhow::ensure!(errors >= 8.0, "{errors} calls failed");
        Ok(())
    })
    .await?;
    let errors_while_down = handled(&metrics, "error").await?;
    let down = killed_at.elapsed();
    for node in &others {
        cluster.restart(*node).await?;
    }
    let back = Instant::now();
    for i in 15..20 {
        acknowledged.push(publish(&kept, "qin.after", i.to_string()).await?);
    }

    let broker = faststream_core::NatsBroker::connect(BrokerConfig::new(urls.join(","))).await?;
    let (published, dead) = retry("every message published or kept", || async {
        let published: BTreeSet<u64> = payloads(&js, "QOUT")
            .await?
            .iter()
            .filter_map(|payload| payload.parse().ok())
            .collect();
        let letters = broker.stream_dead_letters("QIN").await?;
        let cause = "publishing to `qout.done` failed";
        if let Some(other) = letters.iter().find(|letter| !letter.error.contains(cause)) {
            anyhow::bail!("a dead letter for another cause: {other:?}");
        }
        let dead: BTreeSet<u64> = letters.iter().map(|l| l.stream_sequence).collect();
        let missing: Vec<&u64> = acknowledged
            .iter()
            .filter(|sequence| !published.contains(sequence) && !dead.contains(sequence))
            .collect();
        anyhow::ensure!(
            missing.is_empty(),
            "neither published nor kept: {missing:?}"
        );
        Ok((published, dead))
    })
    .await?;
    let settled = back.elapsed();
    let errors = handled(&metrics, "error").await?;
    running.stop().await??;
    println!(
        "R3 publisher stream without quorum on nats-server {}, its leader {}: the first call \
         failed {failed:?} after two nodes were killed, {errors_while_down} in the {down:?} \
         before they were restarted ({errors} in all); {} messages acknowledged by QIN: {} \
         published to QOUT, {} kept as dead letters, all settled {settled:?} after the nodes \
         were back; test {:?}",
        binary.version,
        if leader_kept { "kept" } else { "killed" },
        acknowledged.len(),
        published.len(),
        dead.len(),
        started.elapsed()
    );
    let bound = if leader_kept {
        FAILURE_BOUND_LEADER_KEPT
    } else {
        FAILURE_BOUND
    };
    anyhow::ensure!(
        failed < bound,
        "the first call failed {failed:?} after the quorum was lost"
    );
    anyhow::ensure!(
        settled < SETTLE_BOUND,
        "settled {settled:?} after the nodes were back"
    );
    Ok(())
}
