//! Test harness: real `nats-server` processes (JetStream on an ephemeral port, temporary
//! store) that tests can kill and restart, and a TCP proxy that can cut client connections.
//! Enabled by the `testing` feature.

mod proxy;
mod server;

pub use proxy::TcpProxy;
pub use server::*;
