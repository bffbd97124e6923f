//! The lifecycle stages a hook can run at, named once for the attributes and the runtime.

use std::fmt;

/// The four moments of an app's life a hook can run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookStage {
    /// Before connecting to NATS.
    OnStartup,
    /// After every watch has started.
    AfterStartup,
    /// On the shutdown signal, once the watches took no new entry and the calls in flight
    /// finished; the connection is still up.
    OnShutdown,
    /// After the connection was drained.
    AfterShutdown,
}

impl HookStage {
    /// The attribute's name: `on_startup`, `after_startup`, `on_shutdown`, `after_shutdown`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookStage::OnStartup => "on_startup",
            HookStage::AfterStartup => "after_startup",
            HookStage::OnShutdown => "on_shutdown",
            HookStage::AfterShutdown => "after_shutdown",
        }
    }

    /// The variant's name, as generated code spells it (`HookStage::OnStartup`).
    pub fn variant_name(self) -> &'static str {
        match self {
            HookStage::OnStartup => "OnStartup",
            HookStage::AfterStartup => "AfterStartup",
            HookStage::OnShutdown => "OnShutdown",
            HookStage::AfterShutdown => "AfterShutdown",
        }
    }
}

impl fmt::Display for HookStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
