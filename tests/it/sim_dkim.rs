//! DKIM through the simulator, checked by verification (mail-auth with an in-memory DNS):
//! SES's own `d=amazonses.com` signature verifies; a client signature over headers SES leaves
//! alone survives the rewrites; one over Message-ID and Date breaks, as it would through SES
//! (ses-smtp.md §5.1).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::SmtpClient;
use crate::support::sim::*;
use mail_auth::common::crypto::Ed25519Key;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::{Canonicalization, DkimSigner};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

#[derive(Default)]
struct Dns(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for Dns {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().unwrap().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _valid_until: Instant) {
        self.0.lock().unwrap().insert(key, value);
    }
}

impl Dns {
    fn add_key(&self, name: &str, value: &str) {
        let key = DomainKey::parse(value.as_bytes()).unwrap();
        let txt = Txt::DomainKey(Arc::new(key));
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        self.insert(fqdn.into(), txt, Instant::now() + Duration::from_secs(3600));
    }
}

async fn verify(dns: &Dns, eml: &[u8]) -> Vec<(String, DkimResult)> {
    let auth = MessageAuthenticator::new_cloudflare().unwrap();
    let msg = AuthenticatedMessage::parse(eml).unwrap();
    let out = auth
        .verify_dkim(Parameters::new(&msg).with_txt_cache(dns))
        .await;
    out.iter()
        .map(|o| {
            (
                o.signature().map(|s| s.d.clone()).unwrap_or_default(),
                o.result().clone(),
            )
        })
        .collect()
}

fn client_signature(key_pkcs8: &[u8], message: &[u8], headers: &[&str]) -> String {
    let key = Ed25519Key::from_pkcs8_der(key_pkcs8).unwrap();
    let sig = DkimSigner::from_key(key)
        .domain("example.org")
        .selector("s2026a")
        .headers(headers.iter().map(|h| h.to_string()))
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
        .sign(message)
        .unwrap();
    sig.to_header()
}

#[tokio::test]
async fn signatures_after_ses_rewrites() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(settings(dir.path())).await;
    let dns = Dns::default();
    dns.add_key(&sim.ses_dkim_record.0, &sim.ses_dkim_record.1);
    let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
    let public = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap().public_key();
    use base64::Engine;
    dns.add_key(
        "s2026a._domainkey.example.org",
        &format!(
            "v=DKIM1; k=ed25519; p={}",
            base64::engine::general_purpose::STANDARD.encode(public)
        ),
    );

    let body = "From: App <app@example.org>\r\nTo: user@dest.test\r\nSubject: Report\r\n\
Message-ID: <orig@client.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
X-SES-CONFIGURATION-SET: cs\r\n\r\nHello.\r\n";
    let mut c = SmtpClient::sim_ready(&sim).await;
    let mut ids = Vec::new();
    for headers in [
        &["From", "To", "Subject"][..],
        &["From", "To", "Subject", "Message-ID", "Date"][..],
    ] {
        let sig = client_signature(&pkcs8, body.as_bytes(), headers);
        let msg = format!("{sig}{body}");
        let r = c
            .message("app@example.org", &["user@dest.test"], msg.as_bytes())
            .await;
        assert_eq!(r.code, 250, "{r:?}");
        ids.push(r.lines[0].strip_prefix("Ok ").unwrap().to_string());
    }

    let eml = std::fs::read(sim.outbox.join(format!("{}.eml", ids[0]))).unwrap();
    let results = verify(&dns, &eml).await;
    assert_eq!(results.len(), 2, "{results:?}");
    for (d, r) in &results {
        assert_eq!(*r, DkimResult::Pass, "d={d}: {results:?}");
    }
    assert!(results.iter().any(|(d, _)| d == "amazonses.com"));

    let eml = std::fs::read(sim.outbox.join(format!("{}.eml", ids[1]))).unwrap();
    let results = verify(&dns, &eml).await;
    let ses = results.iter().find(|(d, _)| d == "amazonses.com").unwrap();
    assert_eq!(ses.1, DkimResult::Pass);
    let client = results.iter().find(|(d, _)| d == "example.org").unwrap();
    assert_ne!(
        client.1,
        DkimResult::Pass,
        "signing Message-ID/Date must break through SES"
    );
}
