//! The simulator as a protocol of the one server shell (`crate::server`): its shell settings
//! (from `SimSettings`), its handler (the SES session of [`super::session`] plus fault
//! injection), the end-of-data pipeline (rules → delivered form → verdict → outbox), and the
//! start functions (`start`, `start_embedded`; the standalone start, which reads its file, is
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

use chrono::Utc;
use rand::Rng;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::config::{Account, DropStage, SimSettings, TlsSource};
use super::deliver::{self, SesKey};
use super::outbox::{self, SimOutcome};
use super::rules::{self, AccountState, Decision};
use super::session::{self, Policy, Session, Transaction};
use super::verdict;
use crate::dns::DnsView;
use crate::domain_name::dns_name;
use crate::secret::Secret;
use crate::server::{self, Action, Listener, Mode, Notice, Peer, TlsSettings};
use crate::smtp::codec::{BareNewline, DataError, LineError};
use crate::smtp::reply::Reply;

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
struct Shared {
    settings: SimSettings,
    policy: Policy,
    state: AccountState,
    key: SesKey,
    dns: DnsView,
    /// The shell's settings, built once from `settings`.
    shell: Arc<server::Settings>,
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
    });
    let mut listeners = vec![Listener::new(starttls, Mode::Plain)];
    if let Some(l) = implicit {
        listeners.push(Listener::new(l, Mode::ImplicitTls));
    }
    let server = server::spawn(
        listeners,
        Arc::new(SimProtocol {
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

fn drop_stage_of(verb: &str) -> Option<DropStage> {
    Some(match verb {
        "EHLO" | "HELO" => DropStage::Ehlo,
        "STARTTLS" => DropStage::StartTls,
        "AUTH" => DropStage::Auth,
        "MAIL" => DropStage::Mail,
        "RCPT" => DropStage::Rcpt,
        "DATA" => DropStage::Data,
        _ => return None,
    })
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

/// The simulator as a protocol of the server shell.
struct SimProtocol {
    shared: Arc<Shared>,
}

impl server::Protocol for SimProtocol {
    type Handler = SimHandler;

    fn settings(&self) -> Arc<server::Settings> {
        Arc::clone(&self.shared.shell)
    }

    fn accept(&self, peer: Peer) -> (Arc<server::Settings>, SimHandler) {
        let handler = SimHandler {
            session: Session::new(self.shared.policy.clone(), false),
            shared: Arc::clone(&self.shared),
            peer: peer.addr,
        };
        (Arc::clone(&self.shared.shell), handler)
    }
}

/// One simulator connection: the SES session plus the end-of-data pipeline.
struct SimHandler {
    shared: Arc<Shared>,
    session: Session,
    peer: SocketAddr,
}

impl SimHandler {
    fn faults_drop_at(&self, stage: DropStage) -> bool {
        self.shared.settings.faults.drop_at == Some(stage)
    }
}

impl server::Handler for SimHandler {
    fn greeting(&mut self) -> Action {
        if self.faults_drop_at(DropStage::Connect) {
            return Action::Drop;
        }
        Action::Reply(session::banner())
    }

    async fn command(&mut self, line: Result<Vec<u8>, LineError>) -> Action {
        let action = match line {
            Ok(line) => {
                if !self.session.in_auth()
                    && let Some(stage) = drop_stage_of(&session::verb(&line))
                    && self.faults_drop_at(stage)
                {
                    tracing::debug!(peer = %self.peer, ?stage, "fault injection: dropping connection");
                    return Action::Drop;
                }
                self.session.on_line(&line)
            }
            Err(e) => self.session.on_line_error(e),
        };
        match action {
            session::Action::Reply(r) => Action::Reply(r),
            session::Action::Close(r) => Action::Close(r),
            session::Action::StartTls(r) => Action::StartTls(r),
            session::Action::Data(r) => Action::StartData(r),
        }
    }

    async fn data(&mut self, data: Result<Vec<u8>, DataError>, size: usize) -> Action {
        let tx = self.session.end_of_data();
        if self.faults_drop_at(DropStage::Eod) {
            return Action::Drop;
        }
        let shared = &self.shared;
        let peer = self.peer;
        let reply = match rules::decide(&shared.settings, &shared.state, &tx, data, size) {
            Decision::Drop => return Action::Drop,
            Decision::Reject(r) => {
                tracing::info!(%peer, reply = %r.one_line(), "message refused");
                r
            }
            Decision::Accept(message) => match accept(shared, peer, &tx, message).await {
                Ok(id) => {
                    self.session.accepted();
                    Reply::plain(250, format!("Ok {id}"))
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "cannot store message");
                    Reply::plain(451, "Temporary service failure")
                }
            },
        };
        Action::Reply(reply)
    }

    fn tls_started(&mut self) {
        self.session.tls_started();
    }

    fn in_transaction(&self) -> bool {
        self.session.in_transaction()
    }

    fn notice(&mut self, notice: Notice) -> Option<Reply> {
        match notice {
            Notice::TooManyConnections => Some(session::too_many_connections()),
            Notice::CommandTimeout | Notice::DataTimeout | Notice::DataTooSlow => {
                Some(session::idle_timeout())
            }
            // SES has no greeting delay; at shutdown an idle session just closes.
            Notice::Pregreet | Notice::ShuttingDown => None,
        }
    }

    fn wire(&self, reply: &Reply) -> Vec<u8> {
        session::wire(reply)
    }
}

/// Produces the delivered form, asks for a verdict and stores both. Returns the SES ID.
async fn accept(
    shared: &Shared,
    peer: SocketAddr,
    tx: &Transaction,
    message: crate::message::headers::Message,
) -> anyhow::Result<String> {
    let settings = &shared.settings;
    let now = Utc::now();
    let id = deliver::new_message_id(now);
    let header_from = rules::header_text(&message, "From");
    let from_addr = header_from
        .as_deref()
        .and_then(|f| rules::addresses(f).into_iter().next());
    let subject = rules::header_text(&message, "Subject");
    let delivered = deliver::deliver(
        settings,
        &shared.key,
        message,
        &id,
        now,
        from_addr.as_deref(),
        &tx.mail_from,
    )?;
    let verdict = verdict::verdict(
        &delivered.bytes,
        &delivered.envelope_from,
        std::net::IpAddr::from(verdict::SES_SENDING_IP),
        &shared.dns,
    )
    .await;
    let record = outbox::Record {
        id: id.clone(),
        time: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        client: peer.to_string(),
        user: tx.user.clone(),
        mail_from: tx.mail_from.clone(),
        envelope_from: delivered.envelope_from.clone(),
        recipients: tx.rcpts.clone(),
        size: delivered.bytes.len(),
        mailbox_simulator: tx
            .rcpts
            .iter()
            .filter_map(|r| {
                deliver::mailbox_simulator_outcome(r).map(|o| SimOutcome {
                    recipient: r.clone(),
                    outcome: o.to_string(),
                })
            })
            .collect(),
        subject,
        header_from,
        verdict,
    };
    let dir = settings.outbox.clone();
    let bytes = delivered.bytes;
    let record =
        tokio::task::spawn_blocking(move || outbox::write(&dir, &record, &bytes).map(|()| record))
            .await??;
    tracing::info!(
        %peer,
        id = %id,
        mail_from = %record.mail_from,
        envelope_from = %record.envelope_from,
        recipients = record.recipients.len(),
        "message accepted"
    );
    Ok(id)
}
