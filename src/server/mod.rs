//! The one SMTP server shell: listeners (plaintext and implicit TLS), connection limits, the
//! TLS upgrade, every network wait under an explicit timeout, pregreet detection, pipelining,
//! CRLF-strict DATA framing and a graceful drain — for any [`Protocol`].
//!
//! Three protocols run on it: the relay (`relay::protocol`), the SES simulator
//! (`sim::server`) and the tests' scripted upstream. Keeping one shell means they cannot drift
//! apart on framing, timeouts or STARTTLS handling. A protocol sees lines and DATA, never a
//! socket: its per-connection [`Handler`] returns an [`Action`] (reply, start TLS, read DATA,
//! close) and the shell's connection driver ([`connection`]) is the one place that writes.
//! Every reply the shell itself has to send (too many connections, pregreet, timeouts,
//! shutting down) is asked of the protocol as a [`Notice`], so each words its own.
//!
//! Invariants: the shell does not import `config`, `relay` or `sim`; its [`Settings`] are built
//! by each protocol (the relay takes them from its `relay::Settings` at every accept, so a
//! reload applies to new connections; the simulator from its `SimSettings`). A connection keeps the settings it was
//! accepted with. Shutdown stops accepting, tells idle connections (the protocol's notice),
//! lets transactions in flight finish within the grace period, then cuts what is left.

pub mod connection;
mod limits;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

use crate::budget::ByteBudget;
use crate::smtp::codec::{BareNewline, DataError, LineError};
use crate::smtp::reply::Reply;

pub use connection::Mode;

/// The shell's TLS: the acceptor (certificate and key) and the handshake deadline.
#[derive(Clone)]
pub struct TlsSettings {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// What the shell needs to run connections; each protocol builds its own.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server's name (logs).
    pub hostname: String,
    /// Connections open at once, in total and per client address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// STARTTLS and implicit TLS; without it an upgrade request closes the connection.
    pub tls: Option<TlsSettings>,
    /// Wait this long before the greeting; a client that talks first is refused (pregreet).
    pub greeting_delay: Duration,
    /// Longest command line, CRLF excluded (RFC 5321 §4.5.3.1.4: 510 for commands).
    pub max_command_line: usize,
    /// What a bare CR or LF in a command or in DATA means.
    pub bare_newline: BareNewline,
    /// DATA limits for the CRLF-strict reader (`smtp::codec::DataReader`).
    pub max_message_size: usize,
    pub max_header_size: usize,
    /// A command must be complete within this time of the moment the shell began waiting.
    pub command_timeout: Duration,
    /// When true, `command_timeout` is an idle timeout instead: any bytes received restart it
    /// (SES's `Timeout waiting for data from client`, in the simulator). The relay keeps it
    /// false so a client dribbling a byte at a time cannot hold a slot.
    pub command_timeout_is_idle: bool,
    /// Each read during DATA.
    pub data_timeout: Duration,
    /// The whole DATA phase (`None`: only `data_timeout` per read applies).
    pub data_total_timeout: Option<Duration>,
    /// The least DATA must bring per window (`None`: no rate floor; the simulator).
    pub min_data_rate: Option<DataRate>,
    /// The whole connection (`None`: unbounded while the client keeps talking).
    pub session_timeout: Option<Duration>,
    /// Writing one batch of replies to a client that does not read.
    pub write_timeout: Duration,
    /// A pause before every reply (the simulator's injected latency; zero for the relay).
    pub reply_delay: Duration,
    /// How long transactions in flight may run after shutdown begins.
    pub shutdown_grace: Duration,
}

