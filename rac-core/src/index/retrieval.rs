//! [`RetrievalIndex`]: RAC's non-parametric memory. One LMDB environment in one folder holds
//! the vectors, each item's text, label and source, and the backend's structure (for usearch,
//! the record of its graph file beside it), so a copied folder is a complete index. Sources
//! are added and removed whole, with no retraining, and every change is one transaction: a
//! crash leaves the index as it was before the change.

use std::path::Path;

use super::backend::Searcher;
use super::changes::Change;
use super::config::IndexConfig;
use super::environment;
use super::handle::RetrievalIndex;
use super::internals::Failpoint;
use super::lmdb_errors::StoreResult;
use super::schema::{self, ItemRecord};
use super::search::read_item;
use super::source::{ItemId, Source};
use super::stats::{IndexStats, SourceStats};
use super::store::{self, Store};
use crate::error::{Error, Result};
use crate::fsio::FileLock;
use crate::vectors::{check_rows, f32_from_bytes};

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
            if let Err(bad) = check_rows(&a.vectors, a.dim, config.metric.compare()) {
                return Err(Error::BadVector { what: format!("source `{}`", a.name), problem: bad.describe() });
            }
        }
        // The writer lock is taken before the folder is looked at: a second process building
        // the same folder waits, then replaces what the first built (never half of it).
        store::check_buildable(path)?;
        crate::fsio::create_dir_all(path)?;
        let lock = FileLock::exclusive(&path.join(store::WRITER_LOCK), "building")?;
        let mut store = match Store::open(path) {
            Ok(existing) => existing,
            Err(Error::NotAnIndex { reason, .. }) if environment::may_build_over(&reason) => Store::create(path, config)?,
            Err(e) => return Err(e),
        };
        store.hold_writer(lock);
        let previous_ann = store.dbs.ann;
        let mut index = RetrievalIndex::over(store);
        if index.store.meta.config != *config {
            index.store.reconfigure(config)?;
        }
        index.store.failpoint = failpoint;
        let new_ann = index.store.dbs.ann;
        let config = config.clone();
        let built = index.apply("building", Change::Replace(sources), Some((previous_ann, new_ann, config)));
        index.store.unlock_writer();
        built?;
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

    /// Add a whole source. Its items get fresh ids and every backend inserts only them
    /// (usearch into its loaded graph, arroy and hannoy through their incremental builds);
    /// the neighbour cache is invalidated.
    pub fn add_source(&mut self, source: &Source) -> Result<()> {
        self.apply("adding a source", Change::Add(source), None)
    }

    /// Remove a whole source by name, so that the index answers as it did before the source
    /// was added. Exact drops its rows (bit-identical). usearch marks its items deleted and
    /// rebuilds once deleted items pass `usearch.rebuild_deleted_fraction`; arroy and hannoy
    /// delete them and relink their structures incrementally. The approximate backends then
    /// answer at the recall of an index that never held the source, not always bit for bit.
    pub fn remove_source(&mut self, name: &str) -> Result<()> {
        self.apply("removing a source", Change::Remove(name), None)
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
            format_version: schema::FORMAT_VERSION,
            config: meta.config.clone(),
        })
    }

    /// The records (key, source, label, text) of items.
    pub fn items(&self, ids: &[ItemId]) -> Result<Vec<ItemRecord>> {
        let rtxn = self.store.read("reading items")?;
        ids.iter().map(|&id| read_item(&rtxn, &self.store, id)).collect()
    }

    /// The stored (for cosine: normalised) vectors of items, row-major.
    pub fn vectors(&self, ids: &[ItemId]) -> Result<Vec<f32>> {
        self.require_items()?;
        let path = self.path();
        let rtxn = self.store.read("reading vectors")?;
        let searcher = Searcher::open(&rtxn, self.store.dbs.ann, path, self.query_config())?;
        let mut out = Vec::with_capacity(ids.len() * self.dim());
        for &id in ids {
            let v = match &searcher {
                Some(s) => s.vector(&rtxn, path, id)?,
                None => self.store.dbs.vectors.get(&rtxn, &id).at(path, "reading vectors")?.map(f32_from_bytes),
            };
            let v = v.ok_or_else(|| Error::UnknownItem { path: path.to_path_buf(), id })?;
            out.extend(v);
        }
        Ok(out)
    }
}
