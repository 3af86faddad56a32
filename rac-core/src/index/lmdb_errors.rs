//! Storage-layer errors (heed, arroy, hannoy) in words: each names the index folder and the
//! operation, a full map is told apart (the write path grows the map and retries), a full
//! disk and a damaged page say what to do.

use std::path::Path;

use super::lmdb_file::data_file;
use crate::error::{Error, Result};

/// Conversion of storage-layer errors into [`Error`], naming the index and the operation.
/// A full map becomes [`Error::IndexMapFull`], which [`Store::write`] recognises.
pub(crate) trait StoreResult<T> {
    fn at(self, path: &Path, op: &str) -> Result<T>;
}

fn is_map_full_heed(e: &heed::Error) -> bool {
    matches!(e, heed::Error::Mdb(heed::MdbError::MapFull))
}

fn store_error(path: &Path, op: &str, map_full: bool, message: String) -> Error {
    if map_full {
        Error::IndexMapFull { path: path.to_path_buf(), map_size: 0, limit: 0 }
    } else {
        Error::IndexStore { path: path.to_path_buf(), op: op.to_string(), message }
    }
}

/// An LMDB error in words. LMDB reports a write that only partly fit as EIO ("short write,
/// filesystem full?"), so an EIO while the folder's filesystem has (almost) no space left
/// is said to be a full disk, as ENOSPC is.
fn heed_message(path: &Path, e: &heed::Error) -> String {
    use heed::MdbError::{Corrupted, PageNotFound, Panic};
    if let heed::Error::Mdb(m @ (Corrupted | PageNotFound | Panic)) = e {
        return format!(
            "the index is damaged: LMDB found a page it cannot use ({m}); run `rac index verify` to see which source, \
             then remove the folder and rebuild it with `rac index build`"
        );
    }
    let heed::Error::Io(io) = e else { return e.to_string() };
    const NEARLY_FULL: u64 = 1 << 20;
    let free = fs4::available_space(path).ok();
    let full = io.kind() == std::io::ErrorKind::StorageFull || (io.raw_os_error() == Some(EIO) && free.is_some_and(|f| f < NEARLY_FULL));
    if full {
        let free = free.map_or(String::new(), |f| format!(", {f} bytes free"));
        format!(
            "the disk is full while writing {} ({io}{free}); free space on that filesystem (or build the index in a folder on another one) and run it again",
            data_file(path).display()
        )
    } else {
        crate::error::io_meaning(io)
    }
}

/// EIO, as LMDB returns it for a short write.
const EIO: i32 = 5;

impl<T> StoreResult<T> for std::result::Result<T, heed::Error> {
    fn at(self, path: &Path, op: &str) -> Result<T> {
        self.map_err(|e| store_error(path, op, is_map_full_heed(&e), heed_message(path, &e)))
    }
}

/// arroy's and hannoy's errors wrap heed's the same way: one impl for both.
macro_rules! ann_store_result {
    ($($krate:ident),*) => {$(
        impl<T> StoreResult<T> for std::result::Result<T, $krate::Error> {
            fn at(self, path: &Path, op: &str) -> Result<T> {
                self.map_err(|e| {
                    let full = matches!(&e, $krate::Error::Heed(h) if is_map_full_heed(h));
                    let message = if let $krate::Error::Heed(h) = &e { heed_message(path, h) } else { e.to_string() };
                    store_error(path, op, full, message)
                })
            }
        }
    )*};
}

ann_store_result!(arroy, hannoy);

/// An error of opening an environment, in words.
pub(crate) fn open_error(path: &Path, e: heed::Error) -> Error {
    match e {
        heed::Error::EnvAlreadyOpened => Error::IndexStore {
            path: path.to_path_buf(),
            op: "opening".into(),
            message: "this index is already open in this process (in a notebook: by a value of an earlier cell); use that handle, or drop it first"
                .into(),
        },
        heed::Error::Mdb(heed::MdbError::Invalid) | heed::Error::Mdb(heed::MdbError::VersionMismatch) => {
            Error::NotAnIndex { path: path.to_path_buf(), reason: format!("data.mdb is not an LMDB environment ({e})") }
        }
        other => Error::IndexStore { path: path.to_path_buf(), op: "opening".into(), message: heed_message(path, &other) },
    }
}
