//! An object store subscriber on the endpoints: ready once it has handled the store's state,
//! its calls counted under the store's name like a Key-Value subscriber's.

use super::*;
use faststream_core::{ObjMessage, ObjWatch};

async fn refuse_bad(object: ObjMessage) -> anyhow::Result<()> {
    if object.name().starts_with("bad") {
        anyhow::bail!("cannot take {}", object.name());
    }
    Ok(())
}

#[tokio::test]
async fn object_subscribers_are_ready_and_counted() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let js = crate::common::jetstream(&server).await?;
        let scans = js
            .create_object_store(async_nats::jetstream::object_store::Config {
                bucket: "scans".to_owned(),
                ..Default::default()
            })
            .await?;
        scans.put("old.png", &mut &b"1"[..]).await?;
        let (listener, addr) = local_listener()?;
        let addr = addr.as_str();
        let app = App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .http_listener(listener)
            .obj_subscriber("scans", "scans", ObjWatch::new(), refuse_bad);
        let running = RunningApp::spawn(app);
        let ready = until_ready(addr, 200).await?;
        scans.put("new.png", &mut &b"2"[..]).await?;
        scans.put("bad.png", &mut &b"3"[..]).await?;
        let handled = "faststream_kv_handled_total";
        let labels = |outcome| {
            [
                ("bucket", "scans"),
                ("subscriber", "scans"),
                ("outcome", outcome),
            ]
        };
        until_metrics(
            addr,
            &[
                (handled, &labels("ok"), 2.0),
                (handled, &labels("error"), 1.0),
            ],
        )
        .await?;
        running.stop().await??;
        assert_eq!(ready["status"], "ready", "{ready}");
        Ok(())
    })
    .await
}
