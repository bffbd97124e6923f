//! Running the lifecycle hooks of one stage.

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::running::{RunningApp, StartOutcome};
use crate::error::{chain, Error, HandlerError, Result};
use crate::handler::call_catching_panics;
use crate::registry::HookSpec;
use faststream_rules::HookStage;

impl RunningApp {
    /// Runs the start-up hooks of `stage` in order, stopping at the first failure. When
    /// `requested` fires, the hook running may finish (up to the shutdown timeout; abandoned
    /// after it, with a log line) and the later ones do not run.
    pub(super) async fn run_startup_hooks(
        &self,
        stage: HookStage,
        requested: &CancellationToken,
    ) -> Result<Option<StartOutcome>> {
        for hook in self.registry.hooks(stage) {
            let interrupted = |deadline, hook_error| {
                Ok(Some(StartOutcome::Interrupted {
                    stage: stage.as_str(),
                    deadline,
                    hook_error,
                }))
            };
            if requested.is_cancelled() {
                return interrupted(Instant::now() + self.timeouts.shutdown, None);
            }
            tracing::debug!(hook = %hook.name, "running {stage} hook");
            let call = call_catching_panics(|| hook.hook.call(self.context_for(stage)));
            let mut call = std::pin::pin!(call);
            let outcome = tokio::select! {
                outcome = &mut call => outcome,
                () = requested.cancelled() => {
                    // One shutdown timeout for the hook and then the calls in flight.
                    let timeout = self.timeouts.shutdown;
                    let deadline = Instant::now() + timeout;
                    match tokio::time::timeout_at(deadline, call).await {
                        Ok(outcome) => {
                            let error = outcome.err().map(|source| self.hook_failed(stage, hook, source));
                            return interrupted(deadline, error);
                        }
                        Err(_) => {
                            tracing::warn!(hook = %hook.name, ?timeout,
                                "{stage} hook still running at the shutdown timeout; abandoning it");
                            return interrupted(deadline, None);
                        }
                    }
                }
            };
            if let Err(source) = outcome {
                return Err(self.hook_failed(stage, hook, source));
            }
        }
        Ok(None)
    }

    /// The error of a failed hook, logged.
    fn hook_failed(&self, stage: HookStage, hook: &HookSpec, source: HandlerError) -> Error {
        let error = Error::Hook {
            stage,
            hook: hook.name.to_string(),
            source,
        };
        tracing::error!(hook = %hook.name, error = %chain(&error), "{stage} hook failed");
        error
    }

    /// Runs the shutdown hooks of `stage` in order: every one runs, the first failure is
    /// reported.
    pub(super) async fn run_shutdown_hooks(&self, stage: HookStage) -> Result<()> {
        let mut first_error = None;
        for hook in self.registry.hooks(stage) {
            tracing::debug!(hook = %hook.name, "running {stage} hook");
            if let Err(source) = call_catching_panics(|| hook.hook.call(self.app.clone())).await {
                first_error.get_or_insert(self.hook_failed(stage, hook, source));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
