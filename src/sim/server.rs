//! The simulator's network shell: listeners (STARTTLS and implicit TLS), the connection limit,
//! real TLS via tokio-rustls, timers, and the end-of-data pipeline (rules → delivered form →
//! verdict → outbox). The protocol itself is in [`super::session`] and [`super::rules`].
//!
//! SES rules applied here (ses-smtp.md §1, §3, §8): `421 Too many concurrent SMTP connections`
//! over the limit; input pipelined behind STARTTLS is discarded before the handshake; after
//! the idle timeout (10 s by default) the server sends `451 4.4.2 Timeout waiting for data from
//! client.` unprompted and closes. Every network wait has a timeout. Secrets are never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::config::{Account, DropStage, SimSettings, TlsSource};
use super::deliver::{self, SesKey};
use super::outbox::{self, SimOutcome};
use super::rules::{self, AccountState, Decision};
use super::session::{self, Action, Policy, Session, Transaction};
use super::verdict::{self, DnsView};
use crate::secret::Secret;
use crate::smtp::codec::{BareNewline, DataReader, LineReader};
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
    acceptor: TlsAcceptor,
    connections: AtomicUsize,
    /// Turns true at shutdown: idle sessions close at once instead of waiting for input.
    stopping: watch::Receiver<bool>,
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
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
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
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut self.tasks);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE * 2, tasks.join_all()).await;
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.tasks.abort_all();
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
            r.name.trim_end_matches('.').eq_ignore_ascii_case(name)
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

    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        stopping: stop_rx.clone(),
        policy: Policy::from_settings(&settings),
        state: AccountState::new(&settings),
        key,
        dns: view,
        acceptor: TlsAcceptor::from(server_config),
        connections: AtomicUsize::new(0),
        settings,
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(accept_loop(
        starttls,
        shared.clone(),
        false,
        stop_rx.clone(),
    ));
    if let Some(l) = implicit {
        tasks.spawn(accept_loop(l, shared.clone(), true, stop_rx));
    }
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
        stop,
        tasks,
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
    let password = crate::sesauth::smtp_password_v4(&secret, &settings.region);
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
        let name = d.name.trim_end_matches('.').to_ascii_lowercase();
        let mail_from = d.mail_from.trim_end_matches('.').to_ascii_lowercase();
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

/// `dkim-relay ses-sim --config sim.toml`: runs until SIGINT or SIGTERM.
pub async fn run_standalone(config: &Path) -> anyhow::Result<()> {
    let mut settings = SimSettings::load_file(config).map_err(anyhow::Error::msg)?;
    if matches!(settings.tls, TlsSource::Generate { .. }) && settings.ca_out.is_none() {
        let base = config.parent().unwrap_or(Path::new("."));
        settings.ca_out = Some(base.join("ses-sim-ca.pem"));
    }
    if settings.accounts.is_empty() {
        tracing::warn!("no [accounts] configured: every AUTH will fail with 535");
    }
    for a in &settings.accounts {
        tracing::info!(access_key_id = %a.access_key_id, "account");
    }
    let sim = start(settings, Vec::new()).await?;
    tracing::info!(
        starttls = %sim.starttls_addr,
        implicit = ?sim.implicit_addr,
        ca = ?sim.ca_path,
        outbox = %sim.outbox.display(),
        "SES simulator running; Ctrl-C to stop"
    );
    wait_for_signal().await;
    tracing::info!("stopping the SES simulator");
    sim.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `dkim-relay ses-sim outbox list [--json]`.
pub fn outbox_list_cli(dir: &Path, json: bool) -> anyhow::Result<String> {
    let records = outbox::list(dir)?;
    Ok(if json {
        outbox::format_json(&records)
    } else if records.is_empty() {
        format!("outbox {} is empty\n", dir.display())
    } else {
        outbox::format_table(&records)
    })
}

/// `dkim-relay ses-sim outbox show ID [--json]`.
pub fn outbox_show_cli(dir: &Path, id: &str, json: bool) -> anyhow::Result<String> {
    let (record, eml) = outbox::show(dir, id)?;
    Ok(if json {
        serde_json::to_string_pretty(&record)?
    } else {
        outbox::format_show(&record, &eml)
    })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    implicit: bool,
    mut stop: watch::Receiver<bool>,
) {
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, peer)) => {
                    sessions.spawn(connection(sock, peer, shared.clone(), implicit));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    sessions.abort_all();
}

/// Decrements the connection count however the session ends.
struct Slot<'a>(&'a AtomicUsize);
impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(sock: TcpStream, peer: SocketAddr, shared: Arc<Shared>, implicit: bool) {
    let _ = sock.set_nodelay(true);
    let count = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
    let _slot = Slot(&shared.connections);
    let faults = &shared.settings.faults;
    if count > shared.settings.max_connections {
        let mut sock = sock;
        let _ = send(&mut sock, &session::too_many_connections(), faults.latency).await;
        let _ = tokio::time::timeout(WRITE_TIMEOUT, sock.shutdown()).await;
        return;
    }
    if faults.drop_at == Some(DropStage::Connect) {
        return;
    }
    let mut session = Session::new(shared.policy.clone(), implicit);
    if implicit {
        let Some(tls) = handshake(&shared, sock, peer).await else {
            return;
        };
        run(tls, &mut session, &shared, peer, true).await;
        return;
    }
    match run(sock, &mut session, &shared, peer, true).await {
        End::Closed => {}
        End::StartTls(sock) => {
            let Some(tls) = handshake(&shared, sock, peer).await else {
                return;
            };
            session.tls_started();
            run(tls, &mut session, &shared, peer, false).await;
        }
    }
}

