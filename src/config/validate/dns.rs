//! `[dns]`: the name server `doctor` and `require_published` ask, and the per-lookup timeout.

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
    ResolverSettings {
        nameserver,
        timeout: secs(timeout),
    }
}
