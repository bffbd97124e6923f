//! What is fixed when a group is created, deleting a group, and servers too old for groups.

use super::*;

/// Where a group starts is fixed at creation: a member asking for another start or partition
/// count is refused, naming the setting. `updates_only` handles only later changes; the
/// default, the latest value of each existing key once; `include_history`, every revision.
#[tokio::test]
async fn the_start_is_recorded_with_the_group() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let existing = write(store.clone(), 0..15, 5, Duration::ZERO).await?;
        let latest: BTreeSet<(String, u64)> = existing[10..]
            .iter()
            .map(|w| (w.key.clone(), w.revision))
            .collect();

        // The default: the latest value of each key, once.
        let latest_calls = Calls::default();
        let latest_member =
            start_member(&server, "latest", &latest_calls, group_watch("latest", 4)).await?;
        latest_calls
            .wait_for_handled("the latest value of each key", &latest)
            .await?;
        info_until(&broker, "latest", "nothing pending", settled).await?;
        assert_once_and_in_order(&latest_calls.all(), &latest);

        // Other settings for the same group are refused, naming the setting.
        let refused = Calls::default();
        let differs = |error: Error, setting: &str, values: [&str; 2]| {
            let (differences, text) = refusal("latest", error);
            assert_eq!(differences.len(), 1, "{differences:?}");
            assert!(differences[0].starts_with(setting), "{differences:?}");
            for value in values {
                assert!(text.contains(value), "`{value}` not in: {text}");
            }
            println!("{text}");
        };
        let history = startup_error(member_app(
            &server,
            "history",
            &refused,
            group_watch("latest", 4).include_history(true),
        ))
        .await?;
        differs(
            history,
            "start",
            ["latest value of each key", "include_history"],
        );
        let partitions = startup_error(member_app(
            &server,
            "partitions",
            &refused,
            group_watch("latest", 6),
        ))
        .await?;
        differs(partitions, "partitions", ["`4`", "`6`"]);
        assert!(refused.all().is_empty(), "{:#?}", refused.all());

        // A new group with updates_only: only what comes after it started.
        let fresh_calls = Calls::default();
        let fresh = start_member(
            &server,
            "fresh",
            &fresh_calls,
            group_watch("fresh", 4).updates_only(true),
        )
        .await?;
        // And one with include_history: every revision.
        let all_calls = Calls::default();
        let everything = start_member(
            &server,
            "everything",
            &all_calls,
            group_watch("everything", 4).include_history(true),
        )
        .await?;
        let later = write(store.clone(), 15..18, 5, Duration::ZERO).await?;
        let later = changes(&later);
        fresh_calls
            .wait_for_handled("the changes after the start", &later)
            .await?;
        let every: BTreeSet<_> = changes(&existing).union(&later).cloned().collect();
        all_calls.wait_for_handled("every revision", &every).await?;
        latest_calls
            .wait_for_handled("the later changes too", &later)
            .await?;
        for group in ["fresh", "everything", "latest"] {
            info_until(&broker, group, "nothing pending", settled).await?;
        }
        for running in [latest_member, fresh, everything] {
            running.stop().await??;
        }
        assert_once_and_in_order(&fresh_calls.all(), &later);
        assert_once_and_in_order(&all_calls.all(), &every);
        assert_once_and_in_order(
            &latest_calls.all(),
            &latest.union(&later).cloned().collect(),
        );
        Ok(())
    })
    .await
}

/// `KvGroup::delete` removes everything the group made on the server, and nothing else.
#[tokio::test]
async fn delete_removes_the_group_streams() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.key_value(BUCKET).await?;
        let calls = Calls::default();
        let member = start_member(&server, "m1", &calls, group_watch("billing", 4)).await?;
        let revision = store.put("orders.1", "x".into()).await?;
        calls
            .wait_for_handled(
                "the change",
                &BTreeSet::from([("orders.1".to_owned(), revision)]),
            )
            .await?;
        member.stop().await??;

        let js = jetstream(&server).await?;
        let streams = [
            format!("KVG_{BUCKET}_billing"),
            format!("KV_KVG_{BUCKET}_billing_members"),
            format!("KVG_{BUCKET}_billing_dead"),
        ];
        for stream in &streams {
            js.get_stream(stream)
                .await
                .with_context(|| format!("{stream} before the delete"))?;
        }
        broker.kv_group(BUCKET, "billing").await?.delete().await?;
        for stream in &streams {
            let gone = js.get_stream(stream).await;
            assert!(gone.is_err(), "{stream} is still there");
        }
        js.get_stream(format!("KV_{BUCKET}"))
            .await
            .context("the bucket went too")?;
        let missing = broker.kv_group(BUCKET, "billing").await;
        match missing {
            Err(Error::Group { source, .. }) => {
                assert!(matches!(*source, GroupError::NotFound { .. }), "{source:?}");
            }
            other => panic!("the deleted group opened: {other:?}"),
        }
        Ok(())
    })
    .await
}

/// Before 2.11 a group cannot work (no pinned priority groups): start-up fails naming the
/// version, before any handler runs, and nothing of the group is made.
#[tokio::test]
async fn servers_before_2_11_refuse_groups() -> anyhow::Result<()> {
    on_each_server_before(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.key_value(BUCKET).await?;
        store.put("orders.1", "x".into()).await?;
        let calls = Calls::default();
        // A plain subscriber beside the member: it must not start either.
        let app = member_app(&server, "m1", &calls, group_watch("billing", 4)).subscriber(
            "plain",
            PATTERN,
            KvWatch::new(BUCKET),
            handle,
        );
        let error = startup_error(app).await?;
        let text = error.to_string();
        match &error {
            Error::ServerTooOld {
                feature,
                required,
                server,
            } => {
                assert!(feature.contains("KvWatch::group"), "{feature}");
                assert_eq!(*required, "2.11");
                assert!(server.starts_with("2.9"), "{server}");
            }
            other => panic!("not ServerTooOld: {other:?}"),
        }
        assert!(text.contains("2.11") && text.contains("2.9"), "{text}");
        assert!(calls.all().is_empty(), "a handler ran: {:#?}", calls.all());
        assert!(
            !calls.events.snapshot().iter().any(|e| e == "m1 started"),
            "start-up went on"
        );
        let js = jetstream(&server).await?;
        for stream in [
            format!("KVG_{BUCKET}_billing"),
            format!("KV_KVG_{BUCKET}_billing_members"),
            format!("KVG_{BUCKET}_billing_dead"),
        ] {
            assert!(js.get_stream(&stream).await.is_err(), "{stream} was made");
        }
        Ok(())
    })
    .await
}
