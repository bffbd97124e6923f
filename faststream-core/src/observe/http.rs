//! The HTTP endpoints: `GET /metrics`, `GET /health/live`, `GET /health/ready`.
//!
//! HTTP/1.1 served by hyper, one task per connection. The server starts before anything else
//! in the lifecycle (so an orchestrator sees the process alive while it connects and catches
//! up) and stops with the app; connections still open then are closed.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
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

/// What the endpoints answer from.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub(crate) registry: Arc<Registry>,
    pub(crate) health: Health,
}

/// A running server; [`stop`](Self::stop) it with the app.
#[derive(Debug)]
pub(crate) struct HttpServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Binds (or takes) the listener and serves until stopped. An address that cannot be
    /// bound (in use, not local, malformed) is an error naming it.
    pub(crate) async fn start(binding: HttpBinding, endpoints: Endpoints) -> Result<Self> {
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
        let task = tokio::spawn(serve(listener, endpoints, stop.clone()));
        tracing::info!(%local_addr, "serving /metrics, /health/live and /health/ready on http://{local_addr}");
        Ok(Self { stop, task })
    }

    /// Stops accepting and closes the open connections.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn serve(listener: TcpListener, endpoints: Endpoints, stop: CancellationToken) {
    // Dropped at the end: aborts the connections still open.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: keep serving once it passes.
                tracing::warn!(%error, "could not accept an HTTP connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let endpoints = endpoints.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&endpoints, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
        });
    }
}

fn respond(endpoints: &Endpoints, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let known = matches!(path, "/metrics" | "/health/live" | "/health/ready");
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /health/live or /health/ready\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/metrics" => metrics(endpoints, request),
        "/health/live" => text(StatusCode::OK, "live\n"),
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
