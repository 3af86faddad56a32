//! Reading an index: the one search entry point ([`RetrievalIndex::search`], a request over
//! queries), the hits resolved to labels and texts, each backend's batched and one-by-one
//! search.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::backend::Searcher;
use super::config::Backend;
use super::exact::ExactMatrix;
use super::graph::Graph;
use super::handle::RetrievalIndex;
use super::lmdb_errors::StoreResult;
use super::request::{Queries, SearchRequest};
use super::schema::ItemRecord;
use super::source::ItemId;
use super::store::Store;
use crate::error::{Error, Result};
use crate::vectors::prepare_rows;

/// Who each query is, where it is an item of the index (for `drop_self`).
type OwnItems<'a> = Cow<'a, [Option<ItemId>]>;

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

impl RetrievalIndex {
    /// The item id of each of `keys` in the source `name`, or `None` where the source has no
    /// such key (or the index has no such source): who each query is, for `drop_self`.
    pub fn own_items(&self, name: &str, keys: &[String]) -> Result<Vec<Option<ItemId>>> {
        let Some(src) = self.sources()?.into_iter().find(|s| s.name == name) else { return Ok(vec![None; keys.len()]) };
        let rtxn = self.store.read("reading items")?;
        let mut by_key = HashMap::with_capacity(src.count as usize);
        for id in src.ids() {
            by_key.insert(read_item(&rtxn, &self.store, id)?.key, id);
        }
        Ok(keys.iter().map(|k| by_key.get(k).copied()).collect())
    }

    /// The one entry point of a search: the raw (id, distance) hits of every query, the
    /// `request.k()` nearest items of each, nearest first. With `request.drop_self()`,
    /// `k + 1` are searched and a query's own item is dropped when it is found; rows that are
    /// no item of the index, or whose item was not found, keep their first `k`. Vectors that
    /// are no items cannot drop themselves, so asking for it is an error.
    pub fn search(&self, queries: &Queries<'_>, request: &SearchRequest) -> Result<Vec<Vec<(ItemId, f32)>>> {
        let path = self.path();
        let (k, drop_self) = (request.k(), request.drop_self());
        let (vectors, dim, own): (Cow<'_, [f32]>, usize, Option<OwnItems<'_>>) = match *queries {
            Queries::Vectors { vectors, dim } => {
                if drop_self {
                    return Err(Error::DropSelfUnknown { what: format!("{}: the query batch", path.display()) });
                }
                (Cow::Borrowed(vectors), dim, None)
            }
            Queries::Keyed { vectors, dim, source, keys } => {
                let own = if drop_self { Some(Cow::Owned(self.own_items(source, keys)?)) } else { None };
                (Cow::Borrowed(vectors), dim, own)
            }
            Queries::Identified { vectors, dim, items } => (Cow::Borrowed(vectors), dim, drop_self.then_some(Cow::Borrowed(items))),
            Queries::Items(ids) => {
                let own = drop_self.then(|| Cow::Owned(ids.iter().map(|&id| Some(id)).collect()));
                (Cow::Owned(self.vectors(ids)?), self.dim(), own)
            }
        };
        self.require_items()?;
        if dim != self.dim() || !vectors.len().is_multiple_of(dim.max(1)) {
            return Err(Error::IndexDimension { path: path.to_path_buf(), what: "the query batch".into(), expected: self.dim(), received: dim });
        }
        if let Some(own) = &own
            && own.len() * dim != vectors.len()
        {
            return Err(Error::Shape {
                what: format!("{}: the query items", path.display()),
                expected: format!("{}, one per query", vectors.len() / dim),
                found: own.len().to_string(),
            });
        }
        let drops = own.as_ref().is_some_and(|o| o.iter().any(Option::is_some));
        let k_search = k + usize::from(drops);
        if k_search > self.len() {
            let extra = if drops { " (plus one for drop_self)" } else { "" };
            return Err(Error::IndexK { path: path.to_path_buf(), k, reason: format!("the index holds only {} items{extra}", self.len()) });
        }
        let mut vectors = vectors.into_owned();
        if let Err(bad) = prepare_rows(&mut vectors, dim, self.config().metric.compare()) {
            return Err(Error::BadVector { what: format!("{}: the query batch", path.display()), problem: bad.describe() });
        }
        let mut hits = self.raw_search(&vectors, k_search)?;
        if let Some(own) = own.filter(|_| drops) {
            for (h, me) in hits.iter_mut().zip(own.iter()) {
                if let Some(pos) = me.and_then(|me| h.iter().position(|(id, _)| *id == me)) {
                    h.remove(pos);
                }
                h.truncate(k);
            }
        }
        Ok(hits)
    }

