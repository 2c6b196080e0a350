//! The upstream pool follows demand, seen from the wire: a counting TCP proxy between the relay
//! and the SES simulator tells how many connections the relay opened, how many were open at
//! once, and who closed them. One client reuses one connection; concurrent clients make the pool
//! grow up to `pool_size` and never beyond; once traffic stops the relay closes every idle
//! connection after `idle_close_secs` (the paused clock; the simulator's own idle timeout is
//! set an hour away so that only the relay can be the one closing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::sim::{KEY_ID, PASS_US_EAST_1};
use crate::support::{Keys, SmtpClient};
use dkim_relay::config;
use dkim_relay::daemon;

const POOL_SIZE: usize = 4;

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
    most_open: AtomicUsize,
}

/// Forwards every connection to `target`, counting.
async fn proxy(target: SocketAddr) -> (SocketAddr, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let c = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let c = Arc::clone(&c);
            c.accepted.fetch_add(1, Ordering::SeqCst);
            let now = c.open.fetch_add(1, Ordering::SeqCst) + 1;
            c.most_open.fetch_max(now, Ordering::SeqCst);
            tokio::spawn(async move {
                let outbound = TcpStream::connect(target).await.unwrap();
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let up = async move {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match ri.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if wo.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = wo.shutdown().await;
                };
                let down = async move {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match ro.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if wi.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = wi.shutdown().await;
                };
                tokio::join!(up, down);
                c.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, counts)
}

struct Setup {
    _dir: tempfile::TempDir,
    _sim: dkim_relay::sim::RunningSim,
    counts: Arc<Counts>,
    relay: daemon::Running,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut s = crate::support::sim::settings(dir.path());
    // Replies take a while, so concurrent transactions overlap; SES's idle timeout is moved
    // out of the way: only the relay's idle_close may close connections here.
    s.faults.latency = Duration::from_millis(50);
    s.idle_timeout = Duration::from_secs(3600);
    let sim = crate::support::sim::start(s).await;
    let (proxy_addr, counts) = proxy(sim.starttls_addr).await;
    let ca = dir.path().join("sim-ca.pem");
    std::fs::write(&ca, &sim.ca_pem).unwrap();
    let key = dir.path().join("s1.pem");
    dkim_relay::dkim::keygen::write_private_key(&key, &Keys::shared().org_rsa.pkcs8_pem).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"starttls\"\nca_file = \"{}\"\n\
         username = \"{KEY_ID}\"\npassword = \"{PASS_US_EAST_1}\"\npool_size = {POOL_SIZE}\n\
         idle_close_secs = 8\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s1\"]\n\
         [domains.\"example.org\".selectors.s1]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n",
        proxy_addr.port(),
        ca.display(),
        key.display()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let snapshot = config::load(&path).unwrap();
    let relay = daemon::start(&path, snapshot).await.unwrap();
    Setup {
        _dir: dir,
        _sim: sim,
        counts,
        relay,
    }
}

async fn client_sends(addr: SocketAddr, tag: String, messages: usize) {
    let mut c = SmtpClient::connect(addr).await;
    c.cmd("EHLO app.test").await;
    for m in 0..messages {
        let msg = format!(
            "From: <app@example.org>\r\nTo: <x@example.net>\r\nSubject: {tag}-{m}\r\n\r\nhi\r\n"
        );
        let r = c
            .transaction("app@example.org", &["x@example.net"], msg.as_bytes())
            .await;
        assert_eq!(r.code, 250, "{tag}-{m}: {r}");
    }
    c.quit().await;
}

async fn concurrently(addr: SocketAddr, clients: usize, messages: usize, tag: &str) {
    let mut tasks = Vec::new();
    for i in 0..clients {
        tasks.push(tokio::spawn(client_sends(
            addr,
            format!("{tag}{i}"),
            messages,
        )));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

// A current-thread runtime: the clock can be paused mid-test for the idle phase.
#[tokio::test]
async fn the_pool_grows_with_concurrent_demand_up_to_pool_size_and_closes_idle_connections() {
    let st = setup().await;
    let addr = st.relay.addrs.smtp[0];
    let counts = &st.counts;

    // One client, one message at a time: one connection, reused.
    client_sends(addr, "serial".into(), 3).await;
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);

    // Concurrent clients: the pool grows past one connection, never past pool_size.
    concurrently(addr, POOL_SIZE * 3, 2, "burst").await;
    let most = counts.most_open.load(Ordering::SeqCst);
    assert!(
        most > 1,
        "the pool did not grow: {most} connection(s) at most"
    );
    assert!(most <= POOL_SIZE, "{most} connections open at once");
    let opened = counts.accepted.load(Ordering::SeqCst);
    assert!(
        opened <= POOL_SIZE,
        "{opened} connections opened for {} messages: connections were not reused",
        POOL_SIZE * 6 + 3
    );

    // No more traffic: before idle_close_secs (8) they all stay open; after it the relay has
    // closed every one (the simulator's idle timeout is an hour away).
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(counts.open.load(Ordering::SeqCst), opened);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..200 {
        if counts.open.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        counts.open.load(Ordering::SeqCst),
        0,
        "idle connections stayed open"
    );
    tokio::time::resume();

    // Demand returns: the pool opens what it needs again.
    client_sends(addr, "again".into(), 1).await;
    assert_eq!(counts.open.load(Ordering::SeqCst), 1);
    st.relay.shutdown().await;
}
