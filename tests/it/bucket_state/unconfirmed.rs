//! A catch-up nothing can confirm: the server refuses the app's user the lookup of a bucket's
//! head (`$JS.API.STREAM.MSG.GET` and `$JS.API.DIRECT.GET`), the request that confirms a
//! catch-up. A watch then stays catching up, and catches up once the lookup is allowed again
//! (the server's permissions changed while it runs: a config reload on SIGHUP); a view's
//! catch-up is bounded by its timeout instead of waiting forever.

use std::path::PathBuf;

use super::*;
use faststream_core::kv::KvViewOptions;
use faststream_core::{BrokerConfig, NatsBroker};
use faststream_testing::{NatsServer, ServerConfig};

/// The user's password, and the user's permissions with head lookups refused.
const USER: &str = "app";
const REFUSED: &str = r#"authorization { users = [ { user: "app", password: "app", permissions: {
    publish: { deny: ["$JS.API.STREAM.MSG.GET.>", "$JS.API.DIRECT.GET.>"] } } } ] }"#;
const ALLOWED: &str = r#"authorization { users = [ { user: "app", password: "app" } ] }"#;

/// The watch's timeout, which bounds each head lookup: a refused request is not answered.
const WATCH_TIMEOUT: Duration = Duration::from_millis(500);

/// A server whose `authorization` block is a file of its own, which the test rewrites and the
/// server reloads (SIGHUP) while it runs; removed when dropped.
struct Authorization {
    dir: PathBuf,
}

impl Authorization {
    /// The file, refusing head lookups.
    fn refusing() -> anyhow::Result<Self> {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "faststream-authorization-{}-{unique}",
            std::process::id()
        ));
        std::fs::create_dir(&dir)?;
        let authorization = Self { dir };
        std::fs::write(authorization.file(), REFUSED)?;
        Ok(authorization)
    }

    fn file(&self) -> PathBuf {
        self.dir.join("authorization.conf")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("nats-server.pid")
    }

    /// Starts `binary` including the file. The server takes an `include` relative to its own
    /// config file, which the harness writes in a directory of its own beside this one.
    async fn start(&self, binary: &faststream_testing::ServerBinary) -> anyhow::Result<NatsServer> {
        let name = self
            .dir
            .file_name()
            .and_then(|name| name.to_str())
            .context("a UTF-8 directory name")?;
        let config = ServerConfig::new().extra(&format!(
            "pid_file: \"{}\"\ninclude \"../{name}/authorization.conf\"",
            self.pid_file().display()
        ));
        let server = NatsServer::start_with(binary, &config).await?;
        let config_dir = server.store_dir().parent().and_then(|dir| dir.parent());
        anyhow::ensure!(
            config_dir == self.dir.parent(),
            "the server's directory is not beside {}",
            self.dir.display()
        );
        Ok(server)
    }

    /// Allows head lookups: rewrites the file and has the server reload it.
    fn allow(&self) -> anyhow::Result<()> {
        std::fs::write(self.file(), ALLOWED)?;
        let pid: libc::pid_t = std::fs::read_to_string(self.pid_file())?.trim().parse()?;
        // SAFETY: a signal to the server this test started, by its pid file.
        let sent = unsafe { libc::kill(pid, libc::SIGHUP) };
        anyhow::ensure!(sent == 0, "SIGHUP to nats-server {pid} failed");
        Ok(())
    }
}

