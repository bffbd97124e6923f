//! The AsyncAPI 3.0.0 document of an app, generated from what its subscribers, publishers and
//! views register: [`App::asyncapi`](crate::App::asyncapi) writes it without connecting, and
//! the app's HTTP endpoint serves it (`/asyncapi.json`, `/asyncapi.yaml`, and a page at
//! `/asyncapi`). Built once, when asked or at start-up; never per message.
//!
//! The guide's chapter `asyncapi` shows a document and explains its `x-faststream-*` fields.

mod channels;
mod document;
mod names;
mod page;
mod servers;
mod yaml;

use serde_json::{json, Map, Value};

use crate::broker::BrokerConfig;
use crate::registry::Registry;
use document::DocumentBuilder;

/// The `info` of the document: the service's title, version and description.
///
/// [`app_info!`](crate::app_info) fills it from the calling crate's `Cargo.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// The service's name.
    pub title: String,
    /// Its version.
    pub version: String,
    /// What it does; may be empty.
    pub description: String,
}

impl AppInfo {
    /// `title` at `version`, without a description.
    pub fn new(title: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            version: version.into(),
            description: String::new(),
        }
    }

    /// With a description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }
}

impl Default for AppInfo {
    /// The executable's name, version `0.0.0`: set the real ones with
    /// [`App::info`](crate::App::info) and [`app_info!`](crate::app_info).
    fn default() -> Self {
        let title = std::env::current_exe()
            .ok()
            .and_then(|path| {
                path.file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "faststream".to_owned());
        Self::new(title, "0.0.0")
    }
}

/// The calling crate's name, version and description (from its `Cargo.toml`), as an
/// [`AppInfo`].
///
/// ```
/// let info = faststream_core::app_info!();
/// assert_eq!(info.title, env!("CARGO_PKG_NAME"));
/// ```
#[macro_export]
macro_rules! app_info {
    () => {
        $crate::AppInfo::new(
            ::core::env!("CARGO_PKG_NAME"),
            ::core::env!("CARGO_PKG_VERSION"),
        )
        .description(::core::env!("CARGO_PKG_DESCRIPTION"))
    };
}

/// A view as the document describes it: the bucket, the keys and the value type.
#[derive(Debug, Clone)]
pub(crate) struct ViewDoc {
    pub(crate) bucket: String,
    pub(crate) pattern: String,
    pub(crate) value_type: &'static str,
}

/// An app's AsyncAPI 3.0.0 document.
///
/// ```no_run
/// use faststream_core::{App, BrokerConfig};
///
/// # fn demo() -> anyhow::Result<()> {
/// let document = App::new(BrokerConfig::from_env())
///     .info(faststream_core::app_info!())
///     .asyncapi()?;
/// std::fs::write("asyncapi.yaml", document.to_yaml())?;
/// for warning in document.warnings() {
///     eprintln!("{warning}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AsyncApi {
    document: Value,
    warnings: Vec<String>,
}

impl AsyncApi {
    /// The document as a JSON value.
    pub fn as_value(&self) -> &Value {
        &self.document
    }

    /// The document as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Maps of `Value`s with string keys always serialize.
        serde_json::to_string_pretty(&InReadingOrder(self.top_level())).unwrap_or_default()
    }

    /// The document as YAML.
    pub fn to_yaml(&self) -> String {
        yaml::to_yaml_fields(&self.top_level())
    }

    /// The top-level fields in the order people read them (`asyncapi`, `info`, `servers`,
    /// channels, operations, components); below them keys are sorted, so the text is the
    /// same on every run.
    fn top_level(&self) -> Vec<(&str, &Value)> {
        const ORDER: [&str; 7] = [
            "asyncapi",
            "info",
            "defaultContentType",
            "servers",
            "channels",
            "operations",
            "components",
        ];
        ORDER
            .iter()
            .filter_map(|key| Some((*key, self.document.get(key)?)))
            .collect()
    }

    /// A self-contained HTML page showing the document: no script, style or font is fetched
    /// from anywhere.
    pub fn to_html(&self) -> String {
        page::render(&self.document)
    }

    /// What the document could not describe exactly: each `Json<T>` payload whose `T` has no
    /// JSON Schema (documented as untyped). Logged as warnings when the app serves the
    /// document.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Fields serialized as a map in their order.
struct InReadingOrder<'a>(Vec<(&'a str, &'a Value)>);

impl serde::Serialize for InReadingOrder<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// Builds the document of `registry`'s subscribers and publishers and of `views`.
pub(crate) fn build(
    info: &AppInfo,
    config: &BrokerConfig,
    registry: &Registry,
    views: &[ViewDoc],
) -> AsyncApi {
    let mut builder = DocumentBuilder::new();
    for spec in &registry.subscribers {
        let doc = (spec.doc)();
        if doc.include_in_schema {
            channels::watch(&mut builder, spec, &doc);
        }
    }
    for view in views {
        channels::view(&mut builder, view);
    }
    for spec in &registry.subjects {
        let doc = (spec.doc)();
        if doc.include_in_schema {
            channels::subject(&mut builder, spec, &doc);
        }
    }
    for spec in &registry.publishers {
        let doc = (spec.doc)();
        if doc.include_in_schema {
            channels::publisher(&mut builder, spec, &doc);
        }
    }
    let (servers, security_schemes) = servers::servers(config);
    let (channels, operations, mut components, warnings) = builder.finish();
    if !security_schemes.is_empty() {
        components["securitySchemes"] = Value::Object(security_schemes);
    }
    let mut info_object = Map::new();
    info_object.insert("title".into(), info.title.as_str().into());
    info_object.insert("version".into(), info.version.as_str().into());
    if !info.description.is_empty() {
        info_object.insert("description".into(), info.description.as_str().into());
    }
    let document = json!({
        "asyncapi": "3.0.0",
        "info": info_object,
        "defaultContentType": "application/json",
        "servers": servers,
        "channels": channels,
        "operations": operations,
        "components": components,
    });
    AsyncApi { document, warnings }
}
