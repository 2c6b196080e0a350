//! Issue 13, "Hardening, round two" — reload and configuration: the open-relay guard against
//! the listeners actually bound (on every reload), files that are not regular or not safe,
//! ranges with errors naming file, line and key, and commands whose stdout is closed. Through
//! `config::load`, the composition root (`daemon::start`, `Running::reload`) and the binary.
//!
//! Every wait is bounded: a FIFO that hangs the loader is a failure, not a stuck test run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use dkim_relay::config::{self, Diagnostic, Severity};
use dkim_relay::daemon;

use crate::support::Keys;

/// A configuration directory: the key, and `config.toml` written from `server` lines and
/// extra `[domains."example.org"]` lines.
struct Dir {
    dir: tempfile::TempDir,
    key: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("s1.pem");
        dkim_relay::dkim::keygen::write_private_key(&key, &Keys::shared().org_rsa.pkcs8_pem)
            .unwrap();
        Dir { dir, key }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Writes the configuration; returns its path.
    fn write(&self, server: &str, domain: &str, key: &Path) -> PathBuf {
        let text = format!(
            "[server]\n{server}\n[upstream]\nsimulator = true\n\
             [simulator]\nhttp_listen = \"\"\noutbox = \"outbox\"\n\
             [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s1\"]\n{domain}\n\
             [domains.\"example.org\".selectors.s1]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n",
            key.display()
        );
        let path = self.path();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }
}

/// `config::load` on the blocking pool, bounded: a hang fails the test.
async fn load(path: &Path) -> config::LoadResult {
    let p = path.to_path_buf();
    let fifos = fifos_near(path);
    match tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || config::load(&p)),
    )
    .await
    {
        Ok(r) => r.unwrap(),
        Err(_) => {
            fifos.iter().for_each(|f| unblock(f));
            panic!("loading the configuration hung")
        }
    }
}

/// The FIFOs a test made beside `path`.
fn fifos_near(path: &Path) -> Vec<PathBuf> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "fifo"))
                .collect()
        })
        .unwrap_or_default()
}

/// Releases a reader blocked opening `fifo` (a regression), so the test fails instead of
/// hanging the test process at runtime shutdown.
fn unblock(fifo: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo);
}

fn errors(r: config::LoadResult) -> Vec<Diagnostic> {
    match r {
        Ok(_) => panic!("the configuration was accepted"),
        Err(d) => d
            .into_iter()
            .filter(|d| d.severity == Severity::Error)
            .collect(),
    }
}

/// The error on `key`, asserted to name the file and a line.
fn error_on<'a>(diags: &'a [Diagnostic], key: &str) -> &'a Diagnostic {
    let d = diags
        .iter()
        .find(|d| d.key == key)
        .unwrap_or_else(|| panic!("no error on {key}: {diags:?}"));
    assert!(d.file.ends_with("config.toml"), "{d}");
    d
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo")
        .arg(path)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "mkfifo failed");
}

// ---------------------------------------------------------------------------------------------
// The open-relay guard
// ---------------------------------------------------------------------------------------------

