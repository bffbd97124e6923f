//! The document's `servers`, from the broker's URLs without their credentials, and the
//! security schemes of how the broker authenticates.

use serde_json::{json, Map, Value};

use crate::broker::{Authentication, BrokerConfig};

/// `servers` and `components/securitySchemes`. One server is `development`, several are
/// `Server1`, `Server2`, ... (FastStream's names).
pub(crate) fn servers(config: &BrokerConfig) -> (Value, Map<String, Value>) {
    let mut schemes = Map::new();
    let mut security = Vec::new();
    let mut extensions = Map::new();
    match config.authentication() {
        Authentication::None => {}
        Authentication::UserAndPassword { .. } => {
            schemes.insert(
                "user-password".into(),
                json!({"type": "userPassword", "description": "A user and password"}),
            );
            security.push(json!({"$ref": "#/components/securitySchemes/user-password"}));
        }
        // AsyncAPI has no scheme for these: named in an extension field.
        Authentication::Token => {
            extensions.insert("x-faststream-auth".into(), "token".into());
        }
        Authentication::Nkey => {
            extensions.insert("x-faststream-auth".into(), "nkey".into());
        }
        Authentication::CredentialsFile(_) => {
            extensions.insert(
                "x-faststream-auth".into(),
                "credentials (a user JWT and its NKey)".into(),
            );
        }
    }
    if config.tls_client_certificate_path().is_some() {
        schemes.insert(
            "x509".into(),
            json!({"type": "X509", "description": "A TLS client certificate"}),
        );
        security.push(json!({"$ref": "#/components/securitySchemes/x509"}));
    }
    let tls = config.tls_required();
    let urls = config.servers();
    let mut servers = Map::new();
    for (index, url) in urls.iter().enumerate() {
        let host = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let host = host.trim_end_matches('/');
        let mut server = Map::new();
        server.insert("host".into(), host.into());
        server.insert("protocol".into(), "nats".into());
        if tls {
            server.insert("description".into(), "TLS required".into());
        }
        if !security.is_empty() {
            server.insert("security".into(), Value::Array(security.clone()));
        }
        server.extend(extensions.clone());
        let name = if urls.len() == 1 {
            "development".to_owned()
        } else {
            format!("Server{}", index + 1)
        };
        servers.insert(name, Value::Object(server));
    }
    (Value::Object(servers), schemes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_document() {
        let config = BrokerConfig::new("nats://alice:s3cret@a:4222,nats://b:4222");
        let (servers, schemes) = servers(&config);
        let text = servers.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("alice"),
            "{text}"
        );
        assert_eq!(servers["Server1"]["host"], "a:4222");
        assert_eq!(servers["Server2"]["host"], "b:4222");
        assert_eq!(schemes["user-password"]["type"], "userPassword");
        let (servers, _) = super::servers(&BrokerConfig::new("nats://tok@h:1"));
        assert_eq!(servers["development"]["x-faststream-auth"], "token");
        assert!(!servers.to_string().contains("tok@"));
    }

    #[test]
    fn a_client_certificate_is_an_x509_scheme() {
        let config = BrokerConfig::new("tls://h:4222").tls_client_certificate("c.pem", "k.pem");
        let (servers, schemes) = servers(&config);
        assert_eq!(schemes["x509"]["type"], "X509");
        assert_eq!(
            servers["development"]["security"][0]["$ref"],
            "#/components/securitySchemes/x509"
        );
        assert_eq!(servers["development"]["description"], "TLS required");
        assert!(!schemes.contains_key("user-password"));
    }
}
