//! The neighbour cache: for a frozen encoder and no augmentation, the neighbour lists of every
//! training and test item are computed once per (index fingerprint, k_max) and stored in the
//! index's own environment; any later k <= k_max is read back instead of searched, which is
//! what makes an ablation over k cost seconds.
//!
//! The first k of a k_max list are exactly a fresh k search: exact search and arroy (whose
//! `search_k` does not scale with k) are prefix-consistent, and so is HNSW while
//! `ef_search >= k_max` (hannoy widens ef to k above that).
//!
//! An entry is valid only for the index content, the query set and the query-time knobs it
//! was computed with; adding or removing a source clears every entry in the same transaction
//! (see `RetrievalIndex::add_source`), and a stale one is never returned.

use heed::RoTxn;
use serde::{Deserialize, Serialize};

use super::handle::RetrievalIndex;
use super::lmdb_errors::StoreResult;
use super::request::{Queries, SearchRequest};
use super::search::Neighbours;
use super::source::ItemId;
use crate::error::{Error, Result};
use crate::fsio::CacheOutcome;

/// The queries of a neighbour list.
#[derive(Debug, Clone, Copy)]
pub enum QuerySet<'a> {
    /// Every item of a source of the index, queried by its stored vector (training items:
    /// use `drop_self` so that an item is not its own neighbour).
    Source(&'a str),
    /// Row-major feature vectors that are not in the index (test items), named.
    Features {
        /// The name the lists are stored under (`"test"`).
        name: &'a str,
        /// The vectors.
        vectors: &'a [f32],
        /// Their dimension.
        dim: usize,
    },
    /// Row-major feature vectors of items that may be in the index: row `i` is the item
    /// `keys[i]` of the source `source` (training items when the index holds a thinned
    /// training split, or none of it). `drop_self` drops a hit only when it is that item.
    Keyed {
        /// The name the lists are stored under.
        name: &'a str,
        /// The vectors.
        vectors: &'a [f32],
        /// Their dimension.
        dim: usize,
        /// The source the query items belong to.
        source: &'a str,
        /// Each query's key in it.
        keys: &'a [String],
    },
}

impl QuerySet<'_> {
    fn key(&self) -> String {
        match self {
            QuerySet::Source(name) => format!("source:{name}"),
            QuerySet::Features { name, .. } => format!("features:{name}"),
            QuerySet::Keyed { name, .. } => format!("keyed:{name}"),
        }
    }
}

/// Neighbour lists of `n` queries, `k` each, nearest first, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NeighbourLists {
    /// Number of queries.
    pub n: usize,
    /// Neighbours per query.
    pub k: usize,
    /// Item ids, `n x k`.
    pub ids: Vec<ItemId>,
    /// Distances, `n x k`.
    pub distances: Vec<f32>,
}

impl NeighbourLists {
    fn from_hits(hits: &[Vec<(ItemId, f32)>], k: usize) -> Self {
        let mut ids = Vec::with_capacity(hits.len() * k);
        let mut distances = Vec::with_capacity(hits.len() * k);
        for h in hits {
            debug_assert_eq!(h.len(), k);
            ids.extend(h.iter().map(|x| x.0));
            distances.extend(h.iter().map(|x| x.1));
        }
        NeighbourLists { n: hits.len(), k, ids, distances }
    }

    /// The ids and distances of query `i`.
    pub fn row(&self, i: usize) -> (&[ItemId], &[f32]) {
        (&self.ids[i * self.k..(i + 1) * self.k], &self.distances[i * self.k..(i + 1) * self.k])
    }

    /// The first `k` neighbours of every query.
    pub fn truncated(&self, k: usize) -> Self {
        let k = k.min(self.k);
        let mut out = NeighbourLists { n: self.n, k, ids: Vec::with_capacity(self.n * k), distances: Vec::with_capacity(self.n * k) };
        for i in 0..self.n {
            let (ids, d) = self.row(i);
            out.ids.extend_from_slice(&ids[..k]);
            out.distances.extend_from_slice(&d[..k]);
        }
        out
    }

    /// As (id, distance) lists, one per query.
    pub fn hits(&self) -> Vec<Vec<(ItemId, f32)>> {
        (0..self.n)
            .map(|i| {
                let (a, b) = self.row(i);
                a.iter().copied().zip(b.iter().copied()).collect()
            })
            .collect()
    }

