//! Drives one client connection: reads bytes, feeds the sans-IO session, writes its replies,
//! and hands complete messages to the relay. The session decides; this module only does I/O.
//!
//! The driver is generic over the stream, so the same code runs on plain TCP, after STARTTLS,
//! and on an implicit-TLS (RFC 8314) listener.
//!
//! Hostile-client rules enforced here:
//! - **Pregreet**: with `greeting_delay_ms > 0`, a client that talks before the greeting is
//!   refused with `554 5.5.1` and disconnected (spambots and smuggling probes do this; real
//!   clients wait).
//! - **Pipelining** (RFC 2920): replies to pipelined commands are batched and flushed whenever
//!   no further complete command is buffered, and always before waiting for DATA content.
//!   Bytes pipelined after an *accepted* DATA are message content (as Postfix does; DATA ends
//!   a group, so a client writing ahead is sending the message). Bytes pipelined after a
//!   *refused* DATA are discarded, never executed as commands.
//! - **STARTTLS**: after the `220`, every byte already buffered is discarded (CVE-2011-0411);
//!   the session starts again from the greeting state on the TLS stream.
//! - **Time**: a command must be complete within `command_timeout` of the moment we started
//!   waiting for it (partial bytes do not extend it), each DATA read within `data_timeout`,
//!   the whole DATA phase within `data_total_timeout`, and the session within
//!   `session_timeout` — so a client sending one byte a second cannot hold a slot forever.
//! - **AUTH**: passwords are checked on the blocking pool; a failure is answered only after
//!   `auth_failure_delay`. Credentials and hashes are never logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::Snapshot;
use crate::relay::{ClientInfo, Relay};
use crate::smtp::codec::{DataReader, LineReader};
use crate::smtp::reply::Reply;
use crate::smtp::session::{Action, Limits, Session};

/// RFC 5321 §4.5.3.1.4: 512 octets for a command line, CRLF included.
const MAX_COMMAND_LINE: usize = 510;

/// Upper bound on writing one batch of replies to a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

enum Read {
    Data(usize),
    Eof,
    Timeout,
    Shutdown,
}

/// How a connection begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plaintext SMTP; STARTTLS when configured.
    Plain,
    /// TLS from the first byte (RFC 8314 implicit TLS).
    ImplicitTls,
}

/// How one leg (before or after TLS) of a connection ended.
enum End<S> {
    Closed,
    StartTls(S),
}

struct Conn {
    peer: SocketAddr,
    conn_id: u64,
    snapshot: Arc<Snapshot>,
    relay: Arc<Relay>,
    shutdown: watch::Receiver<bool>,
    session_deadline: Instant,
    client: ClientInfo,
}

pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    snapshot: Arc<Snapshot>,
    relay: Arc<Relay>,
    shutdown: watch::Receiver<bool>,
    mode: Mode,
) {
    let s = &snapshot.server;
    let allowed = s.allow_networks.iter().any(|n| n.contains(peer.ip()));
    let tls = s.tls.clone();
    let mut session = Session::new(
        Limits {
            hostname: s.hostname.clone(),
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_errors: s.max_errors,
            starttls: tls.is_some(),
            auth_users: !s.users.is_empty(),
            auth_plaintext: s.auth_plaintext_loopback && crate::net::is_loopback(peer.ip()),
            max_auth_failures: s.max_auth_failures,
        },
        allowed,
    );
    let mut conn = Conn {
        peer,
        conn_id,
        session_deadline: Instant::now() + s.session_timeout,
        client: ClientInfo {
            conn_id,
            addr: peer,
        },
        snapshot: Arc::clone(&snapshot),
        relay,
        shutdown,
    };
    tracing::debug!(conn = conn_id, client = %peer, allowed, ?mode, "connection accepted");

    let plain = match mode {
        Mode::Plain => match conn.drive(stream, &mut session, true).await {
            End::Closed => return,
            End::StartTls(tcp) => tcp,
        },
        Mode::ImplicitTls => stream,
    };
    // STARTTLS was accepted, or this is an implicit-TLS listener.
    let Some(tls) = tls else {
        tracing::warn!(conn = conn_id, client = %peer, "TLS requested but no [server.tls] is configured");
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::clone(&tls.config));
    let deadline = (Instant::now() + tls.handshake_timeout).min(conn.session_deadline);
    let stream = match tokio::time::timeout_at(deadline, acceptor.accept(plain)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(conn = conn_id, client = %peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(conn = conn_id, client = %peer, "TLS handshake timed out");
            return;
        }
    };
    session.tls_started();
    tracing::debug!(conn = conn_id, client = %peer, "TLS established");
    let _ = conn
        .drive(stream, &mut session, mode == Mode::ImplicitTls)
        .await;
}

impl Conn {
    fn hostname(&self) -> &str {
        &self.snapshot.server.hostname
    }

