//! A consumer group on an R3 bucket of a three-node cluster, two members, a writer: the node
//! leading the group's stream (`KVG_<bucket>_<group>`) is killed and restarted, then the node
//! leading a partition's consumer. Every change is handled, per key in order and one call at
//! a time (a change may be handled again when its acknowledgement is lost with a leader),
//! and every partition is handled again after each kill and each restart, within a bound.
//!
//! Known failures on the server side (nats-server 2.15.1, three nodes on one 2-core machine),
//! which the error reports with what the cluster says of the streams and consumers; the
//! records and the nodes' logs are copied to `group_cluster/` in the target's temporary
//! directory:
//! - not a failure, a delay the members cut short: after the node leading the bucket's stream
//!   is killed, the group's mirror copies nothing (`lag` 0, `mirror.active` growing, or `None`
//!   if the group stream's leader died too) until the server notices, 10-20 s later, or ~45-50 s
//!   when the group stream's leader died with it (4 runs in 13 before members asked the group
//!   stream's leader to step down then, `kv::group::mirror`; none in 17 since; the wait still
//!   leaves room for it);
//! - a loss: after a partition consumer's leader change the consumer's next delivery is the last
//!   message of each key at that moment, then on: older changes not yet delivered are skipped,
//!   the consumer sequence going on without a gap (e.g. stream sequence 1080 then 1667, 87
//!   changes of one partition lost; 2463 then 2498). This is what `DeliverLastPerSubject`
//!   (the group's default start) does at creation, applied again; seen in 4 runs of about 20
//!   before the pull loop stopped spinning on 503s, in 1 run of about 20 since, and never in 6
//!   runs of a group with `include_history` (`DeliverAll`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::common::EVENT_TIMEOUT;
use crate::group_support::cluster::{
    diagnose, dump, keep_server_logs, leaders_elected, mirror_recovery, stored,
};
use crate::group_support::{between, check_calls, now_nanos, Record, Records, Writer};
use anyhow::Context as _;
use async_nats::jetstream::stream::ClusterInfo;
use faststream_core::kv::group::GroupSettings;
use faststream_core::kv::BucketConfig;
use faststream_core::{App, BrokerConfig, KvMessage, KvWatch, NatsBroker, State};
use faststream_testing::{NatsCluster, ServerBinary};
use futures_util::TryStreamExt as _;

pub(crate) const BUCKET: &str = "orders";
const GROUP: &str = "billing";
pub(crate) const STREAM: &str = "KVG_orders_billing";
pub(crate) const PARTITIONS: u16 = 16;
/// Enough keys that no revision written in a run leaves the bucket's history (64 a key): what
/// the bucket holds at the end is every change written, and a change not handled can be
/// looked up in the bucket and in the group's stream.
const KEYS: u64 = 400;
const SESSION: Duration = Duration::from_secs(2);
const HANDLER_DELAY: Duration = Duration::from_millis(2);
/// ~50 puts a second (fewer while a leader is elected: the writer retries).
const WRITE_PERIOD: Duration = Duration::from_millis(20);
/// From a kill to every partition handled again: the elections of what the killed node led
/// (5-9 s here, twice in 140 kills 11.9 s and 14.5 s; not configurable), then at most a few
/// hundred milliseconds for members to notice a stalled mirror (checked every 250 ms while
/// anything is off) and have it started again. Two runs of the fault probe
/// (`group_cluster_kills.rs`, 20 kills, the default 32 changes in flight) measured worsts of
/// 9.0 s and 11.9 s (that election) from the kill (the project's target is 12 s), so 18 s; what
/// the members add is bounded below.
const RESUME_BOUND: Duration = Duration::from_secs(18);
/// From the end of the elections a kill started to every partition handled again: the target,
/// measured at worst 0.37 s and 0.02 s in those two runs.
pub(crate) const AFTER_ELECTIONS_BOUND: Duration = Duration::from_secs(3);
/// From a node healthy again to every partition handled: measured 0.33-3.73 s on an idle
/// machine, 11.2 s once with a compile running on both cores beside the suite (the restarted
/// node catching up its streams takes that long under load); 16 s leaves room for that.
const RESTART_BOUND: Duration = Duration::from_secs(16);
/// How long a test waits for every partition to be handled again.
const RESUME_WAIT: Duration = Duration::from_secs(75);
pub(crate) const WAIT: Duration = Duration::from_secs(40);
/// How long the end waits for every change written to be handled.
const DRAIN_WAIT: Duration = Duration::from_secs(90);