impl Drop for Authorization {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A broker of the user, with bucket `heads` holding five keys.
async fn user_with_five_keys(server: &NatsServer) -> anyhow::Result<NatsBroker> {
    let broker =
        NatsBroker::connect(BrokerConfig::new(server.url()).user_and_password(USER, USER)).await?;
    let store = broker.key_value("heads").await?;
    for key in 0..5 {
        store.put(format!("k.{key}"), "true".into()).await?;
    }
    Ok(broker)
}

/// Runs `test` against a server of each version refusing head lookups.
async fn on_each_refusing_server<F, Fut>(test: F) -> anyhow::Result<()>
where
    F: Fn(NatsServer, Authorization) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    faststream_testing::init_test_logging();
    for binary in crate::common::servers() {
        let authorization = Authorization::refusing()?;
        let server = authorization.start(&binary).await?;
        test(server, authorization)
            .await
            .with_context(|| format!("on nats-server {}", binary.version))?;
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_head_lookup_is_not_a_catch_up_and_is_tried_again() -> anyhow::Result<()> {
    on_each_refusing_server(|server, authorization| async move {
        let broker = user_with_five_keys(&server).await?;
        let options = KvWatch::new("heads").timeout(WATCH_TIMEOUT);
        let mut watcher = broker.kv_watch("k.*", options).await?;

        // Every entry arrives, and nothing confirms they were all: with the lookup refused, the
        // old code reported the catch-up at the first failure (0.5 s). 3 s is several lookups.
        let refused_until = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut entries = 0;
        while let Ok(event) = tokio::time::timeout_at(refused_until, watcher.next_event()).await {
            match event {
                Some(WatchEvent::Entry(_)) => entries += 1,
                other => anyhow::bail!("{other:?} although the head could not be looked up"),
            }
        }
        assert_eq!(entries, 5);
        assert!(!watcher.is_caught_up());
        assert!(!watcher.status().is_caught_up());

        // Allowed again: the next lookup (at most 5 s after the last) confirms the catch-up.
        authorization.allow()?;
        let allowed = std::time::Instant::now();
        let event = tokio::time::timeout(EVENT_TIMEOUT, watcher.next_event())
            .await
            .context("not caught up once the lookup was allowed")?;
        let caught_up_after = allowed.elapsed();
        println!(
            "{}: caught up {caught_up_after:?} after head lookups were allowed",
            server.binary()
        );
        assert!(
            matches!(event, Some(WatchEvent::CaughtUp(catch_up)) if catch_up.entries == 5),
            "{event:?}"
        );
        assert!(watcher.status().is_caught_up());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_view_that_cannot_catch_up_fails_at_its_timeout() -> anyhow::Result<()> {
    on_each_refusing_server(|server, _authorization| async move {
        let broker = user_with_five_keys(&server).await?;
        let catch_up_timeout = Duration::from_secs(2);
        let options = KvViewOptions::new("heads")
            .timeout(WATCH_TIMEOUT)
            .catch_up_timeout(catch_up_timeout);
        let asked = std::time::Instant::now();
        // The old code waited for ever: the test's own bound ends it.
        let view = tokio::time::timeout(EVENT_TIMEOUT, broker.kv_view_raw(options.clone(), "k.*"))
            .await
            .context("kv_view did not return")?;
        let failed_after = asked.elapsed();
        let error = match view {
            Ok(view) => anyhow::bail!("caught up although nothing confirmed it: {view:?}"),
            Err(error) => error,
        };
        println!("{}: kv_view failed after {failed_after:?}", server.binary());
        let behind = "view of `k.*` in bucket `heads`: read what the server counted as pending, \
                      but the lookup of the bucket's head that would confirm it was all keeps \
                      failing (logged as warnings) (CatchingUp)";
        assert!(
            matches!(&error, Error::CatchUpTimeout { timeout, behind: lines }
                if *timeout == catch_up_timeout && lines == &[behind]),
            "{error:?}"
        );
        // Measured 2.0 s after starting the view; the view's start (bucket lookup, consumer)
        // takes a few ms, and 3 s more are left for a loaded machine.
        assert!(
            failed_after >= catch_up_timeout
                && failed_after < catch_up_timeout + Duration::from_secs(3),
            "failed after {failed_after:?}"
        );

        // An app declaring the view fails its start-up at the view's own timeout.
        let app = App::new(BrokerConfig::new(server.url()).user_and_password(USER, USER))
            .without_registered()
            .with_kv_view::<bool>(options, "k.*");
        let error = crate::common::startup_error(app).await?;
        assert!(
            matches!(&error, Error::CatchUpTimeout { timeout, behind: lines }
                if *timeout == catch_up_timeout
                    && lines.len() == 1
                    && lines[0].starts_with("view `KvView<bool>` (`k.*` in bucket `heads`): read what")),
            "{error:?}"
        );
        Ok(())
    })
    .await
}
