//! A loaded data set: its splits, labels and class texts, resolved from a manifest.
//!
//! Loading reads only labels and split lists; images are decoded on demand with
//! [`Split::image`], so statistics of Places365-LT need no images at all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::DynamicImage;

use super::idx::{IdxArray, read_idx};
use super::longtail::{LongTailStats, exponential_profile, subsample_per_class};
use super::manifest::{ClassTextSource, DataManifest, DataOverrides, ExternalFrom, SplitFile};
use super::split_list::SplitList;
use crate::assets::AssetCache;
use crate::error::{Error, Result};
use crate::fsio;

/// Which split of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SplitKind {
    /// The (long-tailed) training split.
    Train,
    /// The validation split.
    Val,
    /// The balanced test split.
    Test,
    /// Labelled images outside the training set, for the index only (`[external]`).
    External,
}

impl SplitKind {
    /// `train`, `val` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            SplitKind::Train => "train",
            SplitKind::Val => "val",
            SplitKind::Test => "test",
            SplitKind::External => "external",
        }
    }

    /// The split of a name (`train`, `val`, `test`, `external`).
    pub fn parse(name: &str) -> Option<Self> {
        [SplitKind::Train, SplitKind::Val, SplitKind::Test, SplitKind::External].into_iter().find(|k| k.name() == name)
    }
}

#[derive(Debug, Clone)]
enum Images {
    Idx { file: PathBuf, array: Arc<IdxArray>, indices: Vec<usize> },
    Files { list: SplitList, root: Option<PathBuf> },
    Memory(Arc<Vec<DynamicImage>>),
}

/// One split: its labels and a way to read each image.
#[derive(Debug, Clone)]
pub struct Split {
    /// Which split.
    pub kind: SplitKind,
    /// The class id of each item.
    pub labels: Vec<usize>,
    images: Images,
}

impl Split {
    /// The number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A stable id of item `i`: its index in the IDX file, or its relative path.
    pub fn item_id(&self, i: usize) -> String {
        match &self.images {
            Images::Idx { indices, .. } => indices[i].to_string(),
            Images::Files { list, .. } => list.entries[i].path.clone(),
            Images::Memory(_) => i.to_string(),
        }
    }

    /// For IDX splits, the index of item `i` in the IDX file.
    pub fn idx_index(&self, i: usize) -> Option<usize> {
        match &self.images {
            Images::Idx { indices, .. } => Some(indices[i]),
            Images::Files { .. } | Images::Memory(_) => None,
        }
    }

    /// Decode image `i`.
    pub fn image(&self, i: usize) -> Result<DynamicImage> {
        if i >= self.len() {
            return Err(Error::OutOfRange { what: format!("item of the {} split", self.kind.name()), index: i, len: self.len() });
        }
        match &self.images {
            Images::Idx { file, array, indices } => {
                let (h, w) = (array.dims[1] as u32, array.dims[2] as u32);
                let buf = image::GrayImage::from_raw(w, h, array.item(indices[i]).to_vec()).ok_or_else(|| Error::Image {
                    path: file.clone(),
                    origin: Some(format!("item {}", indices[i])),
                    message: "pixel buffer does not match the image size".into(),
                })?;
                Ok(DynamicImage::ImageLuma8(buf))
            }
            Images::Files { list, root } => {
                let entry = &list.entries[i];
                let root = root.as_ref().ok_or_else(|| Error::Setting {
                    field: "split_list.image_root".into(),
                    message: "the image root is not set: pass --image-root DIR, set RAC_IMAGE_ROOT, or set it in the manifest".into(),
                })?;
                let path = root.join(&entry.path);
                let origin = Some(list.origin(entry));
                let bytes = std::fs::read(&path).map_err(|e| Error::Image { path: path.clone(), origin: origin.clone(), message: e.to_string() })?;
                image::load_from_memory(&bytes).map_err(|e| Error::Image { path, origin, message: e.to_string() })
            }
            Images::Memory(images) => Ok(images[i].clone()),
        }
    }

    /// A split of images held in memory (benches, notebooks' own images); one label each.
    pub fn in_memory(kind: SplitKind, images: Vec<DynamicImage>, labels: Vec<usize>) -> Result<Self> {
        if images.len() != labels.len() {
            return Err(Error::Shape {
                what: "an in-memory split's labels".into(),
                expected: format!("{}, one per image", images.len()),
                found: labels.len().to_string(),
            });
        }
        Ok(Split { kind, labels, images: Images::Memory(Arc::new(images)) })
    }
}

