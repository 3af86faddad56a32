//! Writing an index: a change of items (a build, a source added or removed) applied in one
//! LMDB transaction, with the usearch graph's next generation saved before it commits.

use super::backend::{self, IdVector};
use super::config::{Backend, IndexConfig};
use super::graph::{self, Graph};
use super::handle::RetrievalIndex;
use super::lmdb_errors::StoreResult;
use super::schema::{self, AnnDb, GraphRecord, ItemRecord, Meta, SourceRecord, StoredHasher};
use super::source::{ItemId, Source};
use crate::error::{Error, Result};
use crate::vectors::{f32_to_bytes, prepare_rows};

/// What a write does to the items.
pub(super) enum Change<'a> {
    Replace(&'a [Source]),
    Add(&'a Source),
    Remove(&'a str),
}

impl RetrievalIndex {
    /// Apply a change of items in one transaction. Whatever the outcome, the graph files
    /// left are those of the committed generation; a handle whose graph was being changed
    /// when the change failed loads the committed one again.
    pub(super) fn apply(&mut self, op: &str, change: Change<'_>, rebuild: Option<(AnnDb, AnnDb, IndexConfig)>) -> Result<()> {
        // Before any work (a usearch change writes its graph file before the transaction).
        if self.store.read_only {
            return Err(Error::IndexReadOnly { path: self.path().to_path_buf(), op: op.to_string() });
        }
        // One writer at a time across processes, from the state it changes (the newest
        // commit, read under the lock) to the removal of the files it replaced.
        let took = self.store.lock_writer(op)?;
        let result = (|| {
            if took && self.follow()? {
                self.attach_graph()?;
            }
            self.check_change(&change)?;
            self.apply_change(op, change, rebuild)
        })();
        graph::remove_other_generations(self.path(), self.store.meta.graph.as_ref().map(|r| r.generation));
        let result = match result {
            Err(e) if self.graph.is_none() => self.attach_graph().and(Err(e)),
            other => other,
        };
        if took {
            self.store.unlock_writer();
        }
        result
    }

    /// Whether `change` applies to the index as it now is (read under the writer lock).
    fn check_change(&self, change: &Change<'_>) -> Result<()> {
        match change {
            Change::Add(source) if self.source(&source.name).is_ok() => {
                Err(Error::SourceExists { path: self.path().to_path_buf(), name: source.name.clone() })
            }
            Change::Remove(name) => self.source(name).map(|_| ()),
            _ => Ok(()),
        }
    }

    pub(super) fn apply_change(&mut self, op: &str, change: Change<'_>, rebuild: Option<(AnnDb, AnnDb, IndexConfig)>) -> Result<()> {
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
            if let Err(bad) = prepare_rows(&mut v, s.dim, metric.compare()) {
                return Err(Error::BadVector { what: format!("source `{}`", s.name), problem: bad.describe() });
            }
            prepared.push(v);
        }
        let hashes: Vec<String> = added.iter().map(|s| s.content_sha256()).collect();
        let total_added: usize = added.iter().map(|s| s.len()).sum();
        if (self.len() + total_added) as u64 > u32::MAX as u64 {
            return Err(Error::Shape {
                what: format!("{}: items after the change", path.display()),
                expected: "at most 2^32 (item ids are u32); split the memory over two indexes".into(),
                found: (self.len() + total_added).to_string(),
            });
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
                let mut sources = schema::read_sources(wtxn, dbs.sources, &path)?;
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
                        let bytes = f32_to_bytes(row);
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
                meta.fingerprint = schema::fingerprint(&config, &sources);
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
    pub(super) fn graph_after(
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
