//! The storefront example's AsyncAPI document: kept stable by snapshots (the official parser
//! validates them in `.ci/run`), and its page rendered by headless Chromium from the running
//! service, every channel and payload field read back from the DOM.
//!
//! `FASTSTREAM_UPDATE_SNAPSHOTS=1` rewrites the snapshots after an intended change.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use faststream_testing::{
    free_local_addr, http_get, require_servers, Chromium, NatsServer, ServerBinary, ServerVersions,
};
use serde_json::Value;
use tokio::process::Command;

const TIMEOUT: Duration = Duration::from_secs(60);

fn snapshot(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("snapshots")
        .join(name)
}

/// What `storefront --asyncapi <format>` prints, without a NATS server.
async fn written(format: &str) -> anyhow::Result<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_storefront"))
        .args(["--asyncapi", format])
        // The document names the broker's server: the same on every machine.
        .env("NATS_URL", "nats://127.0.0.1:4222")
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "storefront --asyncapi {format}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test]
async fn the_document_matches_its_snapshots() -> anyhow::Result<()> {
    for (format, file) in [
        ("json", "storefront.asyncapi.json"),
        ("yaml", "storefront.asyncapi.yaml"),
    ] {
        let text = written(format).await?;
        let path = snapshot(file);
        if std::env::var_os("FASTSTREAM_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &text)?;
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if text != expected {
            let line = text
                .lines()
                .zip(expected.lines())
                .position(|(a, b)| a != b)
                .map_or_else(|| "the length".to_owned(), |at| format!("line {}", at + 1));
            bail!(
                "the {format} document differs from {} at {line}; if the change is intended, \
                 rerun with FASTSTREAM_UPDATE_SNAPSHOTS=1",
                path.display()
            );
        }
    }
    let document: Value = serde_json::from_str(&written("json").await?)?;
    // What the example is there to show: every kind of channel.
    let channels = document["channels"].as_object().context("channels")?;
    for id in [
        "products.{sku}:IndexProduct",
        "prices.>:Reprice",
        "pricing.>:View:Flag",
        "images:Thumbnail",
        "Quote requests",
        "Quote requests:Reply",
        "orders.place:PlaceOrder",
        "orders.placed:Bill",
        "billing.bills:Publisher",
    ] {
        anyhow::ensure!(channels.contains_key(id), "no channel {id}");
    }
    anyhow::ensure!(channels.len() == 9, "{:?}", channels.keys());
    Ok(())
}

/// `text` as the DOM serializes an attribute value.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The part of the page's DOM showing channel `id`: up to the next channel.
fn channel_section<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("data-channel=\"{}\"", attribute(id)))?;
    let rest = &dom[start + 1..];
    let end = rest.find("data-channel=\"").map_or(rest.len(), |at| at);
    Some(&rest[..end])
}

/// The properties of a message's payload, its `$ref` followed into `components/schemas`.
fn payload_fields(document: &Value, message: &Value) -> Vec<String> {
    let mut payload = &message["payload"];
    if let Some(reference) = payload["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        payload = &document["components"]["schemas"][name];
    }
    payload["properties"]
        .as_object()
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_page_shows_every_channel_and_payload_field_in_chromium() -> anyhow::Result<()> {
    let chromium = Chromium::find()?;
    // The consumer group needs 2.11.
    let found = ServerBinary::discover()?;
    let Some(binary) = require_servers(ServerVersions::Since(2, 11), &found, "page")?.pop() else {
        return Ok(());
    };
    let server = NatsServer::start(&binary).await?;
    let addr = free_local_addr()?;
    let _service = Command::new(env!("CARGO_BIN_EXE_storefront"))
        .env("NATS_URL", server.url())
        .env("FASTSTREAM_HTTP_ADDR", &addr)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let deadline = Instant::now() + TIMEOUT;
    let document = loop {
        if let Ok(response) = http_get(&format!("http://{addr}/asyncapi.json"), &[]).await {
            if response.status == 200 {
                break response.json()?;
            }
        }
        if Instant::now() > deadline {
            bail!("the service never served /asyncapi.json");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let url = format!("http://{addr}/asyncapi");
    let dom = chromium.dump_dom(&url).await?;
    anyhow::ensure!(
        dom.contains("data-rendered=\"true\""),
        "the page did not render: {}",
        dom.chars().take(2000).collect::<String>()
    );
    let channels = document["channels"].as_object().context("channels")?;
    let mut fields_seen = 0;
    for (id, channel) in channels {
        let section = channel_section(&dom, id)
            .with_context(|| format!("channel {id} is not on the page"))?;
        for message in channel["messages"].as_object().into_iter().flatten() {
            let reference = message.1["$ref"].as_str().unwrap_or_default();
            let key = reference.rsplit('/').next().unwrap_or_default();
            let message = &document["components"]["messages"][key];
            for field in payload_fields(&document, message) {
                anyhow::ensure!(
                    section.contains(&format!("data-field=\"{}\"", attribute(&field))),
                    "channel {id}: payload field `{field}` is not shown"
                );
                fields_seen += 1;
            }
        }
    }
    for id in document["operations"]
        .as_object()
        .context("operations")?
        .keys()
    {
        anyhow::ensure!(
            dom.contains(&format!("data-operation=\"{}\"", attribute(id))),
            "operation {id} is not on the page"
        );
    }
    // Order, Product, PriceChange, Quote and Bill: 17 top-level fields in all.
    anyhow::ensure!(
        fields_seen >= 17,
        "only {fields_seen} payload fields checked"
    );

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("asyncapi-page.png");
    chromium.screenshot(&url, &shot, 1280, 2400).await?;
    eprintln!("screenshot of {url}: {}", shot.display());
    Ok(())
}
