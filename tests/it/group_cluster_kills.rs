//! A fault probe, run by `.ci/run` (ignored by `cargo test`: it takes about four minutes): the
//! group of `group_cluster.rs` on its three-node cluster, under the same writer, while ten
//! leaders are killed in turn (SIGKILL) — the group stream's leader, the bucket stream's
//! leader (`KV_orders`), a partition consumer's leader, and again — each node restarted once
//! every partition has been handled again. Every partition must be handled again within
//! [`KILL_BOUND`] of each kill and [`AFTER_ELECTIONS_BOUND`] of the end of the elections it
//! started (every raft group the members rely on answering with a leader), nothing lost, per
//! key in order.
//!
//! The members keep their partitions through every kill: no partition's changes go to the
//! other member.
//!
//! Each kill's figures are printed: which leader, the first and the last partition handled
//! again, when the group's mirror ran again, the leaders of the group's stream and of the
//! bucket's, and how many times a member asked the group stream's leader to step down to start
//! a stalled mirror again (`kv::group::mirror`; the requests seen on their subject); then the
//! worst and the 99th percentile.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use faststream_testing::NatsCluster;

use crate::group_cluster::{
    consumer_leader, finish, kill_and_restart, start_group, stream_leader, KillRound,
    AFTER_ELECTIONS_BOUND, STREAM, WAIT,
};
use crate::group_support::cluster::keep_server_logs;
use crate::group_support::{now_nanos, Record};

/// Leaders killed in a run.
const KILLS: usize = 10;
/// From a kill to every partition handled again. The project's target is 12 s, of which the
/// elections take 5-9 s here, and twice in 140 kills took 11.9 s and 14.5 s (not configurable:
/// a vote split between the two nodes left starts another round). What the members add is
/// bounded by [`AFTER_ELECTIONS_BOUND`] (3 s, the target) from the end of the elections the kill
/// started. Two runs of this probe (20 kills, the default 32 changes in flight): worst 9.0 s
/// and 11.9 s (that election) from the kill; 0.37 s and 0.02 s after the elections.
const KILL_BOUND: Duration = Duration::from_secs(18);
/// The bucket's stream.
const BUCKET_STREAM: &str = "KV_orders";

/// The leader a kill is aimed at.
#[derive(Clone, Copy, Debug)]
enum Target {
    GroupStream,
    BucketStream,
    /// The consumer of the partition of key `k.<n>`.
    PartitionConsumer(usize),
}

/// One kill's figures.
struct Kill {
    target: Target,
    node: usize,
    /// From the kill to the first and to the last partition handled again.
    first: Duration,
    last: Duration,
    /// From the kill to the group's mirror seen running.
    mirror_back: Duration,
    /// From the kill to every raft group the members rely on having a leader again.
    elected: Duration,
    /// The group stream's leader before the kill and once every partition was handled again.
    group_leader: (usize, usize),
    /// The bucket stream's leader before the kill.
    bucket_leader: usize,
    /// Requests to the group stream's leader to step down, from the kill to every partition
    /// handled again.
    step_downs: usize,
    /// From the node healthy again to every partition handled.
    after_restart: Duration,
    /// Times a partition's changes went to the other member, from the kill to every partition
    /// handled again after the restart.
    moved: usize,
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} n{} killed: leaders elected {:.2?} after, partitions handled again {:.2?} to \
             {:.2?} after ({:.2?} after the elections), mirror running {:.2?} after ({} step-down \
             request(s)), group stream leader n{} -> n{}, bucket stream leader n{}; restarted: \
             every partition handled {:.2?} after it was healthy; a partition's changes went to the other member {} time(s)",
            self.target,
            self.node,
            self.elected,
            self.first,
            self.last,
            self.after_elections(),
            self.mirror_back,
            self.step_downs,
            self.group_leader.0,
            self.group_leader.1,
            self.bucket_leader,
            self.after_restart,
            self.moved
        )
    }
}

