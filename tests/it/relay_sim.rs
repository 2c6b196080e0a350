//! The relay against its embedded SES simulator, as in staging and in the README's quick start:
//! real TCP, STARTTLS and AUTH between them, and the simulator's verdict on what arrived.

use std::path::Path;

use crate::support::{Keys, SmtpClient};
use dkim_relay::config;
use dkim_relay::daemon;
use dkim_relay::sim::outbox;

struct Staging {
    _dir: tempfile::TempDir,
    outbox: std::path::PathBuf,
    addr: std::net::SocketAddr,
    running: daemon::Running,
}

async fn staging(extra_domain: &str) -> Staging {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::generate();
    let rsa = dir.path().join("s1.pem");
    dkim_relay::dkim::keygen::write_private_key(&rsa, &keys.org_rsa.pkcs8_pem).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nsimulator = true\n\
         [simulator]\nhttp_listen = \"\"\nregion = \"eu-west-1\"\noutbox = \"outbox\"\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s1\"]\n{extra_domain}\n\
         [domains.\"example.org\".selectors.s1]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n",
        rsa.display()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let snapshot = config::load(&path).unwrap();
    // Started as `serve` starts it: the embedded simulator resolved once, at start.
    let running = daemon::start(&path, snapshot).await.unwrap();
    let outbox = running.simulator().unwrap().outbox.clone();
    Staging {
        _dir: dir,
        outbox,
        addr: running.addrs.smtp[0],
        running,
    }
}

impl Staging {
    async fn stop(self) {
        let stopped = self.running.shutdown().await;
        assert_eq!(stopped.aborted, 0);
    }
}

fn message(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: App <{from}>\r\nTo: someone@example.net\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@app.example.org>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; d=stale.example; s=x; h=From; bh=AAAA; b=AAAA\r\n\r\nhello\r\n"
    )
    .into_bytes()
}

fn find(outbox_dir: &Path, id: &str) -> (outbox::Record, Vec<u8>) {
    outbox::show(outbox_dir, id).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_message_passes_dkim_spf_and_dmarc_at_the_simulator() {
    let st = staging("").await;
    let mut c = SmtpClient::connect(st.addr).await;
    c.cmd("EHLO app.test").await;
    let r = c
        .transaction(
            "app@anything.test",
            &["someone@example.net"],
            &message("app@example.org", "one"),
        )
        .await;
    assert_eq!(r.code, 250, "{r}");
    let id = r.lines[0].strip_prefix("Ok ").unwrap().to_string();
    let (record, eml) = find(&st.outbox, &id);
    // SES's view: the rewritten envelope sender is the feedback destination; the delivered
    // envelope is SES's VERP address at the custom MAIL FROM domain.
    assert_eq!(record.mail_from, "app@mail.example.org");
    assert_eq!(record.envelope_from, format!("{id}@mail.example.org"));
    let v = &record.verdict;
    let ours: Vec<_> = v
        .dkim
        .iter()
        .filter(|d| d.domain == "example.org")
        .collect();
    assert_eq!(ours.len(), 1, "{v:?}");
    assert_eq!(ours[0].result, "pass", "{v:?}");
    assert!(ours[0].aligned);
    assert!(
        v.dkim.iter().all(|d| d.domain != "stale.example"),
        "stale signature survived"
    );
    assert_eq!(
        (v.spf.result.as_str(), v.spf.aligned),
        ("pass", true),
        "{v:?}"
    );
    assert_eq!(v.dmarc.result, "pass", "{v:?}");
    // SES rewrote Message-ID for eu-west-1; our signature survived that.
    let text = String::from_utf8_lossy(&eml);
    assert!(
        text.contains(&format!("Message-ID: <{id}@eu-west-1.amazonses.com>")),
        "{text}"
    );
    // The null sender becomes the fixed mailbox, which SES accepts.
    let r = c
        .transaction(
            "",
            &["someone@example.net"],
            &message("app@example.org", "two"),
        )
        .await;
    assert_eq!(r.code, 250, "{r}");
    let id2 = r.lines[0].strip_prefix("Ok ").unwrap().to_string();
    assert_eq!(
        find(&st.outbox, &id2).0.mail_from,
        "bounce@mail.example.org"
    );
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_refusals_reach_the_client_verbatim() {
    let st = staging("").await;
    let mut c = SmtpClient::connect(st.addr).await;
    c.cmd("EHLO app.test").await;
    // A Sender header for an unverified domain: SES checks it as an identity at end of DATA.
    let msg = String::from_utf8(message("app@example.org", "three"))
        .unwrap()
        .replacen("\r\n\r\n", "\r\nSender: x@unverified.test\r\n\r\n", 1);
    let r = c
        .transaction("app@example.org", &["someone@example.net"], msg.as_bytes())
        .await;
    assert_eq!(r.code, 554, "{r}");
    assert!(
        r.lines[0].starts_with("Message rejected: Email address is not verified. The following identities failed the check in region EU-WEST-1:"),
        "{r}"
    );
    assert!(outbox::list(&st.outbox).unwrap_or_default().is_empty());
    st.stop().await;
}

/// One buffer per message: a message larger than the relay's streaming chunk, with lines that
/// start with dots, long lines and folded headers, reaches the simulator byte for byte (after
/// the relay's signature) and the signature over the streamed bytes verifies there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_dotted_message_streams_intact_and_verifies() {
    let st = staging("").await;
    let mut body = String::new();
    for i in 0..3000 {
        match i % 5 {
            0 => body.push_str(".a line that starts with a dot\r\n"),
            1 => body.push_str("..two dots\r\n"),
            2 => body.push_str(&"x".repeat(990)),
            3 => body.push('.'),
            _ => body.push_str(&format!("line {i}")),
        }
        body.push_str("\r\n");
    }
    let head = "From: App <app@example.org>\r\nTo: someone@example.net\r\nSubject: big\r\n\
                \x20folded subject\r\nMessage-ID: <big@app.example.org>\r\n\
                Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n";
    let msg = format!("{head}{body}").into_bytes();
    assert!(msg.len() > 3 * 64 * 1024);
    let mut c = SmtpClient::connect(st.addr).await;
    c.cmd("EHLO app.test").await;
    let r = c
        .transaction("app@example.org", &["someone@example.net"], &msg)
        .await;
    assert_eq!(r.code, 250, "{r}");
    let id = r.lines[0].strip_prefix("Ok ").unwrap().to_string();
    let (record, eml) = find(&st.outbox, &id);
    let ours: Vec<_> = record
        .verdict
        .dkim
        .iter()
        .filter(|d| d.domain == "example.org")
        .collect();
    assert_eq!(ours.len(), 1, "{:?}", record.verdict);
    assert_eq!(ours[0].result, "pass", "{:?}", record.verdict);
    assert!(
        eml.ends_with(body.as_bytes()),
        "the body changed on the way"
    );
    st.stop().await;
}

/// The composition root end to end: `daemon::start` with the embedded simulator, a message, a
/// reload of an allowed setting (the relay's own settings follow it), another message, then a
/// graceful shutdown that stops the simulator too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_starts_relays_reloads_and_stops_with_its_simulator() {
    let st = staging("").await;
    let sim_addr = st.running.addrs.simulator.expect("the simulator's address");
    assert!(st.running.addrs.implicit_tls.is_empty());
    let mut settings = st.running.live.relay_settings();
    assert_eq!(settings.borrow().session.max_recipients, 50);
    assert_eq!(
        settings.borrow().upstream.endpoint.as_ref().map(|e| e.port),
        Some(sim_addr.port())
    );

    let mut c = SmtpClient::connect(st.addr).await;
    c.cmd("EHLO app.test").await;
    let r = c
        .transaction(
            "app@example.org",
            &["someone@example.net"],
            &message("app@example.org", "before"),
        )
        .await;
    assert_eq!(r.code, 250, "{r}");
    c.quit().await;

    // An allowed change: applied, published to the relay, the simulator's endpoint kept.
    let path = st.running.live.path().to_path_buf();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("[server]\n", "[server]\nmax_recipients = 2\n"),
    )
    .unwrap();
    let reloaded = st.running.reload().await.unwrap();
    assert_eq!(reloaded.snapshot.server.max_recipients, 2);
    assert!(settings.has_changed().unwrap());
    assert_eq!(settings.borrow_and_update().session.max_recipients, 2);
    assert_eq!(
        settings.borrow().upstream.endpoint.as_ref().map(|e| e.port),
        Some(sim_addr.port())
    );

    let mut c = SmtpClient::connect(st.addr).await;
    c.cmd("EHLO app.test").await;
    let r = c
        .transaction(
            "app@example.org",
            &["a@example.net", "b@example.net"],
            &message("app@example.org", "after"),
        )
        .await;
    assert_eq!(r.code, 250, "{r}");
    let id = r.lines[0].strip_prefix("Ok ").unwrap().to_string();
    assert_eq!(find(&st.outbox, &id).0.verdict.dmarc.result, "pass");
    c.quit().await;

    let relay_addr = st.addr;
    st.stop().await;
    // Both the relay and its simulator have stopped listening.
    assert!(tokio::net::TcpStream::connect(relay_addr).await.is_err());
    assert!(tokio::net::TcpStream::connect(sim_addr).await.is_err());
}

