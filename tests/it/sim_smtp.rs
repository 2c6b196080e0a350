//! The SES simulator over real sockets and real TLS, driven by a scripted client: every reply
//! text of ses-smtp.md §3/§8, the limits, fault injection, the delivered form and the outbox.

use crate::support::SmtpClient;
use crate::support::sim::*;
use dkim_relay::sim::config::{DropStage, ScriptStep};
use dkim_relay::sim::outbox;
use dkim_relay::smtp::reply::Reply;

const UNVERIFIED: &str = "554 Message rejected: Email address is not verified. The following \
                          identities failed the check in region US-EAST-1: ";

#[tokio::test]
async fn banner_ehlo_and_tls_gates() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(settings(dir.path())).await;
    let mut c = SmtpClient::connect_sim(&sim).await;
    let banner = c.reply().await.unwrap();
    assert_eq!(banner.code, 220);
    let text = &banner.lines[0];
    let parts: Vec<&str> = text.split(' ').collect();
    assert_eq!(parts.len(), 4, "{text}");
    assert_eq!(parts[0], "email-smtp.amazonaws.com");
    assert_eq!(parts[1], "ESMTP");
    let fleet = parts[2].strip_prefix("SimpleEmailService-d-").unwrap();
    assert_eq!(fleet.len(), 9);
    assert!(
        fleet
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    );
    assert_eq!(parts[3].len(), 20);
    assert!(parts[3].bytes().all(|b| b.is_ascii_alphanumeric()));

    assert_eq!(
        c.cmd_text("EHLO client.test").await,
        "250-email-smtp.amazonaws.com\r\n250-8BITMIME\r\n250-STARTTLS\r\n\
         250-AUTH PLAIN LOGIN\r\n250 Ok\r\n"
    );
    assert_eq!(
        c.cmd_text("AUTH LOGIN").await,
        "530 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(
        c.cmd_text("MAIL FROM:<app@example.org>").await,
        "530 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(c.cmd_text("NOOP").await, "250 Ok\r\n");
    c.starttls_ses().await;
    assert_eq!(
        c.cmd_text("EHLO client.test").await,
        "250-email-smtp.amazonaws.com\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 Ok\r\n"
    );
    assert_eq!(
        c.cmd_text("MAIL FROM:<app@example.org>").await,
        "530 Authentication required\r\n"
    );
    assert_eq!(c.cmd_text("RSET").await, "250 Ok\r\n");
    assert_eq!(c.cmd_text("QUIT").await, "221 Bye\r\n");
    assert!(c.closed_quietly().await);
}

#[tokio::test]
async fn input_pipelined_behind_starttls_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(settings(dir.path())).await;
    let mut c = SmtpClient::connect_sim(&sim).await;
    c.reply().await.unwrap();
    c.send("EHLO client.test").await;
    c.reply().await.unwrap();
    // A smuggled command in the same packet as STARTTLS must not survive into the TLS session.
    c.send_raw(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
        .await;
    assert_eq!(c.reply_text().await, "220 Ready to start TLS\r\n");
    c.upgrade().await;
    assert!(c.cmd_text("EHLO client.test").await.ends_with("250 Ok\r\n"));
    let r = c
        .cmd_text(&format!("AUTH PLAIN {}", plain(KEY_ID, PASS_US_EAST_1)))
        .await;
    assert_eq!(r, "235 Authentication successful.\r\n");
    // No transaction was opened by the smuggled MAIL.
    assert_eq!(
        c.cmd_text("RCPT TO:<a@dest.test>").await.get(..3),
        Some("503")
    );
}

