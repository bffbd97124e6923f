//! Plain HTTP requests to a service under test: its `/metrics` and `/health/*` endpoints.

use std::time::Duration;

use anyhow::{anyhow, Context as _};

/// Bound on one request: connect, send, read the whole response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A response, whatever its status.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body as text.
    pub body: String,
}

impl HttpResponse {
    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| {
            format!(
                "response is not JSON: {:?}",
                crate::truncate(&self.body, 200)
            )
        })
    }
}

/// `GET url` with `headers`, any status accepted (a 503 is an answer, not an error); an error
/// only if no response came.
pub async fn http_get(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<HttpResponse> {
    let owned_url = url.to_owned();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    // ureq blocks: keep it off the async worker threads.
    tokio::task::spawn_blocking(move || get(&owned_url, &headers))
        .await
        .map_err(|error| anyhow!("HTTP request task failed: {error}"))
        .and_then(|result| result)
        .with_context(|| format!("GET {url}"))
}

/// An agent for one request to a local endpoint: every status is an answer, and no
/// `HTTP_PROXY` from the environment is used on loopback. A fresh one per request, so no pooled
/// connection outlives a server restart.
pub(crate) fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

fn get(url: &str, headers: &[(String, String)]) -> anyhow::Result<HttpResponse> {
    let mut request = agent(REQUEST_TIMEOUT).get(url);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let mut response = request.call()?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body = response.body_mut().read_to_string()?;
    Ok(HttpResponse {
        status,
        content_type,
        body,
    })
}

/// `127.0.0.1:<port>` with a port that was free a moment ago, for a service's HTTP endpoints.
pub fn free_local_addr() -> anyhow::Result<String> {
    let port = crate::ports::free_ports(1)?
        .pop()
        .context("no free port found")?;
    Ok(format!("127.0.0.1:{port}"))
}
