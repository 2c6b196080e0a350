//! Drives one connection for any [`Handler`]: reads bytes, frames them with `smtp::codec`,
//! hands lines and DATA to the handler, and writes the replies it returns. The handler decides;
//! this module only does I/O and time.
//!
//! The driver is generic over the stream, so the same code runs on plain TCP, after STARTTLS,
//! and on an implicit-TLS (RFC 8314) listener.
//!
//! Hostile-client rules enforced here, for every protocol:
//! - **Pregreet**: with a greeting delay, a client that talks before the greeting gets the
//!   protocol's [`Notice::Pregreet`] reply and is disconnected (spambots and smuggling probes
//!   do this; real clients wait).
//! - **Pipelining** (RFC 2920): replies to pipelined commands are batched and flushed whenever
//!   no further complete command is buffered, and always before waiting for DATA content.
//!   Bytes pipelined after an *accepted* DATA are message content (as Postfix does; DATA ends
//!   a group, so a client writing ahead is sending the message). After a refused DATA
//!   ([`Action::ReplyDiscard`]) the connection is closed once the refusal is written: a
//!   client that streams its message without waiting for the 354 would otherwise have its
//!   content — bytes already buffered and bytes still on the way — read as commands, and a
//!   second transaction smuggled in the body would run. (Discarding "until the client is back
//!   in command state" cannot be done safely: nothing on the wire marks that moment.)
//! - **Lines that never end**: an over-long command line gets the protocol's reply as soon
//!   as it passes the limit (`smtp::codec::LineReader`); once a bounded amount more
//!   of it has been dropped the connection is closed
//!   ([`crate::smtp::codec::MAX_DISCARDED_LINE`]).
//! - **STARTTLS**: after the `220`, every byte already buffered is discarded (CVE-2011-0411);
//!   the handler starts again from the greeting state on the TLS stream; the handshake has
//!   its own deadline.
//! - **Time**: a command must be complete within `command_timeout` of the moment we started
//!   waiting for it (partial bytes do not extend it, unless the protocol asks for an idle
//!   timeout instead: `command_timeout_is_idle`), each DATA read within `data_timeout`,
//!   the whole DATA phase within `data_total_timeout`, DATA must average at least
//!   `min_data_rate` over each of its windows ([`Notice::DataTooSlow`]), and the connection within
//!   `session_timeout` — so a client sending one byte a second cannot hold a slot forever.
//!   Every write has `write_timeout`.
//! - **Shutdown**: an idle client gets [`Notice::ShuttingDown`] at once; a transaction in
//!   flight (DATA included) may finish, but a command pipelined behind it may not start
//!   another.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Action, Handler, Notice, Peer, Settings};
use crate::budget::{ByteBudget, Reservation};
use crate::smtp::codec::{DataError, DataReader, LineReader};
use crate::smtp::reply::Reply;

/// Stands in for "no limit" in deadline arithmetic (ten years).
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How a connection begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Plaintext SMTP; STARTTLS when the protocol offers it.
    Plain,
    /// TLS from the first byte (RFC 8314 implicit TLS).
    ImplicitTls,
}

enum Read {
    Data(usize),
    Eof,
    Timeout,
    Shutdown,
}

/// How one leg (before or after TLS) of a connection ended.
enum End<S> {
    Closed,
    StartTls(S),
}

struct Conn<H> {
    peer: Peer,
    settings: Arc<Settings>,
    handler: H,
    shutdown: watch::Receiver<bool>,
    session_deadline: Instant,
}

