//! The simulator as a protocol of the one server shell (`crate::server`): its shell settings
//! (from `SimSettings`), what its connections share (the live faults and the recorder among
//! them; each connection is `super::connection`: the SES session of [`super::session`], fault
//! injection and the end-of-data pipeline), and the start functions (`start`, `start_embedded`; the standalone start, which reads its file, is
//! `daemon::start_simulator`). Listeners, TLS, timers, framing and the drain are the shell's,
//! shared with the relay.
//!
//! SES rules worded here (ses-smtp.md §1, §3, §8): `421 Too many concurrent SMTP connections`
//! over the limit; after the idle timeout (10 s by default) the server sends `451 4.4.2 Timeout
//! waiting for data from client.` unprompted and closes; the empty AUTH challenge is `334 `
//! with its space. The shell discards input pipelined behind STARTTLS before the handshake.
//! Where SES differs from the relay on purpose, it is a setting (see `shell_settings`): one idle
//! timeout per read instead of command/DATA/session budgets, no per-IP limit, no pregreet
//! delay, injected reply latency; and a notice: at shutdown an idle session closes silently.
//! Secrets are never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::config::{Account, SimSettings, TlsSource};
use super::deliver::{self, SesKey};
use super::fault::LiveFaults;
use super::record::Recorder;
use super::rules::AccountState;
use super::session::{self, Policy};
use crate::dns::DnsView;
use crate::domain_name::dns_name;
use crate::secret::Secret;
use crate::server::{self, Listener, Mode, TlsSettings};
use crate::smtp::codec::BareNewline;

/// Longest command line accepted (AUTH PLAIN initial responses included).
const MAX_COMMAND_LINE: usize = 2048;
/// Deadline for a TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for writing one reply.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for sessions in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`dns_zone` {path}: {message}")]
    Zone { path: PathBuf, message: String },
    #[error("{0}")]
    Key(#[from] deliver::DeliverError),
}

/// Everything the sessions of one simulator share.
pub(super) struct Shared {
    pub(super) settings: SimSettings,
    pub(super) policy: Policy,
    pub(super) state: AccountState,
    pub(super) key: SesKey,
    pub(super) dns: DnsView,
    /// The shell's settings, built once from `settings`.
    pub(super) shell: Arc<server::Settings>,
    /// Faults a test or operator changes while the simulator runs.
    pub(super) faults: LiveFaults,
    /// Set once recording is enabled ([`RunningSim::record`]); empty costs nothing.
    pub(super) recorder: std::sync::OnceLock<Recorder>,
}

/// A started simulator. Dropping it stops the listeners; [`RunningSim::shutdown`] also waits
/// (briefly) for sessions in flight.
pub struct RunningSim {
    pub starttls_addr: SocketAddr,
    pub implicit_addr: Option<SocketAddr>,
    /// The CA that signed the listener certificate (empty when the certificate came from files).
    pub ca_pem: String,
    /// Where the CA PEM was written, if it was.
    pub ca_path: Option<PathBuf>,
    pub outbox: PathBuf,
    pub region: String,
    /// The TXT record (name, value) publishing the simulator's `d=amazonses.com` DKIM key.
    pub ses_dkim_record: (String, String),
    server: server::Handle,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RunningSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSim")
            .field("starttls_addr", &self.starttls_addr)
            .field("implicit_addr", &self.implicit_addr)
            .field("outbox", &self.outbox)
            .finish_non_exhaustive()
    }
}

impl RunningSim {
    /// The live fault handle: what SES does next, changed without a restart.
    pub fn faults(&self) -> LiveFaults {
        self.shared.faults.clone()
    }

    /// Starts recording (connections accepted from now on) and returns the recorder; later
    /// calls return the same one.
    pub fn record(&self) -> Recorder {
        self.shared.recorder.get_or_init(Recorder::new).clone()
    }

    /// The recorder, when recording was enabled.
    pub fn recorder(&self) -> Option<Recorder> {
        self.shared.recorder.get().cloned()
    }

    /// Stops accepting, gives sessions in flight a short grace period, then ends them.
    pub async fn shutdown(mut self) {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, self.server.shutdown()).await;
    }
}

/// A domain the embedded simulator treats as verified, with its DNS.
#[derive(Debug, Clone)]
pub struct EmbeddedDomain {
    pub name: String,
    pub mail_from: String,
    pub selectors: Vec<crate::dns::SelectorInfo>,
    /// The DMARC record; `v=DMARC1; p=none` when absent.
    pub dmarc: Option<String>,
}

