//! Interoperability: Python's smtplib (STARTTLS with certificate verification against the
//! simulator's CA, AUTH, MAIL/RCPT/DATA) talks to the SES simulator. Skipped when no
//! python3 is installed, unless `DKIM_RELAY_REQUIRE_INTEROP=1`, which turns a missing python3
//! into a failure.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::sim::*;

const SCRIPT: &str = r#"
import smtplib, ssl, sys
host, port, ca, user, pw, mech = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
s = smtplib.SMTP(host, int(port), timeout=20)
s.ehlo("interop.test")
assert s.has_extn("starttls"), "no STARTTLS advertised"
s.starttls(context=ctx)
s.ehlo("interop.test")
assert not s.has_extn("starttls"), "STARTTLS advertised after TLS"
if mech == "LOGIN":
    s.user, s.password = user, pw
    code, resp = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
else:
    code, resp = s.login(user, pw)
assert code == 235, (code, resp)
msg = "From: App <app@example.org>\r\nTo: u@dest.test\r\nSubject: interop\r\n\r\n.dot\r\nhello\r\n"
code, resp = s.mail("app@example.org")
assert code == 250, (code, resp)
code, resp = s.rcpt("u@dest.test")
assert code == 250, (code, resp)
code, resp = s.data(msg)
print(code, resp.decode())
s.quit()
"#;

fn python() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/python3");
    if fixed.exists() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("python3"))
            .find(|p| p.exists())
    })
}

#[tokio::test]
async fn python_smtplib_starttls_login_sendmail() {
    let Some(python) = python() else {
        if std::env::var("DKIM_RELAY_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("DKIM_RELAY_REQUIRE_INTEROP=1 but python3 is not installed");
        }
        eprintln!("skipped: python3 not found");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = start(settings(dir.path())).await;
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &sim.ca_pem).unwrap();
    for mech in ["PLAIN", "LOGIN"] {
        let run = tokio::process::Command::new(&python)
            .arg("-c")
            .arg(SCRIPT)
            .arg("127.0.0.1")
            .arg(sim.starttls_addr.port().to_string())
            .arg(&ca)
            .arg(KEY_ID)
            .arg(PASS_US_EAST_1)
            .arg(mech)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), run)
            .await
            .expect("python timed out")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mech}: {stdout}\n{stderr}");
        let line = stdout.trim();
        let id = line
            .strip_prefix("250 Ok ")
            .unwrap_or_else(|| panic!("unexpected reply {line}"));
        assert!(sim.outbox.join(format!("{id}.eml")).exists());
        let eml = std::fs::read_to_string(sim.outbox.join(format!("{id}.eml"))).unwrap();
        assert!(eml.contains("\r\n\r\n.dot\r\nhello\r\n"));
    }
    sim.shutdown().await;
}
