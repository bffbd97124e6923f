//! The project's own commands, run with `cargo xtask <command>` (an alias in
//! `.cargo/config.toml`):
//!
//! * `test [-- <cargo test arguments>]`: installs what the suite needs (both nats-server
//!   versions, `faketime`, and `chromium` for the AsyncAPI page's browser tests; cached after
//!   the first run), runs `cargo test --workspace --locked` against both servers, prints the
//!   tests that could not run, and fails if there is any (unless `FASTSTREAM_ALLOW_SKIPS=1`) or
//!   if `cargo test` failed.
//! * `setup`: the installation alone; prints the `NATS_SERVER_BINS` line to export, for running
//!   single tests with plain `cargo test`.
//!
//! A test that needs a server version it cannot have fails, or under the opt-out writes a
//! record to the skip records directory (`faststream_testing::SkipPolicy`); this command points
//! the tests at `target/test-skips/`, empties it first and reads it after.

mod setup;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::Context as _;

/// The opt-out and the records directory, as `faststream_testing` names them.
const ALLOW_SKIPS_ENV: &str = "FASTSTREAM_ALLOW_SKIPS";
const SKIP_RECORDS_DIR_ENV: &str = "FASTSTREAM_SKIP_RECORDS_DIR";
const NATS_SERVER_BINS_ENV: &str = "NATS_SERVER_BINS";

const USAGE: &str = "usage: cargo xtask test [-- <cargo test arguments>]
       cargo xtask setup

test   installs both nats-server versions (Debian's 2.9.10 with apt-get, 2.15.1 from PyPI into
       target/xtask/; cached), faketime and chromium (the AsyncAPI page is rendered in a
       headless browser), then runs `cargo test --workspace --locked` against both servers;
       fails if a test could not run for want of a server version, unless
       FASTSTREAM_ALLOW_SKIPS=1 (then such tests are listed as skipped)
setup  the installation alone; prints `export NATS_SERVER_BINS=...` for plain `cargo test`";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(extra_args(&args[1..])),
        Some("setup") if args.len() == 1 => setup().map(|_| ExitCode::SUCCESS),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            eprintln!("{USAGE}");
            Ok(ExitCode::from(2))
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("xtask: {error:#}");
        ExitCode::FAILURE
    })
}

/// The arguments for `cargo test`: those after `test`, without a leading `--`.
fn extra_args(args: &[String]) -> &[String] {
    match args.first() {
        Some(first) if first == "--" => &args[1..],
        _ => args,
    }
}

/// Installs what is missing; returns the value for `NATS_SERVER_BINS` and prints it.
fn setup() -> anyhow::Result<String> {
    let servers = setup::install(&target_dir().join("xtask"))?;
    for server in [&servers.old, &servers.new] {
        println!(
            "test server: {} ({})",
            server.display(),
            setup::version_of(server)?
        );
    }
    let bins = format!("{}:{}", servers.old.display(), servers.new.display());
    println!("export {NATS_SERVER_BINS_ENV}={bins}");
    Ok(bins)
}

