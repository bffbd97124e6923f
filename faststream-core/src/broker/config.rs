//! [`BrokerConfig`]: how to reach and authenticate to NATS, as a value, separate from the
//! [`NatsBroker`](super::NatsBroker) handle (as async-nats separates `ConnectOptions` from
//! `Client`). It is complete before anything shares it, and readable without connecting.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::settings::{Auth, ConnectSettings};
use crate::error::{Error, Result};

/// The URL used when `NATS_URL` is not set.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The variable [`BrokerConfig::from_env`] reads the server URLs from.
const URL_VARIABLE: &str = "NATS_URL";

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to connect to NATS: the servers, the credentials, TLS and the connect timeout. Give it to
/// [`App::new`](crate::App::new), or connect a broker yourself with
/// [`NatsBroker::connect`](crate::NatsBroker::connect).
///
/// ```
/// use std::time::Duration;
/// use faststream_core::BrokerConfig;
///
/// let config = BrokerConfig::new("nats://alice:s3cret@nats-1:4222,nats://nats-2:4222")
///     .connection_name("billing")
///     .connect_timeout(Duration::from_secs(30));
/// assert_eq!(config.url(), "nats://***@nats-1:4222,nats://nats-2:4222");
/// assert_eq!(config.servers(), ["nats://nats-1:4222", "nats://nats-2:4222"]);
/// assert_eq!(config.name(), Some("billing"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    pub(crate) settings: ConnectSettings,
    /// The environment variable the URL came from, for the errors about it.
    url_variable: Option<&'static str>,
}

/// How a configuration authenticates, without the secrets, as
/// [`BrokerConfig::authentication`] tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// No credentials (a TLS client certificate may still identify the client).
    None,
    /// A user and password (given, or in the URL).
    UserAndPassword {
        /// The user name.
        user: String,
    },
    /// A token (given, or in the URL).
    Token,
    /// An NKey seed, given or read from a file.
    Nkey,
    /// A `.creds` file: a user JWT and its seed.
    CredentialsFile(PathBuf),
}

