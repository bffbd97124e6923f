//! How to reach and authenticate to NATS: URL, timeout, credentials and TLS. Secrets are kept
//! out of `Debug` output and log lines.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

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

/// Everything needed to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectSettings {
    pub(crate) url: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) name: Option<String>,
    pub(crate) auth: Auth,
    pub(crate) tls: Tls,
}

impl ConnectSettings {
    pub(crate) fn new(url: String, connect_timeout: Duration) -> Self {
        Self {
            url,
            connect_timeout,
            name: None,
            auth: Auth::None,
            tls: Tls::default(),
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

    /// The async-nats options for these settings (files are read here), and the server URLs to
    /// give them.
    pub(crate) async fn connect_options(&self) -> Result<(async_nats::ConnectOptions, String)> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(name) = &self.name {
            options = options.name(name);
        }
        let (servers, url_auth) = self.servers_and_url_auth();
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
        for root in &self.tls.root_certificates {
            options = options.add_root_certificates(root.clone());
        }
        if let Some((cert, key)) = &self.tls.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls.required {
            options = options.require_tls(true);
        }
        Ok((options, servers))
    }
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

        let token = ConnectSettings::from_vars(
            |name| (name == "NATS_TOKEN").then(|| "t0k".to_owned()),
            "nats://x",
            Duration::from_secs(1),
        );
        assert_eq!(token.url, "nats://x");
        assert!(!format!("{token:?}").contains("t0k"));
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
