//! Each validation rule the configuration promises, checked through `load_str`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::*;
use crate::dkim::keygen;
use crate::secret::SecretEq;

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn write(&self, name: &str, algorithm: Algorithm) -> PathBuf {
        let k = keygen::generate(algorithm, 2048).unwrap();
        let p = self.dir.path().join(name);
        keygen::write_private_key(&p, &k.pkcs8_pem).unwrap();
        p
    }
    fn openssl_rsa(&self, name: &str, bits: u32) -> Option<PathBuf> {
        let p = self.dir.path().join(name);
        let ok = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
            .arg(format!("rsa_keygen_bits:{bits}"))
            .arg("-out")
            .arg(&p)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then(|| {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        })
    }
}

fn config(body: &str) -> String {
    format!("[upstream]\nsimulator = true\n{body}")
}

fn domain(key: &Path, extra: &str) -> String {
    format!(
        "[domains.\"example.org\"]\nmail_from = \"mail.example.org\"\nsign = [\"s1\"]\n{extra}\n\
         [domains.\"example.org\".selectors.s1]\nalgorithm = \"rsa-sha256\"\nkey_file = \"{}\"\n",
        key.display()
    )
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match load_str(Path::new("test.toml"), text) {
        Ok(s) => panic!(
            "expected errors, got a snapshot with warnings {:?}",
            s.warnings
        ),
        Err(d) => d,
    }
}

fn warnings(text: &str) -> Vec<Diagnostic> {
    match load_str(Path::new("test.toml"), text) {
        Ok(s) => s.warnings,
        Err(d) => panic!("expected a valid config, got {d:?}"),
    }
}

fn has(diags: &[Diagnostic], key: &str, needle: &str) -> bool {
    diags
        .iter()
        .any(|d| d.key == key && d.message.contains(needle))
}

#[test]
fn valid_config_resolves() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let snap = load_str(Path::new("t.toml"), &config(&domain(&k, ""))).unwrap();
    assert!(snap.warnings.is_empty(), "{:?}", snap.warnings);
    let d = snap.domain_for("EXAMPLE.org").unwrap();
    assert_eq!(d.envelope.mail_from, "mail.example.org");
    assert_eq!(d.active.len(), 1);
    assert!(snap.domain_for("sub.example.org").is_none());
    assert!(snap.server.listen[0].ip().is_loopback());
}

#[test]
fn unknown_keys_name_file_line_and_key() {
    let d = errors("[server]\nlisten = \"127.0.0.1:2525\"\nmax_recipientz = 3\n");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].line, Some(3));
    assert_eq!(d[0].key, "server.max_recipientz");
    assert!(
        d[0].to_string()
            .starts_with("error: test.toml:3: server.max_recipientz:")
    );
}

#[test]
fn mail_from_must_be_the_domain_or_below() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let text = config(&domain(&k, "")).replace("mail.example.org", "mail.example.com");
    let d = errors(&text);
    assert!(
        has(
            &d,
            "domains.\"example.org\".mail_from",
            "neither example.org"
        ),
        "{d:?}"
    );
    assert_eq!(d[0].line, Some(4));
}

#[test]
fn active_selector_needs_a_key() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let text = config(&domain(&k, "")).replace("sign = [\"s1\"]", "sign = [\"s9\"]");
    assert!(has(&errors(&text), "domains.\"example.org\".sign", "s9"));
}

#[test]
fn unreadable_and_malformed_keys_are_errors() {
    let keys = Keys::new();
    let missing = keys.dir.path().join("missing.pem");
    let d = errors(&config(&domain(&missing, "")));
    assert!(has(
        &d,
        "domains.\"example.org\".selectors.s1.key_file",
        "cannot read"
    ));
    let junk = keys.dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    let d = errors(&config(&domain(&junk, "")));
    assert!(has(
        &d,
        "domains.\"example.org\".selectors.s1.key_file",
        "not a rsa-sha256 private key"
    ));
    // An Ed25519 key configured as RSA is malformed for that algorithm.
    let ed = keys.write("ed.pem", Algorithm::Ed25519Sha256);
    assert!(!errors(&config(&domain(&ed, ""))).is_empty());
}

#[test]
fn small_rsa_keys() {
    let keys = Keys::new();
    // aws-lc (the signing backend) signs only with RSA keys of 2048 bits or more, so a
    // 1024-bit key is refused with a message that says to generate a 2048-bit one.
    if let Some(k) = keys.openssl_rsa("k1024.pem", 1024) {
        assert!(has(
            &errors(&config(&domain(&k, ""))),
            "domains.\"example.org\".selectors.s1.key_file",
            "2048-bit"
        ));
    }
    if let Some(k) = keys.openssl_rsa("k512.pem", 512) {
        assert!(has(
            &errors(&config(&domain(&k, ""))),
            "domains.\"example.org\".selectors.s1.key_file",
            "refused"
        ));
    }
}

