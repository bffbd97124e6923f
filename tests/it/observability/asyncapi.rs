//! The AsyncAPI document on the app's HTTP endpoint: the JSON, the YAML and the page, each
//! the document `App::asyncapi` writes without connecting, served from the start of the
//! lifecycle; handlers registered in this module only.

use faststream_core::{
    app_info, publisher, subscriber, App, BrokerConfig, Json, KvWatch, Subscription,
};
use faststream_testing::http_get;

use super::{local_listener, until_ready};
use crate::common::{on_each_server, RunningApp};

#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
struct Stock {
    /// Units on the shelf.
    units: u32,
}

/// Counts the stock of each item.
///
/// Every change of `stock.*` in bucket `depot`.
#[subscriber("stock.{item}", kv_watch = "depot")]
#[publisher("depot.counted")]
async fn count(Json(stock): Json<Stock>) -> Json<Stock> {
    Json(stock)
}

async fn from_code(_value: String) {}

fn app(url: &str) -> App {
    App::new(BrokerConfig::new(url))
        .only_module(module_path!())
        .info(app_info!())
        .subscriber("depot_code", "code.>", KvWatch::new("depot"), from_code)
        .subject_subscriber(
            "depot_requests",
            "depot.ask",
            Subscription::new().queue("askers"),
            from_code,
        )
}

#[tokio::test]
async fn the_document_is_served_as_json_yaml_and_a_page() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let expected = app(&server.url()).asyncapi()?;
        let (listener, addr) = local_listener()?;
        let running = RunningApp::spawn(app(&server.url()).http_listener(listener));
        until_ready(&addr, 200).await?;

        let json = http_get(&format!("http://{addr}/asyncapi.json"), &[]).await?;
        assert_eq!(json.status, 200);
        assert_eq!(json.content_type.as_deref(), Some("application/json"));
        assert_eq!(json.body, expected.to_json());
        let document = json.json()?;
        let channels = document["channels"].as_object().map(|c| c.len());
        // The macro's subscriber and publisher, the two added in code.
        assert_eq!(channels, Some(4), "{document:#}");
        let operation = &document["operations"]["stock.{item}:CountSubscribe"];
        assert_eq!(operation["summary"], "Counts the stock of each item.");
        assert_eq!(
            operation["description"],
            "Counts the stock of each item.\n\nEvery change of `stock.*` in bucket `depot`."
        );
        let units = &document["components"]["schemas"]["Stock"]["properties"]["units"];
        assert_eq!(units["description"], "Units on the shelf.", "{document:#}");
        let queue = &document["operations"]["depot.ask:DepotRequestsSubscribe"]["bindings"];
        assert_eq!(queue["nats"]["queue"], "askers");
        assert_eq!(document["info"]["title"], "tests");

        let yaml = http_get(&format!("http://{addr}/asyncapi.yaml"), &[]).await?;
        assert_eq!(yaml.content_type.as_deref(), Some("application/yaml"));
        assert_eq!(yaml.body, expected.to_yaml());
        assert!(
            yaml.body.starts_with("asyncapi: \"3.0.0\"\ninfo:\n"),
            "{}",
            yaml.body
        );

        let page = http_get(&format!("http://{addr}/asyncapi"), &[]).await?;
        assert_eq!(
            page.content_type.as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(page.body, expected.to_html());
        assert!(page.body.contains("stock.{item}:Count"));

        let missing = http_get(&format!("http://{addr}/asyncapi.xml"), &[]).await?;
        assert_eq!(missing.status, 404);
        assert!(missing.body.contains("/asyncapi"), "{}", missing.body);
        running.stop().await??;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn handlers_added_in_code_are_documented_without_types() -> anyhow::Result<()> {
    let document = app("nats://127.0.0.1:4222").asyncapi()?;
    let value = document.as_value();
    let message = &value["components"]["messages"]["code._DepotCode_SubscribeMessage"];
    // Nothing is known of a closure's or a plain function's types in code.
    assert!(message.get("payload").is_none(), "{message:#}");
    assert_eq!(
        value["channels"]["code.>:DepotCode"]["x-faststream-kv"]["bucket"],
        "depot"
    );
    assert!(document.warnings().is_empty(), "{:?}", document.warnings());
    Ok(())
}
