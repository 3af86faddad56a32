//! The approximate backends behind one interface: arroy's random-projection forest and
//! hannoy's HNSW graph, each stored in its own database of the index's environment.
//!
//! Both report distances in their own scale; [`Searcher`] converts them to the index's
//! (`1 - cos` for cosine, `||a - b||` for L2) so every backend answers alike. A change of
//! content updates the structure incrementally (see [`AnnChange`]); with
//! `deterministic = true` the same history of changes gives the same structure.

use std::num::NonZeroUsize;
use std::path::Path;

use heed::{RoTxn, RwTxn};
use rand010::SeedableRng;

use super::config::{HNSW_M, IndexConfig};
use super::lmdb_errors::StoreResult;
use super::schema::AnnDb;
use crate::error::Result;

/// The index number inside the backend database (arroy and hannoy can hold several).
const ANN_INDEX: u16 = 0;

/// A vector with its item id.
pub(crate) type IdVector = (u32, Vec<f32>);

/// What a change of content does to an approximate backend: both crates build
/// incrementally, inserting the added items into the existing structure and relinking
/// around the removed ones, so a change costs in proportion to the items it touches.
pub(crate) struct AnnChange<'a> {
    /// Drop everything first (a build from scratch: a new index, or a rebuild).
    pub clear: bool,
    /// Items to insert.
    pub add: &'a [IdVector],
    /// Items to delete.
    pub remove: &'a [u32],
}

// One macro for both crates: their writers share method names but not types; `$build`
// sets the crate's own builder knobs and builds.
macro_rules! ann_apply {
    ($krate:ident, $name:literal, $db:expr, $wtxn:expr, $path:expr, $config:expr, $dim:expr, $change:expr, $builder:ident => $build:expr) => {{
        let change: &AnnChange<'_> = $change;
        if change.clear || $dim == 0 {
            $krate::Writer::new($db, ANN_INDEX, $dim.max(1)).clear($wtxn).at($path, concat!("clearing the ", $name))?;
        }
        if $dim > 0 {
            let writer = $krate::Writer::new($db, ANN_INDEX, $dim);
            for id in change.remove {
                writer.del_item($wtxn, *id).at($path, concat!("removing items from the ", $name))?;
            }
            for (id, v) in change.add {
                writer.add_item($wtxn, *id, v).at($path, concat!("adding items to the ", $name))?;
            }
            let mut rng = rand010::rngs::StdRng::seed_from_u64($config.seed);
            let mut $builder = writer.builder(&mut rng);
            $build.at($path, concat!("building the ", $name))?;
        }
    }};
}

/// Apply `change` to the backend's content and bring its structure up to date; `dim` is
/// the index's dimension after the change (0 when no item is left).
pub(crate) fn apply(wtxn: &mut RwTxn<'_>, ann: AnnDb, path: &Path, config: &IndexConfig, dim: usize, change: &AnnChange<'_>) -> Result<()> {
    match ann {
        AnnDb::None => {}
        AnnDb::ArroyCosine(db) => {
            ann_apply!(arroy, "arroy trees", db, wtxn, path, config, dim, change, b => b.n_trees(config.arroy.n_trees).build(wtxn))
        }
        AnnDb::ArroyL2(db) => ann_apply!(arroy, "arroy trees", db, wtxn, path, config, dim, change, b => b.n_trees(config.arroy.n_trees).build(wtxn)),
        AnnDb::HnswCosine(db) => {
            ann_apply!(hannoy, "HNSW graph", db, wtxn, path, config, dim, change, b => b.ef_construction(config.hnsw.ef_construction).build::<HNSW_M, { 2 * HNSW_M }>(wtxn))
        }
        AnnDb::HnswL2(db) => {
            ann_apply!(hannoy, "HNSW graph", db, wtxn, path, config, dim, change, b => b.ef_construction(config.hnsw.ef_construction).build::<HNSW_M, { 2 * HNSW_M }>(wtxn))
        }
    }
    Ok(())
}

/// Empty the backend's database whatever its type (used when a rebuild changes backend).
pub(crate) fn clear_any(wtxn: &mut RwTxn<'_>, ann: AnnDb, path: &Path) -> Result<()> {
    use heed::types::Bytes;
    let op = "clearing the previous backend";
    match ann {
        AnnDb::None => {}
        AnnDb::ArroyCosine(db) => db.remap_types::<Bytes, Bytes>().clear(wtxn).at(path, op)?,
        AnnDb::ArroyL2(db) => db.remap_types::<Bytes, Bytes>().clear(wtxn).at(path, op)?,
        AnnDb::HnswCosine(db) => db.remap_types::<Bytes, Bytes>().clear(wtxn).at(path, op)?,
        AnnDb::HnswL2(db) => db.remap_types::<Bytes, Bytes>().clear(wtxn).at(path, op)?,
    }
    Ok(())
}