#[test]
fn group_readable_key_warns() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(has(
        &warnings(&config(&domain(&k, ""))),
        "domains.\"example.org\".selectors.s1.key_file",
        "chmod 600"
    ));
}

#[test]
fn inline_password_warns() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let text = format!(
        "[upstream]\nhost = \"email-smtp.us-east-1.amazonaws.com\"\nusername = \"AKIAEXAMPLE\"\npassword = \"sekrit\"\n{}",
        domain(&k, "")
    );
    let w = warnings(&text);
    assert!(has(
        &w,
        "upstream.password",
        "written in the configuration file"
    ));
    // The secret never appears in the effective configuration.
    let snap = load_str(Path::new("t.toml"), &text).unwrap();
    assert!(!snap.describe().contains("sekrit"));
    // A real upstream: the published-key check runs hourly by default.
    assert_eq!(snap.dns.check_interval, secs(3600));
    assert!(!format!("{snap:?}").contains("sekrit"));
}

#[test]
fn ses_profile_allows_one_active_selector() {
    let keys = Keys::new();
    let k1 = keys.write("s1.pem", Algorithm::RsaSha256);
    let k2 = keys.write("s2.pem", Algorithm::Ed25519Sha256);
    let body = format!(
        "{}[domains.\"example.org\".selectors.s2]\nalgorithm = \"ed25519-sha256\"\nkey_file = \"{}\"\n",
        domain(&k1, ""),
        k2.display()
    )
    .replace("sign = [\"s1\"]", "sign = [\"s1\", \"s2\"]");
    assert!(has(
        &errors(&config(&body)),
        "domains.\"example.org\".sign",
        "exactly one selector"
    ));
    // The generic profile may dual-sign.
    let generic = config(&body).replace(
        "simulator = true",
        "simulator = true\nprofile = \"generic\"",
    );
    assert!(load_str(Path::new("t.toml"), &generic).is_ok());
}

#[test]
fn ed25519_only_under_ses_warns() {
    let keys = Keys::new();
    let k = keys.write("e.pem", Algorithm::Ed25519Sha256);
    let text = config(&domain(&k, "")).replace("\"rsa-sha256\"", "\"ed25519-sha256\"");
    assert!(has(
        &warnings(&text),
        "domains.\"example.org\".sign",
        "Ed25519-only"
    ));
}

#[test]
fn ses_rewritten_headers_cannot_be_signed() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let text = config(&domain(&k, "headers = [\"From\", \"Message-ID\"]"));
    assert!(has(
        &errors(&text),
        "domains.\"example.org\".headers",
        "Message-ID"
    ));
}

#[test]
fn subdomains_switch() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let snap = load_str(
        Path::new("t.toml"),
        &config(&domain(&k, "subdomains = true")),
    )
    .unwrap();
    assert_eq!(
        snap.domain_for("news.Example.org").unwrap().name,
        "example.org"
    );
    assert!(snap.domain_for("example.org.evil.test").is_none());
}

#[test]
fn missing_file_says_how_to_start() {
    let d = load(Path::new("/nonexistent/config.toml")).unwrap_err();
    assert!(d[0].message.contains("config.toml.example"));
    assert!(d[0].to_string().contains("/nonexistent/config.toml"));
}

#[test]
fn open_relay_is_refused() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:2525\"\nallow_networks = [\"0.0.0.0/0\"]\n{}",
        config(&domain(&k, ""))
    );
    assert!(has(
        &errors(&text),
        "server.allow_networks",
        "open signing relay"
    ));
}