#[tokio::test]
async fn auth_plain_and_login() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(settings(dir.path())).await;
    let tls_client = || async {
        let mut c = SmtpClient::connect_sim(&sim).await;
        c.reply().await.unwrap();
        c.cmd_text("EHLO client.test").await;
        c.starttls_ses().await;
        c.cmd_text("EHLO client.test").await;
        c
    };

    // PLAIN with an initial response.
    let mut c = tls_client().await;
    assert_eq!(
        c.cmd_text(&format!("AUTH PLAIN {}", plain(KEY_ID, PASS_US_EAST_1)))
            .await,
        "235 Authentication successful.\r\n"
    );
    // PLAIN after an empty challenge.
    let mut c = tls_client().await;
    c.send("AUTH PLAIN").await;
    assert_eq!(c.raw_line().await, "334 \r\n");
    assert_eq!(
        c.cmd_text(&plain(KEY_ID, PASS_US_EAST_1)).await,
        "235 Authentication successful.\r\n"
    );
    // LOGIN.
    let mut c = tls_client().await;
    assert_eq!(c.cmd_text("AUTH LOGIN").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd_text(&b64(KEY_ID)).await, "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        c.cmd_text(&b64(PASS_US_EAST_1)).await,
        "235 Authentication successful.\r\n"
    );
    // Bad password, wrong-region password, unknown user, SigV2 password.
    let mut c = tls_client().await;
    assert_eq!(c.cmd_text("AUTH LOGIN").await, "334 VXNlcm5hbWU6\r\n");
    assert_eq!(c.cmd_text(&b64(KEY_ID)).await, "334 UGFzc3dvcmQ6\r\n");
    assert_eq!(
        c.cmd_text(&b64("not-the-password")).await,
        "535 Authentication Credentials Invalid\r\n"
    );
    assert_eq!(
        c.cmd_text(&format!("AUTH PLAIN {}", plain(KEY_ID, PASS_US_EAST_2)))
            .await,
        "535 Authentication Credentials Invalid\r\n"
    );
    assert_eq!(
        c.cmd_text(&format!(
            "AUTH PLAIN {}",
            plain("AKIAUNKNOWN", PASS_US_EAST_1)
        ))
        .await,
        "535 Authentication Credentials Invalid\r\n"
    );
    let v2 = c
        .cmd_text(&format!("AUTH PLAIN {}", plain(KEY_ID, PASS_V2)))
        .await;
    assert!(
        v2.starts_with(
            "535-Signature Version 2 is deprecated for use with SES from March 26, 2021."
        ),
        "{v2}"
    );
    assert_eq!(
        c.cmd_text("MAIL FROM:<app@example.org>").await,
        "530 Authentication required\r\n"
    );
}

#[tokio::test]
async fn address_syntax_replies() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(settings(dir.path())).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    assert_eq!(
        c.cmd_text("MAIL FROM:<>").await,
        "501 Invalid MAIL FROM address provided\r\n"
    );
    assert_eq!(
        c.cmd_text("MAIL FROM:<no-at-sign>").await,
        "501 Invalid MAIL FROM address provided\r\n"
    );
    assert_eq!(
        c.cmd_text("MAIL FROM:<app@example.org>").await,
        "250 Ok\r\n"
    );
    assert_eq!(
        c.cmd_text("RCPT TO:<bad recipient>").await,
        "553 <bad recipient> address unknown\r\n"
    );
    assert_eq!(
        c.cmd_text("RCPT TO:<someone@dest.test>").await,
        "250 Ok\r\n"
    );
    assert_eq!(c.cmd_text("RSET").await, "250 Ok\r\n");
}

fn text(r: &Reply) -> String {
    format!("{} {}", r.code, r.lines.join("\n"))
}

