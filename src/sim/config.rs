//! Simulator settings: the `[simulator]` table of the relay's config (embedded mode) or the
//! whole file given to `dkim-relay ses-sim --config` (standalone mode).
//!
//! These model one SES account in one region (ses-smtp.md §4, §8): sandbox, pause, verified
//! identities (a domain covers its subdomains), custom MAIL FROM domains, the sending rate and
//! 24-hour quota, the 40 MB size limit, the idle timeout and connection limits, plus fault
//! injection for client tests. Every error names the key it is about. Secrets are read at load
//! time and held in [`Secret`], whose `Debug` masks them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
use crate::smtp::reply::Reply;

/// `[simulator]` as written.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSim {
    pub region: Option<String>,
    pub outbox: Option<String>,
    pub starttls_listen: Option<String>,
    pub implicit_listen: Option<String>,
    /// The web UI and Mailpit-compatible API; empty, "off" or "none" turns it off.
    pub http_listen: Option<String>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub cert_names: Option<Vec<String>>,
    pub ca_out: Option<String>,
    #[serde(default)]
    pub accounts: BTreeMap<String, RawAccount>,
    pub sandbox: Option<bool>,
    pub paused: Option<bool>,
    pub identities: Option<Vec<String>>,
    #[serde(default)]
    pub mail_from: BTreeMap<String, RawMailFrom>,
    pub max_send_rate: Option<f64>,
    pub max_24h: Option<u64>,
    pub max_message_size: Option<usize>,
    pub max_messages_per_session: Option<u32>,
    pub idle_timeout_secs: Option<u64>,
    pub max_connections: Option<usize>,
    pub legacy_ehlo_size: Option<bool>,
    pub starttls_after_tls: Option<bool>,
    pub dns_zone: Option<String>,
    #[serde(default)]
    pub faults: RawFaults,
}

/// One `[simulator.accounts.<ACCESS_KEY_ID>]` entry.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    /// The secret access key inline (staging only).
    pub secret: Option<String>,
    /// The name of an environment variable holding the secret access key.
    pub secret_env: Option<String>,
}

/// A `[simulator.mail_from]` entry: `"example.org" = "mail.example.org"`, or a table
/// `{ domain = "mail.example.org", mx_ok = false, behavior_on_mx_failure = "reject" }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawMailFrom {
    Domain(String),
    Full(RawMailFromTable),
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMailFromTable {
    pub domain: String,
    /// Whether the MX/SPF setup is in the `Success` state (default true).
    pub mx_ok: Option<bool>,
    /// `"use-default"` (SES's UseDefaultValue, the default) or `"reject"` (RejectMessage).
    pub behavior_on_mx_failure: Option<String>,
}

/// A custom MAIL FROM domain (ses-smtp.md §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFromDomain {
    pub domain: String,
    /// The MX check is in the `Success` state; otherwise `reject_on_mx_failure` decides.
    pub mx_ok: bool,
    /// BehaviorOnMXFailure = RejectMessage (else UseDefaultValue: fall back to amazonses.com).
    pub reject_on_mx_failure: bool,
}

impl From<&str> for MailFromDomain {
    fn from(domain: &str) -> Self {
        MailFromDomain {
            domain: domain.to_string(),
            mx_ok: true,
            reject_on_mx_failure: false,
        }
    }
}

/// `[simulator.faults]`.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawFaults {
    pub throttle: Option<bool>,
    pub failure_rate: Option<f64>,
    pub failure_reply: Option<String>,
    pub script: Option<Vec<String>>,
    pub latency_ms: Option<u64>,
    pub drop_at: Option<String>,
}

/// An SES account key pair the simulator accepts.
#[derive(Debug, Clone)]
pub struct Account {
    pub access_key_id: String,
    pub secret: Secret,
}

/// Where the listener certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// A fresh CA and leaf at start; the leaf names the regional endpoint, localhost, the
    /// loopback addresses and `extra_names`.
    Generate { extra_names: Vec<String> },
    /// PEM files (the chain and its key).
    Files { cert: PathBuf, key: PathBuf },
}

/// The stage at which an injected fault drops the connection without a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropStage {
    Connect,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    /// After the whole message, instead of the end-of-data reply.
    Eod,
}

