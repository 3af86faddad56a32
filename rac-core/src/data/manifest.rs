//! Data manifests: TOML files in `data-manifests/` that describe a data set.
//!
//! A manifest has exactly one source table, `[idx]` (IDX files from the asset cache, as
//! Fashion-MNIST ships) or `[split_list]` (the `path label` lists of Places365-LT,
//! ImageNet-LT and iNaturalist), plus `[classes]`, an optional `[long_tail]` profile applied
//! to the training split, an optional balanced `[test_subset]`, an optional `[external]`
//! split (data the model never trains on, for the index: the paper's external memory) and
//! an optional `[preprocess]` description.
//! Unknown keys are rejected, with the key and its line named. The full schema is
//! documented in `data-manifests/README.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsio;

pub use super::preprocess::Preprocess;

/// A parsed data manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataManifest {
    /// The data set's name.
    pub name: String,
    /// A sentence about it.
    #[serde(default)]
    pub description: String,
    /// IDX source (Fashion-MNIST).
    #[serde(default)]
    pub idx: Option<IdxSource>,
    /// Split-list source (Places365-LT, ImageNet-LT, iNaturalist, your own).
    #[serde(default)]
    pub split_list: Option<SplitListSource>,
    /// Class ids and texts.
    pub classes: ClassesSpec,
    /// An optional long-tail profile applied to the training split.
    #[serde(default)]
    pub long_tail: Option<LongTailSpec>,
    /// An optional balanced subset of the test split, for quick runs. Left out of the
    /// serialised form when absent, so the fingerprints (and caches) of manifests without
    /// it stay as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_subset: Option<TestSubsetSpec>,
    /// An optional external split: labelled images that are never trained on, for an index
    /// that holds data outside the training set (the paper's Fig 5, and memory added at run
    /// time). Left out of [`DataManifest::fingerprint`]: the other splits do not depend on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
    /// How images are turned into tensors (encoders may override the size).
    #[serde(default)]
    pub preprocess: Preprocess,
}

/// IDX files inside an asset of the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxSource {
    /// The asset folder holding the files (see `rac assets status`).
    pub asset: String,
    /// Training images file.
    pub train_images: String,
    /// Training labels file.
    pub train_labels: String,
    /// Test images file.
    pub test_images: String,
    /// Test labels file.
    pub test_labels: String,
}

/// One split file and its checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitFile {
    /// The file name, relative to the split folder.
    pub file: String,
    /// Its sha256; when given, a file that differs is rejected.
    #[serde(default)]
    pub sha256: Option<String>,
}

/// Split lists with an image root.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitListSource {
    /// The folder of the split files. Overridden by `--split-dir` / `RAC_SPLIT_DIR`;
    /// a relative path is taken from the manifest's folder.
    #[serde(default)]
    pub split_dir: Option<PathBuf>,
    /// The folder the image paths are relative to. Overridden by `--image-root` /
    /// `RAC_IMAGE_ROOT`; only needed to read images, not for statistics.
    #[serde(default)]
    pub image_root: Option<PathBuf>,
    /// The training split.
    pub train: SplitFile,
    /// An optional validation split.
    #[serde(default)]
    pub val: Option<SplitFile>,
    /// The test split.
    pub test: SplitFile,
}

/// Where class texts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassTextSource {
    /// The `texts` list of the manifest.
    List,
    /// A component of each image path (`train/airfield/x.jpg` → `airfield`).
    PathComponent,
    /// A text file with one class name per line, in class-id order.
    NamesFile,
    /// An iNaturalist-style `categories.json` (a list of `{id, name}` objects).
    CategoriesJson,
    /// The class id itself (`"class 17"`).
    Ids,
}

/// Class ids and their texts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassesSpec {
    /// The number of classes. Labels must lie in `0..count`, and every class must have a
    /// training image. When absent, it is one more than the largest training label.
    #[serde(default)]
    pub count: Option<usize>,
    /// Where class texts come from.
    #[serde(default = "default_text_source")]
    pub text_from: ClassTextSource,
    /// The class texts, for `text_from = "list"`.
    #[serde(default)]
    pub texts: Vec<String>,
    /// The 0-based path component, for `text_from = "path_component"`.
    #[serde(default = "default_component")]
    pub path_component: usize,
    /// The names or categories file, for `names_file` and `categories_json`; relative paths
    /// are taken from the split folder. A missing file falls back to class ids.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

