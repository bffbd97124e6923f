//! A quick smoke run of the benchmark binary on tiny workloads: every mode runs, prints JSON,
//! and the summary has its ratios; the core-publish run lost no message. (The figures
//! themselves are not checked: not a timed test.)

use anyhow::Context as _;
use faststream_testing::{NatsServer, ServerBinary, ServerVersions};

#[tokio::test]
async fn every_workload_runs_and_prints_json() -> anyhow::Result<()> {
    let found = ServerBinary::discover()?;
    let binary = found.last().context("no nats-server")?.clone();
    let server = NatsServer::start(&binary).await?;
    let mut workloads = vec![
        (
            vec!["replay", "200", "20"],
            vec!["replay_throughput_vs_raw", "cpu_per_entry_vs_raw"],
        ),
        (vec!["latency", "20"], vec!["latency_p50_vs_raw"]),
        (vec!["slow", "100", "10"], vec!["slow_64_workers_vs_1"]),
        (
            vec!["core-publish", "300"],
            vec![
                "core_throughput_vs_raw",
                "core_cpu_per_msg_vs_raw",
                "core_peak_rss_vs_raw",
            ],
        ),
        (
            vec!["request-reply", "20"],
            vec![
                "request_p50_vs_raw",
                "request_best_p50_vs_raw",
                "request_p99_vs_raw",
            ],
        ),
        (
            vec!["js-pull", "300", "20"],
            vec!["pull_throughput_vs_raw", "pull_cpu_per_msg_vs_raw"],
        ),
        (vec!["keys", "100"], vec!["peak_rss_10k_keys_vs_raw"]),
        (
            vec!["objects", "stream", "2", "1"],
            vec!["objects_stream_vs_raw", "objects_stream_chunks_vs_raw"],
        ),
        (
            vec!["objects", "watch", "50", "1"],
            vec![
                "objects_watch_vs_raw",
                "objects_watch_cpu_vs_raw",
                "objects_watch_peak_rss_vs_raw",
                "objects_watch_after_first_vs_raw",
                "objects_watch_watcher_vs_raw",
            ],
        ),
        (
            vec!["modify", "64"],
            vec![
                "modify_1_tasks_1_keys_vs_raw",
                "modify_16_tasks_1_keys_vs_raw",
                "modify_16_tasks_16_keys_vs_raw",
            ],
        ),
        (
            vec!["view", "300", "50", "1000", "0.2"],
            vec![
                "view_catchup_vs_raw",
                "view_catchup_cpu_vs_raw",
                "view_get_p99_writer_vs_idle",
                "view_writer_puts_per_s",
            ],
        ),
    ];
    // Consumer groups need nats-server 2.11 (the newest server found is used): without one the
    // test fails naming it, or records a skip of the group workload under the opt-out. One run
    // of each side (about 12 s, most of it the takeover after a member is killed, which waits
    // for the 2 s session timeout).
    let groups = ServerVersions::Since(2, 11);
    if groups.contains(&binary) {
        workloads.push((
            vec!["group", "500", "50", "300", "100", "4", "16", "1000", "1"],
            vec![
                "group_throughput_vs_raw_pull",
                "plain_watch_throughput_vs_raw_pull",
                "group_3_members_vs_1",
                "group_3_members_vs_1_default_partitions",
                "group_rebalance_handled_s",
                "group_handover_all_s",
                "group_takeover_all_s",
            ],
        ));
    } else {
        faststream_testing::server_missing(groups, &found, "every_workload_runs_and_prints_json")?;
    }
    for (args, summary_keys) in workloads {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_kv_bench"))
            .args(&args)
            .env("NATS_URL", server.url())
            .output()
            .await?;
        let stdout = String::from_utf8(output.stdout)?;
        anyhow::ensure!(
            output.status.success(),
            "{args:?}: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<serde_json::Value> = stdout
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{args:?} printed {stdout}"))?;
        let summary = &lines.last().context("no output")?["summary"];
        for key in summary_keys {
            let ratio = summary[key]
                .as_f64()
                .with_context(|| format!("{key} in {summary}"))?;
            assert!(ratio.is_finite() && ratio > 0.0, "{key} = {ratio}");
        }
        // A core subscriber's run must not lose messages: 300 is far below its capacity.
        if let Some(lost) = summary.get("core_lost") {
            assert_eq!(lost.as_f64(), Some(0.0), "{args:?}: {summary}");
        }
        assert!(lines.len() > 2, "{args:?}: {stdout}");
    }
    Ok(())
}

/// The AsyncAPI benchmark builds the document of its 100 subscribers: every channel is there
/// (75 Key-Value watches, 25 subject subscribers with their replies and publishers).
#[tokio::test]
async fn the_asyncapi_benchmark_documents_its_100_subscribers() -> anyhow::Result<()> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_asyncapi_bench"))
        .output()
        .await?;
    let text = String::from_utf8(output.stdout)?;
    anyhow::ensure!(output.status.success(), "{text}");
    anyhow::ensure!(
        text.starts_with("100 subscribers: 150 channels, 125 operations, 100 schemas;"),
        "{text}"
    );
    Ok(())
}
