//! Shared harness for the hermetic end-to-end tests: test PKI (rcgen), a scripted fake SES
//! SMTP server with real TLS ([`TestUpstream`]), an in-process relay on `127.0.0.1:0`
//! ([`TestRelay`]), a small SMTP client, and two independent DKIM verifiers (mail-auth through
//! the project's offline verdict engine, and dkimpy through `/usr/bin/python3`).
//!
//! Everything listens on loopback, port 0; nothing touches the network or real DNS.
//! Set `DKIM_RELAY_CAPTURE_DIR` to have every message the fake upstream receives written there
//! as `<n>.eml`; set `DKIM_RELAY_REQUIRE_DKIMPY=1` to make a missing dkimpy a failure.

pub mod config;
pub mod dns_server;
pub mod sim;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use dkim_relay::config::reload::Live;
use dkim_relay::dkim::Algorithm;
use dkim_relay::dkim::keygen::{self, GeneratedKey};
use dkim_relay::relay::Relay;
use dkim_relay::server::{self, Stopped};
use dkim_relay::sim::verdict::{DkimVerdict, DnsView, verdict};
use dkim_relay::smtp::codec::{BareNewline, DataReader, LineReader, dot_stuff};
use dkim_relay::smtp::reply::{Reply, ReplyParser};

// ---------------------------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------------------------

/// A test CA and a leaf certificate for `localhost` / `127.0.0.1` signed by it.
pub struct Pki {
    pub ca_pem: String,
    pub leaf_chain: Vec<CertificateDer<'static>>,
    pub leaf_key_der: Vec<u8>,
}

impl Pki {
    pub fn new(ca_name: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name.to_string());
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");

        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca)
            .expect("leaf certificate");
        Pki {
            ca_pem: ca.pem(),
            leaf_chain: vec![leaf.der().clone()],
            leaf_key_der: leaf_key.serialize_der(),
        }
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key_der.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.leaf_chain.clone(), key)
            .expect("server certificate");
        TlsAcceptor::from(Arc::new(config))
    }
}

// ---------------------------------------------------------------------------------------------
// The scripted fake SES upstream
// ---------------------------------------------------------------------------------------------

/// How the fake upstream speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKind {
    /// Plaintext greeting, STARTTLS offered (SES ports 25/587/2587).
    StartTls,
    /// TLS from the first byte (SES ports 465/2465).
    Implicit,
    /// STARTTLS is never offered (a downgrade attack, or the wrong server).
    NoStartTls,
    /// STARTTLS offered, but the certificate comes from a CA the relay does not trust.
    Untrusted,
}

/// What the fake upstream answers at the end of DATA.
#[derive(Debug, Clone)]
pub enum Final {
    /// `250 Ok <SES-shaped id>`.
    Ok,
    /// This exact reply line, e.g. `454 Throttling failure: Maximum sending rate exceeded.`.
    Reply(String),
    /// Close the connection without answering.
    Drop,
    /// `250 Ok <id>`, then close the connection (SES dropping a pooled connection).
    OkThenClose,
    /// Never answer (the relay's data timeout must fire).
    Silent,
}

/// One message the fake upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which connection (0-based, in accept order).
    pub conn: usize,
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// The message as the upstream sees it (dot-stuffing removed).
    pub data: Vec<u8>,
    pub tls: bool,
    pub auth_user: Option<String>,
    /// The reply line sent for it (empty when dropped).
    pub reply: String,
}

/// One command line as received, with whether TLS was active at that point.
#[derive(Debug, Clone)]
pub struct Command {
    pub conn: usize,
    pub tls: bool,
    pub line: String,
}

#[derive(Default)]
struct UpstreamState {
    connections: usize,
    commands: Vec<Command>,
    received: Vec<Received>,
    finals: VecDeque<Final>,
    /// Close the connection (no reply) on the next N MAIL commands.
    drop_on_mail: usize,
    /// Answer the next MAIL with this reply line, then close the connection.
    mail_reply_then_close: Option<String>,
}

/// Settings for [`TestUpstream::start`].
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    pub tls: TlsKind,
    pub user: String,
    pub password: String,
    /// What `250-AUTH …` advertises.
    pub auth_mechs: String,
    pub finals: Vec<Final>,
    /// Written in the same packet right after `220 Ready to start TLS` (plaintext injected
    /// before the handshake; the relay must discard it).
    pub starttls_trailer: Option<String>,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            tls: TlsKind::StartTls,
            user: "AKIAEXAMPLETEST".into(),
            password: "BTestSmtpPassword0123456789".into(),
            auth_mechs: "PLAIN LOGIN".into(),
            finals: Vec::new(),
            starttls_trailer: None,
        }
    }
}

