//! Test harness for the SES simulator: settings on 127.0.0.1:0 and a scripted SMTP client
//! (plain TCP, STARTTLS and implicit TLS via tokio-rustls, trusting the generated CA).

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use dkim_relay::secret::Secret;
use dkim_relay::sim::RunningSim;
use dkim_relay::sim::config::{Account, SimSettings};
use dkim_relay::smtp::reply::{Reply, ReplyParser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const KEY_ID: &str = "AKIAIOSFODNN7EXAMPLE";
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
pub const PASS_US_EAST_1: &str = "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9";
pub const PASS_US_EAST_2: &str = "BMPPgbAHoFVbze1Ud0oA5uNdXRwUXUZ+qOwphGJbl/cS";
pub const PASS_V2: &str = "An60U4ZD3sd4fg+FvXUjayOipTt8LO4rUUmhpdX6ctDy";
const WAIT: Duration = Duration::from_secs(15);

pub fn settings(dir: &Path) -> SimSettings {
    let mut s = SimSettings::resolve(None, dir).unwrap();
    s.accounts = vec![Account {
        access_key_id: KEY_ID.into(),
        secret: Secret::new(SECRET.into()),
    }];
    s.identities = vec!["example.org".into()];
    s.mail_from
        .insert("example.org".into(), "mail.example.org".into());
    s.outbox = dir.join("outbox");
    s
}

pub async fn start(settings: SimSettings) -> RunningSim {
    dkim_relay::sim::start(settings, Vec::new()).await.unwrap()
}

pub struct Client {
    plain: Option<TcpStream>,
    tls: Option<Box<TlsStream<TcpStream>>>,
    buf: Vec<u8>,
    ca: String,
}

fn connector(ca: &str) -> TlsConnector {
    TlsConnector::from(dkim_relay::tls::client_config_trusting(ca.as_bytes()).unwrap())
}

fn name() -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::try_from("localhost")
        .unwrap()
        .to_owned()
}

impl Client {
    /// Connects to the STARTTLS listener; the banner is not read yet.
    pub async fn connect(sim: &RunningSim) -> Client {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(sim.starttls_addr))
            .await
            .unwrap()
            .unwrap();
        Client {
            plain: Some(s),
            tls: None,
            buf: Vec::new(),
            ca: sim.ca_pem.clone(),
        }
    }

    /// Connects to the implicit-TLS listener.
    pub async fn connect_implicit(sim: &RunningSim) -> Client {
        let addr = sim.implicit_addr.unwrap();
        let s = TcpStream::connect(addr).await.unwrap();
        let tls = tokio::time::timeout(WAIT, connector(&sim.ca_pem).connect(name(), s))
            .await
            .unwrap()
            .unwrap();
        Client {
            plain: None,
            tls: Some(Box::new(tls)),
            buf: Vec::new(),
            ca: sim.ca_pem.clone(),
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        let r = if let Some(t) = self.tls.as_mut() {
            t.write_all(bytes).await
        } else {
            self.plain.as_mut().unwrap().write_all(bytes).await
        };
        r.unwrap();
    }

    pub async fn send(&mut self, line: &str) {
        self.write(format!("{line}\r\n").as_bytes()).await;
    }

    async fn read_some(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let fut = async {
            if let Some(t) = self.tls.as_mut() {
                t.read(&mut chunk).await
            } else {
                self.plain.as_mut().unwrap().read(&mut chunk).await
            }
        };
        let n = tokio::time::timeout(WAIT, fut)
            .await
            .expect("server went silent")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next reply, or `None` at end of stream.
    pub async fn reply(&mut self) -> Option<Reply> {
        let mut parser = ReplyParser::new();
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).take(i).collect();
                if let Some(r) = parser.feed(&line).unwrap() {
                    return Some(r);
                }
                continue;
            }
            if self.read_some().await == 0 {
                return None;
            }
        }
    }

    /// The next line exactly as sent, CRLF included.
    pub async fn raw_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8(line).unwrap();
            }
            assert!(self.read_some().await > 0, "connection closed");
        }
    }

    /// The raw wire text of the next reply.
    pub async fn reply_text(&mut self) -> String {
        let r = self.reply().await.expect("connection closed");
        String::from_utf8(r.to_wire()).unwrap()
    }

    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.reply_text().await
    }

    /// Whether the server closed the connection (after any pending replies were read).
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.read_some().await == 0
    }

    pub async fn starttls(&mut self) {
        assert_eq!(self.cmd("STARTTLS").await, "220 Ready to start TLS\r\n");
        self.upgrade().await;
    }

    pub async fn upgrade(&mut self) {
        let s = self.plain.take().unwrap();
        let tls = tokio::time::timeout(WAIT, connector(&self.ca).connect(name(), s))
            .await
            .unwrap()
            .unwrap();
        self.tls = Some(Box::new(tls));
    }

    /// Banner, EHLO, STARTTLS, EHLO, AUTH PLAIN with the example credentials.
    pub async fn ready(sim: &RunningSim) -> Client {
        let mut c = Client::connect(sim).await;
        c.reply().await.unwrap();
        c.cmd("EHLO client.test").await;
        c.starttls().await;
        c.cmd("EHLO client.test").await;
        let r = c
            .cmd(&format!("AUTH PLAIN {}", plain(KEY_ID, PASS_US_EAST_1)))
            .await;
        assert_eq!(r, "235 Authentication successful.\r\n");
        c
    }

    /// MAIL, RCPTs, DATA, the message; returns the end-of-data reply.
    pub async fn message(&mut self, from: &str, rcpts: &[&str], data: &[u8]) -> Reply {
        assert_eq!(self.cmd(&format!("MAIL FROM:<{from}>")).await, "250 Ok\r\n");
        for r in rcpts {
            assert_eq!(self.cmd(&format!("RCPT TO:<{r}>")).await, "250 Ok\r\n");
        }
        assert_eq!(
            self.cmd("DATA").await,
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        self.write(&dkim_relay::upstream::framing::dot_stuff(data))
            .await;
        self.reply().await.expect("no end-of-data reply")
    }
}

pub fn plain(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

pub fn simple_message(from: &str) -> Vec<u8> {
    format!("From: App <{from}>\r\nTo: user@dest.test\r\nSubject: hello\r\n\r\nHello.\r\n")
        .into_bytes()
}