/// Runs one accepted connection to its end.
pub(super) async fn handle<H: Handler>(
    stream: TcpStream,
    peer: Peer,
    settings: Arc<Settings>,
    handler: H,
    shutdown: watch::Receiver<bool>,
) {
    let session_deadline = Instant::now() + settings.session_timeout.unwrap_or(FOREVER);
    let mut conn = Conn {
        peer,
        settings,
        handler,
        shutdown,
        session_deadline,
    };
    let (id, client, mode) = (peer.id, peer.addr, peer.mode);
    tracing::debug!(conn = id, client = %client, ?mode, "connection accepted");

    let plain = match mode {
        Mode::Plain => match conn.drive(stream, true).await {
            End::Closed => return,
            End::StartTls(tcp) => tcp,
        },
        Mode::ImplicitTls => stream,
    };
    // STARTTLS was accepted, or this is an implicit-TLS listener.
    let Some(tls) = conn.settings.tls.clone() else {
        tracing::warn!(conn = id, client = %client, "TLS requested but no TLS is configured");
        return;
    };
    let deadline = (Instant::now() + tls.handshake_timeout).min(conn.session_deadline);
    let stream = match tokio::time::timeout_at(deadline, tls.acceptor.accept(plain)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(conn = id, client = %client, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(conn = id, client = %client, "TLS handshake timed out");
            return;
        }
    };
    conn.handler.tls_started();
    tracing::debug!(conn = id, client = %client, "TLS established");
    let _ = conn.drive(stream, mode == Mode::ImplicitTls).await;
}

impl<H: Handler> Conn<H> {
    /// Queues a reply (after the protocol's reply delay).
    async fn push(&self, out: &mut Vec<u8>, reply: &Reply) {
        if !self.settings.reply_delay.is_zero() {
            tokio::time::sleep(self.settings.reply_delay).await;
        }
        out.extend_from_slice(&self.handler.wire(reply));
    }