/// An open reader of one backend, for many queries in one read transaction.
pub(crate) enum Searcher<'t> {
    ArroyCosine(arroy::Reader<'t, arroy::distances::Cosine>, usize),
    ArroyL2(arroy::Reader<'t, arroy::distances::Euclidean>, usize),
    HnswCosine(hannoy::Reader<'t, hannoy::distances::Cosine>, usize),
    HnswL2(hannoy::Reader<'t, hannoy::distances::Euclidean>, usize),
}

impl<'t> Searcher<'t> {
    /// Open the backend's reader in `rtxn`; `None` for the exact backend.
    pub fn open(rtxn: &'t RoTxn<'t>, ann: AnnDb, path: &Path, config: &IndexConfig) -> Result<Option<Self>> {
        let op = "opening the backend";
        let search_k = config.arroy.search_k;
        let ef = config.hnsw.ef_search;
        Ok(Some(match ann {
            AnnDb::None => return Ok(None),
            AnnDb::ArroyCosine(db) => Searcher::ArroyCosine(arroy::Reader::open(rtxn, ANN_INDEX, db).at(path, op)?, search_k),
            AnnDb::ArroyL2(db) => Searcher::ArroyL2(arroy::Reader::open(rtxn, ANN_INDEX, db).at(path, op)?, search_k),
            AnnDb::HnswCosine(db) => Searcher::HnswCosine(hannoy::Reader::open(rtxn, ANN_INDEX, db).at(path, op)?, ef),
            AnnDb::HnswL2(db) => Searcher::HnswL2(hannoy::Reader::open(rtxn, ANN_INDEX, db).at(path, op)?, ef),
        }))
    }

    /// The `k` nearest items to `query`, nearest first, with distances in the index's scale.
    pub fn search(&self, rtxn: &'t RoTxn<'t>, path: &Path, query: &[f32], k: usize) -> Result<Vec<(u32, f32)>> {
        let op = "searching";
        let mut hits = match self {
            Searcher::ArroyCosine(r, per_k) => arroy_query(r, rtxn, query, k, *per_k).at(path, op)?,
            Searcher::ArroyL2(r, per_k) => arroy_query(r, rtxn, query, k, *per_k).at(path, op)?,
            Searcher::HnswCosine(r, ef) => r.nns(k).ef_search(*ef).by_vector(rtxn, query).at(path, op)?.nns,
            Searcher::HnswL2(r, ef) => r.nns(k).ef_search(*ef).by_vector(rtxn, query).at(path, op)?.nns,
        };
        // Both crates give cosine as (1 - cos) / 2; hannoy gives L2 squared, arroy not.
        match self {
            Searcher::ArroyCosine(..) | Searcher::HnswCosine(..) => hits.iter_mut().for_each(|h| h.1 *= 2.0),
            Searcher::HnswL2(..) => hits.iter_mut().for_each(|h| h.1 = h.1.max(0.0).sqrt()),
            Searcher::ArroyL2(..) => {}
        }
        hits.truncate(k);
        Ok(hits)
    }

    /// The stored vector of an item.
    pub fn vector(&self, rtxn: &'t RoTxn<'t>, path: &Path, id: u32) -> Result<Option<Vec<f32>>> {
        let op = "reading a vector";
        match self {
            Searcher::ArroyCosine(r, _) => r.item_vector(rtxn, id).at(path, op),
            Searcher::ArroyL2(r, _) => r.item_vector(rtxn, id).at(path, op),
            Searcher::HnswCosine(r, _) => r.item_vector(rtxn, id).at(path, op),
            Searcher::HnswL2(r, _) => r.item_vector(rtxn, id).at(path, op),
        }
    }
}

fn arroy_query<D: arroy::Distance>(
    reader: &arroy::Reader<'_, D>,
    rtxn: &RoTxn<'_>,
    query: &[f32],
    k: usize,
    search_k: usize,
) -> std::result::Result<Vec<(u32, f32)>, arroy::Error> {
    let mut q = reader.nns(k);
    q.search_k(NonZeroUsize::new(search_k.max(k).max(1)).expect("at least 1"));
    q.by_vector(rtxn, query)
}
