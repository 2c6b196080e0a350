//! Shared harness for the hermetic end-to-end tests: the fake SES upstream, which is the relay's
//! own simulator with its recorder and live faults ([`Upstream`], in [`upstream`]), an
//! in-process relay on `127.0.0.1:0` ([`TestRelay`]), the one SMTP client ([`SmtpClient`], in
//! [`client`]), and two independent DKIM verifiers (mail-auth through the project's offline
//! verdict engine, and dkimpy through `/usr/bin/python3`).
//!
//! Everything listens on loopback, port 0; nothing touches the network or real DNS.
//! Set `DKIM_RELAY_CAPTURE_DIR` to have every message the fake upstream receives written there
//! (see [`upstream`]); set `DKIM_RELAY_REQUIRE_DKIMPY=1` to make a missing dkimpy a failure.

pub mod client;
pub mod config;
pub mod dns_server;
pub mod sim;
pub mod upstream;

pub use client::{SmtpClient, wire_text};
pub use upstream::{Final, GENERIC_OK, TlsKind, Upstream, UpstreamOptions, unrelated_ca_pem};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

use dkim_relay::config::reload::Live;
use dkim_relay::daemon;
use dkim_relay::dkim::Algorithm;
use dkim_relay::dkim::keygen::{self, GeneratedKey};
use dkim_relay::dns::DnsView;
use dkim_relay::server::Stopped;
use dkim_relay::sim::verdict::{DkimVerdict, verdict};
use dkim_relay::smtp::reply::Reply;

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
    pub fn for_upstream(upstream: &Upstream) -> RelayOptions {
        RelayOptions {
            upstream_port: upstream.port(),
            tls: if upstream.options.tls == TlsKind::Implicit {
                "implicit"
            } else {
                "starttls"
            },
            ca_pem: upstream.ca_pem.clone(),
            username: upstream.user.clone(),
            password: upstream.password.clone(),
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
