//! Metrics and health endpoints against a real nats-server, read over real HTTP: counts after
//! known workloads, the pending gauge, readiness through catch-up, a killed server and a
//! connection blip, the group metrics, and start-up errors of the endpoint itself.
//!
//! Every wait is for what the endpoint reports, bounded by `EVENT_TIMEOUT`; no sleep is a proof.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    on_each_server, on_each_server_since, startup_error, RunningApp, EVENT_TIMEOUT,
};
use anyhow::bail;
use faststream_core::kv::group::GroupSettings;
use faststream_core::{App, BrokerConfig, Error, Json, KvMessage, KvWatch, State};
use faststream_testing::{http_get, HttpResponse, NatsServer, TcpProxy};
use tokio::sync::Semaphore;

/// One sample of a scrape: `name{labels} value`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((series_name, rest)) => (series_name, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if series_name != name {
                return None;
            }
            let matches = labels.iter().all(|(label, wanted)| {
                series_labels
                    .split(',')
                    .any(|pair| pair == format!("{label}=\"{wanted}\""))
            });
            matches.then(|| value.parse().ok()).flatten()
        })
}

async fn scrape(addr: &str) -> anyhow::Result<String> {
    let response = http_get(&format!("http://{addr}/metrics"), &[]).await?;
    if response.status != 200 {
        bail!("/metrics answered {}: {}", response.status, response.body);
    }
    Ok(response.body)
}

async fn ready(addr: &str) -> anyhow::Result<HttpResponse> {
    http_get(&format!("http://{addr}/health/ready"), &[]).await
}

/// A sample expected on `/metrics`: name, some of its labels, value.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Waits until every `(name, labels, value)` is on `/metrics`.
async fn until_metrics(addr: &str, expected: &[Expected<'_>]) -> anyhow::Result<String> {
    faststream_testing::wait_for("the expected metrics", EVENT_TIMEOUT, move || async move {
        let text = scrape(addr).await?;
        let missing: Vec<String> = expected
            .iter()
            .filter(|(name, labels, value)| sample(&text, name, labels) != Some(*value))
            .map(|(name, labels, value)| {
                format!(
                    "{name}{labels:?} = {value} (is {:?})",
                    sample(&text, name, labels)
                )
            })
            .collect();
        Ok(if missing.is_empty() {
            (Some(text), String::new())
        } else {
            (None, missing.join("; "))
        })
    })
    .await
}

async fn until_ready(addr: &str, status: u16) -> anyhow::Result<serde_json::Value> {
    faststream_testing::wait_for(
        &format!("/health/ready to answer {status}"),
        EVENT_TIMEOUT,
        move || async move {
            let response = ready(addr).await?;
            let found = (response.status == status)
                .then(|| response.json())
                .transpose()?;
            Ok((found, format!("{} {}", response.status, response.body)))
        },
    )
    .await
}

async fn outcomes(message: KvMessage) -> anyhow::Result<()> {
    let kind = message
        .key()
        .split('.')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "err" => anyhow::bail!("refused {}", message.key()),
        "panic" => panic!("boom on {}", message.key()),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

#[derive(serde::Deserialize)]
struct Order {
    #[allow(dead_code)]
    amount: u64,
}

async fn typed(Json(order): Json<Order>) {
    std::hint::black_box(order);
}

async fn gated(message: KvMessage, State(gate): State<Arc<Semaphore>>) {
    // Never closed: the permit is there once the test adds it.
    let _permit = gate.acquire().await;
    std::hint::black_box(message);
}

async fn ignore(message: KvMessage) {
    std::hint::black_box(message);
}

async fn fails_on_bad(message: KvMessage) -> anyhow::Result<()> {
    if message.key().ends_with(".bad") {
        anyhow::bail!("cannot bill {}", message.key());
    }
    Ok(())
}

/// A listener on a free local port, bound now (so no other process can take the port before
/// the app serves on it), and its address.
fn local_listener() -> anyhow::Result<(std::net::TcpListener, String)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    Ok((listener, addr))
}

fn member(server: &NatsServer, listener: std::net::TcpListener) -> App {
    let settings = GroupSettings::new("billing")
        .partitions(1)
        .max_attempts(3)
        .backoff([Duration::from_millis(50)])
        .session_timeout(Duration::from_secs(2));
    App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .http_listener(listener)
        .subscriber(
            "bill",
            "orders.*",
            KvWatch::new("shop").group(settings),
            fails_on_bad,
        )
}

mod asyncapi;
mod health;
mod metrics;
mod objects;
mod slow_clients;
