//! The live configuration: an `Arc<Snapshot>` behind a lock, replaced whole.
//!
//! Readers take a clone of the `Arc` (cheap) and keep it for the whole session, so a
//! transaction never sees half of an old and half of a new configuration.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{Diagnostic, Snapshot};

/// Shared handle to the configuration in force.
#[derive(Clone)]
pub struct Live {
    current: Arc<RwLock<Arc<Snapshot>>>,
    path: PathBuf,
}

impl Live {
    pub fn new(path: &Path, snapshot: Snapshot) -> Self {
        Live {
            current: Arc::new(RwLock::new(Arc::new(snapshot))),
            path: path.to_path_buf(),
        }
    }

    /// The snapshot in force now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the file and every key; swaps only if the whole new configuration is valid.
    /// On error the running configuration stays, and every problem is returned.
    pub fn reload(&self) -> Result<Arc<Snapshot>, Vec<Diagnostic>> {
        let fresh = Arc::new(super::load(&self.path)?);
        match self.current.write() {
            Ok(mut g) => *g = Arc::clone(&fresh),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&fresh),
        }
        Ok(fresh)
    }
}