/// A data set loaded from a manifest.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The manifest it came from.
    pub manifest: DataManifest,
    /// The manifest's path.
    pub manifest_path: PathBuf,
    /// The text of each class.
    pub class_texts: Vec<String>,
    /// The training split.
    pub train: Split,
    /// The validation split, when the data set has one.
    pub val: Option<Split>,
    /// The test split.
    pub test: Split,
    /// The external split, when the manifest has an `[external]` section: labelled images
    /// that are never trained on, for the index only.
    pub external: Option<Split>,
}

impl Dataset {
    /// Load the data set a manifest file describes.
    pub fn load(manifest_path: &Path, overrides: &DataOverrides, cache: &AssetCache) -> Result<Self> {
        let manifest = DataManifest::load(manifest_path)?;
        Self::from_manifest(manifest, manifest_path, overrides, cache)
    }

    /// Load the data set of an already-parsed manifest.
    pub fn from_manifest(manifest: DataManifest, manifest_path: &Path, overrides: &DataOverrides, cache: &AssetCache) -> Result<Self> {
        let mut ds =
            if manifest.idx.is_some() { load_idx(manifest, manifest_path, cache)? } else { load_split_lists(manifest, manifest_path, overrides)? };
        let mut rest = None;
        if let Some(lt) = ds.manifest.long_tail.clone() {
            let counts = exponential_profile(ds.num_classes(), lt.max_per_class, lt.imbalance_factor);
            let keep = subsample_per_class(&ds.train.labels, &counts, lt.seed);
            let mut left_out = vec![true; ds.train.len()];
            keep.iter().for_each(|&i| left_out[i] = false);
            let rest_rows: Vec<usize> = (0..ds.train.len()).filter(|&i| left_out[i]).collect();
            rest = Some(select(&ds.train, &rest_rows));
            ds.train = select(&ds.train, &keep);
        }
        if let Some(x) = ds.manifest.external.clone() {
            let split = match x.from {
                ExternalFrom::LongTailRest => rest.expect("the manifest's check: long_tail_rest needs [long_tail]"),
                ExternalFrom::File => ds.external.take().expect("read with the split lists"),
            };
            let split = Split { kind: SplitKind::External, ..split };
            let split = if x.max_per_class > 0 {
                let keep = subsample_per_class(&split.labels, &vec![x.max_per_class; ds.num_classes()], x.seed);
                select(&split, &keep)
            } else {
                split
            };
            ds.external = Some(split);
        }
        if let Some(t) = ds.manifest.test_subset.clone() {
            let keep = subsample_per_class(&ds.test.labels, &vec![t.per_class; ds.num_classes()], t.seed);
            ds.test = select(&ds.test, &keep);
        }
        Ok(ds)
    }

    /// The number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_texts.len()
    }

    /// The data set's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// A split by kind.
    pub fn split(&self, kind: SplitKind) -> Option<&Split> {
        match kind {
            SplitKind::Train => Some(&self.train),
            SplitKind::Val => self.val.as_ref(),
            SplitKind::Test => Some(&self.test),
            SplitKind::External => self.external.as_ref(),
        }
    }

    /// Training images per class.
    pub fn train_counts(&self) -> Vec<usize> {
        super::longtail::class_counts(&self.train.labels, self.num_classes())
    }

    /// The long-tail statistics of the training split.
    pub fn stats(&self) -> LongTailStats {
        let mut stats = LongTailStats::from_counts(
            self.name(),
            self.train_counts(),
            self.class_texts.clone(),
            self.test.len(),
            self.val.as_ref().map(Split::len),
        );
        stats.external_per_class = self.external.as_ref().map(|x| super::longtail::class_counts(&x.labels, self.num_classes()));
        stats
    }
}

fn select(split: &Split, keep: &[usize]) -> Split {
    let labels = keep.iter().map(|&i| split.labels[i]).collect();
    let images = match &split.images {
        Images::Idx { file, array, indices } => {
            Images::Idx { file: file.clone(), array: array.clone(), indices: keep.iter().map(|&i| indices[i]).collect() }
        }
        Images::Files { list, root } => Images::Files {
            list: SplitList { file: list.file.clone(), entries: keep.iter().map(|&i| list.entries[i].clone()).collect() },
            root: root.clone(),
        },
        Images::Memory(images) => Images::Memory(Arc::new(keep.iter().map(|&i| images[i].clone()).collect())),
    };
    Split { kind: split.kind, labels, images }
}

