//! The relay's configuration file for a test, typed and serialized with `toml`: a test names the
//! keys it changes (`options.server_extra.insert(..)`, `toml! { .. }`), never edits a text
//! template, so a typo is a compile error or a config diagnostic, not a silently different file.
//!
//! The shape is the relay's own (`config.toml.example`): `[server]`, `[server.tls]`,
//! `[[server.users]]`, `[upstream]`, `[domains."D"]` with `[domains."D".selectors.S]`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::{ListenerTls, RelayOptions};

/// One `[[server.users]]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    pub domains: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
struct ServerTls {
    cert_file: String,
    key_file: String,
    handshake_timeout_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    implicit_listen: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
struct Server {
    listen: String,
    hostname: String,
    shutdown_grace_secs: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_size: Option<usize>,
    #[serde(flatten)]
    extra: toml::Table,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<ServerTls>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    users: Vec<User>,
}

#[derive(Debug, Clone, Serialize)]
struct Upstream {
    host: String,
    port: u16,
    tls: String,
    ca_file: String,
    username: String,
    password: String,
    profile: String,
    command_timeout_secs: u64,
    data_timeout_secs: u64,
    connect_timeout_secs: u64,
    tls_timeout_secs: u64,
    #[serde(flatten)]
    extra: toml::Table,
}

#[derive(Debug, Clone, Serialize)]
struct Selector {
    algorithm: String,
    key_file: String,
}

#[derive(Debug, Clone, Serialize)]
struct Domain {
    mail_from: String,
    sign: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envelope_local_part: Option<String>,
    selectors: BTreeMap<String, Selector>,
}

/// The whole file.
#[derive(Debug, Clone, Serialize)]
struct RelayConfig {
    server: Server,
    upstream: Upstream,
    domains: BTreeMap<String, Domain>,
}

fn selector(algorithm: &str, key_file: &str) -> Selector {
    Selector {
        algorithm: algorithm.into(),
        key_file: key_file.into(),
    }
}

/// The configuration `options` describe, with its files under `dir` (keys relative to the
/// config file, the upstream CA and the listener certificate absolute).
pub fn relay_config(options: &RelayOptions, dir: &Path) -> String {
    let path = |name: &str| dir.join(name).display().to_string();
    let tls = match options.listener_tls {
        ListenerTls::None => None,
        ListenerTls::StartTls | ListenerTls::StartTlsAndImplicit => Some(ServerTls {
            cert_file: path("relay-cert.pem"),
            key_file: path("relay-key.pem"),
            handshake_timeout_secs: 5,
            implicit_listen: (options.listener_tls == ListenerTls::StartTlsAndImplicit)
                .then(|| "127.0.0.1:0".to_string()),
        }),
    };
    let org_sign = if options.profile == "generic" {
        vec!["s1".to_string(), "e1".to_string()]
    } else {
        vec!["s1".to_string()]
    };
    let config = RelayConfig {
        server: Server {
            listen: "127.0.0.1:0".into(),
            hostname: "relay.test".into(),
            shutdown_grace_secs: 30,
            max_message_size: options.max_message_size,
            extra: options.server_extra.clone(),
            tls,
            users: options.users.clone(),
        },
        upstream: Upstream {
            host: "127.0.0.1".into(),
            port: options.upstream_port,
            tls: options.tls.into(),
            ca_file: path("upstream-ca.pem"),
            username: options.username.clone(),
            password: options.password.clone(),
            profile: options.profile.into(),
            command_timeout_secs: 10,
            data_timeout_secs: options.upstream_data_timeout_secs.unwrap_or(10),
            connect_timeout_secs: 5,
            tls_timeout_secs: 5,
            extra: options.upstream_extra.clone(),
        },
        domains: BTreeMap::from([
            (
                "example.org".to_string(),
                Domain {
                    mail_from: "mail.example.org".into(),
                    sign: org_sign,
                    envelope_local_part: options.envelope_local_part.clone(),
                    selectors: BTreeMap::from([
                        ("s1".to_string(), selector("rsa-sha256", "keys/org-s1.pem")),
                        (
                            "e1".to_string(),
                            selector("ed25519-sha256", "keys/org-e1.pem"),
                        ),
                    ]),
                },
            ),
            (
                "example.net".to_string(),
                Domain {
                    mail_from: "mail.example.net".into(),
                    sign: vec!["e1".into()],
                    envelope_local_part: None,
                    selectors: BTreeMap::from([(
                        "e1".to_string(),
                        selector("ed25519-sha256", "keys/net-e1.pem"),
                    )]),
                },
            ),
        ]),
    };
    match toml::to_string(&config) {
        Ok(text) => text,
        Err(e) => panic!("test config does not serialize: {e}"),
    }
}
