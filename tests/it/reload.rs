//! Reload under load: messages stream through the relay (in-process on 127.0.0.1:0, relaying to
//! the SES simulator over implicit TLS, `support::upstream`) while another task rewrites the configuration —
//! switching the active selector, interleaving broken configurations and broken keys — and
//! reloads again and again. No message may be lost or refused, each must be signed with a
//! selector that was active when its connection was accepted, and a refused reload must change
//! nothing. Also: `require_published` holds a rotation back until DNS serves the new key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::upstream::{TlsKind, Upstream, UpstreamOptions};
use dkim_relay::config::{self, reload::Live};
use dkim_relay::daemon;
use dkim_relay::dkim::{Algorithm, keygen};
use dkim_relay::dns::DnsView;
use dkim_relay::dns::lookup::StaticLookup;
use dkim_relay::sim::verdict::verdict;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(30);

// ---- the upstream: the SES simulator over implicit TLS, recording every message -----------

/// What the upstream received and accepted: message bytes by X-Test-Id.
fn inbox(upstream: &Upstream) -> HashMap<String, Vec<u8>> {
    upstream
        .received()
        .into_iter()
        .filter(|m| m.reply.starts_with("250"))
        .map(|m| {
            let text = String::from_utf8_lossy(&m.data).into_owned();
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("X-Test-Id: "))
                .unwrap_or("?")
                .trim()
                .to_string();
            (id, m.data)
        })
        .collect()
}

async fn start_upstream() -> Upstream {
    Upstream::start(UpstreamOptions {
        tls: TlsKind::Implicit,
        ..UpstreamOptions::default()
    })
    .await
}

