//! `[spool]`: where the durable queue lives, when messages go there, the free-space floor and
//! the retry schedule. Absent (or without `dir`): pass-through, as before the spool existed.

use std::time::Duration;

use super::Ctx;
use crate::config::defaults::spool as default;
use crate::config::raw::RawSpool;
use crate::spool::{Mode, Settings};

pub(super) fn spool(cx: &mut Ctx<'_>, raw: &RawSpool) -> Option<Settings> {
    let mode = match raw.mode.as_deref().unwrap_or(default::MODE) {
        "on-defer" => Mode::OnDefer,
        "always" => Mode::Always,
        other => {
            cx.error(
                &["spool", "mode"],
                format!("`{other}` is not \"on-defer\" or \"always\""),
            );
            Mode::OnDefer
        }
    };
    let min_free_mb = cx.ranged(
        &["spool", "min_free_mb"],
        raw.min_free_mb,
        default::MIN_FREE_MB,
    );
    let initial = cx.ranged(
        &["spool", "retry_initial_ms"],
        raw.retry_initial_ms,
        default::RETRY_INITIAL_MS,
    );
    let max = cx.ranged(
        &["spool", "retry_max_ms"],
        raw.retry_max_ms,
        default::RETRY_MAX_MS,
    );
    if max < initial {
        cx.error(
            &["spool", "retry_max_ms"],
            format!("must not be below retry_initial_ms ({initial})"),
        );
    }
    let max_age = cx.ranged(
        &["spool", "max_age_secs"],
        raw.max_age_secs,
        default::MAX_AGE_SECS,
    );
    let probe = cx.ranged(
        &["spool", "pause_probe_ms"],
        raw.pause_probe_ms,
        default::PAUSE_PROBE_MS,
    );
    let Some(dir) = raw.dir.as_deref() else {
        cx.error(
            &["spool"],
            "[spool] needs `dir` (the folder for queued messages); remove the table for pass-through",
        );
        return None;
    };
    let dir = cx.resolve_path(dir);
    Some(Settings {
        dir,
        mode,
        min_free_bytes: min_free_mb.saturating_mul(1024 * 1024),
        retry_initial: Duration::from_millis(initial),
        retry_max: Duration::from_millis(max.max(initial)),
        max_age: Duration::from_secs(max_age),
        pause_probe: Duration::from_millis(probe),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn errors(text: &str) -> Vec<crate::config::Diagnostic> {
        match crate::config::load_str(Path::new("/etc/dkim-relay/config.toml"), text) {
            Ok(_) => panic!("loaded"),
            Err(d) => d,
        }
    }

    #[test]
    fn spool_errors_name_the_key_and_line() {
        let d = errors("[spool]\ndir = \"/x\"\nmode = \"sometimes\"\nretry_initial_ms = 5\n");
        assert!(
            d.iter().any(|d| d.key == "spool.mode"
                && d.line == Some(3)
                && d.message.contains("on-defer")),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|d| d.key == "spool.retry_initial_ms" && d.message.contains("between 10 and")),
            "{d:?}"
        );
        let d = errors("[spool]\nmode = \"always\"\n");
        assert!(
            d.iter()
                .any(|d| d.key == "spool" && d.message.contains("needs `dir`")),
            "{d:?}"
        );
        let d = errors("[spool]\ndir = \"/x\"\nretry_initial_ms = 1000\nretry_max_ms = 100\n");
        assert!(d.iter().any(|d| d.key == "spool.retry_max_ms"), "{d:?}");
    }
}
