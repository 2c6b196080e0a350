//! The listener: accepts connections on every configured address, enforces connection limits,
//! gives each connection the configuration snapshot in force when it was accepted, and shuts
//! down gracefully (stop accepting, let transactions finish within the grace period).

pub mod connection;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::reload::Live;
use crate::relay::Relay;
use crate::smtp::reply::Reply;

/// Binds every listen address of the configuration (loopback unless configured otherwise).
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
    pub mode: connection::Mode,
}

/// Binds every address of the configuration: `listen` (plaintext SMTP, STARTTLS when
/// configured) and `[server.tls] implicit_listen` (RFC 8314 implicit TLS).
pub async fn bind_all(server: &crate::config::Server) -> std::io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for tcp in bind(&server.listen).await? {
        out.push(Listener {
            tcp,
            mode: connection::Mode::Plain,
        });
    }
    if let Some(tls) = &server.tls {
        for tcp in bind(&tls.implicit_listen).await? {
            out.push(Listener {
                tcp,
                mode: connection::Mode::ImplicitTls,
            });
        }
    }
    Ok(out)
}

/// How the server stopped.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Connections still open when the grace period ran out (they were cut).
    pub aborted: usize,
}

/// Counts connections per client address; the guard gives the slot back when dropped.
#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = match self.counts.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves plaintext listeners until `shutdown` completes, then drains.
pub async fn run(
    listeners: Vec<TcpListener>,
    live: Live,
    relay: Arc<Relay>,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let listeners = listeners
        .into_iter()
        .map(|tcp| Listener {
            tcp,
            mode: connection::Mode::Plain,
        })
        .collect();
    run_listeners(listeners, live, relay, shutdown).await
}

/// Serves until `shutdown` completes, then drains.
pub async fn run_listeners(
    listeners: Vec<Listener>,
    live: Live,
    relay: Arc<Relay>,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let (stop_tx, stop_rx) = watch::channel(false);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let ids = Arc::new(AtomicU64::new(1));
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
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
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
            Some((stream, peer, mode)) = accepted_rx.recv() => {
                let snapshot = live.snapshot();
                let limits = (&snapshot.server.max_connections, &snapshot.server.max_connections_per_ip);
                let admitted = {
                    let mut c = match counts.lock() { Ok(g) => g, Err(p) => p.into_inner() };
                    let ip_count = c.per_ip.get(&peer.ip()).copied().unwrap_or(0);
                    if c.total >= *limits.0 || ip_count >= *limits.1 {
                        false
                    } else {
                        c.total += 1;
                        *c.per_ip.entry(peer.ip()).or_insert(0) += 1;
                        true
                    }
                };
                if !admitted {
                    tracing::warn!(client = %peer, "connection refused: too many connections");
                    let host = snapshot.server.hostname.clone();
                    if mode == connection::Mode::ImplicitTls {
                        // A TLS client cannot read a plaintext 421: just close.
                        drop(stream);
                        continue;
                    }
                    tasks.spawn(async move {
                        let mut stream = stream;
                        let r = Reply::new(421, "4.7.0", format!("{host} Too many connections, try again later"));
                        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stream.write_all(&r.to_wire())).await;
                    });
                    continue;
                }
                let slot = Slot { counts: Arc::clone(&counts), ip: peer.ip() };
                let id = ids.fetch_add(1, Ordering::Relaxed);
                let relay = Arc::clone(&relay);
                let rx = stop_rx.clone();
                let _ = stream.set_nodelay(true);
                tasks.spawn(async move {
                    let _slot = slot;
                    connection::handle(stream, peer, id, snapshot, relay, rx, mode).await;
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Stop accepting: the listening sockets close with their tasks.
    acceptors.shutdown().await;
    let _ = stop_tx.send(true);
    let grace = live.snapshot().server.shutdown_grace;
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
    relay.close().await;
    Stopped { aborted }
}
