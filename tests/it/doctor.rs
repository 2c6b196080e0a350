//! `dkim-relay doctor` against a real DNS server on 127.0.0.1 (UDP + TCP), one scenario per
//! PASS/WARN/FAIL rule: through the library and through the binary (its lines and exit code).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::support::dns_server::{DnsServer, Zone};
use dkim_relay::config;
use dkim_relay::dkim::{Algorithm, keygen};
use dkim_relay::dns::HickoryLookup;
use dkim_relay::doctor::{self, Check, Status};

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    snapshot: config::Snapshot,
    server: DnsServer,
}

const DMARC_GOOD: &str = "v=DMARC1; p=reject; rua=mailto:dmarc@example.org";

fn write_config(dir: &Path, extra_top: &str) -> PathBuf {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keys.join("s2026a.pem");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/example.org/s2026a.pem"),
        &key,
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = format!(
        "{extra_top}\n[upstream]\nsimulator = true\n[simulator]\nhttp_listen = \"\"\nregion = \"us-east-1\"\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s2026a\"]\n\
         subdomains = true\n\
         [domains.\"example.org\".selectors.s2026a]\nalgorithm = \"rsa-sha256\"\n\
         key_file = \"keys/s2026a.pem\"\n"
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A configuration for example.org and a DNS server publishing exactly what it needs.
async fn setup(extra_top: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), extra_top);
    let snapshot = config::load(&config).unwrap();
    let mut zone = Zone::from_records(&dkim_relay::cli::records_for(&snapshot));
    zone.set_txt("_dmarc.example.org", &[DMARC_GOOD]);
    let server = DnsServer::start(zone).await;
    Setup {
        _dir: dir,
        config,
        snapshot,
        server,
    }
}

impl Setup {
    fn zone(&self, f: impl FnOnce(&mut Zone)) {
        f(&mut self.server.zone.write().unwrap());
    }

    async fn library(&self) -> Vec<Check> {
        let lookup = HickoryLookup::with(Some(self.server.addr), Duration::from_secs(2)).unwrap();
        doctor::diagnose(
            &self.snapshot.domains,
            self.snapshot.reload.key_max_age,
            "us-east-1",
            &lookup,
            SystemTime::now(),
        )
        .await
    }

    /// Runs the binary; returns (exit code, stdout lines).
    async fn cli(&self) -> (i32, Vec<String>) {
        let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
            .arg("doctor")
            .arg("--config")
            .arg(&self.config)
            .arg("--nameserver")
            .arg(self.server.addr.to_string())
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("doctor finished")
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        (
            out.status.code().unwrap_or(-1),
            stdout.lines().map(str::to_string).collect(),
        )
    }

