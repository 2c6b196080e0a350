//! Each doctor rule, records in → checks out, plus `require_published` over static DNS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::{self, Snapshot};
use crate::dkim::keygen::dkim_txt_value;
use crate::dns::lookup::StaticLookup;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

fn demo_key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("keys/example.org")
        .join(name)
}

fn key(selector: &str, file: &str, algorithm: Algorithm) -> SelectorKey {
    SelectorKey::load(selector, algorithm, &demo_key(file))
        .unwrap()
        .0
}

fn rsa() -> SelectorKey {
    key("s2026a", "s2026a.pem", Algorithm::RsaSha256)
}

fn snapshot(extra_domain: &str, extra_top: &str) -> Snapshot {
    let text = format!(
        "[upstream]\nsimulator = true\n{extra_top}\n[domains.\"example.org\"]\nmail_from = \
         \"mail.example.org\"\nsign = [\"s2026a\"]\n{extra_domain}\n\
         [domains.\"example.org\".selectors.s2026a]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n\
         [domains.\"example.org\".selectors.e2026a]\nalgorithm = \"ed25519-sha256\"\nkey_file = \"{}\"\n",
        demo_key("s2026a.pem").display(),
        demo_key("e2026a.pem").display()
    );
    config::load_str(Path::new("t.toml"), &text).unwrap()
}

fn good_records(s: &Snapshot) -> StaticLookup {
    StaticLookup::from_records(&crate::cli::records_for(s))
}

#[test]
fn dkim_record_matches() {
    let k = rsa();
    let v = dkim_txt_value(k.algorithm, &k.public_key);
    let c = dkim_record("example.org", &k, &[v]);
    assert_eq!(c.status, Status::Pass, "{c}");
    assert!(c.fix.is_none());
}

#[test]
fn dkim_record_missing_revoked_stale_wrong_k() {
    let k = rsa();
    let c = dkim_record("example.org", &k, &[]);
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("no DKIM key record"), "{c}");
    assert!(c.fix.as_deref().unwrap().contains("v=DKIM1; k=rsa; p="));

    let c = dkim_record("example.org", &k, &["v=DKIM1; k=rsa; p=".into()]);
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("revoked"), "{c}");

    let other = key("e2026a", "e2026a.pem", Algorithm::Ed25519Sha256);
    let stale = dkim_txt_value(Algorithm::RsaSha256, &other.public_key);
    let c = dkim_record("example.org", &k, &[stale]);
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("different key"), "{c}");

    let wrong_k = dkim_txt_value(k.algorithm, &k.public_key).replace("k=rsa", "k=ed25519");
    let c = dkim_record("example.org", &k, &[wrong_k]);
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("k=ed25519"), "{c}");

    let v = dkim_txt_value(k.algorithm, &k.public_key);
    let c = dkim_record("example.org", &k, &[v.clone(), v]);
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("2 DKIM key records"), "{c}");

    let c = dkim_record("example.org", &k, &["v=DKIM1; k=rsa; p=!!!".into()]);
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("base64"), "{c}");
}

#[test]
fn dkim_record_testing_flag_and_split_whitespace() {
    let k = rsa();
    let v = dkim_txt_value(k.algorithm, &k.public_key);
    let c = dkim_record("example.org", &k, &[format!("{v}; t=y")]);
    assert_eq!(c.status, Status::Warn, "{c}");
    // Some DNS consoles insert spaces inside p=.
    let (head, p) = v.split_once("p=").unwrap();
    let spaced = format!("{head}p={} {}", &p[..40], &p[40..]);
    assert_eq!(
        dkim_record("example.org", &k, &[spaced]).status,
        Status::Pass
    );
}

#[test]
fn dkim_record_accepts_pkcs1_rsa_public_key() {
    let k = rsa();
    // The SPKI wraps RSAPublicKey in a BIT STRING: its last bytes are the PKCS#1 form.
    let pkcs1 = &k.public_key[k.public_key.len() - 270..];
    let v = format!("v=DKIM1; k=rsa; p={}", B64.encode(pkcs1));
    assert_eq!(dkim_record("example.org", &k, &[v]).status, Status::Pass);
}

