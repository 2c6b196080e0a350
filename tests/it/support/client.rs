//! The one SMTP client of the test kit: plaintext, STARTTLS or implicit TLS (trusting a given
//! CA only, through the project's own `tls::client_config_trusting`), raw writes, one reply at a
//! time, and the command/transaction helpers the relay and simulator tests share.
//!
//! Two waiting styles live side by side, because the tests rely on both:
//! - unbounded: [`SmtpClient::read_reply`], [`SmtpClient::closed`], [`SmtpClient::cmd`] wait as
//!   long as the server does (callers that expect a stall wrap them in their own timeout);
//! - bounded: [`SmtpClient::reply`], [`SmtpClient::raw_line`], [`SmtpClient::cmd_text`],
//!   [`SmtpClient::closed_quietly`] panic with "server went silent" after 15 s, so a server
//!   that hangs fails the test instead of hanging it.
//!
//! The simulator's own conveniences (connect to a `RunningSim`, the SES wording of STARTTLS and
//! of a transaction) are in [`super::sim`], as a second `impl SmtpClient` block.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use dkim_relay::smtp::reply::{Reply, ReplyParser};
use dkim_relay::upstream::framing::dot_stuff;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the bounded readers wait for the server before failing the test.
const WAIT: Duration = Duration::from_secs(15);

/// The client's connection: plaintext, or TLS (after STARTTLS or from the start).
enum ClientStream {
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

fn localhost() -> rustls_pki_types::ServerName<'static> {
    rustls_pki_types::ServerName::try_from("localhost")
        .expect("name")
        .to_owned()
}

pub struct SmtpClient {
    stream: ClientStream,
    buf: Vec<u8>,
    /// The CA that [`SmtpClient::upgrade`] trusts (set by [`SmtpClient::trust`]).
    ca: Option<String>,
    pub greeting: Reply,
    /// The client's own address (what the relay logs as `client=`).
    pub local: SocketAddr,
}

impl SmtpClient {
    // --- connecting --------------------------------------------------------------------------

    /// Connects, reads the greeting (asserted 220) and sends EHLO (asserted 250).
    pub async fn connect(addr: SocketAddr) -> SmtpClient {
        let mut c = SmtpClient::connect_no_ehlo(addr).await;
        let ehlo = c.cmd("EHLO client.test").await;
        assert_eq!(ehlo.code, 250, "EHLO: {ehlo}");
        c
    }

    /// Connects and reads the greeting (asserted 220), without EHLO.
    pub async fn connect_no_ehlo(addr: SocketAddr) -> SmtpClient {
        let mut c = SmtpClient::connect_silent(addr).await;
        c.read_greeting().await;
        c
    }

    /// Connects and reads nothing (for clients that talk first, or read the banner themselves).
    pub async fn connect_silent(addr: SocketAddr) -> SmtpClient {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect timed out")
            .expect("connect to server");
        SmtpClient::over(stream)
    }

    /// Like `connect_no_ehlo`, from a chosen local address; returns the greeting as read
    /// (not asserted), with `None` when the server closed at once.
    pub async fn connect_from(addr: SocketAddr, from: IpAddr) -> (SmtpClient, Option<Reply>) {
        let mut c = SmtpClient::over(super::connect_from(addr, from).await);
        let g = c.read_reply().await;
        if let Some(g) = &g {
            c.greeting = g.clone();
        }
        (c, g)
    }

    fn over(stream: TcpStream) -> SmtpClient {
        let local = stream.local_addr().expect("local addr");
        SmtpClient {
            stream: ClientStream::Plain(stream),
            buf: Vec::new(),
            ca: None,
            greeting: Reply::plain(0, ""),
            local,
        }
    }

    /// Connects to an implicit-TLS listener, verifying the certificate against `ca_pem`, and
    /// reads the greeting (asserted 220; no EHLO).
    pub async fn connect_implicit(addr: SocketAddr, ca_pem: &str) -> SmtpClient {
        let mut c = SmtpClient::connect_implicit_silent(addr, ca_pem).await;
        c.read_greeting().await;
        c
    }

    /// Connects to an implicit-TLS listener and completes the handshake; reads nothing.
    pub async fn connect_implicit_silent(addr: SocketAddr, ca_pem: &str) -> SmtpClient {
        let tcp = TcpStream::connect(addr).await.expect("connect to server");
        let local = tcp.local_addr().expect("local addr");
        let tls = tokio::time::timeout(WAIT, tls_connector(ca_pem).connect(localhost(), tcp))
            .await
            .expect("implicit TLS handshake timed out")
            .expect("implicit TLS handshake");
        SmtpClient {
            stream: ClientStream::Tls(Box::new(tls)),
            buf: Vec::new(),
            ca: Some(ca_pem.to_string()),
            greeting: Reply::plain(0, ""),
            local,
        }
    }

    /// Trusts `ca_pem` for a later [`SmtpClient::upgrade`].
    pub fn trust(&mut self, ca_pem: &str) {
        self.ca = Some(ca_pem.to_string());
    }

