//! The spool on disk: one file per message, committed durably, verified on every read.
//!
//! Layout under `dir`: `tmp/` (being written), `queue/` (committed, waiting), `active/`
//! (claimed by a delivery), `dead/` (dead-letter: refused for good or too old, with a `.reason`
//! file), `corrupt/` (failed verification: never forwarded, kept for the operator), plus
//! `paused` (the queue's pause, when SES refuses the account) and `kick` (touched by
//! `dkim-relay queue retry` to make the worker rescan).
//!
//! Commit (the only way into `queue/`): write `tmp/<id>.msg`, fsync it, rename into `queue/`,
//! fsync `queue/`. Only then may the client get 250. The file is `dkim-relay-spool 1\n`, one
//! JSON line (id, envelope, size), the signed message bytes, and a trailer line
//! `dkim-relay-commit sha256=<hex of everything before>`: a file torn at any byte (a crash, a
//! bad disk, a truncation) fails the check and is moved to `corrupt/`, never forwarded.
//!
//! Claims are renames: a delivery moves `queue/<id>.msg` to `active/` first, so the worker and
//! the `queue` commands never act on the same file at once (a rename either happens or not).
//! At start, whatever is in `active/` was in flight when the relay died: it goes back to
//! `queue/` and is delivered again — the one case where SES may see a message twice.
//! Per-message retry state (`queue/<id>.state`) is advisory (replaced atomically, not fsynced):
//! losing it costs an early retry, never a message.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const MAGIC: &[u8] = b"dkim-relay-spool 1\n";
const TRAILER: &[u8] = b"dkim-relay-commit sha256=";

/// The envelope and identity of a spooled message (immutable once committed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub id: String,
    /// When the relay accepted it (Unix milliseconds): the start of its maximum age.
    pub created_ms: u64,
    pub mail_from: String,
    pub rcpts: Vec<String>,
    /// Bytes of the signed message that follow the JSON line.
    pub size: usize,
}

/// Retry state of a queued message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Delivery attempts that counted (account-level and connection-level answers do not).
    pub attempts: u32,
    /// Not before this time (Unix milliseconds).
    pub next_attempt_ms: u64,
    pub last_reply: Option<String>,
    pub last_class: Option<String>,
}

/// Why a message is in `dead/` or `corrupt/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub at_ms: u64,
    pub why: String,
    pub last_reply: Option<String>,
}

/// The queue's pause (file `paused`), shared by the worker and `queue list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub since_ms: u64,
    /// The next probe (Unix milliseconds).
    pub probe_at_ms: u64,
    pub class: String,
    pub reply: String,
}

/// The folders of the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Queue,
    Active,
    Dead,
    Corrupt,
}

impl Area {
    fn dir(self) -> &'static str {
        match self {
            Area::Queue => "queue",
            Area::Active => "active",
            Area::Dead => "dead",
            Area::Corrupt => "corrupt",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the spool file system has {free} bytes free, below the floor of {floor}")]
    Full { free: u64, floor: u64 },
    #[error("cannot write to the spool: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no such message")]
    Missing,
    #[error("torn or corrupt spool file: {0}")]
    Torn(String),
    #[error("cannot read the spool file: {0}")]
    Io(io::Error),
}

/// What start-up recovery found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Uncommitted files in `tmp/` (never answered 250), removed.
    pub uncommitted: usize,
    /// Messages that were being delivered at the crash: back in the queue.
    pub in_flight: Vec<String>,
}

/// The spool directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A queue id: the time in milliseconds (hex, so ids sort by age) and 32 random bits.
pub fn new_id() -> String {
    format!("{:011x}{:08x}", now_ms(), rand::random::<u32>())
}

/// Whether `id` is a queue id (and so safe as a file name).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