impl DropStage {
    fn parse(s: &str) -> Option<DropStage> {
        Some(match s.to_ascii_lowercase().as_str() {
            "connect" => DropStage::Connect,
            "ehlo" => DropStage::Ehlo,
            "starttls" => DropStage::StartTls,
            "auth" => DropStage::Auth,
            "mail" => DropStage::Mail,
            "rcpt" => DropStage::Rcpt,
            "data" => DropStage::Data,
            "eod" => DropStage::Eod,
            _ => return None,
        })
    }
}

/// One entry of a fault script: the end-of-data outcome of the next message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptStep {
    /// Run the normal checks.
    Normal,
    /// Answer with this reply instead (nothing is stored).
    Reply(Reply),
    /// Close the connection without a reply.
    Drop,
}

/// Fault injection.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Every message gets `454 Throttling failure: Maximum sending rate exceeded.`.
    pub throttle: bool,
    /// Probability (0..=1) that a message gets `failure_reply`.
    pub failure_rate: f64,
    pub failure_reply: Option<Reply>,
    /// End-of-data outcomes for the next messages, in order (shared by all sessions).
    pub script: Vec<ScriptStep>,
    /// Delay before every reply.
    pub latency: Duration,
    pub drop_at: Option<DropStage>,
}

/// Resolved simulator settings.
#[derive(Debug, Clone)]
pub struct SimSettings {
    pub region: String,
    pub outbox: PathBuf,
    pub starttls_listen: SocketAddr,
    /// `None`: no implicit-TLS listener.
    pub implicit_listen: Option<SocketAddr>,
    /// The web UI and Mailpit-compatible API (`None`: off).
    pub http_listen: Option<SocketAddr>,
    /// Whether `http_listen` was written in the file: then a bind failure stops the start;
    /// the default (`127.0.0.1:8025`) is best effort, so a second simulator still starts.
    pub http_listen_explicit: bool,
    pub tls: TlsSource,
    /// Where to write the CA certificate (PEM) that clients should trust, when generated.
    pub ca_out: Option<PathBuf>,
    pub accounts: Vec<Account>,
    pub sandbox: bool,
    pub paused: bool,
    /// Verified identities: domains (covering subdomains) and single addresses, lower case.
    pub identities: Vec<String>,
    /// Custom MAIL FROM domain per identity (domain or address), keys lower case.
    pub mail_from: BTreeMap<String, MailFromDomain>,
    /// Messages per second.
    pub max_send_rate: f64,
    /// Recipients per rolling 24 hours (mailbox-simulator recipients do not count).
    pub max_24h: u64,
    pub max_message_size: usize,
    pub max_messages_per_session: u32,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Mimic older fleets: `250-SIZE 10485760` in EHLO.
    pub legacy_ehlo_size: bool,
    /// Mimic fleets that still list STARTTLS after TLS.
    pub starttls_after_tls: bool,
    pub faults: Faults,
    /// A zone file whose TXT/MX records form the verdict DNS view.
    pub dns_zone: Option<PathBuf>,
    /// Records given programmatically, added to the verdict DNS view.
    pub dns_records: Vec<crate::dns::Record>,
}

pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 41_943_040;
/// Mailpit's port, so its clients and helpers work without configuration; loopback only.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:8025";

/// Parses a reply written as `"454 Throttling failure: …"` (code, space, text).
pub fn parse_reply_text(s: &str) -> Option<Reply> {
    let s = s.trim();
    let code: u16 = s.get(..3)?.parse().ok()?;
    if !(200..600).contains(&code) {
        return None;
    }
    let rest = s.get(3..)?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some(Reply::plain(code, rest.trim_start()))
}

fn addr(key: &str, v: &str) -> Result<SocketAddr, (String, String)> {
    v.parse().map_err(|_| {
        (
            key.to_string(),
            format!("`{v}` is not an address:port such as \"127.0.0.1:2587\""),
        )
    })
}

