//! `TcpProxy`: forwards TCP connections to a server and can cut them all at once, to drop a
//! client's connection without restarting the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy on an ephemeral `127.0.0.1` port in front of a server's client port.
///
/// ```no_run
/// use faststream_testing::{NatsServer, TcpProxy};
///
/// # async fn example(server: NatsServer) -> anyhow::Result<()> {
/// let proxy = TcpProxy::start(server.port()).await?;
/// // connect a client to proxy.url(), then:
/// proxy.cut(); // every client connection drops; the client reconnects through the proxy
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct TcpProxy {
    address: SocketAddr,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    refusing: Arc<AtomicBool>,
}

impl TcpProxy {
    /// Starts forwarding to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let address = listener.local_addr()?;
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let tracked = Arc::clone(&connections);
        let refusing = Arc::new(AtomicBool::new(false));
        let refuse = Arc::clone(&refusing);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refuse.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let forward = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                if let Ok(mut connections) = tracked.lock() {
                    connections.retain(|connection| !connection.is_finished());
                    connections.push(forward);
                }
            }
        });
        Ok(Self {
            address,
            accept,
            connections,
            refusing,
        })
    }

    /// `nats://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("nats://{}", self.address)
    }

    /// Drops every connection open through the proxy; new ones are accepted as before.
    pub fn cut(&self) {
        if let Ok(mut connections) = self.connections.lock() {
            for connection in connections.drain(..) {
                connection.abort();
            }
        }
    }
}

impl TcpProxy {
    /// While `true`, new connections are closed as soon as they are accepted: with
    /// [`cut`](Self::cut), an outage of the server as clients see it, for as long as the test wants.
    pub fn set_refusing(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
