//! The HTTP endpoints' address from `FASTSTREAM_HTTP_ADDR` when the code sets none.
//!
//! Its own test binary: the variable is process-wide, and every app started while it is set
//! (any test's, without `App::http`) would serve on that address.

use std::time::Duration;

use anyhow::Context as _;
use faststream_core::{App, BrokerConfig};
use faststream_testing::{free_local_addr, http_get, NatsServer, ServerBinary};

/// How long the test waits for the endpoint.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn the_address_comes_from_the_environment_when_the_code_sets_none() -> anyhow::Result<()> {
    let binary = ServerBinary::discover()?
        .into_iter()
        .next()
        .context("no nats-server")?;
    let server = NatsServer::start(&binary).await?;
    let addr = free_local_addr()?;
    let addr = addr.as_str();
    // The only test in this process: no other app reads the variable.
    std::env::set_var(faststream_core::HTTP_ADDR_VAR, addr);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(
        App::new(BrokerConfig::new(server.url()))
            .without_registered()
            .run_until(async {
                let _ = stopped.await;
            }),
    );
    let ready =
        faststream_testing::wait_for("/health/ready to answer 200", EVENT_TIMEOUT, || async {
            let response = http_get(&format!("http://{addr}/health/ready"), &[]).await?;
            let found = (response.status == 200)
                .then(|| response.json())
                .transpose()?;
            anyhow::Ok((found, format!("{} {}", response.status, response.body)))
        })
        .await;
    std::env::remove_var(faststream_core::HTTP_ADDR_VAR);
    let body: serde_json::Value = ready?;
    assert_eq!(body["subscribers"], serde_json::json!([]));
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .context("the app did not stop within 60 s")???;
    Ok(())
}