#[test]
fn mx_rules() {
    let ok = vec![(10, "feedback-smtp.us-east-1.amazonses.com".to_string())];
    assert_eq!(
        mail_from_mx("mail.example.org", "us-east-1", &ok).status,
        Status::Pass
    );
    let c = mail_from_mx("mail.example.org", "us-east-1", &[]);
    assert_eq!(c.status, Status::Fail);
    let two = vec![ok[0].clone(), (20, "mx.example.org".to_string())];
    let c = mail_from_mx("mail.example.org", "us-east-1", &two);
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("2 MX records"), "{c}");
    let other = vec![(10, "feedback-smtp.eu-west-1.amazonses.com".to_string())];
    assert_eq!(
        mail_from_mx("mail.example.org", "us-east-1", &other).status,
        Status::Warn
    );
    let wrong = vec![(10, "mx.example.net".to_string())];
    assert_eq!(
        mail_from_mx("mail.example.org", "us-east-1", &wrong).status,
        Status::Fail
    );
}

#[test]
fn spf_rules() {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let m = "mail.example.org";
    assert_eq!(
        mail_from_spf(m, &s(&["v=spf1 include:amazonses.com ~all"])).status,
        Status::Pass
    );
    assert_eq!(mail_from_spf(m, &s(&[])).status, Status::Fail);
    assert_eq!(
        mail_from_spf(m, &s(&["google-site-verification=x"])).status,
        Status::Fail
    );
    let two = mail_from_spf(
        m,
        &s(&["v=spf1 include:amazonses.com ~all", "v=spf1 mx -all"]),
    );
    assert_eq!(two.status, Status::Fail);
    assert!(two.message.contains("permerror"), "{two}");
    assert_eq!(
        mail_from_spf(m, &s(&["v=spf1 mx -all"])).status,
        Status::Fail
    );
    assert_eq!(
        mail_from_spf(m, &s(&["v=spf1 include:amazonses.com +all"])).status,
        Status::Warn
    );
    // v=spf10 is not an SPF record; odd bytes from DNS never panic.
    assert_eq!(mail_from_spf(m, &s(&["v=spf10 x"])).status, Status::Fail);
    assert_eq!(
        mail_from_spf(m, &s(&["v=spfé1", "é", "v=sp"])).status,
        Status::Fail
    );
    assert_eq!(
        dkim_record("example.org", &rsa(), &["é=é; p=é".into()]).status,
        Status::Fail
    );
    dmarc_tags_never_panic();
}

fn dmarc_tags_never_panic() {
    let snap = snapshot("", "");
    let d = snap.domains.get("example.org").unwrap();
    for v in [
        "v=DMARC1; p=é",
        "v=DMARC1;;;",
        "v=DMARC1; pct=é; p=reject",
        "v=DMARC1 p",
    ] {
        let _ = dmarc(d, &[v.to_string()]);
    }
}

fn statuses(checks: &[Check]) -> Vec<(Status, String)> {
    checks
        .iter()
        .map(|c| (c.status, c.message.clone()))
        .collect()
}

#[test]
fn dmarc_rules() {
    let snap = snapshot("", "");
    let d = snap.domains.get("example.org").unwrap();
    let one = |v: &str| dmarc(d, &[v.to_string()]);

    let c = one("v=DMARC1; p=reject; rua=mailto:r@example.org");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].status, Status::Pass);

    let c = dmarc(d, &[]);
    assert_eq!(c[0].status, Status::Fail);
    let c = dmarc(
        d,
        &[
            "v=DMARC1; p=none".to_string(),
            "v=DMARC1; p=reject".to_string(),
        ],
    );
    assert_eq!(c[0].status, Status::Fail);
    assert_eq!(one("v=DMARC1; p=maybe")[0].status, Status::Fail);
    assert_eq!(one("v=DMARC1; rua=mailto:x@y")[0].status, Status::Fail);

    let c = one("v=DMARC1; p=none");
    let s = statuses(&c);
    assert!(
        s.iter()
            .any(|(st, m)| *st == Status::Warn && m.contains("p=none")),
        "{s:?}"
    );
    assert!(
        s.iter()
            .any(|(st, m)| *st == Status::Warn && m.contains("rua")),
        "{s:?}"
    );

    let c = one("v=DMARC1; p=quarantine; pct=25; aspf=s; rua=mailto:r@example.org");
    let s = statuses(&c);
    assert!(s.iter().any(|(_, m)| m.contains("pct=25")), "{s:?}");
    assert!(s.iter().any(|(_, m)| m.contains("aspf=s")), "{s:?}");
    assert!(!s.iter().any(|(st, _)| *st == Status::Fail));

    // adkim=s only matters when subdomain From addresses are signed with the parent d=.
    let c = one("v=DMARC1; p=reject; adkim=s; rua=mailto:r@example.org");
    assert_eq!(c.len(), 1);
    let sub = snapshot("subdomains = true", "");
    let d2 = sub.domains.get("example.org").unwrap();
    let c = dmarc(
        d2,
        &["v=DMARC1; p=reject; adkim=s; rua=mailto:r@example.org".to_string()],
    );
    assert!(
        c.iter()
            .any(|c| c.status == Status::Warn && c.message.contains("adkim=s"))
    );
}

