//! `max_workers` in a group: calls of several partitions at once, up to the limit, and still
//! one call at a time per key, in revision order.

use super::probe::{most_at_once, start_probe_member, Act, Ending, Probe, Step};
use super::*;

/// Keys written in bursts to one member with `max_workers(4)`, each call working 5-45 ms: per
/// key, the calls never overlap and follow revision order; calls of different keys do overlap,
/// never more than 4 at once; every change is handled once.
#[tokio::test]
async fn max_workers_keeps_each_key_in_order() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const PARTITIONS: u16 = 8;
        const WORKERS: usize = 4;
        const KEYS: usize = 12;
        const BURSTS: usize = 6;
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let probe = Probe::new();
        // Varying work, so that a later revision of a key would often be ready first.
        probe.plan(|message, _| {
            let spread = (message.revision() * 7 + message.key().len() as u64) % 5;
            Act::ok(Duration::from_millis(5 + 10 * spread))
        });
        let watch = KvWatch::new(BUCKET)
            .group(settings("billing", PARTITIONS))
            .max_workers(WORKERS);
        let member = start_probe_member(&server, "m1", &probe, PATTERN, watch).await?;
        let mut written = Vec::new();
        for burst in 0..BURSTS {
            let start = burst * KEYS;
            written.extend(write(store.clone(), start..start + KEYS, KEYS, Duration::ZERO).await?);
            // The next burst once this one is being handled, so that both are in the partitions.
            let begun = probe.steps.snapshot().len();
            probe.steps.wait_for_count(begun + 1).await?;
        }
        let expected = changes(&written);
        probe.wait_for_ok(&expected).await?;
        info_until(&broker, "billing", "nothing pending", settled).await?;
        member.stop().await??;

        let steps = probe.steps.snapshot();
        let ends: Vec<&Step> = steps.iter().filter(|step| !step.is_begin()).collect();
        assert!(
            ends.iter().all(|step| step.ended == Some(Ending::Ok)),
            "{ends:#?}"
        );
        let handled: Vec<(String, u64)> = ends
            .iter()
            .map(|step| (step.key.clone(), step.revision))
            .collect();
        assert_eq!(handled.len(), expected.len(), "a change handled twice");
        assert_eq!(
            handled.iter().cloned().collect::<BTreeSet<_>>(),
            expected,
            "handled other changes than written"
        );
        // Per key: each call ends before the next begins, in revision order.
        let mut per_key: BTreeMap<&str, Vec<&Step>> = BTreeMap::new();
        for step in &steps {
            per_key.entry(step.key.as_str()).or_default().push(step);
        }
        for (key, steps) in &per_key {
            let calls: Vec<&[&Step]> = steps.chunks(2).collect();
            for call in &calls {
                assert!(
                    call.len() == 2
                        && call[0].is_begin()
                        && !call[1].is_begin()
                        && call[0].revision == call[1].revision,
                    "{key}: a call began before the last ended: {steps:#?}"
                );
            }
            for pair in calls.windows(2) {
                assert!(
                    pair[0][0].revision < pair[1][0].revision,
                    "{key}: revision {} then {}",
                    pair[0][0].revision,
                    pair[1][0].revision
                );
            }
        }
        // Calls of different keys ran at once, up to the limit: 4 at once in 10 runs (of 8
        // partitions, 12 keys, 72 changes). At least 2 shows the setting took effect.
        let most = most_at_once(&steps);
        println!("at most {most} calls at once");
        assert!(
            (2..=WORKERS).contains(&most),
            "{most} calls at once with max_workers {WORKERS}"
        );
        Ok(())
    })
    .await
}