#[tokio::test]
async fn end_of_data_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_message_size = 4096;
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;

    let mut big = simple_message("app@example.org");
    for _ in 0..100 {
        big.extend_from_slice(&[b'x'; 70]);
        big.extend_from_slice(b"\r\n");
    }
    let r = c.message("app@example.org", &["u@dest.test"], &big).await;
    assert_eq!(text(&r), "552 Message is too long.");

    let many: Vec<String> = (0..51).map(|i| format!("u{i}@dest.test")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let r = c
        .message("app@example.org", &many, &simple_message("app@example.org"))
        .await;
    assert_eq!(
        text(&r),
        "554 Transaction failed: Recipient count exceeds 50."
    );

    let two_sigs = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=a; b=x\r\n\
DKIM-Signature: v=1; a=ed25519-sha256; d=example.org; s=b; b=y\r\n\
From: app@example.org\r\nSubject: x\r\n\r\nbody\r\n";
    let r = c
        .message("app@example.org", &["u@dest.test"], two_sigs)
        .await;
    assert_eq!(
        text(&r),
        "554 Transaction failed: Duplicate header 'DKIM-Signature'."
    );
    let two_ids =
        b"From: app@example.org\r\nMessage-ID: <a@x>\r\nMessage-ID: <b@x>\r\n\r\nbody\r\n";
    let r = c
        .message("app@example.org", &["u@dest.test"], two_ids)
        .await;
    assert_eq!(
        text(&r),
        "554 Transaction failed: Duplicate header 'Message-ID'."
    );

    let r = c
        .message(
            "app@other.test",
            &["u@dest.test"],
            &simple_message("app@example.org"),
        )
        .await;
    assert_eq!(text(&r), format!("{UNVERIFIED}app@other.test"));
    let r = c
        .message(
            "app@example.org",
            &["u@dest.test"],
            &simple_message("x@sub.other.test"),
        )
        .await;
    assert_eq!(text(&r), format!("{UNVERIFIED}App <x@sub.other.test>"));
    let with_sender = b"From: app@example.org\r\nSender: ops@elsewhere.test\r\n\
Return-Path: <bounce@elsewhere.test>\r\n\r\nbody\r\n";
    let r = c
        .message("app@example.org", &["u@dest.test"], with_sender)
        .await;
    assert_eq!(
        text(&r),
        format!("{UNVERIFIED}ops@elsewhere.test, <bounce@elsewhere.test>")
    );
    // A subdomain of a verified domain is covered.
    let r = c
        .message(
            "a@deep.sub.example.org",
            &["u@dest.test"],
            &simple_message("b@sub.example.org"),
        )
        .await;
    assert_eq!(r.code, 250, "{}", text(&r));
}

#[tokio::test]
async fn sandbox_and_paused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.sandbox = true;
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    let r = c
        .message(
            "app@example.org",
            &[
                "u@dest.test",
                "success@simulator.amazonses.com",
                "v@example.org",
            ],
            &simple_message("app@example.org"),
        )
        .await;
    assert_eq!(text(&r), format!("{UNVERIFIED}u@dest.test"));
    let r = c
        .message(
            "app@example.org",
            &["bounce+label@simulator.amazonses.com", "v@example.org"],
            &simple_message("app@example.org"),
        )
        .await;
    assert_eq!(r.code, 250, "{}", text(&r));
    let id = r.lines[0].strip_prefix("Ok ").unwrap().to_string();
    let (record, _) = outbox::show(&sim.outbox, &id).unwrap();
    assert_eq!(record.mailbox_simulator.len(), 1);
    assert_eq!(record.mailbox_simulator[0].outcome, "bounce 550 5.1.1");

    let dir2 = tempfile::tempdir().unwrap();
    let mut s = settings(dir2.path());
    s.paused = true;
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    let r = c
        .message(
            "app@example.org",
            &["u@dest.test"],
            &simple_message("app@example.org"),
        )
        .await;
    assert_eq!(
        text(&r),
        "554 Message rejected: Sending paused for this account. For more information, please \
         check the inbox of the email address associated with your AWS account."
    );
}

#[tokio::test]
async fn sending_rate_and_daily_quota() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    // One token, refilled after 100 s: the second message is always over the rate.
    s.max_send_rate = 0.01;
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    let m = simple_message("app@example.org");
    assert_eq!(
        c.message("app@example.org", &["u@dest.test"], &m)
            .await
            .code,
        250
    );
    let r = c.message("app@example.org", &["u@dest.test"], &m).await;
    assert_eq!(
        text(&r),
        "454 Throttling failure: Maximum sending rate exceeded."
    );

    let dir2 = tempfile::tempdir().unwrap();
    let mut s = settings(dir2.path());
    s.max_24h = 1;
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    assert_eq!(
        c.message("app@example.org", &["u@dest.test"], &m)
            .await
            .code,
        250
    );
    // Mailbox-simulator recipients do not count against the quota.
    let r = c
        .message("app@example.org", &["success@simulator.amazonses.com"], &m)
        .await;
    assert_eq!(r.code, 250, "{}", text(&r));
    let r = c.message("app@example.org", &["u@dest.test"], &m).await;
    assert_eq!(
        text(&r),
        "454 Throttling failure: Daily message quota exceeded."
    );
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_sends_451_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.idle_timeout = std::time::Duration::from_secs(1);
    let sim = start(s).await;
    let mut c = SmtpClient::connect_sim(&sim).await;
    c.reply().await.unwrap();
    assert!(c.cmd_text("EHLO client.test").await.ends_with("250 Ok\r\n"));
    // Say nothing: the next thing from the server is the unsolicited timeout reply.
    assert_eq!(
        c.reply_text().await,
        "451 4.4.2 Timeout waiting for data from client.\r\n"
    );
    assert!(c.closed_quietly().await);
}

