//! Unit tests of the relay session: command order, limits, STARTTLS and AUTH rules.
use super::*;

fn session() -> Session {
    Session::new(
        Rules {
            hostname: "relay.test".into(),
            max_message_size: 1000,
            max_recipients: 2,
            max_errors: 8,
            starttls: true,
            auth_users: true,
            auth_plaintext: false,
            max_auth_failures: 2,
        },
        true,
    )
}

fn cmd(s: &mut Session, line: &str) -> Action {
    s.command(Ok(line.as_bytes().to_vec()))
}

fn code(a: &Action) -> u16 {
    match a {
        Action::Reply(r)
        | Action::StartData(r)
        | Action::Close(r)
        | Action::ReplyDiscard(r)
        | Action::StartTls(r) => r.code,
        Action::Authenticate(_) => 0,
    }
}

#[test]
fn happy_path() {
    let mut s = session();
    assert_eq!(code(&cmd(&mut s, "EHLO c")), 250);
    assert_eq!(
        code(&cmd(&mut s, "MAIL FROM:<a@b.c> SIZE=10 BODY=8BITMIME")),
        250
    );
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<x@y.z>")), 250);
    assert!(matches!(cmd(&mut s, "DATA"), Action::StartData(_)));
    let t = s
        .data_finished(Ok(b"From: a@b.c\r\n\r\n".to_vec()))
        .unwrap();
    assert_eq!(t.envelope.rcpts.len(), 1);
    assert!(!s.in_transaction());
    // A new transaction can start straight away.
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<>")), 250);
}

#[test]
fn sequence_errors() {
    let mut s = session();
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c>")), 503);
    cmd(&mut s, "HELO c");
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<x@y.z>")), 503);
    assert_eq!(code(&cmd(&mut s, "DATA")), 503);
    cmd(&mut s, "MAIL FROM:<a@b.c>");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c>")), 503);
    assert_eq!(code(&cmd(&mut s, "DATA")), 554);
}

