//! Signing cost per message: a typical 2 KB message signed with RSA-2048 and with Ed25519,
//! through the relay's own signer (header list, relaxed canonicalization, one signature), and
//! the cost of the self-check before hand-off (`dkim::self_check`: the independent verifier
//! re-canonicalizes and checks the signature against the loaded public key) on its own.
//! Compare with `openssl speed rsa2048 ed25519` on the same machine (README, "Performance").
//!
//! Run: `cargo bench --bench sign`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use dkim_relay::config;
use dkim_relay::dkim::{self_check, signer};
use dkim_relay::message::headers::Message;

fn message() -> Vec<u8> {
    let mut m = String::from(
        "From: App <app@example.org>\r\nTo: user@example.net\r\nSubject: Your receipt\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Message-ID: <1@app.example.org>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\n",
    );
    while m.len() < 2048 {
        m.push_str("Thank you for your order. This line pads the body to a typical size.\r\n");
    }
    m.into_bytes()
}

fn snapshot(algorithm: &str, key: &str) -> config::Snapshot {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        "[upstream]\nsimulator = true\nprofile = \"generic\"\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s\"]\n\
         [domains.\"example.org\".selectors.s]\nalgorithm = \"{algorithm}\"\nkey_file = \"{root}/keys/example.org/{key}\"\n"
    );
    match config::load_str(Path::new("bench.toml"), &text) {
        Ok(s) => s,
        Err(e) => panic!("bench config: {e:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let bytes = message();
    for (name, algorithm, key) in [
        ("rsa-sha256 2048, 2 KB message", "rsa-sha256", "s2026a.pem"),
        (
            "ed25519-sha256, 2 KB message",
            "ed25519-sha256",
            "e2026a.pem",
        ),
    ] {
        let snap = snapshot(algorithm, key);
        let domain = snap.domains.get("example.org").cloned();
        let Some(domain) = domain else {
            panic!("no domain")
        };
        c.bench_function(name, |b| {
            b.iter(|| {
                let m = Message::parse(black_box(&bytes)).map_err(|e| e.to_string());
                let Ok(m) = m else { panic!("parse") };
                let sig = signer::sign(&domain, &m);
                black_box(sig.map(|s| s.len()).unwrap_or(0))
            })
        });
        // The self-check alone, over the signed message as it goes upstream.
        let Ok(m) = Message::parse(&bytes) else {
            panic!("parse")
        };
        let Ok(sigs) = signer::sign(&domain, &m) else {
            panic!("sign")
        };
        let signed = signer::with_signatures(sigs, m).to_bytes();
        c.bench_function(&format!("{name}: self-check"), |b| {
            b.iter(|| black_box(self_check::check(&domain, black_box(&signed)).is_ok()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