async fn handshake(
    shared: &Shared,
    sock: TcpStream,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, shared.acceptor.accept(sock)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

enum End<S> {
    Closed,
    StartTls(S),
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    reply: &Reply,
    latency: Duration,
) -> std::io::Result<()> {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let bytes = session::wire(reply);
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(&bytes).await?;
        stream.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

enum Read {
    Data,
    Eof,
    Idle,
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    idle: Duration,
    stopping: &mut watch::Receiver<bool>,
) -> Read {
    let mut chunk = [0u8; 16 * 1024];
    tokio::select! {
        r = tokio::time::timeout(idle, stream.read(&mut chunk)) => match r {
            Ok(Ok(0)) | Ok(Err(_)) => Read::Eof,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                Read::Data
            }
            Err(_) => Read::Idle,
        },
        // Shutting down: a session waiting for input has nothing in flight.
        _ = stopping.wait_for(|v| *v) => Read::Eof,
    }
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

/// Drives one leg of a session (plaintext or TLS) until it closes or upgrades.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    session: &mut Session,
    shared: &Shared,
    peer: SocketAddr,
    greet: bool,
) -> End<S> {
    let settings = &shared.settings;
    let latency = settings.faults.latency;
    let idle = settings.idle_timeout;
    if greet
        && send(&mut stream, &session::banner(), latency)
            .await
            .is_err()
    {
        return End::Closed;
    }
    let mut stopping = shared.stopping.clone();
    let mut buf: Vec<u8> = Vec::new();
    let mut lines = LineReader::new(MAX_COMMAND_LINE, BareNewline::Reject);
    loop {
        while let Some(next) = lines.next_line(&mut buf) {
            let action = match next {
                Ok(line) => {
                    if !session.in_auth()
                        && let Some(stage) = drop_stage_of(&session::verb(&line))
                        && settings.faults.drop_at == Some(stage)
                    {
                        tracing::debug!(%peer, ?stage, "fault injection: dropping connection");
                        return End::Closed;
                    }
                    session.on_line(&line)
                }
                Err(e) => session.on_line_error(e),
            };
            match action {
                Action::Reply(r) => {
                    if send(&mut stream, &r, latency).await.is_err() {
                        return End::Closed;
                    }
                }
                Action::Close(r) => {
                    let _ = send(&mut stream, &r, latency).await;
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
                    return End::Closed;
                }
                Action::StartTls(r) => {
                    if send(&mut stream, &r, latency).await.is_err() {
                        return End::Closed;
                    }
                    // RFC 3207 §4.2 / SMTP smuggling: nothing sent before the handshake counts.
                    return End::StartTls(stream);
                }
                Action::Data(r) => {
                    if send(&mut stream, &r, latency).await.is_err() {
                        return End::Closed;
                    }
                    let mut reader = DataReader::new(
                        BareNewline::Reject,
                        settings.max_message_size,
                        settings.max_message_size,
                    );
                    loop {
                        let (used, done) = reader.feed(&buf);
                        buf.drain(..used);
                        if done {
                            break;
                        }
                        match read_more(&mut stream, &mut buf, idle, &mut stopping).await {
                            Read::Data => {}
                            Read::Eof => return End::Closed,
                            Read::Idle => {
                                let _ = send(&mut stream, &session::idle_timeout(), latency).await;
                                return End::Closed;
                            }
                        }
                    }
                    let size = reader.size();
                    let data = reader.finish();
                    let tx = session.end_of_data();
                    if settings.faults.drop_at == Some(DropStage::Eod) {
                        return End::Closed;
                    }
                    let reply = match rules::decide(settings, &shared.state, &tx, data, size) {
                        Decision::Drop => return End::Closed,
                        Decision::Reject(r) => {
                            tracing::info!(%peer, reply = %r.one_line(), "message refused");
                            r
                        }
                        Decision::Accept(message) => {
                            match accept(shared, peer, &tx, message).await {
                                Ok(id) => {
                                    session.accepted();
                                    Reply::plain(250, format!("Ok {id}"))
                                }
                                Err(e) => {
                                    tracing::warn!(%peer, error = %e, "cannot store message");
                                    Reply::plain(451, "Temporary service failure")
                                }
                            }
                        }
                    };
                    if send(&mut stream, &reply, latency).await.is_err() {
                        return End::Closed;
                    }
                }
            }
        }
        match read_more(&mut stream, &mut buf, idle, &mut stopping).await {
            Read::Data => {}
            Read::Eof => return End::Closed,
            Read::Idle => {
                let _ = send(&mut stream, &session::idle_timeout(), latency).await;
                let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.shutdown()).await;
                return End::Closed;
            }
        }
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
