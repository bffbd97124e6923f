//! The live views an app declares (`App::with_kv_view`), started after connecting and before
//! the subscribers' watches.

use std::any::type_name;
use std::sync::Arc;

use faststream_rules::KeyPattern;
use futures_util::future::BoxFuture;

use super::catch_up::CatchUpWait;
use super::App;
use crate::broker::NatsBroker;
use crate::context::ViewSlot;
use crate::error::{Error, Result};
use crate::kv::view::KvViewOptions;
use crate::kv::view::{self, Decode};

/// Starts one declared view and puts it in its slot.
pub(super) struct ViewStart {
    pub(super) description: String,
    pub(super) start: Box<dyn FnOnce(NatsBroker) -> BoxFuture<'static, Result<CatchUpWait>> + Send>,
}

impl std::fmt::Debug for ViewStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.description)
    }
}

impl App {
    /// Declares a live view of the keys matching `pattern` in a bucket, values decoded from JSON
    /// into `T`, for handlers and hooks to take as a [`KvView<T>`](crate::KvView) argument.
    /// `options` is the bucket's name or a [`KvViewOptions`], as for
    /// [`NatsBroker::kv_view`](crate::NatsBroker::kv_view).
    ///
    /// The views start after connecting and before the subscribers' watches, and start-up
    /// waits until each holds its bucket's state (up to the
    /// [`wait_for_catch_up`](Self::wait_for_catch_up) timeout, 60 s if none is set), so every
    /// handler call and `after_startup` hook finds them caught up. `on_startup` hooks run
    /// before connecting and cannot take one. One view per value type, as with `State<T>`:
    /// declaring a second view of the same `T` is a setup error (wrap the type in a newtype to
    /// hold two views of the same values).
    ///
    /// ```no_run
    /// use faststream_core::{subscriber, App, BrokerConfig, KvView};
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Flag {
    ///     enabled: bool,
    /// }
    ///
    /// #[subscriber("orders.*", kv_watch = "shop")]
    /// async fn on_order(order: String, flags: KvView<Flag>) {
    ///     if flags.get("orders.audit").is_some_and(|flag| flag.enabled) {
    ///         println!("audit: {order}");
    ///     }
    /// }
    ///
    /// # async fn demo() -> anyhow::Result<()> {
    /// App::new(BrokerConfig::from_env())
    ///     .with_kv_view::<Flag>("flags", ">")
    ///     .run()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn with_kv_view<T>(
        self,
        options: impl Into<KvViewOptions>,
        pattern: impl Into<String>,
    ) -> Self
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        self.add_view(options.into(), pattern.into(), view::json::<T>())
    }

    /// Declares a live view whose values `decode` makes, like
    /// [`with_kv_view`](Self::with_kv_view); raw bytes are `|value| Ok::<_, Infallible>(value.clone())`.
    #[must_use]
    pub fn with_kv_view_decoded<T, E>(
        self,
        options: impl Into<KvViewOptions>,
        pattern: impl Into<String>,
        decode: impl Fn(&bytes::Bytes) -> std::result::Result<T, E> + Send + Sync + 'static,
    ) -> Self
    where
        T: Send + Sync + 'static,
        E: Into<crate::error::BoxError>,
    {
        let decode: Decode<T> = Arc::new(move |value| decode(value).map_err(Into::into));
        self.add_view(options.into(), pattern.into(), decode)
    }

    fn add_view<T: Send + Sync + 'static>(
        mut self,
        options: KvViewOptions,
        pattern: String,
        decode: Decode<T>,
    ) -> Self {
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
        let slot: ViewSlot<T> = Arc::default();
        if self.views.contains::<ViewSlot<T>>() {
            problems.push(format!(
                "a view of `{}` is declared already; an app holds one view per value type",
                type_name::<T>()
            ));
        } else {
            // Declared even if it cannot start, so no argument reports it missing as well.
            self.views.insert(Arc::clone(&slot));
        }
        if !problems.is_empty() {
            self.problems
                .push(format!("{description}: {}", problems.join("; ")));
            return self;
        }
        let starter_description = description.clone();
        self.view_starts.push(ViewStart {
            description,
            start: Box::new(move |broker: NatsBroker| {
                Box::pin(async move {
                    let view = broker.start_view(options, &pattern, decode).await?;
                    let started = CatchUpWait {
                        description: starter_description,
                        status: Some(view.status().clone()),
                        done: view.ready(),
                    };
                    // Declared once, started once: the slot is empty.
                    let _ = slot.set(view);
                    Ok(started)
                })
            }),
        });
        self
    }
}
