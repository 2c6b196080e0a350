//! The operator's HTTP endpoint (`[http] listen`): `/metrics` scraped after real traffic through
//! the relay to its embedded SES simulator (delivered, throttled, refused for good, and a From
//! domain the configuration does not list), the exposition parsed as Prometheus text;
//! `/livez` and `/readyz` (with a failing check, and while draining); and `serve` run as a
//! process with `log_format = "json"`, every log line parsed as JSON, probed with
//! `dkim-relay health`.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Keys, SmtpClient};
use dkim_relay::config;
use dkim_relay::daemon;

/// The relay on its simulator, with `[http]` on port 0 and `sim_extra` in `[simulator]`.
fn write_config(dir: &std::path::Path, top: &str, sim_extra: &str) -> std::path::PathBuf {
    let rsa = dir.join("s1.pem");
    dkim_relay::dkim::keygen::write_private_key(&rsa, &Keys::shared().org_rsa.pkcs8_pem).unwrap();
    let text = format!(
        "{top}\n[server]\nlisten = \"127.0.0.1:0\"\n[upstream]\nsimulator = true\n\
         [simulator]\nhttp_listen = \"\"\nregion = \"eu-west-1\"\noutbox = \"outbox\"\n{sim_extra}\n\
         [http]\nlisten = \"127.0.0.1:0\"\n\
         [domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s1\"]\n\
         [domains.\"example.org\".selectors.s1]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n",
        rsa.display()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn start(dir: &std::path::Path, sim_extra: &str) -> daemon::Running {
    let path = write_config(dir, "", sim_extra);
    let snapshot = config::load(&path).unwrap();
    daemon::start(&path, snapshot).await.unwrap()
}

/// GET `path` over plain HTTP/1.1: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn message(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: App <{from}>\r\nTo: someone@example.net\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@app.example.org>\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; d=stale.example; s=x; h=From; bh=AAAA; b=AAAA\r\n\r\nhello\r\n"
    )
    .into_bytes()
}

/// Checks the exposition the way a scraper reads it and returns every sample as
/// `name{labels}` → value: the OpenMetrics `# EOF` ending, a `# TYPE` for every family,
/// metric and label names by the Prometheus rules, and the `prometheus-parse` crate's reading.
fn parse(text: &str) -> HashMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no # EOF ending:\n{text}");
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(name.starts_with("dkim_relay_"), "{line}");
            assert!(name_ok(name), "{line}");
            typed.push(name.to_string());
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(name_ok(name), "bad metric name: {line}");
            assert!(
                typed.iter().any(|t| name.starts_with(t.as_str())),
                "sample without # TYPE: {line}"
            );
        }
    }
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus-parse reads the exposition");
    let mut out = HashMap::new();
    for s in &scrape.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, _) in &labels {
            assert!(name_ok(k) && !k.starts_with("__"), "bad label name {k}");
        }
        labels.sort();
        let value = match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{}{{{}}}", s.metric, l.join(","))
        };
        out.insert(key, value);
    }
    out
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("no sample {key}; have {:#?}", samples.keys()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_with_real_traffic_and_the_exposition_parses() {
    let dir = tempfile::tempdir().unwrap();
    // Message 1 is delivered, 2 throttled, 3 refused for good.
    let running = start(
        dir.path(),
        "[simulator.faults]\nscript = [\"normal\", \"454 Throttling failure: Maximum sending rate exceeded.\", \
         \"554 Message rejected: Email address is not verified.\"]\n",
    )
    .await;
    let http = running.addrs.http.expect("[http] listens");
    let mut c = SmtpClient::connect(running.addrs.smtp[0]).await;
    let mut codes = Vec::new();
    for subject in ["one", "two", "three"] {
        let r = c
            .transaction(
                "app@example.org",
                &["someone@example.net"],
                &message("app@example.org", subject),
            )
            .await;
        codes.push(r.code);
    }
    assert_eq!(codes, [250, 454, 554], "delivered, throttled, refused");
    // A From domain the configuration does not list: refused, and never a label value.
    let r = c
        .transaction(
            "x@intruder-domain.test",
            &["someone@example.net"],
            &message("x@intruder-domain.test", "four"),
        )
        .await;
    assert_eq!(r.code / 100, 5, "{r}");
    // A command the session refuses (RCPT before MAIL).
    assert_eq!(c.cmd("RCPT TO:<a@example.net>").await.code, 503);
    c.quit().await;
    running.reload().await.expect("reload");

    let (status, body) = get(http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        !body.contains("intruder-domain"),
        "a client's From domain became a label value:\n{body}"
    );
    let m = parse(&body);
    let signed = "dkim_relay_signatures_total{algorithm=rsa-sha256,domain=example.org,outcome=signed,selector=s1}";
    assert_eq!(value(&m, signed), 3.0);
    assert_eq!(
        value(&m, "dkim_relay_upstream_replies_total{class=2xx}"),
        1.0
    );
    assert_eq!(
        value(&m, "dkim_relay_upstream_replies_total{class=throttled}"),
        1.0
    );
    assert_eq!(
        value(&m, "dkim_relay_upstream_replies_total{class=5xx}"),
        1.0
    );
    assert_eq!(
        value(&m, "dkim_relay_messages_total{outcome=delivered}"),
        1.0
    );
    assert_eq!(
        value(&m, "dkim_relay_messages_total{outcome=deferred}"),
        1.0
    );
    assert_eq!(value(&m, "dkim_relay_messages_total{outcome=failed}"), 1.0);
    assert_eq!(
        value(
            &m,
            "dkim_relay_headers_removed_total{header=dkim-signature}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &m,
            "dkim_relay_rejections_total{reason=policy,stage=message}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "dkim_relay_rejections_total{reason=protocol,stage=rcpt}"
        ),
        1.0
    );
    assert_eq!(value(&m, "dkim_relay_connections_total"), 1.0);
    assert_eq!(value(&m, "dkim_relay_reloads_total{outcome=success}"), 1.0);
    assert!(value(&m, "dkim_relay_reload_last_success_timestamp_seconds") > 1.7e9);
    assert_eq!(
        value(
            &m,
            "dkim_relay_key_bits{active=true,algorithm=rsa-sha256,domain=example.org,selector=s1}"
        ),
        2048.0
    );
    assert_eq!(value(&m, "dkim_relay_queue_messages"), 0.0);
    // The histogram: one observation per upstream transaction, in its class.
    assert!(
        body.contains("dkim_relay_upstream_transaction_seconds_count{class=\"2xx\"} 1"),
        "{body}"
    );
    assert!(body.contains("dkim_relay_build_info{"), "{body}");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_and_readyz_say_which_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = start(dir.path(), "").await;
    let http = running.addrs.http.unwrap();
    assert_eq!(get(http, "/livez").await, (200, "ok\n".to_string()));
    assert_eq!(get(http, "/readyz").await, (200, "ok\n".to_string()));
    let (status, body) = get(http, "/readyz?verbose").await;
    assert_eq!(status, 200);
    assert!(body.contains("[+]config ok\n[+]listeners ok\n"), "{body}");

    // A component's check (as the spool registers one) that fails.
    running
        .readiness()
        .register_fn("spool", || Err("spool folder not writable".into()));
    let (status, body) = get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = get(http, "/readyz?verbose").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("[-]spool failed: spool folder not writable"),
        "{body}"
    );
    assert!(body.ends_with("readyz check failed\n"), "{body}");
    running.readiness().register_fn("spool", || Ok(()));
    assert_eq!(get(http, "/readyz").await.0, 200);

    // Draining: not ready (no new traffic), still alive.
    running.signal();
    let (status, body) = get(http, "/readyz?verbose").await;
    assert_eq!(status, 503);
    assert!(body.contains("[-]listeners failed"), "{body}");
    assert_eq!(get(http, "/livez").await.0, 200);
    assert_eq!(get(http, "/nothing-here").await.0, 404);
    running.shutdown().await;
}

