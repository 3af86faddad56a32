//! The feature store: image features computed once per (encoder, data, split,
//! preprocessing) and kept on disk, so that no experiment encodes a data set twice.
//!
//! An entry is a folder under `$RAC_HOME/features/`:
//!
//! | file | content |
//! |---|---|
//! | `features.safetensors` | `features` `[n, d]` f32 and `labels` `[n]` u32 |
//! | `ids.txt` | the item id of each row (IDX index or image path), one per line |
//! | `meta.json` | the key, shapes, timing, and the length and sha256 of both files above |
//!
//! - **Key**: the encoder's fingerprint (weights' sha256, architecture, its preprocessing),
//!   the manifest's fingerprint, the split and the effective preprocessing; the folder's name
//!   ends with 16 hex digits of its hash.
//! - **Atomic**: an entry is written in a temporary sibling folder and renamed into place,
//!   so a run that dies leaves nothing a later run trusts.
//! - **Checked**: a hit is used only if both files have the recorded length and sha256 and
//!   the tensors have the recorded shapes; anything else is re-encoded, with a warning.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::assets::AssetCache;
use crate::data::{Dataset, Preprocess, Split, SplitKind};
use crate::encoders::ImageEncoder;
use crate::encoders::pixels::images_to_pixels;
use crate::error::{Error, Result};
use crate::fsio::{self, CacheOutcome};

/// The version of the entry layout; entries of another version are re-encoded.
pub const FORMAT_VERSION: u32 = 1;

const FEATURES_FILE: &str = "features.safetensors";
const IDS_FILE: &str = "ids.txt";
const META_FILE: &str = "meta.json";

/// What identifies a set of features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureKey {
    /// The encoder's name.
    pub encoder: String,
    /// The encoder's fingerprint.
    pub encoder_fingerprint: String,
    /// The data set's name.
    pub dataset: String,
    /// The manifest's fingerprint for the split ([`crate::data::DataManifest::split_fingerprint`]).
    pub manifest_fingerprint: String,
    /// The split.
    pub split: SplitKind,
    /// The preprocessing the images went through.
    pub preprocess: Preprocess,
}

impl FeatureKey {
    /// The key of `encoder` on one split of `ds`, with the preprocessing
    /// [`ImageEncoder::preprocess_for`] derives from the manifest's.
    pub fn new(encoder: &dyn ImageEncoder, ds: &Dataset, split: SplitKind) -> Self {
        FeatureKey {
            encoder: encoder.name().to_string(),
            encoder_fingerprint: encoder.fingerprint(),
            dataset: ds.name().to_string(),
            manifest_fingerprint: ds.manifest.split_fingerprint(split),
            split,
            preprocess: encoder.preprocess_for(&ds.manifest.preprocess),
        }
    }

    /// 16 hex digits of the hash of the whole key.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("keys serialise");
        fsio::sha256_bytes(&json)[..16].to_string()
    }

    /// The entry's folder name: readable parts, then the hash.
    pub fn dir_name(&self) -> String {
        let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect::<String>();
        format!("{}-{}-{}-{}", clean(&self.dataset), self.split.name(), clean(&self.encoder), self.hash())
    }
}

/// What `meta.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The key.
    pub key: FeatureKey,
    /// Rows.
    pub count: usize,
    /// Feature dimension.
    pub dim: usize,
    /// Length of `features.safetensors` in bytes.
    pub features_bytes: u64,
    /// sha256 of `features.safetensors`.
    pub features_sha256: String,
    /// Length of `ids.txt` in bytes.
    pub ids_bytes: u64,
    /// sha256 of `ids.txt`.
    pub ids_sha256: String,
    /// Wall time of the encoding, in seconds.
    pub encode_seconds: f64,
    /// Images per second of the encoding.
    pub images_per_second: f64,
    /// The `rac-core` version that wrote the entry.
    pub rac_version: String,
}

/// Features of one split: rows in the split's order.
#[derive(Debug, Clone)]
pub struct Features {
    /// `[n, d]` f32.
    pub vectors: Tensor,
    /// The item id of each row ([`Split::item_id`]).
    pub ids: Vec<String>,
    /// The class of each row.
    pub labels: Vec<usize>,
    /// The entry's metadata.
    pub meta: FeatureMeta,
}