impl Settings {
    /// Settings with the relay's defaults for the limits and timeouts; protocols override.
    pub fn new(hostname: impl Into<String>) -> Settings {
        Settings {
            hostname: hostname.into(),
            max_connections: usize::MAX,
            max_connections_per_ip: usize::MAX,
            tls: None,
            greeting_delay: Duration::ZERO,
            max_command_line: 510,
            bare_newline: BareNewline::Reject,
            max_message_size: 40 * 1024 * 1024,
            max_header_size: 1024 * 1024,
            command_timeout: Duration::from_secs(300),
            command_timeout_is_idle: false,
            data_timeout: Duration::from_secs(300),
            data_total_timeout: None,
            min_data_rate: None,
            session_timeout: None,
            write_timeout: Duration::from_secs(30),
            reply_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// A floor under the DATA transfer rate: every `window` from the 354 must bring at least
/// `bytes_per_sec × window` bytes, or the session gets [`Notice::DataTooSlow`] and is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRate {
    pub bytes_per_sec: u64,
    pub window: Duration,
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Unique within one server, for log lines.
    pub id: u64,
    pub mode: Mode,
}

/// What the shell does after a handler call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Queue this reply and read the next command (replies are batched while pipelined
    /// commands are buffered, RFC 2920).
    Reply(Reply),
    /// Write this reply to a refused DATA and close: whatever the client sent or still sends
    /// after it may be message content, never commands (see [`connection`]).
    ReplyDiscard(Reply),
    /// Write this reply (354), then read the message and call [`Handler::data`].
    StartData(Reply),
    /// Write this reply (220), discard buffered input (CVE-2011-0411), run the TLS handshake,
    /// then call [`Handler::tls_started`].
    StartTls(Reply),
    /// Write this reply and close.
    Close(Reply),
    /// Close without a reply (injected faults; a broken client).
    Drop,
}

/// A moment at which the shell needs a reply from the protocol. `None` closes silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Over a connection limit (only on plaintext listeners).
    TooManyConnections,
    /// The client talked before the greeting.
    Pregreet,
    /// No complete command within the command timeout.
    CommandTimeout,
    /// DATA stalled or ran past its total timeout.
    DataTimeout,
    /// DATA arrived slower than [`Settings::min_data_rate`] over a window.
    DataTooSlow,
    /// The server is shutting down and the client is idle.
    ShuttingDown,
}

/// One connection's protocol state: lines and DATA in, actions out.
pub trait Handler: Send + Sync + 'static {
    /// The greeting (after the greeting delay), or a refusal.
    fn greeting(&mut self) -> Action;
    /// One command line (CRLF removed) or a framing error in reading it.
    fn command(&mut self, line: Result<Vec<u8>, LineError>) -> impl Future<Output = Action> + Send;
    /// The process-wide bytes-in-flight budget this connection's DATA counts against (`None`:
    /// unbounded). The shell grows a reservation as DATA is stored — by the reader's buffer
    /// capacity, what is really allocated, not just the bytes kept — and holds it until
    /// [`Handler::data`] has answered; a DATA that would exceed it is read to its end, not
    /// stored, and handed over as `Err(DataError::OverBudget)` (the relay answers `452 4.3.1`).
    fn budget(&self) -> Option<&ByteBudget> {
        None
    }
    /// The DATA reader's result after a [`Action::StartData`], and how many bytes it read.
    fn data(
        &mut self,
        data: Result<Vec<u8>, DataError>,
        size: usize,
    ) -> impl Future<Output = Action> + Send;
    /// The TLS handshake finished (after STARTTLS, or on an implicit-TLS listener).
    fn tls_started(&mut self);
    /// Whether a transaction is under way (shutdown lets it finish).
    fn in_transaction(&self) -> bool;
    /// The protocol's wording for a shell-level event.
    fn notice(&mut self, notice: Notice) -> Option<Reply>;
    /// A reply's wire form (a protocol may need a quirk, e.g. SES's `334 ` with its space).
    fn wire(&self, reply: &Reply) -> Vec<u8> {
        reply.to_wire()
    }
}

/// A protocol served by the shell.
pub trait Protocol: Send + Sync + 'static {
    type Handler: Handler;
    /// The settings in force now (the drain reads its grace period here).
    fn settings(&self) -> Arc<Settings>;
    /// A connection was accepted: the settings it runs with and its handler. Called before
    /// the connection limits are checked (a refused connection gets its handler's notice).
    fn accept(&self, peer: Peer) -> (Arc<Settings>, Self::Handler);
    /// Everything has stopped (the relay closes its upstream pool here).
    fn stopped(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Binds every address (failing with the address in the message).
pub async fn bind(addrs: &[SocketAddr]) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::new();
    for a in addrs {
        let l = TcpListener::bind(a)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {a}: {e}")))?;
        out.push(l);
    }
    Ok(out)
}