#[test]
fn reload_and_dns_tables() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let snap = load_str(Path::new("t.toml"), &config(&domain(&k, ""))).unwrap();
    assert!(!snap.reload.watch);
    assert_eq!(snap.reload.watch_interval, secs(2));
    assert!(!snap.reload.require_published);
    assert_eq!(snap.reload.key_max_age, secs(180 * 86_400));
    assert_eq!(snap.dns.nameserver, None);
    // This configuration relays to the embedded simulator: the published-key check is off
    // unless `check_interval_secs` is set (3600 otherwise).
    assert!(snap.dns.check_interval.is_zero());
    assert!(!snap.domains["example.org"].require_published);

    let text = config(&format!(
        "[reload]\nwatch = true\nwatch_interval_secs = 5\nrequire_published = true\n\
         key_max_age_days = 90\n[dns]\nnameserver = \"127.0.0.1:5353\"\n{}",
        domain(&k, "")
    ));
    let snap = load_str(Path::new("t.toml"), &text).unwrap();
    assert!(snap.reload.watch && snap.reload.require_published);
    assert_eq!(snap.reload.watch_interval, secs(5));
    assert_eq!(snap.reload.key_max_age, secs(90 * 86_400));
    assert_eq!(snap.dns.nameserver, Some("127.0.0.1:5353".parse().unwrap()));
    assert!(snap.domains["example.org"].require_published);
    assert!(snap.describe().contains("require_published = true"));

    // The per-domain switch overrides the global one.
    let text = config(&format!(
        "[reload]\nrequire_published = true\n{}",
        domain(&k, "require_published = false")
    ));
    let snap = load_str(Path::new("t.toml"), &text).unwrap();
    assert!(!snap.domains["example.org"].require_published);

    // A bare IP means port 53.
    let text = config(&format!("[dns]\nnameserver = \"::1\"\n{}", domain(&k, "")));
    let snap = load_str(Path::new("t.toml"), &text).unwrap();
    assert_eq!(snap.dns.nameserver, Some("[::1]:53".parse().unwrap()));

    // The published-key check: 0 turns it off.
    let text = config(&format!(
        "[dns]\ncheck_interval_secs = 0\n{}",
        domain(&k, "")
    ));
    let snap = load_str(Path::new("t.toml"), &text).unwrap();
    assert!(snap.dns.check_interval.is_zero());
    assert!(snap.describe().contains("check_interval_secs = 0"));
}

#[test]
fn reload_and_dns_errors_are_located() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let text = config(&format!(
        "[reload]\nwatch_interval_secs = 0\nkey_max_age_days = 0\n[dns]\nnameserver = \"dns.example\"\n\
         timeout_secs = 0\n{}",
        domain(&k, "")
    ));
    let d = errors(&text);
    assert!(
        has(&d, "reload.watch_interval_secs", "between 1 and 3600"),
        "{d:?}"
    );
    assert!(has(&d, "reload.key_max_age_days", "between 1"), "{d:?}");
    assert!(has(&d, "dns.nameserver", "not IP:PORT"), "{d:?}");
    assert!(has(&d, "dns.timeout_secs", "between 1 and 60"), "{d:?}");
    let ns = d.iter().find(|d| d.key == "dns.nameserver").unwrap();
    assert_eq!(ns.line, Some(7));
    let d = errors(&config(&format!(
        "[dns]\ncheck_interval_secs = 86401\n{}",
        domain(&k, "")
    )));
    assert!(
        has(&d, "dns.check_interval_secs", "between 0 and 86400"),
        "{d:?}"
    );
    let d = errors(&config("[reload]\nwatch = true\nwach = 1\n"));
    assert!(has(&d, "reload.wach", "unknown field"), "{d:?}");
}

fn bcrypt_hash() -> String {
    bcrypt::hash("pw", 4).unwrap()
}

#[test]
fn open_relay_guard_accepts_users_or_loopback_only_networks() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    // Non-loopback networks without users: refused (not only 0.0.0.0/0).
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:2525\"\nallow_networks = [\"10.0.0.0/8\"]\n{}",
        config(&domain(&k, ""))
    );
    assert!(has(
        &errors(&text),
        "server.allow_networks",
        "open signing relay"
    ));
    // Loopback-only networks on a public listener: fine.
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:2525\"\n{}",
        config(&domain(&k, ""))
    );
    warnings(&text);
    // Users exist: fine (they must authenticate), with a warning when TLS is missing.
    let text = format!(
        "[server]\nlisten = \"0.0.0.0:2525\"\nallow_networks = [\"10.0.0.0/8\"]\n{}\n\
         [[server.users]]\nname = \"app\"\npassword_hash = \"{}\"\ndomains = [\"example.org\"]\n",
        config(&domain(&k, "")),
        bcrypt_hash()
    );
    assert!(has(&warnings(&text), "server.users", "[server.tls]"));
}

#[test]
fn users_need_real_hashes_and_configured_domains() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let text = format!(
        "{}\n[[server.users]]\nname = \"app\"\npassword_hash = \"hunter2\"\ndomains = [\"example.org\"]\n\
         [[server.users]]\nname = \"b\"\npassword_hash = \"{}\"\ndomains = [\"example.com\"]\n",
        config(&domain(&k, "")),
        bcrypt_hash()
    );
    let d = errors(&text);
    assert!(
        has(&d, "server.users[0].password_hash", "plaintext"),
        "{d:?}"
    );
    assert!(has(&d, "server.users[1].domains", "example.com"), "{d:?}");
    // The plaintext value never appears in a message.
    assert!(d.iter().all(|x| !x.to_string().contains("hunter2")));
}

