//! The index's configuration: which backend answers queries, with which distance and knobs.
//!
//! It is chosen when an index is built and stored inside it, so a copied index folder
//! answers queries the same way. The defaults follow the paper (cosine, HNSW with M = 32)
//! and our measurements on 768-d embeddings (see `rac index bench`, `benches/faiss/RESULTS.md`
//! and ARCHITECTURE.md).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::vectors::Compare;

/// The graph degree of the HNSW backends: the paper's M = 32 (64 links on the ground layer,
/// like FAISS's `IndexHNSWFlat(d, 32)`).
pub const HNSW_M: usize = 32;

/// Which structure answers nearest-neighbour queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// arroy: a forest of random-projection trees (Annoy-like) on LMDB.
    Arroy,
    /// HNSW (the `hannoy` crate) on LMDB: the graph the paper used, with M = 32, stored
    /// and searched inside LMDB (no file of its own).
    Hnsw,
    /// HNSW with M = 32 over flat in-memory arrays (USearch's C++ core), its graph in a
    /// checksummed file beside LMDB, which keeps the vectors (see `graph.rs`).
    Usearch,
    /// Batched brute force as a matrix product on candle: the ground truth.
    Exact,
}

impl Backend {
    /// Every backend, in table order.
    pub const ALL: [Backend; 4] = [Backend::Exact, Backend::Usearch, Backend::Hnsw, Backend::Arroy];

    /// Whether the backend searches the `vectors` database's copy of the vectors (exact
    /// loads it as a matrix, usearch builds its graph from it); arroy and hannoy keep
    /// theirs in their own databases.
    pub fn keeps_vectors_in_lmdb(self) -> bool {
        matches!(self, Backend::Exact | Backend::Usearch)
    }

    /// The backend's name as used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Arroy => "arroy",
            Backend::Hnsw => "hnsw",
            Backend::Usearch => "usearch",
            Backend::Exact => "exact",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "arroy" => Ok(Backend::Arroy),
            "hnsw" => Ok(Backend::Hnsw),
            "usearch" => Ok(Backend::Usearch),
            "exact" => Ok(Backend::Exact),
            other => Err(Error::UnknownSpec { what: "index backend", spec: other.into(), known: "arroy, hnsw, usearch, exact" }),
        }
    }
}

/// The distance between vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine distance `1 - cos(a, b)`, in [0, 2]. Vectors are normalised once, at insertion.
    Cosine,
    /// Euclidean distance `||a - b||_2`.
    L2,
}

impl Metric {
    /// How rows are compared: by direction alone (cosine: normalised once, at insertion, so
    /// an all-zero row has no place), or by L2 distance (rows short enough for it to be finite).
    pub fn compare(self) -> Compare {
        match self {
            Metric::Cosine => Compare::ByDirection,
            Metric::L2 => Compare::ByDistance,
        }
    }

    /// The metric's name as used in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "l2" => Ok(Metric::L2),
            other => Err(Error::UnknownSpec { what: "metric", spec: other.into(), known: "cosine, l2" }),
        }
    }
}

/// Knobs of the arroy backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArroyParams {
    /// Number of random-projection trees. More trees: higher recall, bigger index, slower build.
    pub n_trees: usize,
    /// Tree nodes (candidate items) inspected per query, at least k. More: higher recall,
    /// slower queries. It does not scale with k, so the first k of a k_max search are
    /// exactly a k search (what the neighbour cache relies on).
    pub search_k: usize,
}

impl Default for ArroyParams {
    /// Tuned on the real 1280-d EfficientNet-Lite0 features of Fashion-MNIST-LT (`rac index
    /// bench`, benches/faiss/RESULTS.md): 32 trees and 10,000 candidates give recall@30 0.960
    /// against exact, where the earlier 16 / 2,000 (tuned on the synthetic 768-d set, 0.993
    /// there) gave 0.855; 64 trees add nothing, and 20,000 candidates reach 0.980 at 0.7x
    /// the queries/s.
    fn default() -> Self {
        ArroyParams { n_trees: 32, search_k: 10_000 }
    }
}

/// Knobs of the HNSW backends, hannoy's and usearch's (M is fixed at the paper's 32, see
/// [`HNSW_M`]; usearch calls these `expansion_add` and `expansion_search`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HnswParams {
    /// Candidate list size while inserting. More: better graph, slower build.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least k). More: higher recall, slower queries.
    pub ef_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        // ef_search = 64 gave recall@30 = 0.99997 on the synthetic 100k x 768 set (48: 0.995).
        HnswParams { ef_construction: 200, ef_search: 64 }
    }
}

/// How the usearch backend stores its vectors inside the graph (the LMDB copy is f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// 32-bit floats: exact distances (usearch's own default is bf16; ours is f32).
    F32,
    /// 16-bit floats: half the memory, distances to about 3 decimals. Fast only with the
    /// `usearch-simd` feature (usearch's kernels); otherwise a serial loop, 3x slower than f32.
    F16,
    /// 8-bit integers of the unit vectors (cosine only): a quarter of the memory; recall@30
    /// about 0.93 on the synthetic 768-d set. Fast with the `usearch-simd` feature.
    I8,
}

