//! Configuration: parsed from TOML ([`raw`]), validated and resolved into an immutable
//! [`Snapshot`] with every key loaded, then shared as `Arc<Snapshot>`.
//!
//! Invariants: a `Snapshot` is complete and valid (getters never fail); loading collects every
//! problem before giving up, and each [`Diagnostic`] names the file, line and key. A session
//! keeps the snapshot it started with; a reload builds a new one and swaps it in only when it is
//! whole ([`reload`]).

pub mod publish;
pub mod raw;
pub mod reload;
pub mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::dkim::Algorithm;
use crate::dkim::key::SelectorKey;
use crate::net::Network;
use crate::sim::config::SimSettings;
use crate::smtp::codec::BareNewline;
use raw::RawConfig;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One finding about the configuration, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{level}: {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Which rules the upstream imposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Amazon SES: one DKIM-Signature, never sign what SES rewrites.
    Ses,
    /// Any smarthost: several selectors may sign.
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    StartTls,
    Implicit,
}

/// Listener-side settings.
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_header_size: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_errors: u32,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub session_timeout: Duration,
    pub shutdown_grace: Duration,
    pub bare_newline: BareNewline,
    pub allow_networks: Vec<Network>,
    /// Upper bound on the whole DATA phase, however the client paces its bytes.
    pub data_total_timeout: Duration,
    /// Zero: greet at once. Otherwise wait this long and refuse a client that talks first.
    pub greeting_delay: Duration,
    pub auth_plaintext_loopback: bool,
    pub auth_failure_delay: Duration,
    pub max_auth_failures: u32,
    /// The listener's TLS (STARTTLS and implicit listeners); `None` when not configured.
    pub tls: Option<ServerTls>,
    pub users: Vec<crate::users::User>,
}

/// Listener-side TLS, loaded at configuration time (a reload picks up a renewed certificate).
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub cert_file: PathBuf,
    pub implicit_listen: Vec<SocketAddr>,
    pub handshake_timeout: Duration,
}

/// Loopback, including an IPv4 loopback client seen through an IPv6 socket.
pub fn is_loopback(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(|v4| v4.is_loopback())
            .unwrap_or(v6.is_loopback()),
        v4 => v4.is_loopback(),
    }
}

/// Where the SES SMTP password comes from. The secret itself is read at load time and never
/// printed ([`Secret`]'s `Debug` and `Display` mask it).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"********\"")
    }
}

/// A resolved upstream: a real SMTP endpoint, or the embedded simulator.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub target: UpstreamTarget,
    pub profile: Profile,
    pub pool_size: usize,
    pub max_messages_per_connection: u32,
    pub max_connection_age: Duration,
    pub idle_close: Duration,
    pub connect_timeout: Duration,
    pub tls_timeout: Duration,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    /// Where the credentials came from, for `check` output (never the secret).
    pub credential_source: String,
}

#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    Remote(Endpoint),
    /// Start the SES simulator in-process; the endpoint is known once it listens.
    Simulator(Box<SimSettings>),
}

/// A concrete SMTP endpoint with its credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub ca_file: Option<PathBuf>,
    /// PEM bytes of extra trust anchors (read at load time, so a reload sees file changes).
    pub extra_ca_pem: Option<Vec<u8>>,
    pub username: String,
    pub password: SecretEq,
}

/// A secret that compares by value (to reuse the pool when the upstream did not change).
#[derive(Clone, Debug)]
pub struct SecretEq(pub Secret);
impl PartialEq for SecretEq {
    fn eq(&self, other: &Self) -> bool {
        self.0.expose() == other.0.expose()
    }
}

/// What to put left of the @ of the rewritten envelope sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeLocalPart {
    Keep,
    Fixed(String),
}

