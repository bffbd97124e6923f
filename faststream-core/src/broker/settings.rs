//! How to reach and authenticate to NATS: URL, timeout, credentials and TLS. Secrets are kept
//! out of `Debug` output and log lines.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_nats::rustls;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{BoxError, Error, Result};

/// Messages a subscription may hold before async-nats drops what arrives, by default (see
/// [`BrokerConfig::subscription_capacity`](crate::BrokerConfig::subscription_capacity);
/// async-nats's own default is 65,536). A watch's consumer lets the server send up to its flow-control window (32 MiB
/// on nats-server 2.9 to 2.15) before it waits for the reader: about 330,000 entries of small
/// values. Fewer slots drop entries whenever a reader falls behind during a catch-up (a view
/// building its map over a million keys did), and every drop re-creates the watch. The channel
/// allocates as it fills, so the room costs nothing unused.
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 1 << 19;

/// A secret string: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How the client proves who it is, besides credentials embedded in the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Auth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    NKeySeed(Secret),
    NKeySeedFile(PathBuf),
    CredentialsFile(PathBuf),
}

/// TLS settings beyond what the URL's `tls://` scheme and the server require.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tls {
    pub(crate) required: bool,
    pub(crate) root_certificates: Vec<PathBuf>,
    pub(crate) client_certificate: Option<(PathBuf, PathBuf)>,
}

impl Tls {
    /// Whether the connection must be TLS: asked for, or implied by a CA or client certificate
    /// (as the `nats` CLI does). Otherwise a server offering no TLS would get the credentials in
    /// the clear from a client that was configured for TLS.
    pub(crate) fn is_required(&self) -> bool {
        self.required || !self.root_certificates.is_empty() || self.client_certificate.is_some()
    }
}

/// Everything needed to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectSettings {
    pub(crate) url: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) name: Option<String>,
    pub(crate) auth: Auth,
    pub(crate) tls: Tls,
    pub(crate) subscription_capacity: usize,
}

impl ConnectSettings {
    pub(crate) fn new(url: String, connect_timeout: Duration) -> Self {
        Self {
            url,
            connect_timeout,
            name: None,
            auth: Auth::None,
            tls: Tls::default(),
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
        }
    }