impl SimSettings {
    /// Resolves relative paths against `base` (the config file's folder). Errors are
    /// `(key, message)`, the key relative to the `[simulator]` table.
    pub fn resolve(raw: Option<&RawSim>, base: &Path) -> Result<SimSettings, (String, String)> {
        let raw = raw.cloned().unwrap_or_default();
        let err = |k: &str, m: String| Err((k.to_string(), m));
        let region = raw.region.unwrap_or_else(|| "us-east-1".into());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return err(
                "region",
                format!("`{region}` is not a region such as us-east-1"),
            );
        }
        let outbox = base.join(raw.outbox.unwrap_or_else(|| "outbox".into()));
        let starttls_listen = addr(
            "starttls_listen",
            raw.starttls_listen.as_deref().unwrap_or("127.0.0.1:0"),
        )?;
        let implicit_listen = match raw.implicit_listen.as_deref().unwrap_or("127.0.0.1:0") {
            "" | "none" | "off" => None,
            v => Some(addr("implicit_listen", v)?),
        };
        let http_listen_explicit = raw.http_listen.is_some();
        let http_listen = match raw.http_listen.as_deref().unwrap_or(DEFAULT_HTTP_LISTEN) {
            "" | "none" | "off" => None,
            v => Some(addr("http_listen", v)?),
        };
        let tls = match (raw.tls_cert, raw.tls_key) {
            (Some(c), Some(k)) => {
                if raw.cert_names.is_some() {
                    return err(
                        "cert_names",
                        "only used when the certificate is generated (no tls_cert/tls_key)".into(),
                    );
                }
                TlsSource::Files {
                    cert: base.join(c),
                    key: base.join(k),
                }
            }
            (None, None) => TlsSource::Generate {
                extra_names: raw.cert_names.unwrap_or_default(),
            },
            (Some(_), None) => return err("tls_key", "missing: tls_cert needs tls_key".into()),
            (None, Some(_)) => return err("tls_cert", "missing: tls_key needs tls_cert".into()),
        };
        let ca_out = raw.ca_out.map(|p| base.join(p));
        let mut accounts = Vec::new();
        for (id, a) in raw.accounts {
            let key = |k: &str| format!("accounts.{id}.{k}");
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err((
                    format!("accounts.{id}"),
                    "an access key ID is letters and digits (AKIA…)".into(),
                ));
            }
            let secret = match (a.secret, a.secret_env) {
                (Some(s), None) => s,
                (None, Some(var)) => match std::env::var(&var) {
                    Ok(s) if !s.is_empty() => s,
                    _ => {
                        return Err((
                            key("secret_env"),
                            format!("environment variable {var} is not set"),
                        ));
                    }
                },
                (Some(_), Some(_)) => {
                    return Err((key("secret"), "set secret or secret_env, not both".into()));
                }
                (None, None) => {
                    return Err((key("secret"), "missing: set secret or secret_env".into()));
                }
            };
            accounts.push(Account {
                access_key_id: id,
                secret: Secret::new(secret),
            });
        }
        let mut identities = Vec::new();
        for (i, ident) in raw.identities.unwrap_or_default().into_iter().enumerate() {
            let ident = ident.trim().to_ascii_lowercase();
            let (local, domain) = match ident.rsplit_once('@') {
                Some((l, d)) => (Some(l), d),
                None => (None, ident.as_str()),
            };
            let domain = crate::domain_name::normalize(domain).filter(|d| d.contains('.'));
            let normalized = match (local, domain) {
                (Some(l), Some(d)) if !l.is_empty() => format!("{l}@{d}"),
                (None, Some(d)) => d,
                _ => {
                    return Err((
                        format!("identities[{i}]"),
                        format!("`{ident}` is not a domain or an address"),
                    ));
                }
            };
            identities.push(normalized);
        }
        let mut mail_from = BTreeMap::new();
        for (ident, entry) in raw.mail_from {
            let ident_l = ident.to_ascii_lowercase();
            let (domain, mx_ok, reject_on_mx_failure) = match entry {
                RawMailFrom::Domain(d) => (d, true, false),
                RawMailFrom::Full(t) => {
                    let reject = match t.behavior_on_mx_failure.as_deref() {
                        None | Some("use-default") => false,
                        Some("reject") => true,
                        Some(other) => {
                            return Err((
                                format!("mail_from.{ident}.behavior_on_mx_failure"),
                                format!("`{other}` is not \"use-default\" or \"reject\""),
                            ));
                        }
                    };
                    (t.domain, t.mx_ok.unwrap_or(true), reject)
                }
            };
            let Some(domain) = crate::domain_name::normalize(&domain) else {
                return Err((
                    format!("mail_from.{ident}"),
                    format!("`{}` is not a valid domain name", domain.trim()),
                ));
            };
            let parent = ident_l.rsplit('@').next().unwrap_or("").to_string();
            if !domain.ends_with(&format!(".{parent}")) {
                return Err((
                    format!("mail_from.{ident}"),
                    format!("`{domain}` must be a subdomain of {parent} (SES rule)"),
                ));
            }
            mail_from.insert(
                ident_l,
                MailFromDomain {
                    domain,
                    mx_ok,
                    reject_on_mx_failure,
                },
            );
        }
        let max_send_rate = raw.max_send_rate.unwrap_or(100.0);
        if !(max_send_rate > 0.0 && max_send_rate.is_finite()) {
            return err(
                "max_send_rate",
                "must be a positive number of messages per second".into(),
            );
        }
        let max_24h = raw.max_24h.unwrap_or(50_000);
        let max_message_size = raw.max_message_size.unwrap_or(DEFAULT_MAX_MESSAGE_SIZE);
        if max_message_size < 1024 {
            return err("max_message_size", "must be at least 1024 bytes".into());
        }
        let max_messages_per_session = raw.max_messages_per_session.unwrap_or(100);
        if max_messages_per_session == 0 {
            return err("max_messages_per_session", "must be at least 1".into());
        }
        let idle = raw.idle_timeout_secs.unwrap_or(10);
        if idle == 0 || idle > 3600 {
            return err(
                "idle_timeout_secs",
                "must be between 1 and 3600 seconds".into(),
            );
        }
        let max_connections = raw.max_connections.unwrap_or(50);
        if max_connections == 0 {
            return err("max_connections", "must be at least 1".into());
        }
        let f = raw.faults;
        let failure_rate = f.failure_rate.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&failure_rate) {
            return err("faults.failure_rate", "must be between 0 and 1".into());
        }
        let failure_reply = match f.failure_reply {
            Some(t) => Some(parse_reply_text(&t).ok_or_else(|| {
                (
                    "faults.failure_reply".to_string(),
                    format!("`{t}` is not a reply such as \"451 Temporary service failure\""),
                )
            })?),
            None => None,
        };
        let mut script = Vec::new();
        for (i, s) in f.script.unwrap_or_default().into_iter().enumerate() {
            let step = match s.trim().to_ascii_lowercase().as_str() {
                "ok" | "normal" => ScriptStep::Normal,
                "drop" => ScriptStep::Drop,
                _ => ScriptStep::Reply(parse_reply_text(&s).ok_or_else(|| {
                    (
                        format!("faults.script[{i}]"),
                        format!("`{s}` is not \"ok\", \"drop\" or a reply such as \"454 …\""),
                    )
                })?),
            };
            script.push(step);
        }
        let drop_at = match f.drop_at {
            Some(s) => Some(DropStage::parse(&s).ok_or_else(|| {
                (
                    "faults.drop_at".to_string(),
                    format!(
                        "`{s}` is not a stage: connect, ehlo, starttls, auth, mail, rcpt, data or eod"
                    ),
                )
            })?),
            None => None,
        };
        Ok(SimSettings {
            region,
            outbox,
            starttls_listen,
            implicit_listen,
            http_listen,
            http_listen_explicit,
            tls,
            ca_out,
            accounts,
            sandbox: raw.sandbox.unwrap_or(false),
            paused: raw.paused.unwrap_or(false),
            identities,
            mail_from,
            max_send_rate,
            max_24h,
            max_message_size,
            max_messages_per_session,
            idle_timeout: Duration::from_secs(idle),
            max_connections,
            legacy_ehlo_size: raw.legacy_ehlo_size.unwrap_or(false),
            starttls_after_tls: raw.starttls_after_tls.unwrap_or(false),
            faults: Faults {
                throttle: f.throttle.unwrap_or(false),
                failure_rate,
                failure_reply,
                script,
                latency: Duration::from_millis(f.latency_ms.unwrap_or(0)),
                drop_at,
            },
            dns_zone: raw.dns_zone.map(|p| base.join(p)),
            dns_records: Vec::new(),
        })
    }

    /// The custom MAIL FROM domain configured for the most specific identity covering
    /// `address` (the address itself, then its domain and each parent domain).
    pub fn mail_from_for(&self, address: &str) -> Option<&MailFromDomain> {
        let address = address.trim().to_ascii_lowercase();
        if let Some(d) = self.mail_from.get(&address) {
            return Some(d);
        }
        let (_, domain) = address.rsplit_once('@')?;
        crate::domain_name::parents(domain).find_map(|d| self.mail_from.get(d))
    }

    /// The custom MAIL FROM that applies to a message: the header From identity's, else the
    /// SMTP MAIL FROM identity's.
    pub fn custom_mail_from(
        &self,
        header_from: Option<&str>,
        mail_from: &str,
    ) -> Option<&MailFromDomain> {
        header_from
            .and_then(|f| self.mail_from_for(f))
            .or_else(|| self.mail_from_for(mail_from))
    }

    /// The files these settings make the simulator read when it starts (its certificate and
    /// key, its DNS zone), for the relay's configuration watcher.
    pub fn files_read(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let TlsSource::Files { cert, key } = &self.tls {
            out.push(cert.clone());
            out.push(key.clone());
        }
        out.extend(self.dns_zone.iter().cloned());
        out
    }

    /// Loads a standalone simulator file (`dkim-relay ses-sim --config sim.toml`): the same
    /// keys as `[simulator]`, at the top level. Errors name the key.
    pub fn load_file(path: &Path) -> Result<SimSettings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let raw: RawSim = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        SimSettings::resolve(Some(&raw), base)
            .map_err(|(key, msg)| format!("{}: `{key}`: {msg}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let s = SimSettings::resolve(None, Path::new("/tmp")).unwrap();
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.max_message_size, 41_943_040);
        assert_eq!(s.idle_timeout, Duration::from_secs(10));
        assert!(s.implicit_listen.is_some());
        assert_eq!(s.http_listen, Some("127.0.0.1:8025".parse().unwrap()));
        assert!(!s.http_listen_explicit);
        let raw: RawSim = toml::from_str("http_listen = \"\"\n").unwrap();
        let s = SimSettings::resolve(Some(&raw), Path::new("/tmp")).unwrap();
        assert_eq!(s.http_listen, None);
        let raw: RawSim = toml::from_str("http_listen = \"8025\"\n").unwrap();
        let e = SimSettings::resolve(Some(&raw), Path::new("/tmp")).unwrap_err();
        assert_eq!(e.0, "http_listen");
    }

    #[test]
    fn errors_name_the_key() {
        let raw: RawSim = toml::from_str("[faults]\nfailure_rate = 2.0\n").unwrap();
        let e = SimSettings::resolve(Some(&raw), Path::new("/")).unwrap_err();
        assert_eq!(e.0, "faults.failure_rate");
        let raw: RawSim =
            toml::from_str("[accounts.AKIA1]\nsecret_env = \"DKIM_RELAY_NO_SUCH_VAR_X\"\n")
                .unwrap();
        let e = SimSettings::resolve(Some(&raw), Path::new("/")).unwrap_err();
        assert_eq!(e.0, "accounts.AKIA1.secret_env");
        let raw: RawSim =
            toml::from_str("[mail_from]\n\"example.org\" = \"mail.other.org\"\n").unwrap();
        let e = SimSettings::resolve(Some(&raw), Path::new("/")).unwrap_err();
        assert_eq!(e.0, "mail_from.example.org");
        let raw: RawSim = toml::from_str(
            "[mail_from]\n\"example.org\" = { domain = \"mail.example.org\", mx_ok = false, \
             behavior_on_mx_failure = \"bounce\" }\n",
        )
        .unwrap();
        let e = SimSettings::resolve(Some(&raw), Path::new("/")).unwrap_err();
        assert_eq!(e.0, "mail_from.example.org.behavior_on_mx_failure");
        let e = toml::from_str::<RawSim>("bogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"));
    }
}
