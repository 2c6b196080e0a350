//! `dkim-relay dmarc-report`, through the binary, on report fixtures shaped like the ones
//! receivers send (tests/fixtures/dmarc/): Google's zip, Microsoft's gzip and the email it
//! arrives in, Amazon's plain XML. Each failure class this setup can produce is in them, with
//! the source that produced it: SES falling back to its default MAIL FROM, mail that bypassed
//! the relay (only SES's signature), our signature failing, a key the receiver could not use,
//! SPF failing for the custom MAIL FROM, a spoofer outside SES, a forwarder.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const GOOGLE: &str = "google.com!example.org!1764288000!1764374399.zip";
const MICROSOFT: &str =
    "enterprise.protection.outlook.com!example.org!1764288000!1764374400.xml.gz";
const MICROSOFT_EML: &str = "microsoft-report.eml";
const AMAZON: &str = "amazonses.com!example.org!1764374400!1764460799.xml";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dmarc")
        .join(name)
}

fn run(args: &[&str], files: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
        .arg("dmarc-report")
        .args(args)
        .args(files.iter().map(|f| fixture(f)))
        .output()
        .expect("run dkim-relay")
}

fn json(files: &[&str]) -> Value {
    let out = run(&["--json"], files);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// The rows for one day and source IP.
fn rows<'a>(v: &'a Value, day: &str, ip: &str) -> Vec<&'a Value> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["day"] == day && r["source_ip"] == ip)
        .collect()
}

fn classes(row: &Value) -> Vec<String> {
    row["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["class"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_packing_is_read_and_rows_are_grouped_per_day_and_source() {
    let v = json(&[GOOGLE, MICROSOFT, AMAZON]);
    let reporters: Vec<&str> = v["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reporter"].as_str().unwrap())
        .collect();
    assert_eq!(
        reporters,
        ["google.com", "Enterprise Outlook", "AMAZON-SES"]
    );
    assert_eq!(v["totals"]["messages"], 194);
    assert_eq!(v["totals"]["dmarc_fail"], 9);
    // The same good outcome from the same SES address, reported by Google and Microsoft for
    // the same day, is one row.
    let good = rows(&v, "2025-11-28", "54.240.27.27");
    assert_eq!(good.len(), 1);
    assert_eq!(good[0]["messages"], 160);
    assert_eq!(good[0]["dmarc"], "pass");
    assert_eq!(good[0]["ses"], true);
    assert!(classes(good[0]).is_empty(), "{:?}", good[0]);
    assert_eq!(
        good[0]["reporters"],
        serde_json::json!(["Enterprise Outlook", "google.com"])
    );
}

#[test]
fn every_failure_class_is_named_with_its_cause() {
    let v = json(&[GOOGLE, MICROSOFT, AMAZON]);
    let one = |day: &str, ip: &str| {
        let r = rows(&v, day, ip);
        assert_eq!(r.len(), 1, "{day} {ip}: {r:?}");
        r[0].clone()
    };
    // SES fell back to its default MAIL FROM; DKIM still aligned: DMARC passes, SPF does not.
    let fallback = one("2025-11-28", "54.240.27.31");
    assert_eq!(classes(&fallback), ["ses-default-mail-from"]);
    assert_eq!(fallback["dmarc"], "pass");
    let why = fallback["findings"][0]["explanation"].as_str().unwrap();
    assert!(why.contains("BehaviorOnMxFailure"), "{why}");
    // Through SES but not through the relay: only SES's signature and SES's MAIL FROM.
    let bypass = one("2025-11-28", "23.251.234.5");
    assert_eq!(
        classes(&bypass),
        ["ses-default-mail-from", "only-ses-signature"]
    );
    assert_eq!(bypass["disposition"], "quarantine");
    // Our signature was there and failed.
    assert_eq!(
        classes(&one("2025-11-28", "54.240.27.40")),
        ["signature-failed"]
    );
    // Someone else, outside SES, unauthenticated.
    let spoof = one("2025-11-28", "203.0.113.9");
    assert_eq!(classes(&spoof), ["not-ses"]);
    assert_eq!(spoof["ses"], false);
    // A forwarder: not SES, SPF broke, our DKIM survived.
    assert_eq!(
        classes(&one("2025-11-29", "198.51.100.77")),
        ["not-ses-authenticated"]
    );
    // A key the receiver could not use, and SPF softfail for the custom MAIL FROM.
    let broken = rows(&v, "2025-11-29", "54.240.27.27");
    let broken = broken.iter().find(|r| r["dmarc"] == "fail").unwrap();
    assert_eq!(classes(broken), ["spf-failed", "key-error"]);
    assert!(
        broken["findings"][1]["explanation"]
            .as_str()
            .unwrap()
            .contains("s2027a._domainkey.example.org")
    );
}

#[test]
fn the_email_a_report_arrives_in_reads_as_its_attachment() {
    assert_eq!(json(&[MICROSOFT_EML]), json(&[MICROSOFT]));
}

#[test]
fn the_text_output_explains_failures_and_sums_up() {
    let out = run(&[], &[GOOGLE, MICROSOFT, AMAZON]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("report 13372468091337246809 from google.com for example.org (p=quarantine)"),
        "{text}"
    );
    assert!(
        text.contains("2025-11-28  example.org  203.0.113.9 (not SES)  3 messages  DMARC fail  disposition quarantine"),
        "{text}"
    );
    assert!(
        text.contains(
            "    ! only-ses-signature: only SES's own signature (d=amazonses.com) verified"
        )
    );
    assert!(text.contains("total: 194 messages, DMARC pass 185 (95.4 %), fail 9 (4.6 %)"));
}

#[test]
fn a_file_that_is_not_a_report_is_named_and_fails_the_run() {
    let out = run(&[], &["not-a-report.txt", AMAZON, "missing.xml.gz"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not-a-report.txt: not a DMARC aggregate report (email)"),
        "{err}"
    );
    assert!(err.contains("missing.xml.gz: No such file"), "{err}");
    // The readable one is still reported.
    assert!(String::from_utf8_lossy(&out.stdout).contains("from AMAZON-SES"));
}