    /// Reads the variables the `nats` CLI uses: `NATS_URL`, `NATS_USER` + `NATS_PASSWORD`,
    /// `NATS_TOKEN`, `NATS_NKEY` (a seed file), `NATS_CREDS` (a `.creds` file), `NATS_CA`,
    /// `NATS_CERT` + `NATS_KEY`.
    pub(crate) fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        default_url: &str,
        connect_timeout: Duration,
    ) -> Self {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let mut settings = Self::new(
            var("NATS_URL").unwrap_or_else(|| default_url.to_owned()),
            connect_timeout,
        );
        settings.auth = if let Some(path) = var("NATS_CREDS") {
            Auth::CredentialsFile(path.into())
        } else if let Some(path) = var("NATS_NKEY") {
            Auth::NKeySeedFile(path.into())
        } else if let Some(token) = var("NATS_TOKEN") {
            Auth::Token(Secret(token))
        } else if let (Some(user), Some(password)) = (var("NATS_USER"), var("NATS_PASSWORD")) {
            Auth::UserPassword {
                user,
                password: Secret(password),
            }
        } else {
            Auth::None
        };
        if let Some(ca) = var("NATS_CA") {
            settings.tls.root_certificates.push(ca.into());
        }
        if let (Some(cert), Some(key)) = (var("NATS_CERT"), var("NATS_KEY")) {
            settings.tls.client_certificate = Some((cert.into(), key.into()));
        }
        settings
    }

    pub(crate) fn user_and_password(&mut self, user: String, password: String) {
        self.auth = Auth::UserPassword {
            user,
            password: Secret(password),
        };
    }

    pub(crate) fn token(&mut self, token: String) {
        self.auth = Auth::Token(Secret(token));
    }

    pub(crate) fn nkey_seed(&mut self, seed: String) {
        self.auth = Auth::NKeySeed(Secret(seed));
    }

    /// The server URLs without credentials, and the credentials they carried
    /// (`user:password@` or `token@`), which explicit settings override.
    pub(crate) fn servers_and_url_auth(&self) -> (String, Auth) {
        let mut auth = Auth::None;
        let servers = self
            .url
            .split(',')
            .map(|url| {
                let url = url.trim();
                let (scheme, rest) = url.split_at(url.find("://").map_or(0, |at| at + 3));
                let Some((userinfo, host)) = rest.rsplit_once('@') else {
                    return url.to_owned();
                };
                auth = match userinfo.split_once(':') {
                    Some((user, password)) => Auth::UserPassword {
                        user: percent_decode(user),
                        password: Secret(percent_decode(password)),
                    },
                    None => Auth::Token(Secret(percent_decode(userinfo))),
                };
                format!("{scheme}{host}")
            })
            .collect::<Vec<_>>()
            .join(",");
        (servers, auth)
    }

    /// Whether TLS is required, by a setting or by a `tls://` URL.
    pub(crate) fn tls_required(&self) -> bool {
        self.tls.is_required()
            || self
                .url
                .split(',')
                .any(|url| url.trim().to_ascii_lowercase().starts_with("tls://"))
    }

    /// Every server of the comma-separated URL list, without credentials, parsed: async-nats
    /// takes a list of addresses, but not a comma-separated string.
    pub(crate) fn server_addrs(&self) -> Result<Vec<async_nats::ServerAddr>> {
        let (servers, _) = self.servers_and_url_auth();
        servers
            .split(',')
            .filter(|url| !url.is_empty())
            .map(|url| {
                url.parse::<async_nats::ServerAddr>()
                    .map_err(|source| Error::InvalidUrl {
                        url: url.to_owned(),
                        variable: None,
                        source,
                    })
            })
            .collect()
    }

    /// The async-nats options for these settings (files are read here), and the servers to give
    /// them.
    pub(crate) async fn connect_options(
        &self,
    ) -> Result<(async_nats::ConnectOptions, Vec<async_nats::ServerAddr>)> {
        let servers = self.server_addrs()?;
        let mut options =
            async_nats::ConnectOptions::new().subscription_capacity(self.subscription_capacity);
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        let (_, url_auth) = self.servers_and_url_auth();
        let auth = match &self.auth {
            Auth::None => &url_auth,
            explicit => explicit,
        };
        options = match auth {
            Auth::None => options,
            Auth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.0.clone())
            }
            Auth::Token(token) => options.token(token.0.clone()),
            Auth::NKeySeed(seed) => options.nkey(seed.0.clone()),
            Auth::NKeySeedFile(path) => {
                let seed =
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|source| Error::Credentials {
                            kind: "NKey seed",
                            path: path.clone(),
                            source,
                        })?;
                options.nkey(seed.trim().to_owned())
            }
            Auth::CredentialsFile(path) => {
                options
                    .credentials_file(path)
                    .await
                    .map_err(|source| Error::Credentials {
                        kind: "credentials",
                        path: path.clone(),
                        source,
                    })?
            }
        };
        if !self.tls.root_certificates.is_empty() {
            // async-nats's `add_root_certificates` keeps only the last file given, so the roots
            // (and the client certificate) go into one rustls configuration instead.
            options = options.tls_client_config(self.tls.client_config().await?);
        } else if let Some((cert, key)) = &self.tls.client_certificate {
            // No CA given: async-nats trusts the system's roots and presents this certificate.
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.is_required() {
            options = options.require_tls(true);
        }
        Ok((options, servers))
    }
}

impl Tls {
    /// A rustls configuration trusting every root certificate file (each may hold several
    /// certificates), presenting the client certificate if one is set.
    async fn client_config(&self) -> Result<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for path in &self.root_certificates {
            let certificates = read_certificates(path, "root certificate").await?;
            for certificate in certificates {
                roots.add(certificate).map_err(|source| Error::Tls {
                    kind: "root certificate",
                    path: path.clone(),
                    source: Box::new(source),
                })?;
            }
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let Some((cert, key)) = &self.client_certificate else {
            return Ok(builder.with_no_client_auth());
        };
        let chain = read_certificates(cert, "client certificate").await?;
        let key_error = |source: BoxError| Error::Tls {
            kind: "client key",
            path: key.clone(),
            source,
        };
        let pem = tokio::fs::read(key)
            .await
            .map_err(|source| key_error(Box::new(source)))?;
        let private_key =
            PrivateKeyDer::from_pem_slice(&pem).map_err(|source| key_error(Box::new(source)))?;
        builder
            .with_client_auth_cert(chain, private_key)
            .map_err(|source| Error::Tls {
                kind: "client certificate",
                path: cert.clone(),
                source: Box::new(source),
            })
    }
}

