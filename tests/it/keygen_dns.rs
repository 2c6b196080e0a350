//! The binary's `keygen` and `dns` output, read back the way a user's DNS would see it:
//! a signature made with the generated key verifies against the printed record, and every
//! `dns --format` parses back into the records the configuration needs.

use std::path::Path;
use std::process::Command;

use dkim_relay::dkim::Algorithm;
use dkim_relay::dkim::key::SelectorKey;
use dkim_relay::dns::{self, DnsView, Record, RecordData};
use dkim_relay::sim::verdict::verdict;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;

const MSG: &str =
    "From: App <app@example.org>\r\nTo: user@example.net\r\nSubject: hello\r\n\r\nHello.\r\n";

fn relay() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dkim-relay"))
}

/// Runs keygen; returns the records of the printed zone fragment and the key file.
fn keygen(dir: &Path, selector: &str, algorithm: &str) -> (Vec<Record>, std::path::PathBuf) {
    let out = relay()
        .args(["keygen", "--domain", "example.org", "--selector", selector])
        .args(["--algorithm", algorithm, "--keys-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    // The zone fragment comes first, then a blank line, then the TOML to add.
    let (zone, toml) = stdout.split_once("\n\n").expect("two parts");
    let records = dns::parse_zone(zone).unwrap_or_else(|e| panic!("{e}: {zone}"));
    assert!(toml.contains(&format!("[domains.\"example.org\".selectors.{selector}]")));
    assert!(toml.contains(&format!("algorithm = \"{algorithm}\"")));
    (
        records,
        dir.join("example.org").join(format!("{selector}.pem")),
    )
}

async fn sign_and_verify(selector: &str, algorithm: &str, alg: Algorithm) {
    let dir = tempfile::tempdir().unwrap();
    let (records, key_file) = keygen(dir.path(), selector, algorithm);
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].name,
        format!("{selector}._domainkey.example.org")
    );
    let (key, _) = SelectorKey::load(selector, alg, &key_file).unwrap();
    let sig = DkimSigner::from_key(key.key.clone())
        .domain("example.org")
        .selector(selector)
        .headers(["From", "To", "Subject"])
        .sign(MSG.as_bytes())
        .unwrap();
    let signed = format!("{}{MSG}", sig.to_header());
    let view = DnsView::from_records(&records);
    let v = verdict(
        signed.as_bytes(),
        "app@mail.example.org",
        "54.240.27.27".parse().unwrap(),
        &view,
    )
    .await;
    assert_eq!(v.dkim.len(), 1);
    assert_eq!(v.dkim[0].result, "pass", "{:?}", v.dkim[0]);
    assert_eq!(v.dkim[0].selector, selector);

    // Another key's record does not verify it (the check is real).
    let (other, _) = keygen(dir.path(), &format!("{selector}x"), algorithm);
    let RecordData::Txt(value) = &other[0].data else {
        panic!("TXT expected")
    };
    let mut wrong = DnsView::new();
    wrong.add_txt(&records[0].name, value);
    let v = verdict(
        signed.as_bytes(),
        "app@mail.example.org",
        "54.240.27.27".parse().unwrap(),
        &wrong,
    )
    .await;
    assert_ne!(v.dkim[0].result, "pass");
}

#[tokio::test]
async fn keygen_rsa_record_verifies_a_signature_with_the_new_key() {
    sign_and_verify("k2026a", "rsa-sha256", Algorithm::RsaSha256).await;
}

#[tokio::test]
async fn keygen_ed25519_record_verifies_a_signature_with_the_new_key() {
    sign_and_verify("e2026x", "ed25519-sha256", Algorithm::Ed25519Sha256).await;
}

#[test]
fn keygen_never_overwrites_a_key() {
    let dir = tempfile::tempdir().unwrap();
    keygen(dir.path(), "once", "ed25519-sha256");
    let out = relay()
        .args(["keygen", "--domain", "example.org", "--selector", "once"])
        .args(["--algorithm", "ed25519-sha256", "--keys-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn strip_comments(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .map(|r| Record {
            comment: None,
            ..r.clone()
        })
        .collect()
}

#[test]
fn dns_output_parses_back_in_every_format() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml.example");
    let snapshot = dkim_relay::config::load(&config).unwrap();
    let expected = strip_comments(&dkim_relay::cli::records_for(&snapshot));
    assert!(expected.len() >= 5, "{expected:?}");
    let run = |format: &str| {
        let out = relay()
            .args(["dns", "--format", format, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };

    let zone = dns::parse_zone(&run("zone")).unwrap();
    assert_eq!(strip_comments(&zone), expected);
    // The long RSA key is split into quoted strings of at most 255 bytes, and joined back.
    assert!(
        zone.iter()
            .any(|r| matches!(&r.data, RecordData::Txt(v) if v.len() > 255))
    );

    let r53 = dns::parse_route53(&run("route53")).unwrap();
    assert_eq!(strip_comments(&r53), expected);

    let json: Vec<serde_json::Value> = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json.len(), expected.len());
    for (row, want) in json.iter().zip(&expected) {
        assert_eq!(row["name"], want.name.as_str());
        assert_eq!(row["type"], want.data.rtype());
        let value = match &want.data {
            RecordData::Txt(v) => v.clone(),
            RecordData::Mx {
                preference,
                exchange,
            } => format!("{preference} {exchange}"),
        };
        assert_eq!(row["value"], value.as_str());
    }
}
