//! What the runs of a sweep share: the data set, E's features of every split (from the
//! feature store), the held-out validation part, and the retrieval index over the sources
//! `memory` names (the training features by default; one LMDB folder per features, index
//! configuration, memory and held-out split), with the neighbour lists read through the
//! index's neighbour cache.

use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::config::{Experiment, MemorySection};
use crate::assets::AssetCache;
use crate::data::{DataOverrides, Dataset, SplitKind, class_counts};
use crate::error::{Error, Result};
use crate::features::{BarProgress, EncodeOptions, FeatureStore, Features};
use crate::fsio;
use crate::index::{ItemId, Neighbours, QuerySet, RetrievalIndex, SearchRequest, Source};
use crate::progress::Progress;
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
    /// How progress bars are drawn.
    pub progress: Progress,
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
            progress: Progress::Hidden,
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
    /// What the index was built to hold.
    pub memory: MemorySection,
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

/// Where [`Prepared::at`] keeps the index.
#[derive(Debug, Clone)]
pub enum IndexPlace {
    /// In the cache, one folder per features, index configuration, memory and held-out
    /// split, opened again by later runs.
    Cache,
    /// Built anew in this folder (whatever it held is replaced): an index a study changes
    /// (sources added and removed) without touching the one other runs share.
    Fresh(PathBuf),
}

/// One source of the index: a split's name and the rows of its features that go in.
struct Planned {
    kind: SplitKind,
    rows: Vec<usize>,
}

impl Prepared {
    /// Load the data, encode (or read) the features, and build (or open) the index.
    pub fn new(exp: &Experiment, env: &RunEnv) -> Result<Self> {
        Self::at(exp, env, IndexPlace::Cache)
    }

    /// [`Self::new`] with the index kept at `place`. What `memory` asks of the data (its
    /// sources, their thinning) is checked against the data set before anything is encoded.
    pub fn at(exp: &Experiment, env: &RunEnv, place: IndexPlace) -> Result<Self> {
        let dataset = Dataset::load(&exp.data.manifest, &env.overrides, &env.cache)?;
        let held_out =
            (exp.data.val_per_class > 0).then(|| hold_out(&dataset.train.labels, dataset.num_classes(), exp.data.val_per_class, exp.train.seed));
        let plan = plan_sources(exp, &dataset, held_out.as_ref().map(|(keep, _)| keep.as_slice()))?;
        let device = exp.train.device.resolve("train.device")?;
        let encoder = exp.image_encoder()?.load(&env.cache, &device)?;
        let store = FeatureStore::in_cache(&env.cache);
        let opts = EncodeOptions::default();
        let mut progress = BarProgress::new(env.progress);
        let (train_all, _) = store.get_or_encode(&dataset, SplitKind::Train, encoder.as_ref(), &opts, &mut progress)?;
        let (train, eval, eval_split, train_rows, eval_rows) = match held_out {
            Some((keep, held)) => (train_all.select(&keep)?, train_all.select(&held)?, EvalSplit::HeldOut, keep, held),
            None => {
                let (test, _) = store.get_or_encode(&dataset, SplitKind::Test, encoder.as_ref(), &opts, &mut progress)?;
                let (n_train, n_test) = (train_all.len(), test.len());
                (train_all, test, EvalSplit::Test, (0..n_train).collect(), (0..n_test).collect())
            }
        };
        // The features' content is in the key too: two data sets under one manifest text (a
        // split list edited without its sha256) never share an index.
        let mut key = format!(
            "{}|{}|{}|{}|{}",
            train.meta.key.hash(),
            train.meta.features_sha256,
            serde_json::to_string(&exp.index).expect("index configs serialise"),
            exp.data.val_per_class,
            if eval_split == EvalSplit::HeldOut { exp.train.seed } else { 0 }
        );
        if !exp.memory.is_default() {
            key.push_str(&format!("|{}", serde_json::to_string(&exp.memory).expect("memory sections serialise")));
        }
        let mut sources = Vec::with_capacity(plan.len());
        for p in &plan {
            let features = if p.kind == SplitKind::Train {
                train.select(&p.rows)?
            } else {
                let (all, _) = store.get_or_encode(&dataset, p.kind, encoder.as_ref(), &opts, &mut progress)?;
                all.select(&p.rows)?
            };
            key.push_str(&format!("|{}|{}", features.meta.key.hash(), features.meta.features_sha256));
            sources.push(source_of(p.kind.name(), &features, &dataset.class_texts)?);
        }
        let expected: Vec<(String, u32)> = sources.iter().map(|s| (s.name().to_string(), s.len() as u32)).collect();
        let (dir, reuse) = match place {
            IndexPlace::Cache => (env.work_dir("indexes").join(&fsio::sha256_bytes(key.as_bytes())[..16]), true),
            IndexPlace::Fresh(dir) => (dir, false),
        };
        // An index with other sources (a study killed between adding and removing one) is
        // built again, never used; the handle is dropped before the folder is replaced.
        let holds = |ix: &RetrievalIndex| {
            ix.dim() == train.dim() && ix.sources().is_ok_and(|s| s.iter().map(|s| (s.name.clone(), s.count)).collect::<Vec<_>>() == expected)
        };
        // Two runs that need the same cached index: the first builds it while the second
        // waits for the entry's lock, then opens what the first built.
        let _entry = if reuse {
            fsio::create_dir_all(&env.work_dir("indexes"))?;
            Some(fsio::FileLock::exclusive(&dir.with_extension("lock"), "building a cached index")?)
        } else {
            None
        };
        let reused = if reuse { RetrievalIndex::open(&dir).ok().filter(holds) } else { None };
        let index = match reused {
            Some(ix) => ix,
            None => {
                let _ = std::fs::remove_dir_all(&dir);
                RetrievalIndex::build(&dir, &exp.index, &sources)?
            }
        };
        let train_counts = class_counts(&train.labels, dataset.num_classes());
        let memory = exp.memory.clone();
        Ok(Prepared { dataset, train, eval, eval_split, train_rows, eval_rows, index, train_counts, memory })
    }

