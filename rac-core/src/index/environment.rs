//! Opening an index folder's LMDB environment: read-write, or read-only where the folder
//! cannot be written; never twice in one process (evcxr links a copy of heed into each
//! notebook cell); the data file's pages checked before LMDB maps them.

use std::path::Path;

use heed::{Env, EnvOpenOptions, WithoutTls};

use super::lmdb_errors::{StoreResult, open_error};
use super::lmdb_file::{self, Depth, data_file};
use super::schema::INTERRUPTED;
use crate::error::Result;

pub(crate) const NO_FOLDER: &str = "no such folder";
pub(crate) const NO_DATA: &str = "it has no data.mdb (LMDB) file";

/// Whether a folder that failed to open as an index for `reason` may receive a new build:
/// it is missing, has no LMDB file yet, or holds an interrupted first build. A foreign or
/// damaged LMDB file is never overwritten.
pub(crate) fn may_build_over(reason: &str) -> bool {
    [NO_FOLDER, NO_DATA, INTERRUPTED].contains(&reason)
}

/// A type-erased clone of an environment, whose drop runs the opening copy's code.
pub(crate) type Closer = std::sync::Arc<dyn std::any::Any + Send + Sync>;

pub(crate) fn closer(env: &Env<WithoutTls>) -> Closer {
    std::sync::Arc::new(env.clone())
}

/// Whether this process already has the LMDB environment in `path` open: its lock file is
/// among the process's open files. heed refuses a second open, but only within one copy of
/// heed; two copies (two notebook cells) would map it twice, and the second open would reset
/// the lock file's reader table under the first. Linux only; elsewhere heed's check stands.
fn open_in_this_process(path: &Path) -> bool {
    let Ok(lock) = std::fs::canonicalize(path).map(|p| p.join("lock.mdb")) else {
        return false;
    };
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == lock))
}

/// Check the tree of the snapshot `env`'s next read transaction sees, before anything of
/// LMDB's walks it (see `lmdb_file`). The transaction is held while its pages are read, so
/// that no writer reuses them; its root is that of a meta page read while it is held. When
/// writers of other processes keep committing, both meta pages may already name newer
/// commits: the read is tried again, and after many tries the check is left to LMDB (the
/// file was just written by a live LMDB, not copied or cut).
pub(crate) fn check_snapshot(env: &Env<WithoutTls>, path: &Path, file: &lmdb_file::DataFile, depth: Depth) -> Result<()> {
    const TRIES: usize = 50;
    for _ in 0..TRIES {
        let rtxn = env.read_txn().at(path, "opening")?;
        let id = rtxn.id() as u64;
        let reread;
        let file = if file.meta_of(id).is_some() {
            file
        } else {
            reread = lmdb_file::check_meta(path, &data_file(path))?;
            &reread
        };
        if let Some(meta) = file.meta_of(id) {
            return lmdb_file::check_tree(path, &data_file(path), file, meta, depth);
        }
    }
    Ok(())
}

/// How an environment is opened: read-write, or read-only where the folder cannot be written
/// (a read-only mount, a folder of another user), so that `stats` and queries still work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Write,
    OnlyRead,
    /// Read-only without LMDB's lock file, which cannot be opened for writing: no reader is
    /// registered, which only matters to a writer, and whoever may write the folder is not us.
    OnlyReadNoLock,
}

pub(crate) fn try_open_env(path: &Path, map_size: usize, access: Access) -> heed::Result<Env<WithoutTls>> {
    if access != Access::OnlyReadNoLock && open_in_this_process(path) {
        return Err(heed::Error::EnvAlreadyOpened);
    }
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(map_size).max_dbs(12);
    // SAFETY: READ_ONLY is safe; NO_LOCK only where this process cannot write the folder
    // (see `Access::OnlyReadNoLock`).
    match access {
        Access::Write => {}
        Access::OnlyRead => unsafe {
            opts.flags(heed::EnvFlags::READ_ONLY);
        },
        Access::OnlyReadNoLock => unsafe {
            opts.flags(heed::EnvFlags::READ_ONLY | heed::EnvFlags::NO_LOCK);
        },
    }
    // SAFETY: the folder is only ever opened through this module, which never lets two
    // environments of one process map the same folder (heed refuses that too), and the data
    // file is only modified by LMDB itself.
    unsafe { opts.open(path) }
}

pub(crate) fn open_env(path: &Path, map_size: usize, access: Access) -> Result<Env<WithoutTls>> {
    try_open_env(path, map_size, access).map_err(|e| open_error(path, e))
}

/// Whether opening failed because the folder or its files cannot be written.
fn is_not_writable(e: &heed::Error) -> bool {
    use std::io::ErrorKind::{PermissionDenied, ReadOnlyFilesystem};
    matches!(e, heed::Error::Io(io) if matches!(io.kind(), PermissionDenied | ReadOnlyFilesystem))
}

/// Open the environment of an existing index: read-write, or read-only when it cannot be
/// written. Returns whether it is read-only.
pub(crate) fn open_existing_env(path: &Path, map_size: usize) -> Result<(Env<WithoutTls>, bool)> {
    let read_only = match try_open_env(path, map_size, Access::Write) {
        Ok(env) => return Ok((env, false)),
        Err(e) if is_not_writable(&e) => try_open_env(path, map_size, Access::OnlyRead),
        Err(e) => return Err(open_error(path, e)),
    };
    let env = match read_only {
        Err(e) if is_not_writable(&e) => open_env(path, map_size, Access::OnlyReadNoLock)?,
        other => other.map_err(|e| open_error(path, e))?,
    };
    Ok((env, true))
}