async fn read_line<S: AsyncRead + Unpin>(r: &mut BufReader<S>) -> std::io::Result<String> {
    let mut line = String::new();
    match tokio::time::timeout(T, r.read_line(&mut line)).await {
        Ok(Ok(0)) => Err(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(Ok(_)) => Ok(line),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

// ---- the relay, its configuration and keys --------------------------------------------------

struct Files {
    dir: tempfile::TempDir,
    upstream: SocketAddr,
    user: String,
    password: String,
}

impl Files {
    fn new(upstream: &Upstream) -> Files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &upstream.ca_pem).unwrap();
        for sel in ["sa", "sb"] {
            let k = keygen::generate(Algorithm::RsaSha256, 2048).unwrap();
            keygen::write_private_key(&dir.path().join(format!("{sel}.pem")), &k.pkcs8_pem)
                .unwrap();
        }
        let bad = dir.path().join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        Files {
            dir,
            upstream: upstream.addr,
            user: upstream.user.clone(),
            password: upstream.password.clone(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// A valid configuration signing with `sign`; `extra_selector` adds one more selector table
    /// (e.g. one whose key is broken); `top` goes before everything.
    fn text(&self, sign: &str, extra_selector: Option<(&str, &str)>, top: &str) -> String {
        let mut t = format!(
            "{top}\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nhost = \"127.0.0.1\"\nport = {}\n\
             tls = \"implicit\"\nca_file = \"ca.pem\"\nusername = \"{}\"\npassword = \"{}\"\n\
             pool_size = 4\n\
             [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"{sign}\"]\n\
             [domains.\"example.org\".selectors.sa]\nalgorithm = \"rsa-sha256\"\nkey_file = \"sa.pem\"\n\
             [domains.\"example.org\".selectors.sb]\nalgorithm = \"rsa-sha256\"\nkey_file = \"sb.pem\"\n",
            self.upstream.port(),
            self.user,
            self.password
        );
        if let Some((sel, file)) = extra_selector {
            t.push_str(&format!(
                "[domains.\"example.org\".selectors.{sel}]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{file}\"\n"
            ));
        }
        t
    }

    /// Replaces the file atomically (write beside, rename), as editors and deploy tools do.
    fn write(&self, text: &str) {
        let tmp = self.dir.path().join("config.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }

    /// Both selectors' DKIM records, for verification.
    fn dns(&self, snapshot: &config::Snapshot) -> DnsView {
        DnsView::from_records(&dkim_relay::cli::records_for(snapshot))
    }
}

struct RunningRelay {
    addr: SocketAddr,
    live: Live,
    /// Started through the composition root (with its file watcher), as `serve` starts it.
    running: daemon::Running,
}

async fn start_relay(path: &Path, lookup: Option<Arc<StaticLookup>>) -> RunningRelay {
    let snapshot = config::load(path).unwrap();
    let options = daemon::Options {
        lookup: lookup.map(|l| l as Arc<dyn dkim_relay::dns::lookup::Lookup>),
    };
    let running = daemon::start_with(path, snapshot, options).await.unwrap();
    RunningRelay {
        addr: running.addrs.smtp[0],
        live: running.live.clone(),
        running,
    }
}

impl RunningRelay {
    async fn stop(self) {
        let stopped = tokio::time::timeout(Duration::from_secs(60), self.running.shutdown())
            .await
            .unwrap();
        assert_eq!(stopped.aborted, 0);
    }
}

// ---- an SMTP client ------------------------------------------------------------------------

async fn reply(r: &mut BufReader<TcpStream>) -> (u16, String) {
    let mut all = String::new();
    loop {
        let line = read_line(r).await.expect("reply line");
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            return (code, all);
        }
    }
}

async fn send(r: &mut BufReader<TcpStream>, line: &str) -> (u16, String) {
    r.get_mut().write_all(line.as_bytes()).await.unwrap();
    reply(r).await
}

/// Connects, and once the greeting arrived (the relay took its snapshot at accept) calls
/// `accepted`; then sends one message with `X-Test-Id: id`. Returns the final reply.
async fn send_message(
    addr: SocketAddr,
    id: &str,
    accepted: impl std::future::Future<Output = ()>,
) -> (u16, String) {
    let tcp = tokio::time::timeout(T, TcpStream::connect(addr))
        .await
        .unwrap()
        .unwrap();
    let mut r = BufReader::new(tcp);
    let (code, text) = reply(&mut r).await;
    assert_eq!(code, 220, "{text}");
    accepted.await;
    assert_eq!(send(&mut r, "EHLO client.test\r\n").await.0, 250);
    assert_eq!(send(&mut r, "MAIL FROM:<app@example.org>\r\n").await.0, 250);
    assert_eq!(send(&mut r, "RCPT TO:<user@example.net>\r\n").await.0, 250);
    assert_eq!(send(&mut r, "DATA\r\n").await.0, 354);
    let msg = format!(
        "From: App <app@example.org>\r\nTo: user@example.net\r\nSubject: message {id}\r\n\
         X-Test-Id: {id}\r\n\r\nbody of {id}\r\n.\r\n"
    );
    let result = send(&mut r, &msg).await;
    let _ = send(&mut r, "QUIT\r\n").await;
    result
}

fn selector_of(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let sig: String = text
        .split("\r\n")
        .skip_while(|l| !l.starts_with("DKIM-Signature:"))
        .take_while(|l| !l.is_empty())
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with([' ', '\t']))
        .map(|(_, l)| l.to_string())
        .collect();
    assert_eq!(text.matches("DKIM-Signature:").count(), 1, "{text}");
    sig.split(';')
        .find_map(|t| t.trim().strip_prefix("s="))
        .expect("s= tag")
        .trim()
        .to_string()
}

// ---- the tests -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_lose_nothing_and_sign_with_the_accepted_selector() {
    let upstream = start_upstream().await;
    let files = Files::new(&upstream);
    files.write(&files.text("sa", None, ""));
    let relay = start_relay(&files.path(), None).await;
    let dns = files.dns(&relay.live.snapshot());

    // history[i] = the selector active in epoch i; the reloader holds `gate` while it swaps
    // and records, so a client that takes the gate after its greeting sees every epoch its
    // accept could have fallen into.
    let history = Arc::new(Mutex::new(vec!["sa".to_string()]));
    let gate = Arc::new(tokio::sync::Mutex::new(()));
    let done = Arc::new(AtomicBool::new(false));

    let reloader = {
        let live = relay.live.clone();
        let history = Arc::clone(&history);
        let gate = Arc::clone(&gate);
        let done = Arc::clone(&done);
        let files_path = files.path();
        let texts: Vec<String> = vec![
            files.text("sa", None, ""),
            files.text("sb", None, ""),
            // Broken TOML.
            files
                .text("sb", None, "")
                .replace("[upstream]", "[upstream"),
            // A selector whose key does not parse.
            files.text("sa", Some(("sc", "bad.pem")), ""),
            // An active selector without a key.
            files.text("sz", None, ""),
        ];
        let write = move |text: &str| {
            let tmp = files_path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &files_path).unwrap();
        };
        tokio::spawn(async move {
            let (mut good, mut refused, mut i) = (0u32, 0u32, 0usize);
            while !done.load(Ordering::SeqCst) || i < 30 {
                let pick = i % 6;
                i += 1;
                let _g = gate.lock().await;
                let before = live.snapshot();
                match pick {
                    2 | 4 | 5 => {
                        write(&texts[[2, 3, 4][pick % 3]]);
                        let r = if i % 2 == 0 {
                            live.reload().map(|_| ())
                        } else {
                            live.reload_checked().await.map(|_| ())
                        };
                        assert!(r.is_err(), "a broken configuration was accepted");
                        assert!(
                            Arc::ptr_eq(&before, &live.snapshot()),
                            "a refused reload changed the configuration"
                        );
                        refused += 1;
                    }
                    _ => {
                        let sel = if good % 2 == 0 { "sb" } else { "sa" };
                        write(&texts[if sel == "sa" { 0 } else { 1 }]);
                        let r = if i % 2 == 0 {
                            live.reload().map(|_| ())
                        } else {
                            live.reload_checked().await.map(|_| ())
                        };
                        r.expect("a valid configuration reloads");
                        let now = live.snapshot();
                        assert!(!Arc::ptr_eq(&before, &now));
                        assert_eq!(now.domains["example.org"].active[0].selector, sel);
                        history.lock().unwrap().push(sel.to_string());
                        good += 1;
                    }
                }
                drop(_g);
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (good, refused)
        })
    };

    const CLIENTS: usize = 5;
    const PER_CLIENT: usize = 20;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let history = Arc::clone(&history);
        let gate = Arc::clone(&gate);
        let addr = relay.addr;
        clients.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for m in 0..PER_CLIENT {
                let id = format!("{c}-{m}");
                let first = history.lock().unwrap().len() - 1;
                let window = Arc::new(Mutex::new(Vec::new()));
                let w = Arc::clone(&window);
                let h = Arc::clone(&history);
                let g = Arc::clone(&gate);
                let (code, text) = send_message(addr, &id, async move {
                    let _g = g.lock().await;
                    let h = h.lock().unwrap();
                    *w.lock().unwrap() = h[first..].to_vec();
                })
                .await;
                let allowed = window.lock().unwrap().clone();
                out.push((id, code, text, allowed));
            }
            out
        }));
    }
    let mut results = Vec::new();
    for c in clients {
        results.extend(c.await.unwrap());
    }
    done.store(true, Ordering::SeqCst);
    let (good, refused) = reloader.await.unwrap();
    assert!(
        good >= 10 && refused >= 10,
        "{good} good, {refused} refused reloads"
    );

    let inbox = inbox(&upstream);
    assert_eq!(results.len(), CLIENTS * PER_CLIENT);
    let mut seen = HashMap::new();
    for (id, code, text, allowed) in &results {
        assert_eq!(*code, 250, "message {id} refused: {text}");
        assert!(text.starts_with("250 Ok 0100"), "{text}");
        let msg = inbox.get(id).unwrap_or_else(|| panic!("message {id} lost"));
        let s = selector_of(msg);
        assert!(
            allowed.contains(&s),
            "message {id} signed with {s}, active at acceptance: {allowed:?}"
        );
        *seen.entry(s).or_insert(0) += 1;
        let v = verdict(
            msg,
            "app@mail.example.org",
            "54.240.27.27".parse().unwrap(),
            &dns,
        )
        .await;
        assert_eq!(v.dkim.len(), 1);
        assert_eq!(v.dkim[0].result, "pass", "message {id}: {:?}", v.dkim[0]);
    }
    assert_eq!(inbox.len(), CLIENTS * PER_CLIENT);
    // Reloads really happened while messages flowed: both selectors signed some of them.
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The upstream settings never changed, so reloads kept the pool: connections were reused
    // (at most pool_size at a time, each for up to 50 messages) instead of one per message.
    let upstream_connections = upstream.connections();
    assert!(
        upstream_connections <= CLIENTS * PER_CLIENT / 4,
        "{upstream_connections} upstream connections for {} messages",
        CLIENTS * PER_CLIENT
    );
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_config_or_key_on_reload_changes_nothing() {
    let upstream = start_upstream().await;
    let files = Files::new(&upstream);
    files.write(&files.text("sa", None, ""));
    let relay = start_relay(&files.path(), None).await;
    let before = relay.live.snapshot();

    files.write("this is [not toml");
    let err = relay.live.reload_checked().await.unwrap_err();
    assert!(!err.is_empty());
    assert!(Arc::ptr_eq(&before, &relay.live.snapshot()));

    // Corrupt the active key itself.
    let sa = files.dir.path().join("sa.pem");
    let good_key = std::fs::read(&sa).unwrap();
    files.write(&files.text("sa", None, ""));
    std::fs::write(&sa, b"garbage").unwrap();
    let err = relay.live.reload_checked().await.unwrap_err();
    assert!(
        err.iter()
            .any(|d| d.key == "domains.\"example.org\".selectors.sa.key_file"),
        "{err:?}"
    );
    assert!(Arc::ptr_eq(&before, &relay.live.snapshot()));
    // The relay still signs with the key it loaded before.
    let (code, text) = send_message(relay.addr, "k1", async {}).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(selector_of(&inbox(&upstream)["k1"]), "sa");

    std::fs::write(&sa, good_key).unwrap();
    relay.live.reload_checked().await.unwrap();
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_published_keeps_the_old_selector_until_dns_matches() {
    let upstream = start_upstream().await;
    let files = Files::new(&upstream);
    let top = "[reload]\nrequire_published = true";
    files.write(&files.text("sa", None, top));
    let snapshot = config::load(&files.path()).unwrap();
    let all = dkim_relay::cli::records_for(&snapshot);
    let sb_name = "sb._domainkey.example.org";
    let without_sb: Vec<_> = all.iter().filter(|r| r.name != sb_name).cloned().collect();

    let relay = start_relay(
        &files.path(),
        Some(Arc::new(StaticLookup::from_records(&without_sb))),
    )
    .await;

    // sb is not published: the reload succeeds, but example.org keeps signing with sa.
    files.write(&files.text("sb", None, top));
    let r = relay.live.reload_checked().await.unwrap();
    assert_eq!(r.snapshot.domains["example.org"].active[0].selector, "sa");
    assert_eq!(r.held_back.len(), 1);
    assert!(
        r.held_back[0]
            .message
            .contains("selector sb: no DKIM key record")
            && r.held_back[0].message.contains("keeps signing with sa"),
        "{:?}",
        r.held_back
    );
    let (code, _) = send_message(relay.addr, "p1", async {}).await;
    assert_eq!(code, 250);
    assert_eq!(selector_of(&inbox(&upstream)["p1"]), "sa");

    // The synchronous reload cannot ask DNS: it also keeps sa.
    let s = relay.live.reload().unwrap();
    assert_eq!(s.domains["example.org"].active[0].selector, "sa");

    // sb published with the wrong key (sa's): still sa.
    let sa_value = match &all
        .iter()
        .find(|r| r.name == "sa._domainkey.example.org")
        .unwrap()
        .data
    {
        dkim_relay::dns::RecordData::Txt(v) => v.clone(),
        _ => unreachable!(),
    };
    let mut wrong = StaticLookup::from_records(&without_sb);
    wrong.add_txt(sb_name, &sa_value);
    let live = relay.live.clone().with_lookup(Arc::new(wrong));
    let r = live.reload_checked().await.unwrap();
    assert_eq!(r.snapshot.domains["example.org"].active[0].selector, "sa");
    assert!(
        r.held_back[0].message.contains("different key"),
        "{:?}",
        r.held_back
    );

    // Published and matching: the rotation happens.
    let live = relay
        .live
        .clone()
        .with_lookup(Arc::new(StaticLookup::from_records(&all)));
    let r = live.reload_checked().await.unwrap();
    assert!(r.held_back.is_empty());
    assert_eq!(
        relay.live.snapshot().domains["example.org"].active[0].selector,
        "sb"
    );
    let (code, _) = send_message(relay.addr, "p2", async {}).await;
    assert_eq!(code, 250);
    assert_eq!(selector_of(&inbox(&upstream)["p2"]), "sb");
    relay.stop().await;
}

// Paused clock: the watcher sleeps on tokio time between polls, and a poll compares file
// stamps (inode, mtime, length), not clocks; the wait below advances virtual time only.
#[tokio::test(start_paused = true)]
async fn watch_reloads_on_a_kubernetes_style_symlink_swap() {
    let upstream = start_upstream().await;
    let files = Files::new(&upstream);
    // /mount/config.toml -> ..data/config.toml, ..data -> ..v1 (what a Kubernetes volume does).
    let mount = files.dir.path().join("mount");
    let v1 = mount.join("..v1");
    std::fs::create_dir_all(&v1).unwrap();
    let abs = |t: String| {
        t.replace(
            "\"sa.pem\"",
            &format!("{:?}", files.dir.path().join("sa.pem")),
        )
        .replace(
            "\"sb.pem\"",
            &format!("{:?}", files.dir.path().join("sb.pem")),
        )
        .replace(
            "\"ca.pem\"",
            &format!("{:?}", files.dir.path().join("ca.pem")),
        )
    };
    let top = "[reload]\nwatch = true\nwatch_interval_secs = 1";
    std::fs::write(v1.join("config.toml"), abs(files.text("sa", None, top))).unwrap();
    std::os::unix::fs::symlink("..v1", mount.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.toml", mount.join("config.toml")).unwrap();
    let path = mount.join("config.toml");
    // The daemon runs the watcher (`[reload] watch = true`).
    let relay = start_relay(&path, None).await;

    // The new version lands in ..v2, then ..data is swapped atomically.
    let v2 = mount.join("..v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("config.toml"), abs(files.text("sb", None, top))).unwrap();
    std::os::unix::fs::symlink("..v2", mount.join("..data.tmp")).unwrap();
    std::fs::rename(mount.join("..data.tmp"), mount.join("..data")).unwrap();
    std::fs::remove_dir_all(&v1).unwrap();

    // Wait (bounded) for the watcher to pick it up.
    let mut switched = false;
    for _ in 0..200 {
        if relay.live.snapshot().domains["example.org"].active[0].selector == "sb" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        switched,
        "the watcher did not reload after the symlink swap"
    );
    relay.stop().await;
}

/// The binary: SIGHUP switches the selector; a broken configuration on SIGHUP is refused and the
/// relay keeps signing with what it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_running_binary() {
    use tokio::io::AsyncBufReadExt as _;
    let upstream = start_upstream().await;
    let files = Files::new(&upstream);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("listen = \"127.0.0.1:{port}\"");
    let text = |sel: &str| {
        files
            .text(sel, None, "")
            .replace("listen = \"127.0.0.1:0\"", &listen)
    };
    files.write(&text("sa"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
        .args(["serve", "--config"])
        .arg(files.path())
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap().to_string();
    let mut log = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut wait_for = async |needle: &str| {
        loop {
            let line = tokio::time::timeout(T, log.next_line())
                .await
                .unwrap_or_else(|_| panic!("no log line containing {needle:?}"))
                .unwrap()
                .unwrap_or_else(|| panic!("relay exited before logging {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    };
    wait_for("dkim-relay listening").await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
    };

    assert_eq!(send_message(addr, "h1", async {}).await.0, 250);
    files.write(&text("sb"));
    assert!(hup().success());
    wait_for("configuration reloaded").await;
    assert_eq!(send_message(addr, "h2", async {}).await.0, 250);

    files.write("[server\nbroken");
    assert!(hup().success());
    wait_for("the running configuration stays in force").await;
    assert_eq!(send_message(addr, "h3", async {}).await.0, 250);

    // A new listen address needs a restart: the log names the setting, the relay keeps serving
    // on the address it has.
    files.write(
        &files
            .text("sa", None, "")
            .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\""),
    );
    assert!(hup().success());
    let refused = wait_for("reload refused").await;
    assert!(
        refused.contains("server.listen") && refused.contains("needs a restart"),
        "{refused}"
    );
    wait_for("the running configuration stays in force").await;
    assert_eq!(send_message(addr, "h4", async {}).await.0, 250);

    let inbox = inbox(&upstream);
    assert_eq!(selector_of(&inbox["h1"]), "sa");
    assert_eq!(selector_of(&inbox["h2"]), "sb");
    assert_eq!(selector_of(&inbox["h3"]), "sb");
    assert_eq!(selector_of(&inbox["h4"]), "sb");

    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}

// ---- restart-only settings and every watched file ------------------------------------------

/// A reload that changes a listener address, or switches the embedded simulator on, needs a
/// restart: it is refused, names the setting, and the running configuration keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_changes_listen_is_refused_and_keeps_the_running_config() {
    let upstream = start_upstream().await;
    let files = Files::new(&upstream);
    files.write(&files.text("sa", None, ""));
    let relay = start_relay(&files.path(), None).await;
    let before = relay.live.snapshot();
    let relay_settings = relay.live.relay_settings();

    // A new listen address (and a new selector, which alone would be fine): refused whole.
    files.write(
        &files
            .text("sb", None, "")
            .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\""),
    );
    for err in [
        relay.live.reload_checked().await.unwrap_err(),
        relay.live.reload().unwrap_err(),
    ] {
        assert_eq!(err.len(), 1, "{err:?}");
        assert_eq!(err[0].key, "server.listen");
        let line = err[0].to_string();
        assert!(
            line.contains("server.listen") && line.contains("needs a restart"),
            "{line}"
        );
        assert!(Arc::ptr_eq(&before, &relay.live.snapshot()));
    }

    // Switching the embedded simulator on is refused too.
    let text = files.text("sb", None, "");
    let start = text.find("[upstream]").unwrap();
    let end = text.find("[domains.").unwrap();
    files.write(&format!(
        "{}[upstream]\nsimulator = true\n{}",
        &text[..start],
        &text[end..]
    ));
    let err = relay.live.reload_checked().await.unwrap_err();
    assert!(err.iter().any(|d| d.key == "upstream.simulator"), "{err:?}");
    assert!(Arc::ptr_eq(&before, &relay.live.snapshot()));
    // Nothing reached the relay: its settings were never swapped.
    assert!(!relay_settings.has_changed().unwrap());

    // Mail still flows, signed with the running selector.
    let (code, text) = send_message(relay.addr, "l1", async {}).await;
    assert_eq!(code, 250, "{text}");
    assert_eq!(selector_of(&inbox(&upstream)["l1"]), "sa");

    // Back to the running listen address: the reload applies.
    files.write(&files.text("sb", None, ""));
    relay.live.reload_checked().await.unwrap();
    assert_eq!(
        relay.live.snapshot().domains["example.org"].active[0].selector,
        "sb"
    );
    relay.stop().await;
}

/// The relay on its embedded simulator (the endpoint resolved once, at start): a reload that
/// switches the simulator off, or changes its settings, is refused, and mail keeps flowing
/// through the simulator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_flips_the_simulator_switch_is_refused_and_mail_still_flows() {
    let upstream = start_upstream().await;
    let files = Files::new(&upstream);
    let sim_text = |region: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nsimulator = true\n\
             [simulator]\nhttp_listen = \"\"\nregion = \"{region}\"\noutbox = \"outbox\"\n\
             [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"sa\"]\n\
             [domains.\"example.org\".selectors.sa]\nalgorithm = \"rsa-sha256\"\nkey_file = \"sa.pem\"\n"
        )
    };
    files.write(&sim_text("eu-west-1"));
    let snapshot = config::load(&files.path()).unwrap();
    assert!(matches!(
        snapshot.upstream.target,
        config::UpstreamTarget::Simulator(_)
    ));
    // Started as `serve` starts it: the simulator's endpoint is resolved once, here.
    let relay = start_relay(&files.path(), None).await;
    let (addr, live) = (relay.addr, relay.live.clone());
    let endpoint = live.snapshot().upstream.endpoint.clone().unwrap();
    assert_eq!(
        Some(endpoint.port),
        relay.running.addrs.simulator.map(|a| a.port())
    );
    let before = live.snapshot();

    let (code, text) = send_message(addr, "s1", async {}).await;
    assert_eq!(code, 250, "{text}");

    // Simulator off (a real upstream instead): refused, names the switch.
    files.write(&files.text("sa", None, ""));
    let err = live.reload_checked().await.unwrap_err();
    assert_eq!(err.len(), 1, "{err:?}");
    assert_eq!(err[0].key, "upstream.simulator");
    assert!(Arc::ptr_eq(&before, &live.snapshot()));

    // The simulator's own settings: refused as well.
    files.write(&sim_text("us-west-2"));
    let err = live.reload_checked().await.unwrap_err();
    assert!(err.iter().any(|d| d.key == "simulator"), "{err:?}");
    assert!(Arc::ptr_eq(&before, &live.snapshot()));

    // Mail still flows to the simulator (not one 451).
    let (code, text) = send_message(addr, "s2", async {}).await;
    assert_eq!(code, 250, "{text}");
    assert!(inbox(&upstream).is_empty());

    // An unrelated change is applied, and the reloaded snapshot keeps the simulator's endpoint.
    files.write(&sim_text("eu-west-1").replace("[server]\n", "[server]\nmax_recipients = 7\n"));
    let r = live.reload_checked().await.unwrap();
    assert_eq!(r.snapshot.server.max_recipients, 7);
    assert_eq!(r.snapshot.upstream.endpoint.as_ref(), Some(&endpoint));
    let (code, text) = send_message(addr, "s3", async {}).await;
    assert_eq!(code, 250, "{text}");

    relay.stop().await;
}

/// The watcher polls every file the configuration read: a renewed listener certificate or a
/// rotated upstream password triggers a reload, as a changed key file does.
// Paused clock: the watcher sleeps on tokio time between polls, and a poll compares file
// stamps (inode, mtime, length), not clocks; the wait below advances virtual time only.
#[tokio::test(start_paused = true)]
async fn watch_reloads_when_the_password_file_or_listener_certificate_changes() {
    let upstream = start_upstream().await;
    let files = Files::new(&upstream);
    let dir = files.dir.path();
    let write_cert = |name: &str| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    };
    write_cert("relay-one.test");
    std::fs::write(dir.join("pw.txt"), "first-password\n").unwrap();
    let top = "[reload]\nwatch = true\nwatch_interval_secs = 1";
    let text = files
        .text("sa", None, top)
        .replace(
            &format!("password = \"{}\"", files.password),
            "password_file = \"pw.txt\"",
        )
        .replace(
            "[upstream]",
            "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n[upstream]",
        );
    files.write(&text);
    let relay = start_relay(&files.path(), None).await;
    let watched = config::watch::watched_files(&files.path(), &relay.live.snapshot());
    for f in [
        "config.toml",
        "sa.pem",
        "sb.pem",
        "ca.pem",
        "pw.txt",
        "cert.pem",
        "key.pem",
    ] {
        assert!(
            watched.contains(&dir.join(f)),
            "{f} not watched: {watched:?}"
        );
    }
    // The daemon runs the watcher (`[reload] watch = true`).
    let password = |live: &Live| {
        let s = live.snapshot();
        s.upstream
            .endpoint
            .as_ref()
            .unwrap()
            .password
            .0
            .expose()
            .to_string()
    };
    let wait = async |what: &str, done: &dyn Fn() -> bool| {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the watcher did not reload after {what} changed");
    };
    assert_eq!(password(&relay.live), "first-password");

    // A rotated password file.
    std::fs::write(dir.join("pw.txt"), "second-password, longer\n").unwrap();
    let live = relay.live.clone();
    wait("the password file", &|| {
        password(&live) == "second-password, longer"
    })
    .await;

    // A renewed listener certificate (key and certificate replaced).
    let tls_before = relay
        .live
        .snapshot()
        .server
        .tls
        .as_ref()
        .unwrap()
        .config
        .clone();
    write_cert("relay-two.test");
    let live = relay.live.clone();
    wait("the certificate", &|| {
        !Arc::ptr_eq(
            &live.snapshot().server.tls.as_ref().unwrap().config,
            &tls_before,
        )
    })
    .await;

    relay.stop().await;
}
