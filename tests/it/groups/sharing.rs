//! Members sharing a group's changes: once each, in order, with the bucket entry, and going
//! on where the group stopped.

use super::*;

/// One member on its own (the smoke test): existing keys, then later changes, all handled.
#[tokio::test]
async fn one_member_handles_everything() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.key_value(BUCKET).await?;
        let mut expected = BTreeSet::new();
        for i in 0..20 {
            let key = format!("orders.{i}");
            let revision = store.put(&key, "x".into()).await?;
            expected.insert((key, revision));
        }
        let calls = Calls::default();
        let member = start_member(&server, "m1", &calls, group_watch("billing", 4)).await?;
        calls
            .wait_for_handled("the 20 existing keys", &expected)
            .await?;
        for i in 20..40 {
            let key = format!("orders.{i}");
            let revision = store.put(&key, "y".into()).await?;
            expected.insert((key, revision));
        }
        calls
            .wait_for_handled("the 20 later keys", &expected)
            .await?;
        let info = info_until(
            &broker,
            "billing",
            "one member with every partition",
            |info| info.is_balanced(1) && settled(info),
        )
        .await?;
        assert_eq!(info.pattern, PATTERN);
        member.stop().await??;
        assert_once_and_in_order(&calls.all(), &expected);
        Ok(())
    })
    .await
}

/// Three members under a writer: every change handled once, by one member; a key's calls never
/// overlap and follow revision order; every member does some; the assignment is balanced.
#[tokio::test]
async fn members_share_the_changes_once_and_in_order() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const PARTITIONS: u16 = 16;
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let watch = group_watch("billing", PARTITIONS);
        let m1 = start_member(&server, "m1", &calls, watch.clone()).await?;
        let m2 = start_member(&server, "m2", &calls, watch.clone()).await?;
        // The third joins while the first half is written; the second half comes after.
        let first = tokio::spawn(write(store.clone(), 0..150, 30, WORK));
        let m3 = start_member(&server, "m3", &calls, watch.clone()).await?;
        let mut written = first.await??;
        written.extend(write(store.clone(), 150..300, 30, WORK).await?);
        let expected = changes(&written);
        calls.wait_for_handled("the 300 changes", &expected).await?;
        let info = info_until(&broker, "billing", "3 members, balanced", |info| {
            info.is_balanced(3) && settled(info)
        })
        .await?;
        let sizes: Vec<usize> = info.members.iter().map(|m| m.partitions.len()).collect();
        println!("partitions per member: {sizes:?}");
        for running in [m1, m2, m3] {
            running.stop().await??;
        }
        let calls = calls.all();
        assert_once_and_in_order(&calls, &expected);
        for member in ["m1", "m2", "m3"] {
            let count = calls.iter().filter(|c| &*c.member == member).count();
            println!("{member} handled {count}");
            assert!(count > 0, "{member} handled nothing");
        }
        Ok(())
    })
    .await
}

/// What a handler is given in a group: the bucket's revision, the key, the operation and the
/// entry's creation time; deletes arrive unless the member ignores them.
#[tokio::test]
async fn messages_carry_the_bucket_entry() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let billing = start_member(&server, "billing", &calls, group_watch("billing", 4)).await?;
        let audit = start_member(
            &server,
            "audit",
            &calls,
            group_watch("audit", 4).ignore_deletes(true),
        )
        .await?;
        let r1 = store.put("orders.1", "a".into()).await?;
        let r2 = store.put("orders.2", "b".into()).await?;
        let r3 = store.put("orders.1", "c".into()).await?;
        store.delete("orders.2").await?;
        let r4 = last_revision(&store, "orders.2").await?;
        let r5 = store.put("orders.2", "d".into()).await?;
        let puts = BTreeSet::from([
            ("orders.1".to_owned(), r1),
            ("orders.2".to_owned(), r2),
            ("orders.1".to_owned(), r3),
            ("orders.2".to_owned(), r5),
        ]);
        let mut every = puts.clone();
        every.insert(("orders.2".to_owned(), r4));
        calls
            .wait_for("both groups' changes", |calls| {
                let of = |member: &str| -> BTreeSet<_> {
                    calls
                        .iter()
                        .filter(|c| &*c.member == member && c.ok())
                        .map(Call::change)
                        .collect()
                };
                of("billing").is_superset(&every) && of("audit").is_superset(&puts)
            })
            .await?;
        for group in ["billing", "audit"] {
            info_until(&broker, group, "nothing pending", settled).await?;
        }
        billing.stop().await??;
        audit.stop().await??;

        assert_once_and_in_order(&calls.of("billing"), &every);
        // The delete came before r5 in its partition: it was settled without a call.
        assert_once_and_in_order(&calls.of("audit"), &puts);
        let mut entries = history(&store, "orders.1").await?;
        entries.extend(history(&store, "orders.2").await?);
        assert_eq!(entries.len(), 5);
        for call in calls.all() {
            let message = &call.message;
            let entry = &entries[&message.revision()];
            assert_eq!(message.bucket(), BUCKET);
            assert_eq!(message.key(), entry.key);
            assert_eq!(message.revision(), entry.revision);
            assert_eq!(message.value(), &entry.value);
            assert_eq!(
                message.created(),
                SystemTime::from(entry.created),
                "{}@{}",
                message.key(),
                message.revision()
            );
            let operation = match entry.operation {
                async_nats::jetstream::kv::Operation::Put => Operation::Put,
                async_nats::jetstream::kv::Operation::Delete => Operation::Delete,
                async_nats::jetstream::kv::Operation::Purge => Operation::Purge,
            };
            assert_eq!(message.operation(), operation);
        }
        let delete = calls
            .of("billing")
            .into_iter()
            .find(|c| c.revision() == r4)
            .context("the delete")?;
        assert_eq!(delete.message.operation(), Operation::Delete);
        assert!(delete.message.value().is_empty());
        Ok(())
    })
    .await
}

/// Progress is kept on the server: a member started later handles exactly what came after
/// the last one stopped.
#[tokio::test]
async fn a_later_member_goes_on_where_the_group_stopped() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let watch = group_watch("billing", 4);
        let first = start_member(&server, "first", &calls, watch.clone()).await?;
        let before = changes(&write(store.clone(), 0..50, 10, Duration::ZERO).await?);
        calls.wait_for_handled("the first 50", &before).await?;
        info_until(&broker, "billing", "nothing pending", settled).await?;
        first.stop().await??;

        let mut after = changes(&write(store.clone(), 50..69, 10, Duration::ZERO).await?);
        store.delete("orders.3").await?;
        let deleted = last_revision(&store, "orders.3").await?;
        after.insert(("orders.3".to_owned(), deleted));
        assert_eq!(after.len(), 20);
        let second = start_member(&server, "second", &calls, watch.clone()).await?;
        calls
            .wait_for_handled("the 20 later changes", &after)
            .await?;
        info_until(&broker, "billing", "nothing pending", settled).await?;
        second.stop().await??;

        let all = calls.all();
        assert_once_and_in_order(&all, &before.union(&after).cloned().collect());
        let second_handled: BTreeSet<_> = calls
            .of("second")
            .iter()
            .filter(|c| c.ok())
            .map(Call::change)
            .collect();
        assert_eq!(second_handled, after);
        let delete = all
            .iter()
            .find(|c| c.revision() == deleted)
            .context("the delete")?;
        assert_eq!(delete.message.operation(), Operation::Delete);
        Ok(())
    })
    .await
}
