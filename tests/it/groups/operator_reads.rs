//! What an operator reads of a group (`KvGroup`): every dead letter in a few requests, a
//! heartbeat that is not one reported as an error, and replays that write the change given up
//! as it was (a purge as a purge; an expiry refused).

use super::*;
use crate::common::client_messages;
use faststream_core::kv::BucketConfig;

/// Dead letters: 1,000 changes given up, listed in full, oldest first, by a handful of
/// requests (the old reading made one request per letter).
#[tokio::test]
async fn a_thousand_dead_letters_are_read_in_a_few_requests() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        const LETTERS: usize = 1000;
        // Measured: 5 requests for 1,000 letters (stream info, consumer create, two pulls of
        // 500, consumer delete); one request per letter before. The bound leaves room for a
        // retried pull.
        const MAX_REQUESTS: u64 = 12;
        let broker = connected_broker(&server).await?;
        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        calls.fail_with(|message, _| Some(format!("refused {}", message.key())));
        let watch = KvWatch::new(BUCKET)
            .group(settings("letters", 16).max_attempts(1))
            .max_workers(16);
        let member = start_member(&server, "m1", &calls, watch).await?;
        let written = write(store.clone(), 0..LETTERS, LETTERS, Duration::ZERO).await?;
        let group = broker.kv_group(BUCKET, "letters").await?;
        let group_ref = &group;
        faststream_testing::wait_for("every change given up", Duration::from_secs(60), || async {
            let kept = group_ref.info().await?.dead_letters;
            anyhow::Ok(((kept as usize == LETTERS).then_some(()), kept))
        })
        .await?;
        // Nothing else talks to the server while the letters are read.
        member.stop().await??;

        let before = client_messages(&server).await?;
        let letters = group.dead_letters().await?;
        let requests = client_messages(&server).await? - before;
        println!(
            "{} dead letters read with {requests} requests",
            letters.len()
        );
        assert_eq!(letters.len(), LETTERS);
        assert!(
            letters
                .windows(2)
                .all(|pair| pair[0].sequence < pair[1].sequence),
            "not oldest first"
        );
        let read: BTreeSet<(String, u64)> = letters
            .iter()
            .map(|letter| (letter.key.clone(), letter.revision))
            .collect();
        assert_eq!(read, changes(&written));
        assert!(letters.iter().all(|letter| letter.attempts == 1
            && letter.error.contains(&format!("refused {}", letter.key))));
        assert!(
            requests <= MAX_REQUESTS,
            "{requests} requests to read {LETTERS} dead letters, more than {MAX_REQUESTS}"
        );
        // A discarded letter leaves a gap, and the rest are still read.
        group.discard(letters[500].sequence).await?;
        let after_discard = group.dead_letters().await?;
        assert_eq!(after_discard.len(), LETTERS - 1);
        assert!(!after_discard
            .iter()
            .any(|letter| letter.sequence == letters[500].sequence));
        Ok(())
    })
    .await
}

/// An entry of the members bucket that is not a heartbeat (something else wrote the key) makes
/// `info()` fail, naming the entry, rather than report a member with no host, pid or
/// partitions; once the entry is gone, `info()` reads the group again.
#[tokio::test]
async fn a_heartbeat_that_is_not_one_is_an_error_of_info() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let member = start_member(&server, "m1", &calls, group_watch("corrupt", 2)).await?;
        let group = broker.kv_group(BUCKET, "corrupt").await?;
        assert_eq!(group.info().await?.members.len(), 1);

        let members = jetstream(&server)
            .await?
            .get_key_value(format!("KVG_{BUCKET}_corrupt_members"))
            .await?;
        members.put("intruder", "not a heartbeat".into()).await?;
        let error = group
            .info()
            .await
            .err()
            .context("info() with a corrupt heartbeat should fail")?;
        let text = faststream_core::error::chain(&error);
        println!("{text}");
        match error {
            Error::Group { source, .. } => assert!(
                matches!(
                    *source,
                    GroupError::Members {
                        operation: "read",
                        ..
                    }
                ),
                "{source:?}"
            ),
            other => panic!("not Error::Group: {other:?}"),
        }
        assert!(text.contains("`intruder`"), "{text}");

        members.delete("intruder").await?;
        assert_eq!(group.info().await?.members.len(), 1);
        member.stop().await??;
        Ok(())
    })
    .await
}

