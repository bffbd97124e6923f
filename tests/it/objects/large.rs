//! Large objects: 100 MB written and read streamed and verified, with the server never more
//! than a few megabytes ahead of the reader; and a read that gets no data fails with a timeout
//! naming the object.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use faststream_core::error::{chain, ObjectError};
use faststream_core::{BrokerConfig, NatsBroker};
use faststream_testing::TcpProxy;
use futures_util::{StreamExt as _, TryStreamExt as _};

use super::PseudoRandom;
use crate::common::{connected_broker, jetstream, on_each_server};

const SIZE: u64 = 100 << 20;

/// async-nats's chunk size: the reader asks for 32 chunks (4 MiB) at a time, and again when
/// half are left, so at most 48 are on their way or waiting.
const CHUNK: u64 = 128 << 10;
const MOST_AHEAD: u64 = 48;

#[tokio::test]
async fn a_100_mb_object_is_streamed_verified_in_bounded_memory() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let broker = connected_broker(&server).await?;
        let store = broker.object_storage("large").await?;
        let started = Instant::now();
        let info = store.put("big", PseudoRandom::new(42, SIZE)).await?;
        let put_took = started.elapsed();
        assert_eq!((info.size as u64, info.chunks as u64), (SIZE, SIZE / CHUNK));

        let stream = jetstream(&server).await?.get_stream("OBJ_large").await?;
        let started = Instant::now();
        let mut reader = store.get("big").await?;
        let mut expected = PseudoRandom::new(42, SIZE);
        let mut compare = vec![0; CHUNK as usize];
        let (mut read, mut chunks, mut most_ahead) = (0u64, 0u64, 0u64);
        while let Some(chunk) = reader.next().await {
            let chunk = chunk?;
            let wanted = &mut compare[..chunk.len()];
            expected.fill(wanted);
            anyhow::ensure!(*chunk == *wanted, "chunk {chunks} differs");
            read += chunk.len() as u64;
            chunks += 1;
            // How far ahead the server is: chunks it delivered that were not read yet.
            if chunks % 50 == 1 && chunks < info.chunks as u64 {
                let consumers: Vec<_> = stream.consumers().try_collect().await?;
                let reader_consumer = consumers
                    .iter()
                    .find(|consumer| {
                        consumer.config.description.as_deref() == Some("faststream object reader")
                    })
                    .context("the reader's consumer")?;
                let ahead = reader_consumer
                    .delivered
                    .consumer_sequence
                    .saturating_sub(chunks);
                most_ahead = most_ahead.max(ahead);
            }
        }
        let get_took = started.elapsed();
        assert_eq!(read, SIZE);
        // Measured 3.5-3.9 s each in a debug build (the data generated and compared here
        // included); the bound leaves room for a loaded 2-core machine.
        assert!(
            put_took < Duration::from_secs(30) && get_took < Duration::from_secs(30),
            "put {put_took:?}, get {get_took:?}"
        );
        assert!(
            most_ahead <= MOST_AHEAD,
            "the server got {most_ahead} chunks ahead of the reader"
        );
        eprintln!(
            "100 MB object: put {put_took:.2?} ({:.0} MB/s), streamed get {get_took:.2?} \
             ({:.0} MB/s), at most {most_ahead} chunks ahead of the reader",
            SIZE as f64 / 1e6 / put_took.as_secs_f64(),
            SIZE as f64 / 1e6 / get_took.as_secs_f64(),
        );
        // The reader's consumer is gone once the object is read.
        faststream_testing::wait_for(
            "the reader's consumer deleted",
            Duration::from_secs(10),
            || async {
                let consumers: Vec<_> = stream.consumers().try_collect().await?;
                anyhow::Ok((consumers.is_empty().then_some(()), consumers.len()))
            },
        )
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_read_without_progress_times_out_naming_the_object() -> anyhow::Result<()> {
    on_each_server(|server| async move {
        let direct = connected_broker(&server).await?;
        let data = PseudoRandom::new(5, 16 << 20);
        direct
            .object_storage("outage")
            .await?
            .put("big", data)
            .await?;

        let proxy = TcpProxy::start(server.port()).await?;
        let broker = NatsBroker::connect(BrokerConfig::new(proxy.url())).await?;
        let timeout = Duration::from_secs(2);
        let store = broker
            .object_storage("outage")
            .await?
            .with_read_timeout(timeout);
        assert_eq!(store.read_timeout(), timeout);
        let mut reader = store.get("big").await?;
        reader.next().await.context("first chunk")??;
        // The server is unreachable from now on.
        proxy.set_refusing(true);
        proxy.cut();
        let cut = Instant::now();
        let error = loop {
            match reader.next().await.context("the reader ended")? {
                Ok(_) => {} // what was already received
                Err(error) => break error,
            }
        };
        let waited = cut.elapsed();
        assert!(
            matches!(error.kind(), ObjectError::Timeout { waited } if *waited == timeout),
            "{error:?}"
        );
        assert_eq!(
            chain(&error),
            "could not read object `big` of bucket `outage`: no data arrived for 2s"
        );
        assert!(
            waited >= timeout && waited < timeout * 3,
            "failed after {waited:?}"
        );
        Ok(())
    })
    .await
}
