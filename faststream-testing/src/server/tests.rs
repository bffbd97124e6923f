//! Starts, stops and restarts every nats-server binary found, through raw client connections.

use anyhow::bail;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::*;
use crate::ports::RESERVED_PORT;

fn binaries() -> Vec<ServerBinary> {
    match ServerBinary::discover() {
        Ok(binaries) => binaries,
        Err(error) => panic!("{error:#}"),
    }
}

/// Connects a raw TCP client and returns the parsed `INFO`.
async fn read_info(port: u16) -> anyhow::Result<serde_json::Value> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await??;
    let info = line
        .strip_prefix("INFO ")
        .ok_or_else(|| anyhow!("expected INFO, got {line:?}"))?;
    Ok(serde_json::from_str(info.trim())?)
}

/// Creates a file-backed stream with a raw NATS client and waits for the API reply.
async fn create_stream(port: u16, name: &str) -> anyhow::Result<serde_json::Value> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let config = serde_json::json!({
        "name": name, "subjects": [format!("{name}.>")], "storage": "file",
    })
    .to_string();
    let request = format!(
        "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.harness 1\r\n\
         PUB $JS.API.STREAM.CREATE.{name} _INBOX.harness {}\r\n{config}\r\n",
        config.len()
    );
    reader.get_mut().write_all(request.as_bytes()).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        line.clear();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(remaining, reader.read_line(&mut line)).await??;
        if read == 0 {
            bail!("connection closed");
        }
        if line.starts_with("PING") {
            reader.get_mut().write_all(b"PONG\r\n").await?;
        } else if line.starts_with("-ERR") {
            bail!("server error: {line}");
        } else if line.starts_with("MSG ") {
            let size: usize = line
                .split_whitespace()
                .last()
                .ok_or_else(|| anyhow!("bad MSG line {line:?}"))?
                .parse()?;
            let mut payload = vec![0; size + 2];
            reader.read_exact(&mut payload).await?;
            return Ok(serde_json::from_slice(&payload[..size])?);
        }
    }
}

#[tokio::test]
async fn starts_serves_and_restarts_every_binary() -> anyhow::Result<()> {
    for binary in binaries() {
        let started = Instant::now();
        let mut server = NatsServer::start(&binary).await?;
        let start_time = started.elapsed();
        assert_ne!(server.port(), RESERVED_PORT);
        assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
        assert_eq!(server.binary(), &binary);

        let varz = server.varz().await?;
        assert_eq!(varz["version"], binary.version.as_str(), "{varz}");
        assert_eq!(varz["port"], server.port(), "{varz}");
        let js_store = varz["jetstream"]["config"]["store_dir"]
            .as_str()
            .ok_or_else(|| anyhow!("JetStream not enabled: {varz}"))?;
        assert!(
            Path::new(js_store).starts_with(server.store_dir()),
            "{js_store}"
        );

        let info = read_info(server.port()).await?;
        assert_eq!(info["version"], binary.version.as_str(), "{info}");
        assert_eq!(info["jetstream"], true, "{info}");

        let reply = create_stream(server.port(), "HARNESS").await?;
        assert_eq!(reply["config"]["name"], "HARNESS", "{reply}");

        let (port, monitor_port) = (server.port(), server.monitor_port());
        server.kill().await?;
        assert!(read_info(port).await.is_err(), "still serving after kill");
        assert!(server.varz().await.is_err(), "still monitoring after kill");
        server.kill().await?; // Idempotent.

        let restarted = Instant::now();
        server.restart().await?;
        let restart_time = restarted.elapsed();
        assert_eq!((server.port(), server.monitor_port()), (port, monitor_port));
        let info = read_info(port).await?;
        assert_eq!(info["version"], binary.version.as_str(), "{info}");
        let jsz = server.monitor("jsz").await?;
        assert_eq!(jsz["streams"], 1, "stream lost across restart: {jsz}");

        // Restart while running (kills first).
        server.restart().await?;
        read_info(port).await?;
        println!("{binary}: start {start_time:?}, restart after kill {restart_time:?}");
    }
    Ok(())
}

#[tokio::test]
async fn stops_with_sigterm_and_applies_extra_config() -> anyhow::Result<()> {
    for binary in binaries() {
        let mut server = NatsServer::start_with_config(
            &binary,
            "max_payload: 65536\njetstream { max_memory_store: 64MB }",
        )
        .await?;
        let varz = server.varz().await?;
        assert_eq!(varz["max_payload"], 65536, "{varz}");
        assert_eq!(
            varz["jetstream"]["config"]["max_memory"],
            64 * 1024 * 1024,
            "{varz}"
        );
        assert!(server.store_dir().join("jetstream").is_dir());
        let connz = server.monitor("/connz").await?;
        assert!(connz["num_connections"].is_number(), "{connz}");
        assert!(server.monitor("/no-such-endpoint").await.is_err());

        let stopped = Instant::now();
        server.stop().await?;
        assert!(stopped.elapsed() < STOP_TIMEOUT, "SIGTERM ignored");
        assert!(read_info(server.port()).await.is_err());
        let log = fs::read_to_string(server.log_path())?;
        assert!(log.contains("Server Exiting"), "{log}");
        server.stop().await?; // Idempotent.
        server.restart().await?;
        read_info(server.port()).await?;
    }
    Ok(())
}

#[tokio::test]
async fn reports_startup_failures_with_the_log_tail() -> anyhow::Result<()> {
    for binary in binaries() {
        let started = Instant::now();
        let error = match NatsServer::start_with_config(&binary, "no_such_option {{{").await {
            Ok(_) => bail!("{binary} started with a broken config"),
            Err(error) => format!("{error:#}"),
        };
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "took {:?}",
            started.elapsed()
        );
        assert!(error.contains("did not start"), "{error}");
        assert!(error.contains("exited"), "{error}");
        // The log tail (the server's complaint) and the numbered config are included.
        assert!(error.to_lowercase().contains("error"), "{error}");
        assert!(error.contains("| no_such_option {{{"), "{error}");
    }
    Ok(())
}

#[tokio::test]
async fn drop_kills_the_server_and_removes_the_directory() -> anyhow::Result<()> {
    for binary in binaries() {
        let server = NatsServer::start(&binary).await?;
        let (port, dir) = (server.port(), server.store_dir().to_owned());
        drop(server);
        assert!(read_info(port).await.is_err(), "{binary} still serving");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    Ok(())
}
