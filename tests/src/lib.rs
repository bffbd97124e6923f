//! Integration tests live in it/ (one test binary) and own_process/ (tests that need a process of their own); the macros' UI tests are the `ui-tests` package in ui/.

use std::collections::HashMap;

use anyhow::Context as _;

/// The `--name value` arguments of a member process (`src/bin/`), taken one by one by name.
#[derive(Debug)]
pub struct Arguments(HashMap<String, String>);

impl Arguments {
    /// Reads the process's arguments: `--name value` pairs.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut arguments = HashMap::new();
        let mut args = std::env::args().skip(1);
        while let Some(name) = args.next() {
            let name = name
                .strip_prefix("--")
                .with_context(|| format!("expected --name, got `{name}`"))?
                .to_owned();
            let value = args
                .next()
                .with_context(|| format!("--{name} needs a value"))?;
            arguments.insert(name, value);
        }
        Ok(Self(arguments))
    }

    /// The value of `--name`, which must be given.
    pub fn take(&mut self, name: &str) -> anyhow::Result<String> {
        self.0
            .remove(name)
            .with_context(|| format!("missing --{name}"))
    }

    /// Fails on any argument not taken.
    pub fn finish(self) -> anyhow::Result<()> {
        anyhow::ensure!(self.0.is_empty(), "unknown arguments: {:?}", self.0);
        Ok(())
    }
}
