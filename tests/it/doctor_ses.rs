//! `dkim-relay doctor --ses` against a local fake of the SES API v2 (hyper on 127.0.0.1:0,
//! plain HTTP through `--ses-endpoint http://127.0.0.1:PORT`), beside a DNS server that
//! publishes everything, so only the SES side varies. The fake answers `GetEmailIdentity` and
//! `GetAccount` with JSON shaped like SES's (API v2 reference: field names, enum values, the
//! 404 NotFoundException) and refuses, like SES, a request that is not SigV4-signed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use crate::support::dns_server::{DnsServer, Zone};
use dkim_relay::config;

const ACCESS_KEY: &str = "AKIDEXAMPLEH9";
const SECRET_KEY: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYh9SECRET";

/// What the fake answers: identity JSON per domain (absent → 404), the account JSON.
#[derive(Default)]
struct FakeSes {
    identities: HashMap<String, String>,
    account: String,
    /// Every request: (path, headers lower-cased).
    seen: Vec<(String, HashMap<String, String>)>,
    /// Answer 403 UnrecognizedClientException to everything (an unknown or revoked key).
    refuse: bool,
}

fn identity_json(
    verified: bool,
    mail_from: &str,
    status: &str,
    behavior: &str,
    dkim: &str,
) -> String {
    format!(
        r#"{{
  "IdentityType": "DOMAIN",
  "FeedbackForwardingStatus": true,
  "VerifiedForSendingStatus": {verified},
  "VerificationStatus": "{}",
  "DkimAttributes": {dkim},
  "MailFromAttributes": {{
    "MailFromDomain": "{mail_from}",
    "MailFromDomainStatus": "{status}",
    "BehaviorOnMxFailure": "{behavior}"
  }},
  "Policies": {{}},
  "Tags": [],
  "ConfigurationSetName": null,
  "VerificationInfo": {{"LastCheckedTimestamp": 1.7e9}}
}}"#,
        if verified { "SUCCESS" } else { "PENDING" }
    )
}

const DKIM_OFF: &str = r#"{"SigningEnabled": false, "Status": "NOT_STARTED", "Tokens": []}"#;
const EASY_DKIM_ON: &str = r#"{"SigningEnabled": true, "Status": "SUCCESS",
  "Tokens": ["a1b2c3", "d4e5f6", "g7h8i9"], "SigningAttributesOrigin": "AWS_SES",
  "CurrentSigningKeyLength": "RSA_2048_BIT", "NextSigningKeyLength": "RSA_2048_BIT",
  "LastKeyGenerationTimestamp": 1.7e9}"#;

fn good_identity() -> String {
    identity_json(
        true,
        "mail.example.org",
        "SUCCESS",
        "REJECT_MESSAGE",
        DKIM_OFF,
    )
}

fn account_json(production: bool) -> String {
    format!(
        r#"{{
  "DedicatedIpAutoWarmupEnabled": false,
  "EnforcementStatus": "HEALTHY",
  "ProductionAccessEnabled": {production},
  "SendingEnabled": true,
  "SendQuota": {{"Max24HourSend": {}, "MaxSendRate": {}, "SentLast24Hours": 3.0}},
  "SuppressionAttributes": {{"SuppressedReasons": ["BOUNCE", "COMPLAINT"]}},
  "Details": {{"MailType": "TRANSACTIONAL", "WebsiteURL": "https://example.org"}}
}}"#,
        if production { "50000.0" } else { "200.0" },
        if production { "14.0" } else { "1.0" },
    )
}

/// The SigV4 shape: `AWS4-HMAC-SHA256 Credential=KEY/YYYYMMDD/REGION/ses/aws4_request,
/// SignedHeaders=…host…x-amz-date…, Signature=<64 hex>`, and an `x-amz-date` of that day.
fn sigv4_problem(headers: &HashMap<String, String>) -> Option<String> {
    let Some(auth) = headers.get("authorization") else {
        return Some("no Authorization header".into());
    };
    let Some(date) = headers.get("x-amz-date") else {
        return Some("no x-amz-date".into());
    };
    let ok_date = date.len() == 16
        && date.as_bytes()[8] == b'T'
        && date.ends_with('Z')
        && date[..8].bytes().all(|b| b.is_ascii_digit());
    if !ok_date {
        return Some(format!("x-amz-date {date:?}"));
    }
    let Some(rest) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return Some(format!("not AWS4-HMAC-SHA256: {auth}"));
    };
    let parts: Vec<&str> = rest.split(", ").collect();
    let [cred, signed, sig] = parts.as_slice() else {
        return Some(format!("shape: {auth}"));
    };
    let want = format!(
        "Credential={ACCESS_KEY}/{}/us-east-1/ses/aws4_request",
        &date[..8]
    );
    if *cred != want {
        return Some(format!("{cred} != {want}"));
    }
    let signed: Vec<&str> = signed
        .strip_prefix("SignedHeaders=")
        .unwrap_or("")
        .split(';')
        .collect();
    if !signed.contains(&"host") || !signed.contains(&"x-amz-date") {
        return Some(format!("signed headers {signed:?}"));
    }
    let sig = sig.strip_prefix("Signature=").unwrap_or("");
    if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(format!("signature {sig:?}"));
    }
    None
}

