//! One SMTP client connection to the upstream (SES), always over verified TLS.
//!
//! Never downgrade: STARTTLS missing, a failed handshake or an untrusted certificate ends the
//! attempt before AUTH. After STARTTLS anything the server sent before the handshake is
//! discarded and EHLO is sent again (RFC 3207 §4.2). SES does not advertise PIPELINING, so
//! commands go one at a time. Every wait has its own timeout from config.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::framing::{self, Framer};
use super::settings::{Endpoint, PoolSettings, TlsMode};
use crate::smtp::reply::{Reply, ReplyParser};

/// Why talking to the upstream failed (as opposed to the upstream answering with a refusal).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("timed out during {0}")]
    Timeout(&'static str),
    #[error("TLS with {0} failed: {1}")]
    Tls(String, std::io::Error),
    #[error("{0} does not offer STARTTLS; refusing to continue without TLS")]
    NoStartTls(String),
    #[error("upstream greeting refused: {0}")]
    Greeting(Reply),
    #[error("upstream refused {stage}: {reply}")]
    Refused { stage: &'static str, reply: Reply },
    #[error("upstream offers no AUTH mechanism we support (PLAIN, LOGIN)")]
    NoAuth,
    #[error("upstream rejected our credentials: {0}")]
    Auth(Reply),
    #[error("connection lost: {0}")]
    Io(std::io::Error),
    #[error("upstream closed the connection")]
    Closed,
    #[error("upstream sent a malformed reply: {0}")]
    Protocol(String),
    /// No turn to send within the wait allowed (the send rate, or every connection busy);
    /// nothing was sent.
    #[error("no turn to send within {0:?} (max_send_rate pacing or every connection busy)")]
    Congested(Duration),
}

/// A connected, authenticated upstream session.
pub struct Connection {
    stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
    pub created: Instant,
    pub last_used: Instant,
    pub messages: u32,
    command_timeout: Duration,
    data_timeout: Duration,
    /// Whether the server advertised SIZE (then we declare the size on MAIL).
    size_ext: bool,
}

/// Where a send failed, to decide whether a retry on a fresh connection is safe.
#[derive(Debug)]
pub struct SendFailure {
    pub error: UpstreamError,
    /// True if the message may have been accepted (we had sent the final dot).
    pub after_data: bool,
}

/// What the upstream said to one transaction.
#[derive(Debug)]
pub struct Outcome {
    /// The reply that ended the transaction: the final reply after DATA, or the refusal of
    /// MAIL, RCPT or DATA.
    pub reply: Reply,
    /// Whether the reply came after the message content (it is the EOD reply).
    pub after_data: bool,
}

async fn timed<T, E>(
    limit: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, UpstreamError>
where
    UpstreamError: From<E>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(UpstreamError::from),
        Err(_) => Err(UpstreamError::Timeout(what)),
    }
}

impl From<std::io::Error> for UpstreamError {
    fn from(e: std::io::Error) -> Self {
        UpstreamError::Io(e)
    }
}