#[tokio::test]
async fn per_session_message_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_messages_per_session = 1;
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    let m = simple_message("app@example.org");
    assert_eq!(
        c.message("app@example.org", &["u@dest.test"], &m)
            .await
            .code,
        250
    );
    assert_eq!(
        c.cmd_text("MAIL FROM:<app@example.org>").await,
        "421 Connection closed by server. Maximum message count per session reached.\r\n"
    );
    assert!(c.closed_quietly().await);
}

#[tokio::test]
async fn connection_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.max_connections = 1;
    let sim = start(s).await;
    let mut first = SmtpClient::connect_sim(&sim).await;
    assert_eq!(first.reply().await.unwrap().code, 220);
    let mut second = SmtpClient::connect_sim(&sim).await;
    assert_eq!(
        second.reply_text().await,
        "421 Too many concurrent SMTP connections\r\n"
    );
    assert!(second.closed_quietly().await);
    assert_eq!(first.cmd_text("NOOP").await, "250 Ok\r\n");
}

#[tokio::test]
async fn fault_script_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.faults.script = vec![
        ScriptStep::Reply(Reply::plain(454, "Temporary service failure")),
        ScriptStep::Normal,
    ];
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    let m = simple_message("app@example.org");
    let r = c.message("app@example.org", &["u@dest.test"], &m).await;
    assert_eq!(text(&r), "454 Temporary service failure");
    assert_eq!(
        c.message("app@example.org", &["u@dest.test"], &m)
            .await
            .code,
        250
    );
    // The script is used up: back to normal.
    assert_eq!(
        c.message("app@example.org", &["u@dest.test"], &m)
            .await
            .code,
        250
    );

    let dir2 = tempfile::tempdir().unwrap();
    let mut s = settings(dir2.path());
    s.faults.drop_at = Some(DropStage::Rcpt);
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    assert_eq!(
        c.cmd_text("MAIL FROM:<app@example.org>").await,
        "250 Ok\r\n"
    );
    c.send("RCPT TO:<u@dest.test>").await;
    assert!(c.reply().await.is_none(), "connection should drop at RCPT");

    let dir3 = tempfile::tempdir().unwrap();
    let mut s = settings(dir3.path());
    s.faults.throttle = true;
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    let r = c.message("app@example.org", &["u@dest.test"], &m).await;
    assert_eq!(
        text(&r),
        "454 Throttling failure: Maximum sending rate exceeded."
    );
}

#[tokio::test]
async fn implicit_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(settings(dir.path())).await;
    let mut c = SmtpClient::connect_sim_implicit(&sim).await;
    assert_eq!(c.reply().await.unwrap().code, 220);
    assert_eq!(
        c.cmd_text("EHLO client.test").await,
        "250-email-smtp.amazonaws.com\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 Ok\r\n"
    );
    assert_eq!(
        c.cmd_text(&format!("AUTH PLAIN {}", plain(KEY_ID, PASS_US_EAST_1)))
            .await,
        "235 Authentication successful.\r\n"
    );
    let r = c
        .message(
            "app@example.org",
            &["u@dest.test"],
            &simple_message("app@example.org"),
        )
        .await;
    assert_eq!(r.code, 250);
}

const CLIENT_SIG: &str = "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org;\r\n\ts=s2026a; t=1700000000; h=From:To:Subject;\r\n\tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n";