impl Storage {
    /// The storage's name as used in tables and configs.
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::F16 => "f16",
            Storage::I8 => "i8",
        }
    }
}

impl std::str::FromStr for Storage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(Storage::F32),
            "f16" => Ok(Storage::F16),
            "i8" => Ok(Storage::I8),
            other => Err(Error::UnknownSpec { what: "usearch storage", spec: other.into(), known: "f32, f16, i8" }),
        }
    }
}

/// Knobs of the usearch backend besides the HNSW ones it shares ([`HnswParams`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsearchParams {
    /// The vectors' storage inside the graph.
    pub storage: Storage,
    /// Removed items stay in the graph as deleted nodes (searches skip them); when they pass
    /// this fraction of the live items, a removal rebuilds the graph from LMDB instead.
    pub rebuild_deleted_fraction: f64,
}

impl Default for UsearchParams {
    fn default() -> Self {
        UsearchParams { storage: Storage::F32, rebuild_deleted_fraction: 0.2 }
    }
}

/// The whole configuration of a retrieval index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// The backend that answers queries.
    pub backend: Backend,
    /// The distance.
    pub metric: Metric,
    /// arroy's knobs (used when `backend = "arroy"`).
    pub arroy: ArroyParams,
    /// HNSW's knobs (used when `backend = "hnsw"` or `"usearch"`).
    pub hnsw: HnswParams,
    /// usearch's own knobs (used when `backend = "usearch"`).
    pub usearch: UsearchParams,
    /// Seed of the random choices made while building (tree splits, hannoy's HNSW levels;
    /// usearch draws its levels from generators with a fixed seed).
    pub seed: u64,
    /// Build bit-reproducibly: the same vectors, seed and history of changes give the same
    /// structure and the same results on every run, whatever the thread count, at the price
    /// of building on one thread (usearch inserts in id order; hannoy's whole change runs on
    /// a pool of one thread). arroy is deterministic either way.
    pub deterministic: bool,
    /// Initial size of the LMDB map in bytes; it doubles when full, up to `max_map_size`.
    pub map_size: usize,
    /// The largest the LMDB map may grow to, in bytes.
    pub max_map_size: usize,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            backend: Backend::Usearch,
            metric: Metric::Cosine,
            arroy: ArroyParams::default(),
            hnsw: HnswParams::default(),
            usearch: UsearchParams::default(),
            seed: 42,
            deterministic: false,
            map_size: 1 << 30,
            max_map_size: 1 << 40,
        }
    }
}

/// The most trees arroy builds.
pub const MAX_TREES: usize = 1 << 12;
/// The most nodes arroy inspects per query.
pub const MAX_SEARCH_K: usize = 1 << 32;
/// The widest HNSW candidate list, at build or search (`ef_construction`, `ef_search`).
pub const MAX_EF: usize = 1 << 16;

impl IndexConfig {
    /// The default configuration with another backend.
    pub fn with_backend(backend: Backend) -> Self {
        IndexConfig { backend, ..Default::default() }
    }

    /// Check every value; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| Err(Error::Setting { field: field.into(), message });
        // Widths past these bounds only allocate: a typo with many digits is named, not stored.
        for (field, value, max) in [
            ("arroy.n_trees", self.arroy.n_trees, MAX_TREES),
            ("arroy.search_k", self.arroy.search_k, MAX_SEARCH_K),
            ("hnsw.ef_construction", self.hnsw.ef_construction, MAX_EF),
            ("hnsw.ef_search", self.hnsw.ef_search, MAX_EF),
        ] {
            if value > max {
                return bad(field, format!("{value} is more than the {max} this setting allows"));
            }
        }
        if self.arroy.n_trees == 0 {
            return bad("arroy.n_trees", "must be at least 1".into());
        }
        if self.arroy.search_k == 0 {
            return bad("arroy.search_k", "must be at least 1".into());
        }
        if self.hnsw.ef_construction < HNSW_M {
            return bad("hnsw.ef_construction", format!("must be at least M = {HNSW_M}, got {}", self.hnsw.ef_construction));
        }
        if self.hnsw.ef_search == 0 {
            return bad("hnsw.ef_search", "must be at least 1".into());
        }
        let fraction = self.usearch.rebuild_deleted_fraction;
        if !(fraction > 0.0 && fraction <= 1.0) {
            return bad("usearch.rebuild_deleted_fraction", format!("must be in (0, 1], got {fraction}"));
        }
        if self.backend == Backend::Usearch && self.usearch.storage == Storage::I8 && self.metric != Metric::Cosine {
            return bad("usearch.storage", "i8 stores unit vectors and needs metric = \"cosine\"".into());
        }
        if self.map_size < (1 << 20) {
            return bad("map_size", format!("must be at least 1 MiB, got {}", self.map_size));
        }
        if self.max_map_size < self.map_size {
            return bad("max_map_size", format!("{} is below map_size {}", self.max_map_size, self.map_size));
        }
        Ok(())
    }
}
