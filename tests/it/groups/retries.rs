//! A failing handler in a group: retries with backoff, the dead letter, and replays.

use super::*;

/// Retries with backoff, then the dead letter; a key's later revision waits for the failing
/// one; other keys go on, those of its partition too; a replay is handled and removes the dead
/// letter.
#[tokio::test]
async fn retries_then_gives_up_and_replays() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const PARTITIONS: u16 = 4;
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        calls.fail_with(|message, attempt| match message.key() {
            "orders.bad" => Some(format!("bad order at revision {}", message.revision())),
            "orders.flaky" if attempt <= 2 => Some(format!("flaky, attempt {attempt}")),
            _ => None,
        });
        // A backoff long enough that the failing key is still being retried while the other
        // keys are written and handled.
        let watch = KvWatch::new(BUCKET).group(
            settings("billing", PARTITIONS)
                .max_attempts(3)
                .backoff([Duration::from_millis(250)]),
        );
        let member = start_member(&server, "m1", &calls, watch).await?;
        let bad1 = store.put("orders.bad", "1".into()).await?;
        let bad2 = store.put("orders.bad", "2".into()).await?;
        let flaky = store.put("orders.flaky", "f".into()).await?;
        calls
            .wait_for("the first failure of orders.bad", |calls| {
                calls.iter().any(|c| c.key() == "orders.bad" && !c.ok())
            })
            .await?;
        let others = write(store.clone(), 0..12, 12, Duration::ZERO).await?;
        let mut expected = changes(&others);
        expected.insert(("orders.flaky".to_owned(), flaky));
        calls.wait_for_handled("the other keys", &expected).await?;
        calls
            .wait_for("the 3 attempts of both revisions of orders.bad", |calls| {
                calls.iter().filter(|c| c.key() == "orders.bad").count() >= 6
            })
            .await?;
        let group = broker.kv_group(BUCKET, "billing").await?;
        let group_ref = &group;
        let letters = faststream_testing::wait_for("2 dead letters", EVENT_TIMEOUT, || async {
            let letters = group_ref.dead_letters().await?;
            anyhow::Ok((letters.len() >= 2).then_some(letters))
        })
        .await?;
        info_until(&broker, "billing", "nothing pending", settled).await?;
        let all = calls.all();
        let attempts = |revision: u64| -> Vec<&Call> {
            all.iter().filter(|c| c.revision() == revision).collect()
        };

        // The flaky key: two failures, handled on the third attempt.
        let flaky_calls = attempts(flaky);
        assert_eq!(
            flaky_calls
                .iter()
                .map(|c| (c.attempt, c.ok()))
                .collect::<Vec<_>>(),
            [(1, false), (2, false), (3, true)],
            "{flaky_calls:#?}"
        );
        for pair in flaky_calls.windows(2) {
            let gap = pair[1].begin - pair[0].end;
            assert!(gap >= Duration::from_millis(200), "retried after {gap:?}");
        }
        // The failing key: three attempts per revision, the second revision's only after the
        // first was given up.
        let (bad1_calls, bad2_calls) = (attempts(bad1), attempts(bad2));
        for calls in [&bad1_calls, &bad2_calls] {
            assert_eq!(
                calls.iter().map(|c| c.attempt).collect::<Vec<_>>(),
                [1, 2, 3],
                "{calls:#?}"
            );
            assert!(calls.iter().all(|c| !c.ok()));
        }
        assert!(
            bad1_calls[2].end <= bad2_calls[0].begin,
            "revision {bad2} tried before {bad1} was given up"
        );
        // The dead letters.
        assert_eq!(letters.len(), 2, "{letters:#?}");
        for (letter, (revision, value, call)) in letters
            .iter()
            .zip([(bad1, "1", &bad1_calls[0]), (bad2, "2", &bad2_calls[0])])
        {
            assert_eq!(letter.key, "orders.bad");
            assert_eq!(letter.revision, revision);
            assert_eq!(letter.attempts, 3);
            assert_eq!(letter.operation, Operation::Put);
            assert_eq!(&letter.value[..], value.as_bytes());
            assert_eq!(letter.created, call.message.created());
            assert!(
                letter
                    .error
                    .contains(&format!("bad order at revision {revision}")),
                "{}",
                letter.error
            );
            assert!(!letter.member.is_empty());
        }
        assert_eq!(group.info().await?.dead_letters, 2);
        // The other keys, of its partition too (several changes of a partition are in
        // flight), were handled while orders.bad was being retried: only its own key waits.
        let partitions = partitions_of(
            &server,
            "billing",
            others
                .iter()
                .map(|w| (w.key.clone(), w.revision))
                .chain([("orders.bad".to_owned(), bad1)]),
        )
        .await?;
        let bad_partition = partitions["orders.bad"];
        let mut alongside = 0;
        for change in &others {
            let call = all
                .iter()
                .find(|c| c.ok() && c.key() == change.key && c.revision() == change.revision)
                .context("handled")?;
            assert!(
                call.end <= bad2_calls[2].begin,
                "{} (partition {}) waited for orders.bad (partition {bad_partition})",
                change.key,
                partitions[&change.key]
            );
            alongside += usize::from(partitions[&change.key] == bad_partition);
        }
        println!(
            "orders.bad in partition {bad_partition}: {alongside} changes of that partition \
             handled while it was retried, {} of the others",
            others.len() - alongside
        );
        assert!(
            alongside > 0,
            "no other key in its partition: {partitions:?}"
        );
        assert_per_key_order(&all);

        // Replays: the older letter's key has changed since, so it is refused; the newer one
        // is written again and handled now that the handler succeeds.
        calls.heal();
        let refused = group.replay(letters[0].sequence).await;
        assert!(
            matches!(refused, Err(Error::Group { .. })),
            "replaying over a newer revision: {refused:?}"
        );
        let replayed = group.replay(letters[1].sequence).await?;
        assert!(replayed > bad2, "replay revision {replayed}");
        let replayed_change = BTreeSet::from([("orders.bad".to_owned(), replayed)]);
        calls
            .wait_for_handled("the replayed change", &replayed_change)
            .await?;
        let remaining = group.dead_letters().await?;
        assert_eq!(
            remaining.iter().map(|l| l.sequence).collect::<Vec<_>>(),
            [letters[0].sequence]
        );
        assert_eq!(group.info().await?.dead_letters, 1);
        group.discard(letters[0].sequence).await?;
        assert!(group.dead_letters().await?.is_empty());
        assert_eq!(group.info().await?.dead_letters, 0);
        member.stop().await??;
        let replay_calls = calls
            .all()
            .into_iter()
            .filter(|c| c.revision() == replayed)
            .collect::<Vec<_>>();
        assert_eq!(replay_calls.len(), 1, "{replay_calls:#?}");
        assert_eq!(&replay_calls[0].message.value()[..], b"2");
        Ok(())
    })
    .await
}