/// A scripted fake SES SMTP endpoint on `127.0.0.1:0` with real TLS.
pub struct TestUpstream {
    pub addr: SocketAddr,
    /// PEM of the CA the relay should trust (for `Untrusted`, *not* the one that signed the
    /// server certificate).
    pub ca_pem: String,
    pub options: UpstreamOptions,
    state: Arc<Mutex<UpstreamState>>,
    task: JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

static CAPTURED: AtomicUsize = AtomicUsize::new(0);

fn capture(data: &[u8]) {
    if let Some(dir) = std::env::var_os("DKIM_RELAY_CAPTURE_DIR") {
        let dir = PathBuf::from(dir);
        let _ = std::fs::create_dir_all(&dir);
        let n = CAPTURED.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = std::fs::write(dir.join(format!("{n}.eml")), data);
    }
}

fn ses_message_id() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    let hex = |rng: &mut rand::rngs::ThreadRng, n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
            .collect()
    };
    format!(
        "010001{}-{}-{}-{}-{}-{}-000000",
        hex(&mut rng, 10),
        hex(&mut rng, 8),
        hex(&mut rng, 4),
        hex(&mut rng, 4),
        hex(&mut rng, 4),
        hex(&mut rng, 12)
    )
}

impl TestUpstream {
    pub async fn start(options: UpstreamOptions) -> TestUpstream {
        let trusted = Pki::new("dkim-relay test CA");
        let acceptor = if options.tls == TlsKind::Untrusted {
            Pki::new("somebody else's CA").acceptor()
        } else {
            trusted.acceptor()
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(Mutex::new(UpstreamState {
            finals: options.finals.iter().cloned().collect(),
            ..Default::default()
        }));
        let task = {
            let state = Arc::clone(&state);
            let options = options.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    let conn = {
                        let mut s = state.lock().unwrap();
                        s.connections += 1;
                        s.connections - 1
                    };
                    let cx = ConnCx {
                        conn,
                        state: Arc::clone(&state),
                        options: options.clone(),
                        auth_user: None,
                    };
                    tokio::spawn(serve_connection(tcp, acceptor.clone(), cx));
                }
            })
        };
        TestUpstream {
            addr,
            ca_pem: trusted.ca_pem,
            options,
            state,
            task,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Every command line received so far (AUTH payload lines included).
    pub fn commands(&self) -> Vec<Command> {
        self.state.lock().unwrap().commands.clone()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Appends a final reply to the script.
    pub fn push_final(&self, f: Final) {
        self.state.lock().unwrap().finals.push_back(f);
    }

    /// Closes the connection (without a reply) on the next `n` MAIL commands.
    pub fn drop_on_next_mail(&self, n: usize) {
        self.state.lock().unwrap().drop_on_mail = n;
    }

    /// Answers the next MAIL with `reply` (e.g. SES's per-session cap, a 421) and closes.
    pub fn reply_to_next_mail_then_close(&self, reply: &str) {
        self.state.lock().unwrap().mail_reply_then_close = Some(reply.to_string());
    }

    /// Whether any AUTH verb (or AUTH payload) arrived outside TLS.
    pub fn plaintext_auth_seen(&self) -> bool {
        self.commands()
            .iter()
            .any(|c| !c.tls && c.line.to_ascii_uppercase().starts_with("AUTH"))
    }

    /// Whether any AUTH verb arrived at all.
    pub fn auth_seen(&self) -> bool {
        self.commands()
            .iter()
            .any(|c| c.line.to_ascii_uppercase().starts_with("AUTH"))
    }
}

struct ConnCx {
    conn: usize,
    state: Arc<Mutex<UpstreamState>>,
    options: UpstreamOptions,
    auth_user: Option<String>,
}

async fn serve_connection(tcp: TcpStream, acceptor: TlsAcceptor, mut cx: ConnCx) {
    match cx.options.tls {
        TlsKind::Implicit => {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = serve(tls, true, &mut cx).await;
        }
        _ => {
            if let Some(tcp) = serve(tcp, false, &mut cx).await {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = serve(tls, true, &mut cx).await;
            }
        }
    }
}

struct Wire<S> {
    stream: S,
    buf: Vec<u8>,
    lines: LineReader,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(l) = self.lines.next_line(&mut self.buf) {
                return l.ok().map(|b| String::from_utf8_lossy(&b).into_owned());
            }
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    async fn data(&mut self) -> Option<Vec<u8>> {
        let mut reader = DataReader::new(BareNewline::Reject, 256 * 1024 * 1024, 64 * 1024 * 1024);
        let (used, mut done) = reader.feed(&self.buf);
        self.buf.drain(..used);
        while !done {
            let mut chunk = [0u8; 16384];
            let n = match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            let (used, end) = reader.feed(&chunk[..n]);
            done = end;
            if end {
                self.buf.extend_from_slice(&chunk[used..n]);
            }
        }
        reader.finish().ok()
    }

    async fn reply(&mut self, code: u16, text: &str) -> bool {
        self.send(&Reply::plain(code, text).to_wire()).await
    }

    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok() && self.stream.flush().await.is_ok()
    }
}