fn default_text_source() -> ClassTextSource {
    ClassTextSource::List
}
fn default_component() -> usize {
    1
}

/// The long-tail profile applied to a (balanced) training split.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongTailSpec {
    /// The profile: only `exponential` (`n_i = max · IF^(−i/(C−1))`).
    #[serde(default = "default_profile")]
    pub profile: String,
    /// Images kept for the largest class.
    pub max_per_class: usize,
    /// The ratio of the largest to the smallest class.
    pub imbalance_factor: f64,
    /// The seed of the choice of images.
    #[serde(default)]
    pub seed: u64,
}

/// A balanced subset of the test split: at most `per_class` images of each class, chosen
/// with a seeded RNG (as `[long_tail]` chooses training images).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSubsetSpec {
    /// Test images kept per class (a class with fewer keeps all of its own).
    pub per_class: usize,
    /// The seed of the choice of images.
    #[serde(default)]
    pub seed: u64,
}

/// Where the external split's images come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExternalFrom {
    /// The training images the `[long_tail]` profile leaves out: real, labelled, never
    /// trained on, and skewed the other way (Fashion-MNIST-LT keeps 10,011 of 60,000).
    LongTailRest,
    /// A `path label` split list in the split folder (`[split_list]` data sets), with the
    /// data set's labels: ImageNet-21k images for Places365-LT, say.
    File,
}

/// The external split: labelled images outside the training set, for the index only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSpec {
    /// `long_tail_rest` or `file`.
    pub from: ExternalFrom,
    /// The split list, for `from = "file"`: a name in the split folder and its sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<SplitFile>,
    /// Keep at most this many images of each class (a seeded choice), for quick runs; 0
    /// keeps them all.
    #[serde(default)]
    pub max_per_class: usize,
    /// The seed of that choice.
    #[serde(default)]
    pub seed: u64,
}

fn default_profile() -> String {
    "exponential".into()
}

/// Paths given on the command line or in the environment, which win over the manifest's.
#[derive(Debug, Clone, Default)]
pub struct DataOverrides {
    /// `--split-dir` / `RAC_SPLIT_DIR`.
    pub split_dir: Option<PathBuf>,
    /// `--image-root` / `RAC_IMAGE_ROOT`.
    pub image_root: Option<PathBuf>,
}

impl DataOverrides {
    /// The overrides set in `RAC_SPLIT_DIR` and `RAC_IMAGE_ROOT`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        DataOverrides { split_dir: var("RAC_SPLIT_DIR"), image_root: var("RAC_IMAGE_ROOT") }
    }
}

