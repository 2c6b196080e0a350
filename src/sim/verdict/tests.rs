//! The verdict end to end: messages signed here, DNS from a [`DnsView`], every part checked.

use super::dmarc::{aligned, org_domain, pct_of};
use super::*;
use crate::dkim::Algorithm;
use crate::dkim::keygen::{GeneratedKey, dkim_txt_value, generate};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::OnceLock;

const SES_IP: IpAddr = IpAddr::V4(SES_SENDING_IP);

const MSG: &str = "From: App <app@example.org>\r\n\
To: user@example.net\r\n\
Subject: Your receipt\r\n\
Message-ID: <orig-1@example.org>\r\n\
Date: Mon, 6 Apr 2026 10:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Thanks for your order.\r\n";

// RSA generation is slow in debug builds; share one key per algorithm across tests.
fn key(alg: Algorithm) -> &'static GeneratedKey {
    static RSA: OnceLock<GeneratedKey> = OnceLock::new();
    static ED: OnceLock<GeneratedKey> = OnceLock::new();
    let cell = match alg {
        Algorithm::RsaSha256 => &RSA,
        Algorithm::Ed25519Sha256 => &ED,
    };
    cell.get_or_init(|| generate(alg, 2048).unwrap())
}

fn sign_with(alg: Algorithm, domain: &str, selector: &str, headers: &[&str], msg: &str) -> String {
    let pem = &key(alg).pkcs8_pem;
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).unwrap();
    let sig = match alg {
        Algorithm::RsaSha256 => {
            DkimSigner::from_key(RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(der)).unwrap())
                .domain(domain)
                .selector(selector)
                .headers(headers.iter().copied())
                .sign(msg.as_bytes())
                .unwrap()
        }
        Algorithm::Ed25519Sha256 => {
            DkimSigner::from_key(Ed25519Key::from_pkcs8_der(der.secret_pkcs8_der()).unwrap())
                .domain(domain)
                .selector(selector)
                .headers(headers.iter().copied())
                .sign(msg.as_bytes())
                .unwrap()
        }
    };
    format!("{}{msg}", sig.to_header())
}

const SAFE_HEADERS: &[&str] = &["From", "To", "Subject", "MIME-Version", "Content-Type"];

fn sign(alg: Algorithm) -> String {
    sign_with(alg, "example.org", "s1", SAFE_HEADERS, MSG)
}

/// The DNS of a correctly set-up example.org (key at s1, MAIL FROM mail.example.org).
fn good_dns(alg: Algorithm, dmarc: Option<&str>) -> DnsView {
    let mut dns = DnsView::new();
    dns.add_txt(
        "s1._domainkey.example.org",
        &dkim_txt_value(alg, &key(alg).public_key),
    );
    dns.add_txt("mail.example.org", "v=spf1 include:amazonses.com ~all");
    dns.add_mx(
        "mail.example.org",
        10,
        "feedback-smtp.us-east-1.amazonses.com",
    );
    if let Some(d) = dmarc {
        dns.add_txt("_dmarc.example.org", d);
    }
    dns
}

const BOUNCE: &str = "0100018f-abc@mail.example.org";
/// SES's default MAIL FROM: passes SPF but never aligns with example.org.
const SES_DEFAULT: &str = "0100018f-abc@amazonses.com";

#[test]
fn verdict_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let dns = DnsView::new();
    let fut = verdict(b"", "", SES_IP, &dns);
    assert_send(&fut);
}

