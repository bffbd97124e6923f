//! [`JStream`]: a JetStream stream a subscriber reads, with FastStream's options, declared
//! idempotently when the app starts.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::error::NatsError;

pub use async_nats::jetstream::stream::{RetentionPolicy, StorageType};

/// A JetStream stream (FastStream's `JStream`): its name and, for creating it, its settings.
///
/// ```
/// use std::time::Duration;
/// use faststream_core::JStream;
///
/// let orders = JStream::new("ORDERS")
///     .subjects(["orders.>"])
///     .max_age(Duration::from_secs(7 * 24 * 3600))
///     .replicas(3);
/// assert_eq!(orders.name(), "ORDERS");
/// ```
///
/// When the app starts, each stream its subscribers name is declared: created with these
/// settings and the subscribers' subjects if it does not exist; if it exists, a subscriber's
/// subject it does not capture is added to its subjects with an update, as FastStream does (no
/// other setting of an existing stream is changed: a difference is logged as a warning).
/// With [`declare(false)`](Self::declare) the stream must exist.
#[derive(Debug, Clone, PartialEq)]
pub struct JStream {
    pub(crate) name: String,
    pub(crate) subjects: Vec<String>,
    pub(crate) retention: RetentionPolicy,
    pub(crate) max_age: Duration,
    pub(crate) max_bytes: i64,
    pub(crate) max_messages: i64,
    pub(crate) storage: StorageType,
    pub(crate) replicas: usize,
    pub(crate) declare: bool,
}

