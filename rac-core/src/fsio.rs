//! Small file helpers shared by every stage: reads that name their path in errors,
//! sha256 checksums, and atomic writes (temporary file, then rename) so that a run that
//! dies never leaves a half-written file that a later run trusts.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Read a whole file; `what` names it in the error ("split file", "manifest", …).
pub fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("reading", what, path, e))
}

/// Read a whole UTF-8 file; `what` names it in the error.
pub fn read_to_string(path: &Path, what: &str) -> Result<String> {
    let bytes = read(path, what)?;
    String::from_utf8(bytes).map_err(|e| Error::Format { path: path.to_path_buf(), message: format!("not valid UTF-8 ({e})") })
}

/// The lower-case hex sha256 of a byte slice.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The lower-case hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("opening", "file", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io("reading", "file", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Check a file's sha256 against the expected value.
pub fn verify_sha256(path: &Path, expected: &str, hint: Option<String>) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Error::Checksum { path: path.to_path_buf(), expected: expected.to_string(), actual, hint })
    }
}

/// Create a folder and its parents.
pub fn create_dir_all(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| Error::Io { op: "creating folder", path: path.into(), cause: e })
}

/// A sibling path for a temporary file: unique per process, ignored by every reader.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Write `bytes` to `path` atomically: a temporary sibling is written, synced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io { op: "writing", path: path.to_path_buf(), cause: e }
    })
}

/// How an on-disk cache (the feature store, the neighbour cache) answered a request.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheOutcome {
    /// Read back from a valid entry.
    Hit,
    /// Computed (encoded, searched) and stored, as there was no entry.
    Computed,
    /// Computed again and stored, as the entry was damaged.
    Recomputed {
        /// What was wrong with the entry.
        reason: String,
    },
}

/// The environment variable that bounds, in seconds, how long a process waits for a lock
/// another process holds (an index being changed, a cache entry being built); unset, it
/// waits as long as it takes.
pub const LOCK_WAIT_VAR: &str = "RAC_LOCK_WAIT_S";

fn lock_wait() -> Result<Option<std::time::Duration>> {
    let Ok(value) = std::env::var(LOCK_WAIT_VAR) else { return Ok(None) };
    let secs: f64 = value.trim().parse().ok().filter(|s: &f64| s.is_finite() && *s >= 0.0).ok_or_else(|| Error::Setting {
        field: LOCK_WAIT_VAR.into(),
        message: format!("`{value}` is not a number of seconds (0 or more); unset it to wait as long as it takes"),
    })?;
    Ok(Some(std::time::Duration::from_secs_f64(secs.min(1e9))))
}

/// An exclusive lock on a file, across processes (`flock`): one holder at a time, released
/// when dropped, and by the kernel when its process dies (a killed writer never leaves a
/// lock behind). The holder writes who it is into the file, for whoever waits.
pub struct FileLock {
    file: std::fs::File,
}

impl FileLock {
    /// Take the lock of `path` (created if missing) to do `op`: at once when it is free,
    /// otherwise after a line saying whom this process waits for, and waiting no longer
    /// than [`LOCK_WAIT_VAR`] says ([`Error::Busy`] then).
    pub fn exclusive(path: &Path, op: &str) -> Result<FileLock> {
        use std::fs::TryLockError;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io("opening", "lock file", path, e))?;
        let limit = lock_wait()?;
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(Error::io("locking", "lock file", path, e)),
            }
            let holder = || std::fs::read_to_string(path).ok().filter(|h| !h.trim().is_empty()).unwrap_or_else(|| "another process".into());
            if limit.is_some_and(|limit| started.elapsed() >= limit) {
                return Err(Error::Busy {
                    path: path.to_path_buf(),
                    op: op.to_string(),
                    holder: holder(),
                    waited_s: started.elapsed().as_secs(),
                    var: LOCK_WAIT_VAR,
                });
            }
            if !told {
                eprintln!("{}: waiting for {} to finish before {op}", path.display(), holder());
                told = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Best effort: the note only serves the message of whoever waits next.
        let _ = file.set_len(0);
        let _ = (&file).write_all(format!("process {} ({op})", std::process::id()).as_bytes());
        Ok(FileLock { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}