impl Kill {
    /// From the last election the kill started to every partition handled again.
    fn after_elections(&self) -> Duration {
        self.last.saturating_sub(self.elected)
    }
}

/// The `q`-th quantile of `times` by nearest rank.
fn quantile(times: &[Duration], q: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

/// The times (nanoseconds since the epoch) a client subscribed to the subject of the request
/// to the group stream's leader to step down saw one.
struct StepDowns {
    seen: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StepDowns {
    async fn watch(cluster: &NatsCluster) -> anyhow::Result<Self> {
        use futures_util::StreamExt as _;
        let client = crate::common::cluster_jetstream(cluster).await?.client();
        let mut requests = client
            .subscribe(format!("$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}"))
            .await?;
        // The subscription reaches every node before the first kill.
        client.flush().await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let times = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while requests.next().await.is_some() {
                if let Ok(mut times) = times.lock() {
                    times.push(now_nanos());
                }
            }
        });
        Ok(Self { seen, task })
    }

    /// How many were seen from `from` to `to`.
    fn between(&self, from: u64, to: u64) -> usize {
        self.seen.lock().map_or(0, |times| {
            times.iter().filter(|at| (from..=to).contains(*at)).count()
        })
    }
}

impl Drop for StepDowns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How many times a partition's changes went to another member than the one before, from
/// `from` to `to` (nanoseconds since the epoch), counting from the member that handled the
/// partition last before `from`.
fn partition_moves(
    records: &[Record],
    partition_of: &BTreeMap<String, u16>,
    from: u64,
    to: u64,
) -> usize {
    let mut handler: BTreeMap<u16, &str> = BTreeMap::new();
    let mut moves = 0;
    for record in records
        .iter()
        .filter(|record| record.is_begin() && record.nanos < to)
    {
        let Some(&partition) = partition_of.get(&record.key) else {
            continue;
        };
        let before = handler.insert(partition, &record.member);
        if record.nanos >= from && before.is_some_and(|before| before != record.member) {
            moves += 1;
        }
    }
    moves
}

/// Waits until every replica of the bucket's stream and of the group's is current: a restarted
/// node has caught up, so the next kill leaves two nodes holding everything.
async fn wait_all_current(js: &async_nats::jetstream::Context) -> anyhow::Result<()> {
    faststream_testing::wait_for("every replica current", WAIT, || async {
        let mut seen = Vec::new();
        for name in [BUCKET_STREAM, STREAM] {
            let Ok(stream) = js.get_stream(name).await else {
                seen.push(format!("{name}: no answer"));
                continue;
            };
            let cluster = stream.cached_info().cluster.clone().unwrap_or_default();
            let lagging: Vec<_> = cluster
                .replicas
                .iter()
                .filter(|peer| !peer.current || peer.offline)
                .map(|peer| peer.name.clone())
                .collect();
            if cluster.leader.is_none() || cluster.replicas.len() != 2 || !lagging.is_empty() {
                seen.push(format!(
                    "{name}: leader {:?}, lagging {lagging:?}",
                    cluster.leader
                ));
            }
        }
        anyhow::Ok((seen.is_empty().then_some(()), seen.join("; ")))
    })
    .await
}

#[tokio::test]
#[ignore = "a long fault probe: run by .ci/run"]
async fn group_cluster_kills_every_partition_handled_again_soon_after_each_of_ten_kills(
) -> anyhow::Result<()> {
    faststream_testing::init_test_logging();
    for binary in crate::common::servers_in(faststream_testing::ServerVersions::Since(2, 11))? {
        let version = binary.version.clone();
        let _cluster_slot = crate::common::one_cluster_at_a_time().await;
        let mut cluster = NatsCluster::start(&binary, 3).await?;
        let result = probe(&mut cluster).await;
        if result.is_err() {
            keep_server_logs(&cluster);
        }
        result.with_context(|| format!("on a nats-server {version} cluster"))?;
    }
    Ok(())
}