fn json(status: u16, body: String, error_type: Option<&str>) -> Response<Full<Bytes>> {
    let mut r = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-amzn-requestid", "0f3e6f1e-h9");
    if let Some(t) = error_type {
        r = r.header(
            "x-amzn-errortype",
            format!("{t}:http://internal.amazon.com/"),
        );
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

async fn handle(
    fake: Arc<Mutex<FakeSes>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut f = fake.lock().unwrap();
    f.seen.push((path.clone(), headers.clone()));
    if let Some(problem) = sigv4_problem(&headers) {
        return Ok(json(
            403,
            format!(r#"{{"message":"{problem}"}}"#),
            Some("IncompleteSignatureException"),
        ));
    }
    if f.refuse {
        return Ok(json(
            403,
            r#"{"message":"The security token included in the request is invalid."}"#.into(),
            Some("UnrecognizedClientException"),
        ));
    }
    if req.method() != hyper::Method::GET {
        return Ok(json(405, "{}".into(), None));
    }
    if path == "/v2/email/account" {
        return Ok(json(200, f.account.clone(), None));
    }
    if let Some(domain) = path.strip_prefix("/v2/email/identities/") {
        return Ok(match f.identities.get(domain) {
            Some(body) => json(200, body.clone(), None),
            None => json(
                404,
                format!(r#"{{"message":"Email identity {domain} does not exist."}}"#),
                Some("NotFoundException"),
            ),
        });
    }
    Ok(json(404, r#"{"message":"no route"}"#.into(), None))
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    dns: DnsServer,
    fake: Arc<Mutex<FakeSes>>,
    ses_addr: std::net::SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn write_config(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keys.join("s2026a.pem");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/example.org/s2026a.pem"),
        &key,
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = "[upstream]\nsimulator = true\n[simulator]\nhttp_listen = \"\"\nregion = \"us-east-1\"\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s2026a\"]\n\
         [domains.\"example.org\".selectors.s2026a]\nalgorithm = \"rsa-sha256\"\n\
         key_file = \"keys/s2026a.pem\"\n";
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// DNS publishing everything the configuration needs, and the fake SES answering `identity`
/// for example.org (None: 404) and `account`.
async fn setup(identity: Option<String>, account: String) -> Setup {
    start(identity, account, None).await
}

/// [`setup`], the fake serving HTTPS with a certificate for 127.0.0.1 from a fresh CA, whose
/// PEM is written to `ca.pem` in the setup's directory.
async fn setup_tls(identity: Option<String>, account: String) -> (Setup, PathBuf) {
    let certs = dkim_relay::tls::generate_certs(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let server =
        dkim_relay::tls::server_config(certs.cert_chain_pem.as_bytes(), certs.key_pem.as_bytes())
            .unwrap();
    let s = start(identity, account, Some(server)).await;
    let ca = s._dir.path().join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    (s, ca)
}

async fn start(
    identity: Option<String>,
    account: String,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let snapshot = config::load(&config).unwrap();
    let mut zone = Zone::from_records(&dkim_relay::cli::records_for(&snapshot));
    zone.set_txt(
        "_dmarc.example.org",
        &["v=DMARC1; p=reject; rua=mailto:dmarc@example.org"],
    );
    let dns = DnsServer::start(zone).await;
    let mut fake = FakeSes {
        account,
        ..FakeSes::default()
    };
    if let Some(body) = identity {
        fake.identities.insert("example.org".into(), body);
    }
    let fake = Arc::new(Mutex::new(fake));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ses_addr = listener.local_addr().unwrap();
    let shared = fake.clone();
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let fake = shared.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(fake.clone(), req));
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(config) => {
                        let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        else {
                            return;
                        };
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                }
            });
        }
    });
    Setup {
        _dir: dir,
        config,
        dns,
        fake,
        ses_addr,
        server,
    }
}

struct Run {
    code: i32,
    lines: Vec<String>,
    stderr: String,
}

impl Run {
    fn line(&self, prefix: &str) -> &str {
        self.lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}… in {:#?}", self.lines))
    }
}

impl Setup {
    /// Runs `doctor --ses` with credentials in the environment (or none, `with_credentials`
    /// false) and no AWS configuration from the machine.
    async fn run(&self, with_credentials: bool, endpoint: Option<String>) -> Run {
        self.run_with(with_credentials, endpoint, &[]).await
    }

    async fn run_with(
        &self,
        with_credentials: bool,
        endpoint: Option<String>,
        extra: &[&std::ffi::OsStr],
    ) -> Run {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_dkim-relay"));
        cmd.arg("doctor")
            .arg("--config")
            .arg(&self.config)
            .arg("--nameserver")
            .arg(self.dns.addr.to_string())
            .arg("--ses")
            .arg("--ses-endpoint")
            .arg(endpoint.unwrap_or_else(|| format!("http://{}", self.ses_addr)))
            .args(extra);
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
            "AWS_REGION",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self._dir.path()).env(
            "AWS_SHARED_CREDENTIALS_FILE",
            self._dir.path().join("no-such-credentials"),
        );
        if with_credentials {
            cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                .env("AWS_SESSION_TOKEN", "h9-session-token");
        }
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("doctor finished")
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            !stdout.contains(SECRET_KEY) && !stderr.contains(SECRET_KEY),
            "the secret key leaked"
        );
        assert!(!stdout.contains("h9-session-token") && !stderr.contains("h9-session-token"));
        Run {
            code: out.status.code().unwrap_or(-1),
            lines: stdout.lines().map(str::to_string).collect(),
            stderr,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_good_passes_with_signed_requests() {
    let s = setup(Some(good_identity()), account_json(true)).await;
    let r = s.run(true, None).await;
    assert_eq!(r.code, 0, "{:#?}\n{}", r.lines, r.stderr);
    r.line("PASS SES credentials: from environment, region us-east-1");
    r.line("PASS SES identity example.org: verified for sending in us-east-1");
    r.line("PASS SES MAIL FROM example.org: mail.example.org, verified, BehaviorOnMxFailure REJECT_MESSAGE");
    r.line("PASS SES DKIM example.org: SES does not sign");
    r.line("PASS SES account us-east-1: sending enabled");
    r.line("PASS SES account us-east-1: production access");
    r.line("PASS SES account us-east-1: MaxSendRate 14/s, Max24HourSend 50000");
    // The DNS checks ran too (the SES part is added to doctor, not instead of it).
    r.line("PASS mail.example.org MX:");

    let fake = s.fake.lock().unwrap();
    let paths: Vec<&str> = fake.seen.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["/v2/email/identities/example.org", "/v2/email/account"]
    );
    for (path, headers) in &fake.seen {
        assert_eq!(sigv4_problem(headers), None, "{path}: {headers:#?}");
        assert_eq!(headers["host"], s.ses_addr.to_string());
        assert_eq!(headers["x-amz-security-token"], "h9-session-token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_identity_fails() {
    let body = identity_json(
        false,
        "mail.example.org",
        "SUCCESS",
        "REJECT_MESSAGE",
        DKIM_OFF,
    );
    let s = setup(Some(body), account_json(true)).await;
    let r = s.run(true, None).await;
    assert_eq!(r.code, 1, "{:#?}", r.lines);
    let line = r.line("FAIL SES identity example.org: not verified for sending");
    assert!(
        line.contains("VerificationStatus PENDING") && line.contains(" — fix: "),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_identity_fails() {
    let s = setup(None, account_json(true)).await;
    let r = s.run(true, None).await;
    assert_eq!(r.code, 1, "{:#?}", r.lines);
    r.line("FAIL SES identity example.org: not an SES identity in us-east-1");
    // The account is still checked.
    r.line("PASS SES account us-east-1: sending enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_from_mismatch_fails() {
    let body = identity_json(
        true,
        "bounce.example.org",
        "SUCCESS",
        "REJECT_MESSAGE",
        DKIM_OFF,
    );
    let s = setup(Some(body), account_json(true)).await;
    let r = s.run(true, None).await;
    assert_eq!(r.code, 1, "{:#?}", r.lines);
    let line =
        r.line("FAIL SES MAIL FROM example.org: SES uses the custom MAIL FROM bounce.example.org");
    assert!(
        line.contains("--mail-from-domain mail.example.org"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_default_value_warns_about_the_silent_fallback() {
    let body = identity_json(
        true,
        "mail.example.org",
        "SUCCESS",
        "USE_DEFAULT_VALUE",
        DKIM_OFF,
    );
    let s = setup(Some(body), account_json(true)).await;
    let r = s.run(true, None).await;
    assert_eq!(r.code, 0, "a warning does not fail doctor: {:#?}", r.lines);
    let line = r.line("WARN SES MAIL FROM example.org:");
    assert!(
        line.contains("BehaviorOnMxFailure is USE_DEFAULT_VALUE")
            && line.contains("silently falls back")
            && line.contains("SPF stops aligning")
            && line.contains("--behavior-on-mx-failure REJECT_MESSAGE"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_fails() {
    let s = setup(Some(good_identity()), account_json(false)).await;
    let r = s.run(true, None).await;
    assert_eq!(r.code, 1, "{:#?}", r.lines);
    let line = r.line("FAIL SES account us-east-1: in the sandbox");
    assert!(line.contains("request production access"), "{line}");
    r.line("PASS SES account us-east-1: MaxSendRate 1/s, Max24HourSend 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn easy_dkim_is_noted() {
    let body = identity_json(
        true,
        "mail.example.org",
        "SUCCESS",
        "REJECT_MESSAGE",
        EASY_DKIM_ON,
    );
    let s = setup(Some(body), account_json(true)).await;
    let r = s.run(true, None).await;
    assert_eq!(r.code, 0, "{:#?}", r.lines);
    let line = r.line("PASS SES DKIM example.org: note: SES also signs with Easy DKIM");
    assert!(line.contains("two DKIM signatures"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_is_a_clear_failure() {
    let s = setup(Some(good_identity()), account_json(true)).await;
    let r = s.run(false, None).await;
    assert_eq!(r.code, 1, "{:#?}", r.lines);
    let line = r.line(
        "FAIL SES credentials: no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    );
    assert!(
        line.contains("no-such-credentials"),
        "names the file it looked in: {line}"
    );
    assert!(s.fake.lock().unwrap().seen.is_empty(), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_to_loopback() {
    let s = setup(Some(good_identity()), account_json(true)).await;
    let r = s.run(true, Some("http://192.0.2.1:8080".into())).await;
    assert_eq!(r.code, 1, "{:#?}", r.lines);
    r.line("FAIL SES endpoint: --ses-endpoint \"http://192.0.2.1:8080\": plain http is allowed only to a loopback address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_reported_without_secrets() {
    let s = setup(Some(good_identity()), account_json(true)).await;
    s.fake.lock().unwrap().refuse = true;
    let r = s.run(true, None).await;
    assert_eq!(r.code, 1, "{:#?}", r.lines);
    let line = r.line("FAIL SES identity example.org: GetEmailIdentity failed: SES answered 403 UnrecognizedClientException: The security token included in the request is invalid.");
    assert!(line.contains("ses:GetEmailIdentity"), "{line}");
    r.line("FAIL SES account us-east-1: GetAccount failed: SES answered 403");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_endpoint_is_verified_against_the_roots_and_ses_ca_file() {
    let (s, ca) = setup_tls(Some(good_identity()), account_json(true)).await;
    let url = format!("https://{}", s.ses_addr);
    // Not trusted by the public roots: a TLS failure, nothing sent in clear.
    let r = s.run(true, Some(url.clone())).await;
    assert_eq!(r.code, 1, "{:#?}", r.lines);
    let line = r.line(
        "FAIL SES identity example.org: GetEmailIdentity failed: cannot reach https://127.0.0.1:",
    );
    assert!(line.contains("TLS"), "{line}");
    assert!(s.fake.lock().unwrap().seen.is_empty());
    // Trusted through --ses-ca-file: the same checks as over plain HTTP.
    let r = s
        .run_with(true, Some(url), &["--ses-ca-file".as_ref(), ca.as_os_str()])
        .await;
    assert_eq!(r.code, 0, "{:#?}\n{}", r.lines, r.stderr);
    r.line("PASS SES identity example.org: verified for sending in us-east-1");
    r.line("PASS SES account us-east-1: production access");
    let fake = s.fake.lock().unwrap();
    assert_eq!(fake.seen.len(), 2);
    for (path, headers) in &fake.seen {
        assert_eq!(sigv4_problem(headers), None, "{path}: {headers:#?}");
    }
}