/// A bound listening socket and how connections on it begin.
pub struct Listener {
    pub tcp: TcpListener,
    pub mode: Mode,
}

impl Listener {
    pub fn new(tcp: TcpListener, mode: Mode) -> Listener {
        Listener { tcp, mode }
    }
}

/// How the server stopped.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Connections still open when the grace period ran out (they were cut).
    pub aborted: usize,
}

/// Serves `listeners` with `protocol` until `shutdown` completes, then drains.
pub async fn serve<P: Protocol>(
    listeners: Vec<Listener>,
    protocol: Arc<P>,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let (stop_tx, stop_rx) = watch::channel(false);
    let counts = limits::Counts::new();
    let ids = AtomicU64::new(1);
    let mut tasks = JoinSet::new();
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::channel(64);
    let mut acceptors = JoinSet::new();
    for listener in listeners {
        let tx = accepted_tx.clone();
        acceptors.spawn(async move {
            let mode = listener.mode;
            loop {
                match listener.tcp.accept().await {
                    Ok((stream, peer)) => {
                        if tx.send((stream, peer, mode)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    drop(accepted_tx);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some((stream, addr, mode)) = accepted_rx.recv() => {
                let peer = Peer { addr, id: ids.fetch_add(1, Ordering::Relaxed), mode };
                let (settings, mut handler) = protocol.accept(peer);
                let Some(slot) = counts.admit(addr.ip(), settings.max_connections, settings.max_connections_per_ip) else {
                    tracing::warn!(client = %addr, "connection refused: too many connections");
                    if mode == Mode::ImplicitTls {
                        // A TLS client cannot read a plaintext 421: just close.
                        continue;
                    }
                    let reply = handler.notice(Notice::TooManyConnections).map(|r| handler.wire(&r));
                    tasks.spawn(async move {
                        let mut stream = stream;
                        let write = async {
                            tokio::time::sleep(settings.reply_delay).await;
                            if let Some(bytes) = reply {
                                stream.write_all(&bytes).await?;
                            }
                            stream.shutdown().await
                        };
                        let _ = tokio::time::timeout(Duration::from_secs(5) + settings.reply_delay, write).await;
                    });
                    continue;
                };
                let rx = stop_rx.clone();
                let _ = stream.set_nodelay(true);
                tasks.spawn(async move {
                    let _slot = slot;
                    connection::handle(stream, peer, settings, handler, rx).await;
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Stop accepting: the listening sockets close with their tasks.
    acceptors.shutdown().await;
    let _ = stop_tx.send(true);
    let grace = protocol.settings().shutdown_grace;
    let open = tasks.len();
    if open > 0 {
        tracing::info!(
            connections = open,
            grace_secs = grace.as_secs(),
            "shutting down: letting transactions finish"
        );
    }
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    let aborted = if drained.is_err() {
        let n = tasks.len();
        tasks.shutdown().await;
        tracing::warn!(connections = n, "grace period over: connections cut");
        n
    } else {
        0
    };
    protocol.stopped().await;
    Stopped { aborted }
}

/// A server running on its own task. Dropping the handle cuts everything at once;
/// [`Handle::shutdown`] drains first.
pub struct Handle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Stopped>>,
}

impl Handle {
    /// Begins a graceful shutdown without waiting for it.
    pub fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops accepting, drains within the grace period, and says what was cut.
    pub async fn shutdown(&mut self) -> Stopped {
        self.signal();
        match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => Stopped::default(),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Starts [`serve`] on a task of its own.
pub fn spawn<P: Protocol>(listeners: Vec<Listener>, protocol: Arc<P>) -> Handle {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listeners, protocol, async move {
        let _ = stopped.await;
    }));
    Handle {
        stop: Some(stop),
        task: Some(task),
    }
}

#[cfg(test)]
mod tests;
