//! What a running app holds, shared by each stage of its lifecycle (`lifecycle.rs`), its
//! checks (`checks.rs`), hooks (`hooks.rs`) and subscribers (`subscribers.rs`), each of which
//! adds its methods.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::AppContext;
use crate::error::Error;
use crate::observe::trace::EntryTracing;
use crate::observe::Observer;
use crate::registry::Registry;
use faststream_rules::HookStage;

/// How long the parts of a running app may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    /// How long shutdown waits for in-flight handlers (and a failed start-up for the watches
    /// it had started).
    pub(super) shutdown: Duration,
    /// How long one handler call may run; `None`: no limit.
    pub(super) handler: Option<Duration>,
    /// How long start-up waits for the watches to catch up; `None`: it does not wait.
    pub(super) catch_up: Option<Duration>,
}

/// Everything a running app holds, built once by [`App::run_until`](super::App::run_until)
/// and used by each stage.
pub(super) struct RunningApp {
    pub(super) app: AppContext,
    pub(super) registry: Registry,
    pub(super) timeouts: Timeouts,
    /// Fired to stop the watch loops.
    pub(super) cancel: CancellationToken,
    pub(super) observer: Observer,
    /// Which entries get a span, and how it joins the writer's trace.
    pub(super) entry_tracing: EntryTracing,
}

/// How far start-up got.
pub(super) enum StartOutcome {
    /// Everything started; the app runs.
    Running,
    /// A shutdown was requested during `stage`; what had started is to be stopped by
    /// `deadline` (the shutdown timeout after the request).
    Interrupted {
        stage: &'static str,
        deadline: Instant,
        /// The error of a start-up hook that failed while finishing after the request.
        hook_error: Option<Error>,
    },
}

impl RunningApp {
    /// What hooks of `stage` get: `on_startup` hooks run before the views start.
    pub(super) fn context_for(&self, stage: HookStage) -> AppContext {
        AppContext {
            views_started: stage != HookStage::OnStartup,
            ..self.app.clone()
        }
    }
}
