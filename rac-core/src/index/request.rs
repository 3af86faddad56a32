//! The search request: what every route asks of the index (cached runs, run-time memory,
//! fine-tuning's online lookups, the CLI, the notebooks) — `k` neighbours of lists searched
//! `k_max` deep, a query's own item dropped or kept — and the queries it is asked about.
//! One value, checked once where it is made; [`RetrievalIndex::search`] takes it.
//!
//! [`RetrievalIndex::search`]: super::RetrievalIndex::search

use super::source::ItemId;
use crate::error::{Error, Result};

/// The neighbour lists' default depth (`retrieval.k_max`): one stored search serves every
/// k up to it, so a sweep over the paper's k (1 to 50) searches once.
pub const DEFAULT_K_MAX: usize = 50;

/// The most neighbours one query asks for (`k`, `k_max`): 2^20.
pub const MAX_K: usize = 1 << 20;

/// The depth of the lists read for `k` neighbours: `k_max`, grown to `k` when it is
/// smaller. The one home of the rule that k_max grows with k (typed edits, `--set`, sweeps,
/// the CLI and the notebooks' tables all come here).
pub fn k_max_for(k: usize, k_max: usize) -> usize {
    k_max.max(k)
}

/// What a search asks for: the first `k` neighbours of lists searched `k_max` deep (one
/// stored entry of the neighbour cache serves every k up to it), with the query's own item
/// dropped or kept. `1 <= k <= k_max` holds by construction, so it is checked once, here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchRequest {
    k: usize,
    k_max: usize,
    drop_self: bool,
}

impl SearchRequest {
    /// `k` of `k_max` neighbours; an error naming `k` unless `1 <= k <= k_max`.
    pub fn new(k: usize, k_max: usize, drop_self: bool) -> Result<Self> {
        if k == 0 {
            return Err(Error::Setting { field: "k".into(), message: "must be at least 1".into() });
        }
        // Bounded at the edge: `k + 1` (drop_self) and `n * k` lists must never overflow.
        for (field, value) in [("k", k), ("k_max", k_max)] {
            if value > MAX_K {
                return Err(Error::Setting {
                    field: field.into(),
                    message: format!("{value} neighbours per query are more than the {MAX_K} a search returns"),
                });
            }
        }
        if k > k_max {
            return Err(Error::Setting {
                field: "k".into(),
                message: format!("{k} is larger than k_max ({k_max}), the depth of the neighbour cache; raise k_max or lower k"),
            });
        }
        Ok(SearchRequest { k, k_max, drop_self })
    }

    /// `k` neighbours searched `k` deep, the query kept: a one-off search.
    pub fn top(k: usize) -> Result<Self> {
        Self::new(k, k, false)
    }

    /// `k` neighbours of lists as deep as the default (grown to `k`), but no deeper than an
    /// index of `items` items answers: the retrieval-only tables of the CLI and notebooks.
    pub fn at_default_depth(k: usize, items: usize) -> Result<Self> {
        Self::new(k, k_max_for(k, DEFAULT_K_MAX).min(items).max(k), false)
    }

    /// The same, with the query's own item dropped (where the query names it) or kept.
    pub fn dropping_self(self, drop_self: bool) -> Self {
        SearchRequest { drop_self, ..self }
    }

    /// The same with the query kept (evaluation items, which are not in the index).
    pub fn keeping_self(self) -> Self {
        self.dropping_self(false)
    }

    /// The search that fills the neighbour cache: `k_max` neighbours.
    pub(crate) fn deepest(self) -> Self {
        SearchRequest { k: self.k_max, ..self }
    }

    /// Neighbours returned per query.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The depth of the stored lists.
    pub fn k_max(&self) -> usize {
        self.k_max
    }

    /// Whether a query that is an item of the index drops itself.
    pub fn drop_self(&self) -> bool {
        self.drop_self
    }
}

/// The queries of a search: row-major vectors, told apart by what is known of who each
/// query is (which `drop_self` needs).
#[derive(Debug, Clone, Copy)]
pub enum Queries<'a> {
    /// Vectors that are no items of the index (test items): `drop_self` is refused.
    Vectors {
        /// The vectors, row-major.
        vectors: &'a [f32],
        /// Their dimension.
        dim: usize,
    },
    /// Vectors of items the index may hold: row `i` is the item `keys[i]` of `source`.
    Keyed {
        /// The vectors, row-major.
        vectors: &'a [f32],
        /// Their dimension.
        dim: usize,
        /// The source the query items belong to.
        source: &'a str,
        /// Each query's key in it.
        keys: &'a [String],
    },
    /// Vectors whose items are known by id, where they are items (augmented training views).
    Identified {
        /// The vectors, row-major.
        vectors: &'a [f32],
        /// Their dimension.
        dim: usize,
        /// Row `i`'s item, or `None` where the index does not hold it.
        items: &'a [Option<ItemId>],
    },
    /// Items of the index, queried by their stored vectors.
    Items(&'a [ItemId]),
}

impl<'a> Queries<'a> {
    /// Vectors that are no items of the index.
    pub fn vectors(vectors: &'a [f32], dim: usize) -> Self {
        Queries::Vectors { vectors, dim }
    }
}
