//! Issue 9, tenant binding, black-box through real sockets (relay → its embedded SES simulator):
//! a user allowed `example.org` with `subdomains = true` gets neither `tenant.example.org`'s key
//! (its own `[domains]` entry) nor its names in Sender, Resent-From, Resent-Sender or SES's
//! delegate-sending ARN headers: `550 5.7.1`, nothing sent upstream. What it may send still
//! goes through and verifies with dkimpy.

use crate::from_policy::{Staging, dns, enhanced, ours_only, staging};
use crate::support::{SmtpClient, sim::plain, verify_dkim_dkimpy};

const PASSWORD: &str = "tenant-test-password";

async fn tenants() -> Staging {
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let server = format!(
        "allow_networks = [\"192.0.2.0/24\"]\nauth_plaintext_loopback = true\n\
         [[server.users]]\nname = \"app\"\npassword_hash = \"{hash}\"\ndomains = [\"example.org\"]\n\
         [[server.users]]\nname = \"tenant\"\npassword_hash = \"{hash}\"\n\
         domains = [\"tenant.example.org\"]\n"
    );
    staging(
        &server,
        &[
            ("example.org", true),
            ("tenant.example.org", false),
            ("example.net", false),
        ],
    )
    .await
}

async fn login(st: &Staging, user: &str) -> SmtpClient {
    let mut c = SmtpClient::connect(st.addr).await;
    c.cmd("EHLO app.test").await;
    let r = c
        .cmd(&format!("AUTH PLAIN {}", plain(user, PASSWORD)))
        .await;
    assert_eq!(r.code, 235, "{r}");
    c
}

fn message(from: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: App <{from}>\r\nTo: someone@example.net\r\nSubject: tenant\r\n{extra}\r\nhello\r\n"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_domain_user_never_gets_a_tenant_entrys_key() {
    let st = tenants().await;
    let mut app = login(&st, "app").await;
    // The tenant's own entry: refused, whichever envelope.
    let r = app
        .transaction(
            "app@example.org",
            &["someone@example.net"],
            &message("x@tenant.example.org", ""),
        )
        .await;
    assert_eq!(enhanced(&r), (550, Some("5.7.1")), "{r}");
    let r = app.cmd("MAIL FROM:<x@tenant.example.org>").await;
    assert_eq!(enhanced(&r), (550, Some("5.7.1")), "{r}");
    assert!(st.delivered().is_empty(), "the tenant's key was used");
    // A subdomain no entry of its own claims is the parent's: signed d=example.org.
    let r = app
        .transaction(
            "app@example.org",
            &["someone@example.net"],
            &message("x@news.example.org", ""),
        )
        .await;
    assert_eq!(r.code, 250, "{r}");
    let eml = ours_only(&st.eml(&r));
    assert!(String::from_utf8_lossy(&eml).contains("d=example.org;"));
    verify_dkim_dkimpy(&eml, &dns(&["example.org"])).unwrap();
    // The tenant itself signs with its own key.
    let mut tenant = login(&st, "tenant").await;
    let r = tenant
        .transaction(
            "x@tenant.example.org",
            &["someone@example.net"],
            &message("x@tenant.example.org", ""),
        )
        .await;
    assert_eq!(r.code, 250, "{r}");
    let eml = ours_only(&st.eml(&r));
    assert!(String::from_utf8_lossy(&eml).contains("d=tenant.example.org;"));
    verify_dkim_dkimpy(&eml, &dns(&["tenant.example.org"])).unwrap();
    // …and not the parent's.
    let r = tenant
        .transaction(
            "x@tenant.example.org",
            &["someone@example.net"],
            &message("x@example.org", ""),
        )
        .await;
    assert_eq!(enhanced(&r), (550, Some("5.7.1")), "{r}");
    assert_eq!(st.delivered().len(), 2);
    st.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_identities_in_the_header_are_bound_to_the_user() {
    let st = tenants().await;
    let mut app = login(&st, "app").await;
    for extra in [
        "Sender: x@tenant.example.org\r\n",
        "Sender: App <x@example.net>\r\n",
        "Resent-From: x@tenant.example.org\r\n",
        "Resent-From: a@example.org, x@example.net\r\n",
        "Resent-Sender: x@tenant.example.org\r\n",
        "X-SES-SOURCE-ARN: arn:aws:ses:eu-west-1:123456789012:identity/tenant.example.org\r\n",
        "X-SES-FROM-ARN: arn:aws:ses:eu-west-1:123456789012:identity/x@example.net\r\n",
        "X-SES-SOURCE-ARN: not-an-arn\r\n",
    ] {
        let r = app
            .transaction(
                "app@example.org",
                &["someone@example.net"],
                &message("app@example.org", extra),
            )
            .await;
        assert_eq!(enhanced(&r), (550, Some("5.7.1")), "{extra:?} got {r}");
    }
    // An ambiguous Sender cannot be checked: refused as such.
    let r = app
        .transaction(
            "app@example.org",
            &["someone@example.net"],
            &message(
                "app@example.org",
                "Sender: x@tenant.example.org@example.org\r\n",
            ),
        )
        .await;
    assert_eq!(enhanced(&r), (550, Some("5.6.0")), "{r}");
    assert!(
        st.delivered().is_empty(),
        "a refused message was sent upstream"
    );
    // The user's own names pass, and the delivered message verifies.
    let r = app
        .transaction(
            "app@example.org",
            &["someone@example.net"],
            &message(
                "app@example.org",
                "Sender: ops@example.org\r\nResent-From: news@news.example.org\r\n",
            ),
        )
        .await;
    assert_eq!(r.code, 250, "{r}");
    verify_dkim_dkimpy(&ours_only(&st.eml(&r)), &dns(&["example.org"])).unwrap();
    st.stop().await;
}
