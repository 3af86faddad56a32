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

/// The magic number of an LMDB meta page.
const LMDB_MAGIC: u32 = 0xBEEF_C0DE;

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
}

impl SourceRecord {
    /// Its item ids.
    pub fn ids(&self) -> std::ops::Range<u32> {
        self.first_id..self.first_id + self.count
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

impl<T> StoreResult<T> for std::result::Result<T, heed::Error> {
    fn at(self, path: &Path, op: &str) -> Result<T> {
        self.map_err(|e| store_error(path, op, is_map_full_heed(&e), e.to_string()))
    }
}

impl<T> StoreResult<T> for std::result::Result<T, arroy::Error> {
    fn at(self, path: &Path, op: &str) -> Result<T> {
        self.map_err(|e| {
            let full = matches!(&e, arroy::Error::Heed(h) if is_map_full_heed(h));
            store_error(path, op, full, e.to_string())
        })
    }
}

impl<T> StoreResult<T> for std::result::Result<T, hannoy::Error> {
    fn at(self, path: &Path, op: &str) -> Result<T> {
        self.map_err(|e| {
            let full = matches!(&e, hannoy::Error::Heed(h) if is_map_full_heed(h));
            store_error(path, op, full, e.to_string())
        })
    }
}

/// The LMDB data file of an index folder.
pub(crate) fn data_file(dir: &Path) -> PathBuf {
    dir.join("data.mdb")
}

/// An open index environment.
pub(crate) struct Store {
    pub path: PathBuf,
    pub env: Env<WithoutTls>,
    pub dbs: Dbs,
    pub meta: Meta,
    map_size: usize,
    pub failpoint: Option<Failpoint>,
}

/// LMDB trusts its file and maps it whole: a foreign file can make it misbehave, and one
/// shorter than its own meta pages say (a copy taken while it was written, a partial sync)
/// makes the first read past its end a SIGBUS. So before LMDB sees `data`, read its two meta
/// pages: the magic, the page size, and the last page the newer one (larger txnid) uses.
fn check_data_file(path: &Path, data: &Path) -> Result<()> {
    // Offsets in a meta page: a 16-byte page header, then MDB_meta: magic (u32) at 16, the
    // page size in the free database's `md_pad` (u32) at 40, `mm_last_pg` (u64) at 136 and
    // `mm_txnid` (u64) at 144.
    const MAGIC_AT: usize = 16;
    const PSIZE_AT: usize = 40;
    const LAST_PG_AT: usize = 136;
    const TXNID_AT: usize = 144;
    let damaged = |reason: String| Error::NotAnIndex { path: path.to_path_buf(), reason };
    let mut file = std::fs::File::open(data).map_err(|e| Error::io("opening", "index data file", data, e))?;
    let len = file.metadata().map_err(|e| Error::io("reading", "index data file", data, e))?.len();
    let mut first = [0u8; 152];
    if std::io::Read::read_exact(&mut file, &mut first).is_err() {
        return Err(damaged(format!("its data.mdb is {len} bytes, too short for an LMDB environment")));
    }
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    if u32_at(&first, MAGIC_AT) != LMDB_MAGIC {
        return Err(damaged("its data.mdb is not an LMDB environment".into()));
    }
    let psize = u32_at(&first, PSIZE_AT) as u64;
    if !psize.is_power_of_two() || !(512..=65536).contains(&psize) {
        return Err(damaged(format!("its data.mdb records a page size of {psize} bytes: the file is damaged")));
    }
    let mut second = [0u8; 152];
    let read_second =
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(psize)).and_then(|_| std::io::Read::read_exact(&mut file, &mut second)).is_ok();
    let metas: Vec<&[u8]> = if read_second && u32_at(&second, MAGIC_AT) == LMDB_MAGIC { vec![&first, &second] } else { vec![&first] };
    let newest = metas.iter().max_by_key(|m| u64_at(m, TXNID_AT)).expect("one meta page");
    let need = u64_at(newest, LAST_PG_AT).saturating_add(1).saturating_mul(psize);
    if len < need.max(2 * psize) {
        return Err(damaged(format!(
            "it is damaged: data.mdb is {len} bytes, but its meta pages need {} (truncated while it was copied or written?); \
             remove the folder and rebuild it with `rac index build`",
            need.max(2 * psize)
        )));
    }
    Ok(())
}

fn open_env(path: &Path, map_size: usize) -> Result<Env<WithoutTls>> {
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(map_size).max_dbs(12);
    // SAFETY: the folder is only ever opened through this module, which never lets two
    // environments of one process map the same folder (heed refuses that too), and the data
    // file is only modified by LMDB itself.
    let env = unsafe { opts.open(path) };
    env.map_err(|e| match e {
        heed::Error::EnvAlreadyOpened => Error::IndexStore {
            path: path.to_path_buf(),
            op: "opening".into(),
            message: "this index is already open in this process; drop the other handle first".into(),
        },
        heed::Error::Mdb(heed::MdbError::Invalid) | heed::Error::Mdb(heed::MdbError::VersionMismatch) => {
            Error::NotAnIndex { path: path.to_path_buf(), reason: format!("data.mdb is not an LMDB environment ({e})") }
        }
        other => Error::IndexStore { path: path.to_path_buf(), op: "opening".into(), message: other.to_string() },
    })
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
    /// Open an existing index folder.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::NotAnIndex { path: path.to_path_buf(), reason: NO_FOLDER.into() });
        }
        let data = data_file(path);
        let len = std::fs::metadata(&data).map_err(|_| Error::NotAnIndex { path: path.to_path_buf(), reason: NO_DATA.into() })?.len() as usize;
        check_data_file(path, &data)?;
        // Open with the generous default first; the stored config may ask for more.
        let map_size = IndexConfig::default().map_size.max(len.next_power_of_two());
        let env = open_env(path, map_size)?;
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
        let dbs = create_dbs(&env, path, &meta.config)?;
        // LMDB keeps the larger of the asked size and the one stored by an earlier growth.
        let map_size = env.info().map_size.max(map_size);
        let mut store = Store { path: path.to_path_buf(), env, dbs, map_size, meta, failpoint: None };
        if store.meta.config.map_size > store.map_size {
            store.resize(store.meta.config.map_size)?;
        }
        Ok(store)
    }

    /// Create the environment of a new index (or re-open an interrupted first build's), with
    /// its databases but no metadata: it opens as an index only once a write commits [`Meta`].
    pub fn create(path: &Path, config: &IndexConfig) -> Result<Self> {
        config.validate()?;
        if path.exists() {
            let mut entries = std::fs::read_dir(path).map_err(|e| Error::io("reading folder", "index folder", path, e))?;
            let has_data = data_file(path).is_file();
            // An interrupted first build is re-opened and finished; a damaged environment is
            // never handed to LMDB (and never silently replaced: it may hold the only copy).
            if has_data {
                check_data_file(path, &data_file(path))?;
            }
            if !has_data && entries.next().is_some() {
                return Err(Error::NotAnIndex {
                    path: path.to_path_buf(),
                    reason: "the folder exists, is not empty and holds no index; choose an empty or new folder".into(),
                });
            }
        }
        crate::fsio::create_dir_all(path)?;
        let env = open_env(path, config.map_size)?;
        let dbs = create_dbs(&env, path, config)?;
        let meta = Meta { config: config.clone(), dim: 0, next_id: 0, n_items: 0, fingerprint: fingerprint(config, &[]), graph: None };
        Ok(Store { path: path.to_path_buf(), env, dbs, map_size: config.map_size, meta, failpoint: None })
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

    /// The size of the data file on disk, in bytes.
    pub fn size_on_disk(&self) -> u64 {
        std::fs::metadata(data_file(&self.path)).map(|m| m.len()).unwrap_or(0)
    }
}