    /// The reply to a client that is idle when the relay shuts down.
    fn shutting_down(&self) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!("{} Service shutting down", self.hostname()),
        )
    }

    /// Runs the session over `stream` until it closes or upgrades to TLS. Buffers are local to
    /// this call: whatever was read before a STARTTLS is dropped with them.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: S,
        session: &mut Session,
        greet: bool,
    ) -> End<S> {
        let snapshot = Arc::clone(&self.snapshot);
        let s = &snapshot.server;
        let (conn_id, peer) = (self.conn_id, self.peer);
        let mut out: Vec<u8> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut lines = LineReader::new(MAX_COMMAND_LINE, s.bare_newline);
        let mut chunk = vec![0u8; 16 * 1024];

        if greet {
            if !s.greeting_delay.is_zero() {
                let deadline = (Instant::now() + s.greeting_delay).min(self.session_deadline);
                match read_some(&mut stream, &mut chunk, deadline, None).await {
                    Read::Data(n) => {
                        tracing::info!(
                            conn = conn_id,
                            client = %peer,
                            bytes = n,
                            "client sent data before the greeting (pregreet); refused"
                        );
                        let r = Reply::new(
                            554,
                            "5.5.1",
                            "Protocol error: client sent data before the greeting",
                        );
                        close_with(&mut stream, &mut out, &r).await;
                        return End::Closed;
                    }
                    Read::Eof | Read::Shutdown => return End::Closed,
                    Read::Timeout => {}
                }
            }
            out.extend_from_slice(&session.greeting().to_wire());
        }

        // When we began waiting for the command now being received; partial bytes do not
        // move it, so a client dribbling one byte at a time still meets command_timeout.
        let mut command_deadline: Option<Instant> = None;
        loop {
            // Act on every complete command already buffered (pipelining).
            while let Some(line) = lines.next_line(&mut buf) {
                command_deadline = None;
                // Once shutdown has begun, only the transaction in flight may finish: a
                // command pipelined behind it must not start a new one.
                if !session.in_transaction() && *self.shutdown.borrow() {
                    close_with(&mut stream, &mut out, &self.shutting_down()).await;
                    return End::Closed;
                }
                let mut action = session.command(line);
                if let Action::Authenticate(creds) = action {
                    action = self.authenticate(session, creds).await;
                }
                match action {
                    Action::Reply(r) => {
                        if r.code >= 400 {
                            tracing::info!(conn = conn_id, client = %peer, reply = %r.one_line(), "command refused");
                        }
                        out.extend_from_slice(&r.to_wire());
                    }
                    Action::ReplyDiscard(r) => {
                        tracing::info!(conn = conn_id, client = %peer, reply = %r.one_line(), discarded = buf.len(), "command refused; input pipelined after it discarded");
                        out.extend_from_slice(&r.to_wire());
                        buf.clear();
                        lines = LineReader::new(MAX_COMMAND_LINE, s.bare_newline);
                    }
                    Action::Close(r) => {
                        tracing::info!(conn = conn_id, client = %peer, reply = %r.one_line(), "closing connection");
                        close_with(&mut stream, &mut out, &r).await;
                        return End::Closed;
                    }
                    Action::StartTls(r) => {
                        out.extend_from_slice(&r.to_wire());
                        if write_out(&mut stream, &mut out).await.is_err() {
                            return End::Closed;
                        }
                        if !buf.is_empty() {
                            tracing::info!(
                                conn = conn_id,
                                client = %peer,
                                discarded = buf.len(),
                                "input pipelined after STARTTLS discarded"
                            );
                        }
                        return End::StartTls(stream);
                    }
                    Action::Authenticate(_) => {
                        // `authenticate` never returns another Authenticate.
                        return End::Closed;
                    }
                    Action::StartData(r) => {
                        out.extend_from_slice(&r.to_wire());
                        if write_out(&mut stream, &mut out).await.is_err() {
                            return End::Closed;
                        }
                        if !self
                            .data_phase(&mut stream, session, &mut buf, &mut chunk, &mut out)
                            .await
                        {
                            return End::Closed;
                        }
                    }
                }
            }
            if write_out(&mut stream, &mut out).await.is_err() {
                return End::Closed;
            }
            let started = *command_deadline.get_or_insert(Instant::now() + s.command_timeout);
            let deadline = started.min(self.session_deadline);
            let in_tx = session.in_transaction();
            let watch_shutdown = (!in_tx).then_some(&mut self.shutdown);
            match read_some(&mut stream, &mut chunk, deadline, watch_shutdown).await {
                Read::Data(n) => buf.extend_from_slice(&chunk[..n]),
                Read::Eof => return End::Closed,
                Read::Timeout => {
                    let r = Reply::new(
                        421,
                        "4.4.2",
                        format!("{} Timeout waiting for command", self.hostname()),
                    );
                    tracing::info!(conn = conn_id, client = %peer, "command timeout; closing");
                    close_with(&mut stream, &mut out, &r).await;
                    return End::Closed;
                }
                Read::Shutdown => {
                    close_with(&mut stream, &mut out, &self.shutting_down()).await;
                    return End::Closed;
                }
            }
        }
    }

    /// Checks credentials off the async workers, delays a failure, and returns the session's
    /// verdict (235, 535, or 421 after too many failures).
    async fn authenticate(
        &self,
        session: &mut Session,
        creds: crate::smtp::session::Credentials,
    ) -> Action {
        // Each argon2 check takes ~19 MiB and real CPU time: a bounded number run at once, so
        // a crowd of clients guessing passwords cannot exhaust memory.
        static VERIFIERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);
        let deadline =
            (Instant::now() + self.snapshot.server.command_timeout).min(self.session_deadline);
        let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, VERIFIERS.acquire()).await else {
            tracing::warn!(conn = self.conn_id, client = %self.peer, "authentication not checked: verifiers busy");
            return Action::Reply(Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure; try again later",
            ));
        };
        let snapshot = Arc::clone(&self.snapshot);
        let user_name = creds.user.clone();
        let checked = tokio::task::spawn_blocking(move || {
            crate::users::authenticate(
                &snapshot.server.users,
                &creds.user,
                creds.password.as_bytes(),
            )
        })
        .await
        .unwrap_or(None);
        // The attempted name is not a secret, but it is client-controlled: quote and cap it.
        let shown: String = user_name.chars().take(64).collect();
        match &checked {
            Some(u) => {
                tracing::info!(conn = self.conn_id, client = %self.peer, user = %u.user, "authenticated")
            }
            None => {
                tracing::info!(conn = self.conn_id, client = %self.peer, user = ?shown, "authentication failed");
                tokio::time::sleep(self.snapshot.server.auth_failure_delay).await;
            }
        }
        session.auth_result(checked)
    }

    /// Reads one message after the 354 and writes the final reply into `out`. Returns false
    /// when the connection is over.
    async fn data_phase<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        session: &mut Session,
        buf: &mut Vec<u8>,
        chunk: &mut [u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let snapshot = Arc::clone(&self.snapshot);
        let s = &snapshot.server;
        let (conn_id, peer) = (self.conn_id, self.peer);
        let mut reader = DataReader::new(s.bare_newline, s.max_message_size, s.max_header_size);
        // Bytes pipelined behind DATA are message content (see the module doc).
        let (used, mut done) = reader.feed(buf);
        buf.drain(..used);
        let phase_deadline = (Instant::now() + s.data_total_timeout).min(self.session_deadline);
        while !done {
            let deadline = (Instant::now() + s.data_timeout).min(phase_deadline);
            // A shutdown does not interrupt a message being received.
            match read_some(stream, chunk, deadline, None).await {
                Read::Data(n) => {
                    let (used, end) = reader.feed(&chunk[..n]);
                    done = end;
                    if end {
                        buf.extend_from_slice(&chunk[used..n]);
                    }
                }
                Read::Eof | Read::Shutdown => {
                    tracing::info!(
                        conn = conn_id,
                        client = %peer,
                        received = reader.size(),
                        "client disconnected during DATA; nothing relayed"
                    );
                    return false;
                }
                Read::Timeout => {
                    tracing::info!(
                        conn = conn_id,
                        client = %peer,
                        received = reader.size(),
                        "timeout during DATA; nothing relayed"
                    );
                    let r = Reply::new(
                        421,
                        "4.4.2",
                        format!("{} Timeout waiting for message data", s.hostname),
                    );
                    close_with(stream, out, &r).await;
                    return false;
                }
            }
        }
        let reply = match session.data_finished(reader.finish()) {
            Ok(tx) => {
                self.relay
                    .deliver(&snapshot, &self.client, tx.envelope, tx.data)
                    .await
            }
            Err(r) => {
                tracing::info!(conn = conn_id, client = %peer, reply = %r.one_line(), "message refused");
                r
            }
        };
        out.extend_from_slice(&reply.to_wire());
        true
    }
}

