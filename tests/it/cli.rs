//! The binary as a user runs it: exit codes, what goes to stdout and stderr.

use std::io::Write;
use std::process::{Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
}

fn run_with_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits before reading stdin: the pipe may then be
    // closed under the write. Its exit code and stderr are what the test checks.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn smtp_password_matches_the_published_vectors() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n";
    for (region, expected) in [
        ("us-east-1", "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9"),
        ("us-east-2", "BMPPgbAHoFVbze1Ud0oA5uNdXRwUXUZ+qOwphGJbl/cS"),
    ] {
        let (code, out, _) = run_with_stdin(&["smtp-password", "--region", region], secret);
        assert_eq!(code, 0);
        assert_eq!(out.trim(), expected);
    }
    let (code, _, err) = run_with_stdin(&["smtp-password", "--region", "us-east-1"], "");
    assert_eq!(code, 1);
    assert!(err.contains("no secret access key on stdin"), "{err}");
    let (code, _, err) = run_with_stdin(&["smtp-password", "--region", "US East"], "x");
    assert_eq!(code, 2);
    assert!(err.contains("--region"), "{err}");
}

#[test]
fn check_accepts_the_shipped_example() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = bin()
        .args(["check", "--config", &format!("{root}/config.toml.example")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Git keeps no file modes, so the demo keys may be group-readable here: that is a warning.
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("[domains.\"example.org\"]"), "{stdout}");
    assert!(stdout.contains("simulator = true"), "{stdout}");
    assert!(stderr.contains("configuration is valid"), "{stderr}");
}

#[test]
fn check_reports_every_problem_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[upstream]\nhost = \"email-smtp.us-east-1.amazonaws.com\"\nusername = \"AKIAX\"\n\
         password_env = \"DKIM_RELAY_TEST_UNSET_VARIABLE\"\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.com\"\nsign = [\"s1\"]\n",
    )
    .unwrap();
    let out = bin()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = path.display().to_string();
    assert!(stderr.contains(&format!("{file}:4: upstream.password_env: environment variable DKIM_RELAY_TEST_UNSET_VARIABLE is not set")), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:6: domains.\"example.org\".mail_from:")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:7: domains.\"example.org\".sign: active selector s1"
        )),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn serve_with_a_missing_config_says_which_path_and_how_to_start() {
    let out = bin()
        .args(["serve", "--config", "/nonexistent/dkim-relay.toml"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("/nonexistent/dkim-relay.toml"), "{stderr}");
    assert!(stderr.contains("config.toml.example"), "{stderr}");
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "serve",
        "check",
        "smtp-password",
        "keygen",
        "dns",
        "ses-sim",
        "outbox",
    ] {
        let out = bin().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{sub}"
        );
    }
}