/// The certificates in a PEM file; a file with none is an error (it cannot be what was meant).
async fn read_certificates(
    path: &std::path::Path,
    kind: &'static str,
) -> Result<Vec<CertificateDer<'static>>> {
    let error = |source: BoxError| Error::Tls {
        kind,
        path: path.to_owned(),
        source,
    };
    let pem = tokio::fs::read(path)
        .await
        .map_err(|source| error(Box::new(source)))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| error(Box::new(source)))?;
    if certificates.is_empty() {
        return Err(error("the file holds no PEM certificate".into()));
    }
    Ok(certificates)
}

/// Decodes `%XX` escapes in URL user information.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = (bytes[index] == b'%')
            .then(|| text.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                index += 3;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_nats_cli_variables_and_hides_secrets() {
        let vars = |name: &str| {
            match name {
                "NATS_URL" => Some("tls://h:4222"),
                "NATS_USER" => Some("alice"),
                "NATS_PASSWORD" => Some("s3cret"),
                "NATS_CA" => Some("/ca.pem"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let settings = ConnectSettings::from_vars(vars, "nats://x", Duration::from_secs(1));
        assert_eq!(settings.url, "tls://h:4222");
        assert_eq!(settings.tls.root_certificates, [PathBuf::from("/ca.pem")]);
        let debug = format!("{settings:?}");
        assert!(
            debug.contains("alice") && !debug.contains("s3cret"),
            "{debug}"
        );

        assert!(settings.tls_required(), "NATS_CA must require TLS");

        let token = ConnectSettings::from_vars(
            |name| (name == "NATS_TOKEN").then(|| "t0k".to_owned()),
            "nats://x",
            Duration::from_secs(1),
        );
        assert_eq!(token.url, "nats://x");
        assert!(!token.tls_required());
        assert!(!format!("{token:?}").contains("t0k"));
    }

    #[test]
    fn any_tls_option_requires_tls() {
        let plain = ConnectSettings::new("nats://h".into(), Duration::from_secs(1));
        assert!(!plain.tls_required());
        let mut with_ca = plain.clone();
        with_ca.tls.root_certificates.push("/ca.pem".into());
        assert!(with_ca.tls_required());
        let mut with_cert = plain.clone();
        with_cert.tls.client_certificate = Some(("/c.pem".into(), "/k.pem".into()));
        assert!(with_cert.tls_required());
        let cert_from_env = ConnectSettings::from_vars(
            |name| match name {
                "NATS_CERT" => Some("/c.pem".to_owned()),
                "NATS_KEY" => Some("/k.pem".to_owned()),
                _ => None,
            },
            "nats://x",
            Duration::from_secs(1),
        );
        assert!(cert_from_env.tls_required());
        let tls_url = ConnectSettings::new("nats://a, TLS://b".into(), Duration::from_secs(1));
        assert!(tls_url.tls_required());
    }

    #[test]
    fn every_url_of_a_list_is_a_server() {
        let settings = ConnectSettings::new(
            "nats://u:p@a:4222, nats://b:4223,c".into(),
            Duration::from_secs(1),
        );
        let servers = settings.server_addrs().expect("valid URLs");
        let hosts: Vec<_> = servers
            .iter()
            .map(|server| (server.host().to_owned(), server.port()))
            .collect();
        assert_eq!(
            hosts,
            [("a".into(), 4222), ("b".into(), 4223), ("c".into(), 4222)]
        );
        let bad = ConnectSettings::new("nats://a:4222,nats://b:x".into(), Duration::from_secs(1));
        let error = bad.server_addrs().expect_err("an invalid port");
        assert!(
            matches!(&error, Error::InvalidUrl { url, .. } if url == "nats://b:x"),
            "{error:?}"
        );
    }

    #[test]
    fn credentials_in_urls_become_auth() {
        let settings = |url: &str| ConnectSettings::new(url.to_owned(), Duration::from_secs(1));
        let (servers, auth) =
            settings("nats://alice:p%40ss@h1:4222, nats://h2").servers_and_url_auth();
        assert_eq!(servers, "nats://h1:4222,nats://h2");
        assert_eq!(
            auth,
            Auth::UserPassword {
                user: "alice".into(),
                password: Secret("p@ss".into())
            }
        );
        let (servers, auth) = settings("tls://s3cret@h").servers_and_url_auth();
        assert_eq!(servers, "tls://h");
        assert_eq!(auth, Auth::Token(Secret("s3cret".into())));
        assert_eq!(
            settings("h:4222").servers_and_url_auth(),
            ("h:4222".into(), Auth::None)
        );
    }
}