#[test]
fn recipient_cap_and_size() {
    let mut s = session();
    cmd(&mut s, "EHLO c");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c> SIZE=5000")), 552);
    cmd(&mut s, "MAIL FROM:<a@b.c>");
    cmd(&mut s, "RCPT TO:<1@y.z>");
    cmd(&mut s, "RCPT TO:<2@y.z>");
    match cmd(&mut s, "RCPT TO:<3@y.z>") {
        Action::Reply(r) => {
            assert_eq!(r.code, 452);
            assert_eq!(r.enhanced(), Some("4.5.3"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rset_clears_transaction() {
    let mut s = session();
    cmd(&mut s, "EHLO c");
    cmd(&mut s, "MAIL FROM:<a@b.c>");
    cmd(&mut s, "RCPT TO:<1@y.z>");
    assert_eq!(code(&cmd(&mut s, "RSET")), 250);
    assert!(!s.in_transaction());
    assert_eq!(code(&cmd(&mut s, "DATA")), 503);
}

#[test]
fn failed_data_resets_and_replies() {
    let mut s = session();
    cmd(&mut s, "EHLO c");
    cmd(&mut s, "MAIL FROM:<a@b.c>");
    cmd(&mut s, "RCPT TO:<1@y.z>");
    cmd(&mut s, "DATA");
    let r = s.data_finished(Err(DataError::TooBig)).unwrap_err();
    assert_eq!((r.code, r.enhanced()), (552, Some("5.3.4")));
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<1@y.z>")), 503);
}

#[test]
fn too_many_errors_closes() {
    let mut s = session();
    let mut last = None;
    for _ in 0..8 {
        last = Some(cmd(&mut s, "BOGUS"));
    }
    assert!(matches!(last, Some(Action::Close(r)) if r.code == 421));
}

#[test]
fn clients_outside_allow_networks_cannot_send() {
    let mut s = Session::new(session().rules, false);
    cmd(&mut s, "EHLO c");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c>")), 530);
}

fn user() -> Submitter {
    Submitter {
        user: "app".into(),
        domains: vec![crate::users::AllowedDomain {
            name: "b.c".into(),
            subdomains: false,
            carved_out: vec![],
        }],
    }
}

#[test]
fn starttls_resets_to_connected_and_caps_change() {
    let mut s = session();
    let caps = format!("{:?}", cmd(&mut s, "EHLO c"));
    assert!(caps.contains("STARTTLS") && !caps.contains("AUTH"));
    cmd(&mut s, "MAIL FROM:<a@b.c>");
    assert!(matches!(cmd(&mut s, "STARTTLS"), Action::StartTls(_)));
    s.tls_started();
    assert!(!s.in_transaction());
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c>")), 503);
    let caps = format!("{:?}", cmd(&mut s, "EHLO c"));
    assert!(!caps.contains("STARTTLS") && caps.contains("AUTH PLAIN LOGIN"));
    assert_eq!(code(&cmd(&mut s, "STARTTLS")), 503);
}

#[test]
fn auth_needs_tls_and_is_once_and_outside_transactions() {
    let mut s = session();
    cmd(&mut s, "EHLO c");
    assert_eq!(code(&cmd(&mut s, "AUTH PLAIN AGFwcABwdw==")), 530);
    s.tls_started();
    assert_eq!(code(&cmd(&mut s, "AUTH PLAIN AGFwcABwdw==")), 503);
    cmd(&mut s, "EHLO c");
    match cmd(&mut s, "AUTH PLAIN AGFwcABwdw==") {
        Action::Authenticate(c) => {
            assert_eq!(
                (c.username.as_str(), c.password.as_slice()),
                ("app", &b"pw"[..])
            );
            assert!(!format!("{c:?}").contains("pw\""));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(code(&s.auth_result(Some(user()))), 235);
    assert_eq!(code(&cmd(&mut s, "AUTH LOGIN")), 503);
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<x@other.example>")), 550);
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<x@b.c>")), 250);
    assert_eq!(code(&cmd(&mut s, "AUTH LOGIN")), 503);
}

#[test]
fn auth_login_continuations_and_failure_cap() {
    let mut s = Session::new(session().rules, false);
    s.tls_started();
    cmd(&mut s, "EHLO c");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c>")), 530);
    assert_eq!(code(&cmd(&mut s, "AUTH LOGIN")), 334);
    // The continuation line is data, not a command, even if it looks like one.
    assert_eq!(code(&cmd(&mut s, "YXBw")), 334);
    assert!(matches!(cmd(&mut s, "cHc="), Action::Authenticate(_)));
    assert_eq!(code(&s.auth_result(None)), 535);
    assert_eq!(code(&cmd(&mut s, "AUTH PLAIN")), 334);
    assert_eq!(code(&cmd(&mut s, "*")), 501);
    assert!(matches!(s.auth_result(None), Action::Close(r) if r.code == 421));
}

#[test]
fn refused_data_discards_pipelined_input() {
    let mut s = session();
    cmd(&mut s, "EHLO c");
    assert!(matches!(cmd(&mut s, "DATA"), Action::ReplyDiscard(_)));
}

#[test]
fn recipients_past_the_cap_are_not_errors_and_rcpt_parameters_are_refused() {
    let mut s = session();
    cmd(&mut s, "EHLO c");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c>")), 250);
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<x@y.z> NOTIFY=NEVER")), 555);
    assert_eq!(
        code(&cmd(&mut s, "RCPT TO:<x@y.z> ORCPT=rfc822;x@y.z")),
        555
    );
    for _ in 0..2 {
        assert_eq!(code(&cmd(&mut s, "RCPT TO:<x@y.z>")), 250);
    }
    // max_errors is 8: far more over-cap RCPTs than that, and no 421.
    for _ in 0..50 {
        assert_eq!(code(&cmd(&mut s, "RCPT TO:<x@y.z>")), 452);
    }
    assert!(matches!(cmd(&mut s, "DATA"), Action::StartData(_)));
}

#[test]
fn sender_local_part_must_be_a_dot_atom_or_quoted_string() {
    let mut s = session();
    cmd(&mut s, "EHLO c");
    for bad in [
        "MAIL FROM:<a..b@c.d>",
        "MAIL FROM:<.a@c.d>",
        "MAIL FROM:<\u{e9}@c.d>",
    ] {
        let a = cmd(&mut s, bad);
        assert!(
            matches!(&a, Action::Reply(r) if r.code == 553 && r.enhanced() == Some("5.1.7")),
            "{bad}: {a:?}"
        );
    }
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<\"a b\"@c.d>")), 250);
}

#[test]
fn mail_auth_parameter_only_when_auth_is_offered() {
    let mut s = session();
    cmd(&mut s, "EHLO c");
    // AUTH is offered only over TLS here.
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c> AUTH=<>")), 555);
    s.tls_started();
    cmd(&mut s, "EHLO c");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.c> AUTH=<>")), 250);
}
