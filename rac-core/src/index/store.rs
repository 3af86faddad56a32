//! The LMDB side of an index: one environment in one folder, its named databases, the
//! records kept in them, and the one way to change them — a single write transaction that
//! commits everything or nothing, grows the map when it fills up, and retries.
//!
//! | database | key | value |
//! |---|---|---|
//! | `meta` | `format_version`, `meta` | u32 LE; [`Meta`] as JSON |
//! | `items` | item id (u32 BE) | [`ItemRecord`] as JSON |
//! | `sources` | source name | [`SourceRecord`] as JSON |
//! | `vectors` | item id (u32 BE) | f32 LE (the exact and usearch backends' vectors) |
//! | `arroy` / `hannoy` | the crate's own keys | the crate's own nodes (vectors, trees, graph) |
//! | `neighbours` | query-set name | a cached neighbour list (see `neighbours.rs`) |
//!
//! The usearch backend's graph is a file beside `data.mdb` (see `graph.rs`); [`Meta`] records
//! which generation of it belongs to the committed items, with its length and checksum.

use std::path::{Path, PathBuf};

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U32};
use heed::{CommitOrAbort, Env, EnvOpenOptions, RwTxn, WithoutTls};
use serde::{Deserialize, Serialize};

use super::config::{Backend, IndexConfig, Metric};
use super::lmdb_file;
pub(crate) use super::lmdb_file::Depth;
use crate::error::{Error, Result};

const NO_FOLDER: &str = "no such folder";
const NO_DATA: &str = "it has no data.mdb (LMDB) file";
const INTERRUPTED: &str = "no format version stored (an interrupted first build, or another program's LMDB)";

/// Whether a folder that failed to open as an index for `reason` may receive a new build:
/// it is missing, has no LMDB file yet, or holds an interrupted first build. A foreign or
/// damaged LMDB file is never overwritten.
pub(crate) fn may_build_over(reason: &str) -> bool {
    [NO_FOLDER, NO_DATA, INTERRUPTED].contains(&reason)
}

/// The version of the on-disk layout this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

pub(crate) type IdDb<V> = heed::Database<'static, U32<BigEndian>, V>;
pub(crate) type NameDb = heed::Database<'static, Str, Bytes>;

/// The approximate backends' own database, typed by backend and metric.
#[derive(Clone, Copy)]
pub(crate) enum AnnDbT<'t> {
    None,
    ArroyCosine(arroy::Database<'t, arroy::distances::Cosine>),
    ArroyL2(arroy::Database<'t, arroy::distances::Euclidean>),
    HnswCosine(hannoy::Database<'t, hannoy::distances::Cosine>),
    HnswL2(hannoy::Database<'t, hannoy::distances::Euclidean>),
}

/// The committed, usable form of [`AnnDbT`].
pub(crate) type AnnDb = AnnDbT<'static>;

impl<'t> heed::OnCommit for AnnDbT<'t> {
    type Committed = AnnDb;
    fn on_commit(self, token: &heed::CommitToken) -> AnnDb {
        match self {
            AnnDbT::None => AnnDbT::None,
            AnnDbT::ArroyCosine(d) => AnnDbT::ArroyCosine(d.on_commit(token)),
            AnnDbT::ArroyL2(d) => AnnDbT::ArroyL2(d.on_commit(token)),
            AnnDbT::HnswCosine(d) => AnnDbT::HnswCosine(d.on_commit(token)),
            AnnDbT::HnswL2(d) => AnnDbT::HnswL2(d.on_commit(token)),
        }
    }
}

/// Every database of an index.
#[derive(Clone, Copy)]
pub(crate) struct Dbs {
    pub meta: NameDb,
    pub items: IdDb<Bytes>,
    pub sources: NameDb,
    pub vectors: IdDb<Bytes>,
    pub neighbours: NameDb,
    pub ann: AnnDb,
}

/// The index-wide record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub config: IndexConfig,
    /// The vectors' dimension; 0 until the first source is added.
    pub dim: usize,
    /// The next item id to hand out; ids are never reused.
    pub next_id: u32,
    /// The number of items.
    pub n_items: u64,
    /// Changes whenever the set of items changes (see [`fingerprint`]).
    pub fingerprint: String,
    /// The usearch backend's graph file that matches the items (none for other backends
    /// and while empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphRecord>,
}

/// One generation of the usearch graph file, as recorded in the transaction that commits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GraphRecord {
    /// The generation: the file is `graph.<generation>.usearch`; each change writes the next.
    pub generation: u64,
    /// The file's length in bytes.
    pub bytes: u64,
    /// xxh3-128 of the file's bytes, as hex.
    pub xxh3: String,
    /// Live items in the graph.
    pub items: u64,
    /// Items removed since the graph was last built whole (deleted nodes it still holds).
    pub deleted: u64,
}

/// What the index knows of one item besides its vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// The item's key in its source (an image path, a split index).
    pub key: String,
    /// The source it came from.
    pub source: String,
    /// Its label id.
    pub label: u32,
    /// Its text: the label's name, a caption or a description.
    pub text: String,
}

