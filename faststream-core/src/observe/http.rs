//! The HTTP endpoints: `GET /metrics`, `GET /health/live`, `GET /health/ready`, and the
//! AsyncAPI document: `GET /asyncapi` (a page), `/asyncapi.json` and `/asyncapi.yaml`.
//!
//! HTTP/1.1 served by hyper, one task per connection. The server starts before anything else
//! in the lifecycle (so an orchestrator sees the process alive while it connects and catches
//! up) and stops with the app; connections still open then are closed.
//!
//! Slow or idle clients cannot hold it: a connection must send a request's headers within the
//! header timeout (from when it is accepted, or from its previous response), or it is closed;
//! and at most `max_connections` are held at once. At that limit the server stops accepting
//! and the kernel's listen queue holds new connections until one closes (at the latest after
//! the header timeout): a probe arriving then is answered late rather than refused, and a burst
//! of scrapes is queued rather than turned into errors.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::prometheus::{self, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::error::{Error, Result};

/// Where the HTTP endpoints listen.
#[derive(Debug)]
pub(crate) enum HttpBinding {
    /// An address to bind (`host:port`; port 0 picks a free one).
    Addr(String),
    /// A listener the caller bound, who therefore knows its address.
    Listener(std::net::TcpListener),
}

/// The default [`HttpLimits::header_timeout`]: hyper's own.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The default [`HttpLimits::max_connections`]: the endpoints' clients are a scraper and an
/// orchestrator's probes, a handful of connections; 256 leaves room for many more and stays
/// well below a common limit of 1024 open files, which the process shares with its NATS
/// connection and everything else.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// How often reaching the connection limit is logged at most.
const LIMIT_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// What the server allows each client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpLimits {
    /// How long a connection may take to send a request's headers, counted from when it is
    /// accepted or its previous response was sent; it is closed after that.
    pub(crate) header_timeout: Duration,
    /// The most connections held at once; more wait in the listen queue.
    pub(crate) max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl HttpLimits {
    /// Every problem of the limits, one sentence each.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.header_timeout.is_zero() {
            problems.push("`http_header_timeout` must be more than zero".to_owned());
        }
        if self.max_connections == 0 {
            problems.push("`http_max_connections` must be at least 1".to_owned());
        }
        problems
    }
}

/// What the endpoints answer from.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) registry: Arc<Registry>,
    pub(crate) health: Health,
    /// The AsyncAPI document, rendered once at start-up.
    pub(crate) documents: Arc<Documents>,
}

/// The AsyncAPI document as served: built once, answered as is.
#[derive(Debug, Clone, Default)]
pub(crate) struct Documents {
    pub(crate) json: Bytes,
    pub(crate) yaml: Bytes,
    pub(crate) html: Bytes,
}

/// The page's own policy: it runs its inline script and styles and loads nothing else.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
                           style-src 'unsafe-inline'; img-src data:";

/// A running server; [`stop`](Self::stop) it with the app.
#[derive(Debug)]
pub(crate) struct HttpServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds (or takes) the listener and serves until stopped. An address that cannot be
    /// bound (in use, not local, malformed) is an error naming it.
    pub(crate) async fn start(
        binding: HttpBinding,
        endpoints: Endpoints,
        limits: HttpLimits,
    ) -> Result<Self> {
        let (addr, listener) = match binding {
            HttpBinding::Addr(addr) => {
                let listener = TcpListener::bind(&addr).await;
                (addr, listener)
            }
            HttpBinding::Listener(listener) => {
                let addr = listener
                    .local_addr()
                    .map_or_else(|_| "the given listener".to_owned(), |addr| addr.to_string());
                // Tokio needs it non-blocking; the caller's `std` listener is blocking.
                let listener = listener
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(listener));
                (addr, listener)
            }
        };
        let bind_error = |source| Error::HttpBind {
            addr: addr.clone(),
            source,
        };
        let listener = listener.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, endpoints, limits, stop.clone()));
        tracing::info!(%local_addr, "serving /metrics, /health/live, /health/ready and /asyncapi on http://{local_addr}");
        Ok(Self { stop, task })
    }

    /// Stops accepting and closes the open connections.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    // A semaphore holds at most `MAX_PERMITS` (2^61 - 1): far beyond any number of sockets.
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Without a timer hyper ignores the header timeout.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut last_warned: Option<Instant> = None;
    // Dropped at the end: aborts the connections still open.
    let mut connections = JoinSet::new();
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if last_warned.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_INTERVAL) {
                    last_warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "the HTTP endpoints hold their limit of {} connections; new ones wait \
                         until one closes",
                        limits.max_connections
                    );
                }
                let Some(slot) = free_slot(&slots, &mut connections, &stop).await else {
                    break;
                };
                slot
            }
        };
        let Some(stream) = accept(&listener, &mut connections, &stop).await else {
            break;
        };
        let endpoints = endpoints.clone();
        let builder = builder.clone();
        connections.spawn(async move {
            // Held for the connection's life.
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&endpoints, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

/// Waits for a connection to close and free its slot; `None` once the server stops.
async fn free_slot(
    slots: &Arc<Semaphore>,
    connections: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return None,
            // Never closed: the semaphore lives as long as the server.
            slot = Arc::clone(slots).acquire_owned() => return slot.ok(),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The next connection; `None` once the server stops.
async fn accept(
    listener: &TcpListener,
    connections: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Option<TcpStream> {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return None,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        match accepted {
            Ok((stream, _)) => return Some(stream),
            Err(error) => {
                // Out of file descriptors and the like: keep serving once it passes.
                tracing::warn!(%error, "could not accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn respond(endpoints: &Endpoints, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let known = matches!(
        path,
        "/metrics"
            | "/health/live"
            | "/health/ready"
            | "/asyncapi"
            | "/asyncapi.json"
            | "/asyncapi.yaml"
    );
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /health/live, /health/ready or /asyncapi\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let documents = &endpoints.documents;
    match path {
        "/metrics" => metrics(endpoints, request),
        "/health/live" => text(StatusCode::OK, "live\n"),
        "/asyncapi.json" => with_body(documents.json.clone(), "application/json"),
        "/asyncapi.yaml" => with_body(documents.yaml.clone(), "application/yaml"),
        "/asyncapi" => {
            let mut response = with_body(documents.html.clone(), "text/html; charset=utf-8");
            response.headers_mut().insert(
                hyper::header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(PAGE_POLICY),
            );
            response
        }
        _ => {
            let readiness = endpoints.health.readiness();
            let status = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut body = readiness.body.to_string();
            body.push('\n');
            with_type(status, body, "application/json")
        }
    }
}

fn metrics(endpoints: &Endpoints, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let openmetrics = request
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|value| value.contains("application/openmetrics-text"));
    match prometheus::encode(&endpoints.registry, openmetrics) {
        Ok(body) => {
            let content_type = if openmetrics {
                OPENMETRICS_CONTENT_TYPE
            } else {
                TEXT_CONTENT_TYPE
            };
            with_type(StatusCode::OK, body, content_type)
        }
        Err(std::fmt::Error) => {
            tracing::error!("could not encode the metrics");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not encode the metrics\n",
            )
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, body.to_owned(), "text/plain; charset=utf-8")
}

/// A 200 with a body rendered once (cloning `Bytes` copies nothing).
fn with_body(body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
