//! Crash safety of the spool, with the real binary: `dkim-relay serve` (always mode, upstream =
//! an in-test SES simulator) is killed with SIGKILL at random points while four clients send a
//! steady stream, restarted, killed again; at the end every message that got 250 must have
//! reached the simulator. A message may arrive twice only if it was in flight to SES at a
//! crash: the duplicates are counted and must not exceed the in-flight messages the restarts
//! requeued (logged as `requeued_in_flight=N`). The last stop is a SIGTERM, which must drain
//! and exit cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::spool::{message, relay_config, start_sim};
use crate::support::sim::PASS_US_EAST_1;
use dkim_relay::sim::outbox;

/// The relay binary, running; its stderr collected by a thread.
struct Relay {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

fn spawn_relay(config: &std::path::Path, log: &Arc<Mutex<Vec<String>>>) -> (Relay, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dkim-relay");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(log);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("dkim-relay listening")
                && let Some(a) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("address="))
                && let Ok(addr) = a.parse::<SocketAddr>()
            {
                let _ = tx.send(addr);
            }
            sink.lock().unwrap().push(line);
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("relay did not start:\n{}", log.lock().unwrap().join("\n")));
    (
        Relay {
            child,
            log: Arc::clone(log),
        },
        addr,
    )
}

async fn reply(r: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut code = 0;
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
            .await
            .map_err(|_| std::io::Error::other("timeout"))??;
        if n == 0 || line.len() < 4 {
            return Err(std::io::Error::other("closed"));
        }
        code = line[..3].parse().unwrap_or(code);
        if line.as_bytes()[3] == b' ' {
            return Ok(code);
        }
    }
}

async fn cmd(r: &mut BufReader<TcpStream>, line: &[u8]) -> std::io::Result<u16> {
    r.get_mut().write_all(line).await?;
    reply(r).await
}

async fn transaction(r: &mut BufReader<TcpStream>, subject: &str) -> std::io::Result<u16> {
    if cmd(r, b"MAIL FROM:<app@example.org>\r\n").await? != 250
        || cmd(r, b"RCPT TO:<someone@example.net>\r\n").await? != 250
        || cmd(r, b"DATA\r\n").await? != 354
    {
        return Err(std::io::Error::other("refused"));
    }
    let mut data = message(subject);
    data.extend_from_slice(b".\r\n");
    cmd(r, &data).await
}

/// One client: sends numbered messages until `stop`, reconnecting through crashes; records the
/// subjects that got 250.
async fn client(
    n: usize,
    addr: Arc<Mutex<Option<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<BTreeSet<String>>>,
    seq: Arc<AtomicUsize>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Some(a) = *addr.lock().unwrap() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(tcp) = TcpStream::connect(a).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut r = BufReader::new(tcp);
        if reply(&mut r).await.is_err() || cmd(&mut r, b"EHLO crash.test\r\n").await.is_err() {
            continue;
        }
        while !stop.load(Ordering::SeqCst) {
            let subject = format!("c{n}-{}", seq.fetch_add(1, Ordering::SeqCst));
            match transaction(&mut r, &subject).await {
                Ok(250) => {
                    accepted.lock().unwrap().insert(subject);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_stream_loses_no_message_that_got_250() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path(), |s| {
        s.faults.latency = Duration::from_millis(3);
    })
    .await;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        relay_config(dir.path(), &sim, PASS_US_EAST_1, "mode = \"always\""),
    )
    .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let addr = Arc::new(Mutex::new(None));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let seq = Arc::new(AtomicUsize::new(0));
    let mut clients: Vec<_> = (0..4)
        .map(|n| {
            tokio::spawn(client(
                n,
                Arc::clone(&addr),
                Arc::clone(&stop),
                Arc::clone(&accepted),
                Arc::clone(&seq),
            ))
        })
        .collect();
    let kills = 3;
    for round in 0..=kills {
        let (mut relay, a) = spawn_relay(&config, &log);
        *addr.lock().unwrap() = Some(a);
        tokio::time::sleep(Duration::from_millis(rand::random_range(150..600))).await;
        if round < kills {
            *addr.lock().unwrap() = None;
            relay.child.kill().unwrap();
            relay.child.wait().unwrap();
        } else {
            // Stop sending, let the queue drain, then a graceful stop.
            stop.store(true, Ordering::SeqCst);
            for c in clients.drain(..) {
                let _ = c.await;
            }
            let want = accepted.lock().unwrap().clone();
            let mut delivered = BTreeMap::<String, usize>::new();
            for _ in 0..1500 {
                delivered.clear();
                for r in outbox::list(&sim.outbox).unwrap_or_default() {
                    if let Some(s) = r.subject {
                        *delivered.entry(s).or_default() += 1;
                    }
                }
                if want.iter().all(|s| delivered.contains_key(s)) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let missing: Vec<_> = want
                .iter()
                .filter(|s| !delivered.contains_key(*s))
                .collect();
            let duplicates: usize = delivered.values().map(|n| n - 1).sum();
            let requeued: usize = relay
                .log
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix("requeued_in_flight="))
                        .and_then(|n| n.parse::<usize>().ok())
                })
                .sum();
            let pid = relay.child.id().to_string();
            let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            assert!(status.success());
            let exit = relay.child.wait().unwrap();
            eprintln!(
                "crash test: {} messages got 250, {} delivered ({} duplicates; {} requeued in flight over {kills} kills)",
                want.len(),
                delivered.len(),
                duplicates,
                requeued
            );
            assert!(
                missing.is_empty(),
                "messages that got 250 were lost: {missing:?}\n{}",
                log.lock().unwrap().join("\n")
            );
            assert!(want.len() > 20, "too few messages to mean anything");
            assert!(
                duplicates <= requeued,
                "{duplicates} duplicates but only {requeued} messages were in flight at the crashes"
            );
            assert!(exit.success(), "SIGTERM did not stop cleanly: {exit:?}");
        }
    }
    sim.shutdown().await;
}