/// One source: a named, contiguous run of item ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The source's name.
    pub name: String,
    /// Its first item id.
    pub first_id: u32,
    /// Its number of items.
    pub count: u32,
    /// sha256 of its vectors, labels, texts and keys, as added.
    pub content_sha256: String,
    /// xxh3-128 of its items as stored (see [`StoredHasher`]), which `rac index verify`
    /// recomputes; absent in sources written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_xxh3: Option<String>,
}

impl SourceRecord {
    /// Its item ids.
    pub fn ids(&self) -> std::ops::Range<u32> {
        self.first_id..self.first_id + self.count
    }
}

/// The checksum of one source's items as LMDB stores them: per item, in id order, its
/// stored vector's bytes (normalised under cosine) and its record's bytes. The content
/// sha256 covers what was added; this one covers what is read back, so an edit of a stored
/// vector or record, which changes neither the fingerprint nor the counts, is found. xxh3
/// (as for the graph file): it guards against damage, not an adversary, at memory speed.
pub(crate) struct StoredHasher(xxhash_rust::xxh3::Xxh3);

impl StoredHasher {
    pub fn new() -> Self {
        StoredHasher(xxhash_rust::xxh3::Xxh3::new())
    }

    /// Add the next item: its stored vector (f32, little-endian) and its record's bytes.
    pub fn item(&mut self, vector: &[u8], record: &[u8]) {
        self.0.update(vector);
        self.0.update(&(record.len() as u64).to_le_bytes());
        self.0.update(record);
    }