    /// Both ways: the library's check for `subject` has `status` and a message containing
    /// `needle`, and the binary prints the same line and exits 1 on FAIL, 0 otherwise.
    async fn expect(&self, status: Status, subject: &str, needle: &str) {
        let checks = self.library().await;
        assert!(
            checks
                .iter()
                .any(|c| c.status == status && c.subject == subject && c.message.contains(needle)),
            "no {status} {subject} ~ {needle:?} in {checks:#?}"
        );
        let (code, lines) = self.cli().await;
        let prefix = format!("{status} {subject}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "no line {prefix}… {needle:?} in {lines:#?}"
        );
        if status != Status::Pass {
            let fix_shown = lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(" — fix: "));
            assert!(fix_shown, "{lines:#?}");
        }
        let failed = doctor::any_failed(&checks);
        assert_eq!(code, if failed { 1 } else { 0 }, "{lines:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_published_passes_and_exits_zero() {
    let s = setup("").await;
    let checks = s.library().await;
    assert!(
        checks.iter().all(|c| c.status == Status::Pass),
        "{checks:#?}"
    );
    let (code, lines) = s.cli().await;
    assert_eq!(code, 0, "{lines:#?}");
    for prefix in [
        "PASS s2026a._domainkey.example.org TXT: published and matches",
        "PASS s2026a._domainkey.example.org key: RSA key, 2048 bits",
        "PASS mail.example.org MX: one MX, feedback-smtp.us-east-1.amazonses.com",
        "PASS mail.example.org SPF:",
        "PASS _dmarc.example.org TXT:",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "{prefix} in {lines:#?}"
        );
    }
    assert_eq!(lines.len(), checks.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_missing_revoked_stale_wrong_type() {
    let s = setup("").await;
    let name = "s2026a._domainkey.example.org";
    let subject = "s2026a._domainkey.example.org TXT";
    s.zone(|z| z.remove_txt(name));
    s.expect(Status::Fail, subject, "no DKIM key record").await;

    s.zone(|z| z.set_txt(name, &["v=DKIM1; k=rsa; p="]));
    s.expect(Status::Fail, subject, "revoked").await;

    let other = keygen::generate(Algorithm::RsaSha256, 2048).unwrap();
    let stale = keygen::dkim_txt_value(Algorithm::RsaSha256, &other.public_key);
    s.zone(|z| z.set_txt(name, &[&stale]));
    s.expect(Status::Fail, subject, "different key").await;

    let own = keygen::dkim_txt_value(
        Algorithm::RsaSha256,
        &s.snapshot.domains["example.org"].active[0].public_key,
    );
    s.zone(|z| z.set_txt(name, &[&own.replace("k=rsa", "k=ed25519")]));
    s.expect(Status::Fail, subject, "k=ed25519").await;

    s.zone(|z| z.set_txt(name, &[&format!("{own}; t=y")]));
    s.expect(Status::Warn, subject, "t=y").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_mx_rules() {
    let s = setup("").await;
    let subject = "mail.example.org MX";
    s.zone(|z| z.set_mx("mail.example.org", &[]));
    s.expect(Status::Fail, subject, "no MX record").await;
    s.zone(|z| {
        z.set_mx(
            "mail.example.org",
            &[
                (10, "feedback-smtp.us-east-1.amazonses.com"),
                (20, "mx.example.org"),
            ],
        )
    });
    s.expect(Status::Fail, subject, "2 MX records").await;
    s.zone(|z| z.set_mx("mail.example.org", &[(10, "mx.example.net")]));
    s.expect(Status::Fail, subject, "not SES's feedback endpoint")
        .await;
    s.zone(|z| {
        z.set_mx(
            "mail.example.org",
            &[(10, "feedback-smtp.eu-west-1.amazonses.com")],
        )
    });
    s.expect(Status::Warn, subject, "another region").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_spf_rules() {
    let s = setup("").await;
    let subject = "mail.example.org SPF";
    let good = dkim_relay::dns::SES_MAIL_FROM_SPF;
    s.zone(|z| z.set_txt("mail.example.org", &[good, "v=spf1 mx -all"]));
    s.expect(Status::Fail, subject, "permerror").await;
    s.zone(|z| z.set_txt("mail.example.org", &["v=spf1 mx -all"]));
    s.expect(Status::Fail, subject, "does not authorise SES")
        .await;
    s.zone(|z| z.set_txt("mail.example.org", &["site-verification=abc"]));
    s.expect(Status::Fail, subject, "no SPF record").await;
    // An answer too large for UDP (the resolver retries over TCP) still finds the one SPF.
    let filler = "x".repeat(240);
    let many: Vec<String> = (0..8)
        .map(|i| format!("verification-{i}={filler}"))
        .collect();
    s.zone(|z| {
        let mut v: Vec<&str> = many.iter().map(String::as_str).collect();
        v.push(good);
        z.set_txt("mail.example.org", &v);
    });
    s.expect(Status::Pass, subject, "authorises SES").await;
    assert!(
        s.server
            .tcp_queries
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0,
        "the large answer went over TCP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dmarc_rules() {
    let s = setup("").await;
    let subject = "_dmarc.example.org TXT";
    let set = |v: &[&str]| s.zone(|z| z.set_txt("_dmarc.example.org", v));
    set(&[]);
    s.zone(|z| z.remove_txt("_dmarc.example.org"));
    s.expect(Status::Fail, subject, "no DMARC record").await;
    set(&[DMARC_GOOD, "v=DMARC1; p=none"]);
    s.expect(Status::Fail, subject, "2 DMARC records").await;
    set(&["v=DMARC1; p=sometimes"]);
    s.expect(Status::Fail, subject, "p=sometimes").await;
    set(&["v=DMARC1; p=none"]);
    s.expect(Status::Warn, subject, "p=none").await;
    s.expect(Status::Warn, subject, "no rua=").await;
    set(&["v=DMARC1; p=quarantine; pct=50; rua=mailto:d@example.org"]);
    s.expect(Status::Warn, subject, "pct=50").await;
    set(&["v=DMARC1; p=reject; aspf=s; rua=mailto:d@example.org"]);
    s.expect(Status::Warn, subject, "aspf=s").await;
    set(&["v=DMARC1; p=reject; adkim=s; rua=mailto:d@example.org"]);
    s.expect(Status::Warn, subject, "adkim=s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_key_is_a_warning() {
    let s = setup("[reload]\nkey_max_age_days = 30").await;
    let key = s.config.parent().unwrap().join("keys/s2026a.pem");
    let status = std::process::Command::new("touch")
        .args(["-d", "400 days ago"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    // The CLI loads the key afresh and sees its age; the library uses the snapshot's.
    let (code, lines) = s.cli().await;
    assert_eq!(code, 0, "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with(
            "WARN s2026a._domainkey.example.org key: the key file is 400 days old (rotation age 30 days)"
        ) && l.contains(" — fix: rotate")),
        "{lines:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_name_server_fails_every_lookup() {
    let s = setup("[dns]\ntimeout_secs = 1").await;
    // A UDP port with nothing behind it (bound, then closed).
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
        .arg("doctor")
        .arg("--config")
        .arg(&s.config)
        .arg("--nameserver")
        .arg(dead.to_string())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("FAIL mail.example.org MX: could not look up")),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_exits_two() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[reload]\nwatch = \"yes\"\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
        .args(["doctor", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// `check` applies require_published like a first start: exit 1 while the record is missing,
/// 0 once it is published (the verdict comes from the same DNS server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_applies_require_published() {
    let s = setup("").await;
    let text = std::fs::read_to_string(&s.config).unwrap();
    let text = format!(
        "[reload]\nrequire_published = true\n[dns]\nnameserver = \"{}\"\ntimeout_secs = 2\n{text}",
        s.server.addr
    );
    std::fs::write(&s.config, text).unwrap();
    let check = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
            .args(["check", "--config"])
            .arg(&s.config)
            .output()
    };
    let out = check().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    s.zone(|z| z.remove_txt("s2026a._domainkey.example.org"));
    let out = check().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("domains.\"example.org\".sign: require_published: selector s2026a"),
        "{stderr}"
    );
}
