//! Queue groups: instances of a service with the same `queue` share a subject's messages, each
//! message to one of them; and a core subscription outlives a server restart.

use std::collections::BTreeMap;

use super::support::wait_for_subscriptions;
use crate::common::{on_each_server, Events, Recorder, RunningApp};
use faststream_core::{App, BrokerConfig};

/// Which instance of the service a handler runs in.
#[derive(Debug, Clone)]
struct Instance(&'static str);

/// `(instance, payload)` of each message handled.
type Handled = Recorder<(&'static str, String)>;

mod workers {
    use super::{Handled, Instance};
    use faststream_core::{subscriber, State};

    #[subscriber("qg.jobs", queue = "workers")]
    async fn job(body: String, State(instance): State<Instance>, State(handled): State<Handled>) {
        handled.push((instance.0, body));
    }
}

fn worker(server_url: String, instance: &'static str, handled: &Handled) -> RunningApp {
    let app = App::new(BrokerConfig::new(server_url))
        .only_module(concat!(module_path!(), "::workers"))
        .with_state(Instance(instance))
        .with_state(handled.clone());
    RunningApp::spawn(app)
}

#[tokio::test]
async fn a_queue_group_handles_each_message_once_across_instances() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        const MESSAGES: usize = 1000;
        let handled = Handled::default();
        let first = worker(server.url(), "first", &handled);
        let second = worker(server.url(), "second", &handled);
        wait_for_subscriptions(&server, "qg.jobs", 2).await?;
        let client = async_nats::connect(server.url()).await?;
        for n in 0..MESSAGES {
            client.publish("qg.jobs", n.to_string().into()).await?;
        }
        client.flush().await?;
        handled.wait_for_count(MESSAGES).await?;
        // Stopped (drained) before counting: a duplicate still on its way would be counted.
        first.stop().await??;
        second.stop().await??;
        let handled = handled.snapshot();
        assert_eq!(handled.len(), MESSAGES, "handled more than once");
        let mut per_payload: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        let mut per_instance: BTreeMap<&str, usize> = BTreeMap::new();
        for (instance, payload) in &handled {
            per_payload
                .entry(payload.parse()?)
                .or_default()
                .push(instance);
            *per_instance.entry(instance).or_default() += 1;
        }
        assert_eq!(
            per_payload.keys().copied().collect::<Vec<_>>(),
            (0..MESSAGES).collect::<Vec<_>>()
        );
        // The server spreads the group's messages at random: each gets about half.
        assert_eq!(per_instance.len(), 2, "{per_instance:?}");
        assert!(per_instance.values().all(|&n| n > 0), "{per_instance:?}");
        Ok(())
    })
    .await
}

mod listener {
    use super::Events;
    use faststream_core::{subscriber, State};

    #[subscriber("qg.events")]
    async fn on_event(body: String, State(events): State<Events>) {
        events.push(body);
    }
}

#[tokio::test]
async fn a_core_subscription_survives_a_server_restart() -> anyhow::Result<()> {
    on_each_server(|mut server| async move {
        let events = Events::default();
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::listener"))
            .with_state(events.clone());
        let running = RunningApp::spawn(app);
        wait_for_subscriptions(&server, "qg.events", 1).await?;
        let client = async_nats::connect(server.url()).await?;
        client.publish("qg.events", "before".into()).await?;
        client.flush().await?;
        events.wait_for_event("before").await?;
        drop(client);

        server.restart().await?;
        // The restarted server knows no subscription until the app reconnects and renews it.
        wait_for_subscriptions(&server, "qg.events", 1).await?;
        let client = async_nats::connect(server.url()).await?;
        for n in 0..10 {
            client
                .publish("qg.events", format!("after {n}").into())
                .await?;
        }
        client.flush().await?;
        let all = events.wait_for_count(11).await?;
        let expected: Vec<String> = std::iter::once("before".to_owned())
            .chain((0..10).map(|n| format!("after {n}")))
            .collect();
        assert_eq!(all, expected);
        running.stop().await??;
        Ok(())
    })
    .await
}
