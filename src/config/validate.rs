//! Validation and resolution of a [`RawConfig`] into a [`Snapshot`].
//!
//! Every rule collects a [`Diagnostic`] instead of returning early, so `dkim-relay check` shows
//! all problems at once. Lines are found by re-reading the TOML with spans.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::raw::{RawConfig, RawDomain, RawUpstream};
use super::*;
use crate::dkim::key::{KeyProblem, SelectorKey};

struct Ctx<'a> {
    file: PathBuf,
    base: PathBuf,
    doc: Option<toml::Spanned<toml::de::DeTable<'a>>>,
    text: &'a str,
    found: Vec<Diagnostic>,
    /// Every file read while resolving (for the watcher), in order, once each.
    files: Vec<PathBuf>,
}

impl<'a> Ctx<'a> {
    fn line(&self, path: &[&str]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut table = doc.get_ref();
        let mut best = None;
        for (i, part) in path.iter().enumerate() {
            let (key, value) = table.iter().find(|(k, _)| k.get_ref().as_ref() == *part)?;
            best = Some(super::line_of(self.text, key.span().start));
            if i + 1 == path.len() {
                break;
            }
            match value.get_ref() {
                toml::de::DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        best
    }

    fn push(&mut self, severity: Severity, path: &[&str], message: impl Into<String>) {
        let line = self.line(path);
        self.found.push(Diagnostic {
            severity,
            file: self.file.clone(),
            line,
            key: dotted(path),
            message: message.into(),
        });
    }
    fn error(&mut self, path: &[&str], message: impl Into<String>) {
        self.push(Severity::Error, path, message)
    }
    fn warn(&mut self, path: &[&str], message: impl Into<String>) {
        self.push(Severity::Warning, path, message)
    }
    /// Records a file this configuration depends on (read now, or by a module it builds).
    fn depends_on(&mut self, p: &Path) {
        if !self.files.iter().any(|f| f == p) {
            self.files.push(p.to_path_buf());
        }
    }
    /// Reads a file the configuration names. The one place `validate` reads files: each is
    /// recorded, so the watcher sees every file a snapshot was built from.
    fn read(&mut self, p: &Path) -> std::io::Result<Vec<u8>> {
        self.depends_on(p);
        std::fs::read(p)
    }
    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }
}

/// `domains."example.org".mail_from` — quoting keys that contain dots.
fn dotted(path: &[&str]) -> String {
    path.iter()
        .map(|p| {
            if p.contains('.') || p.is_empty() {
                format!("\"{p}\"")
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

pub(super) fn resolve(file: &Path, text: &str, raw: RawConfig) -> LoadResult {
    let base = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut cx = Ctx {
        file: file.to_path_buf(),
        base,
        doc: toml::de::DeTable::parse(text).ok(),
        text,
        found: Vec::new(),
        files: vec![file.to_path_buf()],
    };

    let server = server(&mut cx, &raw.server);
    let upstream = upstream(&mut cx, &raw.upstream, raw.simulator.as_ref());
    let profile = upstream.as_ref().map(|u| u.profile).unwrap_or(Profile::Ses);
    let reload = reload(&mut cx, &raw.reload);
    let dns = dns(&mut cx, &raw.dns);
    let mut domains = Domains::default();
    if raw.domains.is_empty() {
        cx.error(
            &["domains"],
            "no sending domains configured: add a [domains.\"example.org\"] table",
        );
    }
    for (name, d) in &raw.domains {
        if let Some(domain) = domain(&mut cx, name, d, profile, reload.require_published) {
            if domains.contains_key(&domain.name) {
                cx.error(
                    &["domains", name],
                    format!("domain {} is configured twice", domain.name),
                );
            }
            domains.insert(domain.name.clone(), Arc::new(domain));
        }
    }

    let mut server = server;
    if let Some(server) = &mut server {
        server.users = users(&mut cx, &raw.server.users, &domains);
        // Open relay guard: a non-loopback listener is fine when only loopback clients may
        // submit unauthenticated, or when users exist (they must authenticate, over TLS).
        // Otherwise anything that can reach the port could send mail signed for our domains.
        let public = server
            .listen
            .iter()
            .chain(server.tls.iter().flat_map(|t| t.implicit_listen.iter()))
            .any(|a| !a.ip().is_loopback());
        let loopback_only = server.allow_networks.iter().all(|n| n.is_loopback());
        if public && !loopback_only && server.users.is_empty() {
            cx.error(
                &["server", "allow_networks"],
                "listening on a non-loopback address while non-loopback clients may submit \
                 without authentication, and no [[server.users]] exist: this would be an open \
                 signing relay. Restrict allow_networks to loopback, add users, or listen on \
                 loopback only",
            );
        }
        if public && !server.users.is_empty() && server.tls.is_none() {
            cx.warn(
                &["server", "users"],
                "users are configured but [server.tls] is not: AUTH is offered only over TLS \
                 (or to loopback clients with auth_plaintext_loopback = true)",
            );
        }
    }

    let errors = cx.found.iter().any(|d| d.severity == Severity::Error);
    match (errors, server, upstream) {
        (false, Some(server), Some(upstream)) => Ok(Snapshot {
            source: file.to_path_buf(),
            server,
            upstream,
            reload,
            dns,
            domains,
            files: cx.files,
            warnings: cx.found,
        }),
        _ => {
            let mut all = cx.found;
            all.sort_by_key(|d| std::cmp::Reverse(d.severity));
            Err(all)
        }
    }
}

fn server(cx: &mut Ctx<'_>, raw: &super::raw::RawServer) -> Option<Server> {
    let mut ok = true;
    let listen_raw = raw
        .listen
        .as_ref()
        .map(|l| l.to_vec())
        .unwrap_or_else(|| vec!["127.0.0.1:2525".to_string()]);
    let mut listen = Vec::new();
    for l in &listen_raw {
        match l.parse::<SocketAddr>() {
            Ok(a) => listen.push(a),
            Err(_) => {
                cx.error(
                    &["server", "listen"],
                    format!("`{l}` is not an address:port (for example \"127.0.0.1:2525\")"),
                );
                ok = false;
            }
        }
    }
    if listen.is_empty() && ok {
        cx.error(
            &["server", "listen"],
            "at least one listen address is needed",
        );
        ok = false;
    }
    let max_message_size = raw.max_message_size.unwrap_or(41_943_040);
    if max_message_size < 1024 {
        cx.error(
            &["server", "max_message_size"],
            "must be at least 1024 bytes",
        );
        ok = false;
    }
    if max_message_size > 41_943_040 {
        cx.warn(
            &["server", "max_message_size"],
            "SES accepts at most 40 MB (41943040 bytes) over SMTP; larger messages will be \
             refused upstream",
        );
    }
    let max_recipients = raw.max_recipients.unwrap_or(50);
    if max_recipients == 0 {
        cx.error(&["server", "max_recipients"], "must be at least 1");
        ok = false;
    }
    let allow_raw = raw
        .allow_networks
        .clone()
        .unwrap_or_else(|| vec!["127.0.0.0/8".into(), "::1/128".into()]);
    let mut allow_networks = Vec::new();
    for n in &allow_raw {
        match n.parse::<Network>() {
            Ok(net) => allow_networks.push(net),
            Err(e) => {
                cx.error(&["server", "allow_networks"], format!("`{n}`: {e}"));
                ok = false;
            }
        }
    }
    let positive = |cx: &mut Ctx<'_>, key: &str, v: Option<u64>, default: u64, max: u64| {
        let v = v.unwrap_or(default);
        if v == 0 || v > max {
            cx.error(
                &["server", key],
                format!("must be between 1 and {max} seconds"),
            );
        }
        secs(v.clamp(1, max))
    };
    // RFC 5321 §4.5.3.2 sets 5 minutes per command and 10 minutes for DATA as the upper
    // bound a server should wait; a loopback relay can afford much shorter defaults.
    let command_timeout = positive(
        cx,
        "command_timeout_secs",
        raw.command_timeout_secs,
        60,
        300,
    );
    let data_timeout = positive(cx, "data_timeout_secs", raw.data_timeout_secs, 120, 600);
    let session_timeout = positive(
        cx,
        "session_timeout_secs",
        raw.session_timeout_secs,
        1800,
        86_400,
    );
    let shutdown_grace = positive(cx, "shutdown_grace_secs", raw.shutdown_grace_secs, 30, 3600);
    let hostname = raw
        .hostname
        .clone()
        .unwrap_or_else(|| "dkim-relay.localdomain".to_string());
    if hostname.is_empty() || hostname.contains(char::is_whitespace) {
        cx.error(
            &["server", "hostname"],
            "must be a host name without spaces",
        );
        ok = false;
    }
    let data_total_timeout = positive(
        cx,
        "data_total_timeout_secs",
        raw.data_total_timeout_secs,
        600,
        3600,
    );
    let millis = |cx: &mut Ctx<'_>, key: &str, v: Option<u64>, default: u64, max: u64| {
        let v = v.unwrap_or(default);
        if v > max {
            cx.error(
                &["server", key],
                format!("must be between 0 and {max} milliseconds"),
            );
        }
        std::time::Duration::from_millis(v.min(max))
    };
    let greeting_delay = millis(cx, "greeting_delay_ms", raw.greeting_delay_ms, 0, 30_000);
    let auth_failure_delay = millis(
        cx,
        "auth_failure_delay_ms",
        raw.auth_failure_delay_ms,
        1000,
        30_000,
    );
    let max_auth_failures = raw.max_auth_failures.unwrap_or(3);
    if max_auth_failures == 0 {
        cx.error(&["server", "max_auth_failures"], "must be at least 1");
    }
    let tls = raw.tls.as_ref().and_then(|t| server_tls(cx, t));
    if raw.tls.is_some() && tls.is_none() {
        ok = false;
    }
    ok.then(|| Server {
        listen,
        hostname,
        max_message_size,
        max_recipients,
        max_header_size: raw.max_header_size.unwrap_or(256 * 1024),
        max_connections: raw.max_connections.unwrap_or(200).max(1),
        max_connections_per_ip: raw.max_connections_per_ip.unwrap_or(50).max(1),
        max_errors: raw.max_errors.unwrap_or(10).max(1),
        command_timeout,
        data_timeout,
        session_timeout,
        shutdown_grace,
        bare_newline: raw.bare_newline.unwrap_or_default(),
        allow_networks,
        data_total_timeout,
        greeting_delay,
        auth_plaintext_loopback: raw.auth_plaintext_loopback.unwrap_or(false),
        auth_failure_delay,
        max_auth_failures: max_auth_failures.max(1),
        tls,
        users: Vec::new(),
    })
}

/// `[server.tls]`: reads the certificate chain and key now, so a bad file is a configuration
/// error naming its key rather than a handshake failure later.
fn server_tls(cx: &mut Ctx<'_>, raw: &super::raw::RawServerTls) -> Option<ServerTls> {
    let at = |k: &'static str| ["server", "tls", k];
    let read = |cx: &mut Ctx<'_>, key: &'static str, v: &Option<String>| match v {
        None => {
            cx.error(&at(key), "missing: a PEM file is needed");
            None
        }
        Some(f) => {
            let p = cx.resolve_path(f);
            match cx.read(&p) {
                Ok(b) => Some((p, b)),
                Err(e) => {
                    cx.error(&at(key), format!("cannot read {}: {e}", p.display()));
                    None
                }
            }
        }
    };
    let cert = read(cx, "cert_file", &raw.cert_file);
    let key = read(cx, "key_file", &raw.key_file);
    let mut implicit_listen = Vec::new();
    for l in raw
        .implicit_listen
        .as_ref()
        .map(|l| l.to_vec())
        .unwrap_or_default()
    {
        match l.parse::<SocketAddr>() {
            Ok(a) => implicit_listen.push(a),
            Err(_) => cx.error(
                &at("implicit_listen"),
                format!("`{l}` is not an address:port (for example \"127.0.0.1:4650\")"),
            ),
        }
    }
    let hs = raw.handshake_timeout_secs.unwrap_or(10);
    if hs == 0 || hs > 300 {
        cx.error(
            &at("handshake_timeout_secs"),
            "must be between 1 and 300 seconds",
        );
    }
    let ((cert_file, cert_pem), (key_path, key_pem)) = (cert?, key?);
    if crate::tls::certs_in(&cert_pem).is_err() {
        cx.error(
            &at("cert_file"),
            format!("{} holds no PEM certificate", cert_file.display()),
        );
        return None;
    }
    match crate::tls::server_config(&cert_pem, &key_pem) {
        Ok(config) => Some(ServerTls {
            config,
            cert_file,
            implicit_listen,
            handshake_timeout: secs(hs.clamp(1, 300)),
        }),
        Err(e) => {
            cx.error(
                &at("key_file"),
                format!(
                    "{} does not fit the certificate or is not a PEM private key: {e}",
                    key_path.display()
                ),
            );
            None
        }
    }
}

/// `[[server.users]]`: each name once, a real password hash, and only configured domains.
fn users(
    cx: &mut Ctx<'_>,
    raw: &[super::raw::RawUser],
    domains: &BTreeMap<String, Arc<Domain>>,
) -> Vec<crate::users::User> {
    let mut out: Vec<crate::users::User> = Vec::new();
    for (i, u) in raw.iter().enumerate() {
        let key = |k: &str| format!("server.users[{i}].{k}");
        let push = |cx: &mut Ctx<'_>, k: &str, msg: String| {
            let line = cx.line(&["server", "users"]);
            cx.found.push(Diagnostic {
                severity: Severity::Error,
                file: cx.file.clone(),
                line,
                key: key(k),
                message: msg,
            });
        };
        if u.name.is_empty() || u.name.len() > 256 || u.name.chars().any(|c| c.is_control()) {
            push(cx, "name", "must be a non-empty user name".into());
            continue;
        }
        if out.iter().any(|o| o.name == u.name) {
            push(cx, "name", format!("user {} is configured twice", u.name));
            continue;
        }
        let hash = match crate::users::PasswordHash::parse(&u.password_hash) {
            Ok(h) => h,
            Err(e) => {
                push(cx, "password_hash", e.to_string());
                continue;
            }
        };
        if u.domains.is_empty() {
            push(
                cx,
                "domains",
                "list the sending domains this user may use in From:".into(),
            );
            continue;
        }
        let mut allowed = Vec::new();
        for d in &u.domains {
            let name = crate::domain_name::normalize(d).unwrap_or_default();
            match domains.get(&name) {
                Some(dom) => allowed.push(crate::users::AllowedDomain {
                    name: dom.name.clone(),
                    subdomains: dom.subdomains,
                }),
                None => push(
                    cx,
                    "domains",
                    format!("`{d}` is not a configured [domains.\"…\"] entry"),
                ),
            }
        }
        out.push(crate::users::User {
            name: u.name.clone(),
            hash,
            domains: allowed,
        });
    }
    out
}

fn upstream(
    cx: &mut Ctx<'_>,
    raw: &RawUpstream,
    sim: Option<&crate::sim::config::RawSim>,
) -> Option<Upstream> {
    let profile = match raw.profile.as_deref().unwrap_or("ses") {
        "ses" => Profile::Ses,
        "generic" => Profile::Generic,
        other => {
            cx.error(
                &["upstream", "profile"],
                format!("`{other}` is not a profile: use \"ses\" or \"generic\""),
            );
            Profile::Ses
        }
    };
    fn up(key: &str) -> [&str; 2] {
        ["upstream", key]
    }
    let timeout = |cx: &mut Ctx<'_>, key: &str, v: Option<u64>, default: u64| {
        let v = v.unwrap_or(default);
        if v == 0 || v > 3600 {
            cx.error(&up(key), "must be between 1 and 3600 seconds");
        }
        secs(v.clamp(1, 3600))
    };
    let connect_timeout = timeout(cx, "connect_timeout_secs", raw.connect_timeout_secs, 10);
    let tls_timeout = timeout(cx, "tls_timeout_secs", raw.tls_timeout_secs, 10);
    let command_timeout = timeout(cx, "command_timeout_secs", raw.command_timeout_secs, 30);
    let data_timeout = timeout(cx, "data_timeout_secs", raw.data_timeout_secs, 120);
    // SES drops idle connections after about 10 s: close ours well before that.
    let idle_close = timeout(cx, "idle_close_secs", raw.idle_close_secs, 8);
    if idle_close.as_secs() >= 10 && profile == Profile::Ses {
        cx.warn(
            &up("idle_close_secs"),
            "SES closes idle connections after about 10 s; keep this below 10",
        );
    }
    let max_connection_age = timeout(
        cx,
        "max_connection_age_secs",
        raw.max_connection_age_secs,
        60,
    );
    let pool_size = raw.pool_size.unwrap_or(4);
    if pool_size == 0 || pool_size > 256 {
        cx.error(&up("pool_size"), "must be between 1 and 256");
    }
    let max_messages_per_connection = raw.max_messages_per_connection.unwrap_or(50).max(1);

    let simulator = raw.simulator.unwrap_or(false);
    let (target, credential_source) = if simulator {
        for (key, set) in [
            ("host", raw.host.is_some()),
            ("username", raw.username.is_some()),
            ("password", raw.password.is_some()),
            ("password_env", raw.password_env.is_some()),
            ("password_file", raw.password_file.is_some()),
        ] {
            if set {
                cx.warn(
                    &up(key),
                    "ignored while `simulator = true`: the relay talks to its embedded SES \
                     simulator",
                );
            }
        }
        let settings = crate::sim::config::SimSettings::resolve(sim, &cx.base)
            .map_err(|(key, msg)| {
                let parts: Vec<&str> = std::iter::once("simulator").chain(key.split('.')).collect();
                cx.error(&parts, msg);
            })
            .ok()?;
        for f in settings.files_read() {
            cx.depends_on(&f);
        }
        (
            UpstreamTarget::Simulator(Box::new(settings)),
            "generated for the embedded simulator".to_string(),
        )
    } else {
        let Some(host) = raw.host.clone() else {
            cx.error(
                &["upstream", "host"],
                "missing: set host = \"email-smtp.REGION.amazonaws.com\", or simulator = true \
                 for staging",
            );
            return None;
        };
        let tls = match raw.tls.as_deref().unwrap_or("starttls") {
            "starttls" => TlsMode::StartTls,
            "implicit" => TlsMode::Implicit,
            other => {
                cx.error(
                    &up("tls"),
                    format!("`{other}` is not a TLS mode: use \"starttls\" or \"implicit\" (TLS is mandatory)"),
                );
                TlsMode::StartTls
            }
        };
        let port = raw.port.unwrap_or(match tls {
            TlsMode::StartTls => 587,
            TlsMode::Implicit => 465,
        });
        if tls == TlsMode::StartTls && matches!(port, 465 | 2465) {
            cx.warn(
                &up("port"),
                format!("port {port} speaks implicit TLS on SES; use tls = \"implicit\""),
            );
        }
        if tls == TlsMode::Implicit && matches!(port, 25 | 587 | 2587) {
            cx.warn(
                &up("port"),
                format!("port {port} speaks STARTTLS on SES; use tls = \"starttls\""),
            );
        }
        let (ca_file, extra_ca_pem) = match &raw.ca_file {
            None => (None, None),
            Some(f) => {
                let p = cx.resolve_path(f);
                match cx.read(&p) {
                    Ok(pem) => (Some(p), Some(pem)),
                    Err(e) => {
                        cx.error(&up("ca_file"), format!("cannot read {}: {e}", p.display()));
                        (Some(p), None)
                    }
                }
            }
        };
        let username = raw.username.clone().unwrap_or_default();
        if username.is_empty() {
            cx.error(
                &up("username"),
                "missing: the SES SMTP user name (an access key id, AKIA…)",
            );
        }
        let (password, source) = password(cx, raw, &host)?;
        (
            UpstreamTarget::Remote(Endpoint {
                host,
                port,
                tls,
                ca_file,
                extra_ca_pem,
                username,
                password: SecretEq(password),
            }),
            source,
        )
    };
    let endpoint = match &target {
        UpstreamTarget::Remote(e) => Some(e.clone()),
        UpstreamTarget::Simulator(_) => None,
    };
    Some(Upstream {
        endpoint,
        target,
        profile,
        pool: PoolSettings {
            pool_size: pool_size.clamp(1, 256),
            max_messages_per_connection,
            max_connection_age,
            idle_close,
            connect_timeout,
            tls_timeout,
            command_timeout,
            data_timeout,
        },
        credential_source,
    })
}

/// Finds the SES SMTP password: exactly one of password_env, password_file, password (inline,
/// warned), or secret_access_key_env + region (derived with the version-4 algorithm).
fn password(cx: &mut Ctx<'_>, raw: &RawUpstream, host: &str) -> Option<(Secret, String)> {
    let given = [
        raw.password.is_some(),
        raw.password_env.is_some(),
        raw.password_file.is_some(),
        raw.secret_access_key_env.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        cx.error(
            &["upstream"],
            "set exactly one of password_env, password_file, secret_access_key_env (+ region) \
             or password",
        );
        return None;
    }
    if let Some(p) = &raw.password {
        cx.warn(
            &["upstream", "password"],
            "the SES SMTP password is written in the configuration file; prefer password_env or \
             password_file",
        );
        return Some((
            Secret::new(p.clone()),
            "inline password (in the file)".into(),
        ));
    }
    if let Some(var) = &raw.password_env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some((Secret::new(v), format!("environment variable {var}"))),
            _ => {
                cx.error(
                    &["upstream", "password_env"],
                    format!("environment variable {var} is not set"),
                );
                None
            }
        };
    }
    if let Some(f) = &raw.password_file {
        let p = cx.resolve_path(f);
        cx.depends_on(&p);
        return match std::fs::read_to_string(&p) {
            Ok(v) if !v.trim().is_empty() => Some((
                Secret::new(v.trim().to_string()),
                format!("file {}", p.display()),
            )),
            Ok(_) => {
                cx.error(
                    &["upstream", "password_file"],
                    format!("{} is empty", p.display()),
                );
                None
            }
            Err(e) => {
                cx.error(
                    &["upstream", "password_file"],
                    format!("cannot read {}: {e}", p.display()),
                );
                None
            }
        };
    }
    let var = raw.secret_access_key_env.as_deref().unwrap_or_default();
    let region = raw
        .region
        .clone()
        .or_else(|| crate::dns::region_from_host(host));
    let Some(region) = region else {
        cx.error(
            &["upstream", "region"],
            "needed to derive the SMTP password (the host does not name a region)",
        );
        return None;
    };
    match std::env::var(var) {
        Ok(secret) if !secret.is_empty() => Some((
            Secret::new(crate::sesauth::smtp_password_v4(&secret, &region)),
            format!("derived (v4, {region}) from environment variable {var}"),
        )),
        _ => {
            cx.error(
                &["upstream", "secret_access_key_env"],
                format!("environment variable {var} is not set"),
            );
            None
        }
    }
}