#[tokio::test]
async fn delivered_form_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(settings(dir.path())).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    let msg = format!(
        "{CLIENT_SIG}From: App <app@example.org>\r\nTo: user@dest.test\r\nSubject: Report\r\n\
Message-ID: <original@client.test>\r\nDate: Mon, 01 Jan 2024 00:00:00 +0100\r\n\
X-SES-CONFIGURATION-SET: marketing\r\nX-SES-MESSAGE-TAGS: a=b\r\nX-Custom: kept\r\n\r\n\
.leading dot line\r\nbody\r\n"
    );
    let r = c
        .message("bounces@example.org", &["user@dest.test"], msg.as_bytes())
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    let id = r.lines[0].strip_prefix("Ok ").unwrap().to_string();
    assert!(id.starts_with("0100") && id.ends_with("-000000"), "{id}");
    assert_eq!(id.len(), 60);

    let eml = std::fs::read(sim.outbox.join(format!("{id}.eml"))).unwrap();
    let eml = String::from_utf8(eml).unwrap();
    let (head, body) = eml.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("DKIM-Signature:"), "{head}");
    // Ours first; the client's own signature follows, untouched.
    let ses_sig = head.split("\r\nDKIM-Signature:").next().unwrap();
    assert!(ses_sig.contains("d=amazonses.com"), "{ses_sig}");
    assert!(ses_sig.contains("c=relaxed/simple"), "{ses_sig}");
    let unfolded = ses_sig.replace("\r\n\t", "").replace("\r\n ", "");
    let h = unfolded
        .split(';')
        .find_map(|t| t.trim().strip_prefix("h="))
        .unwrap();
    let mut h: Vec<String> = h
        .split(':')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    h.sort();
    for name in ["from", "to", "subject", "date", "message-id", "feedback-id"] {
        assert!(h.contains(&name.to_string()), "{name} not signed: {h:?}");
    }
    assert!(
        head.contains(CLIENT_SIG.trim_end_matches("\r\n")),
        "client signature changed"
    );
    assert!(head.contains(&format!("Message-ID: <{id}@email.amazonses.com>\r\n")));
    assert!(!head.contains("original@client.test"));
    assert!(!head.contains("Mon, 01 Jan 2024"));
    let date = head.lines().find_map(|l| l.strip_prefix("Date: ")).unwrap();
    assert!(date.ends_with(" +0000"), "{date}");
    assert!(chrono::DateTime::parse_from_rfc2822(date).is_ok(), "{date}");
    let day = date.split(' ').nth(1).unwrap();
    assert!(!day.starts_with('0'), "{date}");
    let fb = head
        .lines()
        .find_map(|l| l.strip_prefix("Feedback-ID: "))
        .unwrap();
    assert!(
        fb.starts_with("::1.us-east-1.") && fb.ends_with("=:AmazonSES"),
        "{fb}"
    );
    let out = head
        .lines()
        .find_map(|l| l.strip_prefix("X-SES-Outgoing: "))
        .unwrap();
    assert!(out.ends_with("-54.240.27.27") && out.len() == "2026.01.01-54.240.27.27".len());
    assert!(!head.contains("X-SES-CONFIGURATION-SET") && !head.contains("X-SES-MESSAGE-TAGS"));
    assert!(head.contains("X-Custom: kept"));
    assert_eq!(body, ".leading dot line\r\nbody\r\n");

    let json = std::fs::read(sim.outbox.join(format!("{id}.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["mail_from"], "bounces@example.org");
    assert_eq!(
        v["envelope_from"],
        format!("{id}@mail.example.org").as_str()
    );
    assert_eq!(v["user"], KEY_ID);
    assert_eq!(v["subject"], "Report");
    assert_eq!(v["header_from"], "App <app@example.org>");
    assert!(v["verdict"].is_object());
    assert!(chrono::DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).is_ok());

    let records = outbox::list(&sim.outbox).unwrap();
    assert_eq!(records.len(), 1);
    let table = outbox::format_table(&records);
    assert!(
        table.contains(&id) && table.contains("dkim=") && table.contains("Report"),
        "{table}"
    );
    let listed = dkim_relay::cli::outbox::list_text(&sim.outbox, true).unwrap();
    let arr: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(arr.as_array().unwrap().len(), 1);
    let shown = dkim_relay::cli::outbox::show_text(&sim.outbox, &id, false).unwrap();
    assert!(shown.contains("bounces@example.org") && shown.contains("Subject: Report"));
    assert!(dkim_relay::cli::outbox::show_text(&sim.outbox, "../etc", false).is_err());
    sim.shutdown().await;
}

#[tokio::test]
async fn default_mail_from_domain_and_region() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.region = "eu-west-1".into();
    s.mail_from.clear();
    let sim = start(s).await;
    let mut c = SmtpClient::connect_sim(&sim).await;
    c.reply().await.unwrap();
    c.cmd_text("EHLO client.test").await;
    c.starttls_ses().await;
    // The us-east-1 password is wrong in eu-west-1.
    assert_eq!(
        c.cmd_text(&format!("AUTH PLAIN {}", plain(KEY_ID, PASS_US_EAST_1)))
            .await,
        "535 Authentication Credentials Invalid\r\n"
    );
    let eu = dkim_relay::ses_password::smtp_password_v4(SECRET, "eu-west-1");
    assert_eq!(
        c.cmd_text(&format!("AUTH PLAIN {}", plain(KEY_ID, &eu)))
            .await,
        "235 Authentication successful.\r\n"
    );
    let r = c
        .message(
            "app@other.test",
            &["u@dest.test"],
            &simple_message("app@example.org"),
        )
        .await;
    assert_eq!(
        text(&r),
        "554 Message rejected: Email address is not verified. The following identities failed \
         the check in region EU-WEST-1: app@other.test"
    );
    let r = c
        .message(
            "app@example.org",
            &["u@dest.test"],
            &simple_message("app@example.org"),
        )
        .await;
    let id = r.lines[0].strip_prefix("Ok ").unwrap().to_string();
    let (record, eml) = outbox::show(&sim.outbox, &id).unwrap();
    assert_eq!(
        record.envelope_from,
        format!("{id}@eu-west-1.amazonses.com")
    );
    let eml = String::from_utf8(eml).unwrap();
    assert!(eml.contains(&format!("Message-ID: <{id}@eu-west-1.amazonses.com>")));
}