    async fn read_greeting(&mut self) {
        self.greeting = self.read_reply().await.expect("greeting");
        assert_eq!(self.greeting.code, 220, "greeting: {}", self.greeting);
    }

    // --- TLS ---------------------------------------------------------------------------------

    /// Runs the TLS handshake now (after a `220` to STARTTLS), discarding anything buffered.
    pub async fn handshake(&mut self, ca_pem: &str) -> std::io::Result<()> {
        self.buf.clear();
        self.tls_over_plain(ca_pem.to_string()).await
    }

    /// Runs the TLS handshake now with the trusted CA, keeping anything already buffered (so a
    /// test can see plaintext the server sent after its `220`).
    pub async fn upgrade(&mut self) {
        let ca = self.ca.clone().expect("upgrade without a trusted CA");
        tokio::time::timeout(WAIT, self.tls_over_plain(ca))
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake");
    }

    async fn tls_over_plain(&mut self, ca_pem: String) -> std::io::Result<()> {
        let ClientStream::Plain(tcp) = std::mem::replace(&mut self.stream, ClientStream::Gone)
        else {
            panic!("handshake on a non-plaintext stream");
        };
        let tls = tls_connector(&ca_pem).connect(localhost(), tcp).await?;
        self.stream = ClientStream::Tls(Box::new(tls));
        self.ca = Some(ca_pem);
        Ok(())
    }

    /// STARTTLS (asserting the code 220) and the handshake; no EHLO afterwards.
    pub async fn starttls(&mut self, ca_pem: &str) {
        let r = self.cmd("STARTTLS").await;
        assert_eq!(r.code, 220, "STARTTLS: {r}");
        self.handshake(ca_pem).await.expect("TLS handshake");
    }

    // --- writing -----------------------------------------------------------------------------

    /// Writes bytes as they are (pipelining, hand-made framing).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// As `send_raw`, but the server may already have closed.
    pub async fn try_send_raw(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Writes one command line, CRLF appended; reads nothing.
    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes()).await;
    }

    // --- reading -----------------------------------------------------------------------------

    /// Reads one chunk into the buffer; 0 at end of stream (or on a read error). Bounded reads
    /// panic after [`WAIT`].
    async fn read_chunk(&mut self, bounded: bool) -> usize {
        let mut chunk = [0u8; 8192];
        let n = if bounded {
            tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("server went silent")
                .unwrap_or(0)
        } else {
            self.stream.read(&mut chunk).await.unwrap_or(0)
        };
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    async fn next_reply(&mut self, bounded: bool) -> Option<Reply> {
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
            if self.read_chunk(bounded).await == 0 {
                return None;
            }
        }
    }

    /// The next reply, or `None` at end of stream; waits as long as the server does.
    pub async fn read_reply(&mut self) -> Option<Reply> {
        self.next_reply(false).await
    }

    /// The next reply, or `None` at end of stream; panics if the server is silent for 15 s.
    pub async fn reply(&mut self) -> Option<Reply> {
        self.next_reply(true).await
    }

    /// The raw wire text of the next reply (bounded), CRLF included.
    pub async fn reply_text(&mut self) -> String {
        let r = self.reply().await.expect("connection closed");
        String::from_utf8(r.to_wire()).expect("UTF-8 reply")
    }

    /// The next line exactly as sent, CRLF included (bounded; panics at end of stream).
    pub async fn raw_line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return String::from_utf8(line).expect("UTF-8 line");
            }
            assert!(self.read_chunk(true).await > 0, "connection closed");
        }
    }

    /// Whether the server closed the connection: drains (and ignores) anything it still sends,
    /// then sees end of stream. Unbounded.
    pub async fn closed(&mut self) -> bool {
        loop {
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    }

    /// Whether the server closed the connection with nothing more to say: no unread bytes are
    /// buffered and the next read is end of stream (bounded).
    pub async fn closed_quietly(&mut self) -> bool {
        self.buf.is_empty() && self.read_chunk(true).await == 0
    }

    // --- commands and transactions -----------------------------------------------------------

    /// One command and its reply (unbounded); panics at end of stream.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write command");
        self.read_reply()
            .await
            .unwrap_or_else(|| panic!("no reply to {line}"))
    }

    /// One command and the raw wire text of its reply (bounded), CRLF included.
    pub async fn cmd_text(&mut self, line: &str) -> String {
        self.send(line).await;
        self.reply_text().await
    }

    /// A command whose reply may not come (the server may close): `None` on EOF.
    pub async fn try_cmd(&mut self, line: &str) -> Option<Reply> {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .ok()?;
        self.read_reply().await
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

    pub async fn quit(mut self) {
        let _ = self.stream.write_all(b"QUIT\r\n").await;
        let _ = self.read_reply().await;
    }
}

/// The whole reply as it would appear on the wire, without the final CRLF.
pub fn wire_text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.to_wire()).trim_end().to_string()
}
