//! The live views an app declares (`App::with_kv_view`): checked and given a slot when
//! declared, started after connecting and before the subscribers' watches.

use std::any::type_name;
use std::sync::Arc;
use std::time::Duration;

use faststream_rules::KeyPattern;
use futures_util::future::BoxFuture;

use super::catch_up::CatchUpWait;
use crate::asyncapi::ViewDoc;
use crate::broker::NatsBroker;
use crate::context::ViewSlot;
use crate::error::{Error, Result};
use crate::kv::view::{Decode, KvViewOptions};
use crate::type_map::TypeMap;

/// Starts one declared view and puts it in its slot.
pub(super) struct ViewStart {
    pub(super) description: String,
    /// What the AsyncAPI document says of it.
    pub(super) doc: ViewDoc,
    /// How long start-up waits for it, if its options say.
    pub(super) catch_up_timeout: Option<Duration>,
    pub(super) start: Box<dyn FnOnce(NatsBroker) -> BoxFuture<'static, Result<CatchUpWait>> + Send>,
}

impl std::fmt::Debug for ViewStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl ViewStart {
    /// Declares the view of `T` in `views` and returns how to start it, or every problem with
    /// it in one line.
    pub(super) fn declare<T: Send + Sync + 'static>(
        views: &mut TypeMap,
        options: KvViewOptions,
        pattern: String,
        decode: Decode<T>,
    ) -> std::result::Result<Self, String> {
        let description = format!(
            "view `KvView<{}>` (`{pattern}` in bucket `{}`)",
            type_name::<T>(),
            options.bucket()
        );
        let mut problems = Vec::new();
        if let Err(error) = KeyPattern::parse(&pattern) {
            problems.push(error.to_string());
        }
        if let Err(Error::InvalidWatch {
            problems: found, ..
        }) = options.validate()
        {
            problems.extend(found);
        }
        let slot: Arc<ViewSlot<T>> = Arc::default();
        if views.contains::<ViewSlot<T>>() {
            problems.push(format!(
                "a view of `{}` is declared already; an app holds one view per value type",
                type_name::<T>()
            ));
        } else {
            // Declared even if it cannot start, so no argument reports it missing as well.
            views.insert_shared(Arc::clone(&slot));
        }
        if !problems.is_empty() {
            return Err(format!("{description}: {}", problems.join("; ")));
        }
        let description_when_started = description.clone();
        Ok(Self {
            doc: ViewDoc {
                bucket: options.bucket().to_owned(),
                pattern: pattern.clone(),
                value_type: type_name::<T>(),
            },
            description,
            catch_up_timeout: options.chosen_catch_up_timeout(),
            start: Box::new(move |broker: NatsBroker| {
                Box::pin(async move {
                    let view = broker.start_view(options, &pattern, decode).await?;
                    let started = CatchUpWait {
                        description: description_when_started,
                        status: Some(view.status().clone()),
                        done: view.ready(),
                    };
                    // Declared once, started once: the slot is empty.
                    let _ = slot.set(view);
                    Ok(started)
                })
            }),
        })
    }
}
