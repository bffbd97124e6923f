//! A partition's task that panics is started again. Handler panics are caught in the call, so
//! the real path that can still panic a partition task is code that runs in the task itself:
//! here the application's tracing layer, which panics on the task's own log line of a failed
//! attempt (as a buggy layer or log sink could).

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::Layer;

/// The error of the failing call; the layer panics on the event that carries it.
const MARKER: &str = "fails-once-and-its-log-panics";

/// A tracing layer that panics, once, on the first event whose fields mention [`MARKER`].
struct PanicOnMarker {
    panicked: Arc<AtomicBool>,
}

impl<S: tracing::Subscriber> Layer<S> for PanicOnMarker {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        if fields.0.contains(MARKER) && !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("the tracing layer failed on: {}", fields.0);
        }
    }
}

#[tokio::test]
async fn a_partition_task_that_panics_is_started_again() -> anyhow::Result<()> {
    on_each_server_since(2, 11, |server| async move {
        // Measured: both changes handled 1.8 s after the failed call (the task restarted after
        // a heartbeat interval, 0.4 s; the change it held delivered again after the ack wait,
        // the session timeout, 2 s after its delivery); bound: over twice that.
        const RECOVERY_BOUND: Duration = Duration::from_secs(5);
        // Every task of this test runs on this thread (a current-thread runtime), so this
        // subscriber is the one they log through.
        let panicked = Arc::new(AtomicBool::new(false));
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::INFO)
            .with(tracing_subscriber::fmt::layer().with_test_writer())
            .with(PanicOnMarker {
                panicked: Arc::clone(&panicked),
            });
        let _logging = tracing::subscriber::set_default(subscriber);

        let store = bucket_with_history(&server, BUCKET).await?;
        let calls = Calls::default();
        calls.fail_with(|message, attempt| {
            (message.key() == "orders.1" && attempt == 1).then(|| MARKER.to_owned())
        });
        // One partition: a dead task would leave every key unhandled.
        let watch = KvWatch::new(BUCKET).group(settings("panics", 1).max_attempts(3));
        let member = start_member(&server, "m1", &calls, watch).await?;
        let first = store.put("orders.1", "v".into()).await?;
        calls
            .wait_for("the failed first attempt", |calls| {
                calls.iter().any(|c| c.key() == "orders.1" && !c.ok())
            })
            .await?;
        let failed_at = Instant::now();
        faststream_testing::wait_for("the layer to panic", EVENT_TIMEOUT, || async {
            anyhow::Ok(panicked.load(Ordering::SeqCst).then_some(()))
        })
        .await?;
        let next = store.put("orders.2", "v".into()).await?;
        let expected = BTreeSet::from([
            ("orders.1".to_owned(), first),
            ("orders.2".to_owned(), next),
        ]);
        calls
            .wait_for_handled("both changes after the panic", &expected)
            .await?;
        let recovered = failed_at.elapsed();
        println!("partition task panicked; changes handled again {recovered:?} after");
        let all = calls.all();
        let first_calls: Vec<u32> = all
            .iter()
            .filter(|c| c.key() == "orders.1")
            .map(|c| c.attempt)
            .collect();
        assert_eq!(first_calls, [1, 2], "{all:#?}");
        assert_once_and_in_order(&all, &expected);
        assert!(
            recovered < RECOVERY_BOUND,
            "handled again {recovered:?} after the panic, over {RECOVERY_BOUND:?}"
        );
        member.stop().await??;
        Ok(())
    })
    .await
}
