//! Starting the subject and stream subscribers: their streams declared, their publishers
//! resolved, and a subject loop spawned for each.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::jetstream::context::GetStreamByNameErrorKind;

use super::catch_up::CatchUpWait;
use super::checks::CheckedSubject;
use super::running::RunningApp;
use super::subscribers::RunningSubscriber;
use crate::dispatch::subject_loop::{OrderKey, Settlement, SubjectLoop};
use crate::dispatch::watch_loop::HandledSignal;
use crate::dispatch::Publication;
use crate::error::{Error, NatsError, Result};
use crate::nats::source::SubjectSource;
use crate::nats::JStream;
use crate::observe::metrics::{Progress, SubjectMetrics};
use crate::registry::PublisherSpec;

impl RunningApp {
    /// Declares each stream the subscribers read, once, with every subject its subscribers
    /// listen on (placeholders as `*`).
    pub(super) async fn declare_streams(&self, subjects: &[CheckedSubject]) -> Result<()> {
        let mut streams: BTreeMap<&str, (&JStream, Vec<String>, &str)> = BTreeMap::new();
        for subject in subjects {
            let Some(stream) = subject.subscription.jstream() else {
                continue;
            };
            let entry = streams
                .entry(stream.name())
                .or_insert_with(|| (stream, Vec::new(), &subject.called.context.name));
            entry
                .1
                .push(subject.called.context.pattern.filter().to_owned());
        }
        if streams.is_empty() {
            return Ok(());
        }
        let jetstream = self.app.broker.jetstream()?;
        for (_, (stream, filters, subscriber)) in streams {
            stream
                .declare_with(&jetstream, &filters)
                .await
                .map_err(|source| Error::Messaging {
                    subscriber: format!("subscriber `{subscriber}`"),
                    source,
                })?;
        }
        Ok(())
    }

    /// Resolves where each publisher sends: through JetStream when a stream is named or one
    /// captures the subject (looked up now), else core NATS.
    pub(super) async fn resolve_publishers(
        &self,
        publishers: &[PublisherSpec],
    ) -> Result<Arc<[Publication]>> {
        let mut resolved = Vec::with_capacity(publishers.len());
        for publisher in publishers {
            let failed = |source| Error::Messaging {
                subscriber: format!(
                    "publisher `{}` of `{}`",
                    publisher.subject, publisher.handler
                ),
                source,
            };
            let (stream, expect_stream) = match &publisher.publisher.stream {
                Some(stream) => (Some(Arc::from(stream.as_str())), true),
                None => {
                    let jetstream = self.app.broker.jetstream()?;
                    match jetstream
                        .stream_by_subject(publisher.subject.to_string())
                        .await
                    {
                        Ok(stream) => (Some(Arc::from(stream.as_str())), false),
                        Err(error)
                            if matches!(error.kind(), GetStreamByNameErrorKind::NotFound) =>
                        {
                            (None, false)
                        }
                        Err(error) => {
                            return Err(failed(NatsError::Stream {
                                operation: "look up the stream capturing the subject of",
                                stream: publisher.subject.to_string(),
                                source: Box::new(error),
                            }))
                        }
                    }
                }
            };
            tracing::info!(handler = %publisher.handler, subject = %publisher.subject,
                stream = stream.as_deref(),
                "`{}` publishes to `{}`{}", publisher.handler, publisher.subject,
                stream.as_deref().map(|s| format!(" through stream `{s}`")).unwrap_or_default());
            resolved.push(Publication {
                subject: Arc::from(&*publisher.subject),
                stream,
                expect_stream,
                retry: publisher.publisher.retry.clone(),
            });
        }
        Ok(resolved.into())
    }

    /// Subscribes each subject subscriber and spawns its loop, pushing each to `running`.
    pub(super) async fn start_subjects(
        &self,
        subjects: Vec<CheckedSubject>,
        running: &mut Vec<RunningSubscriber>,
    ) -> Result<()> {
        for subject in subjects {
            running.push(self.start_subject(subject).await?);
        }
        Ok(())
    }

    async fn start_subject(&self, subject: CheckedSubject) -> Result<RunningSubscriber> {
        let name = Arc::clone(&subject.called.context.name);
        let failed = |source| Error::Messaging {
            subscriber: format!("subscriber `{name}`"),
            source,
        };
        let client = self.app.broker.client()?;
        let jetstream = self.app.broker.jetstream()?;
        let filter = subject.called.context.pattern.filter().to_owned();
        let source = SubjectSource::open(&client, &jetstream, &filter, &subject.subscription)
            .await
            .map_err(failed)?;
        let group = source
            .consumer()
            .map(|(_, consumer)| Arc::from(consumer))
            .or_else(|| subject.subscription.queue.as_deref().map(Arc::from));
        let publications = self.resolve_publishers(&subject.called.publishers).await?;
        let metrics = Arc::new(SubjectMetrics::default());
        let mut subscription = Arc::clone(&subject.subscription);
        // Progress acknowledgements must come within the server's ack wait, the consumer's.
        match source.ack_wait() {
            Some(ack_wait) if ack_wait != subscription.ack_wait => {
                tracing::info!(subscriber = %name, ?ack_wait,
                    "subscriber `{name}` joined a consumer whose ack wait is {ack_wait:?}");
                Arc::make_mut(&mut subscription).ack_wait = ack_wait;
            }
            _ => {}
        }
        let order = match subscription.ordered_by.as_deref() {
            None => OrderKey::None,
            Some("subject") => OrderKey::Subject,
            Some(name) => subject
                .called
                .context
                .pattern
                .params()
                .iter()
                .find(|param| param.name == name)
                .map_or(OrderKey::Subject, |param| OrderKey::Token(param.token)),
        };
        let subject_loop = SubjectLoop {
            dispatcher: self.dispatcher(&subject.called, group, publications),
            source,
            max_workers: subscription.max_workers,
            order,
            settlement: Settlement {
                policy: subscription.ack_policy,
                max_attempts: subscription.max_attempts,
                jetstream: subscription.stream.as_ref().map(|_| jetstream.clone()),
                replicas: subscription
                    .stream
                    .as_ref()
                    .map_or(1, |stream| stream.replicas),
                subscription: Arc::clone(&subscription),
                metrics: Arc::clone(&metrics),
            },
        };
        // Subscribed (and the consumer made): live at once, nothing to catch up with.
        let live = Arc::new(HandledSignal::new(true));
        let catch_up = CatchUpWait {
            description: format!(
                "subscriber `{name}` (`{}`)",
                subject.called.context.pattern()
            ),
            status: None,
            done: live.subscribe(),
        };
        tracing::info!(subscriber = %name, subject = %filter, "subscriber `{name}` listens on `{filter}`");
        Ok(self.spawn(
            &subject.called,
            Progress::Subject(metrics),
            catch_up,
            |cancel| async move {
                // Held while the loop runs, so readiness reads the signal it sent.
                let _live = live;
                subject_loop.run(cancel).await
            },
        ))
    }
}
