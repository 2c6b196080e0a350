//! Configuration: parsed from TOML ([`raw`]), validated and resolved into an immutable
//! [`Snapshot`] with every key loaded, then shared as `Arc<Snapshot>`.
//!
//! Invariants: a `Snapshot` is complete and valid (getters never fail); loading collects every
//! problem before giving up, and each [`Diagnostic`] names the file, line and key. A session
//! keeps the snapshot it started with; a reload builds a new one and swaps it in only when it is
//! whole ([`reload`]).
//!
//! `config` is the assembly layer: it parses and validates, then BUILDS each lower module's own
//! settings type — the signing domains ([`crate::dkim::domain`]), the envelope rules and upstream
//! profile ([`crate::message`]), the endpoint and pool settings ([`crate::upstream::settings`]),
//! the simulator's ([`crate::sim::config`]) — and hands them down. Nothing below it imports
//! `config` (checked by `tests/it/layering.rs`), and nobody imports those types through
//! `config`: each has one home and one name.
//!
//! Files: [`raw`] (the TOML shape), [`assemble`] (builds the relay's own settings, shell
//! settings included, from a snapshot), `validate` (one file per section; the only place that
//! reads the files a configuration names), [`defaults`] (every default and bound, checked against
//! `config.toml.example`), `describe` (`dkim-relay check` output), [`reload`] (the live handle
//! and atomic swap), [`restart`] (settings a reload refuses), [`watch`] (polls every file read),
//! and [`rotation`] — the `require_published` gate: a newly active selector signs only once DNS
//! serves its key (the name is historical; read it as "publication check").

pub mod assemble;
pub mod defaults;
mod describe;
pub mod raw;
pub mod reload;
pub mod restart;
pub mod rotation;
pub mod watch;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::allow_list::Network;
use crate::dkim::Algorithm;
use crate::dkim::domain::{Domain, Domains};
use crate::dns::lookup::ResolverSettings;
use crate::message::{EnvelopeRules, Profile};
use crate::secret::Secret;
use crate::sim::config::SimSettings;
use crate::smtp::codec::BareNewline;
use crate::upstream::settings::{Endpoint, PoolSettings, SendRate, TlsMode};
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

/// Listener-side settings.
#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    pub max_header_size: usize,
    /// Message bytes all connections may hold at once (DATA buffers until the upstream answered).
    pub max_bytes_in_flight: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_errors: u32,
    pub command_timeout: Duration,
    pub data_timeout: Duration,
    pub session_timeout: Duration,
    pub shutdown_grace: Duration,
    pub bare_newline: BareNewline,
    /// What a failed self-verification of a signed message does.
    pub self_verify: crate::dkim::self_check::SelfVerify,
    pub allow_networks: Vec<Network>,
    /// Upper bound on the whole DATA phase, however the client paces its bytes.
    pub data_total_timeout: Duration,
    /// Zero: greet at once. Otherwise wait this long and refuse a client that talks first.
    pub greeting_delay: Duration,
    pub auth_plaintext_loopback: bool,
    pub auth_failure_delay: Duration,
    pub max_auth_failures: u32,
    /// Failed AUTH attempts per client address per window (all its connections).
    pub max_auth_failures_per_ip: u32,
    /// DATA must bring at least this many bytes per second over each window (`None`: no floor).
    pub min_data_rate: Option<crate::server::DataRate>,
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

/// A resolved upstream: a real SMTP endpoint, or the embedded simulator.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub target: UpstreamTarget,
    pub profile: Profile,
    /// Pool size, rotation and timeouts, as the upstream module takes them.
    pub pool: PoolSettings,
    /// The endpoint the relay connects to: the remote one, or — for the embedded simulator —
    /// the simulator's own, filled in once when the relay starts it ([`reload::Live::with_embedded`])
    /// and carried into every reloaded snapshot. `None` only before the simulator listens.
    pub endpoint: Option<Endpoint>,
    /// Where the credentials came from, for `check` output (never the secret).
    pub credential_source: String,
}

#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    Remote(Endpoint),
    /// Start the SES simulator in-process; the endpoint is known once it listens.
    Simulator(Box<SimSettings>),
}

/// A complete, validated configuration. Immutable; replaced whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    pub source: PathBuf,
    pub server: Server,
    pub upstream: Upstream,
    pub reload: ReloadSettings,
    pub dns: ResolverSettings,
    pub domains: Domains,
    /// `[spool]`; `None`: pass-through.
    pub spool: Option<crate::spool::Settings>,
    /// `[http]`: the operator's endpoint; `None` when off.
    pub http: Option<crate::http::Settings>,
    /// `log_format`: how `serve` writes its log lines.
    pub log_format: LogFormat,
    /// Every file this snapshot was built from, the configuration file first: key files, the
    /// listener's certificate and key, the upstream's `ca_file` and `password_file`, the
    /// simulator's files. The watcher polls exactly these.
    pub files: Vec<PathBuf>,
    pub warnings: Vec<Diagnostic>,
}

/// `log_format`: the text line (default) or one JSON object per line, with the same fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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

impl Snapshot {
    /// The domain entry that signs for a header-From domain ([`Domains::domain_for`]).
    pub fn domain_for(&self, from_domain: &str) -> Option<&Arc<Domain>> {
        self.domains.domain_for(from_domain)
    }
}

/// The result of loading: a snapshot (with its warnings inside), or every problem found.
pub type LoadResult = Result<Snapshot, Vec<Diagnostic>>;

/// Reads, parses, validates and resolves a configuration file, loading every key.
pub fn load(path: &Path) -> LoadResult {
    // Only a regular, bounded, not world-writable file (`regular_file`): a FIFO or a device
    // here must not hang `check`, `serve` or a reload.
    let text = match crate::regular_file::read_to_string(path) {
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
