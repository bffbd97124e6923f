//! Authentication and TLS against servers configured to require them: user/password, token,
//! NKey, `.creds` file and TLS with a custom CA, from `NatsBroker` options and from the URL.
//! Wrong credentials fail at once with one clear error; no secret reaches a log line or `Debug`.
//!
//! Its own test binary: it installs the process-wide `tracing` subscriber that captures every
//! log line, to look for secrets in them.

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use faststream_core::error::chain;
use faststream_core::{BrokerConfig, Error, NatsBroker};
use faststream_testing::NatsServer;

/// Every nats-server binary to test against (see `ServerBinary::discover`).
fn servers() -> Vec<faststream_testing::ServerBinary> {
    match faststream_testing::ServerBinary::discover() {
        Ok(binaries) => binaries,
        Err(error) => panic!("no nats-server to test against: {error:#}"),
    }
}

const PASSWORD: &str = "pa55-w0rd-secret";
const TOKEN: &str = "t0ken-secret-value";

/// Everything logged by this test binary, at every level, to check for leaked secrets.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        let _ = tracing_subscriber::fmt()
            .with_env_filter("trace")
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .try_init();
        logs
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut logs) = self.0.lock() {
            logs.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_not_logged(secret: &str) {
    let logs = captured_logs();
    let logs = logs
        .lock()
        .map(|logs| String::from_utf8_lossy(&logs).into_owned());
    let logs = logs.unwrap_or_default();
    assert!(!logs.is_empty(), "nothing was captured");
    assert!(!logs.contains(secret), "a secret was logged");
}

/// Connects, makes a bucket and writes to it: the connection really works.
async fn use_broker(config: &BrokerConfig) -> anyhow::Result<()> {
    let broker = NatsBroker::connect(config.clone()).await?;
    let store = broker.key_value("secure").await?;
    store.put("k", "v".into()).await?;
    Ok(())
}

/// Connecting with wrong credentials: one attempt, an error that says why, no secret in it.
async fn assert_refused(config: BrokerConfig, secret: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let error = NatsBroker::connect(config)
        .await
        .err()
        .context("connected with bad credentials")?;
    let Error::Connect { attempts, .. } = &error else {
        anyhow::bail!("unexpected error {error:?}");
    };
    assert_eq!(*attempts, 1, "retried: {error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = chain(&error);
    assert!(text.contains("authorization violation"), "{text}");
    assert!(!text.contains(secret) && !format!("{error:?}").contains(secret));
    Ok(())
}

/// A server requiring TLS, with this certificate and key.
async fn start_tls_server(
    binary: &faststream_testing::ServerBinary,
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<NatsServer> {
    let config = format!(
        "tls {{ cert_file: \"{}\", key_file: \"{}\" }}",
        cert_file.display(),
        key_file.display()
    );
    NatsServer::start_with_config(binary, &config).await
}

#[tokio::test]
async fn user_and_password() -> anyhow::Result<()> {
    captured_logs();
    for binary in servers() {
        let config = format!("authorization {{ user: alice, password: \"{PASSWORD}\" }}");
        let server = NatsServer::start_with_config(&binary, &config).await?;
        let with_options = BrokerConfig::new(server.url()).user_and_password("alice", PASSWORD);
        assert!(!format!("{with_options:?}").contains(PASSWORD));
        use_broker(&with_options).await?;
        let in_url = server
            .url()
            .replace("nats://", &format!("nats://alice:{PASSWORD}@"));
        let from_url = BrokerConfig::new(in_url);
        assert!(!format!("{from_url:?}").contains(PASSWORD));
        use_broker(&from_url).await?;
        assert_refused(
            BrokerConfig::new(server.url()).user_and_password("alice", "wrong-password"),
            "wrong-password",
        )
        .await?;
        assert_refused(BrokerConfig::new(server.url()), PASSWORD).await?;
    }
    assert_not_logged(PASSWORD);
    Ok(())
}

#[tokio::test]
async fn token() -> anyhow::Result<()> {
    captured_logs();
    for binary in servers() {
        let config = format!("authorization {{ token: \"{TOKEN}\" }}");
        let server = NatsServer::start_with_config(&binary, &config).await?;
        use_broker(&BrokerConfig::new(server.url()).token(TOKEN)).await?;
        let in_url = server.url().replace("nats://", &format!("nats://{TOKEN}@"));
        use_broker(&BrokerConfig::new(in_url)).await?;
        assert_refused(
            BrokerConfig::new(server.url()).token("not-the-token"),
            "not-the-token",
        )
        .await?;
    }
    assert_not_logged(TOKEN);
    Ok(())
}

#[tokio::test]
async fn nkey() -> anyhow::Result<()> {
    captured_logs();
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed()?;
    for binary in servers() {
        let config = format!(
            "authorization {{ users: [ {{ nkey: {} }} ] }}",
            user.public_key()
        );
        let server = NatsServer::start_with_config(&binary, &config).await?;
        let broker = BrokerConfig::new(server.url()).nkey(seed.clone());
        assert!(!format!("{broker:?}").contains(&seed));
        use_broker(&broker).await?;
        let stranger = nkeys::KeyPair::new_user().seed()?;
        assert_refused(
            BrokerConfig::new(server.url()).nkey(stranger.clone()),
            &stranger,
        )
        .await?;
    }
    assert_not_logged(&seed);
    Ok(())
}

/// A NATS JWT: `header.claims.signature`, signed by `signer`.
fn jwt(signer: &nkeys::KeyPair, subject: &str, nats: serde_json::Value) -> anyhow::Result<String> {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = engine.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("JTI{subject}"),
        "iat": 1_700_000_000,
        "iss": signer.public_key(),
        "name": "test",
        "sub": subject,
        "nats": nats,
    });
    let claims = engine.encode(serde_json::to_vec(&claims)?);
    let signature = signer.sign(format!("{header}.{claims}").as_bytes())?;
    Ok(format!("{header}.{claims}.{}", engine.encode(signature)))
}

#[tokio::test]
async fn credentials_file() -> anyhow::Result<()> {
    captured_logs();
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        serde_json::json!({"type": "operator", "version": 2}),
    )?;
    let unlimited = serde_json::json!({
        "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
        "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
    });
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
    )?;
    let user_jwt = jwt(
        &account,
        &user.public_key(),
        serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2}),
    )?;
    // JetStream in operator mode needs a system account.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        serde_json::json!({"limits": {"subs": -1, "data": -1, "payload": -1, "conn": -1},
            "type": "account", "version": 2}),
    )?;
    let seed = user.seed()?;
    let dir = std::env::temp_dir().join(format!("faststream-creds-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let creds = dir.join("user.creds");
    write_creds(&creds, &user_jwt, &seed)?;

    for binary in servers() {
        let config = format!(
            "operator: \"{operator_jwt}\"\nsystem_account: {}\nresolver: MEMORY\n\
             resolver_preload: {{ {}: \"{account_jwt}\", {}: \"{system_jwt}\" }}\n",
            system.public_key(),
            account.public_key(),
            system.public_key()
        );
        let server = NatsServer::start_with_config(&binary, &config).await?;
        let broker =
            NatsBroker::connect(BrokerConfig::new(server.url()).credentials_file(&creds)).await?;
        broker.client()?.flush().await?;
        let missing = BrokerConfig::new(server.url()).credentials_file(dir.join("absent.creds"));
        let error = NatsBroker::connect(missing)
            .await
            .err()
            .context("connected without creds")?;
        assert!(
            matches!(&error, Error::Credentials { path, .. } if path.ends_with("absent.creds")),
            "{error:?}"
        );
        assert!(error.to_string().contains("absent.creds"), "{error}");
        assert_refused(BrokerConfig::new(server.url()), &seed).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_not_logged(&seed);
    Ok(())
}

fn write_creds(path: &Path, jwt: &str, seed: &str) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(path)?;
    write!(
        file,
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )?;
    Ok(())
}

#[tokio::test]
async fn tls_with_a_custom_ca() -> anyhow::Result<()> {
    captured_logs();
    let dir = std::env::temp_dir().join(format!("faststream-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "faststream test CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let server_key = rcgen::KeyPair::generate()?;
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_cert = server_params.signed_by(&server_key, &issuer)?;
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&ca_file, ca.pem())?;
    std::fs::write(&cert_file, server_cert.pem())?;
    std::fs::write(&key_file, server_key.serialize_pem())?;

    for binary in servers() {
        let server = start_tls_server(&binary, &cert_file, &key_file).await?;
        let trusted = BrokerConfig::new(server.url())
            .tls_root_certificate(&ca_file)
            .require_tls(true);
        use_broker(&trusted).await?;
        let tls_url = server.url().replace("nats://", "tls://");
        use_broker(&BrokerConfig::new(tls_url.clone()).tls_root_certificate(&ca_file)).await?;

        // Without the CA the server's certificate is not trusted: one attempt, a TLS error.
        let error =
            NatsBroker::connect(BrokerConfig::new(tls_url).connect_timeout(Duration::from_secs(5)))
                .await
                .err()
                .context("connected without trusting the CA")?;
        let Error::Connect { attempts, .. } = &error else {
            anyhow::bail!("unexpected error {error:?}");
        };
        assert_eq!(*attempts, 1, "{error}");
        let text = chain(&error);
        assert!(text.to_lowercase().contains("tls"), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A CA (its PEM), and a certificate for `localhost`/`127.0.0.1` signed by it (PEM, key PEM).
fn ca_and_server_certificate(name: &str) -> anyhow::Result<(String, String, String)> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let ca = ca_params.self_signed(&ca_key)?;
    let server_key = rcgen::KeyPair::generate()?;
    let server_params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_cert = server_params.signed_by(&server_key, &issuer)?;
    Ok((ca.pem(), server_cert.pem(), server_key.serialize_pem()))
}

/// A fake NATS server on `listener`: sends an INFO offering no TLS and asking for
/// authentication, then returns every byte the client sent until it closed the connection or
/// `within` passed.
async fn capture_what_the_client_sends(
    listener: tokio::net::TcpListener,
    within: Duration,
) -> anyhow::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let port = listener.local_addr()?.port();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(within, async {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let info = format!(
                "INFO {{\"server_id\":\"FAKE\",\"server_name\":\"fake\",\"version\":\"2.10.0\",\
                 \"go\":\"go1.21\",\"host\":\"127.0.0.1\",\"port\":{port},\"headers\":true,\
                 \"max_payload\":1048576,\"proto\":1,\"auth_required\":true}}\r\n"
            );
            if socket.write_all(info.as_bytes()).await.is_err() {
                continue;
            }
            let mut buffer = [0u8; 4096];
            while let Ok(read) = socket.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
                received.extend_from_slice(&buffer[..read]);
            }
        }
    })
    .await;
    Ok(received)
}

#[tokio::test]
async fn a_tls_option_requires_tls_and_never_sends_the_password_in_the_clear() -> anyhow::Result<()>
{
    captured_logs();
    let dir = std::env::temp_dir().join(format!("faststream-tls-req-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (ca, _, _) = ca_and_server_certificate("faststream test CA")?;
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca)?;

    // A fake server that offers no TLS records what the client sends.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("nats://127.0.0.1:{}", listener.local_addr()?.port());
    let capture = tokio::spawn(capture_what_the_client_sends(
        listener,
        Duration::from_secs(3),
    ));
    let broker = BrokerConfig::new(url)
        .user_and_password("alice", PASSWORD)
        .tls_root_certificate(&ca_file)
        .connect_timeout(Duration::from_secs(2));
    let connected = NatsBroker::connect(broker).await;
    let sent = capture.await??;
    assert!(
        !String::from_utf8_lossy(&sent).contains(PASSWORD),
        "the password was sent in the clear: {:?}",
        String::from_utf8_lossy(&sent)
    );
    assert!(connected.is_err(), "connected without TLS");

    // A real server without TLS: refused, with an error naming TLS, at once.
    for binary in servers() {
        let config = format!("authorization {{ user: alice, password: \"{PASSWORD}\" }}");
        let server = NatsServer::start_with_config(&binary, &config).await?;
        let started = std::time::Instant::now();
        let error = NatsBroker::connect(
            BrokerConfig::new(server.url())
                .user_and_password("alice", PASSWORD)
                .tls_root_certificate(&ca_file)
                .connect_timeout(Duration::from_secs(5)),
        )
        .await
        .err()
        .with_context(|| format!("{binary}: connected in plaintext with a CA given"))?;
        let text = chain(&error);
        println!("{binary}: {text}");
        assert!(text.contains("TLS"), "{binary}: {text}");
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{binary}: took {:?}",
            started.elapsed()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_not_logged(PASSWORD);
    Ok(())
}

#[tokio::test]
async fn every_root_certificate_given_is_trusted() -> anyhow::Result<()> {
    captured_logs();
    let dir = std::env::temp_dir().join(format!("faststream-tls-cas-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (first_ca, server_cert, server_key) = ca_and_server_certificate("first CA")?;
    let (second_ca, _, _) = ca_and_server_certificate("second CA")?;
    let (first_file, second_file, cert_file, key_file) = (
        dir.join("first-ca.pem"),
        dir.join("second-ca.pem"),
        dir.join("server.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&first_file, first_ca)?;
    std::fs::write(&second_file, second_ca)?;
    std::fs::write(&cert_file, server_cert)?;
    std::fs::write(&key_file, server_key)?;
    for binary in servers() {
        let server = start_tls_server(&binary, &cert_file, &key_file).await?;
        // The server's certificate is signed by the first CA given, not the last.
        let broker = BrokerConfig::new(server.url())
            .tls_root_certificate(&first_file)
            .tls_root_certificate(&second_file)
            .connect_timeout(Duration::from_secs(5));
        use_broker(&broker)
            .await
            .with_context(|| format!("{binary}: the first of two CAs is not trusted"))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
