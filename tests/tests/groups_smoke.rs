mod common;

use std::time::Duration;

use common::{connected_broker, on_each_server_since, Recorder, RunningApp};
use faststream_core::kv::GroupSettings;
use faststream_core::{App, KvMessage, KvWatch, NatsBroker, State};

async fn record(message: KvMessage, State(events): State<Recorder>) {
    events.push(format!("{}={}", message.key(), message.revision()));
}

#[tokio::test]
async fn one_member_handles_everything() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.key_value("shop").await?;
        for i in 0..20 {
            store.put(format!("orders.{i}"), "x".into()).await?;
        }
        let events = Recorder::default();
        let watch = KvWatch::new("shop")
            .group(GroupSettings::new("billing").session_timeout(Duration::from_secs(2)));
        let app = App::new(NatsBroker::new(server.url()))
            .without_registered()
            .with_state(events.clone())
            .subscriber("bill", "orders.*", watch, record);
        let running = RunningApp::spawn(app);
        events.wait_for("20", |events| events.len() >= 20).await?;
        for i in 20..40 {
            store.put(format!("orders.{i}"), "y".into()).await?;
        }
        events.wait_for("40", |events| events.len() >= 40).await?;
        let info = broker.kv_group("shop", "billing").await?.info().await?;
        println!("{info:#?}");
        running.stop().await??;
        println!("{:?}", events.events());
        Ok(())
    })
    .await
}