#[test]
fn users_resolve_with_subdomain_switch() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let text = format!(
        "{}\n[[server.users]]\nname = \"app\"\npassword_hash = \"{}\"\ndomains = [\"Example.ORG\"]\n",
        config(&domain(&k, "subdomains = true")),
        bcrypt_hash()
    );
    let snap = load_str(Path::new("t.toml"), &text).unwrap();
    let u = &snap.server.users[0];
    assert_eq!(u.domains[0].name, "example.org");
    assert!(u.domains[0].subdomains);
    assert!(!snap.describe().contains("$2b$"));
}

#[test]
fn listener_tls_errors_name_the_key() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let certs = crate::tls::generate_certs(&["localhost".into()]).unwrap();
    let cert = keys.dir.path().join("cert.pem");
    std::fs::write(&cert, &certs.cert_chain_pem).unwrap();
    let bad_key = keys.dir.path().join("bad-key.pem");
    std::fs::write(&bad_key, "not a key").unwrap();
    let text = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n{}",
        cert.display(),
        bad_key.display(),
        config(&domain(&k, ""))
    );
    assert!(has(&errors(&text), "server.tls.key_file", "bad-key.pem"));
    let text = format!(
        "[server.tls]\ncert_file = \"{}\"\n{}",
        keys.dir.path().join("missing.pem").display(),
        config(&domain(&k, ""))
    );
    let d = errors(&text);
    assert!(has(&d, "server.tls.cert_file", "cannot read"), "{d:?}");
    assert!(has(&d, "server.tls.key_file", "missing"), "{d:?}");
    let good_key = keys.dir.path().join("key.pem");
    std::fs::write(&good_key, &certs.key_pem).unwrap();
    let text = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nimplicit_listen = \"127.0.0.1:4650\"\n{}",
        cert.display(),
        good_key.display(),
        config(&domain(&k, ""))
    );
    let snap = load_str(Path::new("t.toml"), &text).unwrap();
    let tls = snap.server.tls.as_ref().unwrap();
    assert_eq!(tls.implicit_listen[0].port(), 4650);
}

#[test]
fn restart_only_changes_are_named() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let certs = crate::tls::generate_certs(&["localhost".into()]).unwrap();
    let cert = keys.dir.path().join("cert.pem");
    let key = keys.dir.path().join("key.pem");
    std::fs::write(&cert, &certs.cert_chain_pem).unwrap();
    std::fs::write(&key, &certs.key_pem).unwrap();
    let load = |server: &str, upstream: &str| {
        let text = format!(
            "[server]\n{server}\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
             implicit_listen = \"127.0.0.1:4650\"\n{upstream}\n{}",
            cert.display(),
            key.display(),
            domain(&k, "")
        );
        load_str(Path::new("t.toml"), &text).unwrap()
    };
    let sim = "[upstream]\nsimulator = true\n";
    let keys_of = |a: &Snapshot, b: &Snapshot| -> Vec<String> {
        restart::changes_needing_restart(a, b)
            .into_iter()
            .map(|d| d.key)
            .collect()
    };
    let running = load("listen = \"127.0.0.1:2525\"", sim);
    // Same restart-only settings, other settings changed: allowed.
    let fresh = load("listen = \"127.0.0.1:2525\"\nmax_recipients = 9", sim);
    assert!(keys_of(&running, &fresh).is_empty());
    let fresh = load("listen = \"127.0.0.1:2526\"", sim);
    assert_eq!(keys_of(&running, &fresh), ["server.listen"]);
    let fresh = load(
        "listen = \"127.0.0.1:2525\"",
        &format!("{sim}[simulator]\nstarttls_listen = \"127.0.0.1:2587\"\n"),
    );
    assert_eq!(keys_of(&running, &fresh), ["simulator.starttls_listen"]);
    let fresh = load(
        "listen = \"127.0.0.1:2525\"",
        &format!("{sim}[simulator]\nregion = \"eu-west-1\"\n"),
    );
    assert_eq!(keys_of(&running, &fresh), ["simulator"]);
    let remote = "[upstream]\nhost = \"email-smtp.us-east-1.amazonaws.com\"\nusername = \"AKIA\"\n\
                  password = \"x\"\n";
    let fresh = load("listen = \"127.0.0.1:2525\"", remote);
    assert_eq!(keys_of(&running, &fresh), ["upstream.simulator"]);
    assert_eq!(keys_of(&fresh, &running), ["upstream.simulator"]);
    // The implicit-TLS listener, by its own key.
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:2525\"\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         implicit_listen = \"127.0.0.1:4651\"\n{sim}\n{}",
        cert.display(),
        key.display(),
        domain(&k, "")
    );
    let fresh = load_str(Path::new("t.toml"), &text).unwrap();
    let d = restart::changes_needing_restart(&running, &fresh);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].key, "server.tls.implicit_listen");
    assert!(d[0].to_string().contains("127.0.0.1:4651"), "{}", d[0]);
}

