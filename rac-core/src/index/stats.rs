//! What an index holds, as `rac index stats` and the notebooks report it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::config::{Backend, HNSW_M, IndexConfig, Metric};

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