#[test]
fn key_size_and_age() {
    let k = rsa();
    let now = k.modified.unwrap() + Duration::from_secs(10 * 86_400);
    let c = key_checks("example.org", &k, Duration::from_secs(180 * 86_400), now);
    assert!(c.iter().all(|c| c.status == Status::Pass), "{c:?}");
    assert!(c[0].message.contains("2048"));
    let c = key_checks("example.org", &k, Duration::from_secs(5 * 86_400), now);
    assert!(
        c.iter()
            .any(|c| c.status == Status::Warn && c.message.contains("10 days old"))
    );
}

fn run(snap: &Snapshot, lookup: &StaticLookup) -> Vec<Check> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(diagnose(
        &snap.domains,
        snap.reload.key_max_age,
        "us-east-1",
        lookup,
        SystemTime::now(),
    ))
}

#[test]
fn diagnose_all_published_passes_except_dmarc_advice() {
    let snap = snapshot(
        "dmarc = \"v=DMARC1; p=reject; rua=mailto:dmarc@example.org\"",
        "",
    );
    let checks = run(&snap, &good_records(&snap));
    assert!(
        checks.iter().all(|c| c.status == Status::Pass),
        "{checks:#?}"
    );
    assert!(!any_failed(&checks));
}

#[test]
fn diagnose_published_only_selector_problems_are_warnings() {
    let snap = snapshot("", "");
    let mut dns = good_records(&snap);
    dns.remove("e2026a._domainkey.example.org");
    let checks = run(&snap, &dns);
    let e = checks
        .iter()
        .find(|c| c.subject == "e2026a._domainkey.example.org TXT")
        .unwrap();
    assert_eq!(e.status, Status::Warn, "{e}");
    assert!(!any_failed(&checks));
    // The active one missing is a FAIL.
    dns.remove("s2026a._domainkey.example.org");
    assert!(any_failed(&run(&snap, &dns)));
}

#[test]
fn diagnose_lookup_failure_is_a_fail_not_missing() {
    let snap = snapshot("", "");
    let mut dns = good_records(&snap);
    dns.fail("mail.example.org");
    let checks = run(&snap, &dns);
    let mx = checks
        .iter()
        .find(|c| c.subject == "mail.example.org MX")
        .unwrap();
    assert_eq!(mx.status, Status::Fail);
    assert!(mx.message.contains("could not look up"), "{mx}");
}