impl DataManifest {
    /// Read, parse and validate a manifest file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = fsio::read_to_string(path, "data manifest")
            .map_err(|e| e.with_hint("a relative path starts at the working folder; `data-manifests/` holds the packaged ones"))?;
        Self::parse(path, &text)
    }

    /// Parse and validate manifest text; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let manifest: DataManifest = toml::from_str(text).map_err(|e| Error::Config { path: path.into(), message: e.to_string() })?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let field = |field: &str, message: String| Error::InvalidField { path: path.into(), field: field.into(), message };
        match (&self.idx, &self.split_list) {
            (Some(_), Some(_)) => return Err(field("idx", "give one source table, `[idx]` or `[split_list]`, not both".into())),
            (None, None) => return Err(field("split_list", "a source table is required: `[idx]` or `[split_list]`".into())),
            _ => {}
        }
        // Every split file's recorded sha256, the external split's included, is well formed.
        let mut files: Vec<(&str, &SplitFile)> = Vec::new();
        if let Some(src) = &self.split_list {
            files.extend(
                [("split_list.train", Some(&src.train)), ("split_list.val", src.val.as_ref()), ("split_list.test", Some(&src.test))]
                    .into_iter()
                    .filter_map(|(n, f)| f.map(|f| (n, f))),
            );
        }
        if let Some(f) = self.external.as_ref().filter(|x| x.from == ExternalFrom::File).and_then(|x| x.file.as_ref()) {
            files.push(("external.file", f));
        }
        for (name, f) in files {
            if let Some(sha) = &f.sha256
                && !(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(field(&format!("{name}.sha256"), format!("`{sha}` is not a sha256 (64 hex digits)")));
            }
        }
        let c = &self.classes;
        if c.count == Some(0) {
            return Err(field("classes.count", "must be at least 1".into()));
        }
        if c.text_from == ClassTextSource::List {
            if c.texts.is_empty() {
                return Err(field("classes.texts", "`text_from = \"list\"` needs the class texts".into()));
            }
            if let Some(n) = c.count
                && c.texts.len() != n
            {
                return Err(field("classes.texts", format!("has {} texts but `classes.count` is {n}; give one text per class", c.texts.len())));
            }
        }
        if let Some(lt) = &self.long_tail {
            if lt.profile != "exponential" {
                return Err(field("long_tail.profile", format!("unknown profile `{}`; the only one is `exponential`", lt.profile)));
            }
            if !(lt.imbalance_factor >= 1.0 && lt.imbalance_factor.is_finite()) {
                return Err(field("long_tail.imbalance_factor", format!("must be a finite number of at least 1, found {}", lt.imbalance_factor)));
            }
            // The rarest class keeps floor(max_per_class / IF) images: at least one.
            if lt.imbalance_factor > lt.max_per_class as f64 {
                return Err(field(
                    "long_tail.imbalance_factor",
                    format!(
                        "{} leaves the rarest class no training image: it keeps max_per_class / imbalance_factor = {} / {} images (use at most {})",
                        lt.imbalance_factor, lt.max_per_class, lt.imbalance_factor, lt.max_per_class
                    ),
                ));
            }
            if lt.max_per_class == 0 {
                return Err(field("long_tail.max_per_class", "must be at least 1".into()));
            }
        }
        if let Some(x) = &self.external {
            match (x.from, &x.file) {
                (ExternalFrom::LongTailRest, Some(_)) => {
                    return Err(field("external.file", "is for `from = \"file\"`; `long_tail_rest` takes the images the profile leaves out".into()));
                }
                (ExternalFrom::LongTailRest, None) if self.long_tail.is_none() => {
                    return Err(field("external.from", "`long_tail_rest` needs a `[long_tail]` profile, whose left-out images it holds".into()));
                }
                (ExternalFrom::File, None) => return Err(field("external.file", "`from = \"file\"` needs `file = { file = \"...\" }`".into())),
                (ExternalFrom::File, Some(_)) if self.split_list.is_none() => {
                    return Err(field("external.from", "`file` reads a split list, so it needs a `[split_list]` data set".into()));
                }
                _ => {}
            }
        }
        if let Some(t) = &self.test_subset
            && t.per_class == 0
        {
            return Err(field("test_subset.per_class", "must be at least 1".into()));
        }
        let p = &self.preprocess;
        if p.crop == 0 || p.resize == 0 || p.crop > p.resize {
            return Err(field("preprocess.crop", format!("need 0 < crop ({}) <= resize ({})", p.crop, p.resize)));
        }
        if p.std.iter().any(|&s| !(s > 0.0)) {
            return Err(field("preprocess.std", "every channel's std must be positive".into()));
        }
        Ok(())
    }

    /// A stable fingerprint of what the manifest describes (its parsed content, without the
    /// `[external]` section, which no other split depends on), used to key caches of
    /// features computed from it.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(&DataManifest { external: None, ..self.clone() }).expect("manifests serialise");
        fsio::sha256_bytes(&json)[..16].to_string()
    }

    /// The fingerprint of what one split's images depend on: [`Self::fingerprint`], and for
    /// the external split its `[external]` section too.
    pub fn split_fingerprint(&self, split: super::SplitKind) -> String {
        match (&self.external, split) {
            (Some(x), super::SplitKind::External) => {
                let json = serde_json::to_vec(&(self.fingerprint(), x)).expect("manifests serialise");
                fsio::sha256_bytes(&json)[..16].to_string()
            }
            _ => self.fingerprint(),
        }
    }
}
