//! The retrieval index: RAC's non-parametric memory (DESIGN.md §4).
//!
//! | module | job |
//! |---|---|
//! | [`config`] | backends (arroy, HNSW, exact), metrics and their knobs |
//! | `lmdb_file` | the LMDB data file read by hand before LMDB maps it: meta pages, every tree's pages |
//! | `environment` | opening an index folder's LMDB environment (read-write or read-only, once per process, its file checked first) |
//! | `schema` | the databases (each listed once), the records kept in them, the content fingerprint |
//! | `lmdb_errors` | storage errors in words, naming the folder and operation; a full map, a full disk, a damaged page |
//! | `store` | the one write path: a transaction that commits all or nothing, grows the map, retries |
//! | `internals` | failpoints, for crash-safety tests only |
//! | `backend` | arroy and hannoy's HNSW behind one reader/rebuild interface |
//! | `graph` | usearch's HNSW: the in-memory graph, its checksummed generation files |
//! | `exact` | brute force as a candle matrix product (the ground truth) |
//! | `handle` | [`RetrievalIndex`], the handle of an open index: its store, its loaded graph, what it says of itself |
//! | [`retrieval`] | create, build, open, add / remove sources, stats, items and their stored vectors |
//! | `source` | [`Source`]: a whole data set put in or taken out as one, checked when made |
//! | `stats` | [`IndexStats`]: what an index holds, and its report |
//! | `search` | the one search entry point, [`RetrievalIndex::search`] (a [`SearchRequest`] over [`Queries`]); hits resolved to labels and texts |
//! | `changes` | a change of items in one LMDB transaction, the graph's next generation saved before it commits |
//! | `generations` | the usearch graph file of the committed generation loaded and checked at open, or rebuilt from LMDB |
//! | [`verify`] | read back every source and the graph file against the checksums their commits recorded |
//! | [`request`] | [`SearchRequest`] (k, k_max, drop_self; the k_max rule) and [`Queries`], what [`RetrievalIndex::search`] takes |
//! | [`neighbours`] | [`NeighbourCache`]: neighbour lists stored per (index fingerprint, k_max) |
//!
//! What reads an index lives with the stages that use it: retrieval-only evaluation in
//! [`crate::knn`], the backend benchmark in [`crate::bench`], feature files in
//! [`crate::features::file`], `.npy` exchange and the synthetic set in [`crate::data`].
//!
//! ```no_run
//! use rac_core::index::{IndexConfig, Queries, RetrievalIndex, SearchRequest, Source};
//! # fn main() -> rac_core::Result<()> {
//! let dim = 4;
//! let vectors = vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
//! let texts = vec!["cat".to_string(), "dog".to_string(), "owl".to_string()];
//! let source = Source::from_vecs("animals", vectors, dim, texts, vec![0, 1, 2])?;
//! let index = RetrievalIndex::build("my-index".as_ref(), &IndexConfig::default(), &[source])?;
//! let hits = index.neighbours(&Queries::vectors(&[0.9, 0.1, 0.0, 0.0], dim), &SearchRequest::top(2)?)?;
//! assert_eq!(hits[0].texts[0], "cat");
//! # Ok(()) }
//! ```

pub mod config;
pub mod neighbours;
pub mod request;
pub mod retrieval;
pub mod verify;

mod backend;
mod changes;
mod environment;
mod exact;
mod generations;
mod graph;
mod handle;
#[doc(hidden)]
pub mod internals;
mod lmdb_errors;
mod lmdb_file;
mod schema;
mod search;
mod source;
mod stats;
mod store;

pub use crate::fsio::CacheOutcome;
pub use config::{ArroyParams, Backend, HNSW_M, HnswParams, IndexConfig, Metric, Storage, UsearchParams};
pub use exact::ExactMatrix;
pub use handle::RetrievalIndex;
pub use neighbours::{CacheEntry, NeighbourCache, NeighbourLists, QuerySet};
pub use request::{DEFAULT_K_MAX, Queries, SearchRequest, k_max_for};
pub use schema::{FORMAT_VERSION, ItemRecord, SourceRecord};
pub use search::Neighbours;
pub use source::{ItemId, Source};
pub use stats::{IndexStats, SourceStats};
pub use verify::{SourceCheck, SourceStatus, VerifyReport, verify};
