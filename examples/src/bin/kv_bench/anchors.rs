//! The FastStream anchor scripts of `examples/bench`, run with `python3` beside the Rust sides
//! when `--python` is given.

use std::process::Stdio;

use serde_json::Value;

/// Runs an anchor script of `examples/bench` with `python3` and returns the JSON line it
/// printed; `None` (with a note on stderr) if FastStream is not installed or the script failed.
pub async fn python(script: &str, args: &[&str]) -> Option<Value> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/bench");
    let output = tokio::process::Command::new("python3")
        .arg(format!("{dir}/{script}"))
        .args(args)
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    if !output.status.success() {
        eprintln!("(skipped {script} {args:?}: it failed; `pip install faststream[nats]==0.7.8`?)");
        return None;
    }
    serde_json::from_slice(output.stdout.trim_ascii()).ok()
}