/// Serves one leg of a connection (plaintext or TLS). Returns the plain stream when the client
/// asked for STARTTLS, to be wrapped and served again.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    tls: bool,
    cx: &mut ConnCx,
) -> Option<S> {
    let mut w = Wire {
        stream,
        buf: Vec::new(),
        lines: LineReader::new(8192, BareNewline::Reject),
    };
    if !tls || cx.options.tls == TlsKind::Implicit {
        let banner =
            "email-smtp.amazonaws.com ESMTP SimpleEmailService-d-TESTBANNR A1b2C3d4E5f6G7h8I9j0";
        if !w.reply(220, banner).await {
            return None;
        }
    }
    let mut mail_from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let line = w.line().await?;
        cx.state.lock().unwrap().commands.push(Command {
            conn: cx.conn,
            tls,
            line: line.clone(),
        });
        let upper = line.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("").to_string();
        match verb.as_str() {
            "EHLO" | "HELO" => {
                let mut lines = vec!["email-smtp.amazonaws.com".to_string(), "8BITMIME".into()];
                if !tls && cx.options.tls != TlsKind::NoStartTls {
                    lines.push("STARTTLS".into());
                }
                lines.push(format!("AUTH {}", cx.options.auth_mechs));
                lines.push("Ok".into());
                if !w.send(&Reply::multi(250, lines).to_wire()).await {
                    return None;
                }
            }
            "STARTTLS" => {
                if tls || cx.options.tls == TlsKind::NoStartTls {
                    w.reply(502, "5.5.1 Unrecognized command").await;
                    continue;
                }
                let mut ready = Reply::plain(220, "Ready to start TLS").to_wire();
                if let Some(t) = &cx.options.starttls_trailer {
                    ready.extend_from_slice(t.as_bytes());
                }
                if !w.send(&ready).await {
                    return None;
                }
                return Some(w.stream);
            }
            "AUTH" => {
                if !tls {
                    w.reply(530, "Must issue a STARTTLS command first").await;
                    continue;
                }
                let mut parts = line.split_ascii_whitespace().skip(1);
                let mech = parts.next().unwrap_or("").to_ascii_uppercase();
                let initial = parts.next().map(str::to_string);
                let decode = |s: &str| {
                    B64.decode(s.trim())
                        .ok()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                };
                let creds: Option<(String, String)> = match mech.as_str() {
                    "PLAIN" => {
                        let token = match initial {
                            Some(t) => t,
                            None => {
                                w.reply(334, "").await;
                                let l = w.line().await?;
                                cx.state.lock().unwrap().commands.push(Command {
                                    conn: cx.conn,
                                    tls,
                                    line: format!("AUTH-DATA {l}"),
                                });
                                l
                            }
                        };
                        decode(&token).and_then(|s| {
                            let mut it = s.split('\0');
                            let _authz = it.next()?;
                            let user = it.next()?.to_string();
                            let pass = it.next()?.to_string();
                            Some((user, pass))
                        })
                    }
                    "LOGIN" => {
                        w.reply(334, "VXNlcm5hbWU6").await;
                        let u = w.line().await?;
                        w.reply(334, "UGFzc3dvcmQ6").await;
                        let p = w.line().await?;
                        cx.state.lock().unwrap().commands.push(Command {
                            conn: cx.conn,
                            tls,
                            line: "AUTH-DATA (login)".into(),
                        });
                        match (decode(&u), decode(&p)) {
                            (Some(u), Some(p)) => Some((u, p)),
                            _ => None,
                        }
                    }
                    _ => {
                        w.reply(504, "Unrecognized authentication type").await;
                        continue;
                    }
                };
                match creds {
                    Some((u, p)) if u == cx.options.user && p == cx.options.password => {
                        cx.auth_user = Some(u);
                        w.reply(235, "Authentication successful.").await;
                    }
                    _ => {
                        w.reply(535, "Authentication Credentials Invalid").await;
                    }
                }
            }
            "MAIL" => {
                if !tls {
                    w.reply(530, "Must issue a STARTTLS command first").await;
                    continue;
                }
                if cx.auth_user.is_none() {
                    w.reply(530, "Authentication required").await;
                    continue;
                }
                let close_with = {
                    let mut s = cx.state.lock().unwrap();
                    if s.drop_on_mail > 0 {
                        s.drop_on_mail -= 1;
                        return None;
                    }
                    s.mail_reply_then_close.take()
                };
                if let Some(reply) = close_with {
                    let _ = w.send(format!("{reply}\r\n").as_bytes()).await;
                    let _ = w.stream.shutdown().await;
                    return None;
                }
                mail_from = Some(angle(&line));
                rcpts.clear();
                w.reply(250, "Ok").await;
            }
            "RCPT" => {
                rcpts.push(angle(&line));
                w.reply(250, "Ok").await;
            }
            "DATA" => {
                if mail_from.is_none() || rcpts.is_empty() {
                    w.reply(503, "Bad sequence of commands").await;
                    continue;
                }
                w.reply(354, "End data with <CR><LF>.<CR><LF>").await;
                let data = w.data().await?;
                capture(&data);
                let fin = cx.state.lock().unwrap().finals.pop_front();
                let fin = fin.unwrap_or(Final::Ok);
                let reply = match &fin {
                    Final::Ok | Final::OkThenClose => format!("250 Ok {}", ses_message_id()),
                    Final::Reply(r) => r.clone(),
                    Final::Drop | Final::Silent => String::new(),
                };
                cx.state.lock().unwrap().received.push(Received {
                    conn: cx.conn,
                    mail_from: mail_from.take().unwrap_or_default(),
                    rcpts: std::mem::take(&mut rcpts),
                    data,
                    tls,
                    auth_user: cx.auth_user.clone(),
                    reply: reply.clone(),
                });
                match fin {
                    Final::Drop => return None,
                    Final::Silent => {
                        // Hold the connection open until the peer gives up.
                        let mut sink = [0u8; 1024];
                        while let Ok(n) = w.stream.read(&mut sink).await {
                            if n == 0 {
                                break;
                            }
                        }
                        return None;
                    }
                    _ => {
                        if !w.send(format!("{reply}\r\n").as_bytes()).await {
                            return None;
                        }
                    }
                }
                if matches!(fin, Final::OkThenClose) {
                    let _ = w.stream.shutdown().await;
                    return None;
                }
            }
            "RSET" => {
                mail_from = None;
                rcpts.clear();
                w.reply(250, "Ok").await;
            }
            "NOOP" => {
                w.reply(250, "Ok").await;
            }
            "QUIT" => {
                w.reply(221, "Bye").await;
                let _ = w.stream.shutdown().await;
                return None;
            }
            _ => {
                w.reply(500, "Unrecognized command").await;
            }
        }
    }
}

