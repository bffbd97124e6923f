//! `/metrics` after known workloads: every outcome counted, and the group metrics.

use super::*;
use faststream_core::BrokerConfig;

#[tokio::test]
async fn metrics_count_every_outcome() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let (listener, addr) = local_listener()?;
        let addr = addr.as_str();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .http_listener(listener)
            .handler_timeout(Duration::from_millis(200))
            .subscriber("mixed", "k.*.*", KvWatch::new("obs"), outcomes)
            .subscriber("typed", "j.*", KvWatch::new("obs"), typed);
        let running = RunningApp::spawn(app);
        until_ready(addr, 200).await?;

        let store = crate::common::jetstream(&server)
            .await?
            .get_key_value("obs")
            .await?;
        for (kind, count) in [("ok", 5), ("err", 3), ("panic", 2), ("slow", 1)] {
            for index in 0..count {
                store.put(format!("k.{kind}.{index}"), "x".into()).await?;
            }
        }
        for index in 0..4 {
            store
                .put(format!("j.{index}"), r#"{"amount": 1}"#.into())
                .await?;
        }
        store.put("j.bad1", "not json".into()).await?;
        store.put("j.bad2", r#"{"amount": "one"}"#.into()).await?;
        // A deletion is no value for `Json<Order>`: skipped by design, not bad input.
        store.delete("j.gone").await?;

        let handled = "faststream_kv_handled_total";
        let mixed = |outcome| {
            [
                ("bucket", "obs"),
                ("subscriber", "mixed"),
                ("outcome", outcome),
            ]
        };
        let typed = |outcome| {
            [
                ("bucket", "obs"),
                ("subscriber", "typed"),
                ("outcome", outcome),
            ]
        };
        let (ok, error, panic, timeout, skipped, rejected) = (
            mixed("ok"),
            mixed("error"),
            mixed("panic"),
            mixed("timeout"),
            mixed("skipped"),
            mixed("rejected"),
        );
        let (typed_ok, typed_skipped, typed_rejected) =
            (typed("ok"), typed("skipped"), typed("rejected"));
        let text = until_metrics(
            addr,
            &[
                (handled, &ok, 5.0),
                (handled, &error, 3.0),
                (handled, &panic, 2.0),
                (handled, &timeout, 1.0),
                (handled, &skipped, 0.0),
                (handled, &rejected, 0.0),
                (handled, &typed_ok, 4.0),
                // The deletion is skipped; the two values that are not an `Order` are bad
                // input, counted apart so that an alert on `rejected` sees them.
                (handled, &typed_skipped, 1.0),
                (handled, &typed_rejected, 2.0),
                // Calls that ran: not the timed-out one, not the three never called.
                (
                    "faststream_kv_handler_seconds_count",
                    &[("subscriber", "mixed")],
                    10.0,
                ),
                (
                    "faststream_kv_handler_seconds_count",
                    &[("subscriber", "typed")],
                    4.0,
                ),
                (
                    "faststream_kv_watch_pending",
                    &[("subscriber", "mixed")],
                    0.0,
                ),
                (
                    "faststream_kv_watch_pending",
                    &[("subscriber", "typed")],
                    0.0,
                ),
                ("faststream_nats_connected", &[], 1.0),
                ("faststream_nats_reconnects_total", &[], 0.0),
            ],
        )
        .await?;
        // Every call of `mixed` is far below a minute; the timed-out one is not observed.
        let under_a_minute = sample(
            &text,
            "faststream_kv_handler_seconds_bucket",
            &[("subscriber", "mixed"), ("le", "60")],
        );
        assert_eq!(under_a_minute, Some(10.0), "{text}");
        for reason in ["silence", "reconnected", "gap", "stream_replaced"] {
            let labels = [("subscriber", "mixed"), ("reason", reason)];
            let recreated = sample(&text, "faststream_kv_watch_recreated_total", &labels);
            assert_eq!(recreated, Some(0.0), "{reason}: {text}");
        }
        assert!(
            text.contains("# TYPE faststream_kv_handler_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("# HELP faststream_kv_watch_pending "),
            "{text}"
        );

        let openmetrics = http_get(
            &format!("http://{addr}/metrics"),
            &[("Accept", "application/openmetrics-text; version=1.0.0")],
        )
        .await?;
        assert!(
            openmetrics
                .content_type
                .as_deref()
                .is_some_and(|ty| ty.starts_with("application/openmetrics-text")),
            "{:?}",
            openmetrics.content_type
        );
        assert!(
            openmetrics.body.trim_end().ends_with("# EOF"),
            "{}",
            openmetrics.body
        );

        let live = http_get(&format!("http://{addr}/health/live"), &[]).await?;
        assert_eq!(live.status, 200);
        let unknown = http_get(&format!("http://{addr}/nope"), &[]).await?;
        assert_eq!(unknown.status, 404);

        running.stop().await??;
        // The endpoint stops with the app.
        let after = http_get(&format!("http://{addr}/health/live"), &[]).await;
        assert!(
            after.is_err(),
            "still answering after the app stopped: {after:?}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn group_members_report_redeliveries_given_up_and_partitions() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server: NatsServer| async move {
        let (listener, addr) = local_listener()?;
        let addr = addr.as_str();
        let running = RunningApp::spawn(member(&server, listener));
        let body = until_ready(addr, 200).await?;
        assert_eq!(body["subscribers"][0]["group"], "billing");

        let store = crate::common::jetstream(&server)
            .await?
            .get_key_value("shop")
            .await?;
        for index in 0..5 {
            store.put(format!("orders.{index}"), "x".into()).await?;
        }
        store.put("orders.bad", "x".into()).await?;
        let group = [("subscriber", "bill"), ("group", "billing")];
        until_metrics(
            addr,
            &[
                (
                    "faststream_kv_handled_total",
                    &[("subscriber", "bill"), ("outcome", "ok")],
                    5.0,
                ),
                (
                    "faststream_kv_handled_total",
                    &[("subscriber", "bill"), ("outcome", "error")],
                    3.0,
                ),
                // Attempts 2 and 3 of the bad change.
                ("faststream_kv_group_redelivered_total", &group, 2.0),
                ("faststream_kv_group_given_up_total", &group, 1.0),
                // The only member holds the only partition.
                ("faststream_kv_group_partitions_owned", &group, 1.0),
                (
                    "faststream_kv_watch_pending",
                    &[("subscriber", "bill")],
                    0.0,
                ),
            ],
        )
        .await?;

        // A second member: one of the two holds the partition, the other stands by, and a
        // member on standby is ready.
        let (second_listener, second_addr) = local_listener()?;
        let second_addr = second_addr.as_str();
        let second = RunningApp::spawn(member(&server, second_listener));
        let held = faststream_testing::wait_for(
            "one member holding the partition, one on standby",
            EVENT_TIMEOUT,
            move || async move {
                let first = ready(addr).await?;
                let second = ready(second_addr).await?;
                let partitions = |response: &HttpResponse| -> anyhow::Result<Option<u64>> {
                    Ok(response.json()?["subscribers"][0]["partitions"].as_u64())
                };
                let held = (partitions(&first)?, partitions(&second)?);
                let settled = first.status == 200
                    && second.status == 200
                    && matches!(held, (Some(1), Some(0)) | (Some(0), Some(1)));
                Ok((
                    settled.then_some(held),
                    format!("{held:?}: {} / {}", first.body, second.body),
                ))
            },
        )
        .await?;
        assert_ne!(held.0, held.1, "{held:?}");
        second.stop().await??;
        running.stop().await??;
        Ok(())
    })
    .await
}
