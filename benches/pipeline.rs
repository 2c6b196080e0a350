//! Relay CPU per message, network excluded: parse → prepare (SES policy, envelope rewrite) →
//! DKIM sign (RSA-2048) → serialize what goes to the upstream, dot-stuffed, into a sink.
//! Two sizes, 2 KB and 100 KB, so the per-byte cost (copies, canonicalization, hashing,
//! stuffing) shows beside the fixed cost (the RSA signature). Issue 8 item 5 tracks both.

use std::hint::black_box;
use std::path::Path;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use dkim_relay::config;
use dkim_relay::dkim::signer;
use dkim_relay::message;
use dkim_relay::smtp::command::Mailbox;
use dkim_relay::smtp::envelope::Envelope;
use dkim_relay::upstream::framing::{self, Framer};

fn message(size: usize) -> Vec<u8> {
    let mut m = String::from(
        "From: App <app@example.org>\r\nTo: user@example.net\r\nSubject: Your receipt\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Message-ID: <1@app.example.org>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; d=app.example; s=x; h=from; bh=AA==; b=AA==\r\n\r\n",
    );
    let mut i = 0u32;
    while m.len() < size {
        // Some lines start with a dot, so stuffing has work to do.
        if i.is_multiple_of(16) {
            m.push_str(".dotted line that needs stuffing on the way out\r\n");
        }
        m.push_str("Thank you for your order. This line pads the body to a typical size.\r\n");
        i += 1;
    }
    m.into_bytes()
}

fn snapshot() -> config::Snapshot {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = format!(
        "[upstream]\nsimulator = true\nprofile = \"ses\"\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s\"]\n\
         configuration_set = \"bench-set\"\n\
         [domains.\"example.org\".selectors.s]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{root}/keys/example.org/s2026a.pem\"\n"
    );
    match config::load_str(Path::new("bench.toml"), &text) {
        Ok(s) => s,
        Err(e) => panic!("bench config: {e:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let snap = snapshot();
    let envelope = Envelope {
        mail_from: Some(Mailbox {
            local: "app".into(),
            domain: "example.org".into(),
        }),
        rcpts: vec![Mailbox {
            local: "user".into(),
            domain: "example.net".into(),
        }],
        submitter: None,
    };
    for (name, size) in [
        ("pipeline rsa-sha256 2048, 2 KB", 2 * 1024),
        ("pipeline rsa-sha256 2048, 100 KB", 100 * 1024),
    ] {
        let bytes = message(size);
        c.bench_function(name, |b| {
            b.iter_batched(
                || bytes.clone(),
                |data| {
                    let prepared = match message::prepare(
                        snap.upstream.profile,
                        |d| snap.domain_for(d).cloned(),
                        &envelope,
                        black_box(data),
                    ) {
                        Ok(p) => p,
                        Err(r) => panic!("prepare: {r:?}"),
                    };
                    let sigs = match signer::sign(&prepared.domain, &prepared.message) {
                        Ok(s) => s,
                        Err(e) => panic!("sign: {e}"),
                    };
                    let out = signer::with_signatures(sigs, prepared.message);
                    let parts = out.parts();
                    let framer = Framer::new(&parts, framing::CHUNK);
                    match framer.write_all_to(std::io::sink()) {
                        Ok(n) => black_box(n),
                        Err(e) => panic!("sink: {e}"),
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
