//! The handle of an open index: [`RetrievalIndex`], its LMDB store, the usearch graph it
//! loaded, and what it says of itself (configuration, size, sources). The stages of an
//! index's life add to it in files of their own: `retrieval` (create, build, open, change
//! sources), `generations`, `changes` and `search`.

use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::config::IndexConfig;
use super::exact::ExactMatrix;
use super::graph::Graph;
use super::internals::Failpoint;
use super::schema::{self, SourceRecord};
use super::source::ItemId;
use super::store::Store;
use crate::error::{Error, Result};

/// A retrieval index on LMDB. See the module documentation.
pub struct RetrievalIndex {
    pub(crate) store: Store,
    pub(super) exact: Mutex<Option<Arc<ExactMatrix>>>,
    /// The usearch backend's graph, loaded (and checked) when the index opens.
    pub(super) graph: Option<Graph>,
    /// Query-time knobs set on this handle only (see [`RetrievalIndex::set_query_params`]).
    pub(super) query_config: Option<IndexConfig>,
    /// What was repaired on the way (a damaged graph file rebuilt), also printed as warnings.
    pub(super) notes: Vec<String>,
}

impl RetrievalIndex {
    pub(super) fn over(store: Store) -> Self {
        RetrievalIndex { store, exact: Mutex::new(None), graph: None, query_config: None, notes: Vec::new() }
    }

    /// What this handle had to repair while opening (a damaged usearch graph file rebuilt
    /// from LMDB); empty when everything was as committed.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub(super) fn note(&mut self, message: String) {
        eprintln!("warning: {message}");
        self.notes.push(message);
    }

    #[doc(hidden)]
    /// Arm (or disarm) a failpoint for the next writes.
    pub fn set_failpoint(&mut self, failpoint: Option<Failpoint>) {
        self.store.failpoint = failpoint;
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
        let rtxn = self.store.read("reading sources")?;
        schema::read_sources(&rtxn, self.store.dbs.sources, self.path())
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

    /// An error naming the index when it holds no item (a search needs one).
    pub(super) fn require_items(&self) -> Result<()> {
        if self.is_empty() { Err(Error::IndexEmpty { path: self.path().to_path_buf() }) } else { Ok(()) }
    }
}
