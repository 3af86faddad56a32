//! What the runs of a sweep share: the data set, E's features of every split (from the
//! feature store), the held-out validation part, and the retrieval index over the training
//! features (one LMDB folder per features, index configuration and held-out split), with
//! the neighbour lists read through the index's neighbour cache.

use std::path::PathBuf;

use candle_core::Tensor;
use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::config::Experiment;
use crate::assets::AssetCache;
use crate::data::{DataOverrides, Dataset, SplitKind, class_counts};
use crate::error::Result;
use crate::features::{BarProgress, EncodeOptions, FeatureStore, Features};
use crate::fsio;
use crate::index::{CacheQuery, Neighbours, QuerySet, RetrievalIndex, Source};
use crate::train::TrainHooks;

/// Where a run reads its caches and writes its record.
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// The asset cache; features, indexes and text features live under its home too.
    pub cache: AssetCache,
    /// The runs folder (default `runs/`).
    pub runs_dir: PathBuf,
    /// Split-folder and image-root overrides for split-list data sets.
    pub overrides: DataOverrides,
    /// Re-run even when a complete record exists.
    pub force: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Training hooks (tests use them to stop a run mid-way).
    pub hooks: TrainHooks,
}

impl RunEnv {
    /// The default environment: `$RAC_HOME`, `runs/`, overrides from the environment.
    pub fn from_env() -> Self {
        RunEnv {
            cache: AssetCache::from_env(),
            runs_dir: PathBuf::from("runs"),
            overrides: DataOverrides::from_env(),
            force: false,
            progress: false,
            hooks: TrainHooks::default(),
        }
    }

    pub(crate) fn work_dir(&self, what: &str) -> PathBuf {
        self.cache.home().join(what)
    }

    /// Where a run of `exp` keeps its per-epoch checkpoint until its record is saved.
    pub fn checkpoint_dir(&self, exp: &Experiment) -> PathBuf {
        self.runs_dir.join(format!(".{}-{}.checkpoint", exp.name, exp.config_hash()))
    }
}

/// The cached inputs of one data set under one experiment's data, encoder, index and
/// retrieval settings: everything but the model. Sweeps over k, the loss, the model or
/// the text encoder share it.
pub struct Prepared {
    /// The data set.
    pub dataset: Dataset,
    /// Training features (without a held-out validation part).
    pub train: Features,
    /// Evaluation features: the test split, or the held-out validation part.
    pub eval: Features,
    /// The data the run is evaluated on.
    pub eval_split: EvalSplit,
    /// Positions of the training features' items in the data set's training split.
    pub train_rows: Vec<usize>,
    /// Positions of the evaluation features' items in their split (the test split, or the
    /// training split for a held-out validation part).
    pub eval_rows: Vec<usize>,
    /// The index over the training features.
    pub index: RetrievalIndex,
    /// Training images per class of `train` (without a held-out part): the shot buckets of
    /// every evaluation and the class priors of the losses, counted once.
    pub train_counts: Vec<usize>,
}

/// The data a run is evaluated on: the test split, or a validation part held out of the
/// training split (`data.val_per_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalSplit {
    /// The test split.
    Test,
    /// Images held out of the training split.
    HeldOut,
}

impl EvalSplit {
    /// Its name in records and tables: `test` or `val`.
    pub fn name(self) -> &'static str {
        match self {
            EvalSplit::Test => "test",
            EvalSplit::HeldOut => "val",
        }
    }

    /// The data set's split its images come from.
    pub fn source(self) -> SplitKind {
        match self {
            EvalSplit::Test => SplitKind::Test,
            EvalSplit::HeldOut => SplitKind::Train,
        }
    }
}

impl std::fmt::Display for EvalSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The held-out part's RNG is the training seed XOR this, so that it is not the stream the
/// shuffles and the initialisation draw from (changing it changes which images are held out).
const HOLD_OUT_STREAM: u64 = 0x0005_eed0_f7a1;
/// At most one image in this many of a class is held out, so every class keeps most of its
/// training images (and a few-shot class keeps at least one for the loss).
const HOLD_OUT_AT_MOST_ONE_IN: usize = 5;

