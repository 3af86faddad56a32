//! Feature files an index is built from: safetensors with a `features` tensor `[n, d]`
//! (any float type), a `labels` tensor `[n]` (any integer type), and optional metadata
//! `class_texts` (a JSON list: the text of each label) and `keys` (a JSON list: one key per
//! row). This is the hand-over point from the feature store, whose `features.safetensors`
//! has this shape; an `ids.txt` beside the file (one item id per row) gives the item keys.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Class ids must lie below this: per-class tables are sized by the largest id, and no data
/// set comes near it (ImageNet-21k has 21,841 classes), so a larger one is damage, not data.
pub const MAX_CLASS_ID: u32 = 1 << 24;

/// A feature matrix with labels, read from a safetensors file.
#[derive(Debug, Clone)]
pub struct FeatureFile {
    /// Row-major f32 features, `n x dim`.
    pub vectors: Vec<f32>,
    /// The dimension.
    pub dim: usize,
    /// One label per row.
    pub labels: Vec<u32>,
    /// The text of each label, when the file carries it.
    pub class_texts: Option<Vec<String>>,
    /// One key per row, when the file carries them.
    pub keys: Option<Vec<String>>,
}

impl FeatureFile {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Read a feature file; errors name the file and tensor.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = crate::fsio::read(path, "feature file")?;
        Self::parse(path, &bytes)
    }

    /// Parse the bytes of the feature file at `path` (which names it in errors; an
    /// `ids.txt` beside it gives the keys when the metadata has none).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::Format { path: path.to_path_buf(), message: format!("not a safetensors file: {e}") })?;
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| Error::Format { path: path.to_path_buf(), message: format!("cannot read its tensors: {e}") })?;
        let tensor_err = |name: &str, message: String| Error::Tensor { path: path.to_path_buf(), name: name.into(), message };
        let features = tensors.get("features").ok_or_else(|| tensor_err("features", "missing".into()))?;
        let (n, dim) = features.dims2().map_err(|_| tensor_err("features", format!("expected [n, d], found {:?}", features.dims())))?;
        if !features.dtype().is_float() {
            return Err(tensor_err("features", format!("expected a float type, found {:?}", features.dtype())));
        }
        let vectors = features.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if let Err(bad) = crate::vectors::check_rows(&vectors, dim, crate::vectors::Compare::Any) {
            return Err(tensor_err("features", bad.describe()));
        }
        let labels_t = tensors.get("labels").ok_or_else(|| tensor_err("labels", "missing".into()))?;
        if labels_t.dims() != [n] {
            return Err(tensor_err("labels", format!("expected [{n}] to match `features`, found {:?}", labels_t.dims())));
        }
        if labels_t.dtype().is_float() {
            return Err(tensor_err("labels", format!("expected an integer type, found {:?}", labels_t.dtype())));
        }
        let labels_i64 = labels_t.to_dtype(DType::I64)?.to_vec1::<i64>()?;
        let labels = labels_i64
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                u32::try_from(l)
                    .ok()
                    .filter(|&l| l < MAX_CLASS_ID)
                    .ok_or_else(|| tensor_err("labels", format!("row {i}: label {l} is not a class id (0 to {})", MAX_CLASS_ID - 1)))
            })
            .collect::<Result<Vec<u32>>>()?;
        let list = |key: &str| -> Result<Option<Vec<String>>> {
            match meta.metadata().as_ref().and_then(|m| m.get(key)) {
                None => Ok(None),
                Some(s) => serde_json::from_str(s)
                    .map(Some)
                    .map_err(|e| Error::Format { path: path.to_path_buf(), message: format!("metadata `{key}` is not a JSON list of strings: {e}") }),
            }
        };
        let class_texts = list("class_texts")?;
        let mut keys = list("keys")?;
        // The feature store keeps each row's item id in `ids.txt` beside the tensors.
        let ids_file = path.with_file_name("ids.txt");
        if keys.is_none() && ids_file.is_file() {
            let text = crate::fsio::read_to_string(&ids_file, "item id list")?;
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() != n {
                return Err(Error::Format { path: ids_file, message: format!("{} lines for {n} feature rows", lines.len()) });
            }
            keys = Some(lines);
        }
        if let Some(k) = &keys
            && k.len() != n
        {
            return Err(Error::Format { path: path.to_path_buf(), message: format!("metadata `keys` has {} entries for {n} rows", k.len()) });
        }
        if let Some(t) = &class_texts
            && let Some(l) = labels.iter().find(|&&l| l as usize >= t.len())
        {
            return Err(Error::Format {
                path: path.to_path_buf(),
                message: format!("label {l} has no entry in metadata `class_texts` ({} entries)", t.len()),
            });
        }
        Ok(FeatureFile { vectors, dim, labels, class_texts, keys })
    }

    /// Write a feature file (used by tests and `rac index synth`).
    pub fn write(&self, path: &Path) -> Result<()> {
        let n = self.len();
        let mut meta = HashMap::new();
        if let Some(t) = &self.class_texts {
            meta.insert("class_texts".to_string(), serde_json::to_string(t).expect("strings serialise"));
        }
        if let Some(k) = &self.keys {
            meta.insert("keys".to_string(), serde_json::to_string(k).expect("strings serialise"));
        }
        let fbytes: Vec<u8> = crate::vectors::f32_to_bytes(&self.vectors);
        let lbytes: Vec<u8> = self.labels.iter().flat_map(|x| x.to_le_bytes()).collect();
        let st_err = |e: safetensors::SafeTensorError| Error::Format { path: path.to_path_buf(), message: format!("writing safetensors: {e}") };
        let views = vec![
            ("features", safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, self.dim], &fbytes).map_err(st_err)?),
            ("labels", safetensors::tensor::TensorView::new(safetensors::Dtype::U32, vec![n], &lbytes).map_err(st_err)?),
        ];
        let tmp = crate::fsio::temp_sibling(path);
        if let Some(parent) = path.parent() {
            crate::fsio::create_dir_all(parent)?;
        }
        safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(st_err)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::Io { op: "writing", path: path.to_path_buf(), cause: e })
    }

    /// Set the text of each label from a file of one text per line (label 0 first).
    pub fn set_class_texts_from(&mut self, path: &Path) -> Result<()> {
        let texts: Vec<String> = crate::fsio::read_to_string(path, "class text list")?.lines().map(|l| l.trim().to_string()).collect();
        if let Some(l) = self.labels.iter().find(|&&l| l as usize >= texts.len()) {
            return Err(Error::Format { path: path.to_path_buf(), message: format!("label {l} has no line ({} lines)", texts.len()) });
        }
        self.class_texts = Some(texts);
        Ok(())
    }

    /// The text of each row: its label's class text, or `class <label>` without one.
    pub fn texts(&self) -> Vec<String> {
        self.labels
            .iter()
            .map(|&l| match &self.class_texts {
                Some(t) => t[l as usize].clone(),
                None => format!("class {l}"),
            })
            .collect()
    }
}
