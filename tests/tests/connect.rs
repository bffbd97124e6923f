//! Connecting: a missing server is one clear, bounded error naming the URL.

use std::time::{Duration, Instant};

use faststream_core::{App, Error, NatsBroker};

#[tokio::test]
async fn no_server_is_a_bounded_error_naming_the_url() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port");
    let url = format!("nats://user:secret@127.0.0.1:{port}");
    let started = Instant::now();
    let error = App::new(NatsBroker::new(url).connect_timeout(Duration::from_secs(1)))
        .without_registered()
        .run_until(std::future::pending())
        .await
        .expect_err("there is no server");
    let elapsed = started.elapsed();
    assert!(
        matches!(error, Error::Connect { attempts, .. } if attempts >= 2),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.starts_with(&format!(
            "could not connect to NATS at nats://***@127.0.0.1:{port} ("
        )),
        "{text}"
    );
    assert!(!text.contains("secret"), "the password leaked: {text}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}
