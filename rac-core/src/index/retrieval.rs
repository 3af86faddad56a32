//! [`RetrievalIndex`]: RAC's non-parametric memory. One LMDB environment in one folder holds
//! the vectors, each item's text, label and source, and the backend's structure (for usearch,
//! the record of its graph file beside it), so a copied folder is a complete index. Sources
//! are added and removed whole, with no retraining, and every change is one transaction: a
//! crash leaves the index as it was before the change.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::backend::{self, IdVector, Searcher};
use super::config::{Backend, HNSW_M, IndexConfig, Metric};
use super::exact::ExactMatrix;
use super::graph::{self, Graph};
use super::store::{self, AnnDb, Failpoint, GraphRecord, ItemRecord, Meta, SourceRecord, Store, StoreResult, StoredHasher, decode_f32, encode_f32};
use crate::error::{Error, Result};

/// The id of an item in an index; ids are handed out in order and never reused.
pub type ItemId = u32;

/// A whole data source to put in an index: its vectors with, per item, a key, a text and a label.
#[derive(Debug, Clone)]
pub struct Source {
    name: String,
    dim: usize,
    vectors: Vec<f32>,
    keys: Vec<String>,
    texts: Vec<String>,
    labels: Vec<u32>,
}

impl Source {
    /// A source from an `[n, d]` feature tensor, with one text and one label per row. Item
    /// keys default to `name/row`.
    pub fn new(name: impl Into<String>, features: &Tensor, texts: Vec<String>, labels: Vec<u32>) -> Result<Self> {
        let name = name.into();
        let (n, dim) = features
            .dims2()
            .map_err(|_| Error::InvalidInput(format!("source `{name}`: features must be a [n, d] matrix, got shape {:?}", features.dims())))?;
        let vectors = features.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        debug_assert_eq!(vectors.len(), n * dim);
        Self::from_vecs(name, vectors, dim, texts, labels)
    }

    /// A source from row-major vectors of dimension `dim`.
    pub fn from_vecs(name: impl Into<String>, vectors: Vec<f32>, dim: usize, texts: Vec<String>, labels: Vec<u32>) -> Result<Self> {
        let name = name.into();
        let bad = |m: String| Err(Error::InvalidInput(format!("source `{name}`: {m}")));
        if name.is_empty() || name.len() > 200 {
            return bad("the name must have 1 to 200 bytes".into());
        }
        if dim == 0 || vectors.is_empty() || !vectors.len().is_multiple_of(dim) {
            return bad(format!("{} values do not form rows of dimension {dim}", vectors.len()));
        }
        let n = vectors.len() / dim;
        if texts.len() != n || labels.len() != n {
            return bad(format!("{n} vectors but {} texts and {} labels", texts.len(), labels.len()));
        }
        // Finite values only; a zero row is the metric's question, asked when it is stored.
        if let Err(row) = backend::check_rows(&vectors, dim, Metric::L2) {
            return bad(row.describe());
        }
        let keys = (0..n).map(|i| format!("{name}/{i}")).collect();
        Ok(Source { name, dim, vectors, keys, texts, labels })
    }

    /// Replace the default item keys (one per row).
    pub fn with_keys(mut self, keys: Vec<String>) -> Result<Self> {
        if keys.len() != self.len() {
            return Err(Error::InvalidInput(format!("source `{}`: {} rows but {} keys", self.name, self.len(), keys.len())));
        }
        self.keys = keys;
        Ok(self)
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether it has no items (never true: construction refuses that).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The row-major vectors.
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// The labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    fn content_sha256(&self) -> String {
        let mut bytes: Vec<u8> = Vec::with_capacity(self.vectors.len() * 4 + self.len() * 16);
        bytes.extend(self.vectors.iter().flat_map(|x| x.to_le_bytes()));
        bytes.extend(self.labels.iter().flat_map(|x| x.to_le_bytes()));
        for s in self.texts.iter().chain(&self.keys) {
            bytes.extend((s.len() as u64).to_le_bytes());
            bytes.extend(s.as_bytes());
        }
        crate::fsio::sha256_bytes(&bytes)
    }
}

/// How to query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryOptions {
    /// Number of neighbours to return per query.
    pub k: usize,
    /// Drop the query itself from its neighbours, as the paper does in training: search `k + 1`,
    /// then drop the query's own item when it is among the hits. Only queries whose item is
    /// known can drop it (by item id, or by source and key): a hit is never dropped for
    /// being first.
    pub drop_self: bool,
}

impl QueryOptions {
    /// `k` neighbours, the query kept.
    pub fn k(k: usize) -> Self {
        QueryOptions { k, drop_self: false }
    }

    /// The same, with `drop_self` set.
    pub fn drop_self(self, drop_self: bool) -> Self {
        QueryOptions { drop_self, ..self }
    }
}

/// The neighbours of one query, nearest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Neighbours {
    /// Item ids.
    pub ids: Vec<ItemId>,
    /// Distances (`1 - cos` for cosine, `||q - x||` for L2).
    pub distances: Vec<f32>,
    /// Label ids.
    pub labels: Vec<u32>,
    /// Texts.
    pub texts: Vec<String>,
}