    /// [`Self::search`], with labels and texts attached.
    pub fn neighbours(&self, queries: &Queries<'_>, request: &SearchRequest) -> Result<Vec<Neighbours>> {
        self.resolve(self.search(queries, request)?)
    }

    /// Attach labels and texts to raw hits.
    pub fn resolve(&self, hits: Vec<Vec<(ItemId, f32)>>) -> Result<Vec<Neighbours>> {
        let rtxn = self.store.read("reading items")?;
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

    /// Search prepared (normalised) queries; batches run in parallel, one read transaction
    /// per worker for the approximate backends, one matrix product per block for exact.
    pub(super) fn raw_search(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<(ItemId, f32)>>> {
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

    pub(super) fn graph(&self) -> Result<&Graph> {
        self.graph.as_ref().ok_or_else(|| Error::IndexStore {
            path: self.path().to_path_buf(),
            op: "querying".into(),
            message: "the usearch graph is not loaded".into(),
        })
    }

    /// Run `f` with one open reader of the LMDB-stored approximate backends, on this
    /// handle's snapshot: a transaction of its own while nothing was committed since (workers
    /// then search in parallel), the handle's pinned one otherwise.
    pub(super) fn with_searcher<T>(&self, f: impl for<'t> FnOnce(&'t heed::RoTxn<'t>, &Searcher<'t>) -> Result<T>) -> Result<T> {
        let path = self.path();
        let run = |rtxn: &heed::RoTxn<'_>| {
            let searcher = Searcher::open(rtxn, self.store.dbs.ann, path, self.query_config())?
                .ok_or_else(|| Error::Internal("the exact and usearch backends have no LMDB reader".into()))?;
            f(rtxn, &searcher)
        };
        let own = self.store.env.read_txn().at(path, "querying")?;
        if self.store.sees_same(&own) {
            return run(&own);
        }
        drop(own);
        let pinned = self.store.read("querying")?;
        run(&pinned)
    }

    /// One query at a time (no batching), as a user of a notebook cell would: used for latency.
    pub fn search_one_by_one(&self, queries: &[f32], k: usize, mut on_each: impl FnMut()) -> Result<Vec<Vec<(ItemId, f32)>>> {
        self.require_items()?;
        let dim = self.dim();
        let mut queries = queries.to_vec();
        if let Err(bad) = prepare_rows(&mut queries, dim, self.config().metric.compare()) {
            return Err(Error::BadVector { what: format!("{}: the query batch", self.path().display()), problem: bad.describe() });
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

    pub(super) fn exact_matrix(&self) -> Result<Arc<ExactMatrix>> {
        let mut guard = self.exact.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = guard.as_ref() {
            return Ok(m.clone());
        }
        let (ids, data) = self.lmdb_vectors()?;
        let m = Arc::new(ExactMatrix::new(ids, data, self.dim(), self.config().metric)?);
        *guard = Some(m.clone());
        Ok(m)
    }
}

pub(super) fn read_item(rtxn: &heed::RoTxn<'_>, store: &Store, id: ItemId) -> Result<ItemRecord> {
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
