//! [`Chromium`]: a headless browser for tests of pages that only render with JavaScript.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _};
use tokio::process::Command;

use crate::binary::{is_executable_file, non_empty_env, path_dirs};
use crate::truncate;

/// Environment variable naming the Chromium (or Chrome) executable to use; a bare name is looked
/// up in `PATH`.
pub const CHROMIUM_ENV: &str = "CHROMIUM";

/// Where Debian's `chromium` package installs the browser; tried before `PATH`.
const DEBIAN_CHROMIUM: &str = "/usr/bin/chromium";
/// The names Chromium goes by in `PATH`, in the order tried.
const PATH_NAMES: [&str; 2] = ["chromium", "chromium-browser"];
/// Bound on one browser run; the whole process group is killed past it.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long scripts may run (in the page's virtual time) before the DOM is read.
const VIRTUAL_TIME_BUDGET_MS: u32 = 5000;
/// How much of the browser's stderr an error quotes.
const STDERR_TAIL_LINES: usize = 20;

/// A Chromium executable, run headless once per call: each run gets a fresh profile directory,
/// lets the page's scripts run for 5 s of virtual time, and is killed after 60 s.
///
/// ```no_run
/// use faststream_testing::Chromium;
///
/// #[tokio::test]
/// async fn the_page_renders() -> anyhow::Result<()> {
///     let chromium = Chromium::find()?; // Fails, saying how to install it, when there is none.
///     let dom = chromium.dump_dom("http://127.0.0.1:8080/asyncapi").await?;
///     assert!(dom.contains(r#"data-rendered="true""#));
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chromium {
    path: PathBuf,
}

impl Chromium {
    /// The browser named by `CHROMIUM`, else `/usr/bin/chromium`, else `chromium` or
    /// `chromium-browser` in `PATH`.
    ///
    /// When there is none, the error says how to get it (`apt-get install chromium`, or
    /// `cargo xtask setup`), so a test that needs a browser fails rather than passing unrun.
    pub fn find() -> anyhow::Result<Chromium> {
        let path = locate(
            non_empty_env(CHROMIUM_ENV),
            Path::new(DEBIAN_CHROMIUM),
            &path_dirs(),
        )?;
        Ok(Chromium { path })
    }

    /// The executable this runs.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The DOM of the page at `url` after its scripts ran (`--dump-dom`), as HTML text.
    ///
    /// An error, carrying the last lines of the browser's stderr, when it fails or does not
    /// finish within 60 s.
    pub async fn dump_dom(&self, url: &str) -> anyhow::Result<String> {
        let stdout = self.run(url, vec!["--dump-dom".into()]).await?;
        String::from_utf8(stdout).with_context(|| format!("the DOM of {url} is not UTF-8"))
    }

    /// A PNG screenshot of the page at `url`, in a `width` × `height` window, written to `path`
    /// (replacing any file there).
    ///
    /// An error when the browser fails, does not finish within 60 s, or leaves no non-empty
    /// file at `path`.
    pub async fn screenshot(
        &self,
        url: &str,
        path: &Path,
        width: u32,
        height: u32,
    ) -> anyhow::Result<()> {
        // Removed first, so that the file checked afterwards is this run's.
        match std::fs::remove_file(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(error).with_context(|| format!("removing {}", path.display()));
            }
            _ => {}
        }
        let mut screenshot = OsString::from("--screenshot=");
        screenshot.push(path);
        let window = OsString::from(format!("--window-size={width},{height}"));
        self.run(url, vec![screenshot, window]).await?;
        let size = std::fs::metadata(path)
            .with_context(|| format!("{} wrote no screenshot to {}", self, path.display()))?
            .len();
        ensure!(
            size > 0,
            "{self} left an empty screenshot at {}",
            path.display()
        );
        Ok(())
    }

    /// Runs the browser headless on `url` with `extra` arguments; returns its stdout.
    async fn run(&self, url: &str, extra: Vec<OsString>) -> anyhow::Result<Vec<u8>> {
        // Chromium would take a "URL" starting with `-` for a switch.
        ensure!(!url.starts_with('-'), "not a URL: {url:?}");
        let profile = tempfile::Builder::new()
            .prefix("faststream-chromium-")
            .tempdir()
            .context("creating a profile directory for Chromium")?;
        let mut user_data_dir = OsString::from("--user-data-dir=");
        user_data_dir.push(profile.path());
        let mut command = Command::new(&self.path);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
            ])
            .arg(user_data_dir)
            .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}"))
            .args(extra)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A group of its own: the browser's renderer and helper processes go with it.
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {self}"))?;
        let group = child.id().and_then(|id| i32::try_from(id).ok());
        let output = match tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output()).await {
            Ok(output) => output.with_context(|| format!("waiting for {self}"))?,
            Err(_elapsed) => {
                if let Some(group) = group {
                    // SAFETY: kill(2) with a negative pid signals that process group only; the
                    // group is the browser's own (process_group(0) above).
                    unsafe {
                        libc::kill(-group, libc::SIGKILL);
                    }
                }
                bail!("{self} did not finish rendering {url} within {RUN_TIMEOUT:?}; killed it");
            }
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
            return Err(anyhow!(
                "{self} failed on {url}: {}; last lines of its stderr:\n{}",
                output.status,
                truncate(&tail, 4000)
            ));
        }
        Ok(output.stdout)
    }
}

