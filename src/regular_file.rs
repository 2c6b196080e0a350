//! Reading a file the configuration names — the configuration itself, DKIM keys, certificates,
//! password files — safely: only a regular file (after following symlinks) of bounded size,
//! and not writable by every local user.
//!
//! Why: a path is operator input, and a careless one must get a clear error, not a hang or an
//! out-of-memory. A FIFO would block `check`, `serve` and every later reload on `open`/`read`;
//! `/dev/zero` would be read until memory runs out. So the file is opened non-blocking
//! (`O_NONBLOCK`: opening a FIFO returns at once), the OPENED descriptor is checked with
//! `fstat` (no race with a file swapped in after a `stat`), and at most [`MAX_FILE_SIZE`] bytes
//! are read. A world-writable file is refused: anyone on the host could then change what the
//! relay signs with or who may submit.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The largest file read: far above any configuration, key or certificate chain.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Reads `path` if it is a regular file of at most [`MAX_FILE_SIZE`] bytes that not every
/// user may write. The error says which rule the file broke (the caller names the file).
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, socket or device)"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what}; only regular files are read"),
        ));
    }
    if meta.len() > MAX_FILE_SIZE {
        return Err(too_big());
    }
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "world-writable (mode {:o}): any local user could change it; chmod o-w",
                mode & 0o7777
            ),
        ));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_SIZE + 1).read_to_end(&mut out)?;
    if out.len() as u64 > MAX_FILE_SIZE {
        return Err(too_big());
    }
    Ok(out)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8 text"))
}

fn too_big() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("larger than {MAX_FILE_SIZE} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.txt");
        std::fs::write(&ok, "hello").unwrap();
        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_to_string(&ok).unwrap(), "hello");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(read(&link).unwrap(), b"hello");

        // /dev/null, not /dev/zero: should the check regress, this fails instead of reading
        // until memory runs out.
        let err = read(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        let err = read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");

        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            let err = read(&fifo).unwrap_err();
            assert!(err.to_string().contains("not a regular file"), "{err}");
        }

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; MAX_FILE_SIZE as usize + 1]).unwrap();
        assert!(read(&big).unwrap_err().to_string().contains("larger than"));

        std::fs::set_permissions(&ok, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = read(&ok).unwrap_err();
        assert!(err.to_string().contains("world-writable"), "{err}");
    }
}
