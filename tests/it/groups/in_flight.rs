//! Several changes of a partition in flight: other keys run alongside a key's long call, and a
//! key's newer change never starts while an older one still runs anywhere, a member that gave
//! the partition up included.

use super::probe::{start_probe_member, Act, Ending, Probe, Step};
use super::*;

/// A member holds the partition of key K with K's change s1 in a long call and K's next change
/// s2 delivered and held behind it, and handles another key of that partition meanwhile. A
/// second member joins and the partition moves to it while s1 still runs at the first: the
/// first hands s2 back at once, the second receives it and must hold it (its old range shows
/// s1 unsettled) while it handles other keys of the partition; s2 starts only once s1 ended,
/// once, as attempt 1 (a hold is not an attempt).
#[tokio::test]
async fn a_change_handed_over_waits_for_its_keys_call_still_running_at_the_member_before(
) -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let probe = Probe::new();
        probe.plan(|message, _| match &message.value()[..] {
            b"slow" => Act {
                held: true,
                ..Act::ok(Duration::ZERO)
            },
            _ => Act::ok(Duration::ZERO),
        });
        let watch = KvWatch::new(BUCKET)
            .max_workers(4)
            .group(settings("billing", 2).max_attempts(1));
        let m1 = start_probe_member(&server, "m1", &probe, PATTERN, watch.clone()).await?;

        // Keys of partition 1, the one the sticky rule moves to a member joining.
        let mut warm = BTreeMap::new();
        for i in 0..16 {
            let key = format!("orders.{i}");
            let revision = store.put(&key, "warm".into()).await?;
            warm.insert(key, revision);
        }
        probe
            .wait_for_ok(&warm.iter().map(|(k, r)| (k.clone(), *r)).collect())
            .await?;
        let partitions = partitions_of(&server, "billing", warm.clone()).await?;
        let moving: Vec<&String> = partitions
            .iter()
            .filter(|(_, partition)| **partition == 1)
            .map(|(key, _)| key)
            .collect();
        let [slow_key, before_key, after_key, ..] = moving[..] else {
            anyhow::bail!("fewer than 3 of 16 keys in partition 1: {partitions:?}");
        };

        probe.hold();
        let s1 = store.put(slow_key, "slow".into()).await?;
        probe
            .wait_for_step("s1 begun at m1", |step| {
                step.is_begin() && step.of(slow_key, s1) && &*step.member == "m1"
            })
            .await?;
        let s2 = store.put(slow_key, "after".into()).await?;
        let other = store.put(before_key, "other".into()).await?;
        probe
            .wait_for_ok(&BTreeSet::from([(before_key.clone(), other)]))
            .await?;

        let m2 = start_probe_member(&server, "m2", &probe, PATTERN, watch).await?;
        let info = info_until(&broker, "billing", "partition 1 pinned to m2", |info| {
            info.is_balanced(2)
                && info.partitions[1]
                    .pinned_to
                    .as_deref()
                    .is_some_and(|pinned| {
                        info.members
                            .iter()
                            .any(|member| member.id == pinned && member.partitions == [1])
                    })
        })
        .await?;
        let m2_id = info.partitions[1].pinned_to.clone().context("pinned")?;
        // m2 works the partition: another key's change is handled there while s1 still runs.
        let later = store.put(after_key, "later".into()).await?;
        probe
            .wait_for_step("another key handled at m2", |step| {
                step.of(after_key, later) && step.ended == Some(Ending::Ok)
            })
            .await
            .with_context(|| format!("m2 is {m2_id}"))?;
        let s2_begun = |steps: &[Step]| steps.iter().any(|s| s.is_begin() && s.of(slow_key, s2));
        assert!(
            !s2_begun(&probe.steps.snapshot()),
            "{slow_key} revision {s2} started while revision {s1} still runs"
        );
        probe.open();
        probe
            .wait_for_ok(&BTreeSet::from([
                (slow_key.clone(), s1),
                (slow_key.clone(), s2),
            ]))
            .await?;
        let steps = probe.steps.snapshot();
        let s1_end = steps
            .iter()
            .find(|s| !s.is_begin() && s.of(slow_key, s1))
            .context("s1's end")?;
        let s2_begins: Vec<&Step> = steps
            .iter()
            .filter(|s| s.is_begin() && s.of(slow_key, s2))
            .collect();
        println!(
            "s1 ended at {} ({:?} after m2 handled another key of the partition); s2 began at {} \
             {:?} later",
            s1_end.member,
            s1_end.at.saturating_duration_since(
                steps
                    .iter()
                    .find(|s| s.of(after_key, later))
                    .context("the other key")?
                    .at
            ),
            s2_begins.first().map_or("-", |s| &*s.member),
            s2_begins
                .first()
                .map(|s| s.at.saturating_duration_since(s1_end.at))
        );
        assert_eq!(&*s1_end.member, "m1");
        assert_eq!(s2_begins.len(), 1, "{s2_begins:#?}");
        assert_eq!(&*s2_begins[0].member, "m2");
        assert!(s2_begins[0].at >= s1_end.at, "s2 began before s1 ended");
        // One attempt allowed: a hand-back counted as an attempt would have been given up.
        let group = broker.kv_group(BUCKET, "billing").await?;
        assert!(
            group.dead_letters().await?.is_empty(),
            "a change was given up"
        );
        m2.stop().await??;
        m1.stop().await??;
        Ok(())
    })
    .await
}
