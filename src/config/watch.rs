//! `[reload] watch = true`: reload when any file the configuration read changes — the
//! configuration file, key files, the listener's TLS certificate and key, the upstream's
//! `ca_file` and `password_file`, the simulator's files ([`Snapshot::files`]).
//!
//! Why polling and a fingerprint instead of inotify: Kubernetes updates a mounted secret or
//! config map by writing a new timestamped folder and atomically swapping the `..data` symlink;
//! the files the relay was given (`/etc/dkim-relay/config.toml → ..data/config.toml`) never
//! change in place, so watching them for writes sees nothing. Resolving every symlink and
//! comparing (canonical path, inode, mtime, size) sees that swap, an editor's
//! write-to-temp-and-rename, and a plain in-place write alike, with no platform dependency.
//!
//! A change triggers the same reload as SIGHUP ([`Live::reload_checked`], serialized with it).
//! A refused reload is not retried until the files change again.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Snapshot;
use super::reload::Live;

/// What identifies one file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp {
    pub canonical: PathBuf,
    pub inode: u64,
    pub modified: Option<SystemTime>,
    pub len: u64,
}

/// The stamp of every watched file, in order; `None` for a file that cannot be read now.
pub type Fingerprint = Vec<(PathBuf, Option<FileStamp>)>;

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let canonical = std::fs::canonicalize(path).ok()?;
    let meta = std::fs::metadata(&canonical).ok()?;
    Some(FileStamp {
        canonical,
        inode: meta.ino(),
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// The files a snapshot was built from ([`Snapshot::files`]: the configuration file, every
/// key file, the listener's certificate and key, the upstream's `ca_file` and `password_file`,
/// the simulator's files), with `config` (the path the relay was given) first.
pub fn watched_files(config: &Path, snapshot: &Snapshot) -> Vec<PathBuf> {
    let mut files = vec![config.to_path_buf()];
    for f in &snapshot.files {
        if !files.contains(f) {
            files.push(f.clone());
        }
    }
    files
}

pub fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files.iter().map(|f| (f.clone(), stamp(f))).collect()
}

/// Starts the watcher: takes the files' fingerprint now (so a change right after this call is
/// seen), then polls every `watch_interval` (read from the snapshot in force, so a reload can
/// change it or turn watching on and off) and reloads on change. Runs until aborted.
pub fn spawn(live: Live) -> tokio::task::JoinHandle<()> {
    let files = watched_files(live.path(), &live.snapshot());
    let last = fingerprint(&files);
    tokio::spawn(run(live, files, last))
}

async fn run(live: Live, mut files: Vec<PathBuf>, mut last: Fingerprint) {
    loop {
        let settings = live.snapshot().reload.clone();
        tokio::time::sleep(settings.watch_interval).await;
        if !settings.watch {
            continue;
        }
        let now = fingerprint(&files);
        if now == last {
            continue;
        }
        last = now;
        tracing::info!("configuration or key files changed: reloading");
        match live.reload_checked().await {
            Ok(r) => {
                super::reload::log_reloaded(&r);
                files = watched_files(live.path(), &r.snapshot);
                last = fingerprint(&files);
            }
            Err(diags) => super::reload::log_refused(&diags),
        }
    }
}