/// One sending domain, fully resolved.
#[derive(Debug, Clone)]
pub struct Domain {
    /// A-label, lower case.
    pub name: String,
    pub mail_from: String,
    pub envelope_local_part: EnvelopeLocalPart,
    pub null_sender_local_part: String,
    pub subdomains: bool,
    pub headers: Vec<String>,
    pub oversign: Vec<String>,
    pub configuration_set: Option<String>,
    pub expiration: Option<u64>,
    pub dmarc: Option<String>,
    /// A newly active selector must be published in DNS (and match its key) before it signs.
    pub require_published: bool,
    /// Selectors that sign, in order.
    pub active: Vec<Arc<SelectorKey>>,
    /// Every configured selector, active or merely published.
    pub selectors: BTreeMap<String, Arc<SelectorKey>>,
}

/// A complete, validated configuration. Immutable; replaced whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    pub source: PathBuf,
    pub server: Server,
    pub upstream: Upstream,
    pub reload: ReloadSettings,
    pub dns: DnsSettings,
    pub domains: BTreeMap<String, Arc<Domain>>,
    pub warnings: Vec<Diagnostic>,
}

/// `[reload]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadSettings {
    /// Poll the configuration and key files and reload when they change.
    pub watch: bool,
    pub watch_interval: Duration,
    /// The global default of every domain's `require_published`.
    pub require_published: bool,
    /// Rotation age: `doctor` warns about keys whose file is older than this.
    pub key_max_age: Duration,
}

pub use crate::dns::lookup::ResolverSettings as DnsSettings;

/// The headers signed by default (when present), and those signed once more than they occur.
pub const DEFAULT_SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
];
pub const DEFAULT_OVERSIGNED: &[&str] = &["From", "To", "Cc", "Subject", "Reply-To"];

/// Headers SES replaces or removes: signing them breaks the signature (ses-smtp.md §5.1).
pub fn ses_forbids_signing(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(
        n.as_str(),
        "message-id" | "date" | "return-path" | "bounces-to" | "dkim-signature"
    ) || n.starts_with("x-ses-")
}

impl Domain {
    /// Every configured selector as the DNS module describes it (for `dns`, the simulator's
    /// DNS view, and publication checks).
    pub fn selector_infos(&self) -> Vec<crate::dns::SelectorInfo> {
        self.selectors
            .values()
            .map(|k| crate::dns::SelectorInfo {
                selector: k.selector.clone(),
                algorithm: k.algorithm,
                public_key: k.public_key.clone(),
                active: self.active.iter().any(|a| a.selector == k.selector),
            })
            .collect()
    }
}