    fn encode(&self, header: &CacheHeader) -> Vec<u8> {
        let h = serde_json::to_vec(header).expect("header serialises");
        let mut out = Vec::with_capacity(4 + h.len() + 8 * self.ids.len());
        out.extend((h.len() as u32).to_le_bytes());
        out.extend(h);
        out.extend(self.ids.iter().flat_map(|x| x.to_le_bytes()));
        out.extend(crate::vectors::f32_to_bytes(&self.distances));
        out
    }
}

/// What a cache entry was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheHeader {
    index_fingerprint: String,
    query_fingerprint: String,
    search_params: String,
    k_max: usize,
    drop_self: bool,
    n: usize,
}

/// A cache entry, as listed by [`NeighbourCache::entries`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// The stored key (`source:train`, `features:test`).
    pub key: String,
    /// Number of queries.
    pub n: usize,
    /// Neighbours stored per query.
    pub k_max: usize,
    /// Whether the query's own item was dropped.
    pub drop_self: bool,
    /// Whether it matches the index as it is now.
    pub fresh: bool,
}

/// The neighbour cache of an index; see the module documentation.
pub struct NeighbourCache<'a> {
    index: &'a mut RetrievalIndex,
}

impl RetrievalIndex {
    /// The index's neighbour cache.
    pub fn neighbour_cache(&mut self) -> NeighbourCache<'_> {
        NeighbourCache { index: self }
    }
}

fn decode(bytes: &[u8]) -> Option<(CacheHeader, NeighbourLists)> {
    let hl = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let header: CacheHeader = serde_json::from_slice(bytes.get(4..4 + hl)?).ok()?;
    let m = header.n * header.k_max;
    let body = bytes.get(4 + hl..)?;
    if body.len() != 8 * m {
        return None;
    }
    let ids = body[..4 * m].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let distances = crate::vectors::f32_from_bytes(&body[4 * m..]);
    let lists = NeighbourLists { n: header.n, k: header.k_max, ids, distances };
    Some((header, lists))
}