/// A start that cannot bind is a typed error naming the address, and leaves nothing running
/// (the embedded simulator it had started is stopped again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_start_that_cannot_bind_is_an_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::shared();
    let rsa = dir.path().join("s1.pem");
    dkim_relay::dkim::keygen::write_private_key(&rsa, &keys.org_rsa.pkcs8_pem).unwrap();
    let text = format!(
        "[server]\nlisten = \"{addr}\"\n[upstream]\nsimulator = true\n\
         [simulator]\nhttp_listen = \"\"\noutbox = \"outbox\"\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s1\"]\n\
         [domains.\"example.org\".selectors.s1]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n",
        rsa.display()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let err = daemon::start(&path, config::load(&path).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, daemon::StartError::Bind(_)), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

/// The standalone simulator (`dkim-relay ses-sim`) starts through the composition root too: it
/// listens, writes its generated CA beside its configuration, and stops; a bad file is a typed
/// error naming the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_starts_the_standalone_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.toml");
    std::fs::write(
        &path,
        "region = \"us-east-1\"\noutbox = \"outbox\"\nstarttls_listen = \"127.0.0.1:0\"\n\
         implicit_listen = \"off\"\n[accounts.AKIAIOSFODNN7EXAMPLE]\n\
         secret = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"\n",
    )
    .unwrap();
    let sim = daemon::start_simulator(&path).await.unwrap();
    let ca = dir.path().join("ses-sim-ca.pem");
    assert_eq!(sim.ca_path.as_deref(), Some(ca.as_path()));
    assert!(
        std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let addr = sim.starttls_addr;
    let mut c = SmtpClient::connect(addr).await;
    assert_eq!(c.cmd("EHLO app.test").await.code, 250);
    c.quit().await;
    sim.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    std::fs::write(&path, "max_conections = 3\n").unwrap();
    let err = daemon::start_simulator(&path).await.unwrap_err();
    assert!(
        matches!(err, daemon::StartError::SimulatorConfig(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("max_conections"), "{err}");
}
