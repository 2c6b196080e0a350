//! End-to-end: a client talks SMTP to the relay over a real socket; the relay signs and relays
//! over real TLS to the SES simulator (scripted faults, recording); signatures are checked by mail-auth and by dkimpy.

use crate::support::*;

type Msg = Vec<u8>;

fn simple_message(from: &str, subject: &str) -> Msg {
    format!(
        "From: {from}\r\nTo: rcpt@example.com\r\nSubject: {subject}\r\nMessage-ID: <m1@app.test>\r\nDate: Sun, 22 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello from the test.\r\n"
    )
    .into_bytes()
}

async fn setup(options: UpstreamOptions) -> (Upstream, TestRelay) {
    let upstream = Upstream::start(options).await;
    let relay = TestRelay::start(RelayOptions::for_upstream(&upstream)).await;
    (upstream, relay)
}

async fn setup_default() -> (Upstream, TestRelay) {
    setup(UpstreamOptions::default()).await
}

fn assert_ok_id(r: &dkim_relay::smtp::reply::Reply) {
    assert_eq!(r.code, 250, "expected 250 Ok <id>, got {r}");
    let line = &r.lines[0];
    let id = line
        .strip_prefix("Ok ")
        .unwrap_or_else(|| panic!("not `Ok <id>`: {r}"));
    assert!(
        id.starts_with("010001") && id.ends_with("-000000"),
        "id: {id}"
    );
}