impl JStream {
    /// The stream `name`, with the server's defaults: limits retention, no limits, file
    /// storage, one replica; its subjects are those of the subscribers that read it.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            subjects: Vec::new(),
            retention: RetentionPolicy::Limits,
            max_age: Duration::ZERO,
            max_bytes: -1,
            max_messages: -1,
            storage: StorageType::File,
            replicas: 1,
            declare: true,
        }
    }

    /// Subjects the stream captures besides its subscribers' own.
    pub fn subjects<S: Into<String>>(mut self, subjects: impl IntoIterator<Item = S>) -> Self {
        self.subjects.extend(subjects.into_iter().map(Into::into));
        self
    }

    /// Retention: limits (the default), interest or work queue.
    pub fn retention(mut self, retention: RetentionPolicy) -> Self {
        self.retention = retention;
        self
    }

    /// The oldest a message may get (zero, the default: no limit).
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The most bytes the stream holds (-1, the default: no limit).
    pub fn max_bytes(mut self, max_bytes: i64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The most messages the stream holds (-1, the default: no limit).
    pub fn max_msgs(mut self, max_messages: i64) -> Self {
        self.max_messages = max_messages;
        self
    }

    /// File (the default) or memory storage.
    pub fn storage(mut self, storage: StorageType) -> Self {
        self.storage = storage;
        self
    }

    /// Copies kept on a cluster (1, the default, to 5).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Whether the app creates the stream (and adds its subscribers' subjects to it); `false`:
    /// it must exist.
    pub fn declare(mut self, declare: bool) -> Self {
        self.declare = declare;
        self
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The problems of these settings, one sentence each.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = faststream_rules::validate_stream(&self.name) {
            problems.push(error.to_string());
        }
        if !(1..=5).contains(&self.replicas) {
            problems.push(format!(
                "stream `{}`: replicas must be 1 to 5, got {}",
                self.name, self.replicas
            ));
        }
        problems
    }

    /// Creates the stream capturing `subjects` (and its own), or adds to an existing stream
    /// the subjects it does not capture. Returns the stream's subjects.
    pub(crate) async fn declare_with(
        &self,
        context: &jetstream::Context,
        subjects: &[String],
    ) -> Result<Vec<String>, NatsError> {
        let mut wanted: Vec<String> = self.subjects.clone();
        for subject in subjects {
            if !wanted.contains(subject) {
                wanted.push(subject.clone());
            }
        }
        let found = match context.get_stream(&self.name).await {
            Ok(found) => Some(found.cached_info().config.clone()),
            Err(error) => match error.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(js)
                    if js.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                {
                    None
                }
                _ => return Err(self.error("look up", error)),
            },
        };
        let Some(mut existing) = found else {
            if !self.declare {
                return Err(NatsError::StreamNotFound {
                    stream: self.name.clone(),
                });
            }
            let config = self.config(wanted.clone());
            context
                .create_stream(config)
                .await
                .map_err(|error| self.error("create", error))?;
            tracing::info!(stream = %self.name, subjects = ?wanted, "created stream `{}`", self.name);
            return Ok(wanted);
        };
        let missing: Vec<String> = wanted
            .into_iter()
            .filter(|subject| !captures(&existing.subjects, subject))
            .collect();
        if missing.is_empty() || !self.declare {
            if !missing.is_empty() {
                tracing::warn!(stream = %self.name, missing = ?missing,
                    "stream `{}` does not capture {missing:?} (and `declare` is off)", self.name);
            }
            self.warn_differences(&existing);
            return Ok(existing.subjects);
        }
        existing.subjects.extend(missing.iter().cloned());
        context
            .update_stream(existing.clone())
            .await
            .map_err(|error| self.error("update", error))?;
        tracing::info!(stream = %self.name, added = ?missing,
            "added {missing:?} to the subjects of stream `{}`", self.name);
        self.warn_differences(&existing);
        Ok(existing.subjects)
    }

    fn config(&self, subjects: Vec<String>) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects,
            retention: self.retention,
            max_age: self.max_age,
            max_bytes: self.max_bytes,
            max_messages: self.max_messages,
            storage: self.storage,
            num_replicas: self.replicas,
            ..Default::default()
        }
    }

    /// An existing stream keeps its settings: any that differ from these are logged.
    fn warn_differences(&self, existing: &stream::Config) {
        let mut differences = Vec::new();
        if existing.retention != self.retention {
            differences.push(format!(
                "retention {:?}, not {:?}",
                existing.retention, self.retention
            ));
        }
        if existing.storage != self.storage {
            differences.push(format!(
                "storage {:?}, not {:?}",
                existing.storage, self.storage
            ));
        }
        if existing.num_replicas != self.replicas {
            differences.push(format!(
                "{} replicas, not {}",
                existing.num_replicas, self.replicas
            ));
        }
        if existing.max_age != self.max_age {
            differences.push(format!(
                "max_age {:?}, not {:?}",
                existing.max_age, self.max_age
            ));
        }
        if !differences.is_empty() {
            tracing::warn!(stream = %self.name, ?differences,
                "stream `{}` exists with other settings, kept as they are: {}",
                self.name, differences.join("; "));
        }
    }

    fn error(
        &self,
        operation: &'static str,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> NatsError {
        NatsError::Stream {
            operation,
            stream: self.name.clone(),
            source: Box::new(error),
        }
    }
}

impl From<&str> for JStream {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for JStream {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// Whether one of the stream's subject filters captures every subject `subject` matches.
pub(crate) fn captures(filters: &[String], subject: &str) -> bool {
    filters.iter().any(|filter| covers(filter, subject))
}

/// Whether filter `wide` matches every subject filter `narrow` matches.
fn covers(wide: &str, narrow: &str) -> bool {
    let mut wide = wide.split('.');
    let mut narrow = narrow.split('.');
    loop {
        match (wide.next(), narrow.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(token)) if token != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_cover_narrower_ones() {
        assert!(covers("orders.>", "orders.*.created"));
        assert!(covers("orders.>", "orders.>"));
        assert!(covers("orders.*", "orders.1"));
        assert!(covers("orders.*", "orders.*"));
        assert!(!covers("orders.*", "orders.>"));
        assert!(!covers("orders.*", "orders.1.x"));
        assert!(!covers("orders.1", "orders.*"));
        assert!(!covers("orders", "orders.1"));
        assert!(captures(&["a".into(), "b.>".into()], "b.c"));
    }
}