#[test]
fn serve_logs_json_lines_and_health_probes_livez() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "log_format = \"json\"", "");
    let bin = env!("CARGO_BIN_EXE_dkim-relay");
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut http = None;
    while http.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("serve logs that its HTTP endpoint listens");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        if v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("HTTP endpoint listening"))
        {
            http = v["address"].as_str().map(str::to_string);
        }
        lines.push(v);
    }
    let http = http.unwrap();
    for v in &lines {
        assert!(v["timestamp"].is_string(), "{v}");
        assert!(v["level"].is_string(), "{v}");
        assert!(v["message"].is_string(), "{v}");
    }
    // The SMTP listener's line carries its fields at the top level, as the text line does.
    let listening = lines
        .iter()
        .find(|v| v["message"] == "dkim-relay listening")
        .expect("listening line");
    assert!(
        listening["address"].is_string() && listening["domains"] == 1,
        "{listening}"
    );

    let health = |url: &str| {
        Command::new(bin)
            .args(["health", "--url", url])
            .output()
            .unwrap()
    };
    let ok = health(&format!("http://{http}/livez"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = health(&format!("http://{http}/no-such-path"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("HTTP 404"));

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "serve exit: {status}");
    // Everything after the stop is JSON too.
    for line in rx.iter() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{v}");
    }
    reader.join().unwrap();
    let after = health(&format!("http://{http}/livez"));
    assert_eq!(
        after.status.code(),
        Some(1),
        "nothing answers after the stop"
    );
}