    /// Writes what is pending plus the protocol's reply to `notice` (if any), then closes.
    async fn close_notice<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        out: &mut Vec<u8>,
        notice: Notice,
    ) {
        let reply = self.handler.notice(notice);
        self.close_with(stream, out, reply.as_ref()).await;
    }

    /// Writes what is pending plus a last reply, then shuts the stream down. A write error no
    /// longer matters at that point.
    async fn close_with<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        out: &mut Vec<u8>,
        reply: Option<&Reply>,
    ) {
        if let Some(r) = reply {
            self.push(out, r).await;
        }
        let _ = self.write_out(stream, out).await;
        let _ = tokio::time::timeout(self.settings.write_timeout, stream.shutdown()).await;
    }

    async fn write_out<S: AsyncWrite + Unpin>(
        &self,
        stream: &mut S,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let r = tokio::time::timeout(self.settings.write_timeout, async {
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

    /// Runs the handler over `stream` until it closes or upgrades to TLS. Buffers are local to
    /// this call: whatever was read before a STARTTLS is dropped with them.
    async fn drive<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        mut stream: S,
        greet: bool,
    ) -> End<S> {
        let settings = Arc::clone(&self.settings);
        let s = &*settings;
        let (conn_id, peer) = (self.peer.id, self.peer.addr);
        let mut out: Vec<u8> = Vec::new();
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let mut lines = LineReader::new(s.max_command_line, s.bare_newline);
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
                        self.close_notice(&mut stream, &mut out, Notice::Pregreet)
                            .await;
                        return End::Closed;
                    }
                    Read::Eof | Read::Shutdown => return End::Closed,
                    Read::Timeout => {}
                }
            }
            match self.handler.greeting() {
                Action::Close(r) => {
                    self.close_with(&mut stream, &mut out, Some(&r)).await;
                    return End::Closed;
                }
                Action::Drop => return End::Closed,
                Action::Reply(r)
                | Action::ReplyDiscard(r)
                | Action::StartData(r)
                | Action::StartTls(r) => self.push(&mut out, &r).await,
            }
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
                if !self.handler.in_transaction() && *self.shutdown.borrow() {
                    self.close_notice(&mut stream, &mut out, Notice::ShuttingDown)
                        .await;
                    return End::Closed;
                }
                match self.handler.command(line).await {
                    Action::Reply(r) => {
                        if r.code >= 400 {
                            tracing::info!(conn = conn_id, client = %peer, reply = %r.one_line(), "command refused");
                        }
                        self.push(&mut out, &r).await;
                    }
                    Action::ReplyDiscard(r) => {
                        tracing::info!(conn = conn_id, client = %peer, reply = %r.one_line(), discarded = buf.len(), "DATA refused; closing (anything the client streams after it is message content, never commands)");
                        self.close_with(&mut stream, &mut out, Some(&r)).await;
                        return End::Closed;
                    }
                    Action::Close(r) => {
                        tracing::info!(conn = conn_id, client = %peer, reply = %r.one_line(), "closing connection");
                        self.close_with(&mut stream, &mut out, Some(&r)).await;
                        return End::Closed;
                    }
                    Action::Drop => {
                        tracing::debug!(conn = conn_id, client = %peer, "connection dropped by the protocol");
                        let _ = self.write_out(&mut stream, &mut out).await;
                        return End::Closed;
                    }
                    Action::StartTls(r) => {
                        self.push(&mut out, &r).await;
                        if self.write_out(&mut stream, &mut out).await.is_err() {
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
                    Action::StartData(r) => {
                        self.push(&mut out, &r).await;
                        if self.write_out(&mut stream, &mut out).await.is_err() {
                            return End::Closed;
                        }
                        if !self
                            .data_phase(&mut stream, &mut buf, &mut chunk, &mut out)
                            .await
                        {
                            return End::Closed;
                        }
                    }
                }
            }
            if lines.overrun() {
                tracing::info!(
                    conn = conn_id,
                    client = %peer,
                    "command line without an end past the limit; closing"
                );
                self.close_with(&mut stream, &mut out, None).await;
                return End::Closed;
            }
            if self.write_out(&mut stream, &mut out).await.is_err() {
                return End::Closed;
            }
            let started = *command_deadline.get_or_insert(Instant::now() + s.command_timeout);
            let deadline = started.min(self.session_deadline);
            let in_tx = self.handler.in_transaction();
            let watch_shutdown = (!in_tx).then_some(&mut self.shutdown);
            match read_some(&mut stream, &mut chunk, deadline, watch_shutdown).await {
                Read::Data(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if s.command_timeout_is_idle {
                        command_deadline = None;
                    }
                }
                Read::Eof => return End::Closed,
                Read::Timeout => {
                    tracing::info!(conn = conn_id, client = %peer, "command timeout; closing");
                    self.close_notice(&mut stream, &mut out, Notice::CommandTimeout)
                        .await;
                    return End::Closed;
                }
                Read::Shutdown => {
                    self.close_notice(&mut stream, &mut out, Notice::ShuttingDown)
                        .await;
                    return End::Closed;
                }
            }
        }
    }

    /// Reads one message after the 354 and queues the handler's final reply in `out`.
    /// Returns false when the connection is over.
    async fn data_phase<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        stream: &mut S,
        buf: &mut Vec<u8>,
        chunk: &mut [u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let settings = Arc::clone(&self.settings);
        let s = &*settings;
        let (conn_id, peer) = (self.peer.id, self.peer.addr);
        let mut reader = DataReader::new(s.bare_newline, s.max_message_size, s.max_header_size);
        // The bytes this message holds count against the process-wide budget until the handler
        // is done with them (the relay keeps the DATA buffer until the upstream has answered).
        let mut reservation = self.handler.budget().map(ByteBudget::reserve);
        let mut held = BudgetGuard::default();
        // Bytes pipelined behind DATA are message content (see the module doc).
        let (used, mut done) = reader.feed(buf);
        buf.drain(..used);
        held.account(&mut reader, reservation.as_mut(), conn_id, peer);
        let phase_deadline =
            (Instant::now() + s.data_total_timeout.unwrap_or(FOREVER)).min(self.session_deadline);
        let mut rate = s.min_data_rate.map(RateWindow::new);
        while !done {
            let read_deadline = (Instant::now() + s.data_timeout).min(phase_deadline);
            let deadline = match &rate {
                Some(w) => read_deadline.min(w.ends),
                None => read_deadline,
            };
            // A shutdown does not interrupt a message being received.
            match read_some(stream, chunk, deadline, None).await {
                // Only the rate window ended: checked below.
                Read::Timeout if Instant::now() < read_deadline => {}
                Read::Data(n) => {
                    if let Some(w) = &mut rate {
                        w.bytes = w.bytes.saturating_add(n as u64);
                    }
                    let (used, end) = reader.feed(&chunk[..n]);
                    held.account(&mut reader, reservation.as_mut(), conn_id, peer);
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
                    self.close_notice(stream, out, Notice::DataTimeout).await;
                    return false;
                }
            }
            // A window is over (a message that just ended is not judged on it).
            if !done
                && let Some(w) = &mut rate
                && Instant::now() >= w.ends
            {
                if w.too_slow() {
                    tracing::info!(
                        conn = conn_id,
                        client = %peer,
                        received = reader.size(),
                        window_bytes = w.bytes,
                        min_bytes_per_sec = w.rate.bytes_per_sec,
                        window_secs = w.rate.window.as_secs(),
                        "DATA below the minimum rate; nothing relayed"
                    );
                    self.close_notice(stream, out, Notice::DataTooSlow).await;
                    return false;
                }
                w.restart();
            }
        }
        let size = reader.size();
        // `reservation` lives until the handler has answered: its bytes are still in memory.
        let action = self.handler.data(reader.finish(), size).await;
        drop(reservation);
        match action {
            Action::Close(r) => {
                self.close_with(stream, out, Some(&r)).await;
                false
            }
            Action::Drop => false,
            Action::Reply(r)
            | Action::ReplyDiscard(r)
            | Action::StartData(r)
            | Action::StartTls(r) => {
                self.push(out, &r).await;
                true
            }
        }
    }
}

