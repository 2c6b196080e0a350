//! `[reload]`: watching, the watch interval, `require_published` and the key rotation age.

use super::Ctx;
use crate::config::defaults::reload as default;
use crate::config::*;

pub(super) fn reload(cx: &mut Ctx<'_>, raw: &crate::config::raw::RawReload) -> ReloadSettings {
    let interval = cx.ranged(
        &["reload", "watch_interval_secs"],
        raw.watch_interval_secs,
        default::WATCH_INTERVAL_SECS,
    );
    let age = cx.ranged(
        &["reload", "key_max_age_days"],
        raw.key_max_age_days,
        default::KEY_MAX_AGE_DAYS,
    );
    ReloadSettings {
        watch: raw.watch.unwrap_or(default::WATCH),
        watch_interval: secs(interval),
        require_published: raw.require_published.unwrap_or(default::REQUIRE_PUBLISHED),
        key_max_age: secs(age * 86_400),
    }
}
