//! `[server]`, `[server.tls]` and `[[server.users]]`: the listener side — addresses, limits,
//! timeouts, who may submit (networks, users bound to their From domains) and the listener's
//! certificate (read now, so a bad file is a configuration error naming its key).

use std::net::SocketAddr;

use super::Ctx;
use crate::allow_list::Network;
use crate::config::defaults::server as default;
use crate::config::*;

pub(super) fn server(cx: &mut Ctx<'_>, raw: &crate::config::raw::RawServer) -> Option<Server> {
    let mut ok = true;
    let listen_raw = raw
        .listen
        .as_ref()
        .map(|l| l.to_vec())
        .unwrap_or_else(|| vec![default::LISTEN.to_string()]);
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
    let max_message_size = raw.max_message_size.unwrap_or(default::MAX_MESSAGE_SIZE);
    if max_message_size < default::MIN_MESSAGE_SIZE {
        cx.error(
            &["server", "max_message_size"],
            "must be at least 1024 bytes",
        );
        ok = false;
    }
    if max_message_size > default::MAX_MESSAGE_SIZE {
        cx.warn(
            &["server", "max_message_size"],
            "SES accepts at most 40 MB (41943040 bytes) over SMTP; larger messages will be \
             refused upstream",
        );
    }
    let max_bytes_in_flight = raw
        .max_bytes_in_flight
        .unwrap_or(default::MAX_BYTES_IN_FLIGHT);
    if max_bytes_in_flight < default::MIN_BYTES_IN_FLIGHT {
        cx.error(
            &["server", "max_bytes_in_flight"],
            format!("must be at least {} bytes", default::MIN_BYTES_IN_FLIGHT),
        );
        ok = false;
    } else if max_bytes_in_flight < max_message_size {
        cx.warn(
            &["server", "max_bytes_in_flight"],
            format!(
                "smaller than max_message_size ({max_message_size}): a message larger than \
                 {max_bytes_in_flight} bytes is always refused with 452 4.3.1"
            ),
        );
    }
    let max_recipients = raw.max_recipients.unwrap_or(default::MAX_RECIPIENTS);
    if max_recipients == 0 {
        cx.error(&["server", "max_recipients"], "must be at least 1");
        ok = false;
    }
    let allow_raw = raw.allow_networks.clone().unwrap_or_else(|| {
        default::ALLOW_NETWORKS
            .iter()
            .map(|n| n.to_string())
            .collect()
    });
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
    let positive = |cx: &mut Ctx<'_>, key: &str, v: Option<u64>, range| {
        secs(cx.ranged(&["server", key], v, range))
    };
    // RFC 5321 §4.5.3.2 bounds (see `defaults::server`).
    let command_timeout = positive(
        cx,
        "command_timeout_secs",
        raw.command_timeout_secs,
        default::COMMAND_TIMEOUT_SECS,
    );
    let data_timeout = positive(
        cx,
        "data_timeout_secs",
        raw.data_timeout_secs,
        default::DATA_TIMEOUT_SECS,
    );
    let session_timeout = positive(
        cx,
        "session_timeout_secs",
        raw.session_timeout_secs,
        default::SESSION_TIMEOUT_SECS,
    );
    let shutdown_grace = positive(
        cx,
        "shutdown_grace_secs",
        raw.shutdown_grace_secs,
        default::SHUTDOWN_GRACE_SECS,
    );
    let hostname = raw
        .hostname
        .clone()
        .unwrap_or_else(|| default::HOSTNAME.to_string());
    if hostname.is_empty()
        || hostname.contains(char::is_whitespace)
        || hostname.contains(|c: char| c.is_control())
    {
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
        default::DATA_TOTAL_TIMEOUT_SECS,
    );
    let millis = |cx: &mut Ctx<'_>, key: &str, v: Option<u64>, range| {
        std::time::Duration::from_millis(cx.ranged(&["server", key], v, range))
    };
    let greeting_delay = millis(
        cx,
        "greeting_delay_ms",
        raw.greeting_delay_ms,
        default::GREETING_DELAY_MS,
    );
    let auth_failure_delay = millis(
        cx,
        "auth_failure_delay_ms",
        raw.auth_failure_delay_ms,
        default::AUTH_FAILURE_DELAY_MS,
    );
    let max_auth_failures = raw.max_auth_failures.unwrap_or(default::MAX_AUTH_FAILURES);
    if max_auth_failures == 0 {
        cx.error(&["server", "max_auth_failures"], "must be at least 1");
    }
    let max_auth_failures_per_ip = raw
        .max_auth_failures_per_ip
        .unwrap_or(default::MAX_AUTH_FAILURES_PER_IP);
    if max_auth_failures_per_ip == 0 {
        cx.error(
            &["server", "max_auth_failures_per_ip"],
            "must be at least 1",
        );
    }
    let rate = cx.ranged(
        &["server", "min_data_rate"],
        raw.min_data_rate,
        default::MIN_DATA_RATE,
    );
    let window = positive(
        cx,
        "min_data_rate_window_secs",
        raw.min_data_rate_window_secs,
        default::MIN_DATA_RATE_WINDOW_SECS,
    );
    let min_data_rate = (rate > 0).then_some(crate::server::DataRate {
        bytes_per_sec: rate,
        window,
    });
    let max_header_size = raw.max_header_size.unwrap_or(default::MAX_HEADER_SIZE);
    if raw.max_header_size.is_some()
        && (max_header_size < default::MIN_MESSAGE_SIZE || max_header_size > max_message_size)
    {
        cx.error(
            &["server", "max_header_size"],
            format!(
                "must be between {} bytes and max_message_size ({max_message_size})",
                default::MIN_MESSAGE_SIZE
            ),
        );
        ok = false;
    }
    for (key, value) in [
        ("max_connections", raw.max_connections.map(|v| v as u64)),
        (
            "max_connections_per_ip",
            raw.max_connections_per_ip.map(|v| v as u64),
        ),
        ("max_errors", raw.max_errors.map(u64::from)),
    ] {
        if value == Some(0) {
            cx.error(&["server", key], "must be at least 1");
            ok = false;
        }
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
        max_header_size,
        max_bytes_in_flight,
        max_connections: raw
            .max_connections
            .unwrap_or(default::MAX_CONNECTIONS)
            .max(1),
        max_connections_per_ip: raw
            .max_connections_per_ip
            .unwrap_or(default::MAX_CONNECTIONS_PER_IP)
            .max(1),
        max_errors: raw.max_errors.unwrap_or(default::MAX_ERRORS).max(1),
        command_timeout,
        data_timeout,
        session_timeout,
        shutdown_grace,
        bare_newline: raw.bare_newline.unwrap_or_default(),
        self_verify: raw.self_verify.unwrap_or_default(),
        allow_networks,
        data_total_timeout,
        greeting_delay,
        auth_plaintext_loopback: raw
            .auth_plaintext_loopback
            .unwrap_or(default::AUTH_PLAINTEXT_LOOPBACK),
        auth_failure_delay,
        max_auth_failures: max_auth_failures.max(1),
        max_auth_failures_per_ip: max_auth_failures_per_ip.max(1),
        min_data_rate,
        tls,
        users: Vec::new(),
    })
}

/// `[server.tls]`: reads the certificate chain and key now, so a bad file is a configuration
/// error naming its key rather than a handshake failure later.
fn server_tls(cx: &mut Ctx<'_>, raw: &crate::config::raw::RawServerTls) -> Option<ServerTls> {
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
    let hs = cx.ranged(
        &at("handshake_timeout_secs"),
        raw.handshake_timeout_secs,
        default::TLS_HANDSHAKE_TIMEOUT_SECS,
    );
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
            handshake_timeout: secs(hs),
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
pub(super) fn users(
    cx: &mut Ctx<'_>,
    raw: &[crate::config::raw::RawUser],
    domains: &Domains,
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
                    carved_out: domains
                        .values()
                        .filter(|o| o.name.ends_with(&format!(".{}", dom.name)))
                        .map(|o| (o.name.clone(), o.subdomains))
                        .collect(),
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
