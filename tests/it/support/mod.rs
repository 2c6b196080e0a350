//! Shared harness for the hermetic end-to-end tests: test PKI (rcgen), a scripted fake SES
//! SMTP server with real TLS ([`TestUpstream`]), an in-process relay on `127.0.0.1:0`
//! ([`TestRelay`]), the one SMTP client ([`SmtpClient`], in [`client`]), and two independent
//! DKIM verifiers (mail-auth through the project's offline verdict engine, and dkimpy through
//! `/usr/bin/python3`).
//!
//! Everything listens on loopback, port 0; nothing touches the network or real DNS.
//! Set `DKIM_RELAY_CAPTURE_DIR` to have every message the fake upstream receives written there
//! as `<n>.eml`; set `DKIM_RELAY_REQUIRE_DKIMPY=1` to make a missing dkimpy a failure.

pub mod client;
pub mod config;
pub mod dns_server;
pub mod sim;

pub use client::{SmtpClient, wire_text};

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use dkim_relay::config::reload::Live;
use dkim_relay::daemon;
use dkim_relay::dkim::Algorithm;
use dkim_relay::dkim::keygen::{self, GeneratedKey};
use dkim_relay::dns::DnsView;
use dkim_relay::server::{self, Stopped};
use dkim_relay::sim::verdict::{DkimVerdict, verdict};
use dkim_relay::smtp::reply::Reply;
use dkim_relay::smtp::sasl;

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
    /// Which connection (0-based, in accept order).
    #[allow(dead_code)] // shown in assertion messages ({:?}) only
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
    /// Dropping it stops the server.
    /// Dropping the handle stops the server.
    _server: server::Handle,
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
        let mode = if options.tls == TlsKind::Implicit {
            server::Mode::ImplicitTls
        } else {
            server::Mode::Plain
        };
        // The scripted upstream runs on the relay's own server shell, as its own protocol.
        let mut settings = server::Settings::new("email-smtp.amazonaws.com");
        settings.tls = Some(server::TlsSettings {
            acceptor,
            handshake_timeout: std::time::Duration::from_secs(30),
        });
        settings.max_command_line = 8192;
        settings.max_message_size = 256 * 1024 * 1024;
        settings.max_header_size = 64 * 1024 * 1024;
        settings.command_timeout = std::time::Duration::from_secs(3600);
        settings.data_timeout = std::time::Duration::from_secs(3600);
        let protocol = Arc::new(Scripted {
            settings: Arc::new(settings),
            state: Arc::clone(&state),
            options: options.clone(),
        });
        let task = server::spawn(vec![server::Listener::new(listener, mode)], protocol);
        TestUpstream {
            addr,
            ca_pem: trusted.ca_pem,
            options,
            state,
            _server: task,
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

/// The scripted upstream as a protocol of `dkim_relay::server`.
struct Scripted {
    settings: Arc<server::Settings>,
    state: Arc<Mutex<UpstreamState>>,
    options: UpstreamOptions,
}

impl server::Protocol for Scripted {
    type Handler = ScriptedConn;

    fn settings(&self) -> Arc<server::Settings> {
        Arc::clone(&self.settings)
    }

    fn accept(&self, _peer: server::Peer) -> (Arc<server::Settings>, ScriptedConn) {
        let conn = {
            let mut s = self.state.lock().unwrap();
            s.connections += 1;
            s.connections - 1
        };
        let handler = ScriptedConn {
            conn,
            state: Arc::clone(&self.state),
            options: self.options.clone(),
            tls: false,
            auth_user: None,
            sasl: None,
            mail_from: None,
            rcpts: Vec::new(),
        };
        (Arc::clone(&self.settings), handler)
    }
}

/// One connection to the scripted upstream.
struct ScriptedConn {
    conn: usize,
    state: Arc<Mutex<UpstreamState>>,
    options: UpstreamOptions,
    tls: bool,
    auth_user: Option<String>,
    /// An AUTH exchange waiting for a continuation line, and its mechanism.
    sasl: Option<(sasl::Exchange, String)>,
    mail_from: Option<String>,
    rcpts: Vec<String>,
}

/// `"454 Throttling failure: …"` as a reply.
fn reply_line(line: &str) -> Reply {
    let (code, text) = line.split_once(' ').unwrap_or((line, ""));
    Reply::plain(code.parse().unwrap_or(451), text)
}

impl ScriptedConn {
    fn record(&self, line: String) {
        self.state.lock().unwrap().commands.push(Command {
            conn: self.conn,
            tls: self.tls,
            line,
        });
    }

    /// One step of the shared SASL machine, as SES words it.
    fn sasl_step(&mut self, exchange: sasl::Exchange, mech: String, step: sasl::Step) -> Reply {
        match step {
            sasl::Step::Challenge(text) => {
                self.sasl = Some((exchange, mech));
                Reply::plain(334, text)
            }
            sasl::Step::Done(c)
                if c.username == self.options.user
                    && c.password == self.options.password.as_bytes() =>
            {
                self.auth_user = Some(c.username);
                Reply::plain(235, "Authentication successful.")
            }
            sasl::Step::Failed(sasl::SaslError::UnknownMechanism) => {
                Reply::plain(504, "Unrecognized authentication type")
            }
            _ => Reply::plain(535, "Authentication Credentials Invalid"),
        }
    }

    fn line(&mut self, line: String) -> server::Action {
        use server::Action;
        if let Some((mut exchange, mech)) = self.sasl.take() {
            let step = exchange.step(line.as_bytes());
            if mech == "PLAIN" {
                self.record(format!("AUTH-DATA {line}"));
            } else if !matches!(step, sasl::Step::Challenge(_)) {
                self.record("AUTH-DATA (login)".into());
            }
            return Action::Reply(self.sasl_step(exchange, mech, step));
        }
        self.record(line.clone());
        let upper = line.to_ascii_uppercase();
        let verb = upper.split(' ').next().unwrap_or("").to_string();
        let ok = || Action::Reply(Reply::plain(250, "Ok"));
        match verb.as_str() {
            "EHLO" | "HELO" => {
                let mut lines = vec!["email-smtp.amazonaws.com".to_string(), "8BITMIME".into()];
                if !self.tls && self.options.tls != TlsKind::NoStartTls {
                    lines.push("STARTTLS".into());
                }
                lines.push(format!("AUTH {}", self.options.auth_mechs));
                lines.push("Ok".into());
                Action::Reply(Reply::multi(250, lines))
            }
            "STARTTLS" => {
                if self.tls || self.options.tls == TlsKind::NoStartTls {
                    return Action::Reply(Reply::plain(502, "5.5.1 Unrecognized command"));
                }
                Action::StartTls(Reply::plain(220, "Ready to start TLS"))
            }
            "AUTH" => {
                if !self.tls {
                    return Action::Reply(Reply::plain(530, "Must issue a STARTTLS command first"));
                }
                let mut parts = line.split_ascii_whitespace().skip(1);
                let mech = parts.next().unwrap_or("").to_ascii_uppercase();
                let initial = parts.next().map(|s| s.trim().as_bytes().to_vec());
                let (exchange, step) = sasl::Exchange::start(&mech, initial.as_deref());
                Action::Reply(self.sasl_step(exchange, mech, step))
            }
            "MAIL" => {
                if !self.tls {
                    return Action::Reply(Reply::plain(530, "Must issue a STARTTLS command first"));
                }
                if self.auth_user.is_none() {
                    return Action::Reply(Reply::plain(530, "Authentication required"));
                }
                let close_with = {
                    let mut s = self.state.lock().unwrap();
                    if s.drop_on_mail > 0 {
                        s.drop_on_mail -= 1;
                        return Action::Drop;
                    }
                    s.mail_reply_then_close.take()
                };
                if let Some(reply) = close_with {
                    return Action::Close(reply_line(&reply));
                }
                self.mail_from = Some(angle(&line));
                self.rcpts.clear();
                ok()
            }
            "RCPT" => {
                self.rcpts.push(angle(&line));
                ok()
            }
            "DATA" => {
                if self.mail_from.is_none() || self.rcpts.is_empty() {
                    return Action::Reply(Reply::plain(503, "Bad sequence of commands"));
                }
                Action::StartData(Reply::plain(354, "End data with <CR><LF>.<CR><LF>"))
            }
            "RSET" => {
                self.mail_from = None;
                self.rcpts.clear();
                ok()
            }
            "NOOP" => ok(),
            "QUIT" => Action::Close(Reply::plain(221, "Bye")),
            _ => Action::Reply(Reply::plain(500, "Unrecognized command")),
        }
    }
}

impl server::Handler for ScriptedConn {
    fn greeting(&mut self) -> server::Action {
        let banner =
            "email-smtp.amazonaws.com ESMTP SimpleEmailService-d-TESTBANNR A1b2C3d4E5f6G7h8I9j0";
        server::Action::Reply(Reply::plain(220, banner))
    }

    async fn command(
        &mut self,
        line: Result<Vec<u8>, dkim_relay::smtp::codec::LineError>,
    ) -> server::Action {
        match line {
            Ok(l) => self.line(String::from_utf8_lossy(&l).into_owned()),
            Err(_) => server::Action::Drop,
        }
    }

    async fn data(
        &mut self,
        data: Result<Vec<u8>, dkim_relay::smtp::codec::DataError>,
        _size: usize,
    ) -> server::Action {
        let Ok(data) = data else {
            return server::Action::Drop;
        };
        capture(&data);
        let fin = self.state.lock().unwrap().finals.pop_front();
        let fin = fin.unwrap_or(Final::Ok);
        let reply = match &fin {
            Final::Ok | Final::OkThenClose => format!("250 Ok {}", ses_message_id()),
            Final::Reply(r) => r.clone(),
            Final::Drop | Final::Silent => String::new(),
        };
        self.state.lock().unwrap().received.push(Received {
            conn: self.conn,
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpts: std::mem::take(&mut self.rcpts),
            data,
            tls: self.tls,
            auth_user: self.auth_user.clone(),
            reply: reply.clone(),
        });
        match fin {
            Final::Drop => server::Action::Drop,
            // Never answer: hold the connection until the peer (or the test) gives up.
            Final::Silent => std::future::pending().await,
            Final::OkThenClose => server::Action::Close(reply_line(&reply)),
            Final::Ok | Final::Reply(_) => server::Action::Reply(reply_line(&reply)),
        }
    }

    fn tls_started(&mut self) {
        self.tls = true;
    }

    fn in_transaction(&self) -> bool {
        self.mail_from.is_some()
    }

    fn notice(&mut self, _notice: server::Notice) -> Option<Reply> {
        None
    }

    /// `334` challenges keep SES's trailing space; the STARTTLS `220` carries the scripted
    /// plaintext trailer in the same packet (the relay must discard it).
    fn wire(&self, reply: &Reply) -> Vec<u8> {
        let mut bytes = dkim_relay::sim::session::wire(reply);
        if reply.code == 220
            && !self.tls
            && reply.lines == ["Ready to start TLS"]
            && let Some(t) = &self.options.starttls_trailer
        {
            bytes.extend_from_slice(t.as_bytes());
        }
        bytes
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
    /// Started through the composition root, as `serve` starts it.
    running: Option<daemon::Running>,
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
        let running = daemon::start(&config_path, snapshot)
            .await
            .expect("start relay");
        let addr = running.addrs.smtp[0];
        let implicit_addr = running.addrs.implicit_tls.first().copied();
        TestRelay {
            addr,
            implicit_addr,
            listener_ca_pem,
            live: running.live.clone(),
            config_path,
            keys,
            dir,
            running: Some(running),
        }
    }

    pub fn dns(&self) -> Vec<(String, String)> {
        self.keys.dns()
    }

    /// Sends the shutdown signal (without waiting).
    pub fn signal_shutdown(&mut self) {
        if let Some(running) = &mut self.running {
            running.signal();
        }
    }

    /// Shuts down gracefully (the drain) and waits for it.
    pub async fn stopped(&mut self) -> Stopped {
        let running = self.running.take().expect("relay already stopped");
        running.shutdown().await
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
