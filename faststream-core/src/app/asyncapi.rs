//! The app's AsyncAPI document: its `info`, written on demand without connecting, and
//! rendered once for the HTTP endpoint when the app serves one.

use super::App;
use crate::asyncapi::{self, AppInfo, AsyncApi, ViewDoc};
use crate::broker::BrokerConfig;
use crate::error::Result;
use crate::observe::http::Documents;
use crate::registry::Registry;

impl App {
    /// The `info` of the app's AsyncAPI document: its title, version and description. Without
    /// it, the title is the executable's name and the version `0.0.0`;
    /// [`app_info!`](crate::app_info) gives the calling crate's.
    ///
    /// ```no_run
    /// use faststream_core::{app_info, App, BrokerConfig};
    ///
    /// let app = App::new(BrokerConfig::from_env()).info(app_info!());
    /// ```
    #[must_use]
    pub fn info(mut self, info: AppInfo) -> Self {
        self.info = info;
        self
    }

    /// The app's AsyncAPI 3.0.0 document, written without connecting to NATS (for CI
    /// pipelines and docs sites): a channel and an operation per subscriber, publisher and
    /// declared view, their payloads' JSON Schemas, the servers and their security. The same
    /// document the app serves at `/asyncapi.json` when it has an HTTP endpoint
    /// ([`http`](Self::http)).
    ///
    /// Fails as [`run`](Self::run) would on registrations that conflict (a name registered
    /// twice, a publisher without a subscriber).
    pub fn asyncapi(&self) -> Result<AsyncApi> {
        let registry = Registry::collect(
            &self.scope,
            self.subscribers.clone(),
            self.subjects.clone(),
            Vec::new(),
        )?;
        let views: Vec<ViewDoc> = self
            .view_starts
            .iter()
            .map(|view| view.doc.clone())
            .collect();
        Ok(asyncapi::build(
            &self.info,
            self.broker.config(),
            &registry,
            &views,
        ))
    }
}

/// The document in the three forms the endpoint serves, built once; its warnings logged.
pub(super) fn served_documents(
    info: &AppInfo,
    config: &BrokerConfig,
    registry: &Registry,
    views: &[ViewDoc],
) -> Documents {
    let started = std::time::Instant::now();
    let document = asyncapi::build(info, config, registry, views);
    for warning in document.warnings() {
        tracing::warn!("{warning}");
    }
    let documents = Documents {
        json: document.to_json().into(),
        yaml: document.to_yaml().into(),
        html: document.to_html().into(),
    };
    tracing::debug!(elapsed = ?started.elapsed(), "built the AsyncAPI document");
    documents
}
