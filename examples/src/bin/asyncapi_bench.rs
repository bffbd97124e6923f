//! What the AsyncAPI document costs: 100 subscribers (each with a JSON payload type of its own,
//! and every fourth with a publisher), the document built and written as JSON, YAML and the
//! page, timed over repeated runs. The service builds it once, at start-up; a request for it
//! is answered with bytes rendered then, and no message pays anything for it.
//!
//! ```text
//! cargo run --release -p examples --bin asyncapi_bench
//! ```

use std::time::{Duration, Instant};

use faststream_core::{App, BrokerConfig};

/// `handlers!(m0, m1, ..)`: one module per name, each with a payload type and a subscriber
/// (`nothing_published`) or a subscriber and a publisher (`published`).
macro_rules! handlers {
    ($kind:ident: $($module:ident $subject:literal)*) => {
        $(
            pub mod $module {
                use faststream_core::{subscriber, Json};

                /// A payload of this subscriber.
                #[derive(serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
                pub struct Payload {
                    /// An id.
                    pub id: u64,
                    /// A name.
                    pub name: String,
                    pub tags: Vec<String>,
                    pub note: Option<String>,
                }

                handlers!(@handler $kind $subject);
            }
        )*
    };
    (@handler nothing_published $subject:literal) => {
        /// Handles one kind of message.
        #[subscriber($subject, kv_watch = "bench")]
        pub async fn handle(_payload: Json<Payload>) {}
    };
    (@handler published $subject:literal) => {
        /// Handles one kind of message and publishes what it returns.
        #[subscriber($subject)]
        #[faststream_core::publisher("bench.out")]
        pub async fn handle(payload: Json<Payload>) -> Json<Payload> {
            payload
        }
    };
}

mod handlers {
    handlers!(nothing_published:
        m01 "bench.m01" m02 "bench.m02" m03 "bench.m03" m05 "bench.m05" m06 "bench.m06"
        m07 "bench.m07" m09 "bench.m09" m10 "bench.m10" m11 "bench.m11" m13 "bench.m13"
        m14 "bench.m14" m15 "bench.m15" m17 "bench.m17" m18 "bench.m18" m19 "bench.m19"
        m21 "bench.m21" m22 "bench.m22" m23 "bench.m23" m25 "bench.m25" m26 "bench.m26"
        m27 "bench.m27" m29 "bench.m29" m30 "bench.m30" m31 "bench.m31" m33 "bench.m33"
        m34 "bench.m34" m35 "bench.m35" m37 "bench.m37" m38 "bench.m38" m39 "bench.m39"
        m41 "bench.m41" m42 "bench.m42" m43 "bench.m43" m45 "bench.m45" m46 "bench.m46"
        m47 "bench.m47" m49 "bench.m49" m50 "bench.m50" m51 "bench.m51" m53 "bench.m53"
        m54 "bench.m54" m55 "bench.m55" m57 "bench.m57" m58 "bench.m58" m59 "bench.m59"
        m61 "bench.m61" m62 "bench.m62" m63 "bench.m63" m65 "bench.m65" m66 "bench.m66"
        m67 "bench.m67" m69 "bench.m69" m70 "bench.m70" m71 "bench.m71" m73 "bench.m73"
        m74 "bench.m74" m75 "bench.m75" m77 "bench.m77" m78 "bench.m78" m79 "bench.m79"
        m81 "bench.m81" m82 "bench.m82" m83 "bench.m83" m85 "bench.m85" m86 "bench.m86"
        m87 "bench.m87" m89 "bench.m89" m90 "bench.m90" m91 "bench.m91" m93 "bench.m93"
        m94 "bench.m94" m95 "bench.m95" m97 "bench.m97" m98 "bench.m98" m99 "bench.m99");
    handlers!(published:
        m00 "bench.m00" m04 "bench.m04" m08 "bench.m08" m12 "bench.m12" m16 "bench.m16"
        m20 "bench.m20" m24 "bench.m24" m28 "bench.m28" m32 "bench.m32" m36 "bench.m36"
        m40 "bench.m40" m44 "bench.m44" m48 "bench.m48" m52 "bench.m52" m56 "bench.m56"
        m60 "bench.m60" m64 "bench.m64" m68 "bench.m68" m72 "bench.m72" m76 "bench.m76"
        m80 "bench.m80" m84 "bench.m84" m88 "bench.m88" m92 "bench.m92" m96 "bench.m96");
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() -> anyhow::Result<()> {
    const RUNS: usize = 51;
    let app = App::new(BrokerConfig::new("nats://127.0.0.1:4222")).only_module("asyncapi_bench");
    let (mut build, mut json, mut yaml, mut html) = (vec![], vec![], vec![], vec![]);
    let mut sizes = (0, 0, 0);
    let mut counts = (0, 0, 0);
    for _ in 0..RUNS {
        let started = Instant::now();
        let document = app.asyncapi()?;
        build.push(started.elapsed());
        let started = Instant::now();
        sizes.0 = document.to_json().len();
        json.push(started.elapsed());
        let started = Instant::now();
        sizes.1 = document.to_yaml().len();
        yaml.push(started.elapsed());
        let started = Instant::now();
        sizes.2 = document.to_html().len();
        html.push(started.elapsed());
        let value = document.as_value();
        let count = |part: &str| value[part].as_object().map_or(0, |map| map.len());
        counts = (
            count("channels"),
            count("operations"),
            value["components"]["schemas"]
                .as_object()
                .map_or(0, |map| map.len()),
        );
    }
    let subscribers = App::registered_subscribers()
        .iter()
        .filter(|name| name.starts_with("asyncapi_bench::"))
        .count();
    println!(
        "{subscribers} subscribers: {} channels, {} operations, {} schemas; medians of {RUNS} runs",
        counts.0, counts.1, counts.2
    );
    let (build, json, yaml, html) = (median(build), median(json), median(yaml), median(html));
    println!("build (registry, signatures, schemas)  {build:>10.2?}");
    println!("to_json  {json:>10.2?}  {:>8} bytes", sizes.0);
    println!("to_yaml  {yaml:>10.2?}  {:>8} bytes", sizes.1);
    println!("to_html  {html:>10.2?}  {:>8} bytes", sizes.2);
    println!(
        "what start-up pays once: {:.2?}; per request and per message: nothing",
        build + json + yaml + html
    );
    Ok(())
}