async fn probe(cluster: &mut NatsCluster) -> anyhow::Result<()> {
    let step_downs = StepDowns::watch(cluster).await?;
    let running = start_group(cluster).await?;
    let (js, records, partition_of) = (&running.js, &running.records, &running.partition_of);
    let targets = [
        Target::GroupStream,
        Target::BucketStream,
        Target::PartitionConsumer(0),
    ];
    let mut kills: Vec<Kill> = Vec::new();
    for n in 0..KILLS {
        let target = match targets[n % targets.len()] {
            // A different partition each time.
            Target::PartitionConsumer(_) => Target::PartitionConsumer(n),
            other => other,
        };
        let handled = crate::group_support::ends(&records.snapshot());
        records.wait_for_ends(handled + 100, WAIT).await?;
        let group_before = stream_leader(cluster, js, STREAM).await?;
        let bucket_leader = stream_leader(cluster, js, BUCKET_STREAM).await?;
        let node = match target {
            Target::GroupStream => group_before,
            Target::BucketStream => bucket_leader,
            Target::PartitionConsumer(key) => {
                let partition = partition_of
                    .get(&format!("k.{key}"))
                    .copied()
                    .context("a key's partition")?;
                consumer_leader(cluster, js, partition).await?
            }
        };
        tracing::info!(node, ?target, "probe: killing");
        let what = format!("the {target:?} (kill {})", n + 1);
        let KillRound {
            killed_at,
            first,
            last,
            resumed_at,
            mirror_back,
            elected,
            group_leader_after: group_after,
            after_restart,
        } = kill_and_restart(cluster, &running, node, &what).await?;
        wait_all_current(js).await?;
        let moved = partition_moves(&records.snapshot(), partition_of, killed_at, now_nanos());
        let kill = Kill {
            target,
            node,
            first,
            last,
            mirror_back,
            elected,
            group_leader: (group_before, group_after),
            bucket_leader,
            step_downs: step_downs.between(killed_at, resumed_at),
            after_restart,
            moved,
        };
        eprintln!("kill {}: {kill}", n + 1);
        kills.push(kill);
    }
    let summary = finish(running).await?;
    let lasts: Vec<Duration> = kills.iter().map(|kill| kill.last).collect();
    let worst = quantile(&lasts, 1.0);
    let p99 = quantile(&lasts, 0.99);
    let stepped_down = kills.iter().filter(|kill| kill.step_downs > 0).count();
    let after_elections: Vec<Duration> = kills.iter().map(Kill::after_elections).collect();
    let elections: Vec<Duration> = kills.iter().map(|kill| kill.elected).collect();
    eprintln!(
        "{KILLS} kills: every partition handled again at worst {worst:.2?} after a kill, p99 \
         {p99:.2?}; at worst {:.2?} after the elections the kill started (median {:.2?}), which \
         took {:.2?} at worst (median {:.2?}); a member asked the group stream's leader to step \
         down after {stepped_down} of them; {summary}",
        quantile(&after_elections, 1.0),
        quantile(&after_elections, 0.5),
        quantile(&elections, 1.0),
        quantile(&elections, 0.5),
    );
    // Members keep their partitions through elections (the members bucket's included): none
    // is dropped, none gives its partitions up.
    let moved: usize = kills.iter().map(|kill| kill.moved).sum();
    anyhow::ensure!(
        moved == 0,
        "a partition's changes went to the other member {moved} time(s) during the kills, while \
         neither left the group"
    );
    let slow: Vec<String> = kills
        .iter()
        .enumerate()
        .filter(|(_, kill)| {
            kill.last >= KILL_BOUND || kill.after_elections() >= AFTER_ELECTIONS_BOUND
        })
        .map(|(n, kill)| format!("kill {}: {kill}", n + 1))
        .collect();
    anyhow::ensure!(
        slow.is_empty(),
        "{} kill(s) of {KILLS} not followed by every partition handled again within \
         {KILL_BOUND:?} of the kill and {AFTER_ELECTIONS_BOUND:?} of the elections: {}",
        slow.len(),
        slow.join("; ")
    );
    Ok(())
}