/// The bypass in the issue: start on a non-loopback address with loopback-only
/// `allow_networks`, then reload a file that says `listen = "127.0.0.1:…"` and
/// `allow_networks = ["0.0.0.0/0"]`. The socket cannot move, so the guard is evaluated against
/// the address actually bound: refused, naming `server.allow_networks`, old rules kept (before:
/// refused only as a listener change, or — where listeners were not compared — accepted).
/// Also: the start warns that a non-loopback listener with loopback-only networks and no users
/// can accept no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_cannot_open_the_relay_on_the_bound_listener() {
    let d = Dir::new();
    let path = d.write(
        "listen = \"0.0.0.0:0\"\nallow_networks = [\"127.0.0.0/8\"]",
        "",
        &d.key,
    );
    let snapshot = load(&path)
        .await
        .expect("a loopback-only relay on 0.0.0.0 starts");
    let w = snapshot
        .warnings
        .iter()
        .find(|w| w.key == "server.listen")
        .unwrap_or_else(|| panic!("no warning on server.listen: {:?}", snapshot.warnings));
    assert!(w.message.contains("never send"), "{w}");
    assert!(w.line.is_some(), "{w}");
    let running = daemon::start(&path, snapshot).await.unwrap();
    let bound = running.addrs.smtp[0];
    assert!(bound.ip().is_unspecified());

    // The bypass: the file claims loopback, and opens the networks.
    d.write(
        "listen = \"127.0.0.1:0\"\nallow_networks = [\"0.0.0.0/0\"]",
        "",
        &d.key,
    );
    let refused = running.reload().await.unwrap_err();
    let guard = refused
        .iter()
        .find(|d| d.key == "server.allow_networks")
        .unwrap_or_else(|| panic!("the guard did not fire: {refused:?}"));
    assert!(guard.message.contains("open signing relay"), "{guard}");
    assert!(guard.message.contains(&bound.port().to_string()), "{guard}");
    let rules = running.live.relay_settings();
    let networks: Vec<String> = rules
        .borrow()
        .session
        .allow_networks
        .iter()
        .map(|n| format!("{n:?}"))
        .collect();
    assert_eq!(networks.len(), 1, "{networks:?}");
    assert_eq!(
        running.live.snapshot().server.allow_networks.len(),
        1,
        "the old configuration stays"
    );

    // The same listener, networks opened: refused by the guard too.
    d.write(
        "listen = \"0.0.0.0:0\"\nallow_networks = [\"0.0.0.0/0\"]",
        "",
        &d.key,
    );
    let refused = running.reload().await.unwrap_err();
    assert!(
        refused.iter().any(|d| d.key == "server.allow_networks"),
        "{refused:?}"
    );
    running.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/// A key file that is a FIFO, or a device, is a clear error naming the file — never a hang
/// (before: `check`, `serve` and every reload blocked on the FIFO, and /dev/zero was read until
/// memory ran out; /dev/null stands for the devices here, so a regression fails instead of
/// exhausting memory). A configuration file that is a FIFO, the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_and_device_files_are_errors_not_hangs() {
    let d = Dir::new();
    let fifo = d.dir.path().join("key.fifo");
    mkfifo(&fifo);
    let path = d.write("listen = \"127.0.0.1:0\"", "", &fifo);
    let errs = errors(load(&path).await);
    let all = format!("{errs:?}");
    assert!(all.contains("key.fifo"), "{all}");
    assert!(all.contains("not a regular file"), "{all}");

    let path = d.write("listen = \"127.0.0.1:0\"", "", Path::new("/dev/null"));
    let errs = errors(load(&path).await);
    let all = format!("{errs:?}");
    assert!(
        all.contains("/dev/null") && all.contains("not a regular file"),
        "{all}"
    );

    let conf_fifo = d.dir.path().join("config.fifo");
    mkfifo(&conf_fifo);
    let errs = errors(load(&conf_fifo).await);
    assert!(
        errs[0].file.ends_with("config.fifo") && errs[0].message.contains("not a regular file"),
        "{errs:?}"
    );
}

/// A reload that names a FIFO is refused promptly and the running configuration stays; the
/// relay keeps reloading afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_naming_a_fifo_is_refused_and_does_not_block_later_reloads() {
    let d = Dir::new();
    let path = d.write("listen = \"127.0.0.1:0\"", "", &d.key);
    let running = daemon::start(&path, load(&path).await.unwrap())
        .await
        .unwrap();
    let fifo = d.dir.path().join("key.fifo");
    mkfifo(&fifo);
    d.write("listen = \"127.0.0.1:0\"\nmax_recipients = 7", "", &fifo);
    let refused = match tokio::time::timeout(Duration::from_secs(30), running.reload()).await {
        Ok(r) => r.unwrap_err(),
        Err(_) => {
            unblock(&fifo);
            panic!("the reload hung on a FIFO")
        }
    };
    assert!(
        format!("{refused:?}").contains("not a regular file"),
        "{refused:?}"
    );
    assert_eq!(running.live.snapshot().server.max_recipients, 50);
    d.write("listen = \"127.0.0.1:0\"\nmax_recipients = 7", "", &d.key);
    let ok = tokio::time::timeout(Duration::from_secs(30), running.reload())
        .await
        .expect("the next reload hung")
        .unwrap();
    assert_eq!(ok.snapshot.server.max_recipients, 7);
    running.shutdown().await;
}