fn reload(cx: &mut Ctx<'_>, raw: &super::raw::RawReload) -> ReloadSettings {
    let interval = raw.watch_interval_secs.unwrap_or(2);
    if interval == 0 || interval > 3600 {
        cx.error(
            &["reload", "watch_interval_secs"],
            "must be between 1 and 3600 seconds",
        );
    }
    let age = raw.key_max_age_days.unwrap_or(180);
    if age == 0 || age > 36_500 {
        cx.error(
            &["reload", "key_max_age_days"],
            "must be between 1 and 36500 days",
        );
    }
    ReloadSettings {
        watch: raw.watch.unwrap_or(false),
        watch_interval: secs(interval.clamp(1, 3600)),
        require_published: raw.require_published.unwrap_or(false),
        key_max_age: secs(age.clamp(1, 36_500) * 86_400),
    }
}

fn dns(cx: &mut Ctx<'_>, raw: &super::raw::RawDns) -> DnsSettings {
    let nameserver = raw.nameserver.as_deref().and_then(|ns| {
        let parsed = ns.parse::<SocketAddr>().ok().or_else(|| {
            ns.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 53))
        });
        if parsed.is_none() {
            cx.error(
                &["dns", "nameserver"],
                format!("`{ns}` is not IP:PORT or an IP address (for example \"127.0.0.1:53\")"),
            );
        }
        parsed
    });
    let timeout = raw.timeout_secs.unwrap_or(5);
    if timeout == 0 || timeout > 60 {
        cx.error(&["dns", "timeout_secs"], "must be between 1 and 60 seconds");
    }
    DnsSettings {
        nameserver,
        timeout: secs(timeout.clamp(1, 60)),
    }
}