fn sha256_hex(bytes: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The committed file's bytes.
pub fn encode(meta: &Meta, data: &[u8]) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(MAGIC.len() + json.len() + data.len() + 100);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&json);
    out.push(b'\n');
    out.extend_from_slice(data);
    let sum = sha256_hex(&out);
    out.extend_from_slice(TRAILER);
    out.extend_from_slice(sum.as_bytes());
    out.push(b'\n');
    Ok(out)
}

/// Verifies a spool file and returns its envelope and where the message bytes are.
pub fn decode(bytes: &[u8]) -> Result<(Meta, std::ops::Range<usize>), String> {
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or("the file does not start with the spool header")?;
    let nl = memchr::memchr(b'\n', rest).ok_or("the envelope line is cut")?;
    let meta: Meta =
        serde_json::from_slice(&rest[..nl]).map_err(|e| format!("bad envelope line: {e}"))?;
    let start = MAGIC.len() + nl + 1;
    let end = start
        .checked_add(meta.size)
        .filter(|e| *e <= bytes.len())
        .ok_or("the message is cut short")?;
    let trailer = &bytes[end..];
    let sum = trailer
        .strip_prefix(TRAILER)
        .and_then(|t| t.strip_suffix(b"\n"))
        .ok_or("the commit marker is missing or cut")?;
    if sum != sha256_hex(&bytes[..end]).as_bytes() {
        return Err("the checksum does not match".into());
    }
    Ok((meta, start..end))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` through a temporary name and a rename (not fsynced: advisory).
fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, path)
}

fn gone_ok(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

impl Store {
    /// Opens (creating) the spool directory and its folders.
    pub fn open(root: &Path) -> io::Result<Store> {
        for sub in ["tmp", "queue", "active", "dead", "corrupt"] {
            fs::create_dir_all(root.join(sub))?;
        }
        sync_dir(root)?;
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn msg(&self, area: Area, id: &str) -> PathBuf {
        self.root.join(area.dir()).join(format!("{id}.msg"))
    }

    fn side(&self, area: Area, id: &str, ext: &str) -> PathBuf {
        self.root.join(area.dir()).join(format!("{id}.{ext}"))
    }

    /// Bytes available to the relay on the spool's file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let s = rustix::fs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok(s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// Commits a message durably: write, fsync the file, rename into `queue/`, fsync the
    /// folder. `state` (written first, advisory) says when to try it.
    pub fn commit(
        &self,
        meta: &Meta,
        data: &[u8],
        state: &State,
        min_free: u64,
    ) -> Result<(), CommitError> {
        let free = self.free_bytes()?;
        if free < min_free.saturating_add(data.len() as u64) {
            return Err(CommitError::Full {
                free,
                floor: min_free,
            });
        }
        let bytes = encode(meta, data)?;
        let tmp = self.root.join("tmp").join(format!("{}.msg", meta.id));
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            self.write_state(&meta.id, state)?;
            fs::rename(&tmp, self.msg(Area::Queue, &meta.id))?;
            sync_dir(&self.root.join("queue"))
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(self.msg(Area::Queue, &meta.id));
            let _ = fs::remove_file(self.side(Area::Queue, &meta.id, "state"));
            return Err(e.into());
        }
        Ok(())
    }

    /// Reads and verifies a message.
    pub fn read(&self, area: Area, id: &str) -> Result<(Meta, Vec<u8>), ReadError> {
        let bytes = match fs::read(self.msg(area, id)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
            Err(e) => return Err(ReadError::Io(e)),
        };
        let (meta, range) = decode(&bytes).map_err(ReadError::Torn)?;
        if meta.id != id {
            return Err(ReadError::Torn(format!(
                "the file names message {}, not {id}",
                meta.id
            )));
        }
        let mut bytes = bytes;
        bytes.truncate(range.end);
        bytes.drain(..range.start);
        Ok((meta, bytes))
    }

    /// A message's envelope from its first two lines, without reading or verifying the body
    /// (for `queue list`; delivery always verifies the whole file).
    pub fn meta(&self, area: Area, id: &str) -> Result<Meta, ReadError> {
        use std::io::{BufRead, BufReader};
        let f = match File::open(self.msg(area, id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ReadError::Missing),
            Err(e) => return Err(ReadError::Io(e)),
        };
        let mut r = BufReader::new(f);
        let mut magic = Vec::new();
        r.read_until(b'\n', &mut magic).map_err(ReadError::Io)?;
        if magic != MAGIC {
            return Err(ReadError::Torn(
                "the file does not start with the spool header".into(),
            ));
        }
        let mut line = Vec::new();
        r.read_until(b'\n', &mut line).map_err(ReadError::Io)?;
        serde_json::from_slice(&line)
            .map_err(|e| ReadError::Torn(format!("bad envelope line: {e}")))
    }

    /// The ids in a folder, oldest first.
    pub fn list(&self, area: Area) -> io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(self.root.join(area.dir()))? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(id) = name.strip_suffix(".msg")
                && valid_id(id)
            {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Claims a queued message for delivery (`queue/` → `active/`); `false` when it is not
    /// queued (delivered, deleted or claimed meanwhile).
    pub fn claim(&self, id: &str) -> io::Result<bool> {
        match fs::rename(self.msg(Area::Queue, id), self.msg(Area::Active, id)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts a claimed message back in the queue with its new retry state.
    pub fn release(&self, id: &str, state: &State) -> io::Result<()> {
        self.write_state(id, state)?;
        fs::rename(self.msg(Area::Active, id), self.msg(Area::Queue, id))
    }

    /// Removes a delivered message.
    pub fn delivered(&self, id: &str) -> io::Result<()> {
        gone_ok(fs::remove_file(self.msg(Area::Active, id)))?;
        gone_ok(fs::remove_file(self.side(Area::Queue, id, "state")))
    }

    /// Moves a message to `dead/` (or `corrupt/`) with its reason, durably.
    pub fn bury(&self, from: Area, to: Area, id: &str, reason: &Reason) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(reason).map_err(io::Error::other)?;
        let mut f = File::create(self.side(to, id, "reason"))?;
        f.write_all(&json)?;
        f.sync_all()?;
        fs::rename(self.msg(from, id), self.msg(to, id))?;
        sync_dir(&self.root.join(to.dir()))?;
        gone_ok(fs::remove_file(self.side(Area::Queue, id, "state")))
    }

    /// Why a message is in `dead/` or `corrupt/`.
    pub fn reason(&self, area: Area, id: &str) -> Option<Reason> {
        let bytes = fs::read(self.side(area, id, "reason")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Start-up: uncommitted files are dropped (they never got 250), messages that were in
    /// flight go back to the queue.
    pub fn recover(&self) -> io::Result<Recovered> {
        let mut out = Recovered::default();
        for entry in fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            fs::remove_file(entry.path())?;
            out.uncommitted += 1;
        }
        for id in self.list(Area::Active)? {
            fs::rename(self.msg(Area::Active, &id), self.msg(Area::Queue, &id))?;
            out.in_flight.push(id);
        }
        sync_dir(&self.root.join("queue"))?;
        Ok(out)
    }

    pub fn read_state(&self, id: &str) -> Option<State> {
        let bytes = fs::read(self.side(Area::Queue, id, "state")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn write_state(&self, id: &str, state: &State) -> io::Result<()> {
        let json = serde_json::to_vec(state).map_err(io::Error::other)?;
        replace(&self.side(Area::Queue, id, "state"), &json)
    }

    /// Deletes a message from a folder (`queue delete`); `false` when it is not there.
    pub fn remove(&self, area: Area, id: &str) -> io::Result<bool> {
        match fs::remove_file(self.msg(area, id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        }
        gone_ok(fs::remove_file(self.side(area, id, "reason")))?;
        gone_ok(fs::remove_file(self.side(Area::Queue, id, "state")))?;
        Ok(true)
    }

    /// Moves a dead-lettered message back into the queue, due now (`queue retry ID`).
    pub fn requeue_dead(&self, id: &str) -> io::Result<bool> {
        self.write_state(id, &State::default())?;
        match fs::rename(self.msg(Area::Dead, id), self.msg(Area::Queue, id)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = fs::remove_file(self.side(Area::Queue, id, "state"));
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        gone_ok(fs::remove_file(self.side(Area::Dead, id, "reason")))?;
        Ok(true)
    }

    pub fn pause(&self) -> Option<Pause> {
        let bytes = fs::read(self.root.join("paused")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn set_pause(&self, pause: Option<&Pause>) -> io::Result<()> {
        let path = self.root.join("paused");
        match pause {
            Some(p) => replace(&path, &serde_json::to_vec(p).map_err(io::Error::other)?),
            None => gone_ok(fs::remove_file(path)),
        }
    }

    /// Takes the spool's exclusive lock (file `lock`, `flock`): one relay per spool, or two
    /// workers would recover and deliver each other's messages. Held while the file is open;
    /// the kernel drops it when the process dies, so a crash never leaves it stale.
    pub fn lock(&self) -> io::Result<File> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("lock"))?;
        rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
            |e| {
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("another dkim-relay process uses this spool ({e})"),
                )
            },
        )?;
        Ok(f)
    }

    /// Tells a running worker to rescan the queue (`queue retry`).
    pub fn kick(&self) -> io::Result<()> {
        let stamp = format!("{}-{}", now_ms(), rand::random::<u32>());
        replace(&self.root.join("kick"), stamp.as_bytes())
    }

    /// The current kick stamp (compared by the worker).
    pub fn kick_stamp(&self) -> Option<Vec<u8>> {
        fs::read(self.root.join("kick")).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, size: usize) -> Meta {
        Meta {
            id: id.into(),
            created_ms: 1,
            mail_from: "a@example.org".into(),
            rcpts: vec!["b@example.net".into()],
            size,
        }
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_detected() {
        let data = b"From: a@example.org\r\n\r\nhello\r\n";
        let bytes = encode(&meta("abc", data.len()), data).unwrap();
        let (m, r) = decode(&bytes).unwrap();
        assert_eq!(&bytes[r], data);
        assert_eq!(m.id, "abc");
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} not detected");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(decode(&b).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn commit_claim_release_bury() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = new_id();
        assert!(valid_id(&id));
        store
            .commit(&meta(&id, 5), b"hello", &State::default(), 0)
            .unwrap();
        assert_eq!(store.list(Area::Queue).unwrap(), vec![id.clone()]);
        assert!(store.claim(&id).unwrap());
        assert!(!store.claim(&id).unwrap());
        assert_eq!(store.read(Area::Active, &id).unwrap().1, b"hello");
        let rec = store.recover().unwrap();
        assert_eq!(rec.in_flight, vec![id.clone()]);
        assert!(store.claim(&id).unwrap());
        store
            .bury(
                Area::Active,
                Area::Dead,
                &id,
                &Reason {
                    at_ms: 1,
                    why: "refused".into(),
                    last_reply: Some("554 no".into()),
                },
            )
            .unwrap();
        assert_eq!(store.list(Area::Dead).unwrap(), vec![id.clone()]);
        assert_eq!(store.reason(Area::Dead, &id).unwrap().why, "refused");
        assert!(store.requeue_dead(&id).unwrap());
        assert_eq!(store.list(Area::Queue).unwrap(), vec![id.clone()]);
        assert!(matches!(
            store.commit(&meta("ff", 1), b"x", &State::default(), u64::MAX / 2),
            Err(CommitError::Full { .. })
        ));
    }

    #[test]
    fn one_relay_per_spool() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let held = store.lock().unwrap();
        let again = Store::open(dir.path()).unwrap().lock();
        assert!(
            again
                .unwrap_err()
                .to_string()
                .contains("another dkim-relay")
        );
        drop(held);
        store.lock().unwrap();
    }
}