fn test(extra: &[String]) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let bins = setup()?;
    let setup_took = started.elapsed();
    eprintln!("== setup took {:.1} s", setup_took.as_secs_f64());

    let records_dir = target_dir().join("test-skips");
    match std::fs::remove_dir_all(&records_dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("emptying {}", records_dir.display()));
        }
        _ => {}
    }

    let tests_started = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // What `cargo run` told this package about itself is not the tests' business, and build
    // scripts that watch `CARGO_MANIFEST_DIR` would rebuild for it (ring does).
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("CARGO_PKG_")
            || name_text.starts_with("CARGO_MANIFEST_")
            || [
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
            ]
            .contains(&name_text.as_ref())
        {
            command.env_remove(&name);
        }
    }
    let status = command
        .args(["test", "--workspace", "--locked"])
        .args(extra)
        .current_dir(workspace_root())
        .env(NATS_SERVER_BINS_ENV, &bins)
        .env(SKIP_RECORDS_DIR_ENV, &records_dir)
        .status()
        .context("starting cargo test")?;
    let tests_took = tests_started.elapsed();

    let records = skip_records(&records_dir)?;
    let allow_skips = std::env::var(ALLOW_SKIPS_ENV).is_ok_and(|value| {
        !matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "" | "0" | "false" | "no"
        )
    });
    eprintln!();
    eprintln!("== servers: {bins}");
    if records.is_empty() {
        eprintln!("== no skip records: no test lacked the server version it needs");
    } else {
        let verb = if allow_skips { "skipped" } else { "FAILED" };
        eprintln!(
            "== {} test(s) could not run ({verb}; records in {}):",
            records.len(),
            records_dir.display()
        );
        for record in &records {
            eprintln!("   {record}");
        }
        if !allow_skips {
            eprintln!("   (set {ALLOW_SKIPS_ENV}=1 to let them be skipped)");
        }
    }
    eprintln!(
        "== setup took {:.1} s, the tests {:.1} s",
        setup_took.as_secs_f64(),
        tests_took.as_secs_f64()
    );

    if !status.success() {
        eprintln!("== cargo test failed: {status}");
    }
    Ok(ExitCode::from(exit_code(
        status.success(),
        status.code(),
        records.len(),
        allow_skips,
    )))
}

/// The command's exit code: `cargo test`'s when it failed (1 when it has none, killed by a
/// signal), else 1 when a test could not run and skips are not allowed, else 0.
fn exit_code(cargo_ok: bool, cargo_code: Option<i32>, records: usize, allow_skips: bool) -> u8 {
    if !cargo_ok {
        return cargo_code
            .and_then(|code| u8::try_from(code).ok())
            .filter(|&code| code != 0)
            .unwrap_or(1);
    }
    u8::from(records > 0 && !allow_skips)
}

/// The lines of every `*.skip` file in `dir`, sorted; none when it does not exist.
fn skip_records(dir: &Path) -> anyhow::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    let mut records = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "skip") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            records.extend(text.lines().map(str::to_owned));
        }
    }
    records.sort();
    Ok(records)
}

/// The workspace this crate belongs to.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The Cargo target directory this command was built in (the nearest ancestor of its
/// executable holding Cargo's `CACHEDIR.TAG`), else `target/` in the workspace.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fails_on_a_failed_run_or_on_a_skip_without_the_opt_out() {
        assert_eq!(exit_code(true, Some(0), 0, false), 0);
        assert_eq!(exit_code(true, Some(0), 2, false), 1);
        assert_eq!(exit_code(true, Some(0), 2, true), 0);
        // cargo test's own code is forwarded, skips allowed or not.
        assert_eq!(exit_code(false, Some(101), 0, true), 101);
        assert_eq!(exit_code(false, None, 0, false), 1);
    }

    #[test]
    fn reads_every_record_and_nothing_else() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-skips-{}", std::process::id()));
        assert!(skip_records(&dir)?.is_empty(), "no directory, no records");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("b.skip"),
            "b: needs nats-server before 2.11; found none\n",
        )?;
        std::fs::write(
            dir.join("a.skip"),
            "a: needs nats-server 2.11 or later; found none\n",
        )?;
        std::fs::write(dir.join("notes.txt"), "not a record\n")?;
        let records = skip_records(&dir);
        std::fs::remove_dir_all(&dir)?;
        assert_eq!(
            records?,
            [
                "a: needs nats-server 2.11 or later; found none",
                "b: needs nats-server before 2.11; found none"
            ]
        );
        Ok(())
    }

    #[test]
    fn cargo_test_arguments_follow_an_optional_separator() {
        let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(extra_args(&args(&["--", "--test", "it"])), ["--test", "it"]);
        assert_eq!(extra_args(&args(&["--test", "it"])), ["--test", "it"]);
        assert!(extra_args(&[]).is_empty());
    }
}
