//! The record schema of an index's LMDB environment: its named databases, each listed once
//! (created or opened from that one list), the records kept in them, and the content
//! fingerprint.
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

use std::path::Path;

use heed::byteorder::BigEndian;
use heed::types::{Bytes, Str, U32};
use heed::{CommitOrAbort, Env, WithoutTls};
use serde::{Deserialize, Serialize};

use super::config::{Backend, IndexConfig, Metric};
use super::lmdb_errors::StoreResult;
use crate::error::{Error, Result};

/// Why a folder with an LMDB file but no format version is no index yet.
pub(crate) const INTERRUPTED: &str = "no format version stored (an interrupted first build, or another program's LMDB)";

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

/// Every source record, by first id.
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

/// The databases of every index, each named once: `$get` (`create_database` or
/// `open_database`) applied to each in a transaction `$txn`, as `Option`s.
macro_rules! every_database {
    ($dbo:ident, $txn:ident, |$db:ident| $get:expr) => {{
        macro_rules! one {
            ($key:ty, $name:literal) => {{
                let mut $db = $dbo.database_options().types::<$key, Bytes>();
                $db.name($name);
                $get
            }};
        }
        (one!(Str, "meta"), one!(U32<BigEndian>, "items"), one!(Str, "sources"), one!(U32<BigEndian>, "vectors"), one!(Str, "neighbours"))
    }};
}

/// The approximate backend's database for `config`, typed by backend and metric: `$get`
/// applied to its typed options, as an `Option`.
macro_rules! ann_database {
    ($dbo:ident, $config:expr, $name:expr, |$db:ident| $get:expr) => {{
        // One typed handle per arm: each variant's database has its own types.
        macro_rules! typed {
            ($variant:path) => {{
                let mut $db = $dbo.database_options().types();
                $db.name($name);
                $get.map($variant)
            }};
        }
        match ($config.backend, $config.metric) {
            (Backend::Arroy, Metric::Cosine) => typed!(AnnDbT::ArroyCosine),
            (Backend::Arroy, Metric::L2) => typed!(AnnDbT::ArroyL2),
            (Backend::Hnsw, Metric::Cosine) => typed!(AnnDbT::HnswCosine),
            (_, _) => typed!(AnnDbT::HnswL2),
        }
    }};
}

/// Every database of an index, typed for `config`: created where missing, in one committed
/// write transaction (`create`), or opened read-only, where each must exist already.
pub(crate) fn databases(env: &Env<WithoutTls>, path: &Path, config: &IndexConfig, create: bool) -> Result<Dbs> {
    let op = if create { "creating databases" } else { "opening databases" };
    let ann_name = ann_name(config.backend, config.metric);
    let (meta, items, sources, vectors, neighbours, ann) = if create {
        let wtxn = env.write_txn().at(path, op)?;
        env.create_databases_and_commit(wtxn, |dbo, w| -> heed::Result<_> {
            let (meta, items, sources, vectors, neighbours) = every_database!(dbo, w, |db| Some(db.create(w)?));
            let ann = match ann_name {
                None => Some(AnnDbT::None),
                Some(name) => ann_database!(dbo, config, name, |db| Some(db.create(w)?)),
            };
            Ok(CommitOrAbort::<_, ()>::Commit((meta, items, sources, vectors, neighbours, ann)))
        })
        .at(path, op)?
        .unwrap_commit()
    } else {
        let rtxn = env.read_txn().at(path, op)?;
        env.open_databases_and_commit(rtxn, |dbo, r| -> heed::Result<_> {
            let (meta, items, sources, vectors, neighbours) = every_database!(dbo, r, |db| db.open(r)?);
            let ann = match ann_name {
                None => Some(AnnDbT::None),
                Some(name) => ann_database!(dbo, config, name, |db| db.open(r)?),
            };
            Ok(CommitOrAbort::<_, ()>::Commit((meta, items, sources, vectors, neighbours, ann)))
        })
        .at(path, op)?
        .unwrap_commit()
    };
    let missing = |what: &str| Error::NotAnIndex { path: path.to_path_buf(), reason: format!("it has no `{what}` database") };
    Ok(Dbs {
        meta: meta.ok_or_else(|| missing("meta"))?,
        items: items.ok_or_else(|| missing("items"))?,
        sources: sources.ok_or_else(|| missing("sources"))?,
        vectors: vectors.ok_or_else(|| missing("vectors"))?,
        neighbours: neighbours.ok_or_else(|| missing("neighbours"))?,
        ann: ann.ok_or_else(|| missing(ann_name.unwrap_or("backend")))?,
    })
}

/// The index-wide record, after the format version it was written in is checked.
pub(crate) fn read_meta(rtxn: &heed::RoTxn<'_>, path: &Path, meta_db: NameDb) -> Result<Meta> {
    let version = meta_db.get(rtxn, "format_version").at(path, "reading metadata")?;
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
        .get(rtxn, "meta")
        .at(path, "reading metadata")?
        .ok_or_else(|| Error::NotAnIndex { path: path.to_path_buf(), reason: "the `meta` record is missing".into() })?;
    serde_json::from_slice(bytes)
        .map_err(|e| Error::NotAnIndex { path: path.to_path_buf(), reason: format!("the `meta` record does not parse: {e}") })
}
