//! The usearch graph's generations: the committed graph file loaded and checked when an
//! index opens (or rebuilt from LMDB's vectors, with a note), and the vectors it is built from.

use super::config::{Backend, IndexConfig};
use super::graph::{self, Graph};
use super::handle::RetrievalIndex;
use super::lmdb_errors::StoreResult;
use super::source::ItemId;
use crate::error::{Error, Result};
use crate::vectors::f32_from_bytes;

impl RetrievalIndex {
    /// Load the committed usearch graph, or rebuild it from LMDB and record the new one.
    /// A graph file that went missing because another process committed a newer generation
    /// since this handle's snapshot (and removed the older file) is no damage: the handle
    /// moves to the newest commit and loads its file.
    pub(super) fn attach_graph(&mut self) -> Result<()> {
        loop {
            self.graph = None;
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
            if self.store.is_behind()? {
                self.follow()?;
                continue;
            }
            return self.rebuild_graph(&problem);
        }
    }

    /// Move this handle to the newest commit: its snapshot, metadata and caches.
    pub(super) fn follow(&mut self) -> Result<bool> {
        let changed = self.store.settle()?;
        if changed {
            *self.exact.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        Ok(changed)
    }

    /// Rebuild the graph of a damaged or missing file from LMDB's vectors, and record it as
    /// the next generation where the folder can be written (under the writer lock, and only
    /// while no other process changed the index meanwhile); otherwise use it for this
    /// session only.
    fn rebuild_graph(&mut self, problem: &str) -> Result<()> {
        let path = self.path().to_path_buf();
        let rebuilt = self.graph_from_lmdb(&self.query_config().clone(), &[])?;
        let saved = if self.store.read_only {
            Err(Error::IndexReadOnly { path: path.clone(), op: "recording the rebuilt graph".into() })
        } else {
            let took = self.store.lock_writer("recording the rebuilt graph")?;
            let generation = self.next_generation();
            let saved = match self.store.is_behind() {
                Ok(true) => Err(Error::IndexChanged { path: path.clone(), op: "recording the rebuilt graph".into() }),
                Err(e) => Err(e),
                Ok(false) => rebuilt.save(&path, generation, 0).and_then(|rec| {
                    self.store.write("recording the rebuilt graph", |_, _, meta| {
                        meta.graph = Some(rec.clone());
                        Ok(())
                    })
                }),
            };
            if saved.is_ok() {
                graph::remove_other_generations(&path, Some(generation));
            }
            if took {
                self.store.unlock_writer();
            }
            saved
        };
        self.graph = Some(rebuilt);
        match saved {
            Ok(()) => self.note(format!("{}: the usearch graph was not used: {problem}; rebuilt it from the vectors in LMDB", path.display())),
            Err(e) => self.note(format!(
                "{}: the usearch graph was not used: {problem}; rebuilt it from the vectors in LMDB for this session only, as it could not be saved ({e})",
                path.display()
            )),
        }
        Ok(())
    }

    /// The generation number the next graph file gets.
    pub(super) fn next_generation(&self) -> u64 {
        self.store.meta.graph.as_ref().map_or(1, |r| r.generation + 1)
    }

    /// A graph of every item in LMDB's `vectors` database but `skip` (sorted), inserted in id order.
    pub(super) fn graph_from_lmdb(&self, config: &IndexConfig, skip: &[ItemId]) -> Result<Graph> {
        let (ids, data) = self.lmdb_vectors()?;
        let dim = self.dim();
        let items: Vec<(u32, &[f32])> = ids.iter().copied().zip(data.chunks(dim)).filter(|(id, _)| skip.binary_search(id).is_err()).collect();
        let g = Graph::new(self.path(), config, dim, items.len())?;
        g.insert(self.path(), &items, config.deterministic)?;
        Ok(g)
    }

    /// Every (id, vector) of LMDB's `vectors` database, by ascending id.
    pub(super) fn lmdb_vectors(&self) -> Result<(Vec<ItemId>, Vec<f32>)> {
        let path = self.path();
        let rtxn = self.store.read("loading vectors")?;
        let mut ids = Vec::with_capacity(self.len());
        let mut data = Vec::with_capacity(self.len() * self.dim());
        for entry in self.store.dbs.vectors.iter(&rtxn).at(path, "loading vectors")? {
            let (id, bytes) = entry.at(path, "loading vectors")?;
            ids.push(id);
            data.extend(f32_from_bytes(bytes));
        }
        Ok((ids, data))
    }
}