fn load_idx(manifest: DataManifest, manifest_path: &Path, cache: &AssetCache) -> Result<Dataset> {
    let src = manifest.idx.clone().expect("checked by the caller");
    let dir = cache.require(&src.asset)?;
    let class_texts = list_texts(&manifest, manifest_path)?;
    let n = class_texts.len();
    let read_split = |kind: SplitKind, images: &str, labels: &str| -> Result<Split> {
        let (img_path, lab_path) = (dir.join(images), dir.join(labels));
        let array = read_idx(&img_path)?;
        let lab = read_idx(&lab_path)?;
        if array.dims.len() != 3 {
            return Err(Error::Format { path: img_path, message: format!("expected [n, h, w] images, found dims {:?}", array.dims) });
        }
        if lab.dims.len() != 1 || lab.len() != array.len() {
            return Err(Error::Format {
                path: lab_path,
                message: format!("{} labels for {} images in {}", lab.len(), array.len(), img_path.display()),
            });
        }
        let labels: Vec<usize> = lab.data.iter().map(|&l| l as usize).collect();
        if let Some((i, &l)) = labels.iter().enumerate().find(|&(_, &l)| l >= n) {
            return Err(Error::Format { path: lab_path, message: format!("item {i}: label {l} is out of range (0..{n})") });
        }
        let indices = (0..array.len()).collect();
        Ok(Split { kind, labels, images: Images::Idx { file: img_path, array: Arc::new(array), indices } })
    };
    let train = read_split(SplitKind::Train, &src.train_images, &src.train_labels)?;
    let test = read_split(SplitKind::Test, &src.test_images, &src.test_labels)?;
    check_no_gaps(&train.labels, n, &dir.join(&src.train_labels))?;
    Ok(Dataset { manifest, manifest_path: manifest_path.into(), class_texts, train, val: None, test, external: None })
}

fn list_texts(manifest: &DataManifest, manifest_path: &Path) -> Result<Vec<String>> {
    if manifest.classes.text_from != ClassTextSource::List {
        return Err(Error::InvalidField {
            path: manifest_path.into(),
            field: "classes.text_from".into(),
            message: "IDX data sets take their class texts from the `texts` list".into(),
        });
    }
    Ok(manifest.classes.texts.clone())
}

fn resolve_dir(given: Option<&PathBuf>, manifest_path: &Path) -> Option<PathBuf> {
    given.map(|d| if d.is_absolute() { d.clone() } else { manifest_path.parent().unwrap_or(Path::new(".")).join(d) })
}

fn load_split_lists(manifest: DataManifest, manifest_path: &Path, overrides: &DataOverrides) -> Result<Dataset> {
    let src = manifest.split_list.clone().expect("checked by the caller");
    let split_dir =
        overrides.split_dir.clone().or_else(|| resolve_dir(src.split_dir.as_ref(), manifest_path)).ok_or_else(|| Error::InvalidField {
            path: manifest_path.into(),
            field: "split_list.split_dir".into(),
            message: "the split folder is not set: pass --split-dir DIR or set RAC_SPLIT_DIR".into(),
        })?;
    let image_root = overrides.image_root.clone().or_else(|| resolve_dir(src.image_root.as_ref(), manifest_path));
    let read = |f: &SplitFile, n: Option<usize>| -> Result<SplitList> {
        let path = split_dir.join(&f.file);
        // A folder of that name is not "missing": reading it says what it is.
        if !path.exists() {
            return Err(Error::MissingFile { what: "split file".into(), path, hint: Some("check --split-dir / RAC_SPLIT_DIR".into()) });
        }
        if let Some(sha) = &f.sha256 {
            fsio::verify_sha256(
                &path,
                sha,
                Some(format!(
                    "the manifest {} records another version of this split file: restore the file, or record its new sha256 there",
                    manifest_path.display()
                )),
            )?;
        }
        SplitList::read(&path, n)
    };
    let declared = manifest.classes.count;
    let train_list = read(&src.train, declared)?;
    let n = declared.unwrap_or_else(|| train_list.entries.iter().map(|e| e.label).max().unwrap_or(0) + 1);
    check_no_gaps(&train_list.entries.iter().map(|e| e.label).collect::<Vec<_>>(), n, &train_list.file)?;
    let class_texts = class_texts(&manifest, manifest_path, &split_dir, &train_list, n)?;
    let test_list = read(&src.test, Some(n))?;
    let val_list = src.val.as_ref().map(|v| read(v, Some(n))).transpose()?;
    let external_list = manifest.external.as_ref().and_then(|x| x.file.as_ref()).map(|f| read(f, Some(n))).transpose()?;
    let to_split = |kind, list: SplitList| Split {
        kind,
        labels: list.entries.iter().map(|e| e.label).collect(),
        images: Images::Files { list, root: image_root.clone() },
    };
    Ok(Dataset {
        manifest,
        manifest_path: manifest_path.into(),
        class_texts,
        train: to_split(SplitKind::Train, train_list),
        val: val_list.map(|l| to_split(SplitKind::Val, l)),
        test: to_split(SplitKind::Test, test_list),
        external: external_list.map(|l| to_split(SplitKind::External, l)),
    })
}