#[tokio::test]
async fn good_setup_passes_everything() {
    for alg in [Algorithm::RsaSha256, Algorithm::Ed25519Sha256] {
        let dns = good_dns(alg, Some("v=DMARC1; p=reject; rua=mailto:d@example.org"));
        let v = verdict(sign(alg).as_bytes(), BOUNCE, SES_IP, &dns).await;
        assert_eq!(v.dkim.len(), 1, "{alg}");
        let d = &v.dkim[0];
        assert_eq!(
            (d.domain.as_str(), d.selector.as_str(), d.algorithm.as_str()),
            ("example.org", "s1", alg.as_str())
        );
        assert_eq!(d.result, "pass", "{alg}: {}", d.reason);
        assert!(d.aligned);
        assert_eq!(v.spf.result, "pass", "{}", v.spf.reason);
        assert_eq!(v.spf.domain, "mail.example.org");
        assert!(v.spf.aligned);
        assert_eq!(v.dmarc.from_domain, "example.org");
        assert_eq!(v.dmarc.result, "pass", "{}", v.dmarc.reason);
        assert_eq!(v.dmarc.policy, "reject");
        assert_eq!(v.dmarc.disposition, "none");
        assert_eq!(
            v.dmarc.record.as_deref(),
            Some("v=DMARC1; p=reject; rua=mailto:d@example.org")
        );
        // Serialises for the simulator UI and back.
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Verdict>(&json).unwrap(), v);
    }
}

#[tokio::test]
async fn dkim_alone_carries_dmarc_with_default_mail_from() {
    let dns = good_dns(Algorithm::Ed25519Sha256, Some("v=DMARC1; p=quarantine"));
    let v = verdict(
        sign(Algorithm::Ed25519Sha256).as_bytes(),
        SES_DEFAULT,
        SES_IP,
        &dns,
    )
    .await;
    assert_eq!(
        v.spf.result, "pass",
        "synthetic amazonses.com SPF covers the SES IP"
    );
    assert_eq!(v.spf.domain, "amazonses.com");
    assert!(!v.spf.aligned);
    assert_eq!(v.dkim[0].result, "pass");
    assert_eq!(v.dmarc.result, "pass");
    assert!(
        v.dmarc.reason.contains("DKIM d=example.org"),
        "{}",
        v.dmarc.reason
    );
}