/// A purge given up is replayed as a purge (the handler sees `PURGE` again, not `DEL`); an
/// expiry given up cannot be written again, so its replay is refused and the letter kept.
#[tokio::test]
async fn a_purge_is_replayed_as_a_purge_and_an_expiry_is_refused() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker
            .key_value_with(
                BucketConfig::new(BUCKET)
                    .history(64)
                    .limit_markers(Duration::from_secs(1)),
            )
            .await?;
        let calls = Calls::default();
        calls.fail_with(|message, _| {
            (message.operation() != Operation::Put).then(|| format!("{}", message.operation()))
        });
        let watch = KvWatch::new(BUCKET).group(settings("replays", 2).max_attempts(1));
        let member = start_member(&server, "m1", &calls, watch).await?;
        store.put("orders.p", "v".into()).await?;
        store.purge("orders.p").await?;
        store
            .create_with_ttl("orders.t", "v".into(), Duration::from_secs(1))
            .await?;
        let group = broker.kv_group(BUCKET, "replays").await?;
        let group_ref = &group;
        let letters = faststream_testing::wait_for("2 dead letters", EVENT_TIMEOUT, || async {
            let letters = group_ref.dead_letters().await?;
            let seen = format!("{letters:?}");
            anyhow::Ok(((letters.len() == 2).then_some(letters), seen))
        })
        .await?;
        let letter = |operation| {
            letters
                .iter()
                .find(|letter| letter.operation == operation)
                .with_context(|| format!("no {operation} letter in {letters:?}"))
        };
        let (purged, expired) = (letter(Operation::Purge)?, letter(Operation::Expired)?);
        calls.heal();

        group.replay(purged.sequence).await?;
        let replayed = calls
            .wait_for("the replayed purge", |calls| {
                calls
                    .iter()
                    .any(|c| c.key() == "orders.p" && c.revision() > purged.revision)
            })
            .await?;
        let replayed = replayed
            .iter()
            .find(|c| c.key() == "orders.p" && c.revision() > purged.revision)
            .context("replayed call")?;
        assert_eq!(replayed.message.operation(), Operation::Purge);

        let refused = group.replay(expired.sequence).await;
        let refused = refused.err().context("replaying an expiry should fail")?;
        let text = faststream_core::error::chain(&refused);
        assert!(text.contains("expir"), "{text}");
        let kept: Vec<u64> = group
            .dead_letters()
            .await?
            .iter()
            .map(|letter| letter.sequence)
            .collect();
        assert_eq!(kept, [expired.sequence]);
        member.stop().await??;
        Ok(())
    })
    .await
}

/// An operator who may not read the dead-letter stream's info gets an error from `info()`
/// naming that stream, not a count of 0 dead letters.
#[tokio::test]
async fn info_fails_when_the_dead_letters_cannot_be_counted() -> anyhow::Result<()> {
    faststream_testing::init_test_logging();
    for binary in crate::common::servers() {
        if !binary.version_at_least(2, 11) {
            continue;
        }
        // Clients without credentials are `app`; `operator` may do everything but ask for the
        // info of the group's dead-letter stream.
        let config = format!(
            "authorization {{ users: [
                {{ user: app, password: app }}
                {{ user: operator, password: operator, permissions: {{
                    publish: {{ allow: [\">\"], deny: [\"$JS.API.STREAM.INFO.KVG_{BUCKET}_denied_dead\"] }}
                    subscribe: \">\" }} }}
            ] }}
            no_auth_user: app"
        );
        let server = NatsServer::start_with_config(&binary, &config).await?;
        bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        let member = start_member(&server, "m1", &calls, group_watch("denied", 2)).await?;
        let operator = NatsBroker::connect(
            BrokerConfig::new(server.url()).user_and_password("operator", "operator"),
        )
        .await?;
        let group = operator.kv_group(BUCKET, "denied").await?;
        let error = group
            .info()
            .await
            .err()
            .context("info() without the dead letters' count should fail")?;
        let text = faststream_core::error::chain(&error);
        println!("{text}");
        match error {
            Error::Group { source, .. } => assert!(
                matches!(&*source, GroupError::Stream { stream, .. } if *stream == format!("KVG_{BUCKET}_denied_dead")),
                "{source:?}"
            ),
            other => panic!("not Error::Group: {other:?}"),
        }
        member.stop().await??;
    }
    Ok(())
}
