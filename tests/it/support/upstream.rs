//! The relay tests' fake SES: the relay's own SES simulator (`dkim_relay::sim`) on
//! `127.0.0.1:0` with real TLS, its recorder on, and its live fault handle for the scripted
//! deviations a test needs (an end-of-data reply, a drop, `250` then a close, silence; a drop or
//! a reply-then-close at the next MAIL; no STARTTLS, another AUTH list, plaintext injected behind
//! `220 Ready to start TLS`; a certificate the relay does not trust).
//!
//! SES's limits that are not under test are lifted (sending rate, 24-hour quota, per-session
//! message cap, idle timeout, message size) so that a test meets only the fault it scripts;
//! `example.org` and `example.net` are verified identities with their custom MAIL FROM domains.
//! Set `DKIM_RELAY_CAPTURE_DIR` to have every message it receives written there as `<port>-<n>.eml`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dkim_relay::secret::Secret;
use dkim_relay::sim::RunningSim;
use dkim_relay::sim::config::Account;
use dkim_relay::sim::fault::{Eod, Greeting, LiveFaults};
use dkim_relay::sim::record::Recorder;
use dkim_relay::smtp::reply::Reply;

pub use dkim_relay::sim::record::{CommandSeen as Command, MessageSeen as Received};

/// How the fake upstream speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsKind {
    /// Plaintext greeting, STARTTLS offered (SES ports 25/587/2587).
    StartTls,
    /// TLS from the first byte (SES ports 465/2465).
    Implicit,
    /// STARTTLS is never offered (a downgrade attack, or the wrong server).
    NoStartTls,
    /// STARTTLS offered, but the relay is told to trust a CA that did not sign the certificate.
    Untrusted,
}

/// What the fake upstream answers at the end of DATA.
#[derive(Debug, Clone)]
pub enum Final {
    /// The simulator's own checks: `250 Ok <SES-shaped id>` for a good message.
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

/// Settings for [`Upstream::start`].
#[derive(Debug, Clone)]
pub struct UpstreamOptions {
    pub tls: TlsKind,
    /// What `250-AUTH …` advertises.
    pub auth_mechs: String,
    /// End-of-data outcomes of the first messages, in order (then the simulator's own).
    pub finals: Vec<Final>,
    /// Written in the same packet right after `220 Ready to start TLS` (plaintext injected
    /// before the handshake; the relay must discard it).
    pub starttls_trailer: Option<String>,
}

impl Default for UpstreamOptions {
    fn default() -> Self {
        UpstreamOptions {
            tls: TlsKind::StartTls,
            auth_mechs: "PLAIN LOGIN".into(),
            finals: Vec::new(),
            starttls_trailer: None,
        }
    }
}

/// A `250` in SES's shape for an end of data the simulator must not judge (a message SES would
/// refuse that a generic upstream takes, e.g. two DKIM-Signature fields).
pub const GENERIC_OK: &str = "250 Ok 0100018c2f5e1a7b-3c9d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f-000000";

/// The access key ID of the fake upstream's account.
pub const USER: &str = "AKIAEXAMPLETEST";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// `"454 Throttling failure: …"` as a reply.
fn reply_line(line: &str) -> Reply {
    let (code, text) = line.split_once(' ').unwrap_or((line, ""));
    Reply::plain(code.parse().unwrap_or(451), text)
}

/// A CA PEM that signed nothing the tests serve.
pub fn unrelated_ca_pem() -> String {
    dkim_relay::tls::generate_certs(&["localhost".into()])
        .expect("unrelated CA")
        .ca_pem
}

/// The simulator as the relay's upstream, recording.
pub struct Upstream {
    pub addr: SocketAddr,
    /// PEM of the CA the relay should trust (for `Untrusted`, *not* the one that signed the
    /// server certificate).
    pub ca_pem: String,
    pub options: UpstreamOptions,
    pub user: String,
    /// The SigV4 SMTP password of `user` in the simulator's region.
    pub password: String,
    recorder: Recorder,
    faults: LiveFaults,
    _sim: RunningSim,
    _dir: tempfile::TempDir,
}

impl Upstream {
    pub async fn start(options: UpstreamOptions) -> Upstream {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = super::sim::settings(dir.path());
        s.accounts = vec![Account {
            access_key_id: USER.into(),
            secret: Secret::new(SECRET.into()),
        }];
        s.identities = vec!["example.org".into(), "example.net".into()];
        s.mail_from
            .insert("example.net".into(), "mail.example.net".into());
        s.sandbox = false;
        s.max_send_rate = 1e9;
        s.max_24h = u64::MAX / 2;
        s.max_messages_per_session = u32::MAX;
        s.max_message_size = 256 * 1024 * 1024;
        s.idle_timeout = Duration::from_secs(3600);
        s.max_connections = 10_000;
        if options.tls == TlsKind::Implicit {
            s.implicit_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        }
        let password = dkim_relay::ses_password::smtp_password_v4(SECRET, &s.region);
        let sim = super::sim::start(s).await;
        let recorder = sim.record();
        let faults = sim.faults();
        faults.set_greeting(Greeting {
            hide_starttls: options.tls == TlsKind::NoStartTls,
            auth_mechanisms: Some(options.auth_mechs.clone()),
            starttls_trailer: options
                .starttls_trailer
                .as_ref()
                .map(|t| t.as_bytes().to_vec()),
        });
        for f in &options.finals {
            faults.push_eod(match f {
                Final::Ok => Eod::Normal,
                Final::Reply(r) => Eod::Reply(reply_line(r)),
                Final::Drop => Eod::Drop,
                Final::OkThenClose => Eod::AnswerThenClose,
                Final::Silent => Eod::Silent,
            });
        }
        let (addr, ca_pem) = match options.tls {
            TlsKind::Implicit => (sim.implicit_addr.expect("implicit"), sim.ca_pem.clone()),
            TlsKind::Untrusted => (sim.starttls_addr, unrelated_ca_pem()),
            TlsKind::StartTls | TlsKind::NoStartTls => (sim.starttls_addr, sim.ca_pem.clone()),
        };
        Upstream {
            addr,
            ca_pem,
            options,
            user: USER.into(),
            password,
            recorder,
            faults,
            _sim: sim,
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every message received so far, in order (as received, before the simulator's rewrites).
    pub fn received(&self) -> Vec<Received> {
        let got = self.recorder.messages();
        if let Some(dir) = std::env::var_os("DKIM_RELAY_CAPTURE_DIR") {
            let dir = PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            for (i, m) in got.iter().enumerate() {
                let name = format!("{}-{i}.eml", self.port());
                let _ = std::fs::write(dir.join(name), &m.data);
            }
        }
        got
    }

    /// Every command line received so far (AUTH payloads redacted to `AUTH-DATA`).
    pub fn commands(&self) -> Vec<Command> {
        self.recorder.commands()
    }

    /// How many connections were accepted.
    pub fn connections(&self) -> usize {
        self.recorder.connections()
    }

    /// Closes the connection (without a reply) on the next `n` MAIL commands.
    pub fn drop_on_next_mail(&self, n: usize) {
        self.faults.drop_on_next_mail(n);
    }

    /// Answers the next MAIL with `reply` (e.g. SES's per-session cap, a 421) and closes.
    pub fn reply_to_next_mail_then_close(&self, reply: &str) {
        self.faults.reply_to_next_mail_then_close(reply_line(reply));
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