impl NeighbourCache<'_> {
    fn search_params(&self) -> String {
        let c = self.index.query_config();
        format!("search_k={} ef_search={}", c.arroy.search_k, c.hnsw.ef_search)
    }

    fn query_fingerprint(&self, set: &QuerySet<'_>) -> Result<String> {
        Ok(match set {
            QuerySet::Source(name) => format!("source:{}", self.index.source(name)?.content_sha256),
            QuerySet::Features { vectors, dim, .. } => format!("features:{}", crate::vectors::fingerprint(vectors, *dim)),
            QuerySet::Keyed { vectors, dim, source, keys, .. } => {
                let mut named = source.as_bytes().to_vec();
                for k in keys.iter() {
                    named.push(0);
                    named.extend(k.as_bytes());
                }
                format!("keyed:{}:{}", crate::vectors::fingerprint(vectors, *dim), crate::fsio::sha256_bytes(&named))
            }
        })
    }

    fn header(&self, set: &QuerySet<'_>, k_max: usize, drop_self: bool, n: usize) -> Result<CacheHeader> {
        Ok(CacheHeader {
            index_fingerprint: self.index.fingerprint().to_string(),
            query_fingerprint: self.query_fingerprint(set)?,
            search_params: self.search_params(),
            k_max,
            drop_self,
            n,
        })
    }

    fn stored(&self, key: &str) -> Result<Option<(CacheHeader, NeighbourLists)>> {
        let store = &self.index.store;
        let rtxn: RoTxn<'_, heed::WithoutTls> = store.env.read_txn().at(&store.path, "reading the neighbour cache")?;
        Ok(store.dbs.neighbours.get(&rtxn, key).at(&store.path, "reading the neighbour cache")?.and_then(decode))
    }

    /// The first `k` neighbours of every query of `set`, read from a fresh stored entry of
    /// the query's depth and `drop_self`; `None` otherwise.
    pub fn get(&self, set: &QuerySet<'_>, query: SearchRequest) -> Result<Option<NeighbourLists>> {
        let Some((header, lists)) = self.stored(&set.key())? else { return Ok(None) };
        let want = self.header(set, header.k_max, query.drop_self(), header.n)?;
        if header == want && query.k() <= header.k_max { Ok(Some(lists.truncated(query.k()))) } else { Ok(None) }
    }

    /// The first `k` neighbours of every query of `set`: read back when a fresh entry holds
    /// them, otherwise searched `k_max` deep, stored, and truncated to `k`. A `k_max` beyond
    /// the index's items is an error naming `k_max`.
    pub fn lists(&mut self, set: &QuerySet<'_>, query: SearchRequest) -> Result<(NeighbourLists, CacheOutcome)> {
        // Checked before the lookup, so that a setting that is wrong for this index is named
        // whether or not a shallower entry happens to be cached.
        let (k_max, drop_self) = (query.k_max(), query.drop_self());
        if drop_self && matches!(set, QuerySet::Features { .. }) {
            return Err(Error::DropSelfUnknown { what: format!("neighbour lists of `{}`", set.key()) });
        }
        // The query items of a keyed set, when the index holds their source.
        let own = match set {
            QuerySet::Keyed { source, keys, .. } if drop_self => Some(self.index.own_items(source, keys)?),
            _ => None,
        };
        let drops = match set {
            QuerySet::Source(_) => drop_self,
            _ => own.as_ref().is_some_and(|o| o.iter().any(Option::is_some)),
        };
        let n = self.index.len();
        if k_max + usize::from(drops) > n {
            return Err(Error::Setting {
                field: "k_max".into(),
                message: format!(
                    "{k_max} neighbours{} are more than the index's {n} items; lower k_max",
                    if drops { " plus the query itself" } else { "" }
                ),
            });
        }
        if let Some(lists) = self.get(set, query)? {
            return Ok((lists, CacheOutcome::Hit));
        }
        let ids: Vec<ItemId>;
        let queries = match *set {
            QuerySet::Source(name) => {
                ids = self.index.source_ids(name)?.collect();
                Queries::Items(&ids)
            }
            QuerySet::Features { vectors, dim, .. } => Queries::Vectors { vectors, dim },
            QuerySet::Keyed { vectors, dim, .. } => match &own {
                Some(items) => Queries::Identified { vectors, dim, items },
                None => Queries::Vectors { vectors, dim },
            },
        };
        let hits = self.index.search(&queries, &query.deepest())?;
        let lists = NeighbourLists::from_hits(&hits, k_max);
        let header = self.header(set, k_max, drop_self, lists.n)?;
        let bytes = lists.encode(&header);
        let key = set.key();
        let path = self.index.path().to_path_buf();
        let stored = self
            .index
            .store
            .write("storing neighbour lists", |wtxn, dbs, _meta| dbs.neighbours.put(wtxn, &key, &bytes).at(&path, "storing neighbour lists"));
        match stored {
            // Another process changed the index since this handle's snapshot: the lists are
            // right for the snapshot, which the stored index no longer is; they are not kept.
            Ok(()) | Err(Error::IndexChanged { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok((lists.truncated(query.k()), CacheOutcome::Computed))
    }

    /// The neighbour lists of `set` with labels and texts attached (see [`Self::lists`]).
    pub fn neighbours(&mut self, set: &QuerySet<'_>, query: SearchRequest) -> Result<Vec<Neighbours>> {
        let (lists, _) = self.lists(set, query)?;
        self.index.resolve(lists.hits())
    }

    /// Every stored entry.
    pub fn entries(&self) -> Result<Vec<CacheEntry>> {
        let store = &self.index.store;
        let rtxn = store.env.read_txn().at(&store.path, "reading the neighbour cache")?;
        let mut out = Vec::new();
        for entry in store.dbs.neighbours.iter(&rtxn).at(&store.path, "reading the neighbour cache")? {
            let (key, bytes) = entry.at(&store.path, "reading the neighbour cache")?;
            if let Some((h, _)) = decode(bytes) {
                let fresh = h.index_fingerprint == self.index.fingerprint() && h.search_params == self.search_params();
                out.push(CacheEntry { key: key.to_string(), n: h.n, k_max: h.k_max, drop_self: h.drop_self, fresh });
            }
        }
        Ok(out)
    }
}
