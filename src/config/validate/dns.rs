//! `[dns]`: the name server `doctor`, `require_published` and the periodic key-record check
//! ask, the per-lookup timeout, and how often that check runs.

use std::net::SocketAddr;

use super::Ctx;
use crate::config::defaults::dns as default;
use crate::config::*;

pub(super) fn dns(cx: &mut Ctx<'_>, raw: &crate::config::raw::RawDns) -> ResolverSettings {
    let nameserver = raw.nameserver.as_deref().and_then(|ns| {
        let parsed = ns.parse::<SocketAddr>().ok().or_else(|| {
            ns.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, default::PORT))
        });
        if parsed.is_none() {
            cx.error(
                &["dns", "nameserver"],
                format!("`{ns}` is not IP:PORT or an IP address (for example \"127.0.0.1:53\")"),
            );
        }
        parsed
    });
    let timeout = cx.ranged(
        &["dns", "timeout_secs"],
        raw.timeout_secs,
        default::TIMEOUT_SECS,
    );
    let check_interval = cx.ranged(
        &["dns", "check_interval_secs"],
        raw.check_interval_secs,
        default::CHECK_INTERVAL_SECS,
    );
    ResolverSettings {
        nameserver,
        timeout: secs(timeout),
        check_interval: secs(check_interval),
    }
}