/// The address between `<` and `>` of a MAIL or RCPT line.
fn angle(line: &str) -> String {
    match (line.find('<'), line.rfind('>')) {
        (Some(a), Some(b)) if b > a => line[a + 1..b].to_string(),
        _ => String::new(),
    }
}

/// A port on which nothing listens (bound, then closed).
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// ---------------------------------------------------------------------------------------------
// The relay under test
// ---------------------------------------------------------------------------------------------

/// The keys a test relay signs with.
pub struct Keys {
    /// `s1._domainkey.example.org`, RSA-2048.
    pub org_rsa: GeneratedKey,
    /// `e1._domainkey.example.org`, Ed25519.
    pub org_ed: GeneratedKey,
    /// `e1._domainkey.example.net`, Ed25519 (an Ed25519-only domain).
    pub net_ed: GeneratedKey,
}

impl Keys {
    /// The keys every test relay of this process signs with: generated once (RSA-2048
    /// generation is the slowest step of starting a relay), shared by every test.
    pub fn shared() -> &'static Keys {
        static KEYS: std::sync::OnceLock<Keys> = std::sync::OnceLock::new();
        KEYS.get_or_init(Keys::generate)
    }

    pub fn generate() -> Keys {
        Keys {
            org_rsa: keygen::generate(Algorithm::RsaSha256, 2048).expect("RSA key"),
            org_ed: keygen::generate(Algorithm::Ed25519Sha256, 0).expect("Ed25519 key"),
            net_ed: keygen::generate(Algorithm::Ed25519Sha256, 0).expect("Ed25519 key"),
        }
    }

    /// The DKIM TXT records a receiver would find: (name, value).
    pub fn dns(&self) -> Vec<(String, String)> {
        vec![
            (
                "s1._domainkey.example.org".into(),
                keygen::dkim_txt_value(Algorithm::RsaSha256, &self.org_rsa.public_key),
            ),
            (
                "e1._domainkey.example.org".into(),
                keygen::dkim_txt_value(Algorithm::Ed25519Sha256, &self.org_ed.public_key),
            ),
            (
                "e1._domainkey.example.net".into(),
                keygen::dkim_txt_value(Algorithm::Ed25519Sha256, &self.net_ed.public_key),
            ),
        ]
    }
}

