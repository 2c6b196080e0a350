//! `[upstream]`: the SES endpoint (or the embedded simulator), its credentials — exactly one
//! source, never printed — the upstream profile, and the pool's sizes and timeouts (the
//! `upstream::settings` types).

use super::Ctx;
use crate::config::defaults::upstream as default;
use crate::config::raw::RawUpstream;
use crate::config::*;
use crate::secret::SecretEq;

pub(super) fn upstream(
    cx: &mut Ctx<'_>,
    raw: &RawUpstream,
    sim: Option<&crate::sim::config::RawSim>,
) -> Option<Upstream> {
    let profile = match raw.profile.as_deref().unwrap_or(default::PROFILE) {
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
    let timeout =
        |cx: &mut Ctx<'_>, key: &str, v: Option<u64>, range| secs(cx.ranged(&up(key), v, range));
    let connect_timeout = timeout(
        cx,
        "connect_timeout_secs",
        raw.connect_timeout_secs,
        default::CONNECT_TIMEOUT_SECS,
    );
    let tls_timeout = timeout(
        cx,
        "tls_timeout_secs",
        raw.tls_timeout_secs,
        default::TLS_TIMEOUT_SECS,
    );
    let command_timeout = timeout(
        cx,
        "command_timeout_secs",
        raw.command_timeout_secs,
        default::COMMAND_TIMEOUT_SECS,
    );
    let data_timeout = timeout(
        cx,
        "data_timeout_secs",
        raw.data_timeout_secs,
        default::DATA_TIMEOUT_SECS,
    );
    // SES drops idle connections after about 10 s: close ours well before that.
    let idle_close = timeout(
        cx,
        "idle_close_secs",
        raw.idle_close_secs,
        default::IDLE_CLOSE_SECS,
    );
    if idle_close.as_secs() >= default::SES_IDLE_LIMIT_SECS && profile == Profile::Ses {
        cx.warn(
            &up("idle_close_secs"),
            "SES closes idle connections after about 10 s; keep this below 10",
        );
    }
    let max_connection_age = timeout(
        cx,
        "max_connection_age_secs",
        raw.max_connection_age_secs,
        default::MAX_CONNECTION_AGE_SECS,
    );
    let pool_size = cx.ranged(
        &up("pool_size"),
        raw.pool_size.map(|n| n as u64),
        default::POOL_SIZE,
    ) as usize;
    let max_wait = timeout(
        cx,
        "max_wait_secs",
        raw.max_wait_secs,
        default::MAX_WAIT_SECS,
    );
    let max_send_rate = match raw.max_send_rate.unwrap_or(default::MAX_SEND_RATE) {
        0.0 => None,
        r if (1.0..=default::MAX_SEND_RATE_LIMIT).contains(&r) => Some(SendRate(r)),
        r => {
            cx.error(
                &up("max_send_rate"),
                format!(
                    "{r} is not a send rate: use the account's maximum send rate, between 1 and \
                     {} recipients per second, or 0 for unpaced",
                    default::MAX_SEND_RATE_LIMIT
                ),
            );
            None
        }
    };
    let max_messages_per_connection = raw
        .max_messages_per_connection
        .unwrap_or(default::MAX_MESSAGES_PER_CONNECTION)
        .max(1);

    let simulator = raw.simulator.unwrap_or(default::SIMULATOR);
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
        let tls = match raw.tls.as_deref().unwrap_or(default::TLS) {
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
            TlsMode::StartTls => default::STARTTLS_PORT,
            TlsMode::Implicit => default::IMPLICIT_PORT,
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
            pool_size,
            max_messages_per_connection,
            max_connection_age,
            idle_close,
            connect_timeout,
            tls_timeout,
            command_timeout,
            data_timeout,
            max_send_rate,
            max_wait,
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
        return match crate::regular_file::read_to_string(&p) {
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
            Secret::new(crate::ses_password::smtp_password_v4(&secret, &region)),
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
