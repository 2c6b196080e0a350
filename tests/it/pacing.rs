//! Pacing to the SES account's send rate (`[upstream] max_send_rate`), black-box: a burst of ten
//! times the rate through the relay against its embedded simulator, whose own `max_send_rate`
//! answers `454 Throttling failure: Maximum sending rate exceeded.` as SES does. Unpaced, a
//! burst draws throttling replies (the control: the simulator really enforces its rate and the
//! relay passes the 454 on); paced, none, and every message is delivered.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::{Keys, SmtpClient};
use dkim_relay::config;
use dkim_relay::daemon;
use dkim_relay::sim::outbox;

const RATE: usize = 4;
const CLIENTS: usize = 8;
const PER_CLIENT: usize = 5;

struct Relay {
    _dir: tempfile::TempDir,
    outbox: std::path::PathBuf,
    addr: SocketAddr,
    running: daemon::Running,
}

/// The relay on its embedded simulator limited to `sim_rate` messages a second;
/// `upstream_extra` goes into `[upstream]`.
async fn relay(sim_rate: usize, upstream_extra: &str) -> Relay {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), sim_rate, upstream_extra);
    let snapshot = config::load(&path).unwrap();
    let running = daemon::start(&path, snapshot).await.unwrap();
    Relay {
        outbox: running.simulator().unwrap().outbox.clone(),
        addr: running.addrs.smtp[0],
        _dir: dir,
        running,
    }
}

fn write_config(
    dir: &std::path::Path,
    sim_rate: usize,
    upstream_extra: &str,
) -> std::path::PathBuf {
    let key = dir.join("s1.pem");
    if !key.exists() {
        dkim_relay::dkim::keygen::write_private_key(&key, &Keys::shared().org_rsa.pkcs8_pem)
            .unwrap();
    }
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nsimulator = true\n{upstream_extra}\n\
         [simulator]\nhttp_listen = \"\"\nregion = \"eu-west-1\"\noutbox = \"outbox\"\nmax_send_rate = {sim_rate}\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s1\"]\n\
         [domains.\"example.org\".selectors.s1]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n",
        key.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, &text).unwrap();
    path
}

/// `CLIENTS` clients at once, `PER_CLIENT` messages each: every reply code.
async fn burst(addr: SocketAddr) -> Vec<u16> {
    let codes = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let codes = Arc::clone(&codes);
        tasks.push(tokio::spawn(async move {
            let mut client = SmtpClient::connect(addr).await;
            client.cmd("EHLO app.test").await;
            for m in 0..PER_CLIENT {
                let msg = format!(
                    "From: App <app@example.org>\r\nTo: someone@example.net\r\n\
                     Subject: burst {c}-{m}\r\nMessage-ID: <b{c}-{m}@app.example.org>\r\n\
                     Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nhello\r\n"
                );
                let r = client
                    .transaction("app@example.org", &["someone@example.net"], msg.as_bytes())
                    .await;
                codes.lock().unwrap().push(r.code);
            }
            client.quit().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(codes).unwrap().into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_a_burst_is_throttled() {
    // The control: the simulator enforces its rate and the relay passes SES's 454 on. At one
    // message a second, so that even a loaded machine sends the burst faster than that.
    let r = relay(1, "").await;
    let codes = burst(r.addr).await;
    assert_eq!(codes.len(), CLIENTS * PER_CLIENT);
    let throttled = codes.iter().filter(|&&c| c == 454).count();
    assert!(
        throttled > 0,
        "the simulator throttled nothing: the paced test below would prove nothing"
    );
    r.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_a_burst_of_ten_times_the_rate_draws_no_throttling_and_all_arrive() {
    let r = relay(RATE, &format!("max_send_rate = {RATE}")).await;
    let started = std::time::Instant::now();
    let codes = burst(r.addr).await;
    let elapsed = started.elapsed();
    assert_eq!(codes.len(), CLIENTS * PER_CLIENT);
    let not_ok: Vec<&u16> = codes.iter().filter(|&&c| c != 250).collect();
    assert!(not_ok.is_empty(), "replies other than 250: {not_ok:?}");
    let delivered = outbox::list(&r.outbox).unwrap_or_default();
    assert_eq!(delivered.len(), CLIENTS * PER_CLIENT);
    // The rate was kept, not merely lucky: 40 messages at 4/s take at least 9 seconds.
    assert!(
        elapsed.as_secs_f64() >= ((CLIENTS * PER_CLIENT) / RATE - 1) as f64,
        "{elapsed:?}"
    );
    r.running.shutdown().await;
}

#[tokio::test]
async fn a_client_that_cannot_get_a_turn_in_time_gets_451_4_4_5() {
    // One message a second and a one-second wait: of a burst of eight sent at once, the first
    // goes at once, the second within the wait, the later ones cannot get a turn in time.
    let r = relay(100, "max_send_rate = 1\nmax_wait_secs = 1").await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let addr = r.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = SmtpClient::connect(addr).await;
            c.cmd("EHLO app.test").await;
            let msg = format!(
                "From: <app@example.org>\r\nTo: <x@example.net>\r\nSubject: {i}\r\n\r\nhi\r\n"
            );
            c.transaction("app@example.org", &["x@example.net"], msg.as_bytes())
                .await
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let refused: Vec<_> = replies.iter().filter(|r| r.code != 250).collect();
    assert!(!refused.is_empty(), "{replies:?}");
    for r in refused {
        assert_eq!((r.code, r.enhanced()), (451, Some("4.4.5")), "{r}");
    }
    assert!(replies.iter().any(|r| r.code == 250), "{replies:?}");
    r.running.shutdown().await;
}

#[test]
fn max_send_rate_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (value, ok) in [
        ("0", true),
        ("14", true),
        ("2.5", true),
        ("0.5", false),
        ("-3", false),
    ] {
        let path = write_config(dir.path(), 100, &format!("max_send_rate = {value}"));
        let r = config::load(&path);
        match (ok, r) {
            (true, Ok(_)) => {}
            (false, Err(e)) => {
                let text = format!("{e:?}");
                assert!(text.contains("max_send_rate"), "{text}");
            }
            (true, Err(e)) => panic!("{value}: {e:?}"),
            (false, Ok(_)) => panic!("{value} accepted"),
        }
    }
}