/// Where the relay sends, and how.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    pub upstream_port: u16,
    /// `"starttls"` or `"implicit"`.
    pub tls: &'static str,
    pub ca_pem: String,
    pub username: String,
    pub password: String,
    /// `"ses"` (default) or `"generic"`: under generic, example.org signs with s1 and e1.
    pub profile: &'static str,
    pub envelope_local_part: Option<String>,
    pub max_message_size: Option<usize>,
    /// `[upstream] data_timeout_secs` (10 when unset).
    pub upstream_data_timeout_secs: Option<u64>,
    /// Extra keys for the `[upstream]` table (pool settings and such).
    pub upstream_extra: toml::Table,
    /// Extra keys for the `[server]` table.
    pub server_extra: toml::Table,
    /// `[[server.users]]` entries.
    pub users: Vec<config::User>,
    /// A certificate for the relay's own listener (`[server.tls]`).
    pub listener_tls: ListenerTls,
}

/// Whether the relay under test has a listener certificate, and an implicit-TLS listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerTls {
    #[default]
    None,
    StartTls,
    StartTlsAndImplicit,
}

impl RelayOptions {
    /// Options that talk to `upstream` with its credentials.
    pub fn for_upstream(upstream: &TestUpstream) -> RelayOptions {
        RelayOptions {
            upstream_port: upstream.port(),
            tls: if upstream.options.tls == TlsKind::Implicit {
                "implicit"
            } else {
                "starttls"
            },
            ca_pem: upstream.ca_pem.clone(),
            username: upstream.options.user.clone(),
            password: upstream.options.password.clone(),
            profile: "ses",
            envelope_local_part: None,
            max_message_size: None,
            upstream_data_timeout_secs: None,
            upstream_extra: toml::Table::new(),
            server_extra: toml::Table::new(),
            users: Vec::new(),
            listener_tls: ListenerTls::None,
        }
    }
}

/// A relay running in-process on `127.0.0.1:<ephemeral>`.
pub struct TestRelay {
    pub addr: SocketAddr,
    /// The implicit-TLS listener, with `ListenerTls::StartTlsAndImplicit`.
    pub implicit_addr: Option<SocketAddr>,
    /// The CA that signed the relay's listener certificate (with `listener_tls`).
    pub listener_ca_pem: Option<String>,
    pub live: Live,
    pub config_path: PathBuf,
    pub keys: &'static Keys,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Stopped>>,
}

impl TestRelay {
    /// The configuration file `options` describe (typed, serialized with `toml`).
    pub fn config_text(options: &RelayOptions, dir: &Path) -> String {
        config::relay_config(options, dir)
    }