/// The SMTP credentials of the embedded simulator's random account.
#[derive(Clone)]
pub struct EmbeddedCredentials {
    pub username: String,
    /// The SigV4 SMTP password for the simulator's region.
    pub password: String,
}

impl std::fmt::Debug for EmbeddedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedCredentials")
            .field("username", &self.username)
            .field("password", &"********")
            .finish()
    }
}

fn random_string(set: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| set[rng.random_range(0..set.len())] as char)
        .collect()
}

/// The SPF record SES publishes for its sending IPs (what `include:amazonses.com` reaches).
const AMAZONSES_SPF: &str = "v=spf1 ip4:199.255.192.0/22 ip4:199.127.232.0/22 ip4:54.240.0.0/18 \
                             ip4:69.169.224.0/20 ip4:23.249.208.0/20 ip4:23.251.224.0/19 \
                             ip4:76.223.176.0/20 ip4:54.240.64.0/19 ip4:54.240.96.0/19 \
                             ip4:52.82.172.0/22 ~all";

/// Starts a simulator with `settings`; `dns` joins the configured records in the verdict view.
pub async fn start(
    settings: SimSettings,
    dns: Vec<crate::dns::Record>,
) -> Result<RunningSim, SimError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SimError::Io { path, source }
    };
    // Certificates.
    let (chain, key_pem, ca_pem) = match &settings.tls {
        TlsSource::Generate { extra_names } => {
            let mut names = crate::tls::default_names(&settings.region);
            names.extend(extra_names.iter().cloned());
            let certs = crate::tls::generate_certs(&names)?;
            (
                certs.cert_chain_pem.into_bytes(),
                certs.key_pem.into_bytes(),
                certs.ca_pem,
            )
        }
        TlsSource::Files { cert, key } => (
            std::fs::read(cert).map_err(io_err(cert))?,
            std::fs::read(key).map_err(io_err(key))?,
            String::new(),
        ),
    };
    let server_config = crate::tls::server_config(&chain, &key_pem)?;
    let ca_path = match (&settings.ca_out, ca_pem.is_empty()) {
        (Some(path), false) => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            std::fs::write(path, ca_pem.as_bytes()).map_err(io_err(path))?;
            Some(path.clone())
        }
        _ => None,
    };

    // The verdict DNS view: configured records, the zone file, the caller's records, SES's.
    let mut records = settings.dns_records.clone();
    if let Some(zone) = &settings.dns_zone {
        let text = std::fs::read_to_string(zone).map_err(io_err(zone))?;
        let parsed = crate::dns::parse_zone(&text).map_err(|e| SimError::Zone {
            path: zone.clone(),
            message: e.to_string(),
        })?;
        records.extend(parsed);
    }
    records.extend(dns);
    // (The only place that looks inside `dns::Record`: SES's SPF records are added unless the
    // caller already supplied them, so `include:amazonses.com` resolves exactly once.)
    let has_txt = |name: &str| {
        records.iter().any(|r| {
            dns_name(&r.name) == dns_name(name)
                && matches!(&r.data, crate::dns::RecordData::Txt(t) if t.starts_with("v=spf1"))
        })
    };
    let add_ses_spf = !has_txt("amazonses.com");
    let region_domain = format!("{}.amazonses.com", settings.region);
    let add_region_spf = !has_txt(&region_domain);
    let mut view = DnsView::from_records(&records);
    let key = SesKey::generate()?;
    let ses_dkim_record = key.dns_record();
    view.add_txt(&ses_dkim_record.0, &ses_dkim_record.1);
    if add_ses_spf {
        view.add_txt("amazonses.com", AMAZONSES_SPF);
    }
    if add_region_spf && settings.region != "us-east-1" {
        view.add_txt(&region_domain, "v=spf1 include:amazonses.com ~all");
    }

    std::fs::create_dir_all(&settings.outbox).map_err(io_err(&settings.outbox))?;

    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })
    };
    let starttls = bind(settings.starttls_listen).await?;
    let starttls_addr = starttls.local_addr().map_err(|source| SimError::Bind {
        addr: settings.starttls_listen,
        source,
    })?;
    let (implicit, implicit_addr) = match settings.implicit_listen {
        Some(addr) => {
            let l = bind(addr).await?;
            let a = l
                .local_addr()
                .map_err(|source| SimError::Bind { addr, source })?;
            (Some(l), Some(a))
        }
        None => (None, None),
    };

    let shell = Arc::new(shell_settings(&settings, TlsAcceptor::from(server_config)));
    let shared = Arc::new(Shared {
        policy: Policy::from_settings(&settings),
        state: AccountState::new(&settings),
        key,
        dns: view,
        shell,
        settings,
        faults: LiveFaults::default(),
        recorder: std::sync::OnceLock::new(),
    });
    let mut listeners = vec![Listener::new(starttls, Mode::Plain)];
    if let Some(l) = implicit {
        listeners.push(Listener::new(l, Mode::ImplicitTls));
    }
    let server = server::spawn(
        listeners,
        Arc::new(super::connection::SimProtocol {
            shared: Arc::clone(&shared),
        }),
    );
    tracing::info!(
        %starttls_addr,
        implicit = ?implicit_addr,
        region = %shared.settings.region,
        outbox = %shared.settings.outbox.display(),
        "SES simulator listening"
    );
    Ok(RunningSim {
        starttls_addr,
        implicit_addr,
        ca_pem,
        ca_path,
        outbox: shared.settings.outbox.clone(),
        region: shared.settings.region.clone(),
        ses_dkim_record,
        server,
        shared,
    })
}