async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    chunk: &mut [u8],
    deadline: Instant,
    shutdown: Option<&mut watch::Receiver<bool>>,
) -> Read {
    let read = tokio::time::timeout_at(deadline, stream.read(chunk));
    let stop = async {
        match shutdown {
            Some(rx) => {
                if *rx.borrow() {
                    return;
                }
                while rx.changed().await.is_ok() {
                    if *rx.borrow() {
                        return;
                    }
                }
                std::future::pending::<()>().await
            }
            None => std::future::pending::<()>().await,
        }
    };
    // Shutdown first: a command that arrives at the same moment must not win the race and
    // start a new transaction after shutdown has begun.
    tokio::select! {
        biased;
        _ = stop => Read::Shutdown,
        r = read => match r {
            Ok(Ok(0)) | Ok(Err(_)) => Read::Eof,
            Ok(Ok(n)) => Read::Data(n),
            Err(_) => Read::Timeout,
        },
    }
}

/// Writes what is pending plus a last reply; the caller then ends the connection. A write
/// error no longer matters at that point.
async fn close_with<S: AsyncWrite + Unpin>(stream: &mut S, out: &mut Vec<u8>, reply: &Reply) {
    out.extend_from_slice(&reply.to_wire());
    let _ = write_out(stream, out).await;
}

async fn write_out<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let r = tokio::time::timeout(WRITE_TIMEOUT, async {
        stream.write_all(out).await?;
        stream.flush().await
    })
    .await;
    out.clear();
    match r {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}