    pub async fn start(options: RelayOptions) -> TestRelay {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = Keys::shared();
        for (file, key) in [
            ("keys/org-s1.pem", &keys.org_rsa),
            ("keys/org-e1.pem", &keys.org_ed),
            ("keys/net-e1.pem", &keys.net_ed),
        ] {
            keygen::write_private_key(&dir.path().join(file), &key.pkcs8_pem).expect("write key");
        }
        std::fs::write(dir.path().join("upstream-ca.pem"), &options.ca_pem).expect("write CA");
        let listener_ca_pem = if options.listener_tls != ListenerTls::None {
            let certs = dkim_relay::tls::generate_certs(&["localhost".into(), "127.0.0.1".into()])
                .expect("listener certificate");
            std::fs::write(dir.path().join("relay-cert.pem"), &certs.cert_chain_pem)
                .expect("write cert");
            std::fs::write(dir.path().join("relay-key.pem"), &certs.key_pem).expect("write key");
            Some(certs.ca_pem)
        } else {
            None
        };
        let config_path = dir.path().join("config.toml");
        let text = Self::config_text(&options, dir.path());
        std::fs::write(&config_path, &text).expect("write config");
        let snapshot = match dkim_relay::config::load_str(&config_path, &text) {
            Ok(s) => s,
            Err(diags) => panic!(
                "test config does not load:\n{}",
                diags
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        };
        let listeners = server::bind_all(&snapshot.server)
            .await
            .expect("bind relay");
        let addr = listeners[0].tcp.local_addr().expect("relay addr");
        let implicit_addr = listeners
            .iter()
            .find(|l| l.mode == server::connection::Mode::ImplicitTls)
            .map(|l| l.tcp.local_addr().expect("implicit addr"));
        let live = Live::new(&config_path, snapshot);
        let relay = Relay::new(None);
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::run_listeners(
            listeners,
            live.clone(),
            relay,
            async move {
                let _ = rx.await;
            },
        ));
        TestRelay {
            addr,
            implicit_addr,
            listener_ca_pem,
            live,
            config_path,
            keys,
            dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn dns(&self) -> Vec<(String, String)> {
        self.keys.dns()
    }

    /// Sends the shutdown signal (without waiting).
    pub fn signal_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for `server::run` to return.
    pub async fn stopped(&mut self) -> Stopped {
        self.signal_shutdown();
        let handle = self.handle.take().expect("relay already stopped");
        handle.await.expect("relay task panicked")
    }

    /// Sends one message through a fresh connection; returns the final reply (after DATA,
    /// or the first refusal).
    pub async fn send(&self, mail_from: &str, rcpts: &[&str], message: &[u8]) -> Reply {
        let mut c = SmtpClient::connect(self.addr).await;
        let r = c.transaction(mail_from, rcpts, message).await;
        c.quit().await;
        r
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        if let Some(h) = &self.handle {
            h.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A tiny SMTP client
// ---------------------------------------------------------------------------------------------

/// The client's connection: plaintext, or TLS (after STARTTLS or from the start).
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Gone,
}

impl ClientStream {
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf).await,
            ClientStream::Tls(s) => s.read(buf).await,
            ClientStream::Gone => Ok(0),
        }
    }

    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.write_all(bytes).await,
            ClientStream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            ClientStream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

/// A rustls client connector trusting only `ca_pem`.
pub fn tls_connector(ca_pem: &str) -> tokio_rustls::TlsConnector {
    let config = dkim_relay::tls::client_config_trusting(ca_pem.as_bytes()).expect("client TLS");
    tokio_rustls::TlsConnector::from(config)
}

pub struct SmtpClient {
    stream: ClientStream,
    buf: Vec<u8>,
    pub greeting: Reply,
    /// The client's own address (what the relay logs as `client=`).
    pub local: SocketAddr,
}

impl SmtpClient {
    pub async fn connect(addr: SocketAddr) -> SmtpClient {
        let mut c = SmtpClient::connect_no_ehlo(addr).await;
        let ehlo = c.cmd("EHLO client.test").await;
        assert_eq!(ehlo.code, 250, "EHLO: {ehlo}");
        c
    }

    /// Connects and reads the greeting (asserted 220), without EHLO.
    pub async fn connect_no_ehlo(addr: SocketAddr) -> SmtpClient {
        let mut c = SmtpClient::connect_silent(addr).await;
        c.greeting = c.read_reply().await.expect("greeting");
        assert_eq!(c.greeting.code, 220, "greeting: {}", c.greeting);
        c
    }

    /// Connects and reads nothing (for clients that talk first).
    pub async fn connect_silent(addr: SocketAddr) -> SmtpClient {
        let stream = TcpStream::connect(addr).await.expect("connect to relay");
        let local = stream.local_addr().expect("local addr");
        SmtpClient {
            stream: ClientStream::Plain(stream),
            buf: Vec::new(),
            greeting: Reply::plain(0, ""),
            local,
        }
    }

    /// Connects to an implicit-TLS listener, verifying the certificate against `ca_pem`, and
    /// reads the greeting (no EHLO).
    pub async fn connect_implicit(addr: SocketAddr, ca_pem: &str) -> SmtpClient {
        let tcp = TcpStream::connect(addr).await.expect("connect to relay");
        let local = tcp.local_addr().expect("local addr");
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = tls_connector(ca_pem)
            .connect(name, tcp)
            .await
            .expect("implicit TLS handshake");
        let mut c = SmtpClient {
            stream: ClientStream::Tls(Box::new(tls)),
            buf: Vec::new(),
            greeting: Reply::plain(0, ""),
            local,
        };
        c.greeting = c.read_reply().await.expect("greeting");
        assert_eq!(c.greeting.code, 220, "greeting: {}", c.greeting);
        c
    }

    /// Runs the TLS handshake now (after a `220` to STARTTLS), discarding anything buffered.
    pub async fn handshake(&mut self, ca_pem: &str) -> std::io::Result<()> {
        let ClientStream::Plain(tcp) = std::mem::replace(&mut self.stream, ClientStream::Gone)
        else {
            panic!("handshake on a non-plaintext stream");
        };
        self.buf.clear();
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        let tls = tls_connector(ca_pem).connect(name, tcp).await?;
        self.stream = ClientStream::Tls(Box::new(tls));
        Ok(())
    }

    /// STARTTLS (asserting 220) and the handshake; no EHLO afterwards.
    pub async fn starttls(&mut self, ca_pem: &str) {
        let r = self.cmd("STARTTLS").await;
        assert_eq!(r.code, 220, "STARTTLS: {r}");
        self.handshake(ca_pem).await.expect("TLS handshake");
    }

    /// A command whose reply may not come (the relay may close): `None` on EOF.
    pub async fn try_cmd(&mut self, line: &str) -> Option<Reply> {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .ok()?;
        self.read_reply().await
    }

    /// Whether the relay closed the connection (EOF on the next read, after draining replies).
    pub async fn closed(&mut self) -> bool {
        loop {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    }

    pub async fn read_reply(&mut self) -> Option<Reply> {
        let mut parser = ReplyParser::new();
        loop {
            while let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=lf).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if let Some(r) = parser.feed(&line).expect("malformed reply") {
                    return Some(r);
                }
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write command");
        self.read_reply()
            .await
            .unwrap_or_else(|| panic!("no reply to {line}"))
    }

    /// Sends the message content (dot-stuffed here) and returns the reply to the final dot.
    pub async fn data(&mut self, message: &[u8]) -> Reply {
        let r = self.cmd("DATA").await;
        assert_eq!(r.code, 354, "DATA: {r}");
        self.stream
            .write_all(&dot_stuff(message))
            .await
            .expect("write message");
        self.read_reply().await.expect("reply after DATA")
    }

    /// MAIL, RCPT…, DATA. Returns the first refusal or the final reply.
    pub async fn transaction(&mut self, mail_from: &str, rcpts: &[&str], message: &[u8]) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{mail_from}>")).await;
        if r.code != 250 {
            return r;
        }
        for rcpt in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            if r.code != 250 {
                return r;
            }
        }
        self.data(message).await
    }

    /// Writes bytes as they are (pipelining, hand-made framing).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// As `send_raw`, but the relay may already have closed.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    pub async fn quit(mut self) {
        let _ = self.stream.write_all(b"QUIT\r\n").await;
        let _ = self.read_reply().await;
    }
}

