//! When the leaders the cluster tests of a group (`group_cluster.rs`, `group_cluster_kills.rs`)
//! kill are elected again, and what those tests report after a failure: what the cluster says of the bucket, the group's stream and its
//! consumers, and the records and the nodes' logs, copied to `group_cluster/` in the target's
//! temporary directory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use faststream_testing::NatsCluster;

use super::Record;
use crate::group_cluster::{BUCKET, PARTITIONS, STREAM};

/// From now (just after a kill) to every raft group a member relies on having a leader again:
/// the bucket's stream, the group's, its members bucket's, and every partition consumer. Each is
/// asked for its info every 100 ms, each request given 500 ms; only a leader answers, so the
/// last to answer marks the end of the elections the kill started.
pub async fn leaders_elected(js: async_nats::jetstream::Context) -> anyhow::Result<Duration> {
    use async_nats::jetstream::stream::ClusterInfo;
    let started = Instant::now();
    let mut js = js;
    js.set_timeout(Duration::from_millis(500));
    let members = format!("KV_{STREAM}_members");
    let mut streams: Vec<String> = vec![format!("KV_{BUCKET}"), STREAM.to_owned(), members];
    let mut consumers: Vec<String> = (0..PARTITIONS).map(|p| format!("p{p}")).collect();
    let has_leader = |info: Option<&ClusterInfo>| info.is_some_and(|info| info.leader.is_some());
    while !streams.is_empty() || !consumers.is_empty() {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(75),
            "no leader after 75 s for {streams:?} {consumers:?}"
        );
        let stream_answers = futures_util::future::join_all(streams.iter().map(|name| {
            let js = js.clone();
            async move {
                let answered = js.get_stream(name).await;
                answered.is_ok_and(|stream| has_leader(stream.cached_info().cluster.as_ref()))
            }
        }))
        .await;
        let mut answers = stream_answers.into_iter();
        streams.retain(|_| !answers.next().unwrap_or(false));
        if let Ok(group) = js.get_stream(STREAM).await {
            let consumer_answers = futures_util::future::join_all(consumers.iter().map(|name| {
                let group = group.clone();
                async move {
                    let answered = group.consumer_info(name).await;
                    answered.is_ok_and(|info| has_leader(info.cluster.as_ref()))
                }
            }))
            .await;
            let mut answers = consumer_answers.into_iter();
            consumers.retain(|_| !answers.next().unwrap_or(false));
        }
        if !streams.is_empty() || !consumers.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(started.elapsed())
}

/// After a failure: whether the group's mirror becomes active again within a minute more.
pub async fn mirror_recovery(js: &async_nats::jetstream::Context) -> String {
    let started = Instant::now();
    let active =
        faststream_testing::wait_for("the mirror active", Duration::from_secs(60), || async {
            let stream = js.get_stream(STREAM).await?;
            let mirror = stream.cached_info().mirror.as_ref();
            anyhow::Ok(mirror.is_some_and(|mirror| mirror.active.is_some()))
        })
        .await;
    match active {
        Ok(()) => format!(
            "the group's mirror was active again {:?} later",
            started.elapsed()
        ),
        Err(_) => "the group's mirror still inactive a minute later".to_owned(),
    }
}

/// Whether the changes not handled are in the bucket's stream and in the group's.
pub async fn stored(js: &async_nats::jetstream::Context, missing: &[(String, u64)]) -> String {
    let mut lines = Vec::new();
    for name in [format!("KV_{BUCKET}"), STREAM.to_owned()] {
        let Ok(stream) = js.get_stream(&name).await else {
            lines.push(format!("{name}: not found"));
            continue;
        };
        for (key, revision) in missing.iter().take(20) {
            let found = match stream.get_raw_message(*revision).await {
                Ok(message) => format!("{}", message.subject),
                Err(error) => format!("{error}"),
            };
            lines.push(format!("{name} {key}@{revision}: {found}"));
        }
    }
    lines.join("\n")
}

/// What the cluster reports of the bucket's stream, the group's stream and its consumers.
pub async fn diagnose(js: &async_nats::jetstream::Context) -> String {
    let mut lines = Vec::new();
    for name in [format!("KV_{BUCKET}"), STREAM.to_owned()] {
        match js.get_stream(&name).await {
            Ok(stream) => {
                let info = stream.cached_info();
                lines.push(format!(
                    "{name}: last {}, leader {:?}, mirror {:?}",
                    info.state.last_sequence,
                    info.cluster.as_ref().and_then(|c| c.leader.clone()),
                    info.mirror
                ));
                if name == STREAM {
                    for partition in 0..PARTITIONS {
                        match stream.consumer_info(format!("p{partition}")).await {
                            Ok(info) => lines.push(format!(
                                "p{partition}: delivered {:?}, ack floor {:?}, pending {}, ack \
                                 pending {}, waiting {}, redelivered {}, leader {:?}, \
                                 priority groups {:?}",
                                info.delivered,
                                info.ack_floor,
                                info.num_pending,
                                info.num_ack_pending,
                                info.num_waiting,
                                info.num_redelivered,
                                info.cluster.as_ref().and_then(|c| c.leader.clone()),
                                info.priority_groups
                            )),
                            Err(error) => lines.push(format!("p{partition}: {error}")),
                        }
                    }
                }
            }
            Err(error) => lines.push(format!("{name}: {error}")),
        }
    }
    lines.join("\n")
}

/// After a failure: writes the records and the revisions written to `group_cluster/` in the
/// target's temporary directory.
pub fn dump(records: &[Record], written: &BTreeMap<String, Vec<u64>>) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("group_cluster");
    std::fs::create_dir_all(&dir)?;
    let mut text = String::new();
    for r in records {
        writeln!(
            text,
            "{} {} {} {} {} {}",
            r.seq, r.nanos, r.member, r.event, r.key, r.revision
        )?;
    }
    std::fs::write(dir.join("records.txt"), text)?;
    std::fs::write(dir.join("written.txt"), format!("{written:#?}"))?;
    Ok(())
}

/// Copies the nodes' logs to `group_cluster/` in the target's temporary directory (the
/// cluster's own directories go with it).
pub fn keep_server_logs(cluster: &NatsCluster) {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("group_cluster");
    for (index, node) in cluster.nodes().iter().enumerate() {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::copy(node.log_path(), dir.join(format!("n{index}.log")));
    }
}
