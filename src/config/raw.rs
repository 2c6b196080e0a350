//! The configuration file exactly as written (TOML, serde, `deny_unknown_fields`).
//!
//! Nothing here is validated beyond types; [`super::load`] turns it into a resolved
//! [`super::Snapshot`]. The key names are the public interface documented in the README.

use serde::Deserialize;
use std::collections::BTreeMap;

use crate::dkim::Algorithm;
use crate::smtp::codec::BareNewline;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `"text"` (default) or `"json"`: one JSON object per log line.
    pub log_format: Option<String>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub simulator: Option<crate::sim::config::RawSim>,
    #[serde(default)]
    pub reload: RawReload,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub domains: BTreeMap<String, RawDomain>,
    /// `[spool]`: absent = pass-through.
    #[serde(default)]
    pub spool: Option<RawSpool>,
    /// `[http]`: the operator's endpoint (metrics, health); off when absent.
    pub http: Option<RawHttp>,
}

/// `[spool]`: the durable queue.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSpool {
    pub dir: Option<String>,
    /// `"on-defer"` or `"always"`.
    pub mode: Option<String>,
    pub min_free_mb: Option<u64>,
    pub retry_initial_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
    pub max_age_secs: Option<u64>,
    pub pause_probe_ms: Option<u64>,
}

/// `[http]`: `/metrics`, `/livez`, `/readyz`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: Option<String>,
}

/// `[reload]`: how configuration and key changes are picked up, and key rotation policy.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawReload {
    /// Poll the config file and every key file and reload on change (as SIGHUP does).
    pub watch: Option<bool>,
    pub watch_interval_secs: Option<u64>,
    /// A selector becomes active only once its DNS record is published and matches.
    pub require_published: Option<bool>,
    /// Keys older than this are reported by `doctor` (rotation age).
    pub key_max_age_days: Option<u64>,
}

/// `[dns]`: the name server used by `doctor` and by `require_published` checks.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// `IP:PORT` (or a bare IP, port 53); absent: the system resolver (resolv.conf).
    pub nameserver: Option<String>,
    pub timeout_secs: Option<u64>,
    /// Seconds between checks of the published key records; 0 = off.
    pub check_interval_secs: Option<u64>,
}

/// `listen` takes one address or a list.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<OneOrMany>,
    pub hostname: Option<String>,
    pub max_message_size: Option<usize>,
    pub max_recipients: Option<usize>,
    pub max_header_size: Option<usize>,
    pub max_bytes_in_flight: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_errors: Option<u32>,
    pub command_timeout_secs: Option<u64>,
    pub data_timeout_secs: Option<u64>,
    pub session_timeout_secs: Option<u64>,
    pub shutdown_grace_secs: Option<u64>,
    pub bare_newline: Option<BareNewline>,
    /// `refuse` (451, nothing sent) or `log` when a signature fails the self-check.
    pub self_verify: Option<crate::dkim::self_check::SelfVerify>,
    pub allow_networks: Option<Vec<String>>,
    /// Whole-DATA-phase limit, on top of the per-read `data_timeout_secs`.
    pub data_total_timeout_secs: Option<u64>,
    /// Wait this long before the greeting; a client that talks first is refused (pregreet).
    pub greeting_delay_ms: Option<u64>,
    /// Offer AUTH without TLS to loopback clients.
    pub auth_plaintext_loopback: Option<bool>,
    /// Delay before answering a failed AUTH.
    pub auth_failure_delay_ms: Option<u64>,
    /// Failed AUTH attempts allowed per session before 421 and close.
    pub max_auth_failures: Option<u32>,
    /// Failed AUTH attempts allowed per client address (all its connections) in
    /// `relay::protocol::AUTH_FAILURE_WINDOW`, after which AUTH from it is refused for the rest of the window.
    pub max_auth_failures_per_ip: Option<u32>,
    /// The least DATA rate in bytes per second (0: no floor), measured per window.
    pub min_data_rate: Option<u64>,
    /// The window over which `min_data_rate` is measured.
    pub min_data_rate_window_secs: Option<u64>,
    pub tls: Option<RawServerTls>,
    #[serde(default)]
    pub users: Vec<RawUser>,
}

/// `[server.tls]`: the listener's certificate (STARTTLS, and implicit TLS listeners).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// Implicit-TLS (RFC 8314) listen addresses.
    pub implicit_listen: Option<OneOrMany>,
    pub handshake_timeout_secs: Option<u64>,
}

/// `[[server.users]]`: one submission user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: String,
    pub password_hash: String,
    #[serde(default)]
    pub domains: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// Run the built-in SES simulator and relay to it (staging, quick start).
    pub simulator: Option<bool>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub tls: Option<String>,
    pub ca_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub secret_access_key_env: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    pub pool_size: Option<usize>,
    pub max_messages_per_connection: Option<u32>,
    pub max_connection_age_secs: Option<u64>,
    pub idle_close_secs: Option<u64>,
    /// The SES account's maximum send rate (recipients per second); absent or 0: unpaced.
    pub max_send_rate: Option<f64>,
    /// How long a pass-through message waits for its turn upstream.
    pub max_wait_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub tls_timeout_secs: Option<u64>,
    pub command_timeout_secs: Option<u64>,
    pub data_timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDomain {
    pub mail_from: Option<String>,
    #[serde(default)]
    pub sign: Vec<String>,
    /// `"keep"` keeps the application's local part; anything else is a fixed mailbox.
    pub envelope_local_part: Option<String>,
    /// The mailbox used when the application sends a null sender `<>`.
    pub null_sender_local_part: Option<String>,
    /// Accept From addresses in subdomains of this domain, signing with `d=` this domain.
    pub subdomains: Option<bool>,
    pub headers: Option<Vec<String>>,
    pub oversign: Option<Vec<String>>,
    pub configuration_set: Option<String>,
    /// Signature lifetime in seconds (`x=`); absent means no `x=`.
    pub expiration_secs: Option<u64>,
    /// The DMARC record to publish (`dkim-relay dns`) and to assume in the simulator.
    pub dmarc: Option<String>,
    /// Overrides `[reload] require_published` for this domain.
    pub require_published: Option<bool>,
    #[serde(default)]
    pub selectors: BTreeMap<String, RawSelector>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelector {
    pub algorithm: Algorithm,
    pub key_file: String,
}
