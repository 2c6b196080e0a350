//! Drives one client connection: reads bytes, feeds the sans-IO session, writes its replies,
//! and hands complete messages to the relay.
//!
//! Replies to pipelined commands are batched and flushed whenever no further complete command
//! is buffered (RFC 2920 §3.2), and always before waiting for DATA content. Every read has a
//! deadline: per command, for the DATA phase, and for the whole session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

enum Read {
    Data(usize),
    Eof,
    Timeout,
    Shutdown,
}

pub async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    conn_id: u64,
    snapshot: Arc<Snapshot>,
    relay: Arc<Relay>,
    mut shutdown: watch::Receiver<bool>,
) {
    let s = &snapshot.server;
    let allowed = s.allow_networks.iter().any(|n| n.contains(peer.ip()));
    let mut session = Session::new(
        Limits {
            hostname: s.hostname.clone(),
            max_message_size: s.max_message_size,
            max_recipients: s.max_recipients,
            max_errors: s.max_errors,
        },
        allowed,
    );
    let client = ClientInfo {
        conn_id,
        addr: peer,
    };
    let session_deadline = Instant::now() + s.session_timeout;
    tracing::debug!(conn = conn_id, client = %peer, allowed, "connection accepted");

    let mut out = session.greeting().to_wire();
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut lines = LineReader::new(MAX_COMMAND_LINE, s.bare_newline);
    let mut chunk = vec![0u8; 16 * 1024];

    loop {
        // Act on every complete command already buffered (pipelining).
        while let Some(line) = lines.next_line(&mut buf) {
            // Once shutdown has begun, only the transaction in flight may finish: a command
            // pipelined behind it must not start a new one.
            if !session.in_transaction() && *shutdown.borrow() {
                let r = Reply::new(
                    421,
                    "4.3.2",
                    format!("{} Service shutting down", snapshot.server.hostname),
                );
                out.extend_from_slice(&r.to_wire());
                let _ = write_out(&mut stream, &mut out).await;
                return;
            }
            match session.command(line) {
                Action::Reply(r) => out.extend_from_slice(&r.to_wire()),
                Action::Close(r) => {
                    out.extend_from_slice(&r.to_wire());
                    let _ = write_out(&mut stream, &mut out).await;
                    return;
                }
                Action::StartData(r) => {
                    out.extend_from_slice(&r.to_wire());
                    if write_out(&mut stream, &mut out).await.is_err() {
                        return;
                    }
                    let mut reader =
                        DataReader::new(s.bare_newline, s.max_message_size, s.max_header_size);
                    let (used, mut done) = reader.feed(&buf);
                    buf.drain(..used);
                    while !done {
                        let deadline = (Instant::now() + s.data_timeout).min(session_deadline);
                        // A shutdown does not interrupt a message being received.
                        match read_some(&mut stream, &mut chunk, deadline, None).await {
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
                                    received = reader.size(),
                                    "client disconnected during DATA; nothing relayed"
                                );
                                return;
                            }
                            Read::Timeout => {
                                let r = Reply::new(
                                    421,
                                    "4.4.2",
                                    format!(
                                        "{} Timeout waiting for message data",
                                        snapshot.server.hostname
                                    ),
                                );
                                out.extend_from_slice(&r.to_wire());
                                let _ = write_out(&mut stream, &mut out).await;
                                return;
                            }
                        }
                    }
                    let reply = match session.data_finished(reader.finish()) {
                        Ok(tx) => {
                            relay
                                .deliver(&snapshot, &client, tx.envelope, tx.data)
                                .await
                        }
                        Err(r) => {
                            tracing::info!(conn = conn_id, client = %peer, reply = %r.one_line(), "message refused");
                            r
                        }
                    };
                    out.extend_from_slice(&reply.to_wire());
                }
            }
        }
        if write_out(&mut stream, &mut out).await.is_err() {
            return;
        }
        let deadline = (Instant::now() + s.command_timeout).min(session_deadline);
        let watch_shutdown = (!session.in_transaction()).then_some(&mut shutdown);
        match read_some(&mut stream, &mut chunk, deadline, watch_shutdown).await {
            Read::Data(n) => buf.extend_from_slice(&chunk[..n]),
            Read::Eof => return,
            Read::Timeout => {
                let r = Reply::new(
                    421,
                    "4.4.2",
                    format!("{} Timeout waiting for command", snapshot.server.hostname),
                );
                out.extend_from_slice(&r.to_wire());
                let _ = write_out(&mut stream, &mut out).await;
                return;
            }
            Read::Shutdown => {
                let r = Reply::new(
                    421,
                    "4.3.2",
                    format!("{} Service shutting down", snapshot.server.hostname),
                );
                out.extend_from_slice(&r.to_wire());
                let _ = write_out(&mut stream, &mut out).await;
                return;
            }
        }
    }
}

async fn read_some(
    stream: &mut TcpStream,
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

async fn write_out(stream: &mut TcpStream, out: &mut Vec<u8>) -> std::io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    let r = tokio::time::timeout(Duration::from_secs(30), stream.write_all(out)).await;
    out.clear();
    match r {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}