impl Features {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The feature dimension.
    pub fn dim(&self) -> usize {
        self.meta.dim
    }

    /// The rows `rows`, in that order (`meta` still describes the whole entry).
    pub fn select(&self, rows: &[usize]) -> Result<Features> {
        let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<u32>>(), rows.len(), self.vectors.device())?;
        Ok(Features {
            vectors: self.vectors.index_select(&idx, 0)?,
            ids: rows.iter().map(|&r| self.ids[r].clone()).collect(),
            labels: rows.iter().map(|&r| self.labels[r]).collect(),
            meta: self.meta.clone(),
        })
    }
}

/// What looking an entry up found.
#[derive(Debug)]
pub enum Lookup {
    /// A valid entry (boxed: the other variants are small).
    Hit(Box<Features>),
    /// No entry.
    Absent,
    /// An entry that fails its checks.
    Corrupt(String),
}

/// Progress of an encoding; the CLI shows it as a progress bar. Every method has a no-op
/// default, and `()` implements it for callers that do not care.
pub trait EncodeProgress {
    /// Encoding of `total` images starts; `what` says which.
    fn start(&mut self, _total: usize, _what: &str) {}
    /// `done` images are encoded so far.
    fn advance(&mut self, _done: usize) {}
    /// Encoding is over.
    fn finish(&mut self) {}
    /// Something the user must know (a damaged entry being replaced).
    fn warn(&mut self, _message: &str) {}
}

impl EncodeProgress for () {}

/// Settings of an encoding run.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Images per forward pass.
    pub batch_size: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions { batch_size: 32 }
    }
}

/// The feature store: a folder of entries.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    root: PathBuf,
    device: Device,
}