fn domain(
    cx: &mut Ctx<'_>,
    key: &str,
    raw: &RawDomain,
    profile: Profile,
    require_published: bool,
) -> Option<Domain> {
    let at = |k: &'static str| ["domains", key, k];
    let name = match crate::domain_name::normalize(key) {
        Some(n) => n,
        None => {
            cx.error(
                &["domains", key],
                format!("`{key}` is not a valid domain name"),
            );
            return None;
        }
    };
    let mut ok = true;
    let mail_from = match &raw.mail_from {
        None => {
            cx.error(
                &at("mail_from"),
                format!("missing: the custom MAIL FROM domain, e.g. \"mail.{name}\""),
            );
            ok = false;
            String::new()
        }
        Some(m) => match crate::domain_name::normalize(m) {
            Some(m) if m == name || m.ends_with(&format!(".{name}")) => m,
            _ => {
                cx.error(
                    &at("mail_from"),
                    format!("`{m}` is neither {name} nor a subdomain of it (SPF would not align)"),
                );
                ok = false;
                String::new()
            }
        },
    };
    if mail_from == name && profile == Profile::Ses {
        cx.warn(
            &at("mail_from"),
            "SES requires the custom MAIL FROM domain to be a subdomain (e.g. mail.) of the \
             sending domain",
        );
    }

    // Load every selector's key; the active ones must exist and load.
    let mut selectors = BTreeMap::new();
    for (sel, s) in &raw.selectors {
        let sel_at = ["domains", key, "selectors", sel.as_str(), "key_file"];
        if !valid_selector(sel) {
            cx.error(
                &["domains", key, "selectors", sel],
                format!("`{sel}` is not a valid selector"),
            );
            ok = false;
            continue;
        }
        let path = cx.resolve_path(&s.key_file);
        cx.depends_on(&path);
        match SelectorKey::load(sel, s.algorithm, &path) {
            Ok((k, problems)) => {
                for p in problems {
                    match p {
                        KeyProblem::GroupReadable(mode) => cx.warn(
                            &sel_at,
                            format!(
                                "{} is readable by group or others (mode {mode:o}); run chmod 600",
                                path.display()
                            ),
                        ),
                        KeyProblem::WeakRsa(bits) => cx.warn(
                            &sel_at,
                            format!("{bits}-bit RSA key: use 2048 bits or more (RFC 8301)"),
                        ),
                    }
                }
                selectors.insert(sel.clone(), Arc::new(k));
            }
            Err(e) => {
                cx.error(&sel_at, e.to_string());
                ok = false;
            }
        }
    }
    let mut active = Vec::new();
    if raw.sign.is_empty() {
        cx.error(
            &at("sign"),
            "no active selector: list one in sign = [\"…\"] (the relay never sends unsigned)",
        );
        ok = false;
    }
    for s in &raw.sign {
        match selectors.get(s) {
            Some(k) => {
                if active.iter().any(|a: &Arc<SelectorKey>| &a.selector == s) {
                    cx.error(&at("sign"), format!("selector {s} is listed twice"));
                    ok = false;
                }
                active.push(Arc::clone(k));
            }
            None if raw.selectors.contains_key(s) => ok = false, // its key failed, said above
            None => {
                cx.error(
                    &at("sign"),
                    format!(
                        "active selector {s} has no [domains.\"{key}\".selectors.{s}] with a key"
                    ),
                );
                ok = false;
            }
        }
    }
    if profile == Profile::Ses && active.len() > 1 {
        cx.error(
            &at("sign"),
            "the SES profile signs with exactly one selector: SES rejects a second \
             DKIM-Signature (554 Duplicate header)",
        );
        ok = false;
    }
    if !active.is_empty()
        && !active.iter().any(|k| widely_verified(k.algorithm))
        && profile == Profile::Ses
    {
        cx.warn(
            &at("sign"),
            "Ed25519-only signing: most large receivers do not verify ed25519-sha256 yet, so \
             DMARC would rest on SPF alone",
        );
    }
    let headers = match &raw.headers {
        Some(h) => h.clone(),
        None => DEFAULT_SIGNED_HEADERS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let oversign = match &raw.oversign {
        Some(h) => h.clone(),
        None => DEFAULT_OVERSIGNED.iter().map(|s| s.to_string()).collect(),
    };
    if !headers.iter().any(|h| h.eq_ignore_ascii_case("from")) {
        cx.error(&at("headers"), "From must be signed (RFC 6376 §5.4)");
        ok = false;
    }
    for h in headers.iter().chain(oversign.iter()) {
        if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            cx.error(&at("headers"), format!("`{h}` is not a header field name"));
            ok = false;
        } else if profile == Profile::Ses && ses_forbids_signing(h) {
            cx.error(
                &at("headers"),
                format!("{h} must not be signed under the SES profile: SES rewrites or removes it"),
            );
            ok = false;
        }
    }
    let envelope_local_part = match raw.envelope_local_part.as_deref() {
        None | Some("keep") => EnvelopeLocalPart::Keep,
        Some(l) if valid_local(l) => EnvelopeLocalPart::Fixed(l.to_string()),
        Some(l) => {
            cx.error(
                &at("envelope_local_part"),
                format!("`{l}` is not \"keep\" or a mailbox name"),
            );
            ok = false;
            EnvelopeLocalPart::Keep
        }
    };
    let null_sender_local_part = raw
        .null_sender_local_part
        .clone()
        .unwrap_or_else(|| "bounce".to_string());
    if !valid_local(&null_sender_local_part) {
        cx.error(&at("null_sender_local_part"), "not a valid mailbox name");
        ok = false;
    }
    if let Some(cs) = &raw.configuration_set
        && (cs.is_empty()
            || !cs
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    {
        cx.error(
            &at("configuration_set"),
            "SES configuration set names use letters, digits, - and _",
        );
        ok = false;
    }
    if let Some(d) = &raw.dmarc
        && !d.starts_with("v=DMARC1")
    {
        cx.error(&at("dmarc"), "a DMARC record starts with v=DMARC1");
        ok = false;
    }
    ok.then(|| Domain {
        name,
        envelope: EnvelopeRules {
            mail_from,
            envelope_local_part,
            null_sender_local_part,
        },
        subdomains: raw.subdomains.unwrap_or(false),
        headers,
        oversign,
        configuration_set: raw.configuration_set.clone(),
        expiration: raw.expiration_secs.filter(|x| *x > 0),
        dmarc: raw.dmarc.clone(),
        require_published: raw.require_published.unwrap_or(require_published),
        active,
        selectors,
    })
}

fn valid_selector(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_local(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}
