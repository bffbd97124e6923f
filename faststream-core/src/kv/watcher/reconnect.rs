//! Noticing that the connection was re-established, so that the watch re-creates its consumer
//! at once instead of waiting to notice the silence.

use std::task::{ready, Context, Poll};

use tokio_util::sync::ReusableBoxFuture;

/// Changes each time the connection is (re)established; the watcher re-creates its consumer
/// then instead of waiting to notice the silence. Closed when the connection's owner is gone.
pub(crate) type ReconnectSignal = tokio::sync::watch::Receiver<u64>;

/// Waits, in a form `poll` can drive, for the next reconnection after the last `arm`.
pub(super) struct ReconnectWait {
    /// `None` once the connection's owner is gone: no reconnection will come.
    signal: Option<ReconnectSignal>,
    /// Completes on the next change a copy of the signal taken at `arm` sees: `true` for a
    /// reconnection, `false` when the owner is gone. The receiver's `changed` is only an
    /// `async fn`, hence the boxed future (its allocation is reused from one `arm` to the next).
    change: ReusableBoxFuture<'static, bool>,
    /// `change` is a live wait (a completed one must not be polled again).
    armed: bool,
}

impl ReconnectWait {
    pub(super) fn new(signal: ReconnectSignal) -> Self {
        Self {
            signal: Some(signal),
            change: ReusableBoxFuture::new(std::future::pending()),
            armed: false,
        }
    }

    /// Forgets the reconnections so far and waits for the next one.
    pub(super) fn arm(&mut self) {
        let Some(signal) = self.signal.as_mut() else {
            return;
        };
        signal.mark_unchanged();
        // A clone has seen what the original has seen.
        let mut seen = signal.clone();
        self.change.set(async move { seen.changed().await.is_ok() });
        self.armed = true;
    }

    /// Ready once the connection was re-established since `arm`; never again until the next
    /// `arm`, and never at all once the connection's owner is gone.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            return Poll::Pending;
        }
        let reconnected = ready!(self.change.poll(cx));
        self.armed = false;
        if reconnected {
            Poll::Ready(())
        } else {
            self.signal = None;
            Poll::Pending
        }
    }
}
