//! An index's sources: whole data sets put in and taken out as one (their vectors with,
//! per item, a key, a text and a label), checked when they are made.

use std::path::Path;

use candle_core::{DType, Tensor};

use super::config::Metric;
use crate::error::{Error, Result};
use crate::features::FeatureFile;
use crate::vectors::{check_rows, f32_to_bytes};

/// The id of an item in an index; ids are handed out in order and never reused.
pub type ItemId = u32;

/// A whole data source to put in an index: its vectors with, per item, a key, a text and a label.
#[derive(Debug, Clone)]
pub struct Source {
    pub(super) name: String,
    pub(super) dim: usize,
    pub(super) vectors: Vec<f32>,
    pub(super) keys: Vec<String>,
    pub(super) texts: Vec<String>,
    pub(super) labels: Vec<u32>,
}

impl Source {
    /// A source from an `[n, d]` feature tensor, with one text and one label per row. Item
    /// keys default to `name/row`.
    pub fn new(name: impl Into<String>, features: &Tensor, texts: Vec<String>, labels: Vec<u32>) -> Result<Self> {
        let name = name.into();
        let (n, dim) = features.dims2().map_err(|_| Error::Shape {
            what: format!("source `{name}`: its features"),
            expected: "a [n, d] matrix".into(),
            found: format!("shape {:?}", features.dims()),
        })?;
        let vectors = features.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        debug_assert_eq!(vectors.len(), n * dim);
        Self::from_vecs(name, vectors, dim, texts, labels)
    }

    /// A source from row-major vectors of dimension `dim`.
    pub fn from_vecs(name: impl Into<String>, vectors: Vec<f32>, dim: usize, texts: Vec<String>, labels: Vec<u32>) -> Result<Self> {
        let name = name.into();
        let bad = |message: String| Err(Error::InvalidSource { name: name.clone(), message });
        if name.is_empty() || name.len() > 200 {
            return bad("the name must have 1 to 200 bytes; choose a shorter one".into());
        }
        if dim == 0 || vectors.is_empty() || !vectors.len().is_multiple_of(dim) {
            return bad(format!("{} values do not form rows of dimension {dim}; give n x {dim} values, row after row", vectors.len()));
        }
        let n = vectors.len() / dim;
        if texts.len() != n || labels.len() != n {
            return bad(format!("{n} vectors but {} texts and {} labels; give one text and one label per vector", texts.len(), labels.len()));
        }
        // Finite values only; a zero row is the metric's question, asked when it is stored.
        if let Err(row) = check_rows(&vectors, dim, crate::vectors::Compare::Any) {
            return Err(Error::BadVector { what: format!("source `{name}`"), problem: row.describe() });
        }
        let keys = (0..n).map(|i| format!("{name}/{i}")).collect();
        Ok(Source { name, dim, vectors, keys, texts, labels })
    }

    /// Replace the default item keys (one per row).
    pub fn with_keys(mut self, keys: Vec<String>) -> Result<Self> {
        if keys.len() != self.len() {
            return Err(Error::InvalidSource {
                name: self.name.clone(),
                message: format!("{} rows but {} keys; give one key per row", self.len(), keys.len()),
            });
        }
        self.keys = keys;
        Ok(self)
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether it has no items (never true: construction refuses that).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The vectors' dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The row-major vectors.
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// The labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    pub(super) fn content_sha256(&self) -> String {
        let mut bytes: Vec<u8> = Vec::with_capacity(self.vectors.len() * 4 + self.len() * 16);
        bytes.extend(f32_to_bytes(&self.vectors));
        bytes.extend(self.labels.iter().flat_map(|x| x.to_le_bytes()));
        for s in self.texts.iter().chain(&self.keys) {
            bytes.extend((s.len() as u64).to_le_bytes());
            bytes.extend(s.as_bytes());
        }
        crate::fsio::sha256_bytes(&bytes)
    }
}

/// A feature file as an index source, checked against an index's metric and dimension.
impl FeatureFile {
    /// Whether its rows can be searched with or stored under `metric` (none all zeros under
    /// cosine; finiteness is checked when it is read), and are of dimension `dim`; errors
    /// name the file `path` it came from.
    pub fn check_for(&self, path: &Path, metric: Metric, dim: usize) -> Result<()> {
        let tensor_err = |message: String| Error::Tensor { path: path.to_path_buf(), name: "features".into(), message };
        if self.dim != dim {
            return Err(tensor_err(format!("vectors of dimension {}, where {dim} are needed", self.dim)));
        }
        check_rows(&self.vectors, self.dim, metric.compare()).map_err(|bad| tensor_err(bad.describe()))
    }

    /// As an index source named `name`.
    pub fn to_source(&self, name: &str) -> Result<Source> {
        let s = Source::from_vecs(name, self.vectors.clone(), self.dim, self.texts(), self.labels.clone())?;
        match &self.keys {
            Some(k) => s.with_keys(k.clone()),
            None => Ok(s),
        }
    }
}