// ---- require_published ----------------------------------------------------------------

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn require_published_on_start_is_an_error_when_missing() {
    let mut snap = snapshot("require_published = true", "");
    let empty = StaticLookup::new();
    let err = block(config::rotation::enforce(None, &mut snap, &empty)).unwrap_err();
    assert!(err[0].message.contains("s2026a"), "{err:?}");
    assert_eq!(err[0].key, "domains.\"example.org\".sign");

    let mut snap = snapshot("require_published = true", "");
    let dns = good_records(&snap);
    assert!(
        block(config::rotation::enforce(None, &mut snap, &dns))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn require_published_keeps_the_previous_selector() {
    let old = snapshot("", "[reload]\nrequire_published = true");
    let dns_old = good_records(&old);
    // Switch to e2026a, whose record is missing: keep s2026a.
    let mut next =
        snapshot("", "[reload]\nrequire_published = true").with_sign("example.org", "e2026a");
    let mut dns = dns_old.clone();
    dns.remove("e2026a._domainkey.example.org");
    let held = block(config::rotation::enforce(Some(&old), &mut next, &dns)).unwrap();
    assert_eq!(held.len(), 1);
    assert!(
        held[0].message.contains("keeps signing with s2026a"),
        "{held:?}"
    );
    let d = next.domains.get("example.org").unwrap();
    assert_eq!(d.active[0].selector, "s2026a");
    assert!(Arc::ptr_eq(
        &d.active[0],
        &old.domains.get("example.org").unwrap().active[0]
    ));

    // Published: the switch happens.
    let mut next =
        snapshot("", "[reload]\nrequire_published = true").with_sign("example.org", "e2026a");
    let held = block(config::rotation::enforce(Some(&old), &mut next, &dns_old)).unwrap();
    assert!(held.is_empty());
    assert_eq!(
        next.domains.get("example.org").unwrap().active[0].selector,
        "e2026a"
    );

    // Per-domain override off: no check.
    let mut next = snapshot(
        "require_published = false",
        "[reload]\nrequire_published = true",
    )
    .with_sign("example.org", "e2026a");
    let held = block(config::rotation::enforce(Some(&old), &mut next, &dns)).unwrap();
    assert!(held.is_empty());
}

#[test]
fn require_published_leaves_out_a_new_domain_until_published() {
    let mut next = snapshot("", "[reload]\nrequire_published = true");
    // Pretend example.org is new: the previous snapshot has no domains.
    let mut previous = snapshot("", "");
    previous.domains.clear();
    let held = block(config::rotation::enforce(
        Some(&previous),
        &mut next,
        &StaticLookup::new(),
    ))
    .unwrap();
    assert_eq!(held.len(), 1);
    assert!(held[0].message.contains("not enabled"), "{held:?}");
    assert!(next.domains.is_empty());
    assert!(
        next.warnings
            .iter()
            .any(|w| w.message.contains("not enabled"))
    );
}

trait WithSign {
    fn with_sign(self, domain: &str, selector: &str) -> Self;
}

impl WithSign for Snapshot {
    /// The same snapshot signing with another configured selector.
    fn with_sign(mut self, domain: &str, selector: &str) -> Snapshot {
        let d = self.domains.get(domain).unwrap();
        let mut d2 = (**d).clone();
        d2.active = vec![Arc::clone(d.selectors.get(selector).unwrap())];
        self.domains.insert(domain.to_string(), Arc::new(d2));
        self
    }
}

// ---- the periodic key-record check ------------------------------------------------------

fn published(snap: &Snapshot, lookup: &StaticLookup) -> Vec<(String, Option<bool>)> {
    block(published::check_published(&snap.domains, lookup))
        .into_iter()
        .map(|r| {
            assert_eq!(r.domain, "example.org");
            (r.selector, r.outcome.matches())
        })
        .collect()
}

#[test]
fn published_check_matching_missing_other_key_and_lookup_failure() {
    let snap = snapshot("", "");
    let dns = good_records(&snap);
    // Both selectors (active and published-only) are checked, in configuration order.
    assert_eq!(
        published(&snap, &dns),
        vec![("e2026a".into(), Some(true)), ("s2026a".into(), Some(true))]
    );
    // Missing.
    let mut missing = dns.clone();
    missing.remove("e2026a._domainkey.example.org");
    assert_eq!(
        published(&snap, &missing),
        vec![
            ("e2026a".into(), Some(false)),
            ("s2026a".into(), Some(true))
        ]
    );
    let out = block(published::check_published(&snap.domains, &missing));
    assert_eq!(
        out[0].outcome,
        published::Published::Differs(DkimRecordProblem::Missing)
    );
    // Another key at the name (a stale record from before a rotation).
    let mut other = dns.clone();
    other.remove("s2026a._domainkey.example.org");
    other.add_txt(
        "s2026a._domainkey.example.org",
        &format!("v=DKIM1; k=rsa; p={}", B64.encode([7u8; 294])),
    );
    assert_eq!(
        published(&snap, &other),
        vec![
            ("e2026a".into(), Some(true)),
            ("s2026a".into(), Some(false))
        ]
    );
    // No answer: unknown, not a mismatch.
    let mut failing = dns.clone();
    failing.fail("s2026a._domainkey.example.org");
    assert_eq!(
        published(&snap, &failing),
        vec![("e2026a".into(), Some(true)), ("s2026a".into(), None)]
    );
}