/// Items of one source, for [`IndexStats`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceStats {
    /// The source's name.
    pub name: String,
    /// Its number of items.
    pub items: usize,
}

/// What an index holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexStats {
    /// The index folder.
    pub path: PathBuf,
    /// The backend.
    pub backend: Backend,
    /// The metric.
    pub metric: Metric,
    /// The vectors' dimension (0 while empty).
    pub dim: usize,
    /// Number of items.
    pub items: usize,
    /// Items per source, in the order they were added.
    pub sources: Vec<SourceStats>,
    /// Size of the index's files (LMDB's data file, usearch's graph file), in bytes.
    pub size_on_disk: u64,
    /// The LMDB map size in bytes (it grows when full, up to `config.max_map_size`).
    pub map_size: usize,
    /// The content fingerprint (changes with every change of items).
    pub fingerprint: String,
    /// Removed items that the usearch graph still holds as deleted nodes (searches skip
    /// them; past `usearch.rebuild_deleted_fraction` a removal rebuilds); 0 for the others.
    #[serde(default)]
    pub deleted_items: u64,
    /// The on-disk format version.
    pub format_version: u32,
    /// The full configuration.
    pub config: IndexConfig,
}

impl IndexStats {
    /// A short human-readable report.
    pub fn report(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("index           {}\n", self.path.display()));
        s.push_str(&format!("backend         {}\n", self.backend));
        match self.backend {
            Backend::Arroy => {
                s.push_str(&format!("                n_trees {}, search_k {}\n", self.config.arroy.n_trees, self.config.arroy.search_k))
            }
            Backend::Hnsw => s.push_str(&format!(
                "                M {HNSW_M}, ef_construction {}, ef_search {}\n",
                self.config.hnsw.ef_construction, self.config.hnsw.ef_search
            )),
            Backend::Usearch => s.push_str(&format!(
                "                M {HNSW_M}, ef_construction {}, ef_search {}, storage {}\n",
                self.config.hnsw.ef_construction,
                self.config.hnsw.ef_search,
                self.config.usearch.storage.name()
            )),
            Backend::Exact => {}
        }
        s.push_str(&format!("metric          {}\n", self.metric));
        s.push_str(&format!("dimension       {}\n", self.dim));
        s.push_str(&format!("items           {}\n", self.items));
        s.push_str(&format!("size on disk    {:.1} MiB\n", self.size_on_disk as f64 / (1u64 << 20) as f64));
        s.push_str(&format!("fingerprint     {}\n", &self.fingerprint[..16.min(self.fingerprint.len())]));
        for src in &self.sources {
            s.push_str(&format!("source          {:<24} {} items\n", src.name, src.items));
        }
        s
    }
}

/// A retrieval index on LMDB. See the module documentation.
pub struct RetrievalIndex {
    pub(crate) store: Store,
    exact: Mutex<Option<Arc<ExactMatrix>>>,
    /// The usearch backend's graph, loaded (and checked) when the index opens.
    graph: Option<Graph>,
    /// Query-time knobs set on this handle only (see [`RetrievalIndex::set_query_params`]).
    query_config: Option<IndexConfig>,
    /// What was repaired on the way (a damaged graph file rebuilt), also printed as warnings.
    notes: Vec<String>,
}