// ----------------------------------------------------------------------------------------------
// Signing
// ----------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signature_verifies_with_mail_auth_and_dkimpy() {
    let (upstream, relay) = setup_default().await;
    let r = relay
        .send(
            "app@whatever.test",
            &["rcpt@example.com"],
            &simple_message("App <app@example.org>", "rsa"),
        )
        .await;
    assert_ok_id(&r);
    let got = upstream.received();
    assert_eq!(got.len(), 1);
    let msg = &got[0].data;
    let sigs = header_values(msg, "DKIM-Signature");
    assert_eq!(sigs.len(), 1);
    assert_eq!(dkim_tag(&sigs[0], "a").as_deref(), Some("rsa-sha256"));
    assert_eq!(dkim_tag(&sigs[0], "d").as_deref(), Some("example.org"));
    assert_eq!(dkim_tag(&sigs[0], "s").as_deref(), Some("s1"));
    assert_eq!(dkim_tag(&sigs[0], "c").as_deref(), Some("relaxed/relaxed"));
    assert_dkim_pass(msg, &relay.dns(), 1).await;
    // Upstream session facts: TLS, authenticated as the configured user.
    assert!(got[0].tls);
    assert_eq!(got[0].auth_user.as_deref(), Some("AKIAEXAMPLETEST"));
    assert!(!upstream.plaintext_auth_seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_only_domain_under_ses_profile_verifies() {
    let (upstream, relay) = setup_default().await;
    // example.net is Ed25519-only: it loads under the SES profile with a warning.
    let snap = relay.live.snapshot();
    assert!(
        snap.warnings
            .iter()
            .any(|w| w.key.contains("example.net") && w.message.contains("Ed25519")),
        "warnings: {:?}",
        snap.warnings
    );
    let r = relay
        .send(
            "app@x.test",
            &["rcpt@example.com"],
            &simple_message("app@example.net", "ed25519"),
        )
        .await;
    assert_ok_id(&r);
    let got = upstream.received();
    assert_eq!(got[0].mail_from, "app@mail.example.net");
    let msg = &got[0].data;
    let sigs = header_values(msg, "DKIM-Signature");
    assert_eq!(sigs.len(), 1);
    assert_eq!(dkim_tag(&sigs[0], "a").as_deref(), Some("ed25519-sha256"));
    assert_eq!(dkim_tag(&sigs[0], "d").as_deref(), Some("example.net"));
    assert_dkim_pass(msg, &relay.dns(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_profile_signs_rsa_and_ed25519_both_verify() {
    // Two DKIM-Signature fields are what SES refuses (`554 … Duplicate header`); the generic
    // profile is for other upstreams, so this one answers as a generic server would.
    let upstream = Upstream::start(UpstreamOptions {
        finals: vec![Final::Reply(GENERIC_OK.into())],
        ..Default::default()
    })
    .await;
    let mut opts = RelayOptions::for_upstream(&upstream);
    opts.profile = "generic";
    let relay = TestRelay::start(opts).await;
    let r = relay
        .send(
            "app@x.test",
            &["rcpt@example.com"],
            &simple_message("app@example.org", "dual"),
        )
        .await;
    assert_ok_id(&r);
    let msg = &upstream.received()[0].data;
    let sigs = header_values(msg, "DKIM-Signature");
    let mut algs: Vec<String> = sigs.iter().filter_map(|s| dkim_tag(s, "a")).collect();
    algs.sort();
    assert_eq!(algs, vec!["ed25519-sha256", "rsa-sha256"]);
    assert_dkim_pass(msg, &relay.dns(), 2).await;
}

// ----------------------------------------------------------------------------------------------
// Envelope and header policy
// ----------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_sender_is_rewritten_keep_and_null() {
    let (upstream, relay) = setup_default().await;
    let msg = simple_message("app@example.org", "env");
    assert_ok_id(
        &relay
            .send(
                "app@whatever.test",
                &["a@example.com", "b@example.com"],
                &msg,
            )
            .await,
    );
    assert_ok_id(&relay.send("", &["a@example.com"], &msg).await);
    let got = upstream.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].mail_from, "app@mail.example.org");
    assert_eq!(got[0].rcpts, vec!["a@example.com", "b@example.com"]);
    assert_eq!(got[1].mail_from, "bounce@mail.example.org");
    assert_eq!(got[1].rcpts, vec!["a@example.com"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_local_part_fixed_mailbox() {
    let upstream = Upstream::start(UpstreamOptions::default()).await;
    let mut opts = RelayOptions::for_upstream(&upstream);
    opts.envelope_local_part = Some("bounce".into());
    let relay = TestRelay::start(opts).await;
    let msg = simple_message("app@example.org", "env");
    assert_ok_id(
        &relay
            .send("app@whatever.test", &["a@example.com"], &msg)
            .await,
    );
    assert_eq!(upstream.received()[0].mail_from, "bounce@mail.example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ses_header_policy_one_signature_no_return_path_oversigned_from() {
    let (upstream, relay) = setup_default().await;
    let msg = b"Return-Path: <evil@evil.test>\r\n\
DKIM-Signature: v=1; a=rsa-sha256; d=evil.test; s=old; h=from; bh=AAAA; b=BBBB\r\n\
From: App <app@example.org>\r\n\
To: rcpt@example.com\r\n\
Subject: policy\r\n\
Message-ID: <p1@app.test>\r\n\
Date: Sun, 22 Nov 2026 12:00:00 +0000\r\n\
\r\n\
body\r\n";
    assert_ok_id(&relay.send("app@x.test", &["rcpt@example.com"], msg).await);
    let out = &upstream.received()[0].data;
    let text = String::from_utf8_lossy(out);
    assert!(
        !text.contains("evil.test"),
        "old signature / Return-Path survived:\n{text}"
    );
    assert!(header_values(out, "Return-Path").is_empty());
    let sigs = header_values(out, "DKIM-Signature");
    assert_eq!(sigs.len(), 1, "{text}");
    let h = signed_header_list(&sigs[0]);
    assert!(!h.contains(&"message-id".to_string()), "h={h:?}");
    assert!(!h.contains(&"date".to_string()), "h={h:?}");
    let from_in_msg = header_values(out, "From").len();
    assert_eq!(from_in_msg, 1);
    assert_eq!(
        h.iter().filter(|n| *n == "from").count(),
        from_in_msg + 1,
        "From must be oversigned: h={h:?}"
    );
    // The signature comes first.
    assert!(
        header_fields(out)[0]
            .0
            .eq_ignore_ascii_case("DKIM-Signature")
    );
    assert_dkim_pass(out, &relay.dns(), 1).await;
}

// ----------------------------------------------------------------------------------------------
// Upstream replies reach the client verbatim
// ----------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_replies_are_passed_through_verbatim() {
    let throttle = "454 Throttling failure: Maximum sending rate exceeded.";
    let unverified = "554 Message rejected: Email address is not verified. The following identities failed the check in region US-EAST-1: app@example.org";
    let (upstream, relay) = setup(UpstreamOptions {
        finals: vec![
            Final::Ok,
            Final::Reply(throttle.into()),
            Final::Reply(unverified.into()),
        ],
        ..Default::default()
    })
    .await;
    let msg = simple_message("app@example.org", "verbatim");
    let mut c = SmtpClient::connect(relay.addr).await;
    let r1 = c.transaction("app@x.test", &["r@example.com"], &msg).await;
    let r2 = c.transaction("app@x.test", &["r@example.com"], &msg).await;
    let r3 = c.transaction("app@x.test", &["r@example.com"], &msg).await;
    c.quit().await;
    let got = upstream.received();
    assert_eq!(got.len(), 3);
    assert_eq!(wire_text(&r1), got[0].reply);
    assert_ok_id(&r1);
    assert_eq!(wire_text(&r2), throttle);
    assert_eq!(wire_text(&r3), unverified);
}

// ----------------------------------------------------------------------------------------------
// Refusals: nothing forwarded
// ----------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_refusals_forward_nothing() {
    let (upstream, relay) = setup_default().await;
    let unknown = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@unknown-domain.test", "x"),
        )
        .await;
    assert_eq!(unknown.code, 550, "{unknown}");
    assert_eq!(unknown.enhanced(), Some("5.7.1"));
    assert!(
        unknown.lines[0].contains("unknown-domain.test"),
        "{unknown}"
    );

    let cases: [(&str, &[u8]); 3] = [
        (
            "no From",
            b"To: r@example.com\r\nSubject: x\r\n\r\nbody\r\n",
        ),
        (
            "two From fields",
            b"From: a@example.org\r\nFrom: b@example.org\r\nSubject: x\r\n\r\nbody\r\n",
        ),
        (
            "two addresses in From",
            b"From: a@example.org, b@example.org\r\nSubject: x\r\n\r\nbody\r\n",
        ),
    ];
    for (what, msg) in cases {
        let r = relay.send("app@x.test", &["r@example.com"], msg).await;
        assert_eq!(r.code, 550, "{what}: {r}");
        assert_eq!(r.enhanced(), Some("5.6.0"), "{what}: {r}");
    }
    // A subdomain of a configured domain is not covered unless `subdomains = true`.
    let sub = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@news.example.org", "x"),
        )
        .await;
    assert_eq!(sub.code, 550, "{sub}");
    assert_eq!(sub.enhanced(), Some("5.7.1"));
    assert!(sub.lines[0].contains("news.example.org"), "{sub}");
    assert_eq!(upstream.received().len(), 0);
    assert_eq!(
        upstream.connections(),
        0,
        "nothing should reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_refusals_forward_nothing() {
    let (upstream, relay) = setup_default().await;
    let mut c = SmtpClient::connect(relay.addr).await;
    // A bare LF inside the message (the SMTP-smuggling shape): refused, never relayed.
    assert_eq!(c.cmd("MAIL FROM:<app@x.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<r@example.com>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(
        b"From: app@example.org\r\nSubject: x\r\n\r\nline\n.\nMAIL FROM:<x@evil.test>\r\n.\r\n",
    )
    .await;
    let r = c.read_reply().await.expect("reply");
    assert_eq!(r.code, 554, "{r}");
    assert_eq!(r.enhanced(), Some("5.6.0"));
    // A 999-octet line.
    let mut long = simple_message("app@example.org", "x");
    long.extend_from_slice(&[b'y'; 999]);
    long.extend_from_slice(b"\r\n");
    let r = c.transaction("app@x.test", &["r@example.com"], &long).await;
    assert_eq!(r.code, 554, "{r}");
    assert_eq!(r.enhanced(), Some("5.6.0"));
    // The session still works after both.
    let ok = c
        .transaction(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "ok"),
        )
        .await;
    assert_ok_id(&ok);
    c.quit().await;
    let got = upstream.received();
    assert_eq!(got.len(), 1, "only the good message is relayed");
    assert!(!String::from_utf8_lossy(&got[0].data).contains("evil.test"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_first_recipient_is_refused() {
    let (upstream, relay) = setup_default().await;
    let mut c = SmtpClient::connect(relay.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<app@x.test>").await.code, 250);
    for i in 0..50 {
        let r = c.cmd(&format!("RCPT TO:<r{i}@example.com>")).await;
        assert_eq!(r.code, 250, "rcpt {i}: {r}");
    }
    let r = c.cmd("RCPT TO:<r50@example.com>").await;
    assert_eq!(r.code, 452, "{r}");
    assert_eq!(r.enhanced(), Some("4.5.3"));
    assert_eq!(c.cmd("RSET").await.code, 250);
    c.quit().await;
    assert_eq!(upstream.received().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused_after_full_data() {
    let upstream = Upstream::start(UpstreamOptions::default()).await;
    let mut opts = RelayOptions::for_upstream(&upstream);
    opts.max_message_size = Some(10_000);
    let relay = TestRelay::start(opts).await;
    let mut msg = simple_message("app@example.org", "big");
    for _ in 0..400 {
        msg.extend_from_slice(b"0123456789012345678901234567890123456789012345678\r\n");
    }
    assert!(msg.len() > 20_000);
    let mut c = SmtpClient::connect(relay.addr).await;
    // `transaction` writes the whole message before reading the reply.
    let r = c.transaction("app@x.test", &["r@example.com"], &msg).await;
    assert_eq!(r.code, 552, "{r}");
    assert_eq!(r.enhanced(), Some("5.3.4"));
    // The session is still usable afterwards.
    assert_eq!(c.cmd("NOOP").await.code, 250);
    c.quit().await;
    assert_eq!(upstream.received().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_unreachable_is_temporary() {
    let port = closed_port().await;
    let relay = TestRelay::start(RelayOptions {
        upstream_port: port,
        tls: "starttls",
        ca_pem: unrelated_ca_pem(),
        username: "AKIAEXAMPLETEST".into(),
        password: "x".into(),
        profile: "ses",
        envelope_local_part: None,
        max_message_size: None,
        upstream_data_timeout_secs: None,
        upstream_extra: toml::Table::new(),
        server_extra: toml::Table::new(),
        users: Vec::new(),
        listener_tls: ListenerTls::None,
    })
    .await;
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "x"),
        )
        .await;
    assert_eq!(r.code, 451, "{r}");
    assert_eq!(r.enhanced(), Some("4.4.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_is_temporary_and_no_auth_is_sent() {
    let (upstream, relay) = setup(UpstreamOptions {
        tls: TlsKind::Untrusted,
        ..Default::default()
    })
    .await;
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "x"),
        )
        .await;
    assert!(r.is_transient(), "{r}");
    assert_eq!(r.enhanced(), Some("4.7.5"), "{r}");
    assert!(upstream.connections() >= 1);
    let cmds: Vec<String> = upstream.commands().iter().map(|c| c.line.clone()).collect();
    assert!(cmds.iter().any(|c| c == "STARTTLS"), "{cmds:?}");
    assert!(!upstream.auth_seen(), "AUTH sent: {cmds:?}");
    assert!(!cmds.iter().any(|c| c.starts_with("MAIL")), "{cmds:?}");
    assert_eq!(upstream.received().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_starttls_offered_is_temporary_and_no_auth_is_sent() {
    let (upstream, relay) = setup(UpstreamOptions {
        tls: TlsKind::NoStartTls,
        ..Default::default()
    })
    .await;
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "x"),
        )
        .await;
    assert!(r.is_transient(), "{r}");
    assert_eq!(r.enhanced(), Some("4.7.5"), "{r}");
    let cmds = upstream.commands();
    assert!(!cmds.is_empty());
    assert!(cmds.iter().all(|c| !c.tls));
    assert!(!upstream.auth_seen(), "{cmds:?}");
    assert!(!cmds.iter().any(|c| c.line.starts_with("MAIL")), "{cmds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_give_454_4_7_0() {
    let upstream = Upstream::start(UpstreamOptions::default()).await;
    let mut opts = RelayOptions::for_upstream(&upstream);
    opts.password = "wrong-password".into();
    let relay = TestRelay::start(opts).await;
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "x"),
        )
        .await;
    assert_eq!(r.code, 454, "{r}");
    assert_eq!(r.enhanced(), Some("4.7.0"));
    let cmds = upstream.commands();
    assert!(cmds.iter().any(|c| c.tls && c.line.starts_with("AUTH")));
    assert!(!upstream.plaintext_auth_seen());
    assert!(!cmds.iter().any(|c| c.line.starts_with("MAIL")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_login_is_used_when_plain_is_not_offered() {
    let (upstream, relay) = setup(UpstreamOptions {
        auth_mechs: "LOGIN".into(),
        ..Default::default()
    })
    .await;
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "login"),
        )
        .await;
    assert_ok_id(&r);
    assert!(upstream.commands().iter().any(|c| c.line == "AUTH LOGIN"));
    assert_eq!(
        upstream.received()[0].auth_user.as_deref(),
        Some("AKIAEXAMPLETEST")
    );
}

// ----------------------------------------------------------------------------------------------
// Transport: implicit TLS, pooling, retry
// ----------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn implicit_tls_upstream_works() {
    let (upstream, relay) = setup(UpstreamOptions {
        tls: TlsKind::Implicit,
        ..Default::default()
    })
    .await;
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "implicit"),
        )
        .await;
    assert_ok_id(&r);
    let got = upstream.received();
    assert!(got[0].tls);
    assert!(upstream.commands().iter().all(|c| c.tls));
    assert!(!upstream.commands().iter().any(|c| c.line == "STARTTLS"));
    assert_dkim_pass(&got[0].data, &relay.dns(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connection_is_reused_with_rset() {
    let (upstream, relay) = setup_default().await;
    let msg = simple_message("app@example.org", "pool");
    assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    assert_eq!(upstream.connections(), 1);
    let got = upstream.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].conn, 0);
    assert_eq!(got[1].conn, 0);
    let lines: Vec<String> = upstream
        .commands()
        .into_iter()
        .filter(|c| c.tls)
        .map(|c| c.line.split(' ').next().unwrap_or("").to_ascii_uppercase())
        .filter(|v| matches!(v.as_str(), "MAIL" | "RSET" | "DATA"))
        .collect();
    assert_eq!(lines, vec!["MAIL", "DATA", "RSET", "MAIL", "DATA"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_pooled_connection_next_message_uses_fresh_one() {
    let (upstream, relay) = setup(UpstreamOptions {
        finals: vec![Final::OkThenClose],
        ..Default::default()
    })
    .await;
    let msg = simple_message("app@example.org", "drop");
    assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    let got = upstream.received();
    assert_eq!(got.len(), 2);
    assert_eq!(upstream.connections(), 2);
    assert_eq!(got[1].conn, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connection_dying_at_mail_is_retried_on_fresh_connection() {
    let (upstream, relay) = setup_default().await;
    let msg = simple_message("app@example.org", "retry");
    assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    // RSET on the pooled connection succeeds; then the connection dies at MAIL.
    upstream.drop_on_next_mail(1);
    assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    let got = upstream.received();
    assert_eq!(got.len(), 2);
    assert_eq!(upstream.connections(), 2);
    assert_eq!((got[0].conn, got[1].conn), (0, 1));
    assert_dkim_pass(&got[1].data, &relay.dns(), 1).await;
}

/// SES caps messages per connection and says so at MAIL with a 421 before closing. Nothing was
/// accepted, so the message must go out on a fresh connection rather than bounce back to the
/// client as a 421 (which to an SMTP client means "this channel is closing").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_session_cap_421_at_mail_is_retried_on_fresh_connection() {
    let (upstream, relay) = setup_default().await;
    let msg = simple_message("app@example.org", "cap");
    assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    upstream.reply_to_next_mail_then_close(
        "421 Connection closed by server. Maximum message count per session reached.",
    );
    let r = relay.send("app@x.test", &["r@example.com"], &msg).await;
    assert_ok_id(&r);
    let got = upstream.received();
    assert_eq!(got.len(), 2);
    assert_eq!(upstream.connections(), 2);
    assert_eq!((got[0].conn, got[1].conn), (0, 1));
}

/// SES caps messages per connection: the pool rotates a connection after
/// `max_messages_per_connection` messages instead of waiting for SES's 421.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_rotates_connections_after_the_message_cap() {
    let upstream = Upstream::start(UpstreamOptions::default()).await;
    let mut options = RelayOptions::for_upstream(&upstream);
    options.upstream_extra = toml::toml! { max_messages_per_connection = 2 pool_size = 1 };
    let relay = TestRelay::start(options).await;
    let msg = simple_message("app@example.org", "rotate");
    for _ in 0..5 {
        assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    }
    let conns: Vec<usize> = upstream.received().iter().map(|r| r.conn).collect();
    assert_eq!(conns, vec![0, 0, 1, 1, 2]);
}

/// An upstream 421 after the message means the upstream is closing *its* connection. Passed on
/// as 421 it would tell the application that the relay is closing; it must arrive as a 451 with
/// the upstream's text, and the relay's connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_421_after_data_reaches_the_client_as_451() {
    let (upstream, relay) = setup(UpstreamOptions {
        finals: vec![Final::Reply("421 Service shutting down".into()), Final::Ok],
        ..Default::default()
    })
    .await;
    let mut client = SmtpClient::connect(relay.addr).await;
    client.cmd("EHLO app.test").await;
    let msg = simple_message("app@example.org", "421");
    let r = client
        .transaction("app@x.test", &["r@example.com"], &msg)
        .await;
    assert_eq!(r.code, 451, "{r}");
    assert_eq!(r.lines, vec!["Service shutting down".to_string()]);
    // Same client connection, next message: delivered.
    assert_ok_id(
        &client
            .transaction("app@x.test", &["r@example.com"], &msg)
            .await,
    );
    assert_eq!(upstream.received().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_at_end_of_data_is_temporary_and_not_retried() {
    let (upstream, relay) = setup(UpstreamOptions {
        finals: vec![Final::Drop],
        ..Default::default()
    })
    .await;
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "eod drop"),
        )
        .await;
    assert!(r.is_transient(), "{r}");
    // Never re-sent: the upstream may have accepted it.
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(upstream.connections(), 1);
}

// ----------------------------------------------------------------------------------------------
// Message shapes
// ----------------------------------------------------------------------------------------------

fn shapes() -> Vec<(&'static str, Msg)> {
    let long_to: String = (0..40)
        .map(|i| format!("user{i}@example.com"))
        .collect::<Vec<_>>()
        .join(", ");
    // "X-Long: " is 8 octets: this line is exactly 998, the most RFC 5321 allows.
    let long_subject = "x".repeat(990);
    vec![
        (
            "multipart MIME",
            b"From: app@example.org\r\nTo: r@example.com\r\nSubject: multipart\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n\
--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain part\r\n\
--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html part</p>\r\n--b1--\r\n"
                .to_vec(),
        ),
        (
            "8-bit UTF-8 body",
            "From: app@example.org\r\nTo: r@example.com\r\nSubject: 8bit\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Grüße aus Köln — ünïcødé ✓ 日本語\r\n"
                .as_bytes()
                .to_vec(),
        ),
        (
            "folded and long headers",
            format!(
                "From: app@example.org\r\nTo: {long_to}\r\nSubject: folded\r\n  over\r\n\tthree lines\r\n\
X-Long: {long_subject}\r\n\r\nbody\r\n"
            )
            .into_bytes(),
        ),
        (
            "odd header case",
            b"fROM: app@example.org\r\nTO: r@example.com\r\nsubject: odd case\r\n\r\nbody\r\n".to_vec(),
        ),
        (
            "empty body",
            b"From: app@example.org\r\nTo: r@example.com\r\nSubject: empty\r\n\r\n".to_vec(),
        ),
        (
            "body without final CRLF",
            b"From: app@example.org\r\nTo: r@example.com\r\nSubject: no crlf\r\n\r\nlast line".to_vec(),
        ),
        (
            "leading dots",
            b"From: app@example.org\r\nTo: r@example.com\r\nSubject: dots\r\n\r\n.hidden\r\n..double\r\n.\r\n. \r\nend\r\n"
                .to_vec(),
        ),
        (
            "From domain in upper case, encoded-word display name",
            b"From: =?utf-8?q?J=C3=BCrgen_App?= <App@EXAMPLE.ORG>\r\nTo: r@example.com\r\nSubject: case\r\n\r\nbody\r\n"
                .to_vec(),
        ),
        (
            "header section only, no body separator",
            b"From: app@example.org\r\nTo: r@example.com\r\nSubject: headers only\r\n".to_vec(),
        ),
        (
            "empty header value and trailing whitespace",
            b"From: app@example.org \r\nTo: r@example.com\r\nSubject:\r\nX-Trailing: a  \t\r\n\r\nbody  \r\n\r\n\r\n".to_vec(),
        ),
        (
            // Comments are refused since issue 9 (one meaning for From; see from_policy.rs).
            "From with quoted display name and quoted local part",
            b"From: \"Example, App\" <\"first.last+tag\"@example.org>\r\nTo: r@example.com\r\nSubject: display\r\n\r\nbody\r\n"
                .to_vec(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_shapes_are_signed_and_verify() {
    let (upstream, relay) = setup_default().await;
    let dns = relay.dns();
    let shapes = shapes();
    let mut c = SmtpClient::connect(relay.addr).await;
    for (i, (what, msg)) in shapes.iter().enumerate() {
        let r = c.transaction("app@x.test", &["r@example.com"], msg).await;
        assert_eq!(r.code, 250, "{what}: {r}");
        let got = upstream.received();
        assert_eq!(got.len(), i + 1, "{what}");
        let out = &got[i].data;
        assert_eq!(header_values(out, "DKIM-Signature").len(), 1, "{what}");
        assert_mail_auth_pass(out, &dns, 1).await;
        assert_dkimpy_pass(out, &dns);
        // The upstream sees the message itself after the signature field.
        let sig_end = {
            let text = out.as_slice();
            let fields = header_fields(text);
            assert!(fields[0].0.eq_ignore_ascii_case("DKIM-Signature"), "{what}");
            // Skip the signature field (its folded lines) to compare the rest byte for byte.
            let s = String::from_utf8_lossy(text);
            let mut pos = 0;
            for (n, line) in s.split_inclusive("\r\n").enumerate() {
                if n > 0 && !line.starts_with([' ', '\t']) {
                    break;
                }
                pos += line.len();
            }
            pos
        };
        let mut expected = msg.clone();
        if !expected.ends_with(b"\r\n") {
            expected.extend_from_slice(b"\r\n");
        }
        if !expected.windows(4).any(|w| w == b"\r\n\r\n") {
            // A header-only message gains the empty separator line (same message, RFC 5322).
            expected.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            String::from_utf8_lossy(&out[sig_end..]),
            String::from_utf8_lossy(&expected),
            "{what}: content changed in transit"
        );
    }
    c.quit().await;
    let long = shapes
        .iter()
        .position(|(w, _)| w.starts_with("folded"))
        .unwrap();
    let longest = upstream.received()[long]
        .data
        .split(|&b| b == b'\n')
        .map(|l| l.len())
        .max()
        .unwrap();
    assert_eq!(
        longest,
        998 + 1,
        "the 998-octet header line (plus its CR) arrives intact"
    );
    // Dot-stuffing both ways: the upstream got the original dots.
    let dots_index = shapes
        .iter()
        .position(|(w, _)| *w == "leading dots")
        .unwrap();
    let dots = &upstream.received()[dots_index].data;
    let text = String::from_utf8_lossy(dots);
    assert!(
        text.contains("\r\n\r\n.hidden\r\n..double\r\n.\r\n. \r\nend\r\n"),
        "{text}"
    );
}

// ----------------------------------------------------------------------------------------------
// Lifecycle: shutdown, reload
// ----------------------------------------------------------------------------------------------

/// Signals shutdown and waits (bounded) until it has fully taken effect: the listener is
/// closed and an idle session (`witness`) was told 421.
async fn shut_down_and_wait(relay: &mut TestRelay, mut witness: SmtpClient) {
    relay.signal_shutdown();
    let told = tokio::time::timeout(std::time::Duration::from_secs(10), witness.read_reply())
        .await
        .expect("idle session was not told about the shutdown");
    let told = told.expect("idle session closed without a reply");
    assert_eq!(told.code, 421, "{told}");
    assert_eq!(told.enhanced(), Some("4.3.2"));
    let mut refused = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(relay.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(refused, "new connections still accepted after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_transaction_in_flight_then_refuses() {
    let (upstream, mut relay) = setup_default().await;
    let mut c = SmtpClient::connect(relay.addr).await;
    let witness = SmtpClient::connect(relay.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<app@x.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<r@example.com>").await.code, 250);
    shut_down_and_wait(&mut relay, witness).await;
    let r = c
        .data(&simple_message("app@example.org", "in flight"))
        .await;
    assert_ok_id(&r);
    // After the transaction the session is told the service is going away.
    let next = c.cmd("NOOP").await;
    assert_eq!(next.code, 421, "{next}");
    let stopped = relay.stopped().await;
    assert_eq!(stopped.aborted, 0);
    assert_eq!(upstream.received().len(), 1);
    assert_dkim_pass(&upstream.received()[0].data, &relay.dns(), 1).await;
}

/// Regression: a command pipelined behind the in-flight message used to be processed after
/// shutdown had begun (and the shutdown/read race was decided at random), so a new
/// transaction could start during the drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_start_pipelined_new_transaction() {
    let (upstream, mut relay) = setup_default().await;
    let mut c = SmtpClient::connect(relay.addr).await;
    let witness = SmtpClient::connect(relay.addr).await;
    assert_eq!(c.cmd("MAIL FROM:<app@x.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<r@example.com>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    shut_down_and_wait(&mut relay, witness).await;
    let mut wire =
        dkim_relay::upstream::framing::dot_stuff(&simple_message("app@example.org", "x"));
    wire.extend_from_slice(b"MAIL FROM:<app@x.test>\r\nRCPT TO:<r@example.com>\r\n");
    c.send_raw(&wire).await;
    let r = c.read_reply().await.expect("reply to the message");
    assert_ok_id(&r);
    let next = c.read_reply().await.expect("reply to the pipelined MAIL");
    assert_eq!(next.code, 421, "{next}");
    assert!(
        c.read_reply().await.is_none(),
        "connection should be closed"
    );
    assert_eq!(relay.stopped().await.aborted, 0);
    assert_eq!(upstream.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reload_keeps_the_running_configuration() {
    let (upstream, relay) = setup_default().await;
    let before = relay.live.snapshot();
    std::fs::write(
        &relay.config_path,
        "[server]\nlisten = \"127.0.0.1:0\"\n[domains.\"example.org\"]\nsign = [\"nope\"]\n",
    )
    .unwrap();
    let errors = relay
        .live
        .reload()
        .expect_err("broken config must not load");
    assert!(!errors.is_empty());
    let after = relay.live.snapshot();
    assert!(
        std::sync::Arc::ptr_eq(&before, &after),
        "snapshot was replaced"
    );
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "after reload"),
        )
        .await;
    assert_ok_id(&r);
    assert_dkim_pass(&upstream.received()[0].data, &relay.dns(), 1).await;
}

// ----------------------------------------------------------------------------------------------
// The verifiers themselves can fail
// ----------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifiers_reject_a_tampered_message() {
    let (upstream, relay) = setup_default().await;
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "tamper"),
        )
        .await;
    assert_ok_id(&r);
    let good = upstream.received()[0].data.clone();
    let text = String::from_utf8(good).unwrap();
    let tampered = text.replace("Hello from the test.", "Hello from the TEST.");
    assert_ne!(text, tampered);
    let verdicts = verify_dkim_mail_auth(tampered.as_bytes(), &relay.dns()).await;
    assert_eq!(verdicts.len(), 1);
    assert_ne!(verdicts[0].result, "pass", "{verdicts:?}");
    if dkimpy_available() {
        assert!(verify_dkim_dkimpy(tampered.as_bytes(), &relay.dns()).is_err());
        // A wrong key in DNS fails too.
        let mut wrong = relay.dns();
        wrong[0].1 = wrong[1].1.clone();
        assert!(verify_dkim_dkimpy(text.as_bytes(), &wrong).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_reload_applies_to_new_sessions_and_keeps_the_pool() {
    let (upstream, relay) = setup_default().await;
    let msg = simple_message("app@example.org", "reload");
    assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    // Same upstream, new envelope policy.
    let mut opts = RelayOptions::for_upstream(&upstream);
    opts.envelope_local_part = Some("bounce".into());
    let text = TestRelay::config_text(&opts, relay.dir.path());
    std::fs::write(&relay.config_path, text).unwrap();
    let fresh = relay.live.reload().expect("valid config reloads");
    assert!(std::sync::Arc::ptr_eq(&fresh, &relay.live.snapshot()));
    assert_ok_id(&relay.send("app@x.test", &["r@example.com"], &msg).await);
    let got = upstream.received();
    assert_eq!(got[0].mail_from, "app@mail.example.org");
    assert_eq!(got[1].mail_from, "bounce@mail.example.org");
    assert_eq!(
        upstream.connections(),
        1,
        "unchanged upstream settings keep the pool"
    );
    assert_dkim_pass(&got[1].data, &relay.dns(), 1).await;
}

/// An independent SMTP client (swaks) against the relay; skipped when swaks is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_client_message_is_signed_and_verifies() {
    if std::process::Command::new("swaks")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("note: swaks not installed; test skipped");
        return;
    }
    let (upstream, relay) = setup_default().await;
    let addr = relay.addr;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("swaks")
            .args([
                "--server",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
                "--helo",
                "swaks.test",
                "--from",
                "app@whatever.test",
                "--to",
                "rcpt@example.com",
                "--header",
                "From: Swaks App <app@example.org>",
                "--header",
                "Subject: via swaks",
                "--body",
                "Hello from swaks.\n.leading dot\n",
            ])
            .output()
            .expect("run swaks")
    })
    .await
    .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks failed:\n{transcript}");
    assert!(transcript.contains("<-  250 Ok 010001"), "{transcript}");
    let got = upstream.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].mail_from, "app@mail.example.org");
    assert!(String::from_utf8_lossy(&got[0].data).contains("\r\n.leading dot\r\n"));
    assert_dkim_pass(&got[0].data, &relay.dns(), 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_share_a_bounded_pool() {
    let (upstream, relay) = setup_default().await;
    let relay = std::sync::Arc::new(relay);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let relay = std::sync::Arc::clone(&relay);
        tasks.push(tokio::spawn(async move {
            let msg = simple_message("app@example.org", &format!("concurrent {i}"));
            relay.send("app@x.test", &["r@example.com"], &msg).await
        }));
    }
    for t in tasks {
        assert_ok_id(&t.await.unwrap());
    }
    let got = upstream.received();
    assert_eq!(got.len(), 8);
    // pool_size defaults to 16: at most one connection per concurrent message.
    assert!(
        upstream.connections() <= 8,
        "{} connections",
        upstream.connections()
    );
    let mut subjects: Vec<String> = got
        .iter()
        .map(|r| header_values(&r.data, "Subject")[0].trim().to_string())
        .collect();
    subjects.sort();
    let mut want: Vec<String> = (0..8).map(|i| format!("concurrent {i}")).collect();
    want.sort();
    assert_eq!(subjects, want);
    for r in &got {
        assert_mail_auth_pass(&r.data, &relay.dns(), 1).await;
    }
}

// The paused clock: the timeout fires as soon as nothing else can happen.
#[tokio::test(start_paused = true)]
async fn silent_upstream_times_out_with_451() {
    let upstream = Upstream::start(UpstreamOptions {
        finals: vec![Final::Silent],
        ..Default::default()
    })
    .await;
    let mut opts = RelayOptions::for_upstream(&upstream);
    opts.upstream_data_timeout_secs = Some(1);
    let relay = TestRelay::start(opts).await;
    let r = relay
        .send(
            "app@x.test",
            &["r@example.com"],
            &simple_message("app@example.org", "silent"),
        )
        .await;
    assert_eq!(r.code, 451, "{r}");
    assert_eq!(r.enhanced(), Some("4.4.2"));
    // Received once, never re-sent (it may have been accepted).
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(upstream.connections(), 1);
}
