//! Free ports on `127.0.0.1`.

use std::net::TcpListener;

use anyhow::Context as _;

/// The port of the long-running server some machines have; never handed out.
pub(crate) const RESERVED_PORT: u16 = 4222;

/// `count` distinct ports that were free a moment ago, none of them 4222.
///
/// Another process may take one before the server binds it; callers retry with fresh ports when
/// the server reports "address already in use".
pub(crate) fn free_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    // Every listener stays open until all are chosen, so the ports differ.
    let mut listeners = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
        let port = listener
            .local_addr()
            .context("reading an ephemeral port")?
            .port();
        listeners.push(listener);
        if port != RESERVED_PORT {
            ports.push(port);
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_ports_but_never_4222() -> anyhow::Result<()> {
        let mut ports = free_ports(6)?;
        assert!(!ports.contains(&RESERVED_PORT));
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
        Ok(())
    }
}