/// The minimum DATA rate, measured over consecutive windows from the 354: each window must
/// bring at least `bytes_per_sec × window` bytes, so a client trickling a few bytes a second
/// cannot hold a connection (and a budget reservation) for the whole `data_total_timeout`.
struct RateWindow {
    rate: super::DataRate,
    ends: Instant,
    bytes: u64,
}

impl RateWindow {
    fn new(rate: super::DataRate) -> RateWindow {
        RateWindow {
            rate,
            ends: Instant::now() + rate.window,
            bytes: 0,
        }
    }

    fn too_slow(&self) -> bool {
        let need = u128::from(self.rate.bytes_per_sec) * self.rate.window.as_millis() / 1000;
        u128::from(self.bytes) < need
    }

    fn restart(&mut self) {
        self.ends = Instant::now() + self.rate.window;
        self.bytes = 0;
    }
}

/// Grows a DATA transfer's budget reservation with what the reader has stored, and refuses the
/// message (once) when the budget says no.
#[derive(Default)]
struct BudgetGuard {
    accounted: usize,
    refused: bool,
}

impl BudgetGuard {
    fn account(
        &mut self,
        reader: &mut DataReader,
        reservation: Option<&mut Reservation>,
        conn_id: u64,
        peer: std::net::SocketAddr,
    ) {
        let Some(reservation) = reservation else {
            return;
        };
        // The buffers' capacity, not just the bytes stored: the budget bounds real memory.
        let grown = reader.held().saturating_sub(self.accounted);
        if self.refused || grown == 0 {
            return;
        }
        if reservation.try_grow(grown) {
            self.accounted += grown;
        } else {
            self.refused = true;
            reader.refuse(DataError::OverBudget);
            // Nothing of this message is kept: its bytes go back to the budget now.
            reservation.release();
            tracing::warn!(
                conn = conn_id,
                client = %peer,
                received = reader.size(),
                "message bytes in flight over budget; message refused (452 4.3.1)"
            );
        }
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