/// What a write does to the items.
enum Change<'a> {
    Replace(&'a [Source]),
    Add(&'a Source),
    Remove(&'a str),
}

impl RetrievalIndex {
    /// Create an empty index in a new (or empty) folder.
    pub fn create(path: &Path, config: &IndexConfig) -> Result<Self> {
        Self::build(path, config, &[])
    }

    /// Build an index from `sources` in one transaction. An existing index at `path` is
    /// replaced, atomically: until the build commits, it opens and answers as before.
    pub fn build(path: &Path, config: &IndexConfig, sources: &[Source]) -> Result<Self> {
        Self::build_with(path, config, sources, None)
    }

    #[doc(hidden)]
    /// [`Self::build`] with a failpoint armed (crash-safety tests and the CLI's env hook).
    pub fn build_with(path: &Path, config: &IndexConfig, sources: &[Source], failpoint: Option<Failpoint>) -> Result<Self> {
        config.validate()?;
        for (i, a) in sources.iter().enumerate() {
            if sources[..i].iter().any(|b| b.name == a.name) {
                return Err(Error::SourceExists { path: path.to_path_buf(), name: a.name.clone() });
            }
            // Before any folder is made: a refused row must leave nothing behind.
            if let Err(bad) = backend::check_rows(&a.vectors, a.dim, config.metric) {
                return Err(Error::InvalidInput(format!("source `{}`: {}", a.name, bad.describe())));
            }
        }
        let store = match Store::open(path) {
            Ok(existing) => existing,
            Err(Error::NotAnIndex { reason, .. }) if store::may_build_over(&reason) => Store::create(path, config)?,
            Err(e) => return Err(e),
        };
        let previous_ann = store.dbs.ann;
        let mut index = RetrievalIndex::over(store);
        if index.store.meta.config != *config {
            index.store.reconfigure(config)?;
        }
        index.store.failpoint = failpoint;
        let new_ann = index.store.dbs.ann;
        let config = config.clone();
        index.apply("building", Change::Replace(sources), Some((previous_ann, new_ann, config)))?;
        index.store.failpoint = None;
        Ok(index)
    }

    /// Open an existing index. A usearch graph file is loaded and checked against the
    /// length and checksum its commit recorded; one that is missing or does not match is
    /// rebuilt from the vectors in LMDB, with a warning (see [`Self::notes`]), never used.
    pub fn open(path: &Path) -> Result<Self> {
        let mut index = RetrievalIndex::over(Store::open(path)?);
        index.attach_graph()?;
        Ok(index)
    }

    fn over(store: Store) -> Self {
        RetrievalIndex { store, exact: Mutex::new(None), graph: None, query_config: None, notes: Vec::new() }
    }

    /// What this handle had to repair while opening (a damaged usearch graph file rebuilt
    /// from LMDB); empty when everything was as committed.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    fn note(&mut self, message: String) {
        eprintln!("warning: {message}");
        self.notes.push(message);
    }

    /// Load the committed usearch graph, or rebuild it from LMDB and record the new one.
    fn attach_graph(&mut self) -> Result<()> {
        if self.config().backend != Backend::Usearch || self.is_empty() {
            return Ok(());
        }
        let path = self.path().to_path_buf();
        let problem = match &self.store.meta.graph {
            None => "the index records no graph file".to_string(),
            Some(rec) => match Graph::load(&path, rec, self.query_config(), self.dim()) {
                Ok(g) => {
                    self.graph = Some(g);
                    return Ok(());
                }
                Err(reason) => reason,
            },
        };
        let rebuilt = self.graph_from_lmdb(&self.query_config().clone(), &[])?;
        let generation = self.next_generation();
        let saved = rebuilt.save(&path, generation, 0).and_then(|rec| {
            self.store.write("recording the rebuilt graph", |_, _, meta| {
                meta.graph = Some(rec.clone());
                Ok(())
            })
        });
        self.graph = Some(rebuilt);
        match saved {
            Ok(()) => {
                graph::remove_other_generations(&path, Some(generation));
                self.note(format!("{}: the usearch graph was not used: {problem}; rebuilt it from the vectors in LMDB", path.display()));
            }
            Err(e) => self.note(format!(
                "{}: the usearch graph was not used: {problem}; rebuilt it from the vectors in LMDB for this session only, as it could not be saved ({e})",
                path.display()
            )),
        }
        Ok(())
    }

    /// The generation number the next graph file gets.
    fn next_generation(&self) -> u64 {
        self.store.meta.graph.as_ref().map_or(1, |r| r.generation + 1)
    }

    /// A graph of every item in LMDB's `vectors` database but `skip` (sorted), inserted in id order.
    fn graph_from_lmdb(&self, config: &IndexConfig, skip: &[ItemId]) -> Result<Graph> {
        let (ids, data) = self.lmdb_vectors()?;
        let dim = self.dim();
        let items: Vec<(u32, &[f32])> = ids.iter().copied().zip(data.chunks(dim)).filter(|(id, _)| skip.binary_search(id).is_err()).collect();
        let g = Graph::new(self.path(), config, dim, items.len())?;
        g.insert(self.path(), &items, config.deterministic)?;
        Ok(g)
    }

    /// Every (id, vector) of LMDB's `vectors` database, by ascending id.
    fn lmdb_vectors(&self) -> Result<(Vec<ItemId>, Vec<f32>)> {
        let path = self.path();
        let rtxn = self.store.env.read_txn().at(path, "loading vectors")?;
        let mut ids = Vec::with_capacity(self.len());
        let mut data = Vec::with_capacity(self.len() * self.dim());
        for entry in self.store.dbs.vectors.iter(&rtxn).at(path, "loading vectors")? {
            let (id, bytes) = entry.at(path, "loading vectors")?;
            ids.push(id);
            data.extend(decode_f32(bytes));
        }
        Ok((ids, data))
    }

    #[doc(hidden)]
    /// Arm (or disarm) a failpoint for the next writes.
    pub fn set_failpoint(&mut self, failpoint: Option<Failpoint>) {
        self.store.failpoint = failpoint;
    }

    /// Add a whole source. Its items get fresh ids and every backend inserts only them
    /// (usearch into its loaded graph, arroy and hannoy through their incremental builds);
    /// the neighbour cache is invalidated.
    pub fn add_source(&mut self, source: &Source) -> Result<()> {
        if self.source(&source.name).is_ok() {
            return Err(Error::SourceExists { path: self.path().to_path_buf(), name: source.name.clone() });
        }
        self.apply("adding a source", Change::Add(source), None)
    }

    /// Remove a whole source by name, so that the index answers as it did before the source
    /// was added. Exact drops its rows (bit-identical). usearch marks its items deleted and
    /// rebuilds once deleted items pass `usearch.rebuild_deleted_fraction`; arroy and hannoy
    /// delete them and relink their structures incrementally. The approximate backends then
    /// answer at the recall of an index that never held the source, not always bit for bit.
    pub fn remove_source(&mut self, name: &str) -> Result<()> {
        self.source(name)?;
        self.apply("removing a source", Change::Remove(name), None)
    }

    /// The index folder.
    pub fn path(&self) -> &Path {
        &self.store.path
    }

    /// The configuration.
    pub fn config(&self) -> &IndexConfig {
        &self.store.meta.config
    }

    /// The configuration queries run with: the stored one, with the query-time knobs of
    /// [`Self::set_query_params`] when set.
    pub fn query_config(&self) -> &IndexConfig {
        self.query_config.as_ref().unwrap_or(&self.store.meta.config)
    }

    /// Query with other query-time knobs (arroy's `search_k`, HNSW's `ef_search`) on
    /// this handle only; the stored configuration and the structure are unchanged.
    pub fn set_query_params(&mut self, config: &IndexConfig) -> Result<()> {
        config.validate()?;
        let mut c = self.store.meta.config.clone();
        c.arroy.search_k = config.arroy.search_k;
        c.hnsw.ef_search = config.hnsw.ef_search;
        if let Some(g) = &self.graph {
            g.set_ef_search(c.hnsw.ef_search);
        }
        self.query_config = Some(c);
        Ok(())
    }

    /// The SIMD kernels the usearch graph computes distances with on this CPU (`None` for
    /// the other backends and while empty).
    pub fn usearch_kernels(&self) -> Option<String> {
        self.graph.as_ref().map(Graph::kernels)
    }

    /// The vectors' dimension (0 while empty).
    pub fn dim(&self) -> usize {
        self.store.meta.dim
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.store.meta.n_items as usize
    }

    /// Whether the index holds no item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The content fingerprint: it changes whenever items are added or removed.
    pub fn fingerprint(&self) -> &str {
        &self.store.meta.fingerprint
    }

    /// The sources, in the order they were added.
    pub fn sources(&self) -> Result<Vec<SourceRecord>> {
        let rtxn = self.store.env.read_txn().at(self.path(), "reading sources")?;
        store::read_sources(&rtxn, self.store.dbs.sources, self.path())
    }

    /// One source by name.
    pub fn source(&self, name: &str) -> Result<SourceRecord> {
        let sources = self.sources()?;
        sources.iter().find(|s| s.name == name).cloned().ok_or_else(|| Error::UnknownSource {
            path: self.path().to_path_buf(),
            name: name.to_string(),
            known: if sources.is_empty() { "none".into() } else { sources.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ") },
        })
    }

    /// The item ids of a source.
    pub fn source_ids(&self, name: &str) -> Result<Range<ItemId>> {
        Ok(self.source(name)?.ids())
    }

    /// What the index holds.
    pub fn stats(&self) -> Result<IndexStats> {
        let meta = &self.store.meta;
        Ok(IndexStats {
            path: self.path().to_path_buf(),
            backend: meta.config.backend,
            metric: meta.config.metric,
            dim: meta.dim,
            items: meta.n_items as usize,
            sources: self.sources()?.into_iter().map(|s| SourceStats { name: s.name, items: s.count as usize }).collect(),
            size_on_disk: self.store.size_on_disk() + meta.graph.as_ref().map_or(0, |g| g.bytes),
            map_size: self.store.map_size(),
            fingerprint: meta.fingerprint.clone(),
            deleted_items: meta.graph.as_ref().map_or(0, |g| g.deleted),
            format_version: store::FORMAT_VERSION,
            config: meta.config.clone(),
        })
    }

    /// The records (key, source, label, text) of items.
    pub fn items(&self, ids: &[ItemId]) -> Result<Vec<ItemRecord>> {
        let rtxn = self.store.env.read_txn().at(self.path(), "reading items")?;
        ids.iter().map(|&id| read_item(&rtxn, &self.store, id)).collect()
    }

    /// The stored (for cosine: normalised) vectors of items, row-major.
    pub fn vectors(&self, ids: &[ItemId]) -> Result<Vec<f32>> {
        self.require_items()?;
        let path = self.path();
        let rtxn = self.store.env.read_txn().at(path, "reading vectors")?;
        let searcher = Searcher::open(&rtxn, self.store.dbs.ann, path, self.query_config())?;
        let mut out = Vec::with_capacity(ids.len() * self.dim());
        for &id in ids {
            let v = match &searcher {
                Some(s) => s.vector(&rtxn, path, id)?,
                None => self.store.dbs.vectors.get(&rtxn, &id).at(path, "reading vectors")?.map(decode_f32),
            };
            let v = v.ok_or_else(|| Error::InvalidInput(format!("{}: no item with id {id}", path.display())))?;
            out.extend(v);
        }
        Ok(out)
    }

    /// The neighbours of each row of an `[b, d]` query tensor.
    pub fn query(&self, queries: &Tensor, opts: &QueryOptions) -> Result<Vec<Neighbours>> {
        let (_, d) = queries.dims2().map_err(|_| {
            Error::InvalidInput(format!("{}: queries must be a [b, d] matrix, got shape {:?}", self.path().display(), queries.dims()))
        })?;
        let data = queries.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        self.query_vecs(&data, d, opts)
    }

    /// The neighbours of each row of row-major `queries` of dimension `dim`. These queries
    /// are not known items, so `drop_self` is refused: use [`Self::query_items`] or
    /// [`Self::query_keyed`].
    pub fn query_vecs(&self, queries: &[f32], dim: usize, opts: &QueryOptions) -> Result<Vec<Neighbours>> {
        if opts.drop_self {
            return Err(Error::InvalidInput(format!(
                "{}: drop_self needs to know which item each query is; query by item id or by source and key",
                self.path().display()
            )));
        }
        let hits = self.search_hits(queries, dim, opts.k, None)?;
        self.resolve(hits)
    }

    /// The neighbours of each row of `queries`, the item of row `i` being `keys[i]` of the
    /// source `source`; with `drop_self`, a hit is dropped when it is that item (none is
    /// when the index does not hold the source).
    pub fn query_keyed(&self, queries: &[f32], dim: usize, source: &str, keys: &[String], opts: &QueryOptions) -> Result<Vec<Neighbours>> {
        let own = if opts.drop_self { Some(self.own_items(source, keys)?) } else { None };
        let hits = self.search_hits(queries, dim, opts.k, own.as_deref())?;
        self.resolve(hits)
    }

    /// The neighbours of items already in the index (their stored vectors as queries); with
    /// `drop_self`, each item itself is dropped from its own list.
    pub fn query_items(&self, ids: &[ItemId], opts: &QueryOptions) -> Result<Vec<Neighbours>> {
        let hits = self.item_hits(ids, opts.k, opts.drop_self)?;
        self.resolve(hits)
    }

    /// The raw (id, distance) hits of items already in the index; see [`Self::query_items`].
    pub fn item_hits(&self, ids: &[ItemId], k: usize, drop_self: bool) -> Result<Vec<Vec<(ItemId, f32)>>> {
        let vectors = self.vectors(ids)?;
        let own: Vec<Option<ItemId>> = ids.iter().map(|&id| Some(id)).collect();
        self.search_hits(&vectors, self.dim(), k, drop_self.then_some(&own[..]))
    }

    /// The item id of each of `keys` in the source `name`, or `None` where the source has no
    /// such key (or the index has no such source): who each query is, for `drop_self`.
    pub fn own_items(&self, name: &str, keys: &[String]) -> Result<Vec<Option<ItemId>>> {
        let Some(src) = self.sources()?.into_iter().find(|s| s.name == name) else { return Ok(vec![None; keys.len()]) };
        let rtxn = self.store.env.read_txn().at(self.path(), "reading items")?;
        let mut by_key = HashMap::with_capacity(src.count as usize);
        for id in src.ids() {
            by_key.insert(read_item(&rtxn, &self.store, id)?.key, id);
        }
        Ok(keys.iter().map(|k| by_key.get(k).copied()).collect())
    }

    /// The raw (id, distance) hits of row-major `queries`: the `k` nearest items of each,
    /// nearest first. With `own` (the item each query is, where it is one), `k + 1` are
    /// searched and a query's own item is dropped when it is found; rows that are no item
    /// of the index, or whose item was not found, keep their first `k`.
    pub fn search_hits(&self, queries: &[f32], dim: usize, k: usize, own: Option<&[Option<ItemId>]>) -> Result<Vec<Vec<(ItemId, f32)>>> {
        self.require_items()?;
        let path = self.path();
        if dim != self.dim() || !queries.len().is_multiple_of(dim.max(1)) {
            return Err(Error::IndexDimension { path: path.to_path_buf(), what: "the query batch".into(), expected: self.dim(), received: dim });
        }
        if let Some(own) = own
            && own.len() * dim != queries.len()
        {
            return Err(Error::InvalidInput(format!("{}: {} query items named for {} queries", path.display(), own.len(), queries.len() / dim)));
        }
        let drop_self = own.is_some_and(|o| o.iter().any(Option::is_some));
        let k_search = k + usize::from(drop_self);
        if k == 0 {
            return Err(Error::IndexK { path: path.to_path_buf(), k, reason: "k must be at least 1".into() });
        }
        if k_search > self.len() {
            let extra = if drop_self { " (plus one for drop_self)" } else { "" };
            return Err(Error::IndexK { path: path.to_path_buf(), k, reason: format!("the index holds only {} items{extra}", self.len()) });
        }
        let mut queries = queries.to_vec();
        if let Err(bad) = backend::prepare_rows(&mut queries, dim, self.config().metric) {
            return Err(Error::InvalidInput(format!("{}: query {}", path.display(), bad.describe())));
        }
        let mut hits = self.raw_search(&queries, k_search)?;
        if let Some(own) = own.filter(|_| drop_self) {
            for (h, me) in hits.iter_mut().zip(own) {
                if let Some(pos) = me.and_then(|me| h.iter().position(|(id, _)| *id == me)) {
                    h.remove(pos);
                }
                h.truncate(k);
            }
        }
        Ok(hits)
    }

    /// Attach labels and texts to raw hits.
    pub fn resolve(&self, hits: Vec<Vec<(ItemId, f32)>>) -> Result<Vec<Neighbours>> {
        let rtxn = self.store.env.read_txn().at(self.path(), "reading items")?;
        hits.into_iter()
            .map(|h| {
                let mut n = Neighbours { ids: vec![], distances: vec![], labels: vec![], texts: vec![] };
                for (id, d) in h {
                    let rec = read_item(&rtxn, &self.store, id)?;
                    n.ids.push(id);
                    n.distances.push(d);
                    n.labels.push(rec.label);
                    n.texts.push(rec.text);
                }
                Ok(n)
            })
            .collect()
    }

    fn require_items(&self) -> Result<()> {
        if self.is_empty() { Err(Error::IndexEmpty { path: self.path().to_path_buf() }) } else { Ok(()) }
    }

    /// Search prepared (normalised) queries; batches run in parallel, one read transaction
    /// per worker for the approximate backends, one matrix product per block for exact.
    fn raw_search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(ItemId, f32)>>> {
        let dim = self.dim();
        match self.config().backend {
            Backend::Exact => return self.exact_matrix()?.search(queries, k),
            Backend::Usearch => {
                let g = self.graph()?;
                return queries.par_chunks(dim).map(|q| g.search(self.path(), q, k)).collect();
            }
            Backend::Hnsw | Backend::Arroy => {}
        }
        let nq = queries.len() / dim;
        let per_worker = nq.div_ceil(rayon::current_num_threads() * 4).max(1);
        let chunks: Vec<Vec<Vec<(u32, f32)>>> = queries
            .par_chunks(per_worker * dim)
            .map(|chunk| self.with_searcher(|rtxn, s| chunk.chunks(dim).map(|q| s.search(rtxn, self.path(), q, k)).collect()))
            .collect::<Result<_>>()?;
        Ok(chunks.into_iter().flatten().collect())
    }

    fn graph(&self) -> Result<&Graph> {
        self.graph.as_ref().ok_or_else(|| Error::IndexStore {
            path: self.path().to_path_buf(),
            op: "querying".into(),
            message: "the usearch graph is not loaded".into(),
        })
    }

    /// Run `f` with one open reader of the LMDB-stored approximate backends.
    fn with_searcher<T>(&self, f: impl for<'t> FnOnce(&'t heed::RoTxn<'t>, &Searcher<'t>) -> Result<T>) -> Result<T> {
        let path = self.path();
        let rtxn = self.store.env.read_txn().at(path, "querying")?;
        let searcher = Searcher::open(&rtxn, self.store.dbs.ann, path, self.query_config())?
            .ok_or_else(|| Error::InvalidInput("the exact backend has no reader".into()))?;
        f(&rtxn, &searcher)
    }

    /// One query at a time (no batching), as a user of a notebook cell would: used for latency.
    pub fn search_one_by_one(&self, queries: &[f32], k: usize, mut on_each: impl FnMut()) -> Result<Vec<Vec<(ItemId, f32)>>> {
        self.require_items()?;
        let dim = self.dim();
        let mut queries = queries.to_vec();
        if let Err(bad) = backend::prepare_rows(&mut queries, dim, self.config().metric) {
            return Err(Error::InvalidInput(format!("{}: query {}", self.path().display(), bad.describe())));
        }
        // One loop for every backend: search a query, then tell the caller (it times them).
        type SearchOne<'s> = dyn FnMut(&[f32]) -> Result<Vec<(ItemId, f32)>> + 's;
        let mut each = |search: &mut SearchOne<'_>| {
            queries
                .chunks(dim)
                .map(|q| {
                    let r = search(q);
                    on_each();
                    r
                })
                .collect::<Result<Vec<_>>>()
        };
        match self.config().backend {
            Backend::Exact => {
                let m = self.exact_matrix()?;
                each(&mut |q| m.search(q, k).map(|mut v| v.remove(0)))
            }
            Backend::Usearch => {
                let g = self.graph()?;
                each(&mut |q| g.search(self.path(), q, k))
            }
            Backend::Hnsw | Backend::Arroy => self.with_searcher(|rtxn, s| each(&mut |q| s.search(rtxn, self.path(), q, k))),
        }
    }

    fn exact_matrix(&self) -> Result<Arc<ExactMatrix>> {
        let mut guard = self.exact.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = guard.as_ref() {
            return Ok(m.clone());
        }
        let (ids, data) = self.lmdb_vectors()?;
        let m = Arc::new(ExactMatrix::new(ids, data, self.dim(), self.config().metric)?);
        *guard = Some(m.clone());
        Ok(m)
    }

    /// Apply a change of items in one transaction. Whatever the outcome, the graph files
    /// left are those of the committed generation; a handle whose graph was being changed
    /// when the change failed loads the committed one again.
    fn apply(&mut self, op: &str, change: Change<'_>, rebuild: Option<(AnnDb, AnnDb, IndexConfig)>) -> Result<()> {
        // Before any work (a usearch change writes its graph file before the transaction).
        if self.store.read_only {
            return Err(Error::IndexReadOnly { path: self.path().to_path_buf(), op: op.to_string() });
        }
        let result = self.apply_change(op, change, rebuild);
        graph::remove_other_generations(self.path(), self.store.meta.graph.as_ref().map(|r| r.generation));
        if result.is_err() && self.graph.is_none() {
            self.attach_graph()?;
        }
        result
    }

    fn apply_change(&mut self, op: &str, change: Change<'_>, rebuild: Option<(AnnDb, AnnDb, IndexConfig)>) -> Result<()> {
        let path = self.path().to_path_buf();
        let config = rebuild.as_ref().map(|r| r.2.clone()).unwrap_or_else(|| self.config().clone());
        let metric = config.metric;
        let expected_dim = if matches!(change, Change::Replace(_)) { 0 } else { self.dim() };
        // Validate and normalise the new vectors once, outside the (retryable) transaction.
        let added: Vec<&Source> = match &change {
            Change::Replace(sources) => sources.iter().collect(),
            Change::Add(source) => vec![*source],
            Change::Remove(_) => vec![],
        };
        let mut dim = expected_dim;
        let mut prepared: Vec<Vec<f32>> = Vec::with_capacity(added.len());
        for s in &added {
            if dim != 0 && s.dim != dim {
                return Err(Error::IndexDimension { path: path.clone(), what: format!("source `{}`", s.name), expected: dim, received: s.dim });
            }
            dim = s.dim;
            let mut v = s.vectors.clone();
            if let Err(bad) = backend::prepare_rows(&mut v, s.dim, metric) {
                return Err(Error::InvalidInput(format!("source `{}`: {}", s.name, bad.describe())));
            }
            prepared.push(v);
        }
        let hashes: Vec<String> = added.iter().map(|s| s.content_sha256()).collect();
        let total_added: usize = added.iter().map(|s| s.len()).sum();
        if (self.len() + total_added) as u64 > u32::MAX as u64 {
            return Err(Error::InvalidInput(format!("{}: more than 2^32 items", path.display())));
        }
        // usearch: the graph after the change, saved as the next generation before the
        // transaction that records it; it is this handle's graph once that commits.
        let (new_graph, graph_record) =
            if config.backend == Backend::Usearch { self.graph_after(&change, &prepared, &config, dim)? } else { (None, None) };

        // hannoy inserts in parallel on rayon's pool: a deterministic build runs the whole
        // transaction on a pool of one thread (LMDB's write transaction stays on the thread
        // that opened it). arroy's trees are deterministic on any pool.
        let one_thread = if config.deterministic && config.backend == Backend::Hnsw {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build();
            Some(pool.map_err(|e| Error::IndexStore { path: path.clone(), op: op.into(), message: format!("starting a build thread: {e}") })?)
        } else {
            None
        };
        let store = &mut self.store;
        let mut write = || {
            store.write(op, |wtxn, dbs, meta| {
                let mut sources = store::read_sources(wtxn, dbs.sources, &path)?;
                let mut removed: Vec<ItemId> = Vec::new();
                let mut inserted: Vec<IdVector> = Vec::new();
                let replace = matches!(change, Change::Replace(_));
                if replace {
                    if let Some((old, new, _)) = &rebuild
                        && !same_db(*old, *new)
                    {
                        backend::clear_any(wtxn, *old, &path)?;
                    }
                    dbs.items.clear(wtxn).at(&path, op)?;
                    dbs.sources.clear(wtxn).at(&path, op)?;
                    dbs.vectors.clear(wtxn).at(&path, op)?;
                    sources.clear();
                    *meta = Meta { config: config.clone(), dim: 0, next_id: 0, n_items: 0, fingerprint: String::new(), graph: None };
                }
                if let Change::Remove(name) = &change {
                    let pos = sources.iter().position(|s| s.name == *name).expect("checked before the transaction");
                    let gone = sources.remove(pos);
                    for id in gone.ids() {
                        dbs.items.delete(wtxn, &id).at(&path, op)?;
                        dbs.vectors.delete(wtxn, &id).at(&path, op)?;
                    }
                    dbs.sources.delete(wtxn, *name).at(&path, op)?;
                    removed.extend(gone.ids());
                    meta.n_items -= gone.count as u64;
                    if meta.n_items == 0 {
                        meta.dim = 0;
                    }
                }
                for ((s, vectors), hash) in added.iter().zip(&prepared).zip(&hashes) {
                    let first = meta.next_id;
                    let mut stored = StoredHasher::new();
                    for (i, row) in vectors.chunks(s.dim).enumerate() {
                        let id = first + i as u32;
                        let rec = ItemRecord { key: s.keys[i].clone(), source: s.name.clone(), label: s.labels[i], text: s.texts[i].clone() };
                        let rec = serde_json::to_vec(&rec).expect("record serialises");
                        dbs.items.put(wtxn, &id, &rec).at(&path, op)?;
                        let bytes = encode_f32(row);
                        stored.item(&bytes, &rec);
                        if config.backend.keeps_vectors_in_lmdb() {
                            dbs.vectors.put(wtxn, &id, &bytes).at(&path, op)?;
                        } else {
                            inserted.push((id, row.to_vec()));
                        }
                    }
                    let rec = SourceRecord {
                        name: s.name.clone(),
                        first_id: first,
                        count: s.len() as u32,
                        content_sha256: hash.clone(),
                        stored_xxh3: Some(stored.finish()),
                    };
                    dbs.sources.put(wtxn, &s.name, &serde_json::to_vec(&rec).expect("record serialises")).at(&path, op)?;
                    sources.push(rec);
                    meta.next_id += s.len() as u32;
                    meta.n_items += s.len() as u64;
                    meta.dim = s.dim;
                }
                let ann_change = backend::AnnChange { clear: replace, add: &inserted, remove: &removed };
                backend::apply(wtxn, dbs.ann, &path, &config, meta.dim, &ann_change)?;
                dbs.neighbours.clear(wtxn).at(&path, op)?;
                meta.config = config.clone();
                meta.fingerprint = store::fingerprint(&config, &sources);
                meta.graph = graph_record.clone();
                Ok(())
            })
        };
        match &one_thread {
            Some(pool) => pool.install(write)?,
            None => write()?,
        }
        self.graph = new_graph;
        *self.exact.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }

    /// The usearch graph of the items after `change`, and the record of its new generation
    /// (both `None` when no item is left). Additions are inserted into the loaded graph;
    /// removals are marked deleted, or rebuilt from LMDB once deleted items pass
    /// `usearch.rebuild_deleted_fraction` of the live ones.
    fn graph_after(
        &mut self,
        change: &Change<'_>,
        prepared: &[Vec<f32>],
        config: &IndexConfig,
        dim: usize,
    ) -> Result<(Option<Graph>, Option<GraphRecord>)> {
        let path = self.path().to_path_buf();
        let generation = self.next_generation();
        let deleted_before = self.store.meta.graph.as_ref().map_or(0, |r| r.deleted);
        let (graph, deleted) = match change {
            Change::Replace(_) | Change::Add(_) => {
                let n_new: usize = prepared.iter().map(|v| v.len() / dim.max(1)).sum();
                let (graph, first, deleted) = match (change, self.graph.take()) {
                    (Change::Add(_), Some(g)) => (g, self.store.meta.next_id, deleted_before),
                    (Change::Add(_), None) => (Graph::new(&path, config, dim, n_new)?, self.store.meta.next_id, 0),
                    _ => (Graph::new(&path, config, dim, n_new)?, 0, 0),
                };
                if graph.len() + n_new == 0 {
                    return Ok((None, None));
                }
                let rows = prepared.iter().flat_map(|v| v.chunks(dim));
                let items: Vec<(u32, &[f32])> = (first..).zip(rows).collect();
                graph.insert(&path, &items, config.deterministic)?;
                (graph, deleted)
            }
            Change::Remove(name) => {
                let gone = self.source(name)?.ids();
                let live = self.len() - gone.len();
                let current = self.graph.take();
                if live == 0 {
                    return Ok((None, None));
                }
                let deleted = deleted_before + gone.len() as u64;
                if deleted as f64 > config.usearch.rebuild_deleted_fraction * live as f64 {
                    (self.graph_from_lmdb(config, &gone.collect::<Vec<_>>())?, 0)
                } else {
                    let graph = match current {
                        Some(g) => g,
                        None => self.graph_from_lmdb(config, &[])?,
                    };
                    graph.remove(&path, gone)?;
                    (graph, deleted)
                }
            }
        };
        let record = graph.save(&path, generation, deleted)?;
        Ok((Some(graph), Some(record)))
    }
}

fn same_db(a: AnnDb, b: AnnDb) -> bool {
    std::mem::discriminant(&a) == std::mem::discriminant(&b)
}

fn read_item(rtxn: &heed::RoTxn<'_>, store: &Store, id: ItemId) -> Result<ItemRecord> {
    let bytes = store.dbs.items.get(rtxn, &id).at(&store.path, "reading items")?.ok_or_else(|| Error::IndexStore {
        path: store.path.clone(),
        op: "reading items".into(),
        message: format!("no item with id {id}"),
    })?;
    serde_json::from_slice(bytes).map_err(|e| Error::IndexStore {
        path: store.path.clone(),
        op: "reading items".into(),
        message: format!("item {id}: {e}"),
    })
}
