//! Simulator settings: the `[simulator]` table of the relay's config (embedded mode) or the
//! whole file given to `dkim-relay ses-sim --config`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawSim {
    pub region: Option<String>,
    pub outbox: Option<String>,
}

/// Resolved simulator settings.
#[derive(Debug, Clone)]
pub struct SimSettings {
    pub region: String,
    pub outbox: PathBuf,
}

impl SimSettings {
    /// Resolves relative paths against `base` (the config file's folder). Errors are
    /// `(key, message)`, the key relative to the `[simulator]` table.
    pub fn resolve(raw: Option<&RawSim>, base: &Path) -> Result<SimSettings, (String, String)> {
        let raw = raw.cloned().unwrap_or_default();
        let outbox = raw.outbox.unwrap_or_else(|| "outbox".into());
        Ok(SimSettings {
            region: raw.region.unwrap_or_else(|| "us-east-1".into()),
            outbox: base.join(outbox),
        })
    }
}
