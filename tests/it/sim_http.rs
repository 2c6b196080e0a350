//! The simulator's web face over real HTTP: the Mailpit-compatible API (list, search by verdict
//! tag, message, headers, raw, delete), our verdict endpoint and page, the WebSocket event
//! stream, and the listener's defaults. The relay runs with its embedded simulator exactly as
//! `serve` starts it (`daemon::start`), on 127.0.0.1 port 0.

use std::net::SocketAddr;

use futures_util::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Keys, SmtpClient};
use dkim_relay::config;
use dkim_relay::daemon;

struct Staging {
    _dir: tempfile::TempDir,
    smtp: SocketAddr,
    http: SocketAddr,
    outbox: std::path::PathBuf,
    running: daemon::Running,
}

/// A relay with its embedded simulator and the simulator's HTTP server on port 0;
/// example.org publishes `p=reject`, so its verdicts are decisive.
async fn staging() -> Staging {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys::shared();
    let rsa = dir.path().join("s1.pem");
    dkim_relay::dkim::keygen::write_private_key(&rsa, &keys.org_rsa.pkcs8_pem).unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nsimulator = true\n\
         [simulator]\noutbox = \"outbox\"\nhttp_listen = \"127.0.0.1:0\"\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s1\"]\n\
         dmarc = \"v=DMARC1; p=reject\"\n\
         [domains.\"example.org\".selectors.s1]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n",
        rsa.display()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &text).unwrap();
    let snapshot = config::load(&path).unwrap();
    let running = daemon::start(&path, snapshot).await.unwrap();
    Staging {
        smtp: running.addrs.smtp[0],
        http: running
            .addrs
            .simulator_http
            .expect("simulator HTTP address"),
        outbox: running.simulator().unwrap().outbox.clone(),
        running,
        _dir: dir,
    }
}

impl Staging {
    /// Relays one message; returns the SES message ID.
    async fn send(&self, from: &str, rcpt: &str, subject: &str) -> String {
        let mut c = SmtpClient::connect(self.smtp).await;
        c.cmd("EHLO app.test").await;
        let msg = format!(
            "From: App <{from}>\r\nTo: {rcpt}\r\nSubject: {subject}\r\n\
             Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello <img src=\"https://tracker.test/x.png\"></p>\r\n"
        );
        let r = c.transaction(from, &[rcpt], msg.as_bytes()).await;
        assert_eq!(r.code, 250, "{r}");
        c.quit().await;
        r.lines[0].strip_prefix("Ok ").unwrap().to_string()
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, head, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    host: &str,
    body: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP head");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = unchunk(&body);
    }
    (status, head, body)
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[line_end + 2..line_end + 2 + size]);
        b = &b[line_end + 2 + size + 2..];
    }
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let (status, _, body) = http(addr, "GET", path, "127.0.0.1", None).await;
    (status, body)
}

async fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = get(addr, path).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn ids(list: &Value) -> Vec<String> {
    list["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ID"].as_str().unwrap().to_string())
        .collect()
}

