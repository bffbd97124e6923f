//! `KvGroup::info` field by field, each checked against what the test knows: the members'
//! hosts and process ids, the member each partition is pinned to, a change in flight, one
//! delivered again, and the last revision settled.

use super::probe::{hand_over_done, start_probe_member, Act, Probe, Then};
use super::*;

/// The machine's host name, as the kernel has it.
fn host_name() -> anyhow::Result<String> {
    let mut name = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let status = unsafe { libc::gethostname(name.as_mut_ptr().cast(), name.len()) };
    anyhow::ensure!(status == 0, "gethostname failed");
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(String::from_utf8(name[..end].to_vec())?)
}

/// The id of the member `partition` is assigned to.
fn assigned(info: &GroupInfo, partition: u16) -> Option<&str> {
    info.members
        .iter()
        .find(|member| member.partitions.contains(&partition))
        .map(|member| member.id.as_str())
}

/// Two members; a change in each partition, then, in one partition, a change failing its
/// first attempt and held in its second, with two more waiting behind it: the info shows
/// each member's host, pid and partitions, each partition pinned to the member it is
/// assigned to (the one that handled its changes), the held change in flight and delivered
/// again, what waits behind it, and the last revision settled before and after.
#[tokio::test]
async fn info_reports_members_pins_and_progress() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const PARTITIONS: u16 = 2;
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let probe = Probe::new();
        probe.plan(|message, attempt| match (&message.value()[..], attempt) {
            (b"fail", 1) => Act {
                work: Duration::ZERO,
                held: false,
                then: Then::Err("the first attempt fails".to_owned()),
            },
            (b"fail", _) => Act {
                held: true,
                ..Act::ok(Duration::ZERO)
            },
            _ => Act::ok(Duration::ZERO),
        });
        let watch = group_watch("billing", PARTITIONS);
        let m1 = start_probe_member(&server, "m1", &probe, PATTERN, watch.clone()).await?;
        // Alone, m1 holds both partitions and the server pins both to it once it is sent a
        // change in each.
        let alone = hand_over_done(&broker, &store, "billing", 1).await?;
        let m1_id = alone.members[0].id.clone();
        for partition in &alone.partitions {
            assert_eq!(
                partition.pinned_to.as_deref(),
                Some(m1_id.as_str()),
                "{alone:#?}"
            );
        }
        let m2 = start_probe_member(&server, "m2", &probe, PATTERN, watch).await?;
        let balanced = hand_over_done(&broker, &store, "billing", 2).await?;
        let ids: BTreeMap<&str, String> = balanced
            .members
            .iter()
            .map(|member| {
                let name = if member.id == m1_id { "m1" } else { "m2" };
                (name, member.id.clone())
            })
            .collect();
        anyhow::ensure!(ids.len() == 2, "{balanced:#?}");

        // The members: this host, this process, ids made of both, heard from just now.
        let host = host_name()?;
        for member in &balanced.members {
            assert_eq!(member.host, host, "{member:#?}");
            assert_eq!(member.pid, std::process::id(), "{member:#?}");
            let prefix = format!("{host}-{}-", std::process::id());
            assert!(member.id.starts_with(&prefix), "{member:#?}");
            let age = SystemTime::now().duration_since(member.last_seen)?;
            assert!(age < SESSION, "last seen {age:?} ago: {member:#?}");
        }

        // A change in each partition: each partition pinned to the member it is assigned to,
        // the member whose handler ran its changes; the last revision settled is its last.
        let before = probe.ends().len();
        let first = write(store.clone(), 0..8, 8, Duration::ZERO).await?;
        probe.wait_for_ok(&changes(&first)).await?;
        let partitions = partitions_of(&server, "billing", changes(&first)).await?;
        let pinned = info_until(&broker, "billing", "nothing pending", settled).await?;
        let last_of = |written: &[Written], partition: u16| {
            written
                .iter()
                .filter(|w| partitions[&w.key] == partition)
                .map(|w| w.revision)
                .max()
        };
        for partition in &pinned.partitions {
            let p = partition.partition;
            assert_eq!(partition.pinned_to.as_deref(), assigned(&pinned, p));
            let handlers: BTreeSet<String> = probe.ends()[before..]
                .iter()
                .filter(|end| partitions.get(&end.key) == Some(&p))
                .map(|end| ids[&*end.member].clone())
                .collect();
            assert_eq!(
                handlers,
                BTreeSet::from([partition.pinned_to.clone().context("pinned")?]),
                "partition {p}: {pinned:#?}"
            );
            let member = pinned
                .members
                .iter()
                .find(|member| Some(&member.id) == partition.pinned_to.as_ref())
                .context("the pinned member")?;
            assert!(member.pinned.contains(&p), "{member:#?}");
            assert_eq!(
                (
                    partition.in_flight,
                    partition.redelivered,
                    partition.pending
                ),
                (0, 0, 0)
            );
            assert_eq!(Some(partition.last_settled_revision), last_of(&first, p));
        }

        // A change failing once, then held in its second attempt, two more behind it.
        let key = partitions.keys().next().context("a key")?.clone();
        let held_partition = partitions[&key];
        let settled_before = pinned.partitions[usize::from(held_partition)].last_settled_revision;
        probe.hold();
        let failing = store.put(&key, "fail".into()).await?;
        let behind = [
            store.put(&key, "after 1".into()).await?,
            store.put(&key, "after 2".into()).await?,
        ];
        probe
            .wait_for_step("the second attempt", |step| {
                step.is_begin() && step.revision == failing && step.attempt == 2
            })
            .await?;
        // The two behind it are delivered too (several changes of a partition are in
        // flight), and held until it is settled.
        let held = info_until(&broker, "billing", "the changes in flight", |info| {
            info.partitions[usize::from(held_partition)].in_flight == 3
        })
        .await?;
        probe.open();
        let holder = ids[&*probe
            .ends()
            .iter()
            .find(|end| end.revision == failing)
            .context("the failed attempt")?
            .member]
            .clone();
        let partition = &held.partitions[usize::from(held_partition)];
        println!("while held: {partition:?}");
        assert_eq!(partition.in_flight, 3, "{partition:?}");
        assert_eq!(partition.pending, 0, "{partition:?}");
        assert_eq!(partition.redelivered, 1, "{partition:?}");
        assert_eq!(partition.last_settled_revision, settled_before);
        assert_eq!(partition.pinned_to.as_deref(), Some(holder.as_str()));
        let other = &held.partitions[usize::from(1 - held_partition)];
        assert_eq!(
            (other.in_flight, other.redelivered, other.pending),
            (0, 0, 0)
        );

        let all: BTreeSet<(String, u64)> = [failing, behind[0], behind[1]]
            .into_iter()
            .map(|revision| (key.clone(), revision))
            .collect();
        probe.wait_for_ok(&all).await?;
        let done = info_until(&broker, "billing", "nothing pending", settled).await?;
        for running in [m1, m2] {
            running.stop().await??;
        }
        let partition = &done.partitions[usize::from(held_partition)];
        println!("once settled: {partition:?}");
        assert_eq!(partition.last_settled_revision, behind[1]);
        // `redelivered` counts the change in flight if it was delivered before: back to 0
        // once it is settled.
        assert_eq!(
            (
                partition.in_flight,
                partition.redelivered,
                partition.pending
            ),
            (0, 0, 0)
        );
        assert_eq!(done.dead_letters, 0);
        Ok(())
    })
    .await
}
