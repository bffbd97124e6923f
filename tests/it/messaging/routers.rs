//! `router!(prefix = ..)`: the subjects of subscribers and publishers in its module and below
//! get its prefix, nested modules' prefixes joined outermost first.

use std::time::Duration;

use super::support::{wait_for_subscriptions, Collected};
use crate::common::{on_each_server, RunningApp};
use faststream_core::error::NatsError;
use faststream_core::{App, BrokerConfig, Outgoing};

mod orders {
    faststream_core::router!(prefix = "orders.");

    use faststream_core::{publisher, subscriber};

    #[subscriber("created")]
    #[publisher("billed")]
    async fn created(body: String) -> String {
        format!("billed {body}")
    }

    mod eu {
        faststream_core::router!(prefix = "eu.");

        use faststream_core::{publisher, subscriber};

        #[subscriber("{country}.created")]
        #[publisher("billed")]
        async fn created(faststream_core::Path(country): faststream_core::Path<String>) -> String {
            format!("billed in {country}")
        }
    }
}

#[tokio::test]
async fn prefixes_apply_to_subscribers_and_publishers_outermost_first() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let app = App::new(BrokerConfig::new(server.url()))
            .only_module(concat!(module_path!(), "::orders"));
        let running = RunningApp::spawn(app);
        wait_for_subscriptions(&server, "orders.created", 1).await?;
        wait_for_subscriptions(&server, "orders.eu.*.created", 1).await?;
        let mut billed = Collected::subscribe(&server, "orders.billed").await?;
        let mut eu_billed = Collected::subscribe(&server, "orders.eu.billed").await?;
        let broker = crate::common::connected_broker(&server).await?;
        let timeout = Duration::from_secs(5);

        let reply = broker
            .request_with("orders.created", Outgoing::new("7"), timeout)
            .await?;
        assert_eq!(reply.payload().as_ref(), b"billed 7");
        assert_eq!(billed.next().await?.payload.as_ref(), b"billed 7");

        let reply = broker
            .request_with("orders.eu.fr.created", Outgoing::new(""), timeout)
            .await?;
        assert_eq!(reply.payload().as_ref(), b"billed in fr");
        assert_eq!(eu_billed.next().await?.payload.as_ref(), b"billed in fr");

        // The subjects as written, without their prefixes, are served by no one.
        for unprefixed in [
            "created",
            "eu.fr.created",
            "fr.created",
            "orders.fr.created",
        ] {
            let error = broker
                .request_with(unprefixed, Outgoing::new(""), timeout)
                .await
                .expect_err("no one serves it");
            assert!(
                matches!(&error, NatsError::NoResponders { .. }),
                "{unprefixed}: {error:?}"
            );
        }
        running.stop().await??;
        Ok(())
    })
    .await
}
