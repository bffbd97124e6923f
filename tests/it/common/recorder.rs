//! [`Recorder`]: what handlers and hooks record, in order, for tests to wait on.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::EVENT_TIMEOUT;

/// How many of the last records a timeout's error quotes.
const QUOTED_ON_TIMEOUT: usize = 20;

/// Records of type `T`, in the order they were pushed; clones share
/// them. Tests wait for a count or a condition on them, with a timeout.
#[derive(Clone)]
pub struct Recorder<T> {
    records: Arc<watch::Sender<Vec<T>>>,
}

impl<T> Default for Recorder<T> {
    fn default() -> Self {
        Self {
            records: Arc::new(watch::Sender::new(Vec::new())),
        }
    }
}

impl<T: Clone + Debug> Recorder<T> {
    /// Appends `record`.
    pub fn push(&self, record: impl Into<T>) {
        let record = record.into();
        self.records.send_modify(|records| records.push(record));
    }

    /// Appends the record `make` builds from how many records came before it.
    pub fn push_with(&self, make: impl FnOnce(usize) -> T) {
        self.records.send_modify(|records| {
            let record = make(records.len());
            records.push(record);
        });
    }

    /// The records so far.
    pub fn snapshot(&self) -> Vec<T> {
        self.records.borrow().clone()
    }

    /// Waits until `done` holds for the records, up to [`EVENT_TIMEOUT`]; returns them.
    pub async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&[T]) -> bool,
    ) -> anyhow::Result<Vec<T>> {
        self.wait_for_within(what, EVENT_TIMEOUT, done).await
    }

    /// Waits until `done` holds for the records, up to `timeout`; returns them. The error
    /// quotes the last records.
    pub async fn wait_for_within(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[T]) -> bool,
    ) -> anyhow::Result<Vec<T>> {
        let mut receiver = self.records.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            receiver
                .wait_for(|records| done(records))
                .await
                .map(|records| records.clone())
        })
        .await;
        match waited {
            Ok(Ok(records)) => Ok(records),
            _ => {
                let records = self.snapshot();
                let last = &records[records.len().saturating_sub(QUOTED_ON_TIMEOUT)..];
                anyhow::bail!(
                    "timed out after {timeout:?} waiting for {what}; {} recorded, the last {}: \
                     {last:?}",
                    records.len(),
                    last.len()
                )
            }
        }
    }

    /// Waits until at least `count` records were pushed, up to [`EVENT_TIMEOUT`].
    pub async fn wait_for_count(&self, count: usize) -> anyhow::Result<Vec<T>> {
        self.wait_for(&format!("{count} records"), |records| {
            records.len() >= count
        })
        .await
    }
}

impl<T: Clone + Debug + PartialEq<str>> Recorder<T> {
    /// Waits until a record equal to `event` was pushed, up to [`EVENT_TIMEOUT`].
    pub async fn wait_for_event(&self, event: &str) -> anyhow::Result<Vec<T>> {
        self.wait_for(&format!("`{event}`"), |records| {
            records.iter().any(|record| record == event)
        })
        .await
    }
}