/// The whole reply as it would appear on the wire, without the final CRLF.
pub fn wire_text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.to_wire()).trim_end().to_string()
}

// ---------------------------------------------------------------------------------------------
// Message inspection
// ---------------------------------------------------------------------------------------------

/// The header fields of a message: (name as written, unfolded value).
pub fn header_fields(message: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(message);
    let head = match text.find("\r\n\r\n") {
        Some(i) => &text[..i + 2],
        None => &text[..],
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.is_empty() {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push_str("\r\n");
                last.1.push_str(line);
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.to_string(), v.to_string()));
        }
    }
    out
}

/// The values of every field called `name` (any case).
pub fn header_values(message: &[u8], name: &str) -> Vec<String> {
    header_fields(message)
        .into_iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// One tag of a DKIM-Signature value, whitespace removed.
pub fn dkim_tag(signature: &str, tag: &str) -> Option<String> {
    let compact: String = signature.chars().filter(|c| !c.is_whitespace()).collect();
    compact.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        (k == tag).then(|| v.to_string())
    })
}

/// The `h=` list, lower-cased.
pub fn signed_header_list(signature: &str) -> Vec<String> {
    dkim_tag(signature, "h")
        .unwrap_or_default()
        .split(':')
        .map(|s| s.to_ascii_lowercase())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Verifies every DKIM-Signature with mail-auth (through the project's offline verdict engine,
/// DNS answered only from `dns`). Returns the per-signature verdicts.
pub async fn verify_dkim_mail_auth(message: &[u8], dns: &[(String, String)]) -> Vec<DkimVerdict> {
    let mut view = DnsView::new();
    for (name, value) in dns {
        view.add_txt(name, value);
    }
    let v = verdict(
        message,
        "bounce@mail.example.org",
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        &view,
    )
    .await;
    v.dkim
}

/// Asserts that mail-auth finds `expected` signatures and that each passes.
pub async fn assert_mail_auth_pass(message: &[u8], dns: &[(String, String)], expected: usize) {
    let verdicts = verify_dkim_mail_auth(message, dns).await;
    assert_eq!(
        verdicts.len(),
        expected,
        "mail-auth saw {} signatures: {verdicts:?}\n{}",
        verdicts.len(),
        String::from_utf8_lossy(message)
    );
    for v in &verdicts {
        assert_eq!(
            v.result,
            "pass",
            "mail-auth: {v:?}\n{}",
            String::from_utf8_lossy(message)
        );
    }
}

const DKIMPY_SCRIPT: &str = r#"
import sys
import dkim
path = sys.argv[1]
records = {}
for i in range(2, len(sys.argv) - 1, 2):
    records[sys.argv[i].rstrip('.').lower()] = sys.argv[i + 1].encode()
def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return records.get(name.rstrip('.').lower())
msg = open(path, 'rb').read()
d = dkim.DKIM(msg)
count = sum(1 for (k, v) in d.headers if k.lower() == b'dkim-signature')
if count == 0:
    print("no DKIM-Signature")
    sys.exit(1)
ok = True
for idx in range(count):
    res = dkim.DKIM(msg).verify(idx=idx, dnsfunc=dnsfunc)
    print("signature %d: %s" % (idx, "pass" if res else "FAIL"))
    ok = ok and res
sys.exit(0 if ok else 1)
"#;

/// Whether dkimpy can run here; panics when it cannot and `DKIM_RELAY_REQUIRE_DKIMPY=1`.
pub fn dkimpy_available() -> bool {
    let ok = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import dkim"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("DKIM_RELAY_REQUIRE_DKIMPY").as_deref() == Ok("1") {
            panic!(
                "dkimpy is required (DKIM_RELAY_REQUIRE_DKIMPY=1) but /usr/bin/python3 -c 'import dkim' fails"
            );
        }
        eprintln!("note: /usr/bin/python3 with the dkim module is missing; dkimpy check skipped");
    }
    ok
}