#[tokio::test]
async fn body_changed_fails_dkim_and_dmarc() {
    for alg in [Algorithm::RsaSha256, Algorithm::Ed25519Sha256] {
        let signed = sign(alg).replace("Thanks for your order.", "Thanks for your order!");
        let dns = good_dns(alg, Some("v=DMARC1; p=reject"));
        let v = verdict(signed.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
        assert_eq!(v.dkim[0].result, "fail", "{alg}: {}", v.dkim[0].reason);
        assert!(v.dkim[0].reason.contains("body"), "{}", v.dkim[0].reason);
        assert_eq!(v.dmarc.result, "fail");
        assert_eq!(v.dmarc.disposition, "reject");
        // With an aligned SPF pass DMARC still passes despite the broken signature.
        let v = verdict(signed.as_bytes(), BOUNCE, SES_IP, &dns).await;
        assert_eq!(v.dkim[0].result, "fail");
        assert_eq!(v.dmarc.result, "pass", "{}", v.dmarc.reason);
        assert_eq!(v.dmarc.disposition, "none");
    }
}

#[tokio::test]
async fn ses_rewriting_signed_message_id_and_date_breaks_dkim() {
    let mut headers = SAFE_HEADERS.to_vec();
    headers.extend(["Message-ID", "Date"]);
    let signed = sign_with(Algorithm::RsaSha256, "example.org", "s1", &headers, MSG);
    // What SES does on acceptance (ses-smtp.md §5).
    let delivered = signed
        .replace(
            "Message-ID: <orig-1@example.org>",
            "Message-ID: <0100018f-abc@email.amazonses.com>",
        )
        .replace(
            "Date: Mon, 6 Apr 2026 10:00:00 +0000",
            "Date: Mon, 6 Apr 2026 10:00:03 +0000",
        );
    let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=none"));
    // Untouched, it verifies…
    let v = verdict(signed.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
    assert_eq!(v.dkim[0].result, "pass");
    // …rewritten, it does not, and with SPF unaligned DMARC fails (p=none: no action).
    let v = verdict(delivered.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
    assert_eq!(v.dkim[0].result, "fail", "{}", v.dkim[0].reason);
    assert!(v.dkim[0].reason.contains("header"), "{}", v.dkim[0].reason);
    assert_eq!(v.dmarc.result, "fail");
    assert_eq!(v.dmarc.policy, "none");
    assert_eq!(v.dmarc.disposition, "none");
}

#[tokio::test]
async fn spf_custom_mail_from_passes_aligned() {
    let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject"));
    let unsigned = MSG;
    let v = verdict(unsigned.as_bytes(), "x@mail.example.org", SES_IP, &dns).await;
    assert!(v.dkim.is_empty());
    assert_eq!(v.spf.result, "pass", "{}", v.spf.reason);
    assert!(v.spf.aligned);
    assert_eq!(v.dmarc.result, "pass", "{}", v.dmarc.reason);
    assert!(v.dmarc.reason.contains("SPF mail.example.org"));
    // From an IP outside amazonses.com's ranges the ~all gives softfail, and DMARC fails.
    let other: IpAddr = "192.0.2.7".parse().unwrap();
    let v = verdict(unsigned.as_bytes(), "x@mail.example.org", other, &dns).await;
    assert_eq!(v.spf.result, "softfail");
    assert_eq!(v.dmarc.result, "fail");
    assert_eq!(v.dmarc.disposition, "reject");
}

#[tokio::test]
async fn strict_spf_alignment_breaks_subdomain_mail_from() {
    let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject; aspf=s"));
    let v = verdict(MSG.as_bytes(), BOUNCE, SES_IP, &dns).await;
    assert_eq!(v.spf.result, "pass");
    assert!(!v.spf.aligned);
    assert!(v.spf.reason.contains("aspf=s"), "{}", v.spf.reason);
    assert_eq!(v.dmarc.result, "fail");
    assert_eq!(v.dmarc.disposition, "reject");
    // DKIM still carries DMARC under aspf=s.
    let v = verdict(sign(Algorithm::RsaSha256).as_bytes(), BOUNCE, SES_IP, &dns).await;
    assert!(!v.spf.aligned);
    assert_eq!(v.dmarc.result, "pass");
}

#[tokio::test]
async fn strict_dkim_alignment() {
    // Signed as mail.example.org: relaxed aligns, adkim=s does not.
    let signed = sign_with(
        Algorithm::Ed25519Sha256,
        "mail.example.org",
        "s1",
        SAFE_HEADERS,
        MSG,
    );
    let mut dns = good_dns(Algorithm::Ed25519Sha256, Some("v=DMARC1; p=reject"));
    dns.add_txt(
        "s1._domainkey.mail.example.org",
        &dkim_txt_value(
            Algorithm::Ed25519Sha256,
            &key(Algorithm::Ed25519Sha256).public_key,
        ),
    );
    let v = verdict(signed.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
    assert_eq!(v.dkim[0].result, "pass");
    assert!(v.dkim[0].aligned);
    assert_eq!(v.dmarc.result, "pass");
    let mut strict = dns.clone();
    strict.remove("_dmarc.example.org");
    strict.add_txt("_dmarc.example.org", "v=DMARC1; p=reject; adkim=s");
    let v = verdict(signed.as_bytes(), SES_DEFAULT, SES_IP, &strict).await;
    assert_eq!(v.dkim[0].result, "pass");
    assert!(!v.dkim[0].aligned);
    assert_eq!(v.dmarc.result, "fail");
    assert!(v.dmarc.reason.contains("not aligned"), "{}", v.dmarc.reason);
}

#[tokio::test]
async fn no_dmarc_record_means_none() {
    let dns = good_dns(Algorithm::RsaSha256, None);
    let v = verdict(sign(Algorithm::RsaSha256).as_bytes(), BOUNCE, SES_IP, &dns).await;
    assert_eq!(v.dkim[0].result, "pass");
    assert_eq!(v.dmarc.result, "none");
    assert_eq!(v.dmarc.policy, "");
    assert_eq!(v.dmarc.disposition, "none");
    assert_eq!(v.dmarc.record, None);
    assert!(
        v.dmarc.reason.contains("no DMARC record"),
        "{}",
        v.dmarc.reason
    );
}

#[tokio::test]
async fn missing_key_record_is_an_error() {
    let mut dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=quarantine"));
    dns.remove("s1._domainkey.example.org");
    let v = verdict(
        sign(Algorithm::RsaSha256).as_bytes(),
        SES_DEFAULT,
        SES_IP,
        &dns,
    )
    .await;
    assert!(
        matches!(v.dkim[0].result.as_str(), "permerror" | "temperror"),
        "{:?}",
        v.dkim[0]
    );
    assert!(v.dkim[0].reason.contains("s1._domainkey.example.org"));
    assert_eq!(v.dmarc.result, "fail");
    assert_eq!(v.dmarc.disposition, "quarantine");
}

#[tokio::test]
async fn revoked_key_fails() {
    let mut dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=none"));
    dns.remove("s1._domainkey.example.org");
    dns.add_txt("s1._domainkey.example.org", "v=DKIM1; k=rsa; p=");
    let v = verdict(
        sign(Algorithm::RsaSha256).as_bytes(),
        SES_DEFAULT,
        SES_IP,
        &dns,
    )
    .await;
    assert_eq!(v.dkim[0].result, "fail", "{:?}", v.dkim[0]);
    assert!(v.dkim[0].reason.contains("revoked"));
    assert_eq!(v.dmarc.result, "fail");
}

#[tokio::test]
async fn wrong_key_published_fails() {
    let mut dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=none"));
    let other = generate(Algorithm::RsaSha256, 2048).unwrap();
    dns.remove("s1._domainkey.example.org");
    dns.add_txt(
        "s1._domainkey.example.org",
        &dkim_txt_value(Algorithm::RsaSha256, &other.public_key),
    );
    let v = verdict(
        sign(Algorithm::RsaSha256).as_bytes(),
        SES_DEFAULT,
        SES_IP,
        &dns,
    )
    .await;
    assert_eq!(v.dkim[0].result, "fail");
}

#[tokio::test]
async fn subdomain_policy_and_pct() {
    // From a subdomain with no record of its own: the org record's sp= applies.
    let msg = MSG.replace("app@example.org", "app@news.example.org");
    let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=none; sp=reject"));
    let v = verdict(msg.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
    assert_eq!(v.dmarc.from_domain, "news.example.org");
    assert_eq!(v.dmarc.result, "fail");
    assert_eq!(v.dmarc.policy, "reject");
    assert_eq!(v.dmarc.disposition, "reject");
    assert_eq!(
        v.dmarc.record.as_deref(),
        Some("v=DMARC1; p=none; sp=reject")
    );
    // The aligned custom MAIL FROM passes for the subdomain From under relaxed alignment.
    let v = verdict(msg.as_bytes(), BOUNCE, SES_IP, &dns).await;
    assert!(v.spf.aligned);
    assert_eq!(v.dmarc.result, "pass");

    // pct=0: nothing is sampled, so the next weaker policy applies.
    let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject; pct=0"));
    let v = verdict(MSG.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
    assert_eq!(v.dmarc.result, "fail");
    assert_eq!(v.dmarc.policy, "reject");
    assert_eq!(v.dmarc.disposition, "quarantine");
    assert!(v.dmarc.reason.contains("pct=0"));
    // t=y (DMARCbis testing flag) lowers the policy too.
    let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject; t=y"));
    let v = verdict(MSG.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
    assert_eq!(v.dmarc.disposition, "quarantine");
}

#[tokio::test]
async fn unknown_names_are_nxdomain_not_network() {
    // An include of a domain the view does not know must be answered locally: "does not
    // exist" gives permerror (RFC 7208 §5.2), never temperror from a resolver.
    let mut dns = DnsView::new();
    dns.add_txt(
        "bounce.example.com",
        "v=spf1 include:nowhere.example.net -all",
    );
    let v = verdict(MSG.as_bytes(), "x@bounce.example.com", SES_IP, &dns).await;
    assert_eq!(v.spf.result, "permerror", "{}", v.spf.reason);
    // No SPF record at all → none.
    let v = verdict(MSG.as_bytes(), "x@unknown.example.com", SES_IP, &dns).await;
    assert_eq!(v.spf.result, "none");
    // A mechanism needing A/MX data for a name the view lacks simply does not match.
    let mut dns = DnsView::new();
    dns.add_txt("a.example.com", "v=spf1 a mx ptr -all");
    let v = verdict(MSG.as_bytes(), "x@a.example.com", SES_IP, &dns).await;
    assert_eq!(v.spf.result, "fail", "{}", v.spf.reason);
}

#[tokio::test]
async fn explicit_amazonses_spf_overrides_synthetic() {
    let mut dns = DnsView::new();
    dns.add_txt("amazonses.com", "v=spf1 -all");
    let v = verdict(MSG.as_bytes(), SES_DEFAULT, SES_IP, &dns).await;
    assert_eq!(v.spf.result, "fail");
    let v = verdict(MSG.as_bytes(), SES_DEFAULT, SES_IP, &DnsView::new()).await;
    assert_eq!(v.spf.result, "pass");
}

#[tokio::test]
async fn from_records_matches_dns_module() {
    let alg = Algorithm::RsaSha256;
    let records = crate::dns::domain_records(&crate::dns::DomainRecordsInput {
        domain: "example.org".into(),
        mail_from: "mail.example.org".into(),
        region: "us-east-1".into(),
        selectors: vec![crate::dns::SelectorInfo {
            selector: "s1".into(),
            algorithm: alg,
            public_key: key(alg).public_key.clone(),
            active: true,
        }],
        dmarc: Some("v=DMARC1; p=reject".into()),
    });
    let dns = DnsView::from_records(&records);
    assert_eq!(
        dns.mx("mail.example.org"),
        vec![(10, "feedback-smtp.us-east-1.amazonses.com".to_string())]
    );
    let v = verdict(sign(alg).as_bytes(), BOUNCE, SES_IP, &dns).await;
    assert_eq!(v.dkim[0].result, "pass");
    assert_eq!(v.spf.result, "pass");
    assert_eq!(v.dmarc.result, "pass");
}

#[tokio::test]
async fn null_sender_and_garbage() {
    let dns = good_dns(Algorithm::RsaSha256, Some("v=DMARC1; p=reject"));
    // Null reverse-path: SPF is checked for the HELO name (amazonses.com subdomain, no record).
    let v = verdict(sign(Algorithm::RsaSha256).as_bytes(), "<>", SES_IP, &dns).await;
    assert_eq!(v.spf.domain, SES_HELO);
    assert_eq!(v.dmarc.result, "pass");
    // Not a message at all: no panic, DMARC not applicable.
    let v = verdict(b"\x00\xff garbage", BOUNCE, SES_IP, &dns).await;
    assert!(v.dkim.is_empty());
    assert_ne!(v.dmarc.result, "pass");
    // No From header.
    let v = verdict(b"Subject: x\r\n\r\nbody\r\n", BOUNCE, SES_IP, &dns).await;
    assert_eq!(v.dmarc.result, "none");
}

#[test]
fn helpers() {
    assert_eq!(
        address_domain("<a@Example.ORG>").as_deref(),
        Some("example.org")
    );
    assert_eq!(address_domain("<>"), None);
    assert_eq!(address_domain("a@"), None);
    assert_eq!(pct_of("v=DMARC1; p=reject; pct=25"), Some(25));
    assert_eq!(pct_of("v=DMARC1; p=reject"), None);
    let mut dns = DnsView::new();
    assert_eq!(org_domain(&dns, "a.b.example.org"), "example.org");
    dns.add_txt("_dmarc.example.org", "v=DMARC1; p=none");
    assert_eq!(org_domain(&dns, "a.b.example.org"), "example.org");
    assert!(aligned(
        &dns,
        "mail.example.org",
        "example.org",
        Alignment::Relaxed
    ));
    assert!(!aligned(
        &dns,
        "mail.example.org",
        "example.org",
        Alignment::Strict
    ));
    assert!(!aligned(
        &dns,
        "example.com",
        "example.org",
        Alignment::Relaxed
    ));
    assert!(SES_SENDING_IP.octets()[..2] == [54, 240]);
}
