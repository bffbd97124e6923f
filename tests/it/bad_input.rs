//! Bad and extreme input: maximum-size, empty and binary values, keys with every allowed
//! character, and invalid names given at run time, which fail before any request.

use crate::common::{client_messages, on_each_server, record_started, Events, RunningApp};
use bytes::Bytes;
use faststream_core::{App, BrokerConfig, Error, HookStage, KvMessage, KvWatch, State};

/// Records `key len=N sum=S` (a cheap fingerprint of the bytes).
async fn fingerprint(message: KvMessage, value: Bytes, State(events): State<Events>) {
    let sum: u64 = value.iter().map(|byte| u64::from(*byte)).sum();
    events.push(format!("{} len={} sum={sum}", message.key(), value.len()));
}

/// Records `text:<value>` for values that are UTF-8.
async fn text(msg: String, State(events): State<TextEvents>) {
    events.0.push(format!("text:{msg}"));
}

#[derive(Clone)]
struct TextEvents(Events);

#[tokio::test]
async fn extreme_values_and_keys_are_delivered_intact() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let max_payload = server.varz().await?["max_payload"]
            .as_u64()
            .unwrap_or(1024 * 1024) as usize;
        let events = Events::default();
        let texts = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .with_state(TextEvents(texts.clone()))
            .subscriber("bytes", ">", KvWatch::new("extreme"), fingerprint)
            .subscriber("text", ">", KvWatch::new("extreme"), text)
            .hook(HookStage::AfterStartup, "started", record_started);
        let running = RunningApp::spawn(app);
        events.wait_for_event("started").await?;
        let broker = crate::common::connected_broker(&server).await?;
        let store = broker.key_value("extreme").await?;

        // The largest value the server takes: its max payload less the subject and headers.
        let mut size = max_payload;
        let big = loop {
            let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            match store.put("big", value.clone().into()).await {
                Ok(_) => break value,
                Err(_) if size > max_payload - 512 => size -= 16,
                Err(error) => anyhow::bail!("no value near {max_payload} bytes fits: {error}"),
            }
        };
        let big_sum: u64 = big.iter().map(|b| u64::from(*b)).sum();
        let binary: Vec<u8> = (0..=255u8).collect();
        let binary_sum: u64 = binary.iter().map(|b| u64::from(*b)).sum();
        store.put("binary", binary.into()).await?;
        store.put("empty", Bytes::new()).await?;
        let every_char = "AZaz09-_/=.Q.ab-c_d/e=f";
        store.put(every_char, "ok".into()).await?;
        store.put("done", "done".into()).await?;

        let all = events
            .wait_for("done", |e| e.iter().any(|e| e.starts_with("done ")))
            .await?;
        texts.wait_for_event("text:done").await?;
        running.stop().await??;
        assert_eq!(
            all,
            [
                "started".to_owned(),
                format!("big len={} sum={big_sum}", big.len()),
                format!("binary len=256 sum={binary_sum}"),
                "empty len=0 sum=0".to_owned(),
                format!(
                    "{every_char} len=2 sum={}",
                    u64::from(b'o') + u64::from(b'k')
                ),
                "done len=4 sum=422".to_owned(),
            ]
        );
        assert!(
            big.len() > max_payload - 512,
            "{} of {max_payload}",
            big.len()
        );
        // The `String` subscriber skipped the non-UTF-8 binary value and went on.
        // (`big` is not UTF-8 either: its bytes go up to 250.)
        assert_eq!(texts.snapshot(), ["text:", "text:ok", "text:done"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn invalid_names_at_run_time_fail_before_any_request() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = crate::common::connected_broker(&server).await?;
        let store = broker.key_value("names").await?;
        let before = client_messages(&server).await?;
        for bucket in ["", "a.b", "a b", "a*", "ünïcode"] {
            let error = broker.key_value(bucket).await.err();
            assert!(
                matches!(error, Some(Error::InvalidName(_))),
                "{bucket:?}: {error:?}"
            );
        }
        for key in ["", ".a", "a.", "a..b", "a b", "a*", "a.>"] {
            assert!(
                store.put(key, "x".into()).await.is_err(),
                "{key:?} accepted"
            );
        }
        let watch = broker.kv_watch("a.>.b", KvWatch::new("names")).await;
        assert!(
            matches!(watch, Err(Error::InvalidName(_))),
            "{:?}",
            watch.err()
        );
        assert_eq!(
            client_messages(&server).await?,
            before,
            "a request was made"
        );
        Ok(())
    })
    .await
}