    pub fn finish(&self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}

/// The fingerprint of an index's content: its build settings and its sources' content hashes.
/// Removing a source that was added gives back the earlier fingerprint.
pub(crate) fn fingerprint(config: &IndexConfig, sources: &[SourceRecord]) -> String {
    let mut sorted: Vec<&SourceRecord> = sources.iter().collect();
    sorted.sort_by_key(|a| a.first_id);
    // Only what shapes the stored structure; query-time knobs (search_k, ef_search) are not content.
    let build = (FORMAT_VERSION, config.backend, config.metric, config.arroy.n_trees, config.hnsw.ef_construction, config.seed);
    let mut text = serde_json::to_string(&build).expect("config serialises");
    // Later settings join only when they apply, so that earlier indexes keep their fingerprints.
    if config.backend == Backend::Usearch {
        text.push_str(&format!("|usearch:{}", config.usearch.storage.name()));
    }
    if config.deterministic {
        text.push_str("|deterministic");
    }
    for s in sorted {
        text.push_str(&format!("|{}:{}:{}:{}", s.name, s.first_id, s.count, s.content_sha256));
    }
    crate::fsio::sha256_bytes(text.as_bytes())
}

/// A deliberate failure, for crash-safety tests: the operation does all its work, then
/// fails (or hangs, so that a test can kill the process) just before it commits.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq)]
pub enum Failpoint {
    /// Return an error instead of committing.
    BeforeCommit,
    /// Create the marker file, then sleep until killed, instead of committing.
    HangBeforeCommit(PathBuf),
}

impl Failpoint {
    /// Parse `before-commit` or `hang-before-commit=MARKER` (the `RAC_INDEX_FAILPOINT` value).
    pub fn parse(s: &str) -> Result<Self> {
        if s == "before-commit" {
            Ok(Failpoint::BeforeCommit)
        } else if let Some(marker) = s.strip_prefix("hang-before-commit=") {
            Ok(Failpoint::HangBeforeCommit(PathBuf::from(marker)))
        } else {
            Err(Error::InvalidInput(format!("RAC_INDEX_FAILPOINT: unknown value `{s}`")))
        }
    }
}

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

impl<T> StoreResult<T> for std::result::Result<T, arroy::Error> {
    fn at(self, path: &Path, op: &str) -> Result<T> {
        self.map_err(|e| {
            let full = matches!(&e, arroy::Error::Heed(h) if is_map_full_heed(h));
            let message = if let arroy::Error::Heed(h) = &e { heed_message(path, h) } else { e.to_string() };
            store_error(path, op, full, message)
        })
    }
}

impl<T> StoreResult<T> for std::result::Result<T, hannoy::Error> {
    fn at(self, path: &Path, op: &str) -> Result<T> {
        self.map_err(|e| {
            let full = matches!(&e, hannoy::Error::Heed(h) if is_map_full_heed(h));
            let message = if let hannoy::Error::Heed(h) = &e { heed_message(path, h) } else { e.to_string() };
            store_error(path, op, full, message)
        })
    }
}

pub(crate) fn read_sources(rtxn: &heed::RoTxn<'_>, db: NameDb, path: &Path) -> Result<Vec<SourceRecord>> {
    let mut out = Vec::new();
    for entry in db.iter(rtxn).at(path, "reading sources")? {
        let (name, bytes) = entry.at(path, "reading sources")?;
        let rec: SourceRecord = serde_json::from_slice(bytes).map_err(|e| Error::IndexStore {
            path: path.to_path_buf(),
            op: "reading sources".into(),
            message: format!("source `{name}`: {e}"),
        })?;
        out.push(rec);
    }
    out.sort_by_key(|s| s.first_id);
    Ok(out)
}

/// A vector as LMDB stores it: f32, little-endian.
pub(crate) fn encode_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A stored vector read back.
pub(crate) fn decode_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The LMDB data file of an index folder.
pub(crate) fn data_file(dir: &Path) -> PathBuf {
    dir.join("data.mdb")
}

/// An open index environment.
pub(crate) struct Store {
    pub path: PathBuf,
    pub env: Env<WithoutTls>,
    /// The environment's last reference, dropped after `env` (fields drop in order) through
    /// the vtable made where it was opened. evcxr links a copy of every dependency into each
    /// notebook cell, heed's registry of open environments included; a handle opened in one
    /// cell and dropped in a later one then closes in the registry of the copy that opened
    /// it, not in one that never heard of it.
    _closer: Closer,
    pub dbs: Dbs,
    pub meta: Meta,
    map_size: usize,
    pub failpoint: Option<Failpoint>,
    /// Opened read-only (its folder cannot be written): reads work, changes are refused.
    pub read_only: bool,
}

/// A type-erased clone of an environment, whose drop runs the opening copy's code.
type Closer = std::sync::Arc<dyn std::any::Any + Send + Sync>;

fn closer(env: &Env<WithoutTls>) -> Closer {
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
/// LMDB's walks it (see `lmdb_file`).
fn check_snapshot(env: &Env<WithoutTls>, path: &Path, file: &lmdb_file::DataFile, depth: Depth) -> Result<()> {
    let rtxn = env.read_txn().at(path, "opening")?;
    lmdb_file::check_tree(path, &data_file(path), file, rtxn.id() as u64, depth)
}

/// How an environment is opened: read-write, or read-only where the folder cannot be written
/// (a read-only mount, a folder of another user), so that `stats` and queries still work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Write,
    OnlyRead,
    /// Read-only without LMDB's lock file, which cannot be opened for writing: no reader is
    /// registered, which only matters to a writer, and whoever may write the folder is not us.
    OnlyReadNoLock,
}

fn try_open_env(path: &Path, map_size: usize, access: Access) -> heed::Result<Env<WithoutTls>> {
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

fn open_error(path: &Path, e: heed::Error) -> Error {
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

fn open_env(path: &Path, map_size: usize, access: Access) -> Result<Env<WithoutTls>> {
    try_open_env(path, map_size, access).map_err(|e| open_error(path, e))
}

/// Whether opening failed because the folder or its files cannot be written.
fn is_not_writable(e: &heed::Error) -> bool {
    use std::io::ErrorKind::{PermissionDenied, ReadOnlyFilesystem};
    matches!(e, heed::Error::Io(io) if matches!(io.kind(), PermissionDenied | ReadOnlyFilesystem))
}

/// Open the environment of an existing index: read-write, or read-only when it cannot be
/// written. Returns whether it is read-only.
fn open_existing_env(path: &Path, map_size: usize) -> Result<(Env<WithoutTls>, bool)> {
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

/// The approximate backend's database name: one per backend and metric, so that a rebuild
/// with another configuration never reopens a database under other types.
fn ann_name(backend: Backend, metric: Metric) -> Option<&'static str> {
    match (backend, metric) {
        (Backend::Arroy, Metric::Cosine) => Some("arroy-cosine"),
        (Backend::Arroy, Metric::L2) => Some("arroy-l2"),
        (Backend::Hnsw, Metric::Cosine) => Some("hannoy-cosine"),
        (Backend::Hnsw, Metric::L2) => Some("hannoy-l2"),
        (Backend::Exact | Backend::Usearch, _) => None,
    }
}

/// Create (or open) every database, typed for `config`, in one committed transaction.
fn create_dbs(env: &Env<WithoutTls>, path: &Path, config: &IndexConfig) -> Result<Dbs> {
    let wtxn = env.write_txn().at(path, "creating databases")?;
    let dbs = env
        .create_databases_and_commit(wtxn, |dbo, w| -> heed::Result<_> {
            let meta = dbo.create_database::<Str, Bytes>(w, Some("meta"))?;
            let items = dbo.create_database::<U32<BigEndian>, Bytes>(w, Some("items"))?;
            let sources = dbo.create_database::<Str, Bytes>(w, Some("sources"))?;
            let vectors = dbo.create_database::<U32<BigEndian>, Bytes>(w, Some("vectors"))?;
            let neighbours = dbo.create_database::<Str, Bytes>(w, Some("neighbours"))?;
            Ok(CommitOrAbort::<_, ()>::Commit((meta, items, sources, vectors, neighbours)))
        })
        .at(path, "creating databases")?
        .unwrap_commit();
    let (meta, items, sources, vectors, neighbours) = dbs;
    let ann = match ann_name(config.backend, config.metric) {
        None => AnnDb::None,
        Some(name) => {
            let wtxn = env.write_txn().at(path, "creating databases")?;
            env.create_databases_and_commit(wtxn, |dbo, w| -> heed::Result<_> {
                let opts = dbo.database_options();
                let db = match (config.backend, config.metric) {
                    (Backend::Arroy, Metric::Cosine) => AnnDbT::ArroyCosine(opts.types().name(name).create(w)?),
                    (Backend::Arroy, Metric::L2) => AnnDbT::ArroyL2(opts.types().name(name).create(w)?),
                    (Backend::Hnsw, Metric::Cosine) => AnnDbT::HnswCosine(opts.types().name(name).create(w)?),
                    (_, _) => AnnDbT::HnswL2(opts.types().name(name).create(w)?),
                };
                Ok(CommitOrAbort::<_, ()>::Commit(db))
            })
            .at(path, "creating databases")?
            .unwrap_commit()
        }
    };
    Ok(Dbs { meta, items, sources, vectors, neighbours, ann })
}

/// The databases of an index opened read-only: they must all exist already.
fn open_dbs(env: &Env<WithoutTls>, path: &Path, config: &IndexConfig) -> Result<Dbs> {
    let missing = |what: &str| Error::NotAnIndex { path: path.to_path_buf(), reason: format!("it has no `{what}` database") };
    let rtxn = env.read_txn().at(path, "opening databases")?;
    let (meta, items, sources, vectors, neighbours) = env
        .open_databases_and_commit(rtxn, |dbo, r| -> heed::Result<_> {
            Ok(CommitOrAbort::<_, ()>::Commit((
                dbo.open_database::<Str, Bytes>(r, Some("meta"))?,
                dbo.open_database::<U32<BigEndian>, Bytes>(r, Some("items"))?,
                dbo.open_database::<Str, Bytes>(r, Some("sources"))?,
                dbo.open_database::<U32<BigEndian>, Bytes>(r, Some("vectors"))?,
                dbo.open_database::<Str, Bytes>(r, Some("neighbours"))?,
            )))
        })
        .at(path, "opening databases")?
        .unwrap_commit();
    let ann = match ann_name(config.backend, config.metric) {
        None => AnnDb::None,
        Some(name) => {
            let rtxn = env.read_txn().at(path, "opening databases")?;
            let db = env
                .open_databases_and_commit(rtxn, |dbo, r| -> heed::Result<_> {
                    let opts = dbo.database_options();
                    let db = match (config.backend, config.metric) {
                        (Backend::Arroy, Metric::Cosine) => opts.types().name(name).open(r)?.map(AnnDbT::ArroyCosine),
                        (Backend::Arroy, Metric::L2) => opts.types().name(name).open(r)?.map(AnnDbT::ArroyL2),
                        (Backend::Hnsw, Metric::Cosine) => opts.types().name(name).open(r)?.map(AnnDbT::HnswCosine),
                        (_, _) => opts.types().name(name).open(r)?.map(AnnDbT::HnswL2),
                    };
                    Ok(CommitOrAbort::<_, ()>::Commit(db))
                })
                .at(path, "opening databases")?
                .unwrap_commit();
            db.ok_or_else(|| missing(name))?
        }
    };
    Ok(Dbs {
        meta: meta.ok_or_else(|| missing("meta"))?,
        items: items.ok_or_else(|| missing("items"))?,
        sources: sources.ok_or_else(|| missing("sources"))?,
        vectors: vectors.ok_or_else(|| missing("vectors"))?,
        neighbours: neighbours.ok_or_else(|| missing("neighbours"))?,
        ann,
    })
}

fn read_meta(env: &Env<WithoutTls>, path: &Path, meta_db: NameDb) -> Result<Meta> {
    let rtxn = env.read_txn().at(path, "reading metadata")?;
    let version = meta_db.get(&rtxn, "format_version").at(path, "reading metadata")?;
    let Some(version) = version else {
        return Err(Error::NotAnIndex { path: path.to_path_buf(), reason: INTERRUPTED.into() });
    };
    let found = <[u8; 4]>::try_from(version)
        .map(u32::from_le_bytes)
        .map_err(|_| Error::NotAnIndex { path: path.to_path_buf(), reason: "the stored format version is not a u32".into() })?;
    if found != FORMAT_VERSION {
        return Err(Error::IndexVersion { path: path.to_path_buf(), found, expected: FORMAT_VERSION });
    }
    let bytes = meta_db
        .get(&rtxn, "meta")
        .at(path, "reading metadata")?
        .ok_or_else(|| Error::NotAnIndex { path: path.to_path_buf(), reason: "the `meta` record is missing".into() })?;
    serde_json::from_slice(bytes)
        .map_err(|e| Error::NotAnIndex { path: path.to_path_buf(), reason: format!("the `meta` record does not parse: {e}") })
}

impl Store {
    /// Open an existing index folder; its counts must agree (see [`Self::count_problem`]).
    pub fn open(path: &Path) -> Result<Self> {
        let store = Self::open_unchecked(path, Depth::Tree)?;
        if let Some(problem) = store.count_problem()? {
            let reason = format!("it is damaged: {problem}; run `rac index verify` to see which source, then rebuild it with `rac index build`");
            return Err(Error::NotAnIndex { path: path.to_path_buf(), reason });
        }
        Ok(store)
    }

    /// Open an existing index folder without comparing its counts (`verify` reports them),
    /// its LMDB file checked to `depth` first.
    pub fn open_unchecked(path: &Path, depth: Depth) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::NotAnIndex { path: path.to_path_buf(), reason: NO_FOLDER.into() });
        }
        let data = data_file(path);
        let len = std::fs::metadata(&data).map_err(|_| Error::NotAnIndex { path: path.to_path_buf(), reason: NO_DATA.into() })?.len() as usize;
        let file = lmdb_file::check_meta(path, &data)?;
        // Open with the generous default first; the stored config may ask for more.
        let map_size = IndexConfig::default().map_size.max(len.next_power_of_two());
        let (env, read_only) = open_existing_env(path, map_size)?;
        check_snapshot(&env, path, &file, depth)?;
        let rtxn = env.read_txn().at(path, "opening")?;
        let meta_db = env
            .open_databases_and_commit(rtxn, |dbo, r| -> heed::Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit(dbo.open_database::<Str, Bytes>(r, Some("meta"))?))
            })
            .map_err(|e: heed::Error| Error::NotAnIndex { path: path.to_path_buf(), reason: format!("cannot read its databases ({e})") })?
            .unwrap_commit();
        let Some(meta_db) = meta_db else {
            return Err(Error::NotAnIndex { path: path.to_path_buf(), reason: "it has no `meta` database".into() });
        };
        let meta = read_meta(&env, path, meta_db)?;
        let dbs = if read_only { open_dbs(&env, path, &meta.config)? } else { create_dbs(&env, path, &meta.config)? };
        // LMDB keeps the larger of the asked size and the one stored by an earlier growth.
        let map_size = env.info().map_size.max(map_size);
        let mut store = Store { path: path.to_path_buf(), _closer: closer(&env), env, dbs, map_size, meta, failpoint: None, read_only };
        if !read_only && store.meta.config.map_size > store.map_size {
            store.resize(store.meta.config.map_size)?;
        }
        Ok(store)
    }

    /// Create the environment of a new index (or re-open an interrupted first build's), with
    /// its databases but no metadata: it opens as an index only once a write commits [`Meta`].
    pub fn create(path: &Path, config: &IndexConfig) -> Result<Self> {
        config.validate()?;
        let mut file = None;
        if path.exists() {
            let mut entries = std::fs::read_dir(path).map_err(|e| Error::io("reading folder", "index folder", path, e))?;
            let has_data = data_file(path).is_file();
            // An interrupted first build is re-opened and finished; a damaged environment is
            // never handed to LMDB (and never silently replaced: it may hold the only copy).
            if has_data {
                file = Some(lmdb_file::check_meta(path, &data_file(path))?);
            }
            if !has_data && entries.next().is_some() {
                return Err(Error::NotAnIndex {
                    path: path.to_path_buf(),
                    reason: "the folder exists, is not empty and holds no index; choose an empty or new folder".into(),
                });
            }
        }
        crate::fsio::create_dir_all(path)?;
        let env = open_env(path, config.map_size, Access::Write)?;
        if let Some(file) = &file {
            check_snapshot(&env, path, file, Depth::Tree)?;
        }
        let dbs = create_dbs(&env, path, config)?;
        let meta = Meta { config: config.clone(), dim: 0, next_id: 0, n_items: 0, fingerprint: fingerprint(config, &[]), graph: None };
        Ok(Store { path: path.to_path_buf(), _closer: closer(&env), env, dbs, map_size: config.map_size, meta, failpoint: None, read_only: false })
    }

    fn resize(&mut self, new_size: usize) -> Result<()> {
        // SAFETY: `&mut self` guarantees no transaction of this environment is alive: every
        // transaction of this module is scoped inside a method call.
        unsafe { self.env.resize(new_size) }.at(&self.path, "growing the LMDB map")?;
        self.map_size = new_size;
        Ok(())
    }

    /// Point the databases at those of another configuration (a rebuild with new settings);
    /// the stored metadata changes only when the rebuild commits.
    pub fn reconfigure(&mut self, config: &IndexConfig) -> Result<()> {
        config.validate()?;
        self.dbs = create_dbs(&self.env, &self.path, config)?;
        Ok(())
    }

    /// The current map size in bytes.
    pub fn map_size(&self) -> usize {
        self.map_size
    }

    /// Run `f` in one write transaction and commit it with the updated `meta`; nothing is
    /// kept if `f` fails. When the map fills up, the transaction is dropped, the map doubled
    /// (up to `max_map_size`) and `f` run again from the start.
    pub fn write<T>(&mut self, op: &str, mut f: impl FnMut(&mut RwTxn<'_>, &Dbs, &mut Meta) -> Result<T>) -> Result<T> {
        if self.read_only {
            return Err(Error::IndexReadOnly { path: self.path.clone(), op: op.to_string() });
        }
        loop {
            let mut meta = self.meta.clone();
            let outcome = (|| {
                let mut wtxn = self.env.write_txn().at(&self.path, op)?;
                let value = f(&mut wtxn, &self.dbs, &mut meta)?;
                let meta_json = serde_json::to_vec(&meta).expect("meta serialises");
                self.dbs.meta.put(&mut wtxn, "format_version", &FORMAT_VERSION.to_le_bytes()).at(&self.path, op)?;
                self.dbs.meta.put(&mut wtxn, "meta", &meta_json).at(&self.path, op)?;
                match &self.failpoint {
                    None => {}
                    Some(Failpoint::BeforeCommit) => {
                        return Err(Error::IndexStore {
                            path: self.path.clone(),
                            op: op.to_string(),
                            message: "injected failure before commit (failpoint)".into(),
                        });
                    }
                    Some(Failpoint::HangBeforeCommit(marker)) => {
                        let _ = std::fs::write(marker, b"ready");
                        loop {
                            std::thread::sleep(std::time::Duration::from_secs(3600));
                        }
                    }
                }
                wtxn.commit().at(&self.path, op)?;
                Ok(value)
            })();
            match outcome {
                Ok(value) => {
                    self.meta = meta;
                    return Ok(value);
                }
                Err(Error::IndexMapFull { .. }) => {
                    let limit = self.meta.config.max_map_size;
                    if self.map_size >= limit {
                        return Err(Error::IndexMapFull { path: self.path.clone(), map_size: self.map_size, limit });
                    }
                    let grown = self.map_size.saturating_mul(2).min(limit);
                    self.resize(grown)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What is cheap to check at every open: the items the sources account for, those the
    /// `items` (and, where kept, `vectors`) databases hold and the count in the metadata agree.
    /// The full check of the stored bytes is `rac index verify` (the `verify` module).
    pub fn count_problem(&self) -> Result<Option<String>> {
        let rtxn = self.env.read_txn().at(&self.path, "opening")?;
        let in_sources: u64 = read_sources(&rtxn, self.dbs.sources, &self.path)?.iter().map(|s| s.count as u64).sum();
        let items = self.dbs.items.len(&rtxn).at(&self.path, "opening")?;
        let vectors = if self.meta.config.backend.keeps_vectors_in_lmdb() { self.dbs.vectors.len(&rtxn).at(&self.path, "opening")? } else { items };
        let n = self.meta.n_items;
        Ok((in_sources != n || items != n || vectors != n)
            .then(|| format!("its metadata counts {n} items, its sources {in_sources}, its item records {items} and its vectors {vectors}")))
    }

    /// The size of the data file on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        std::fs::metadata(data_file(&self.path)).map(|m| m.len()).unwrap_or(0)
    }
}
