//! Polling until a condition holds: [`wait_for`] and what its probes return ([`Probe`]).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long [`wait_for`] sleeps between two probes.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `probe` every [`POLL_INTERVAL`] until it reports it is done, for at most `timeout`;
/// returns what the last probe found.
///
/// The probe answers with a [`Probe`]: `true`, `Some(value)` or `(Some(value), _)` when done;
/// `false`, `None` or `(None, seen)` to be called again, `seen` describing what it saw. An
/// `Err` means "not yet" too (a server still starting, a leader being elected). When the time
/// is up the error names `what` and quotes the last `seen` or error.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> anyhow::Result<()> {
/// let calls = AtomicU32::new(0);
/// // Done on the third call: the value the probe found is returned.
/// let found = faststream_testing::wait_for("three calls", Duration::from_secs(5), || async {
///     let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
///     anyhow::Ok(((n >= 3).then_some(n), format!("{n} calls")))
/// })
/// .await?;
/// assert_eq!(found, 3);
///
/// // Never done: the error says what was awaited and what was seen last.
/// let error = faststream_testing::wait_for("never", Duration::from_millis(50), || async {
///     anyhow::Ok((None::<()>, "still nothing"))
/// })
/// .await
/// .unwrap_err();
/// assert!(error.to_string().contains("waiting for never; last seen: still nothing"));
/// # Ok(())
/// # }
/// ```
pub async fn wait_for<P, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> anyhow::Result<P::Output>
where
    P: Probe,
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe().await.outcome() {
            Ok(found) => return Ok(found),
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            match seen {
                Some(seen) => {
                    anyhow::bail!(
                        "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
                    )
                }
                None => anyhow::bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What a [`wait_for`] probe returns: done with a value, or not yet (with what it saw).
pub trait Probe {
    /// What [`wait_for`] returns once the probe is done.
    type Output;

    /// `Ok(value)` when done; `Err(seen)` to probe again, `seen` for the timeout's error.
    fn outcome(self) -> Result<Self::Output, Option<String>>;
}

/// Done when `true`.
impl Probe for bool {
    type Output = ();

    fn outcome(self) -> Result<(), Option<String>> {
        if self {
            Ok(())
        } else {
            Err(None)
        }
    }
}

/// Done with the value when `Some`.
impl<T> Probe for Option<T> {
    type Output = T;

    fn outcome(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

/// Done with the value when `Some`; else the second part says what the probe saw.
impl<T, S: Display> Probe for (Option<T>, S) {
    type Output = T;

    fn outcome(self) -> Result<T, Option<String>> {
        let (found, seen) = self;
        found.ok_or_else(|| Some(seen.to_string()))
    }
}

/// An error is "not yet": probed again, and quoted if it was the last.
impl<P: Probe> Probe for anyhow::Result<P> {
    type Output = P::Output;

    fn outcome(self) -> Result<P::Output, Option<String>> {
        match self {
            Ok(probe) => probe.outcome(),
            Err(error) => Err(Some(format!("{error:#}"))),
        }
    }
}