impl FeatureStore {
    /// A store rooted at `root`, loading features onto the CPU.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FeatureStore { root: root.into(), device: Device::Cpu }
    }

    /// The store inside the asset cache: `$RAC_HOME/features`.
    pub fn in_cache(cache: &AssetCache) -> Self {
        Self::new(cache.home().join("features"))
    }

    /// Load features onto `device` instead of the CPU.
    pub fn with_device(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of an entry.
    pub fn entry_dir(&self, key: &FeatureKey) -> PathBuf {
        self.root.join(key.dir_name())
    }

    /// Look an entry up, checking lengths, checksums and shapes.
    pub fn lookup(&self, key: &FeatureKey) -> Result<Lookup> {
        let dir = self.entry_dir(key);
        if !dir.exists() {
            return Ok(Lookup::Absent);
        }
        match self.read_entry(&dir, key) {
            Ok(f) => Ok(Lookup::Hit(Box::new(f))),
            Err(reason) => Ok(Lookup::Corrupt(reason)),
        }
    }

    fn read_entry(&self, dir: &Path, key: &FeatureKey) -> std::result::Result<Features, String> {
        let meta_path = dir.join(META_FILE);
        let meta_text = std::fs::read_to_string(&meta_path).map_err(|e| format!("{}: {e}", meta_path.display()))?;
        let meta: FeatureMeta = serde_json::from_str(&meta_text).map_err(|e| format!("{}: {e}", meta_path.display()))?;
        if meta.format_version != FORMAT_VERSION {
            return Err(format!("{}: format version {} (expected {FORMAT_VERSION})", meta_path.display(), meta.format_version));
        }
        if &meta.key != key {
            return Err(format!("{}: the recorded key differs from the requested one", meta_path.display()));
        }
        let check = |name: &str, bytes: u64, sha: &str| -> std::result::Result<Vec<u8>, String> {
            let path = dir.join(name);
            let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if data.len() as u64 != bytes {
                return Err(format!("{}: {} bytes, expected {bytes} (truncated?)", path.display(), data.len()));
            }
            let actual = fsio::sha256_bytes(&data);
            if actual != sha {
                return Err(format!("{}: sha256 {actual}, expected {sha}", path.display()));
            }
            Ok(data)
        };
        let fbytes = check(FEATURES_FILE, meta.features_bytes, &meta.features_sha256)?;
        let ibytes = check(IDS_FILE, meta.ids_bytes, &meta.ids_sha256)?;
        let tensors = candle_core::safetensors::load_buffer(&fbytes, &self.device).map_err(|e| format!("{FEATURES_FILE}: {e}"))?;
        let vectors = tensors.get("features").ok_or("no `features` tensor")?.clone();
        let labels_t = tensors.get("labels").ok_or("no `labels` tensor")?;
        if vectors.dims() != [meta.count, meta.dim] || vectors.dtype() != DType::F32 {
            return Err(format!("`features` is {:?} {:?}, expected [{}, {}] f32", vectors.dims(), vectors.dtype(), meta.count, meta.dim));
        }
        let labels: Vec<usize> = labels_t.to_vec1::<u32>().map_err(|e| format!("`labels`: {e}"))?.into_iter().map(|l| l as usize).collect();
        let ids_text = String::from_utf8(ibytes).map_err(|e| format!("{IDS_FILE}: {e}"))?;
        let ids: Vec<String> = ids_text.lines().map(String::from).collect();
        if labels.len() != meta.count || ids.len() != meta.count {
            return Err(format!("{} labels and {} ids for {} rows", labels.len(), ids.len(), meta.count));
        }
        Ok(Features { vectors, ids, labels, meta })
    }

    /// The features of one split: read from the store when a valid entry exists, else
    /// encoded (in batches, reporting to `progress`) and stored. A damaged entry is
    /// re-encoded with a warning, never used.
    pub fn get_or_encode(
        &self,
        ds: &Dataset,
        split: SplitKind,
        encoder: &dyn ImageEncoder,
        options: &EncodeOptions,
        progress: &mut dyn EncodeProgress,
    ) -> Result<(Features, CacheOutcome)> {
        let data =
            ds.split(split).ok_or_else(|| Error::MissingSplit { dataset: ds.name().to_string(), split: split.name().to_string(), hint: None })?;
        let key = FeatureKey::new(encoder, ds, split);
        let outcome = match self.lookup(&key)? {
            Lookup::Hit(f) if f.labels == data.labels => return Ok((*f, CacheOutcome::Hit)),
            Lookup::Hit(_) => CacheOutcome::Recomputed { reason: "its labels differ from the data set's".into() },
            Lookup::Absent => CacheOutcome::Computed,
            Lookup::Corrupt(reason) => CacheOutcome::Recomputed { reason },
        };
        if let CacheOutcome::Recomputed { reason } = &outcome {
            progress.warn(&format!("feature store entry {} is damaged ({reason}); encoding it again", self.entry_dir(&key).display()));
        }
        // Minutes of encoding must not end in "cannot write": try the store's folder first.
        self.check_writable(&key)?;
        let what = format!("{} {} with {}", ds.name(), split.name(), encoder.name());
        let start = Instant::now();
        let vectors = encode_split(data, encoder, &key.preprocess, options, progress, &what)?;
        let seconds = start.elapsed().as_secs_f64();
        let ids: Vec<String> = (0..data.len()).map(|i| data.item_id(i)).collect();
        let meta = self.write(&key, &vectors, &ids, &data.labels, seconds)?;
        Ok((Features { vectors, ids, labels: data.labels.clone(), meta }, outcome))
    }

    /// Whether an entry for `key` can be written: its folder's parent is made, and a probe
    /// file created and removed in it.
    fn check_writable(&self, key: &FeatureKey) -> Result<()> {
        let dir = self.entry_dir(key);
        let parent = dir.parent().expect("entries live in a folder");
        fsio::create_dir_all(parent)?;
        let probe = fsio::temp_sibling(&dir);
        std::fs::write(&probe, b"").map_err(|e| Error::Io { op: "writing into the feature store at", path: parent.to_path_buf(), cause: e })?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    fn write(&self, key: &FeatureKey, vectors: &Tensor, ids: &[String], labels: &[usize], seconds: f64) -> Result<FeatureMeta> {
        let (count, dim) = vectors.dims2()?;
        if ids.iter().any(|id| id.contains('\n')) {
            return Err(Error::Internal("an item id contains a line break, which ids.txt cannot hold (split lists are read line by line)".into()));
        }
        let dir = self.entry_dir(key);
        let tmp = fsio::temp_sibling(&dir);
        let _ = std::fs::remove_dir_all(&tmp);
        fsio::create_dir_all(&tmp)?;
        let result = (|| -> Result<FeatureMeta> {
            let fpath = tmp.join(FEATURES_FILE);
            let labels_t = Tensor::from_vec(labels.iter().map(|&l| l as u32).collect::<Vec<u32>>(), count, &Device::Cpu)?;
            let tensors: std::collections::HashMap<&str, Tensor> =
                [("features", vectors.to_device(&Device::Cpu)?), ("labels", labels_t)].into_iter().collect();
            candle_core::safetensors::save(&tensors, &fpath)?;
            let fbytes = fsio::read(&fpath, "features file")?;
            let mut ids_text = ids.join("\n");
            if !ids.is_empty() {
                ids_text.push('\n');
            }
            fsio::write_atomic(&tmp.join(IDS_FILE), ids_text.as_bytes())?;
            let meta = FeatureMeta {
                format_version: FORMAT_VERSION,
                key: key.clone(),
                count,
                dim,
                features_bytes: fbytes.len() as u64,
                features_sha256: fsio::sha256_bytes(&fbytes),
                ids_bytes: ids_text.len() as u64,
                ids_sha256: fsio::sha256_bytes(ids_text.as_bytes()),
                encode_seconds: seconds,
                images_per_second: if seconds > 0.0 { count as f64 / seconds } else { 0.0 },
                rac_version: env!("CARGO_PKG_VERSION").to_string(),
            };
            let json = serde_json::to_vec_pretty(&meta).expect("meta serialises");
            fsio::write_atomic(&tmp.join(META_FILE), &json)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| Error::Io { op: "removing damaged entry", path: dir.clone(), cause: e })?;
            }
            std::fs::rename(&tmp, &dir).map_err(|e| Error::Io { op: "renaming into place", path: dir.clone(), cause: e })?;
            Ok(meta)
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }
}

/// Encode every image of a split in batches: images are decoded and preprocessed in
/// parallel (rayon), then encoded; returns `[n, d]` on the CPU.
pub fn encode_split(
    split: &Split,
    encoder: &dyn ImageEncoder,
    pre: &Preprocess,
    options: &EncodeOptions,
    progress: &mut dyn EncodeProgress,
    what: &str,
) -> Result<Tensor> {
    let n = split.len();
    if n == 0 {
        return Err(Error::Empty { what: format!("{what}: the split"), hint: "check the data set's split list".into() });
    }
    let batch = options.batch_size.max(1);
    progress.start(n, what);
    let mut rows: Vec<f32> = Vec::with_capacity(n * encoder.dim());
    let mut done = 0;
    while done < n {
        let end = (done + batch).min(n);
        let images = (done..end).into_par_iter().map(|i| split.image(i)).collect::<Result<Vec<_>>>()?;
        let pixels = images_to_pixels(&images, pre, encoder.device())?;
        let out = encoder.forward(&pixels)?.to_device(&Device::Cpu)?.to_dtype(DType::F32)?;
        rows.extend(out.flatten_all()?.to_vec1::<f32>()?);
        done = end;
        progress.advance(done);
    }
    progress.finish();
    let dim = rows.len() / n;
    Ok(Tensor::from_vec(rows, (n, dim), &Device::Cpu)?)
}

/// Features of one split in one call, from a manifest and an encoder spec string
/// (`efficientnet-lite0`, `vit:DIR`, …): the data set and the encoder are loaded, then the
/// store in the asset cache answers, encoding on a miss. For notebooks and later stages.
pub fn features_of(cache: &AssetCache, manifest: &Path, encoder: &str, split: SplitKind) -> Result<Features> {
    let ds = Dataset::load(manifest, &crate::data::DataOverrides::from_env(), cache)?;
    let encoder = crate::encoders::ImageEncoderSpec::parse(encoder)?.load(cache, &Device::Cpu)?;
    let (features, _) = FeatureStore::in_cache(cache).get_or_encode(&ds, split, encoder.as_ref(), &EncodeOptions::default(), &mut ())?;
    Ok(features)
}