#[tokio::test]
async fn embedded_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let s = dkim_relay::sim::config::SimSettings::resolve(None, dir.path()).unwrap();
    let domains = [dkim_relay::sim::EmbeddedDomain {
        name: "example.org".into(),
        mail_from: "mail.example.org".into(),
        selectors: Vec::new(),
        dmarc: None,
    }];
    let (sim, creds) = dkim_relay::sim::start_embedded(s, &domains).await.unwrap();
    assert!(creds.username.starts_with("AKIA"));
    assert!(creds.password.starts_with('B') && creds.password.len() == 44);
    assert!(!format!("{creds:?}").contains(&creds.password));
    assert!(sim.starttls_addr.ip().is_loopback());
    let mut c = SmtpClient::connect_sim(&sim).await;
    c.reply().await.unwrap();
    c.cmd_text("EHLO client.test").await;
    c.starttls_ses().await;
    assert_eq!(
        c.cmd_text(&format!(
            "AUTH PLAIN {}",
            plain(&creds.username, &creds.password)
        ))
        .await,
        "235 Authentication successful.\r\n"
    );
    let r = c
        .message(
            "app@example.org",
            &["u@dest.test"],
            &simple_message("app@example.org"),
        )
        .await;
    let id = r.lines[0].strip_prefix("Ok ").unwrap().to_string();
    let (record, _) = outbox::show(&sim.outbox, &id).unwrap();
    assert_eq!(record.envelope_from, format!("{id}@mail.example.org"));
    sim.shutdown().await;
}

#[test]
fn example_config_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ses-sim.toml.example");
    let s = dkim_relay::sim::config::SimSettings::load_file(&path).unwrap();
    assert_eq!(s.region, "us-east-1");
    assert!(!s.accounts.is_empty());
    assert!(s.identities.contains(&"example.org".to_string()));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "region = \"us-east-1\"\nmax_conections = 3\n").unwrap();
    let e = dkim_relay::sim::config::SimSettings::load_file(&bad).unwrap_err();
    assert!(e.contains("max_conections"), "{e}");
    std::fs::write(&bad, "idle_timeout_secs = 0\n").unwrap();
    let e = dkim_relay::sim::config::SimSettings::load_file(&bad).unwrap_err();
    assert!(e.contains("idle_timeout_secs"), "{e}");
}