/// List (Mailpit's shape, newest first, paging), search by verdict tag, one message (marked
/// read), headers, raw, the verdict JSON, parts, delete by ID and all; 404 for the unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailpit_api_lists_searches_reads_and_deletes() {
    let st = staging().await;
    let good = st
        .send("app@example.org", "someone@example.net", "aligned")
        .await;
    // A mailbox-simulator recipient: its outcome is a tag.
    let simulated = st
        .send(
            "app@example.org",
            "success@simulator.amazonses.com",
            "simulated <b>",
        )
        .await;

    let list = get_json(st.http, "/api/v1/messages").await;
    for key in [
        "total",
        "unread",
        "count",
        "messages_count",
        "messages_unread",
        "start",
        "tags",
        "messages",
    ] {
        assert!(list.get(key).is_some(), "missing {key}: {list}");
    }
    assert_eq!(list["total"], 2);
    assert_eq!(list["unread"], 2);
    assert_eq!(
        ids(&list),
        [simulated.as_str(), good.as_str()],
        "newest first"
    );
    let m = &list["messages"][1];
    for key in [
        "ID",
        "MessageID",
        "Read",
        "From",
        "To",
        "Cc",
        "Bcc",
        "ReplyTo",
        "Subject",
        "Created",
        "Tags",
        "Size",
        "Attachments",
        "Snippet",
    ] {
        assert!(m.get(key).is_some(), "missing {key}: {m}");
    }
    assert_eq!(m["From"]["Address"], "app@example.org");
    assert_eq!(m["From"]["Name"], "App");
    assert_eq!(m["To"][0]["Address"], "someone@example.net");
    assert!(
        m["MessageID"]
            .as_str()
            .unwrap()
            .ends_with("@email.amazonses.com")
    );
    let tags: Vec<&str> = m["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert!(tags.contains(&"dkim-pass"), "{tags:?}");
    assert!(tags.contains(&"dmarc-pass"), "{tags:?}");
    assert!(tags.contains(&"spf-pass"), "{tags:?}");

    // Paging.
    let page = get_json(st.http, "/api/v1/messages?start=1&limit=1").await;
    assert_eq!(ids(&page), [good.as_str()]);
    assert_eq!(page["start"], 1);
    assert_eq!(page["messages_count"], 2);

    // Search: by verdict tag, by simulator outcome, by subject and from, exclusion.
    let found = get_json(st.http, "/api/v1/search?query=tag:dmarc-pass").await;
    assert_eq!(found["messages_count"], 2);
    let found = get_json(st.http, "/api/v1/search?query=tag:simulator-delivered").await;
    assert_eq!(ids(&found), [simulated.as_str()]);
    let found = get_json(st.http, "/api/v1/search?query=-tag:simulator-delivered").await;
    assert_eq!(ids(&found), [good.as_str()]);
    let found = get_json(
        st.http,
        "/api/v1/search?query=subject:aligned%20from:example.org",
    )
    .await;
    assert_eq!(ids(&found), [good.as_str()]);
    assert_eq!(
        get_json(st.http, "/api/v1/search?query=tag:dmarc-fail").await["messages_count"],
        0
    );
    let (status, _) = get(st.http, "/api/v1/search?query=").await;
    assert_eq!(status, 400);

    // One message: Mailpit's Message, and it is now read.
    let msg = get_json(st.http, &format!("/api/v1/message/{good}")).await;
    assert_eq!(msg["ID"], good.as_str());
    assert!(msg["HTML"].as_str().unwrap().contains("Hello"));
    assert_eq!(
        msg["ReturnPath"],
        format!("{good}@mail.example.org").as_str()
    );
    let latest = get_json(st.http, "/api/v1/message/latest").await;
    assert_eq!(latest["ID"], simulated.as_str());
    let unread = get_json(st.http, "/api/v1/search?query=is:unread").await;
    assert_eq!(unread["messages_count"], 0, "both were opened");

    // PUT read status.
    let (status, _, body) = http(
        st.http,
        "PUT",
        "/api/v1/messages",
        "127.0.0.1",
        Some(&format!("{{\"IDs\":[\"{good}\"],\"Read\":false}}")),
    )
    .await;
    assert_eq!((status, body.as_slice()), (200, b"ok".as_slice()));
    let unread = get_json(st.http, "/api/v1/search?query=is:unread").await;
    assert_eq!(ids(&unread), [good.as_str()]);

    // Headers (Go's canonical keys, as Mailpit) and raw source.
    let headers = get_json(st.http, &format!("/api/v1/message/{good}/headers")).await;
    assert_eq!(headers["Dkim-Signature"].as_array().unwrap().len(), 2);
    assert_eq!(
        headers["Message-Id"][0],
        format!("<{good}@email.amazonses.com>").as_str()
    );
    let (status, raw) = get(st.http, &format!("/api/v1/message/{good}/raw")).await;
    assert_eq!(status, 200);
    assert_eq!(
        raw,
        std::fs::read(st.outbox.join(format!("{good}.eml"))).unwrap(),
        "raw is the delivered message byte for byte"
    );

    // Our verdict endpoint.
    let v = get_json(st.http, &format!("/api/v1/message/{good}/verdict")).await;
    assert_eq!(v["summary"], "pass");
    assert_eq!(v["dmarc"]["policy"], "reject");
    let signers: Vec<&str> = v["dkim"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["signer"].as_str().unwrap())
        .collect();
    assert!(
        signers.contains(&"yours") && signers.contains(&"ses"),
        "{signers:?}"
    );
    assert!(
        v["authentication_results"]
            .as_str()
            .unwrap()
            .contains("dmarc=pass (p=reject dis=none) header.from=example.org"),
        "{v}"
    );

    // Unknown IDs and parts.
    assert_eq!(get(st.http, "/api/v1/message/0100abc/raw").await.0, 404);
    assert_eq!(get(st.http, "/api/v1/message/..%2Fx").await.0, 404);
    assert_eq!(
        get(st.http, &format!("/api/v1/message/{good}/part/9"))
            .await
            .0,
        404
    );

    // Delete one by ID: the files go, the list follows.
    let (status, _, _) = http(
        st.http,
        "DELETE",
        "/api/v1/messages",
        "127.0.0.1",
        Some(&format!("{{\"IDs\":[\"{good}\"]}}")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!st.outbox.join(format!("{good}.json")).exists());
    assert!(!st.outbox.join(format!("{good}.eml")).exists());
    assert_eq!(
        ids(&get_json(st.http, "/api/v1/messages").await),
        [simulated]
    );
    // A body that is not JSON is refused, not taken as "delete all".
    let (status, _, _) = http(
        st.http,
        "DELETE",
        "/api/v1/messages",
        "127.0.0.1",
        Some("{oops"),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(get_json(st.http, "/api/v1/messages").await["total"], 1);
    // No body: everything (Mailpit's rule).
    let (status, _, _) = http(st.http, "DELETE", "/api/v1/messages", "127.0.0.1", None).await;
    assert_eq!(status, 200);
    assert_eq!(get_json(st.http, "/api/v1/messages").await["total"], 0);

    // Info, health.
    let info = get_json(st.http, "/api/v1/info").await;
    assert_eq!(info["Messages"], 0);
    assert_eq!(info["RuntimeStats"]["MessagesDeleted"], 2);
    assert_eq!(get(st.http, "/livez").await.0, 200);
    assert_eq!(get(st.http, "/readyz").await.0, 200);
    st.running.shutdown().await;
}

/// The list and message pages: server-rendered, everything from the message escaped, the HTML
/// body in a sandboxed srcdoc iframe under a CSP that forbids remote loads; a request for a
/// foreign host name (DNS rebinding) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_escaped_and_sandboxed() {
    let st = staging().await;
    let id = st
        .send(
            "app@example.org",
            "someone@example.net",
            "<script>alert(1)</script>",
        )
        .await;
    let (status, head, body) = http(st.http, "GET", "/", "127.0.0.1", None).await;
    assert_eq!(status, 200);
    let page = String::from_utf8(body).unwrap();
    assert!(page.contains(&format!("href=\"/view/{id}\"")), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains("<script>alert"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'")
    );

    let (status, head, body) = http(
        st.http,
        "GET",
        &format!("/view/{id}"),
        "localhost:8025",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let view = String::from_utf8(body).unwrap();
    assert!(!view.contains("<script>alert"), "subject not escaped");
    assert!(view.contains("DKIM signature 1"), "{view}");
    assert!(view.contains("SES's (d=amazonses.com)"), "{view}");
    assert!(view.contains("Authentication-Results: mx.verdict.dkim-relay.invalid"));
    assert!(view.contains("What SES changed"));
    // The HTML body: sandboxed, escaped into srcdoc, remote loads forbidden twice.
    assert!(
        view.contains("<iframe class=\"body\" title=\"HTML body of the message\" sandbox=\"\"")
    );
    assert!(view.contains("srcdoc=\"&lt;meta http-equiv=&quot;Content-Security-Policy&quot; content=&quot;default-src &#39;none&#39;"));
    assert!(!view.contains("<img src=\"https://tracker.test"));
    let csp = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-security-policy:")
        })
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("https:"),
        "{csp}"
    );

    let (status, _, _) = http(st.http, "GET", "/", "attacker.example:8025", None).await;
    assert_eq!(status, 400);
    st.running.shutdown().await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next event frame as JSON.
async fn next(ws: &mut Ws) -> Value {
    // A guard against a hang, not a timing assertion.
    let frame = tokio::time::timeout(std::time::Duration::from_secs(30), ws.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    serde_json::from_str(frame.to_text().unwrap()).unwrap()
}

/// `/api/events` announces a new message in Mailpit's shape, then its deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_announces_new_and_deleted_messages() {
    let st = staging().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/api/events", st.http))
        .await
        .unwrap();
    let id = st
        .send("app@example.org", "someone@example.net", "live")
        .await;
    let ev = next(&mut ws).await;
    assert_eq!(ev["Type"], "new", "{ev}");
    assert_eq!(ev["Data"]["ID"], id.as_str());
    assert_eq!(ev["Data"]["Subject"], "live");
    assert!(
        ev["Data"]["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "dmarc-pass")
    );
    let (status, _, _) = http(
        st.http,
        "DELETE",
        "/api/v1/messages",
        "127.0.0.1",
        Some(&format!("{{\"IDs\":[\"{id}\"]}}")),
    )
    .await;
    assert_eq!(status, 200);
    let ev = next(&mut ws).await;
    assert_eq!(ev["Type"], "delete", "{ev}");
    assert_eq!(ev["Data"]["ID"], id.as_str());
    // A page on another site cannot open the stream (WebSockets skip the same-origin rule).
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/events", st.http)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", "https://attacker.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    let mut req = format!("ws://{}/api/events", st.http)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", format!("http://{}", st.http).parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
    st.running.shutdown().await;
}

/// `http_listen` defaults to Mailpit's port on loopback; empty turns it off; an address the
/// file names must bind (a taken default is only a warning, so a second simulator starts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listen_defaults_to_loopback_and_an_explicit_address_must_bind() {
    let s =
        dkim_relay::sim::config::SimSettings::resolve(None, std::path::Path::new("/tmp")).unwrap();
    let default = s.http_listen.unwrap();
    assert!(default.ip().is_loopback(), "{default}");
    assert_eq!(default.port(), 8025);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sim.toml");
    let base = "region = \"us-east-1\"\noutbox = \"outbox\"\nstarttls_listen = \"127.0.0.1:0\"\n\
                implicit_listen = \"off\"\n";
    std::fs::write(&path, format!("{base}http_listen = \"\"\n")).unwrap();
    let sim = daemon::start_simulator(&path).await.unwrap();
    assert!(sim.http.is_none());
    sim.shutdown().await;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    std::fs::write(&path, format!("{base}http_listen = \"{addr}\"\n")).unwrap();
    let err = daemon::start_simulator(&path).await.unwrap_err();
    assert!(
        matches!(err, daemon::StartError::SimulatorHttp(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("http_listen"), "{err}");
    drop(taken);

    std::fs::write(&path, format!("{base}http_listen = \"127.0.0.1:0\"\n")).unwrap();
    let sim = daemon::start_simulator(&path).await.unwrap();
    let http = sim.http.as_ref().unwrap().addr;
    assert!(http.ip().is_loopback());
    assert_eq!(get_json(http, "/api/v1/messages").await["total"], 0);
    sim.shutdown().await;
}

/// Mailbox-simulator recipients: the feedback SES would send goes to the MAIL FROM, into the
/// outbox, linked to the original, listed and searchable (`tag:feedback-bounce`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_for_the_mailbox_simulator_is_listed_and_linked() {
    let st = staging().await;
    let bounced = st
        .send(
            "app@example.org",
            "bounce@simulator.amazonses.com",
            "will bounce",
        )
        .await;
    let complained = st
        .send(
            "app@example.org",
            "complaint@simulator.amazonses.com",
            "will complain",
        )
        .await;
    let delivered = st
        .send("app@example.org", "success@simulator.amazonses.com", "fine")
        .await;
    let all = get_json(st.http, "/api/v1/messages").await;
    assert_eq!(all["total"], 5, "three messages, two notifications: {all}");

    let dsn = get_json(st.http, "/api/v1/search?query=tag:feedback-bounce").await;
    assert_eq!(dsn["messages_count"], 1, "{dsn}");
    let m = &dsn["messages"][0];
    assert_eq!(m["Subject"], "Delivery Status Notification (Failure)");
    assert_eq!(
        m["To"][0]["Address"], "app@mail.example.org",
        "to the MAIL FROM"
    );
    let id = m["ID"].as_str().unwrap();
    let (_, raw) = get(st.http, &format!("/api/v1/message/{id}/raw")).await;
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.contains("report-type=delivery-status"), "{raw}");
    assert!(
        raw.contains(&format!("In-Reply-To: <{bounced}@email.amazonses.com>")),
        "{raw}"
    );
    let (_, view) = get(st.http, &format!("/view/{id}")).await;
    assert!(
        String::from_utf8(view)
            .unwrap()
            .contains(&format!("href=\"/view/{bounced}\""))
    );
    let (_, view) = get(st.http, &format!("/view/{bounced}")).await;
    assert!(
        String::from_utf8(view)
            .unwrap()
            .contains(&format!("href=\"/view/{id}\""))
    );

    let arf = get_json(st.http, "/api/v1/search?query=tag:feedback-complaint").await;
    assert_eq!(arf["messages_count"], 1);
    let arf_id = arf["messages"][0]["ID"].as_str().unwrap();
    let (_, raw) = get(st.http, &format!("/api/v1/message/{arf_id}/raw")).await;
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.contains("Feedback-Type: abuse"), "{raw}");
    assert!(raw.contains(&format!("<{complained}@email.amazonses.com>")));
    let fine = get_json(st.http, "/api/v1/search?query=tag:simulator-delivered").await;
    assert_eq!(ids(&fine), [delivered]);
    st.running.shutdown().await;
}