/// Starts the relay's embedded simulator: a fresh random account, `domains` verified with their
/// custom MAIL FROM, sandbox off, their DNS in the verdict view, loopback port 0, a fresh CA.
pub async fn start_embedded(
    mut settings: SimSettings,
    domains: &[EmbeddedDomain],
) -> Result<(RunningSim, EmbeddedCredentials), SimError> {
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let username = format!("AKIA{}", random_string(UPPER, 16));
    let secret = random_string(SECRET, 40);
    let password = crate::ses_password::smtp_password_v4(&secret, &settings.region);
    settings.accounts = vec![Account {
        access_key_id: username.clone(),
        secret: Secret::new(secret),
    }];
    settings.sandbox = false;
    settings.paused = false;
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.starttls_listen = loopback;
    settings.implicit_listen = Some(loopback);
    if !matches!(settings.tls, TlsSource::Generate { .. }) {
        settings.tls = TlsSource::Generate {
            extra_names: Vec::new(),
        };
    }
    let mut dns = Vec::new();
    for d in domains {
        let name = dns_name(&d.name);
        let mail_from = dns_name(&d.mail_from);
        if !settings.identities.contains(&name) {
            settings.identities.push(name.clone());
        }
        settings
            .mail_from
            .insert(name.clone(), mail_from.as_str().into());
        dns.extend(crate::dns::domain_records(
            &crate::dns::DomainRecordsInput {
                domain: name,
                mail_from,
                region: settings.region.clone(),
                selectors: d.selectors.clone(),
                dmarc: Some(d.dmarc.clone().unwrap_or_else(|| "v=DMARC1; p=none".into())),
            },
        ));
    }
    let sim = start(settings, dns).await?;
    Ok((sim, EmbeddedCredentials { username, password }))
}

/// The shell's settings for the simulator. SES differences from the relay, on purpose: no
/// per-IP limit, no pregreet delay, one idle timeout (restarted by any input) for commands and
/// for each DATA read (no total DATA or session limit), 2048-octet command lines (AUTH PLAIN initial responses),
/// bare CR/LF always refused, and the injected reply latency.
fn shell_settings(s: &SimSettings, acceptor: TlsAcceptor) -> server::Settings {
    server::Settings {
        hostname: session::SES_HOST.to_string(),
        max_connections: s.max_connections,
        max_connections_per_ip: usize::MAX,
        tls: Some(TlsSettings {
            acceptor,
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }),
        greeting_delay: Duration::ZERO,
        max_command_line: MAX_COMMAND_LINE,
        bare_newline: BareNewline::Reject,
        max_message_size: s.max_message_size,
        max_header_size: s.max_message_size,
        command_timeout: s.idle_timeout,
        command_timeout_is_idle: true,
        data_timeout: s.idle_timeout,
        data_total_timeout: None,
        min_data_rate: None,
        session_timeout: None,
        write_timeout: WRITE_TIMEOUT,
        reply_delay: s.faults.latency,
        shutdown_grace: SHUTDOWN_GRACE,
    }
}