impl BrokerConfig {
    /// A configuration for the server(s) at `url` (`nats://host:port`, several separated by
    /// commas; `nats://user:password@host`, `nats://token@host` and `tls://host` work as NATS
    /// defines them).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            settings: ConnectSettings::new(url.into(), DEFAULT_CONNECT_TIMEOUT),
            url_variable: None,
        }
    }

    /// A configuration from the environment, with the variables of the `nats` CLI: `NATS_URL`
    /// (default [`DEFAULT_NATS_URL`]), `NATS_USER` + `NATS_PASSWORD`, `NATS_TOKEN`,
    /// `NATS_NKEY` (a seed file), `NATS_CREDS` (a `.creds` file), `NATS_CA`, `NATS_CERT` +
    /// `NATS_KEY`.
    ///
    /// The URLs are not checked here: [`validate`](Self::validate) does, and an app does before
    /// it runs any hook, naming the variable.
    pub fn from_env() -> Self {
        let url_set = std::env::var(URL_VARIABLE).is_ok_and(|url| !url.trim().is_empty());
        Self {
            settings: ConnectSettings::from_vars(
                |name| std::env::var(name).ok(),
                DEFAULT_NATS_URL,
                DEFAULT_CONNECT_TIMEOUT,
            ),
            url_variable: url_set.then_some(URL_VARIABLE),
        }
    }

    /// Checks the server URLs without connecting: each of the list must be a NATS URL, and
    /// there must be one. [`Error::InvalidUrl`] names the first bad one, and the environment
    /// variable it came from. An [`App`](crate::App) checks this before its `on_startup` hooks;
    /// connecting checks it first too.
    ///
    /// ```
    /// use faststream_core::{BrokerConfig, Error};
    ///
    /// let config = BrokerConfig::new("nats://nats-1:4222,nats://nats-2:port");
    /// assert!(matches!(
    ///     config.validate(),
    ///     Err(Error::InvalidUrl { url, variable: None, .. }) if url == "nats://nats-2:port"
    /// ));
    /// assert!(BrokerConfig::new("nats://nats-1:4222,tls://nats-2").validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<()> {
        let named = |error| match error {
            Error::InvalidUrl { url, source, .. } => Error::InvalidUrl {
                url,
                variable: self.url_variable,
                source,
            },
            other => other,
        };
        let servers = self.settings.server_addrs().map_err(named)?;
        if servers.is_empty() {
            return Err(named(Error::InvalidUrl {
                url: self.url(),
                variable: None,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the list names no server",
                ),
            }));
        }
        Ok(())
    }

    /// How long connecting keeps retrying an unreachable server before it fails (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// The connection name the server shows in its monitoring.
    #[must_use]
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = Some(name.into());
        self
    }

    /// How many messages a subscription may hold unread before the client drops what arrives
    /// (a slow consumer); default [`DEFAULT_SUBSCRIPTION_CAPACITY`](crate::DEFAULT_SUBSCRIPTION_CAPACITY)
    /// (524,288). Room is taken only as it fills. A watch notices dropped entries and re-creates
    /// itself after the last one it delivered, asking again for what it lost.
    #[must_use]
    pub fn subscription_capacity(mut self, messages: usize) -> Self {
        self.settings.subscription_capacity = messages.max(1);
        self
    }

    /// Authenticates with a user and password.
    #[must_use]
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.settings
            .user_and_password(user.into(), password.into());
        self
    }

    /// Authenticates with a token.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.settings.token(token.into());
        self
    }

    /// Authenticates with an NKey seed (`SU...`).
    #[must_use]
    pub fn nkey(mut self, seed: impl Into<String>) -> Self {
        self.settings.nkey_seed(seed.into());
        self
    }

    /// Authenticates with a `.creds` file (user JWT and seed), read when connecting.
    #[must_use]
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.auth = Auth::CredentialsFile(path.into());
        self
    }

    /// Trusts the CA certificate(s) in this PEM file for the server's TLS certificate; call it
    /// again to trust several files. Requires TLS: a server offering none is refused (before any
    /// credential is sent).
    #[must_use]
    pub fn tls_root_certificate(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.tls.root_certificates.push(path.into());
        self
    }

    /// Presents this client certificate and key (PEM files) to servers that verify clients.
    /// Requires TLS, like [`tls_root_certificate`](Self::tls_root_certificate).
    #[must_use]
    pub fn tls_client_certificate(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.settings.tls.client_certificate = Some((cert.into(), key.into()));
        self
    }

    /// Refuses to connect without TLS, even if the server does not require it. A CA or client
    /// certificate requires TLS whatever this says.
    #[must_use]
    pub fn require_tls(mut self, required: bool) -> Self {
        self.settings.tls.required = required;
        self
    }

    /// The server URL list as given, with any credentials replaced by `***`.
    pub fn url(&self) -> String {
        redact_url(&self.settings.url)
    }

    /// Each server URL, without credentials.
    pub fn servers(&self) -> Vec<String> {
        let (servers, _) = self.settings.servers_and_url_auth();
        servers
            .split(',')
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The connection name, if set with [`connection_name`](Self::connection_name).
    pub fn name(&self) -> Option<&str> {
        self.settings.name.as_deref()
    }

    /// How the client authenticates: explicit settings first, else credentials in the URL.
    pub fn authentication(&self) -> Authentication {
        let auth = match &self.settings.auth {
            Auth::None => self.settings.servers_and_url_auth().1,
            explicit => explicit.clone(),
        };
        match auth {
            Auth::None => Authentication::None,
            Auth::UserPassword { user, .. } => Authentication::UserAndPassword { user },
            Auth::Token(_) => Authentication::Token,
            Auth::NKeySeed(_) | Auth::NKeySeedFile(_) => Authentication::Nkey,
            Auth::CredentialsFile(path) => Authentication::CredentialsFile(path),
        }
    }

    /// Whether the connection must use TLS: asked for, implied by a certificate, or a
    /// `tls://` URL.
    pub fn tls_required(&self) -> bool {
        self.settings.tls_required()
    }

    /// The client certificate presented to servers that verify clients, if any.
    pub fn tls_client_certificate_path(&self) -> Option<&Path> {
        self.settings
            .tls
            .client_certificate
            .as_ref()
            .map(|(cert, _)| cert.as_path())
    }
}

impl fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.settings;
        f.debug_struct("BrokerConfig")
            .field("url", &self.url())
            .field("name", &settings.name)
            .field("connect_timeout", &settings.connect_timeout)
            .field("auth", &settings.auth)
            .field("tls", &settings.tls)
            .finish()
    }
}

/// Replaces `user:password@` or `token@` in each URL of a comma-separated list with `***@`.
pub(crate) fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            let (scheme, rest) = match url.find("://") {
                Some(at) => url.split_at(at + 3),
                None => ("", url),
            };
            match rest.rfind('@') {
                Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_is_a_value_and_reads_back() {
        let base = BrokerConfig::new("nats://127.0.0.1:1");
        let named = base.clone().connection_name("svc").token("t0k");
        // Configuring one value leaves the other as it was: nothing is shared.
        assert_eq!(base.name(), None);
        assert_eq!(named.name(), Some("svc"));
        assert_eq!(named.authentication(), Authentication::Token);
        assert_eq!(base.authentication(), Authentication::None);
        assert!(!format!("{named:?}").contains("t0k"));
    }

    #[test]
    fn credentials_in_the_url_are_read_not_shown() {
        let config = BrokerConfig::new("tls://alice:s3cret@host:4222");
        assert_eq!(
            config.authentication(),
            Authentication::UserAndPassword {
                user: "alice".into()
            }
        );
        assert_eq!(config.servers(), ["tls://host:4222"]);
        assert!(config.tls_required());
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn credentials_never_show() {
        assert_eq!(
            redact_url("nats://alice:s3cret@host:4222, tls://tok@h2"),
            "nats://***@host:4222,tls://***@h2"
        );
        assert_eq!(redact_url("127.0.0.1:4222"), "127.0.0.1:4222");
    }
}