#[test]
fn the_snapshot_lists_every_file_it_read() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let certs = crate::tls::generate_certs(&["localhost".into()]).unwrap();
    let dir = keys.dir.path();
    std::fs::write(dir.join("cert.pem"), &certs.cert_chain_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &certs.key_pem).unwrap();
    std::fs::write(dir.join("ca.pem"), &certs.ca_pem).unwrap();
    std::fs::write(dir.join("pw"), "secret\n").unwrap();
    let text = format!(
        "[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n\
         [upstream]\nhost = \"email-smtp.us-east-1.amazonaws.com\"\nusername = \"AKIA\"\n\
         password_file = \"pw\"\nca_file = \"ca.pem\"\n{}",
        domain(&k, "")
    );
    let config = dir.join("c.toml");
    let snap = load_str(&config, &text).unwrap();
    let want: Vec<PathBuf> = vec![
        config,
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
        dir.join("pw"),
        k,
    ];
    assert_eq!(snap.files, want);
}

#[test]
fn the_relay_settings_are_built_from_the_snapshot() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let text = config(&format!(
        "[server]\nhostname = \"relay.example.org\"\nmax_recipients = 7\nmax_errors = 4\n\
         allow_networks = [\"10.0.0.0/8\"]\n{}",
        domain(&k, "")
    ));
    let snap = load_str(Path::new("t.toml"), &text).unwrap();
    let s = assemble::relay_settings(&snap);
    assert_eq!(s.hostname(), "relay.example.org");
    assert_eq!(s.shell.max_command_line, assemble::MAX_COMMAND_LINE);
    assert_eq!(s.shell.max_message_size, snap.server.max_message_size);
    assert_eq!(s.shell.session_timeout, Some(snap.server.session_timeout));
    assert!(!s.shell.command_timeout_is_idle);
    assert_eq!(s.session.max_recipients, 7);
    assert_eq!(s.session.max_errors, 4);
    assert_eq!(s.session.allow_networks.len(), 1);
    assert!(s.domain_for("example.org").is_some());
    assert_eq!(s.upstream.profile, snap.upstream.profile);
    // A simulator configuration: no endpoint until the simulator listens.
    assert!(s.upstream.endpoint.is_none());

    // `Live` publishes the embedded simulator's endpoint to the relay, once.
    let endpoint = Endpoint {
        host: "127.0.0.1".into(),
        port: 2587,
        tls: TlsMode::StartTls,
        ca_file: None,
        extra_ca_pem: None,
        username: "AKIAEXAMPLE".into(),
        password: SecretEq(Secret::new("pw".into())),
    };
    let live = reload::Live::new(Path::new("t.toml"), snap);
    let mut current = live.relay_settings();
    assert!(current.borrow().upstream.endpoint.is_none());
    let live = live.with_embedded(endpoint.clone());
    assert!(current.has_changed().unwrap());
    assert_eq!(
        current.borrow_and_update().upstream.endpoint.as_ref(),
        Some(&endpoint)
    );
    assert_eq!(
        live.relay_settings().borrow().upstream.endpoint.as_ref(),
        Some(&endpoint)
    );
}

#[test]
fn bytes_in_flight_bounds() {
    let keys = Keys::new();
    let k = keys.write("s1.pem", Algorithm::RsaSha256);
    let with = |v: &str| {
        config(&format!(
            "[server]\nmax_bytes_in_flight = {v}\n{}",
            domain(&k, "")
        ))
    };
    let snap = load_str(Path::new("t.toml"), &config(&domain(&k, ""))).unwrap();
    assert_eq!(snap.server.max_bytes_in_flight, 256 * 1024 * 1024);
    let d = errors(&with("1000"));
    assert!(
        has(&d, "server.max_bytes_in_flight", "at least 65536"),
        "{d:?}"
    );
    let w = warnings(&with("1048576"));
    assert!(has(&w, "server.max_bytes_in_flight", "452 4.3.1"), "{w:?}");
    assert!(warnings(&with("268435456")).is_empty());
}
