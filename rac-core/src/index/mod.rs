//! The retrieval index: RAC's non-parametric memory (DESIGN.md §4).
//!
//! | module | job |
//! |---|---|
//! | [`config`] | backends (arroy, HNSW, exact), metrics and their knobs |
//! | `lmdb_file` | the LMDB data file read by hand before LMDB maps it: meta pages, every tree's pages |
//! | `store` | the LMDB environment, its records, transactional writes, map growth |
//! | `backend` | arroy and hannoy's HNSW behind one reader/rebuild interface |
//! | `graph` | usearch's HNSW: the in-memory graph, its checksummed generation files |
//! | `exact` | brute force as a candle matrix product (the ground truth) |
//! | [`retrieval`] | [`RetrievalIndex`]: build, add/remove sources, stats, query |
//! | [`verify`] | read back every source and the graph file against the checksums their commits recorded |
//! | [`neighbours`] | [`NeighbourCache`]: neighbour lists stored per (index fingerprint, k_max) |
//! | [`knn_eval`] | retrieval-only classification (1-NN, majority, weighted vote; Table 4), exact 1-NN of two feature sets |
//! | [`features`] | feature files (safetensors) an index is built from |
//! | [`synthetic`] | the clustered synthetic set for recall and speed checks |
//! | [`npy`] | `.npy` exchange with the FAISS comparison |
//! | [`bench`] | build time, size, recall@k against exact, latency and throughput per backend |
//!
//! ```no_run
//! use rac_core::index::{IndexConfig, QueryOptions, RetrievalIndex, Source};
//! # fn main() -> rac_core::Result<()> {
//! let dim = 4;
//! let vectors = vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0];
//! let texts = vec!["cat".to_string(), "dog".to_string(), "owl".to_string()];
//! let source = Source::from_vecs("animals", vectors, dim, texts, vec![0, 1, 2])?;
//! let index = RetrievalIndex::build("my-index".as_ref(), &IndexConfig::default(), &[source])?;
//! let hits = index.query_vecs(&[0.9, 0.1, 0.0, 0.0], dim, &QueryOptions::k(2))?;
//! assert_eq!(hits[0].texts[0], "cat");
//! # Ok(()) }
//! ```

pub mod bench;
pub mod config;
pub mod features;
pub mod knn_eval;
pub mod neighbours;
pub mod npy;
pub mod retrieval;
pub mod synthetic;
pub mod verify;

mod backend;
mod exact;
mod graph;
mod lmdb_file;
mod store;

pub use crate::fsio::CacheOutcome;
pub use config::{ArroyParams, Backend, HNSW_M, HnswParams, IndexConfig, Metric, Storage, UsearchParams};
pub use exact::ExactMatrix;
pub use features::FeatureFile;
pub use knn_eval::{KnnReport, VoteRule, one_nn_accuracy, retrieval_only_table};
pub use neighbours::{CacheEntry, CacheQuery, NeighbourCache, NeighbourLists, QuerySet};
pub use retrieval::{IndexStats, ItemId, Neighbours, QueryOptions, RetrievalIndex, Source, SourceStats};
pub use store::{FORMAT_VERSION, Failpoint, ItemRecord, SourceRecord};
pub use verify::{SourceCheck, SourceStatus, VerifyReport, verify};