/// Reads one reply from a stream into `buf` (bytes after it stay in `buf`).
async fn read_reply(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<Reply, UpstreamError> {
    let mut parser = ReplyParser::new();
    loop {
        while let Some(lf) = buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = buf.drain(..=lf).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            match parser.feed(&line) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => return Err(UpstreamError::Protocol(e.to_string())),
            }
        }
        if buf.len() > 64 * 1024 {
            return Err(UpstreamError::Protocol("reply line too long".into()));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(UpstreamError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn command(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    buf: &mut Vec<u8>,
    line: &str,
    limit: Duration,
    what: &'static str,
) -> Result<Reply, UpstreamError> {
    let wire = format!("{line}\r\n");
    timed(limit, what, async {
        stream.write_all(wire.as_bytes()).await?;
        stream.flush().await?;
        read_reply(stream, buf).await
    })
    .await
}

/// Reads the 220 greeting.
async fn greeting(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
    limit: Duration,
) -> Result<(), UpstreamError> {
    let greeting = timed(limit, "greeting", read_reply(stream, buf)).await?;
    if greeting.code != 220 {
        return Err(UpstreamError::Greeting(greeting));
    }
    Ok(())
}

/// Sends EHLO and insists on 250 (the capabilities decide STARTTLS and AUTH).
async fn ehlo(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    buf: &mut Vec<u8>,
    helo_name: &str,
    limit: Duration,
) -> Result<Reply, UpstreamError> {
    let reply = command(stream, buf, &format!("EHLO {helo_name}"), limit, "EHLO").await?;
    if reply.code != 250 {
        return Err(UpstreamError::Refused {
            stage: "EHLO",
            reply,
        });
    }
    Ok(reply)
}

/// The TLS handshake, under its own timeout.
async fn handshake(
    connector: &TlsConnector,
    name: ServerName<'static>,
    tcp: TcpStream,
    limit: Duration,
    target: &str,
) -> Result<TlsStream<TcpStream>, UpstreamError> {
    match tokio::time::timeout(limit, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(UpstreamError::Tls(target.to_string(), e)),
        Err(_) => Err(UpstreamError::Timeout("TLS handshake")),
    }
}

fn capabilities(ehlo: &Reply) -> Vec<String> {
    ehlo.lines
        .iter()
        .skip(1)
        .map(|l| l.to_ascii_uppercase())
        .collect()
}

impl Connection {
    /// Connects, secures, greets and authenticates.
    pub async fn open(
        endpoint: &Endpoint,
        settings: &PoolSettings,
        tls: Arc<rustls::ClientConfig>,
        helo_name: &str,
    ) -> Result<Connection, UpstreamError> {
        let target = format!("{}:{}", endpoint.host, endpoint.port);
        let tcp = match tokio::time::timeout(
            settings.connect_timeout,
            TcpStream::connect((endpoint.host.as_str(), endpoint.port)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(target, e)),
            Err(_) => return Err(UpstreamError::Timeout("connect")),
        };
        let _ = tcp.set_nodelay(true);
        let server_name = ServerName::try_from(endpoint.host.clone()).map_err(|e| {
            UpstreamError::Tls(target.clone(), std::io::Error::other(e.to_string()))
        })?;
        let connector = TlsConnector::from(tls);
        let cmd_t = settings.command_timeout;
        let mut buf = Vec::new();

        let (mut stream, ehlo) = match endpoint.tls {
            TlsMode::Implicit => {
                let mut stream =
                    handshake(&connector, server_name, tcp, settings.tls_timeout, &target).await?;
                greeting(&mut stream, &mut buf, cmd_t).await?;
                let reply = ehlo(&mut stream, &mut buf, helo_name, cmd_t).await?;
                (stream, reply)
            }
            TlsMode::StartTls => {
                let mut tcp = tcp;
                greeting(&mut tcp, &mut buf, cmd_t).await?;
                let reply = ehlo(&mut tcp, &mut buf, helo_name, cmd_t).await?;
                if !capabilities(&reply).iter().any(|c| c == "STARTTLS") {
                    return Err(UpstreamError::NoStartTls(target));
                }
                let ready = command(&mut tcp, &mut buf, "STARTTLS", cmd_t, "STARTTLS").await?;
                if ready.code != 220 {
                    return Err(UpstreamError::Refused {
                        stage: "STARTTLS",
                        reply: ready,
                    });
                }
                // Anything the server sent before the handshake is not trustworthy
                // (CVE-2011-0411 class): drop it.
                buf.clear();
                let mut stream =
                    handshake(&connector, server_name, tcp, settings.tls_timeout, &target).await?;
                // RFC 3207 §4.2: forget everything learnt before TLS; ask again.
                let reply = ehlo(&mut stream, &mut buf, helo_name, cmd_t).await?;
                (stream, reply)
            }
        };

        let caps = capabilities(&ehlo);
        let auth_line = caps
            .iter()
            .find(|c| c.starts_with("AUTH ") || c.starts_with("AUTH="))
            .cloned()
            .unwrap_or_default();
        let mechs: Vec<&str> = auth_line
            .trim_start_matches("AUTH")
            .trim_start_matches(['=', ' '])
            .split_ascii_whitespace()
            .collect();
        let user = &endpoint.username;
        let pass = endpoint.password.0.expose();
        let reply = if mechs.contains(&"PLAIN") {
            let token = B64.encode(format!("\0{user}\0{pass}"));
            command(
                &mut stream,
                &mut buf,
                &format!("AUTH PLAIN {token}"),
                cmd_t,
                "AUTH",
            )
            .await?
        } else if mechs.contains(&"LOGIN") {
            let r = command(&mut stream, &mut buf, "AUTH LOGIN", cmd_t, "AUTH").await?;
            if r.code != 334 {
                return Err(UpstreamError::Auth(r));
            }
            let r = command(&mut stream, &mut buf, &B64.encode(user), cmd_t, "AUTH").await?;
            if r.code != 334 {
                return Err(UpstreamError::Auth(r));
            }
            command(&mut stream, &mut buf, &B64.encode(pass), cmd_t, "AUTH").await?
        } else {
            return Err(UpstreamError::NoAuth);
        };
        if reply.code != 235 {
            return Err(UpstreamError::Auth(reply));
        }
        let now = Instant::now();
        Ok(Connection {
            stream,
            buf,
            created: now,
            last_used: now,
            messages: 0,
            command_timeout: cmd_t,
            data_timeout: settings.data_timeout,
            size_ext: caps.iter().any(|c| c.starts_with("SIZE")),
        })
    }

    /// Probes a pooled connection before reuse (RSET must answer 250).
    pub async fn rset(&mut self) -> Result<(), UpstreamError> {
        let r = command(
            &mut self.stream,
            &mut self.buf,
            "RSET",
            self.command_timeout,
            "RSET",
        )
        .await?;
        if r.code == 250 {
            Ok(())
        } else {
            Err(UpstreamError::Refused {
                stage: "RSET",
                reply: r,
            })
        }
    }

    /// Runs one transaction. `data` is the message as slices in order (signature fields, header
    /// spans, the body), CRLF-clean and unstuffed; it is dot-stuffed here on the fly, in bounded
    /// chunks, straight into the TLS stream (no framed copy of the message).
    pub async fn send(
        &mut self,
        from: &str,
        rcpts: &[String],
        data: &[&[u8]],
    ) -> Result<Outcome, SendFailure> {
        let before = |error| SendFailure {
            error,
            after_data: false,
        };
        let mail = if self.size_ext {
            format!("MAIL FROM:<{from}> SIZE={}", framing::content_len(data))
        } else {
            format!("MAIL FROM:<{from}>")
        };
        let t = self.command_timeout;
        let r = command(&mut self.stream, &mut self.buf, &mail, t, "MAIL")
            .await
            .map_err(before)?;
        if r.code != 250 {
            return Ok(Outcome {
                reply: r,
                after_data: false,
            });
        }
        for rcpt in rcpts {
            let r = command(
                &mut self.stream,
                &mut self.buf,
                &format!("RCPT TO:<{rcpt}>"),
                t,
                "RCPT",
            )
            .await
            .map_err(before)?;
            if !(250..=251).contains(&r.code) {
                // All or nothing: the client gets this refusal for the whole message, so it
                // never has to guess which recipients were reached.
                let _ = self.rset().await;
                return Ok(Outcome {
                    reply: r,
                    after_data: false,
                });
            }
        }
        let r = command(&mut self.stream, &mut self.buf, "DATA", t, "DATA")
            .await
            .map_err(before)?;
        if r.code != 354 {
            return Ok(Outcome {
                reply: r,
                after_data: false,
            });
        }
        let buf = &mut self.buf;
        let stream = &mut self.stream;
        let result = timed(self.data_timeout, "message transfer", async {
            let mut framer = Framer::new(data, framing::CHUNK);
            let mut chunk = Vec::with_capacity(framing::CHUNK + framing::CHUNK / 2);
            while framer.fill(&mut chunk) {
                stream.write_all(&chunk).await?;
            }
            stream.flush().await?;
            read_reply(stream, buf).await
        })
        .await;
        match result {
            Ok(reply) => {
                self.messages += 1;
                self.last_used = Instant::now();
                Ok(Outcome {
                    reply,
                    after_data: true,
                })
            }
            Err(error) => Err(SendFailure {
                error,
                after_data: true,
            }),
        }
    }

    /// Says goodbye, briefly; errors do not matter any more.
    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = self.stream.write_all(b"QUIT\r\n").await;
            let _ = read_reply(&mut self.stream, &mut self.buf).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}