    /// The index item of each training row, where the index holds it (`None` for rows a
    /// thinned or external index leaves out): who each training query is, for `drop_self`.
    pub fn train_items(&self) -> Result<Vec<Option<ItemId>>> {
        self.index.own_items(MemorySection::TRAIN, &self.train.ids)
    }

    /// The neighbours of every training item (without itself, where the index holds it) and
    /// every evaluation item.
    pub fn neighbours(&mut self, query: SearchRequest) -> Result<(Vec<Neighbours>, Vec<Neighbours>)> {
        let train = if self.memory.is_default() {
            self.index.neighbour_cache().neighbours(&QuerySet::Source(MemorySection::TRAIN), query)?
        } else {
            let vectors: Vec<f32> = self.train.vectors.flatten_all()?.to_vec1()?;
            let name = format!("train-{}", self.train.meta.key.hash());
            let set = QuerySet::Keyed { name: &name, vectors: &vectors, dim: self.train.dim(), source: MemorySection::TRAIN, keys: &self.train.ids };
            self.index.neighbour_cache().neighbours(&set, query)?
        };
        Ok((train, self.eval_neighbours(query)?))
    }

    /// The neighbours of every evaluation item (never dropped: they are not in the index),
    /// read through the index's neighbour cache, which follows every change of the index.
    pub fn eval_neighbours(&mut self, query: SearchRequest) -> Result<Vec<Neighbours>> {
        let eval_vecs: Vec<f32> = self.eval.vectors.flatten_all()?.to_vec1()?;
        let dim = self.eval.dim();
        let name = format!("{}-{}", self.eval_split, self.eval.meta.key.hash());
        self.index.neighbour_cache().neighbours(&QuerySet::Features { name: &name, vectors: &eval_vecs, dim }, query.keeping_self())
    }
}

/// The index's sources as `memory` asks, with the rows of each that go in, checked against
/// the data set (labels only, nothing encoded yet); errors name the `memory` field.
fn plan_sources(exp: &Experiment, dataset: &Dataset, train_keep: Option<&[usize]>) -> Result<Vec<Planned>> {
    let m = &exp.memory;
    let mut plan = Vec::new();
    for kind in m.splits().map_err(|e| e.within("memory"))? {
        let split = dataset.split(kind).ok_or_else(|| Error::Setting {
            field: "memory.sources".into(),
            message: format!(
                "data set `{}` has no {} split{}",
                dataset.name(),
                kind.name(),
                if kind == SplitKind::External { " (add an `[external]` section to its manifest)" } else { "" }
            ),
        })?;
        // The training source is the training features without a held-out part.
        let labels: Vec<usize> = match (kind, train_keep) {
            (SplitKind::Train, Some(keep)) => keep.iter().map(|&r| split.labels[r]).collect(),
            _ => split.labels.clone(),
        };
        let rows = m.thinning.rows(&labels, dataset.num_classes(), kind.name()).map_err(|e| e.within("memory.thinning"))?;
        plan.push(Planned { kind, rows });
    }
    Ok(plan)
}

/// A source named `name` of the rows of `f`: each item's key is its id, its text its class's.
pub fn source_of(name: &str, f: &Features, class_texts: &[String]) -> Result<Source> {
    let texts = f.labels.iter().map(|&l| class_texts[l].clone()).collect();
    let labels = f.labels.iter().map(|&l| l as u32).collect();
    Source::new(name, &f.vectors, texts, labels)?.with_keys(f.ids.clone())
}