#[tokio::test]
async fn http_and_log_format_are_checked_and_need_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "log_format = \"yaml\"", "");
    let errors = config::load(&path).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|d| d.key == "log_format" && d.message.contains("\"text\" or \"json\"")),
        "{errors:?}"
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("log_format = \"yaml\"", "")
        .replace(
            "listen = \"127.0.0.1:0\"\n[domains",
            "listen = \"localhost\"\n[domains",
        );
    std::fs::write(&path, &text).unwrap();
    let errors = config::load(&path).unwrap_err();
    let bad = errors
        .iter()
        .find(|d| d.key == "http.listen")
        .expect("http.listen");
    assert!(
        bad.line.is_some() && bad.message.contains("IP:PORT"),
        "{bad}"
    );

    // A running relay refuses a reload that moves the endpoint or changes the log format.
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "", "");
    let snapshot = config::load(&path).unwrap();
    let described = snapshot.describe();
    assert!(
        described.contains("log_format = \"text\"\n[http]\nlisten = \"127.0.0.1:0\"\n"),
        "{described}"
    );
    let running = daemon::start(&path, snapshot).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!(
            "log_format = \"json\"\n{}",
            text.replace("[http]\nlisten = \"127.0.0.1:0\"\n", "")
        ),
    )
    .unwrap();
    let refused = running.reload().await.unwrap_err();
    let keys: Vec<&str> = refused.iter().map(|d| d.key.as_str()).collect();
    assert!(
        keys.contains(&"http.listen") && keys.contains(&"log_format"),
        "{refused:?}"
    );
    let (status, body) = get(running.addrs.http.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("dkim_relay_reloads_total{outcome=\"failure\"} 1"),
        "{body}"
    );
    running.shutdown().await;
}

/// With `[spool]`, the spool feeds the queue gauges and two readiness checks: `spool` (its
/// folder takes messages) and `upstream` (the queue is not paused because SES refuses the
/// account). A paused account holds a queued message: the gauges count it, `/readyz` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_feeds_queue_gauges_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let path = write_config(
        dir.path(),
        &format!(
            "[spool]\ndir = \"{}\"\nmode = \"always\"\nmin_free_mb = 0\n",
            spool.display()
        ),
        // The embedded simulator always runs an unpaused account: script SES's answer.
        "[simulator.faults]\nscript = [\"554 Message rejected: Sending paused for this account. \
         For more information, please check the inbox of the email address associated with your \
         AWS account.\"]\n",
    );
    let snapshot = config::load(&path).unwrap();
    let running = daemon::start(&path, snapshot).await.unwrap();
    let http = running.addrs.http.expect("[http] listens");
    let (status, body) = get(http, "/readyz?verbose").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("[+]spool ok\n"), "{body}");
    assert!(body.contains("[+]upstream ok\n"), "{body}");

    let mut c = SmtpClient::connect(running.addrs.smtp[0]).await;
    let r = c
        .transaction(
            "app@example.org",
            &["someone@example.net"],
            &message("app@example.org", "held"),
        )
        .await;
    assert_eq!(r.code, 250, "{r}");
    assert!(r.one_line().contains("queued as"), "{r}");
    c.quit().await;

    // The worker tries SES, which refuses the paused account: the queue pauses.
    let mut body = String::new();
    for _ in 0..200 {
        let (status, b) = get(http, "/readyz?verbose").await;
        body = b;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        body.contains("[-]upstream failed: the spool is paused"),
        "{body}"
    );
    assert!(body.contains("[+]spool ok\n"), "{body}");
    let (_, metrics) = get(http, "/metrics").await;
    let samples = parse(&metrics);
    assert_eq!(
        value(&samples, "dkim_relay_queue_messages"),
        1.0,
        "{metrics}"
    );
    assert!(value(&samples, "dkim_relay_queue_oldest_age_seconds") >= 0.0);
    running.shutdown().await;
}

/// `[dns] check_interval_secs = 1` with a table for DNS: s1's record publishes its key, s2 (the
/// same key file under a second name) has none. The periodic check sets
/// `dkim_relay_key_dns_match` to 1 and 0 and stamps the round; a lookup that fails keeps the
/// last answer instead of reporting a mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_dns_match_says_which_selectors_dns_publishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[dns]\ncheck_interval_secs = 1", "");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "[domains.\"example.org\".selectors.s2]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n",
        dir.path().join("s1.pem").display()
    ));
    std::fs::write(&path, text).unwrap();
    let snapshot = config::load(&path).unwrap();
    let s1 = snapshot
        .domains
        .values()
        .next()
        .and_then(|d| d.selectors.get("s1").cloned())
        .unwrap();
    let mut dns = dkim_relay::dns::lookup::StaticLookup::new();
    dns.add_txt(
        "s1._domainkey.example.org",
        &dkim_relay::dkim::keygen::dkim_txt_value(s1.algorithm, &s1.public_key),
    );
    let running = daemon::start_with(
        &path,
        snapshot,
        daemon::Options {
            lookup: Some(std::sync::Arc::new(dns)),
        },
    )
    .await
    .unwrap();
    let http = running.addrs.http.unwrap();
    let s1_key = "dkim_relay_key_dns_match{domain=example.org,selector=s1}";
    let s2_key = "dkim_relay_key_dns_match{domain=example.org,selector=s2}";
    // The first round runs at start; poll until it has landed (bounded).
    let mut samples = HashMap::new();
    for _ in 0..200 {
        let (status, body) = get(http, "/metrics").await;
        assert_eq!(status, 200);
        samples = parse(&body);
        if samples.contains_key(s1_key) && samples.contains_key(s2_key) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(value(&samples, s1_key), 1.0);
    assert_eq!(value(&samples, s2_key), 0.0);
    assert!(value(&samples, "dkim_relay_key_dns_checked_timestamp_seconds") > 1.0e9);
    running.shutdown().await;
}
