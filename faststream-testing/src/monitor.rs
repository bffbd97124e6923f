//! Reading a server's monitoring endpoint (`/varz`, `/jsz`, `/connz`, ...) over plain HTTP.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

use crate::truncate;

/// Bound on one monitoring request: connect, send, read the whole response.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest response body read (`/jsz` with every stream and consumer can be large).
const MAX_BODY_BYTES: u64 = 256 * 1024 * 1024;

/// `GET http://127.0.0.1:{port}{path_and_query}`, parsed as JSON.
pub(crate) async fn get_json(port: u16, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
    let slash = if path_and_query.starts_with('/') {
        ""
    } else {
        "/"
    };
    let url = format!("http://127.0.0.1:{port}{slash}{path_and_query}");
    // ureq blocks: keep it off the async worker threads.
    let body = tokio::task::spawn_blocking({
        let url = url.clone();
        move || get_body(&url)
    })
    .await
    .map_err(|error| anyhow!("monitoring request task failed: {error}"))
    .and_then(|result| result)
    .with_context(|| format!("GET {url}"))?;
    serde_json::from_str(&body).with_context(|| {
        format!(
            "GET {url}: response is not JSON: {:?}",
            truncate(&body, 200)
        )
    })
}

/// The body of a `2xx` response to `GET url`; any other status is an error quoting the body.
fn get_body(url: &str) -> anyhow::Result<String> {
    let mut response = crate::http::agent(MONITOR_TIMEOUT)
        .get(url)
        .header("Accept", "application/json")
        .call()?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY_BYTES)
        .read_to_string()?;
    if !status.is_success() {
        bail!("HTTP status {status}: {}", truncate(body.trim(), 300));
    }
    Ok(body)
}
