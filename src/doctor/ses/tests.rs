use super::*;
use crate::doctor::Status;

fn identity(json: &str) -> EmailIdentity {
    serde_json::from_str(json).unwrap()
}

const GOOD: &str = r#"{
  "IdentityType": "DOMAIN",
  "FeedbackForwardingStatus": true,
  "VerifiedForSendingStatus": true,
  "VerificationStatus": "SUCCESS",
  "DkimAttributes": {"SigningEnabled": false, "Status": "NOT_STARTED", "Tokens": []},
  "MailFromAttributes": {"MailFromDomain": "mail.example.org",
    "MailFromDomainStatus": "SUCCESS", "BehaviorOnMxFailure": "REJECT_MESSAGE"},
  "Policies": {}, "Tags": []
}"#;

fn statuses(checks: &[Check]) -> Vec<(Status, &str)> {
    checks
        .iter()
        .map(|c| (c.status, c.subject.as_str()))
        .collect()
}

#[test]
fn good_identity_passes() {
    let id = identity(GOOD);
    let checks = identity_checks("example.org", "mail.example.org", "us-east-1", Some(&id));
    assert_eq!(
        statuses(&checks),
        vec![
            (Status::Pass, "SES identity example.org"),
            (Status::Pass, "SES MAIL FROM example.org"),
            (Status::Pass, "SES DKIM example.org"),
        ]
    );
}

#[test]
fn missing_and_unverified_identity_fail() {
    let checks = identity_checks("example.org", "mail.example.org", "eu-west-1", None);
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0].status, Status::Fail);
    assert!(checks[0].message.contains("eu-west-1"));
    let id = identity(r#"{"VerifiedForSendingStatus": false, "VerificationStatus": "PENDING"}"#);
    let checks = identity_checks("example.org", "mail.example.org", "us-east-1", Some(&id));
    assert_eq!(checks[0].status, Status::Fail);
    assert!(checks[0].message.contains("PENDING"), "{checks:?}");
    // No MailFromAttributes at all: SES uses its own MAIL FROM.
    assert_eq!(checks[1].status, Status::Fail);
    assert!(checks[1].message.contains("amazonses.com"));
}

#[test]
fn mail_from_rules() {
    let attrs = |d: &str, s: &str, b: &str| MailFromAttributes {
        mail_from_domain: Some(d.into()),
        mail_from_domain_status: Some(s.into()),
        behavior_on_mx_failure: Some(b.into()),
    };
    let check = |ours: &str, a: MailFromAttributes| mail_from_check("example.org", ours, Some(&a));
    let c = check(
        "mail.example.org",
        attrs("bounce.example.org", "SUCCESS", "REJECT_MESSAGE"),
    );
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("bounce.example.org") && c.message.contains("mail.example.org"));
    let c = check(
        "mail.example.org",
        attrs("MAIL.example.org.", "SUCCESS", "USE_DEFAULT_VALUE"),
    );
    assert_eq!(c.status, Status::Warn);
    assert!(c.message.contains("silently falls back"), "{c}");
    assert!(c.fix.as_deref().unwrap().contains("REJECT_MESSAGE"));
    let c = check(
        "mail.example.org",
        attrs("mail.example.org", "FAILED", "USE_DEFAULT_VALUE"),
    );
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("SPF does not align"), "{c}");
    let c = check(
        "mail.example.org",
        attrs("mail.example.org", "PENDING", "REJECT_MESSAGE"),
    );
    assert_eq!(c.status, Status::Fail);
    assert!(c.message.contains("rejects every message"), "{c}");
    let c = check("", attrs("mail.example.org", "SUCCESS", "REJECT_MESSAGE"));
    assert_eq!(c.status, Status::Warn);
    let c = mail_from_check("example.org", "", None);
    assert_eq!(c.status, Status::Warn);
}

#[test]
fn ses_signing_is_noted() {
    let on = |origin: &str, status: &str| DkimAttributes {
        signing_enabled: true,
        status: Some(status.into()),
        signing_attributes_origin: Some(origin.into()),
        current_signing_key_length: Some("RSA_2048_BIT".into()),
    };
    let c = dkim_check("example.org", Some(&on("AWS_SES", "SUCCESS")));
    assert_eq!(c.status, Status::Pass);
    assert!(c.message.contains("Easy DKIM") && c.message.contains("two DKIM"));
    let c = dkim_check("example.org", Some(&on("EXTERNAL", "SUCCESS")));
    assert!(c.message.contains("BYODKIM"));
    let c = dkim_check("example.org", Some(&on("AWS_SES", "PENDING")));
    assert!(c.message.contains("does not sign yet"));
    let c = dkim_check("example.org", None);
    assert!(c.message.contains("only DKIM signature"));
}

#[test]
fn account_rules() {
    let account: Account = serde_json::from_str(
        r#"{"DedicatedIpAutoWarmupEnabled": false, "EnforcementStatus": "HEALTHY",
            "ProductionAccessEnabled": true, "SendingEnabled": true,
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 14.0,
                          "SentLast24Hours": 12.0}}"#,
    )
    .unwrap();
    let checks = account_checks("us-east-1", &account, None);
    assert!(
        checks.iter().all(|c| c.status == Status::Pass),
        "{checks:?}"
    );
    assert!(checks.last().unwrap().message.contains("MaxSendRate 14/s"));
    let checks = account_checks("us-east-1", &account, Some(20.0));
    assert_eq!(checks.last().unwrap().status, Status::Warn);
    let checks = account_checks("us-east-1", &account, Some(10.0));
    assert_eq!(checks.last().unwrap().status, Status::Pass);

    let sandbox = Account {
        production_access_enabled: false,
        sending_enabled: false,
        enforcement_status: Some("SHUTDOWN".into()),
        send_quota: None,
    };
    let checks = account_checks("us-east-1", &sandbox, None);
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    assert_eq!(fails, 3, "{checks:?}");
    assert!(checks.iter().any(|c| c.message.contains("sandbox")));
}
