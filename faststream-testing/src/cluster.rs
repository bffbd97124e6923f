//! [`NatsCluster`]: several [`NatsServer`]s on loopback routed into one JetStream cluster.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use crate::ports::free_ports;
use crate::server::unique_server_name;
use crate::{NatsServer, ServerBinary, ServerConfig};

/// How long the cluster gets to report healthy (JetStream meta leader elected, streams current).
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between health probes.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A JetStream cluster of nats-servers on `127.0.0.1`: each node has its own client, monitoring
/// and route ports and its own store directory, and routes to every other node.
///
/// ```no_run
/// use faststream_testing::{NatsCluster, ServerBinary};
///
/// # async fn example(binary: &ServerBinary) -> anyhow::Result<()> {
/// let mut cluster = NatsCluster::start(binary, 3).await?;
/// let urls = cluster.urls(); // Give a client all of them: the first may be the one down.
/// # let _ = urls;
/// // ... create an R3 stream, find its leader's node ...
/// cluster.kill(0).await?;
/// cluster.restart(0).await?; // Same ports and store: it rejoins and catches up.
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes of `binary` and waits until every node reports healthy (its
    /// `/healthz` answers ok, which needs a JetStream meta leader), at most 30 s.
    ///
    /// Node `i` is named `<cluster name>-n<i>` ([`NatsServer::server_name`]).
    pub async fn start(binary: &ServerBinary, size: usize) -> anyhow::Result<NatsCluster> {
        if size == 0 {
            bail!("a cluster needs at least one node");
        }
        let name = unique_server_name();
        // Every node gets the same route list, its own port included: the server skips it.
        let route_ports = free_ports(size)?;
        let mut nodes = Vec::with_capacity(size);
        for (index, &route_port) in route_ports.iter().enumerate() {
            let config = ServerConfig::new()
                .server_name(format!("{name}-n{index}"))
                .cluster(name.as_str(), route_port, &route_ports);
            let node = NatsServer::start_with(binary, &config)
                .await
                .with_context(|| format!("starting cluster node {index}"))?;
            nodes.push(node);
        }
        let cluster = NatsCluster { nodes };
        for index in 0..size {
            cluster.wait_healthy(index).await?;
        }
        Ok(cluster)
    }

    /// Node `index`.
    ///
    /// # Panics
    ///
    /// If `index` is not below the cluster's size, like slice indexing.
    pub fn node(&self, index: usize) -> &NatsServer {
        &self.nodes[index]
    }

    /// Every node, in start order.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// The index of the node whose [`NatsServer::server_name`] is `server_name`, e.g. a stream's
    /// leader as named in its info.
    pub fn node_named(&self, server_name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| node.server_name() == server_name)
    }

    /// Every node's client URL, `nats://127.0.0.1:PORT`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Kills node `index` with `SIGKILL` (see [`NatsServer::kill`]).
    pub async fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        self.node_mut(index)?.kill().await
    }

    /// Restarts node `index` on its ports and store (see [`NatsServer::restart`]) and waits until
    /// it reports healthy again, at most 30 s.
    pub async fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.node_mut(index)?.restart().await?;
        self.wait_healthy(index).await
    }

    fn node_mut(&mut self, index: usize) -> anyhow::Result<&mut NatsServer> {
        let size = self.nodes.len();
        self.nodes
            .get_mut(index)
            .ok_or_else(|| anyhow!("no node {index} in a cluster of {size}"))
    }

    /// Polls node `index`'s `/healthz` until it answers ok.
    async fn wait_healthy(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            // Not healthy yet is an HTTP 503, which `monitor` reports as an error.
            let last = match node.monitor("/healthz").await {
                Ok(health) if health["status"] == "ok" => return Ok(()),
                Ok(health) => health.to_string(),
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "cluster node {index} ({}) not healthy within {HEALTHY_TIMEOUT:?}: {last}",
                    node.server_name()
                );
            }
            tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::{self, stream};
    use async_nats::ServerAddr;

    use super::*;

    /// How long a JetStream call may be retried while the cluster elects leaders.
    const ELECTION_TIMEOUT: Duration = Duration::from_secs(30);

    /// Retries `call` until it succeeds or [`ELECTION_TIMEOUT`] passes.
    async fn retry<T, E, F, Fut>(what: &str, mut call: F) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let deadline = Instant::now() + ELECTION_TIMEOUT;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(error) if Instant::now() >= deadline => bail!("{what}: {error}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    #[tokio::test]
    async fn r3_stream_survives_its_leader_being_killed_and_restarted() -> anyhow::Result<()> {
        for binary in ServerBinary::discover()? {
            let mut cluster = NatsCluster::start(&binary, 3).await?;
            let addresses = cluster
                .urls()
                .iter()
                .map(|url| url.parse::<ServerAddr>())
                .collect::<Result<Vec<_>, _>>()?;
            let client = async_nats::connect(addresses).await?;
            let js = jetstream::new(client);
            let config = stream::Config {
                name: "R3".into(),
                subjects: vec!["r3.>".into()],
                num_replicas: 3,
                ..Default::default()
            };
            let mut stream = retry("creating the R3 stream", || {
                js.get_or_create_stream(config.clone())
            })
            .await?;
            retry("publishing", || async {
                js.publish("r3.a", "one".into()).await?.await
            })
            .await?;

            let info = stream.info().await?;
            assert_eq!(info.config.num_replicas, 3, "{binary}");
            let leader = info
                .cluster
                .as_ref()
                .and_then(|cluster| cluster.leader.clone())
                .ok_or_else(|| anyhow!("{binary}: stream has no leader"))?;
            let leader = cluster
                .node_named(&leader)
                .ok_or_else(|| anyhow!("{binary}: leader {leader} is not a node"))?;

            cluster.kill(leader).await?;
            retry("publishing without the old leader", || async {
                js.publish("r3.b", "two".into()).await?.await
            })
            .await?;
            cluster.restart(leader).await?;

            // A fresh look-up: the info comes from whichever node leads the stream now.
            let messages = retry("reading stream info", || async {
                let stream = js.get_stream("R3").await?;
                anyhow::Ok(stream.cached_info().state.messages)
            })
            .await?;
            assert_eq!(messages, 2, "{binary}");
            let jsz = cluster.node(leader).monitor("/jsz").await?;
            assert_eq!(jsz["streams"], 1, "{binary}: {jsz}");
        }
        Ok(())
    }
}