/// A world-writable key or configuration is refused, saying so (before: loaded; any local
/// user could have changed what the relay signs with or who may submit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_writable_key_or_config_is_refused() {
    let d = Dir::new();
    let path = d.write("listen = \"127.0.0.1:0\"", "", &d.key);
    assert!(load(&path).await.is_ok());
    std::fs::set_permissions(&d.key, std::fs::Permissions::from_mode(0o666)).unwrap();
    let all = format!("{:?}", errors(load(&path).await));
    assert!(
        all.contains("s1.pem") && all.contains("world-writable"),
        "{all}"
    );
    std::fs::set_permissions(&d.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let errs = errors(load(&path).await);
    assert!(errs[0].message.contains("world-writable"), "{errs:?}");
}

// ---------------------------------------------------------------------------------------------
// Ranges
// ---------------------------------------------------------------------------------------------

/// Out-of-range values are errors naming file, line and key (before: `expiration_secs` near
/// u64::MAX wrapped and every signature was born expired; `max_header_size = 0`, control
/// characters in `hostname` and `dmarc` were accepted); a very short signature lifetime is
/// warned about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_are_validated_with_file_line_and_key() {
    let d = Dir::new();
    let path = d.write(
        "listen = \"127.0.0.1:0\"\nhostname = \"relay\\u0007.example\"\nmax_header_size = 0\n\
         max_connections = 0",
        "expiration_secs = 9223372036854775807\ndmarc = \"v=DMARC1; p=none\\r\\nX: y\"",
        &d.key,
    );
    let errs = errors(load(&path).await);
    for key in [
        "server.hostname",
        "server.max_header_size",
        "server.max_connections",
        "domains.\"example.org\".expiration_secs",
        "domains.\"example.org\".dmarc",
    ] {
        let e = error_on(&errs, key);
        assert!(e.line.is_some(), "{e}");
    }
    assert!(
        error_on(&errs, "domains.\"example.org\".expiration_secs")
            .message
            .contains("at most"),
        "{errs:?}"
    );

    let path = d.write("listen = \"127.0.0.1:0\"", "expiration_secs = 60", &d.key);
    let snapshot = load(&path).await.expect("a short lifetime is a warning");
    let w = snapshot
        .warnings
        .iter()
        .find(|w| w.key == "domains.\"example.org\".expiration_secs")
        .unwrap_or_else(|| panic!("no warning: {:?}", snapshot.warnings));
    assert!(w.line.is_some(), "{w}");
}

// ---------------------------------------------------------------------------------------------
// A closed stdout
// ---------------------------------------------------------------------------------------------

/// `dkim-relay dns … | head` and the other printing commands: when the reader has gone, the
/// command ends quietly with 141 (128 + SIGPIPE) or 0 — no panic (before: "failed printing to
/// stdout: Broken pipe", status 101).
#[test]
fn commands_exit_quietly_when_stdout_is_closed() {
    let d = Dir::new();
    let path = d.write("listen = \"127.0.0.1:0\"", "", &d.key);
    let config = path.display().to_string();
    let keys = d.dir.path().join("keys").display().to_string();
    let outbox = d.dir.path().join("outbox").display().to_string();
    let runs: [&[&str]; 4] = [
        &["dns", "--config", &config],
        &["check", "--config", &config],
        &[
            "keygen",
            "--domain",
            "example.org",
            "--selector",
            "k1",
            "--algorithm",
            "ed25519-sha256",
            "--keys-dir",
            &keys,
        ],
        &["outbox", "--dir", &outbox, "list"],
    ];
    for args in runs {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command writes.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        let code = out.status.code();
        assert!(
            matches!(code, Some(0) | Some(141)),
            "{args:?}: status {:?}: {stderr}",
            out.status
        );
    }
}