fn check_no_gaps(labels: &[usize], n: usize, file: &Path) -> Result<()> {
    // Nothing here is sized by `n`: a label or a declared count with many digits is a gap
    // to name, not an allocation to make.
    let mut present: Vec<usize> = labels.iter().copied().filter(|&l| l < n).collect();
    present.sort_unstable();
    present.dedup();
    let missing = n - present.len();
    if missing == 0 {
        return Ok(());
    }
    let mut shown = Vec::with_capacity(10);
    let mut next = present.iter().peekable();
    for c in 0..n {
        if next.peek() == Some(&&c) {
            next.next();
        } else {
            shown.push(c.to_string());
            if shown.len() == 10 {
                break;
            }
        }
    }
    Err(Error::Labels {
        path: file.into(),
        message: format!(
            "label gap: {missing} of {n} classes have no training image (class {}{}); add training images of them, or renumber the classes without them",
            shown.join(", "),
            if missing > 10 { ", …" } else { "" }
        ),
    })
}

/// Turn a folder name into a class text: `apartment_building-outdoor` → `apartment building outdoor`.
pub fn humanise_class_name(raw: &str) -> String {
    raw.replace(['_', '-'], " ")
}

fn class_texts(manifest: &DataManifest, manifest_path: &Path, split_dir: &Path, train: &SplitList, n: usize) -> Result<Vec<String>> {
    let spec = &manifest.classes;
    let field_err = |field: &str, message: String| Error::InvalidField { path: manifest_path.into(), field: field.into(), message };
    let file = spec.file.as_ref().map(|f| if f.is_absolute() { f.clone() } else { split_dir.join(f) });
    match spec.text_from {
        ClassTextSource::List => {
            if spec.texts.len() != n {
                return Err(field_err("classes.texts", format!("has {} texts for {n} classes", spec.texts.len())));
            }
            Ok(spec.texts.clone())
        }
        ClassTextSource::Ids => Ok((0..n).map(|c| format!("class {c}")).collect()),
        ClassTextSource::PathComponent => {
            let mut texts: Vec<Option<String>> = vec![None; n];
            for e in &train.entries {
                let comp = e.path.split('/').nth(spec.path_component).filter(|_| e.path.split('/').count() > spec.path_component + 1);
                let Some(comp) = comp else {
                    return Err(Error::Parse {
                        path: train.file.clone(),
                        line: e.line,
                        message: format!(
                            "path `{}` has no folder component {} for the class text (classes.path_component)",
                            e.path, spec.path_component
                        ),
                    });
                };
                let text = humanise_class_name(comp);
                match &texts[e.label] {
                    Some(t) if *t != text => {
                        return Err(Error::Parse {
                            path: train.file.clone(),
                            line: e.line,
                            message: format!("class {} is named `{t}` on earlier lines but `{text}` here", e.label),
                        });
                    }
                    _ => texts[e.label] = Some(text),
                }
            }
            Ok(texts.into_iter().enumerate().map(|(c, t)| t.unwrap_or_else(|| format!("class {c}"))).collect())
        }
        ClassTextSource::NamesFile => {
            let Some(path) = file else { return Ok((0..n).map(|c| format!("class {c}")).collect()) };
            let text = fsio::read_to_string(&path, "class names file")?;
            let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
            if names.len() != n {
                return Err(Error::Format { path, message: format!("{} names for {n} classes", names.len()) });
            }
            Ok(names)
        }
        ClassTextSource::CategoriesJson => {
            let Some(path) = file else { return Ok((0..n).map(|c| format!("class {c}")).collect()) };
            #[derive(serde::Deserialize)]
            struct Category {
                id: usize,
                name: String,
            }
            let text = fsio::read_to_string(&path, "categories file")?;
            let cats: Vec<Category> =
                serde_json::from_str(&text).map_err(|e| Error::Parse { path: path.clone(), line: e.line(), message: e.to_string() })?;
            let by_id: HashMap<usize, String> = cats.into_iter().map(|c| (c.id, c.name)).collect();
            Ok((0..n).map(|c| by_id.get(&c).cloned().unwrap_or_else(|| format!("class {c}"))).collect())
        }
    }
}