impl std::fmt::Display for Chromium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chromium ({})", self.path.display())
    }
}

/// The browser: `explicit` (the `CHROMIUM` value) if given, else `debian` if executable, else the
/// first of [`PATH_NAMES`] in `dirs`.
fn locate(explicit: Option<String>, debian: &Path, dirs: &[PathBuf]) -> anyhow::Result<PathBuf> {
    let in_dirs = |name: &str| {
        dirs.iter()
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable_file(candidate))
    };
    if let Some(value) = explicit {
        let value = value.trim();
        let named = Path::new(value);
        let found = if named.components().count() == 1 && !named.has_root() {
            in_dirs(value)
        } else {
            Some(named.to_path_buf()).filter(|path| is_executable_file(path))
        };
        return found.ok_or_else(|| {
            anyhow!("{CHROMIUM_ENV}={value:?} names no executable file (absolute, or in PATH)")
        });
    }
    if is_executable_file(debian) {
        return Ok(debian.to_path_buf());
    }
    PATH_NAMES
        .iter()
        .find_map(|name| in_dirs(name))
        .ok_or_else(|| {
            anyhow!(
                "no Chromium found: {CHROMIUM_ENV} is unset, {} is missing, and neither {} is in \
             PATH. Install Debian's package with `apt-get install chromium` (or run `cargo xtask \
             setup`, which installs it as root), or point {CHROMIUM_ENV} at a Chromium or Chrome \
             executable",
                debian.display(),
                PATH_NAMES.join(" nor ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page whose only visible text is written by its script; the source never spells it.
    const SCRIPTED_PAGE: &str = r#"<!DOCTYPE html>
<html><body><p id="out">static text</p>
<script>document.getElementById("out").textContent = ["written", "by", "script"].join(" ");</script>
</body></html>"#;

    fn scripted_page() -> anyhow::Result<(tempfile::TempDir, String)> {
        let dir = tempfile::tempdir()?;
        let page = dir.path().join("scripted.html");
        std::fs::write(&page, SCRIPTED_PAGE)?;
        let url = format!("file://{}", page.display());
        Ok((dir, url))
    }

    // Needs Chromium: without one, `find` fails the test with the way to install it.
    #[tokio::test]
    async fn the_dumped_dom_holds_what_the_script_wrote() -> anyhow::Result<()> {
        let chromium = Chromium::find()?;
        let (_dir, url) = scripted_page()?;
        let dom = chromium.dump_dom(&url).await?;
        assert!(
            dom.contains("<p id=\"out\">written by script</p>"),
            "the script's text is missing from the DOM:\n{dom}"
        );
        assert!(
            !dom.contains("static text"),
            "the script did not run:\n{dom}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_screenshot_is_a_png_of_the_page() -> anyhow::Result<()> {
        let chromium = Chromium::find()?;
        let (dir, url) = scripted_page()?;
        let png = dir.path().join("shot.png");
        std::fs::write(&png, b"stale")?;
        chromium.screenshot(&url, &png, 400, 300).await?;
        let bytes = std::fs::read(&png)?;
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "not a PNG: {} bytes starting {:?}",
            bytes.len(),
            &bytes[..bytes.len().min(8)]
        );
        Ok(())
    }

    #[test]
    fn without_a_browser_the_error_says_how_to_get_one() {
        let error = match locate(None, Path::new("/nonexistent/chromium"), &[]) {
            Ok(path) => panic!("found {} in no directory", path.display()),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("apt-get install chromium"), "{error}");
        assert!(error.contains("cargo xtask setup"), "{error}");
    }

    #[test]
    fn the_variable_wins_and_must_name_an_executable() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let fake = dir.path().join("my-chrome");
        std::fs::write(&fake, "#!/bin/sh\n")?;
        let debian = Path::new("/nonexistent/chromium");
        let dirs = [dir.path().to_path_buf()];
        // Not executable yet: refused, by path and by name.
        assert!(locate(Some(fake.display().to_string()), debian, &dirs).is_err());
        assert!(locate(Some("my-chrome".into()), debian, &dirs).is_err());
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))?;
        assert_eq!(
            locate(Some(fake.display().to_string()), debian, &dirs)?,
            fake
        );
        assert_eq!(locate(Some("my-chrome".into()), debian, &dirs)?, fake);
        // Without the variable, only the usual names count.
        assert!(locate(None, debian, &dirs).is_err());
        let named = dir.path().join("chromium-browser");
        std::fs::copy(&fake, &named)?;
        assert_eq!(locate(None, debian, &dirs)?, named);
        assert_eq!(
            locate(None, &fake, &dirs)?,
            fake,
            "the Debian path comes first"
        );
        Ok(())
    }
}