fn select_rows(f: &Features, rows: &[usize]) -> Result<Features> {
    let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<u32>>(), rows.len(), f.vectors.device())?;
    Ok(Features {
        vectors: f.vectors.index_select(&idx, 0)?,
        ids: rows.iter().map(|&r| f.ids[r].clone()).collect(),
        labels: rows.iter().map(|&r| f.labels[r]).collect(),
        meta: f.meta.clone(),
    })
}

/// Split training rows into (kept, held out): up to `per_class` items of each class,
/// never more than a fifth of it, chosen with `seed`.
fn hold_out(labels: &[usize], num_classes: usize, per_class: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ HOLD_OUT_STREAM);
    let (mut keep, mut held) = (Vec::new(), Vec::new());
    for rows in by_class.iter_mut() {
        rows.shuffle(&mut rng);
        let n = per_class.min(rows.len() / HOLD_OUT_AT_MOST_ONE_IN);
        held.extend_from_slice(&rows[..n]);
        keep.extend_from_slice(&rows[n..]);
    }
    keep.sort_unstable();
    held.sort_unstable();
    (keep, held)
}

impl Prepared {
    /// Load the data, encode (or read) the features, and build (or open) the index.
    pub fn new(exp: &Experiment, env: &RunEnv) -> Result<Self> {
        let dataset = Dataset::load(&exp.data.manifest, &env.overrides, &env.cache)?;
        let device = exp.train.device.resolve("train.device")?;
        let encoder = exp.image_encoder()?.load(&env.cache, &device)?;
        let store = FeatureStore::in_cache(&env.cache);
        let opts = EncodeOptions::default();
        let mut progress = BarProgress::new(env.progress);
        let (train_all, _) = store.get_or_encode(&dataset, SplitKind::Train, encoder.as_ref(), &opts, &mut progress)?;
        let (train, eval, eval_split, train_rows, eval_rows) = if exp.data.val_per_class > 0 {
            let (keep, held) = hold_out(&train_all.labels, dataset.num_classes(), exp.data.val_per_class, exp.train.seed);
            (select_rows(&train_all, &keep)?, select_rows(&train_all, &held)?, EvalSplit::HeldOut, keep, held)
        } else {
            let (test, _) = store.get_or_encode(&dataset, SplitKind::Test, encoder.as_ref(), &opts, &mut progress)?;
            let (n_train, n_test) = (train_all.len(), test.len());
            (train_all, test, EvalSplit::Test, (0..n_train).collect(), (0..n_test).collect())
        };
        let key = format!(
            "{}|{}|{}|{}",
            train.meta.key.hash(),
            serde_json::to_string(&exp.index).expect("index configs serialise"),
            exp.data.val_per_class,
            if eval_split == EvalSplit::HeldOut { exp.train.seed } else { 0 }
        );
        let dir = env.work_dir("indexes").join(&fsio::sha256_bytes(key.as_bytes())[..16]);
        let index = match RetrievalIndex::open(&dir) {
            Ok(ix) if ix.source("train").is_ok() && ix.dim() == train.dim() => ix,
            _ => {
                let texts = train.labels.iter().map(|&l| dataset.class_texts[l].clone()).collect();
                let labels = train.labels.iter().map(|&l| l as u32).collect();
                let source = Source::new("train", &train.vectors, texts, labels)?.with_keys(train.ids.clone())?;
                let _ = std::fs::remove_dir_all(&dir);
                RetrievalIndex::build(&dir, &exp.index, &[source])?
            }
        };
        let train_counts = class_counts(&train.labels, dataset.num_classes());
        Ok(Prepared { dataset, train, eval, eval_split, train_rows, eval_rows, index, train_counts })
    }

    /// The neighbours of every training item (without itself) and every evaluation item.
    pub fn neighbours(&mut self, query: CacheQuery) -> Result<(Vec<Neighbours>, Vec<Neighbours>)> {
        let eval_vecs: Vec<f32> = self.eval.vectors.flatten_all()?.to_vec1()?;
        let dim = self.eval.dim();
        let name = format!("{}-{}", self.eval_split, self.eval.meta.key.hash());
        let mut cache = self.index.neighbour_cache();
        let train = cache.neighbours(&QuerySet::Source("train"), query)?;
        let eval = cache.neighbours(&QuerySet::Features { name: &name, vectors: &eval_vecs, dim }, query.keeping_self())?;
        Ok((train, eval))
    }
}
