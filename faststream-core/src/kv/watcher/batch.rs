//! Reading a bucket's retained messages in pages through batched direct gets (nats-server 2.11
//! or newer, ADR-31), for a catch-up faster than a consumer's.
//!
//! One page is a request `{"seq":S,"next_by_subj":F,"batch":B,"max_bytes":M}` to
//! `$JS.API.DIRECT.GET.<stream>` with a reply inbox: the server answers with up to `B` stored
//! messages matching `F` from sequence `S` on, in sequence order, each a message of its own
//! with `Nats-Sequence`, `Nats-Subject`, `Nats-Time-Stamp` and `Nats-Num-Pending` headers, then
//! an end-of-batch status (204 `EOB`) whose `Nats-Num-Pending` tells whether more follow and
//! whose `Nats-Last-Sequence` is the last sequence sent (the next page starts after it). A 404
//! answers a page with nothing to send.
//!
//! The pages are read by a task of their own that hands the messages over in chunks: it sees
//! each end of batch as soon as it arrives and asks for the next page at once, while the
//! watcher is still turning the previous one into entries.

use std::time::Duration;

use async_nats::{Message, StatusCode};
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::BoxError;

/// Messages asked for per page.
const PAGE_MESSAGES: usize = 10_000;
/// Bytes asked for per page at most: bounds what the client buffers for one page.
const PAGE_BYTES: usize = 8 * 1024 * 1024;
/// Messages handed to the watcher at once.
const CHUNK_MESSAGES: usize = 512;
/// Chunks the reading task may be ahead of the watcher.
const CHUNKS_AHEAD: usize = 64;
/// The status of the message ending a page.
const END_OF_BATCH: u16 = 204;

/// What the reading task hands over.
pub(super) enum PageItem {
    /// Stored messages, in sequence order.
    Messages(Vec<Message>),
    /// Every message matching the filter up to the stream's last one was sent.
    Done,
    /// The read failed (no answer in time, an error status, the connection closed): the watch
    /// goes on with a consumer from where the pages stopped.
    Failed(BoxError),
}

/// A paged read of a stream running in the background.
pub(super) struct PagedRead {
    pub(super) items: mpsc::Receiver<PageItem>,
    task: JoinHandle<()>,
}

impl Drop for PagedRead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PagedRead {
    /// Starts reading the messages of `stream` matching `filter` from sequence `from` on;
    /// `timeout` bounds the wait for each message of a page.
    pub(super) fn start(
        client: async_nats::Client,
        stream: &str,
        filter: String,
        from: u64,
        timeout: Duration,
    ) -> Self {
        let (sender, items) = mpsc::channel(CHUNKS_AHEAD);
        let subject = format!("$JS.API.DIRECT.GET.{stream}");
        let task = tokio::spawn(async move {
            let outcome = read_pages(&client, subject, &filter, from, timeout, &sender).await;
            let last = match outcome {
                Ok(()) => PageItem::Done,
                Err(error) => PageItem::Failed(error),
            };
            // The watcher may be gone: nothing to tell then.
            let _ = sender.send(last).await;
        });
        Self { items, task }
    }
}

/// The request for one page.
fn page_request(filter: &str, from: u64) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&serde_json::json!({
        "seq": from,
        "next_by_subj": filter,
        "batch": PAGE_MESSAGES,
        "max_bytes": PAGE_BYTES,
    }))
}

/// A header of a status message, as a number.
fn number_header(message: &Message, name: &str) -> Option<u64> {
    message.headers.as_ref()?.get(name)?.as_str().parse().ok()
}

async fn read_pages(
    client: &async_nats::Client,
    subject: String,
    filter: &str,
    mut from: u64,
    timeout: Duration,
    sender: &mpsc::Sender<PageItem>,
) -> Result<(), BoxError> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    loop {
        client
            .publish_with_reply(
                subject.clone(),
                inbox.clone(),
                page_request(filter, from)?.into(),
            )
            .await?;
        let mut chunk = Vec::with_capacity(CHUNK_MESSAGES);
        loop {
            // Whatever is already there is taken without arming a timer.
            let message = match replies.next().now_or_never() {
                Some(message) => message,
                None => {
                    if !chunk.is_empty() {
                        let full =
                            std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_MESSAGES));
                        if sender.send(PageItem::Messages(full)).await.is_err() {
                            return Ok(());
                        }
                    }
                    tokio::time::timeout(timeout, replies.next())
                        .await
                        .map_err(|_| format!("no answer to a batched direct get for {timeout:?}"))?
                }
            };
            let Some(message) = message else {
                return Err("the connection closed during a batched direct get".into());
            };
            match message.status {
                None => {
                    chunk.push(message);
                    if chunk.len() == CHUNK_MESSAGES {
                        let full =
                            std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_MESSAGES));
                        if sender.send(PageItem::Messages(full)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                Some(status) if status == END_OF_BATCH => {
                    if !chunk.is_empty() && sender.send(PageItem::Messages(chunk)).await.is_err() {
                        return Ok(());
                    }
                    let pending = number_header(&message, "Nats-Num-Pending")
                        .ok_or("an end of batch without Nats-Num-Pending")?;
                    if pending == 0 {
                        return Ok(());
                    }
                    let last = number_header(&message, "Nats-Last-Sequence")
                        .ok_or("an end of batch without Nats-Last-Sequence")?;
                    if last < from {
                        return Err(format!(
                            "an end of batch at sequence {last}, before the page's start {from}"
                        )
                        .into());
                    }
                    from = last + 1;
                    break;
                }
                // Nothing (more) matches.
                Some(StatusCode::NOT_FOUND) => {
                    if !chunk.is_empty() && sender.send(PageItem::Messages(chunk)).await.is_err() {
                        return Ok(());
                    }
                    return Ok(());
                }
                Some(status) => {
                    return Err(format!(
                        "a batched direct get answered {status} {}",
                        message.description.as_deref().unwrap_or("")
                    )
                    .into());
                }
            }
        }
    }
}