/// An in-process member: an app running until stopped.
struct Member {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<faststream_core::Result<()>>,
}

impl Member {
    fn spawn(app: App) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
        }
    }

    fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// What the app returned, once it has stopped.
    async fn result(&mut self) -> anyhow::Result<()> {
        Ok((&mut self.task).await??)
    }

    /// Stops the app; it must stop cleanly within [`WAIT`].
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, self.result())
            .await
            .context("the member did not stop")?
    }
}

#[derive(Clone)]
struct Recording {
    member: &'static str,
    records: Records,
}

impl Recording {
    fn record(&self, event: &str, message: &KvMessage) {
        self.records.push_numbered(Record {
            seq: 0,
            member: self.member.to_owned(),
            event: event.to_owned(),
            key: message.key().to_owned(),
            revision: message.revision(),
            nanos: now_nanos(),
        });
    }
}

async fn handle(message: KvMessage, State(recording): State<Recording>) {
    recording.record("begin", &message);
    tokio::time::sleep(HANDLER_DELAY).await;
    recording.record("end", &message);
}

/// A JetStream context with every node's URL, which reconnects to whichever is up; short
/// requests, retried by the callers (a request to a leader that just died is not answered).
async fn short_cluster_jetstream(
    cluster: &NatsCluster,
) -> anyhow::Result<async_nats::jetstream::Context> {
    let mut jetstream = crate::common::cluster_jetstream(cluster).await?;
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

/// The node leading stream `name`.
pub(crate) async fn stream_leader(
    cluster: &NatsCluster,
    js: &async_nats::jetstream::Context,
    name: &str,
) -> anyhow::Result<usize> {
    retry(&format!("the leader of {name}"), || async {
        let stream = js.get_stream(name).await?;
        leader_node(cluster, stream.cached_info().cluster.as_ref())
    })
    .await
}

/// The index of the node `info` names as leader.
fn leader_node(cluster: &NatsCluster, info: Option<&ClusterInfo>) -> anyhow::Result<usize> {
    let leader = info
        .and_then(|info| info.leader.as_deref())
        .context("no leader")?;
    cluster.node_named(leader).context("not a node")
}

/// The node leading partition `partition`'s consumer.
pub(crate) async fn consumer_leader(
    cluster: &NatsCluster,
    js: &async_nats::jetstream::Context,
    partition: u16,
) -> anyhow::Result<usize> {
    retry("the partition consumer's leader", || async {
        let stream = js.get_stream(STREAM).await?;
        let info = stream.consumer_info(format!("p{partition}")).await?;
        leader_node(cluster, info.cluster.as_ref())
    })
    .await
}

/// The partition of each key, from the subjects of the group's stream (`p.<partition>.<key>`).
async fn partitions_of_keys(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<BTreeMap<String, u16>> {
    retry("every key in the group's stream", || async {
        let stream = js.get_stream(STREAM).await?;
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects("p.>")
            .await?
            .try_collect()
            .await?;
        let mut partitions = BTreeMap::new();
        for (subject, _) in subjects {
            let mut tokens = subject.splitn(3, '.');
            let (_, partition, key) = (tokens.next(), tokens.next(), tokens.next());
            let partition: u16 = partition.context("subject")?.parse()?;
            partitions.insert(key.context("subject")?.to_owned(), partition);
        }
        anyhow::ensure!(partitions.len() as u64 == KEYS, "{} keys", partitions.len());
        Ok(partitions)
    })
    .await
}

/// Every revision the bucket's stream holds, per key in order, read with an ordered consumer.
async fn bucket_revisions(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<BTreeMap<String, Vec<u64>>> {
    use futures_util::StreamExt as _;
    let stream = retry("the bucket's stream", || async {
        Ok(js.get_stream(format!("KV_{BUCKET}")).await?)
    })
    .await?;
    let last = stream.cached_info().state.last_sequence;
    let mut messages = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await?
        .messages()
        .await?;
    let mut revisions = Vec::new();
    while revisions.last().map_or(0, |(_, revision)| *revision) < last {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .context("reading the bucket's stream")?
            .context("the bucket's stream ended")??;
        let revision = message.info().map_err(anyhow::Error::msg)?.stream_sequence;
        let key = message
            .subject
            .strip_prefix(&format!("$KV.{BUCKET}."))
            .context("not a key's subject")?
            .to_owned();
        revisions.push((key, revision));
    }
    Ok(crate::group_support::per_key(revisions))
}

/// How long after `at` each partition (with keys) first had a call end; once all have.
fn resumed(
    records: &[Record],
    partition_of: &BTreeMap<String, u16>,
    at: u64,
) -> Option<(Duration, Duration)> {
    let wanted: BTreeSet<u16> = partition_of.values().copied().collect();
    let mut first: BTreeMap<u16, u64> = BTreeMap::new();
    for record in records.iter().filter(|r| r.is_end() && r.nanos > at) {
        if let Some(partition) = partition_of.get(&record.key) {
            first.entry(*partition).or_insert(record.nanos);
        }
    }
    if first.len() < wanted.len() {
        return None;
    }
    let times: Vec<Duration> = first.values().map(|nanos| between(at, *nanos)).collect();
    Some((*times.iter().min()?, *times.iter().max()?))
}

/// Waits until every partition has been handled after `at`; the first and last times. The
/// error says what the servers report of the bucket, the group's stream and its consumers.
pub(crate) async fn wait_resumed(
    records: &Records,
    partition_of: &BTreeMap<String, u16>,
    at: u64,
    what: &str,
    js: &async_nats::jetstream::Context,
    writer: &Writer,
) -> anyhow::Result<(Duration, Duration)> {
    let waited = records
        .wait_for_within(what, RESUME_WAIT, |records| {
            resumed(records, partition_of, at).is_some()
        })
        .await;
    match waited {
        Ok(records) => resumed(&records, partition_of, at).context("resumed"),
        Err(error) => {
            let puts = writer.puts.load(std::sync::atomic::Ordering::Relaxed);
            let diagnosis = diagnose(js).await;
            let mirror = mirror_recovery(js).await;
            Err(error.context(format!("{puts} puts; {mirror}\n{diagnosis}")))
        }
    }
}

/// How recently the group's mirror must have copied for it to count as running: the writer
/// puts ~50 times a second.
const MIRROR_ACTIVE: Duration = Duration::from_secs(3);

/// How long after now the group's mirror is seen running: its stream answering, the mirror
/// active since now (it has heard from the bucket's stream after the kill) and within
/// [`MIRROR_ACTIVE`].
pub(crate) async fn mirror_running_again(
    js: async_nats::jetstream::Context,
) -> anyhow::Result<Duration> {
    let killed = Instant::now();
    faststream_testing::wait_for("the group's mirror running", RESUME_WAIT, || async {
        let running = match js.get_stream(STREAM).await {
            Ok(stream) => stream
                .cached_info()
                .mirror
                .as_ref()
                .and_then(|mirror| mirror.active)
                .is_some_and(|active| active < MIRROR_ACTIVE.min(killed.elapsed())),
            Err(_) => false, // no leader yet
        };
        anyhow::Ok(running)
    })
    .await?;
    Ok(killed.elapsed())
}

#[tokio::test]
async fn a_group_on_an_r3_bucket_survives_its_stream_and_consumer_leaders_being_killed(
) -> anyhow::Result<()> {
    faststream_testing::init_test_logging();
    for binary in crate::common::servers_in(faststream_testing::ServerVersions::Since(2, 11))? {
        let version = binary.version.clone();
        let _cluster_slot = crate::common::one_cluster_at_a_time().await;
        let mut cluster = NatsCluster::start(&binary, 3).await?;
        let result = run(&binary, &mut cluster).await;
        if result.is_err() {
            keep_server_logs(&cluster);
        }
        result.with_context(|| format!("on a nats-server {version} cluster"))?;
    }
    Ok(())
}

/// A group of two members on the cluster's R3 bucket, its writer, and what they record.
pub(crate) struct Running {
    started: Instant,
    /// From the start to the group formed.
    formed: Duration,
    admin: NatsBroker,
    members: [Member; 2],
    pub(crate) js: async_nats::jetstream::Context,
    pub(crate) records: Records,
    pub(crate) writer: Writer,
    /// The partition of each key.
    pub(crate) partition_of: BTreeMap<String, u16>,
}

/// Creates the R3 bucket, starts two members and the writer; returns once 200 calls ended.
pub(crate) async fn start_group(cluster: &NatsCluster) -> anyhow::Result<Running> {
    let started = Instant::now();
    let url = cluster.urls().join(",");

    // An R3 bucket can be created only once the meta group has a leader: retry.
    let admin = NatsBroker::connect(BrokerConfig::new(url.clone())).await?;
    retry("creating the R3 bucket", || async {
        admin
            .key_value_with(BucketConfig::new(BUCKET).history(64).replicas(3))
            .await
            .map(drop)
            .map_err(Into::into)
    })
    .await?;

    let records = Records::default();
    let member = |name: &'static str| {
        let watch = KvWatch::new(BUCKET).group(
            GroupSettings::new(GROUP)
                .partitions(PARTITIONS)
                .session_timeout(SESSION),
        );
        let app = App::new(BrokerConfig::new(url.clone()))
            .without_registered()
            .with_state(Recording {
                member: name,
                records: records.clone(),
            })
            .subscriber("member", "k.{n}", watch, handle);
        Member::spawn(app)
    };
    let mut members = [member("a"), member("b")];
    if let Err(error) =
        crate::group_support::wait_for_group(&admin, BUCKET, GROUP, 2, PARTITIONS, WAIT).await
    {
        // A member whose start-up failed has stopped: its error says why.
        let mut ended = Vec::new();
        for (name, running) in ["a", "b"].iter().zip(&mut members) {
            if running.is_finished() {
                ended.push(format!("{name}: {:?}", running.result().await));
            }
        }
        return Err(error.context(format!("members that stopped: {ended:?}")));
    }
    let formed = started.elapsed();

    let js = short_cluster_jetstream(cluster).await?;
    let store = js.get_key_value(BUCKET).await?;
    let writer = Writer::start(store, KEYS, WRITE_PERIOD, true);
    records.wait_for_ends(200, EVENT_TIMEOUT).await?;
    let partition_of = partitions_of_keys(&js).await?;
    Ok(Running {
        started,
        formed,
        admin,
        members,
        js,
        records,
        writer,
        partition_of,
    })
}

/// What killing a node and restarting it showed.
pub(crate) struct KillRound {
    pub(crate) killed_at: u64,
    /// From the kill to the first and the last partition handled again.
    pub(crate) first: Duration,
    pub(crate) last: Duration,
    /// When every partition had been handled again.
    pub(crate) resumed_at: u64,
    /// From the kill to the group's mirror running again.
    pub(crate) mirror_back: Duration,
    /// From the kill to every raft group the members rely on having a leader again.
    pub(crate) elected: Duration,
    /// The node leading the group's stream once every partition was handled again.
    pub(crate) group_leader_after: usize,
    /// From the node healthy again to every partition handled.
    pub(crate) after_restart: Duration,
}

/// Kills `node` (leading `what`), waits until every partition is handled again, restarts it
/// and waits again.
pub(crate) async fn kill_and_restart(
    cluster: &mut NatsCluster,
    running: &Running,
    node: usize,
    what: &str,
) -> anyhow::Result<KillRound> {
    let (js, records, partition_of) = (&running.js, &running.records, &running.partition_of);
    let killed_at = now_nanos();
    tracing::info!(node, "test: killing {what}");
    cluster.kill(node).await?;
    let mirror = tokio::spawn(mirror_running_again(js.clone()));
    let elected = tokio::spawn(leaders_elected(js.clone()));
    let waited = format!("every partition after killing {what}");
    let (first, last) = wait_resumed(
        records,
        partition_of,
        killed_at,
        &waited,
        js,
        &running.writer,
    )
    .await?;
    let resumed_at = now_nanos();
    let mirror_back = mirror.await??;
    let elected = elected.await??;
    let group_leader_after = stream_leader(cluster, js, STREAM).await?;
    tracing::info!(node, first = ?first, last = ?last, "test: every partition resumed; restarting");
    cluster.restart(node).await?;
    let healthy_at = now_nanos();
    let waited = format!("every partition after restarting n{node}, which led {what}");
    let (_, after_restart) = wait_resumed(
        records,
        partition_of,
        healthy_at,
        &waited,
        js,
        &running.writer,
    )
    .await?;
    Ok(KillRound {
        killed_at,
        first,
        last,
        resumed_at,
        mirror_back,
        elected,
        group_leader_after,
        after_restart,
    })
}

async fn run(binary: &ServerBinary, cluster: &mut NatsCluster) -> anyhow::Result<()> {
    let running = start_group(cluster).await?;
    let (js, records, partition_of) = (&running.js, &running.records, &running.partition_of);
    let mut figures = Vec::new();
    for round in ["group stream leader", "partition consumer leader"] {
        let handled = crate::group_support::ends(&records.snapshot());
        records.wait_for_ends(handled + 200, WAIT).await?;
        let node = match round {
            "group stream leader" => stream_leader(cluster, js, STREAM).await?,
            _ => consumer_leader(cluster, js, partition_of["k.0"]).await?,
        };
        let what = format!("the {round}");
        let KillRound {
            first,
            last,
            mirror_back,
            elected,
            after_restart,
            ..
        } = kill_and_restart(cluster, &running, node, &what).await?;
        figures.push(format!(
            "{round} n{node} killed: leaders elected {elected:?} after, the group's mirror \
             running {mirror_back:?} after, every partition handled again {first:?} to {last:?} \
             after; restarted: every partition handled {after_restart:?} after it was healthy"
        ));
        anyhow::ensure!(
            last < RESUME_BOUND
                && last.saturating_sub(elected) < AFTER_ELECTIONS_BOUND
                && after_restart < RESTART_BOUND,
            "slow to resume: {}",
            figures.join("; ")
        );
    }
    let summary = finish(running).await?;
    eprintln!(
        "R3 cluster of nats-server {}: {}; {summary}",
        binary.version,
        figures.join("; ")
    );
    Ok(())
}

/// Stops the writer, waits for every change written to be handled, stops the members and
/// checks the calls: nothing lost, per key in order, one call at a time, no dead letter. What
/// it counted.
pub(crate) async fn finish(running: Running) -> anyhow::Result<String> {
    let Running {
        started,
        formed,
        admin,
        members,
        js,
        records,
        writer,
        ..
    } = running;
    let js = &js;
    let acknowledged = writer.stop().await?;
    // Every revision the bucket holds, including those of puts that failed (no answer from a
    // leader that had just died) but were stored; each acknowledged put among them.
    let written = bucket_revisions(js).await?;
    for (key, revisions) in &acknowledged {
        let held = written.get(key).map(Vec::as_slice).unwrap_or_default();
        let lost: Vec<_> = revisions.iter().filter(|r| !held.contains(r)).collect();
        anyhow::ensure!(
            lost.is_empty(),
            "{key}: acknowledged puts {lost:?} not in the bucket"
        );
    }
    // After a mirror restart (up to ~50 s late) a backlog drains one change per partition
    // at a time, each acknowledgement replicated to three nodes.
    let handled = records.wait_for_all_handled(&written, DRAIN_WAIT).await;
    let records = match handled {
        Ok(records) => records,
        Err(error) => {
            dump(&records.snapshot(), &written)?;
            let missing = crate::group_support::missing(&records.snapshot(), &written);
            return Err(error.context(format!(
                "{}\n{}",
                diagnose(js).await,
                stored(js, &missing).await
            )));
        }
    };
    let info = admin.kv_group(BUCKET, GROUP).await?.info().await?;
    for running in members {
        running.stop().await?;
    }
    // A change may be handled again when its acknowledgement was lost with a leader: only
    // right after the call that handled it (exact repeats; order is checked with them once).
    let checked = match check_calls(&records, &written, None, |_, _, _| true, false) {
        Ok(checked) => checked,
        Err(error) => {
            dump(&records, &written)?;
            return Err(error);
        }
    };
    anyhow::ensure!(info.dead_letters == 0, "{} dead letters", info.dead_letters);
    let total: usize = written.values().map(Vec::len).sum();
    let unacknowledged = total - acknowledged.values().map(Vec::len).sum::<usize>();
    Ok(format!(
        "group formed {formed:?} after start; {total} changes ({unacknowledged} of puts \
         retried after no answer), {} calls, {} handled again; test {:?}",
        checked.calls,
        checked.redeliveries,
        started.elapsed()
    ))
}
