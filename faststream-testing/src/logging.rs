//! `tracing` output for tests.

/// Sends `tracing` output through the test harness's capture, so it is shown only for failing
/// tests; filtered by `RUST_LOG` (default `info`). Call it at the start of every test: only the
/// first call installs the subscriber.
///
/// ```
/// faststream_testing::init_test_logging();
/// faststream_testing::init_test_logging(); // Later calls do nothing.
/// tracing::info!("shown only if the test fails");
/// ```
pub fn init_test_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Another subscriber (an earlier call, or the test's own) wins: that is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
