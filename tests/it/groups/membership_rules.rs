//! Who may join a group: a member whose session timeout or key pattern differs from the
//! group's is refused at start-up, with an error naming each difference.

use super::probe::{probe_app, start_probe_member, Probe};
use super::*;

/// With a member running, others asking for another session timeout, another key pattern, or
/// both, fail start-up naming each difference with both values; none of them handles anything
/// or joins, and the member goes on alone.
#[tokio::test]
async fn a_member_with_other_settings_is_refused() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let probe = Probe::new();
        let member =
            start_probe_member(&server, "m1", &probe, PATTERN, group_watch("billing", 4)).await?;
        let longer = KvWatch::new(BUCKET)
            .group(settings("billing", 4).session_timeout(SESSION + Duration::from_secs(1)));
        let session = "session_timeout (ms): the group has `2000`, this member `3000`";
        let pattern = "key pattern: the group has `orders.{id}`, this member `invoices.{id}`";
        let cases = [
            ("session", PATTERN, longer.clone(), vec![session]),
            (
                "pattern",
                "invoices.{id}",
                group_watch("billing", 4),
                vec![pattern],
            ),
            ("both", "invoices.{id}", longer, vec![pattern, session]),
        ];
        for (name, key_pattern, watch, expected) in cases {
            let app = probe_app(&server, name, &probe, key_pattern, watch);
            let (differences, text) = refusal("billing", startup_error(app).await?);
            println!("{name}: {text}");
            assert_eq!(differences, expected, "{name}");
            for difference in expected {
                assert!(
                    text.contains(difference),
                    "{name}: `{difference}` not in {text}"
                );
            }
        }
        let changed = store.put("orders.1", "x".into()).await?;
        probe
            .wait_for_ok(&BTreeSet::from([("orders.1".to_owned(), changed)]))
            .await?;
        let info = info_until(&broker, "billing", "nothing pending", settled).await?;
        member.stop().await??;
        assert_eq!(info.members.len(), 1, "{info:#?}");
        let members: BTreeSet<String> = probe
            .steps
            .snapshot()
            .iter()
            .map(|step| step.member.to_string())
            .collect();
        assert_eq!(members, BTreeSet::from(["m1".to_owned()]));
        let started = probe.events.snapshot();
        assert_eq!(started, ["m1 started"], "a refused member started");
        Ok(())
    })
    .await
}