/// Verifies every DKIM-Signature with dkimpy. `Ok(true)` pass, `Ok(false)` skipped (dkimpy
/// missing), `Err(output)` failure.
pub fn verify_dkim_dkimpy(message: &[u8], dns: &[(String, String)]) -> Result<bool, String> {
    if !dkimpy_available() {
        return Ok(false);
    }
    let mut file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    std::io::Write::write_all(&mut file, message).map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new("/usr/bin/python3");
    cmd.arg("-c").arg(DKIMPY_SCRIPT).arg(file.path());
    for (name, value) in dns {
        cmd.arg(name).arg(value);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(true)
    } else {
        Err(format!(
            "dkimpy failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Asserts that dkimpy verifies every signature (or that it is legitimately absent).
pub fn assert_dkimpy_pass(message: &[u8], dns: &[(String, String)]) {
    if let Err(e) = verify_dkim_dkimpy(message, dns) {
        panic!("{e}\nmessage:\n{}", String::from_utf8_lossy(message));
    }
}

/// Both verifiers.
pub async fn assert_dkim_pass(message: &[u8], dns: &[(String, String)], expected: usize) {
    assert_mail_auth_pass(message, dns, expected).await;
    assert_dkimpy_pass(message, dns);
}

// ---------------------------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------------------------

/// Everything the relay logs in this test process (all levels from debug up), for assertions on
/// refusal reasons. Installed once per test binary as the global subscriber.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process-wide captured log.
pub fn logs() -> Logs {
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs::default();
        let sink = Arc::clone(&logs.0);
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .try_init();
        logs
    })
    .clone()
}

impl Logs {
    /// Every captured line.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines about one client connection (`client=ADDR`).
    pub fn for_client(&self, client: SocketAddr) -> Vec<String> {
        let needle = format!("client={client}");
        self.text()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// Waits (bounded) until a line about `client` contains `needle`; returns whether one did.
    pub async fn wait_for(&self, client: SocketAddr, needle: &str) -> bool {
        for _ in 0..100 {
            if self.for_client(client).iter().any(|l| l.contains(needle)) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        false
    }
}

/// A TCP connection to `addr` from the local address `from` (another loopback address, to
/// act as a second client host).
pub async fn connect_from(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind client");
    socket.connect(addr).await.expect("connect")
}

impl SmtpClient {
    /// Like `connect_no_ehlo`, from a chosen local address; returns the greeting as read
    /// (not asserted), with `None` when the relay closed at once.
    pub async fn connect_from(addr: SocketAddr, from: IpAddr) -> (SmtpClient, Option<Reply>) {
        let stream = connect_from(addr, from).await;
        let local = stream.local_addr().expect("local addr");
        let mut c = SmtpClient {
            stream: ClientStream::Plain(stream),
            buf: Vec::new(),
            greeting: Reply::plain(0, ""),
            local,
        };
        let g = c.read_reply().await;
        if let Some(g) = &g {
            c.greeting = g.clone();
        }
        (c, g)
    }
}