impl Snapshot {
    /// The domain entry that signs for a header-From domain (A-label, any case), honouring
    /// each domain's `subdomains` switch. The most specific configured domain wins.
    pub fn domain_for(&self, from_domain: &str) -> Option<&Arc<Domain>> {
        let wanted = from_domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(d) = self.domains.get(&wanted) {
            return Some(d);
        }
        let mut rest = wanted.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(d) = self.domains.get(parent)
                && d.subdomains
            {
                return Some(d);
            }
            rest = parent;
        }
        None
    }

    /// The effective configuration as TOML-like text, secrets masked (`dkim-relay check`).
    pub fn describe(&self) -> String {
        let s = &self.server;
        let mut out = String::new();
        out.push_str("[server]\n");
        out.push_str(&format!(
            "listen = [{}]\n",
            s.listen
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str(&format!("hostname = \"{}\"\n", s.hostname));
        out.push_str(&format!("max_message_size = {}\n", s.max_message_size));
        out.push_str(&format!("max_recipients = {}\n", s.max_recipients));
        out.push_str(&format!("max_header_size = {}\n", s.max_header_size));
        out.push_str(&format!("max_connections = {}\n", s.max_connections));
        out.push_str(&format!(
            "max_connections_per_ip = {}\n",
            s.max_connections_per_ip
        ));
        out.push_str(&format!("max_errors = {}\n", s.max_errors));
        out.push_str(&format!(
            "command_timeout_secs = {}\ndata_timeout_secs = {}\nsession_timeout_secs = {}\nshutdown_grace_secs = {}\n",
            s.command_timeout.as_secs(),
            s.data_timeout.as_secs(),
            s.session_timeout.as_secs(),
            s.shutdown_grace.as_secs()
        ));
        out.push_str(&format!(
            "bare_newline = \"{}\"\n",
            match s.bare_newline {
                BareNewline::Reject => "reject",
                BareNewline::Normalize => "normalize",
            }
        ));
        out.push_str(&format!(
            "allow_networks = [{}]\n",
            s.allow_networks
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        out.push_str(&format!(
            "data_total_timeout_secs = {}\ngreeting_delay_ms = {}\nauth_plaintext_loopback = {}\nauth_failure_delay_ms = {}\nmax_auth_failures = {}\n",
            s.data_total_timeout.as_secs(),
            s.greeting_delay.as_millis(),
            s.auth_plaintext_loopback,
            s.auth_failure_delay.as_millis(),
            s.max_auth_failures
        ));
        if let Some(t) = &s.tls {
            out.push_str(&format!(
                "[server.tls]\ncert_file = \"{}\"\nkey_file = \"********\"\nimplicit_listen = [{}]\nhandshake_timeout_secs = {}\n",
                t.cert_file.display(),
                t.implicit_listen
                    .iter()
                    .map(|a| format!("\"{a}\""))
                    .collect::<Vec<_>>()
                    .join(", "),
                t.handshake_timeout.as_secs()
            ));
        }
        for u in &s.users {
            out.push_str(&format!(
                "[[server.users]]\nname = \"{}\"\npassword_hash = \"********\"\ndomains = [{}]\n",
                u.name,
                u.domains
                    .iter()
                    .map(|d| format!("\"{}\"", d.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let u = &self.upstream;
        out.push_str("\n[upstream]\n");
        match &u.target {
            UpstreamTarget::Simulator(sim) => {
                out.push_str("simulator = true\n");
                out.push_str(&format!(
                    "# simulator: region {}, outbox {}\n",
                    sim.region,
                    sim.outbox.display()
                ));
            }
            UpstreamTarget::Remote(e) => {
                out.push_str(&format!("host = \"{}\"\nport = {}\n", e.host, e.port));
                out.push_str(&format!(
                    "tls = \"{}\"\n",
                    match e.tls {
                        TlsMode::StartTls => "starttls",
                        TlsMode::Implicit => "implicit",
                    }
                ));
                if let Some(ca) = &e.ca_file {
                    out.push_str(&format!("ca_file = \"{}\"\n", ca.display()));
                }
                out.push_str(&format!("username = \"{}\"\n", e.username));
                out.push_str("password = \"********\"\n");
            }
        }
        out.push_str(&format!("# credentials: {}\n", u.credential_source));
        out.push_str(&format!(
            "profile = \"{}\"\n",
            match u.profile {
                Profile::Ses => "ses",
                Profile::Generic => "generic",
            }
        ));
        out.push_str(&format!(
            "pool_size = {}\nmax_messages_per_connection = {}\nmax_connection_age_secs = {}\nidle_close_secs = {}\n",
            u.pool_size,
            u.max_messages_per_connection,
            u.max_connection_age.as_secs(),
            u.idle_close.as_secs()
        ));
        out.push_str(&format!(
            "connect_timeout_secs = {}\ntls_timeout_secs = {}\ncommand_timeout_secs = {}\ndata_timeout_secs = {}\n",
            u.connect_timeout.as_secs(),
            u.tls_timeout.as_secs(),
            u.command_timeout.as_secs(),
            u.data_timeout.as_secs()
        ));
        let r = &self.reload;
        out.push_str(&format!(
            "\n[reload]\nwatch = {}\nwatch_interval_secs = {}\nrequire_published = {}\nkey_max_age_days = {}\n",
            r.watch,
            r.watch_interval.as_secs(),
            r.require_published,
            r.key_max_age.as_secs() / 86_400
        ));
        out.push_str("\n[dns]\n");
        match self.dns.nameserver {
            Some(ns) => out.push_str(&format!("nameserver = \"{ns}\"\n")),
            None => out.push_str("# nameserver: the system resolver (resolv.conf)\n"),
        }
        out.push_str(&format!("timeout_secs = {}\n", self.dns.timeout.as_secs()));
        for d in self.domains.values() {
            out.push_str(&format!("\n[domains.\"{}\"]\n", d.name));
            out.push_str(&format!("mail_from = \"{}\"\n", d.mail_from));
            out.push_str(&format!(
                "sign = [{}]\n",
                d.active
                    .iter()
                    .map(|k| format!("\"{}\"", k.selector))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            out.push_str(&format!(
                "envelope_local_part = \"{}\"\nnull_sender_local_part = \"{}\"\nsubdomains = {}\n",
                match &d.envelope_local_part {
                    EnvelopeLocalPart::Keep => "keep",
                    EnvelopeLocalPart::Fixed(s) => s,
                },
                d.null_sender_local_part,
                d.subdomains
            ));
            out.push_str(&format!(
                "headers = {:?}\noversign = {:?}\n",
                d.headers, d.oversign
            ));
            if let Some(cs) = &d.configuration_set {
                out.push_str(&format!("configuration_set = \"{cs}\"\n"));
            }
            if let Some(x) = d.expiration {
                out.push_str(&format!("expiration_secs = {x}\n"));
            }
            out.push_str(&format!("require_published = {}\n", d.require_published));
            for k in d.selectors.values() {
                out.push_str(&format!(
                    "[domains.\"{}\".selectors.{}]  # {}{}\nalgorithm = \"{}\"\nkey_file = \"{}\"\n",
                    d.name,
                    k.selector,
                    if d.active.iter().any(|a| a.selector == k.selector) {
                        "active"
                    } else {
                        "published only"
                    },
                    k.bits.map(|b| format!(", {b} bits")).unwrap_or_default(),
                    k.algorithm,
                    k.key_file.display()
                ));
            }
        }
        out
    }
}

/// The result of loading: a snapshot (with its warnings inside), or every problem found.
pub type LoadResult = Result<Snapshot, Vec<Diagnostic>>;

/// Reads, parses, validates and resolves a configuration file, loading every key.
pub fn load(path: &Path) -> LoadResult {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                " (start from config.toml.example: `cp config.toml.example config.toml`, or run \
                 `dkim-relay serve --config config.toml.example`)"
            } else {
                ""
            };
            return Err(vec![Diagnostic {
                severity: Severity::Error,
                file: path.to_path_buf(),
                line: None,
                key: String::new(),
                message: format!("cannot read configuration file: {e}{hint}"),
            }]);
        }
    };
    load_str(path, &text)
}

/// As [`load`], for text already in memory (`path` names it in messages and anchors relative
/// paths).
pub fn load_str(path: &Path, text: &str) -> LoadResult {
    let raw: RawConfig = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start));
            let key = line.map(|l| key_at_line(text, l)).unwrap_or_default();
            return Err(vec![Diagnostic {
                severity: Severity::Error,
                file: path.to_path_buf(),
                line,
                key,
                message: e.message().trim().to_string(),
            }]);
        }
    };
    validate::resolve(path, text, raw)
}

/// The dotted key written on a line (table header above it + the key before `=`), for
/// messages about unknown keys and bad values.
fn key_at_line(text: &str, line: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(here) = lines.get(line.saturating_sub(1)) else {
        return String::new();
    };
    let key = here.split('=').next().unwrap_or("").trim();
    let table = lines[..line.saturating_sub(1)]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match (table, key.is_empty() || key.starts_with('[')) {
        (Some(t), false) => format!("{t}.{key}"),
        (None, false) => key.to_string(),
        (Some(t), true) => t,
        (None, true) => String::new(),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

mod validate;

/// `Duration` from a number of seconds.
pub(crate) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Whether `algorithm` keys are acceptable to most receivers on their own.
pub fn widely_verified(algorithm: Algorithm) -> bool {
    algorithm == Algorithm::RsaSha256
}

#[cfg(test)]
mod tests;
