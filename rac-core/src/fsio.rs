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