#[tokio::test]
async fn failure_rate_one_always_fails_with_the_configured_reply() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.faults.failure_rate = 1.0;
    s.faults.failure_reply = Some(Reply::plain(451, "Temporary service failure"));
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    let m = simple_message("app@example.org");
    for _ in 0..2 {
        let r = c.message("app@example.org", &["u@dest.test"], &m).await;
        assert_eq!(text(&r), "451 Temporary service failure");
    }
    assert!(outbox::list(&sim.outbox).unwrap().is_empty());
}

#[tokio::test]
async fn bare_newline_in_data_is_refused_and_session_continues() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start(settings(dir.path())).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    assert_eq!(
        c.cmd_text("MAIL FROM:<app@example.org>").await,
        "250 Ok\r\n"
    );
    assert_eq!(c.cmd_text("RCPT TO:<u@dest.test>").await, "250 Ok\r\n");
    assert_eq!(
        c.cmd_text("DATA").await,
        "354 End data with <CR><LF>.<CR><LF>\r\n"
    );
    // A bare-LF "terminator" must not end DATA; only CRLF.CRLF does.
    c.send_raw(b"From: app@example.org\r\n\r\nline\n.\nmore\r\n.\r\n")
        .await;
    let r = c.reply().await.unwrap();
    assert_eq!(r.code, 554, "{}", text(&r));
    assert_eq!(c.cmd_text("NOOP").await, "250 Ok\r\n");
}

#[tokio::test]
async fn dns_zone_file_is_loaded_and_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("zone.txt");
    std::fs::write(
        &zone,
        "mail.example.org. MX 10 feedback-smtp.us-east-1.amazonses.com.\n\
         mail.example.org. TXT \"v=spf1 include:amazonses.com ~all\"\n\
         _dmarc.example.org. TXT \"v=DMARC1; p=none\"\n",
    )
    .unwrap();
    let mut s = settings(dir.path());
    s.dns_zone = Some(zone.clone());
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    let r = c
        .message(
            "app@example.org",
            &["u@dest.test"],
            &simple_message("app@example.org"),
        )
        .await;
    assert_eq!(r.code, 250);
    sim.shutdown().await;

    let missing = dir.path().join("missing-zone.txt");
    let mut s = settings(dir.path());
    s.dns_zone = Some(missing);
    let e = dkim_relay::sim::start(s, Vec::new()).await.unwrap_err();
    assert!(e.to_string().contains("missing-zone.txt"), "{e}");
}

#[tokio::test]
async fn ca_is_written_where_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.ca_out = Some(dir.path().join("certs/ca.pem"));
    s.implicit_listen = None;
    let sim = start(s).await;
    assert!(sim.implicit_addr.is_none());
    let written = std::fs::read_to_string(dir.path().join("certs/ca.pem")).unwrap();
    assert_eq!(written, sim.ca_pem);
    assert!(written.starts_with("-----BEGIN CERTIFICATE-----"));
}

#[tokio::test]
async fn custom_mail_from_mx_failure_behaviours() {
    use dkim_relay::sim::config::MailFromDomain;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.identities.push("example.net".into());
    s.mail_from.insert(
        "example.org".into(),
        MailFromDomain {
            domain: "mail.example.org".into(),
            mx_ok: false,
            reject_on_mx_failure: false,
        },
    );
    s.mail_from.insert(
        "example.net".into(),
        MailFromDomain {
            domain: "bounce.example.net".into(),
            mx_ok: false,
            reject_on_mx_failure: true,
        },
    );
    let sim = start(s).await;
    let mut c = SmtpClient::sim_ready(&sim).await;
    // UseDefaultValue: sent anyway, from the amazonses.com default.
    let r = c
        .message(
            "app@example.org",
            &["u@dest.test"],
            &simple_message("app@example.org"),
        )
        .await;
    let id = r.lines[0].strip_prefix("Ok ").unwrap().to_string();
    let (record, _) = outbox::show(&sim.outbox, &id).unwrap();
    assert_eq!(record.envelope_from, format!("{id}@amazonses.com"));
    // RejectMessage: refused.
    let r = c
        .message(
            "app@example.net",
            &["u@dest.test"],
            &simple_message("app@example.net"),
        )
        .await;
    assert_eq!(
        text(&r),
        "554 Message rejected: The MAIL FROM domain bounce.example.net is not verified."
    );
}
