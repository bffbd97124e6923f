//! A request through two services, traced: the requester's `traceparent` is carried by the
//! request, continued by the responder's span, and carried on by what its handler publishes.

use anyhow::Context as _;
use faststream_core::otlp::Otlp;
use faststream_core::{App, BrokerConfig, NatsBroker, Subscription};
use faststream_testing::{NatsServer, ServerBinary};
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

use super::{pass_in_own_process, string, EVENT_TIMEOUT, WRITER_SPAN, WRITER_TRACE};

async fn lookup(broker: NatsBroker) -> anyhow::Result<String> {
    // A request made inside the handler's span carries it on.
    broker.publish("audit.lookup", "looked up").await?;
    Ok("found".to_owned())
}

async fn audit(_: String) {}

#[tokio::test]
async fn a_request_and_what_its_handler_publishes_continue_the_callers_trace() -> anyhow::Result<()>
{
    pass_in_own_process("messaging::request_traces_in_its_own_process", &[]).await
}

#[tokio::test]
#[ignore = "installs the process-wide subscriber of its app: run in a process of its own by \
            `a_request_and_what_its_handler_publishes_continue_the_callers_trace`"]
async fn request_traces_in_its_own_process() -> anyhow::Result<()> {
    let binary = ServerBinary::discover()?.pop().context("no nats-server")?;
    let server = NatsServer::start(&binary).await?;
    let spans = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    let otlp = Otlp::new(tracer_provider, SdkMeterProvider::builder().build()).entry_sampling(1.0);
    let app = App::new(BrokerConfig::new(server.url()))
        .without_registered()
        .otlp(otlp)
        .subject_subscriber("lookup", "svc.lookup", Subscription::new(), lookup)
        .subject_subscriber("audit", "audit.*", Subscription::new(), audit);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    // The caller: a raw client sending the W3C trace context of its own span.
    let client = async_nats::connect(server.url()).await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{WRITER_TRACE}-{WRITER_SPAN}-01").as_str(),
    );
    let reply = faststream_testing::wait_for("the lookup service", EVENT_TIMEOUT, || {
        let client = client.clone();
        let headers = headers.clone();
        async move {
            let reply = client
                .request_with_headers("svc.lookup", headers, "".into())
                .await;
            anyhow::Ok((reply.as_ref().ok().cloned(), format!("{reply:?}")))
        }
    })
    .await?;
    assert_eq!(reply.payload.as_ref(), b"found");

    let finished = faststream_testing::wait_for("2 process spans", EVENT_TIMEOUT, || async {
        let finished = spans.get_finished_spans()?;
        let processed = finished
            .iter()
            .filter(|span| span.name.starts_with("process "))
            .count();
        let seen = format!("{processed}: {finished:#?}");
        anyhow::Ok(((processed >= 2).then_some(finished), seen))
    })
    .await?;
    let trace = TraceId::from_hex(WRITER_TRACE)?;
    let process = |subject: &str| {
        finished
            .iter()
            .find(|span| span.name == format!("process {subject}"))
            .with_context(|| format!("no span for {subject}: {finished:#?}"))
    };
    let lookup = process("svc.lookup")?;
    assert_eq!(lookup.span_context.trace_id(), trace, "{lookup:#?}");
    assert_eq!(
        string(lookup, "messaging.destination.name").as_deref(),
        Some("svc.lookup")
    );
    // What the handler published continues the same trace, as a child of the lookup's span.
    let audited = process("audit.lookup")?;
    assert_eq!(audited.span_context.trace_id(), trace, "{audited:#?}");
    assert_eq!(audited.parent_span_id, lookup.span_context.span_id());

    let _ = stop.send(());
    running.await??;
    Ok(())
}
