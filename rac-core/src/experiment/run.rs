//! Running an experiment: the whole data flow of DESIGN.md §4, with every expensive stage
//! cached on disk so that an ablation re-runs in seconds.
//!
//! 1. data: the manifest's [`Dataset`] (optionally a validation split held out of train);
//! 2. E: image features of every split, from the [`FeatureStore`];
//! 3. the [`RetrievalIndex`] over the training features, one LMDB folder per
//!    (features, index configuration, held-out split);
//! 4. the neighbour lists of every training and evaluation item, from the index's
//!    neighbour cache (training queries drop themselves);
//! 5. T: the concatenated neighbour texts, encoded once per distinct string by a frozen
//!    text encoder (cached on disk), or tokenised for a trainable one;
//! 6. the model, trained and evaluated; all three outputs of a RAC model are reported;
//! 7. a [`RunRecord`] under the runs folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use super::config::Experiment;
use super::record::{self, RunMeta, RunRecord};
use crate::assets::AssetCache;
use crate::data::{DataOverrides, Dataset};
use crate::encoders::{ImageEncoderSpec, TextEncoder, TextEncoderSpec, TokenBatch};
use crate::error::{Error, Result};
use crate::eval::{Branch, BranchMetrics, evaluate, per_class_frame};
use crate::features::{BarProgress, EncodeOptions, EncodeProgress, Features, FeatureStore};
use crate::fsio;
use crate::index::{Neighbours, QuerySet, RetrievalIndex, Source};
use crate::model::{LongTailLoss, Mode, Outputs, RacModel, RetrievalBatch, Scaler, TrainableTextEncoder, Widths};
use crate::train::{EpochLog, Inputs, TrainHooks, predict, train};

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

    fn work_dir(&self, what: &str) -> PathBuf {
        self.cache.home().join(what)
    }
}

/// The method name of an experiment in tables: `CE`, `BalCE`, `LACE`, `LDAM` for the base
/// branch alone, `retrieval` and `RAC` otherwise.
pub fn method_name(exp: &Experiment) -> String {
    match exp.model.mode {
        Mode::Base => exp.loss.kind.display_name().to_string(),
        Mode::Retrieval => "retrieval".into(),
        Mode::Rac => "RAC".into(),
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
    /// The name of the evaluation split (`test` or `val`).
    pub eval_split: &'static str,
    /// Positions of the training features' items in the data set's training split.
    pub train_rows: Vec<usize>,
    /// Positions of the evaluation features' items in their split (the test split, or the
    /// training split for a held-out validation part).
    pub eval_rows: Vec<usize>,
    /// The index over the training features.
    pub index: RetrievalIndex,
}

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
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0f_7a1);
    let (mut keep, mut held) = (Vec::new(), Vec::new());
    for rows in by_class.iter_mut() {
        rows.shuffle(&mut rng);
        let n = per_class.min(rows.len() / 5);
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
        let encoder = ImageEncoderSpec::parse(&exp.encoder.image)?.load(&env.cache, &device)?;
        let store = FeatureStore::in_cache(&env.cache);
        let opts = EncodeOptions::default();
        let mut progress = BarProgress::new(env.progress);
        let (train_all, _) = store.get_or_encode(&dataset, crate::data::SplitKind::Train, encoder.as_ref(), &opts, &mut progress)?;
        let (train, eval, eval_split, train_rows, eval_rows) = if exp.data.val_per_class > 0 {
            let (keep, held) = hold_out(&train_all.labels, dataset.num_classes(), exp.data.val_per_class, exp.train.seed);
            (select_rows(&train_all, &keep)?, select_rows(&train_all, &held)?, "val", keep, held)
        } else {
            let (test, _) = store.get_or_encode(&dataset, crate::data::SplitKind::Test, encoder.as_ref(), &opts, &mut progress)?;
            let (n_train, n_test) = (train_all.len(), test.len());
            (train_all, test, "test", (0..n_train).collect(), (0..n_test).collect())
        };
        let key = format!(
            "{}|{}|{}|{}",
            train.meta.key.hash(),
            serde_json::to_string(&exp.index).expect("index configs serialise"),
            exp.data.val_per_class,
            if eval_split == "val" { exp.train.seed } else { 0 }
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
        Ok(Prepared { dataset, train, eval, eval_split, train_rows, eval_rows, index })
    }

    /// Training images per class (of the training features, without a held-out part).
    pub fn train_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.dataset.num_classes()];
        for &l in &self.train.labels {
            counts[l] += 1;
        }
        counts
    }

    /// The neighbours of every training item (without itself) and every evaluation item.
    pub fn neighbours(&mut self, k: usize, k_max: usize, drop_self: bool) -> Result<(Vec<Neighbours>, Vec<Neighbours>)> {
        let eval_vecs: Vec<f32> = self.eval.vectors.flatten_all()?.to_vec1()?;
        let dim = self.eval.dim();
        let name = format!("{}-{}", self.eval_split, self.eval.meta.key.hash());
        let mut cache = self.index.neighbour_cache();
        let train = cache.neighbours(&QuerySet::Source("train"), k, k_max, drop_self)?;
        let eval = cache.neighbours(&QuerySet::Features { name: &name, vectors: &eval_vecs, dim }, k, k_max, false)?;
        Ok((train, eval))
    }
}

/// The text encoder of a `retrieval.text_encoder` string.
pub fn text_encoder_spec(name: &str, max_tokens: usize, seed: u64) -> Result<TextEncoderSpec> {
    let (kind, dir) = match name.split_once(':') {
        Some((k, d)) => (k, Some(PathBuf::from(d))),
        None => (name, None),
    };
    Ok(match kind {
        "minilm" => TextEncoderSpec::Minilm { dir, max_tokens },
        "clip" | "clip-text" => TextEncoderSpec::ClipText {
            dir: dir.ok_or_else(|| Error::InvalidInput("text encoder `clip-text` needs a folder: `clip-text:DIR`".into()))?,
            max_tokens,
        },
        "bow-random" => TextEncoderSpec::BowRandom { dim: 300, seed, max_tokens },
        "bow-learned" => TextEncoderSpec::BowLearned { dim: 300, seed, glove: dir, max_tokens },
        other => {
            return Err(Error::InvalidInput(format!(
                "unknown text encoder `{other}` (retrieval.text_encoder); known: minilm, bow-random, bow-learned, clip-text:DIR"
            )));
        }
    })
}

/// A text encoder trained with the heads.
struct TrainableText {
    encoder: Box<dyn TextEncoder>,
}

impl TrainableTextEncoder for TrainableText {
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let lengths = mask.to_dtype(candle_core::DType::F32)?.sum(1)?.to_vec1::<f32>()?.iter().map(|&l| l as usize).collect();
        self.encoder.pool(&TokenBatch { ids: ids.clone(), mask: mask.clone(), lengths })
    }
    fn dim(&self) -> usize {
        self.encoder.dim()
    }
    fn vars(&self) -> Vec<(String, Var)> {
        let Some(vm) = self.encoder.varmap() else { return Vec::new() };
        let data = vm.data().lock().expect("the varmap lock is not poisoned");
        let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

pub(crate) fn join_texts(neighbours: &[Neighbours], k: usize, sep: &str) -> Vec<String> {
    neighbours.iter().map(|n| n.texts.iter().take(k).map(String::as_str).collect::<Vec<_>>().join(sep)).collect()
}

/// Pooled outputs of a frozen text encoder for every text, cached on disk
/// (content-addressed: encoder fingerprint + texts).
///
/// Only the first `max_tokens` tokens of a joined neighbour text reach T, so texts are
/// deduplicated on their truncated token ids, not on the strings: the many training items
/// whose nearest neighbours share one label sequence up to the cut cost one encoding.
/// Distinct sequences are encoded in batches of equal length, which need no padding.
pub fn frozen_text_features(encoder: &dyn TextEncoder, texts: &[String], cache_dir: &Path, progress: &mut dyn EncodeProgress) -> Result<Tensor> {
    let mut hasher_input = encoder.fingerprint();
    for t in texts {
        hasher_input.push('\0');
        hasher_input.push_str(t);
    }
    let path = cache_dir.join(format!("{}.safetensors", &fsio::sha256_bytes(hasher_input.as_bytes())[..24]));
    if path.is_file() {
        if let Ok(t) = candle_core::safetensors::load(&path, &Device::Cpu) {
            if let Some(f) = t.get("features").filter(|f| f.dims() == [texts.len(), encoder.dim()]) {
                return Ok(f.clone());
            }
        }
        progress.warn(&format!("damaged text-feature cache {}; encoding again", path.display()));
    }
    // Truncated token ids of every text, and the distinct ones.
    let mut distinct: HashMap<Vec<u32>, u32> = HashMap::new();
    let mut sequences: Vec<Vec<u32>> = Vec::new();
    let mut slot_of_text = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(4096) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let batch = encoder.tokenize(&refs)?;
        let ids: Vec<Vec<u32>> = batch.ids.to_vec2()?;
        for (row, &len) in ids.into_iter().zip(&batch.lengths) {
            let seq = row[..len].to_vec();
            let next = sequences.len() as u32;
            let slot = *distinct.entry(seq.clone()).or_insert_with(|| {
                sequences.push(seq);
                next
            });
            slot_of_text.push(slot);
        }
    }
    // Encode the distinct sequences, grouped by length, in item order within a length.
    let mut order: Vec<u32> = (0..sequences.len() as u32).collect();
    order.sort_by_key(|&s| (sequences[s as usize].len(), s));
    let mut rows: Vec<Option<Tensor>> = vec![None; sequences.len()];
    progress.start(sequences.len(), &format!("{}: {} distinct token sequences of {} texts", encoder.name(), sequences.len(), texts.len()));
    let mut done = 0;
    for group in order.chunk_by(|&a, &b| sequences[a as usize].len() == sequences[b as usize].len()) {
        for chunk in group.chunks(64) {
            let len = sequences[chunk[0] as usize].len();
            let ids: Vec<u32> = chunk.iter().flat_map(|&s| sequences[s as usize].iter().copied()).collect();
            let batch = TokenBatch {
                ids: Tensor::from_vec(ids, (chunk.len(), len), &Device::Cpu)?,
                mask: Tensor::ones((chunk.len(), len), candle_core::DType::U32, &Device::Cpu)?,
                lengths: vec![len; chunk.len()],
            };
            let pooled = encoder.pool(&batch)?;
            for (i, &s) in chunk.iter().enumerate() {
                rows[s as usize] = Some(pooled.get(i)?);
            }
            done += chunk.len();
            progress.advance(done);
        }
    }
    progress.finish();
    let table = Tensor::stack(&rows.into_iter().map(|r| r.expect("every sequence encoded")).collect::<Vec<_>>(), 0)?;
    let idx = Tensor::from_vec(slot_of_text, texts.len(), &Device::Cpu)?;
    let feats = table.index_select(&idx, 0)?;
    fsio::create_dir_all(cache_dir)?;
    let tmp = fsio::temp_sibling(&path);
    candle_core::safetensors::save(&HashMap::from([("features".to_string(), feats.clone())]), &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::Io { op: "renaming into", path: path.clone(), source: e })?;
    Ok(feats)
}

/// A model ready to train: its inputs over cached features and neighbour lists, and the loss.
pub struct Assembled {
    /// The seeded, untrained model.
    pub model: RacModel,
    /// The loss, with the training split's class counts.
    pub loss: LongTailLoss,
    /// Training inputs.
    pub train: Inputs,
    /// Evaluation inputs (test or validation).
    pub eval: Inputs,
    /// Training images per class.
    pub counts: Vec<usize>,
    /// The scaling fitted on the training split's frozen text features (`model.input_norm`),
    /// for text features computed later (those of augmented views while fine-tuning).
    pub retrieval_norm: Option<Scaler>,
}

/// Build the model and its inputs for `exp`: the base features, the neighbours' joined texts
/// (encoded by a frozen T, cached, or tokenised for a trainable one), scaled as
/// `model.input_norm` says.
pub fn assemble(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<Assembled> {
    let device = exp.train.device.resolve("train.device")?;
    let r = &exp.retrieval;
    let num_classes = prep.dataset.num_classes();
    let counts = prep.train_counts();
    let mode = exp.model.mode;
    let (mut train_in, mut eval_in) = (
        Inputs { base: None, retrieval: None, labels: prep.train.labels.clone() },
        Inputs { base: None, retrieval: None, labels: prep.eval.labels.clone() },
    );
    if mode.has_base() {
        train_in.base = Some(prep.train.vectors.clone());
        eval_in.base = Some(prep.eval.vectors.clone());
    }
    let mut text: Option<Box<dyn TrainableTextEncoder>> = None;
    let mut text_dim = 0;
    if mode.has_retrieval() {
        let (train_nb, eval_nb) = prep.neighbours(r.k, r.k_max, r.drop_self)?;
        let (train_texts, eval_texts) = (join_texts(&train_nb, r.k, &r.separator), join_texts(&eval_nb, r.k, &r.separator));
        let vocabulary: Vec<&str> = prep.dataset.class_texts.iter().map(String::as_str).collect();
        let spec = text_encoder_spec(&r.text_encoder, r.max_tokens, exp.train.seed)?;
        let encoder = spec.load(&env.cache, &vocabulary, &device)?;
        text_dim = encoder.dim();
        if r.finetune_text {
            if encoder.varmap().is_none() {
                return Err(Error::InvalidInput(format!("retrieval.finetune_text: the text encoder `{}` has no trainable parameters", r.text_encoder)));
            }
            let tokens = |texts: &[String]| -> Result<RetrievalBatch> {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let b = encoder.tokenize(&refs)?;
                Ok(RetrievalBatch::Tokens { ids: b.ids, mask: b.mask })
            };
            train_in.retrieval = Some(tokens(&train_texts)?);
            eval_in.retrieval = Some(tokens(&eval_texts)?);
            text = Some(Box::new(TrainableText { encoder }));
        } else {
            let dir = env.work_dir("text-features");
            let mut progress = BarProgress::new(env.progress).with_unit("sequences");
            train_in.retrieval = Some(RetrievalBatch::Embedded(frozen_text_features(encoder.as_ref(), &train_texts, &dir, &mut progress)?));
            eval_in.retrieval = Some(RetrievalBatch::Embedded(frozen_text_features(encoder.as_ref(), &eval_texts, &dir, &mut progress)?));
        }
    }
    let norm = exp.model.input_norm;
    if let (Some(tr), Some(ev)) = (&train_in.base, &eval_in.base) {
        let (tr, mut ev) = norm.apply(tr, &[ev])?;
        (train_in.base, eval_in.base) = (Some(tr), ev.pop());
    }
    let mut retrieval_norm = None;
    if let (Some(RetrievalBatch::Embedded(tr)), Some(RetrievalBatch::Embedded(ev))) = (&train_in.retrieval, &eval_in.retrieval) {
        let scaler = norm.fit(tr)?;
        let (tr, ev) = (scaler.apply(tr)?, scaler.apply(ev)?);
        train_in.retrieval = Some(RetrievalBatch::Embedded(tr));
        eval_in.retrieval = Some(RetrievalBatch::Embedded(ev));
        retrieval_norm = Some(scaler);
    }
    let (train_in, eval_in) = (train_in.to_device(&device)?, eval_in.to_device(&device)?);
    let widths = Widths { base_dim: prep.train.dim(), text_dim, num_classes };
    let model = RacModel::new(&exp.model, widths, text, exp.train.seed, &device)?;
    let loss = LongTailLoss::new(&exp.loss, &counts, &device)?;
    Ok(Assembled { model, loss, train: train_in, eval: eval_in, counts, retrieval_norm })
}

/// Run one experiment on prepared inputs and save its record.
pub fn run_prepared(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<RunRecord> {
    let started = Instant::now();
    if exp.base_encoder.is_some() {
        return super::finetune::run_finetune(exp, prep, env);
    }
    let Assembled { model, loss, train: train_in, eval: eval_in, counts, .. } = assemble(exp, prep, env)?;
    let checkpoint_dir = env.runs_dir.join(format!(".{}-{}.checkpoint", exp.name, exp.config_hash()));
    fsio::create_dir_all(&checkpoint_dir)?;
    let hooks = TrainHooks { progress: env.progress, ..env.hooks.clone() };
    let log = train(&model, &loss, &exp.optim, &exp.train, &train_in, Some(&eval_in), Some(&checkpoint_dir), &hooks)?;
    let out = predict(&model, &eval_in, 1024)?;
    let rec = save_record(exp, prep, env, started, &out, &eval_in.labels, &counts, &log)?;
    let _ = std::fs::remove_dir_all(&checkpoint_dir);
    Ok(rec)
}

/// Evaluate every branch of `out` against `labels` and save the run's record.
#[allow(clippy::too_many_arguments)]
pub(crate) fn save_record(
    exp: &Experiment,
    prep: &Prepared,
    env: &RunEnv,
    started: Instant,
    out: &Outputs,
    labels: &[usize],
    counts: &[usize],
    log: &[EpochLog],
) -> Result<RunRecord> {
    let mut branches: Vec<BranchMetrics> = Vec::new();
    if let Some(b) = &out.base {
        branches.push(evaluate(Branch::Base, b, labels, counts)?);
    }
    if let Some(rl) = &out.retrieval {
        branches.push(evaluate(Branch::Retrieval, rl, labels, counts)?);
    }
    if exp.model.mode == Mode::Rac {
        branches.push(evaluate(Branch::Fused, &out.fused, labels, counts)?);
    }
    let method = method_name(exp);
    let meta = RunMeta {
        name: exp.name.clone(),
        config_hash: exp.config_hash(),
        seed: exp.train.seed,
        versions: record::crate_versions(),
        git_revision: record::git_revision(Path::new(".")),
        wall_s: started.elapsed().as_secs_f64(),
        method: method.clone(),
        eval_split: prep.eval_split.to_string(),
        experiment: exp.clone(),
    };
    let metrics = record::metrics_table(&method, &branches)?;
    let per_class = per_class_frame(&prep.dataset.class_texts, counts, &branches)?;
    let epochs = record::epochs_table(log)?;
    RunRecord::save(meta, metrics, per_class, epochs, &env.runs_dir)
}

/// Run an experiment, or load its record when a complete one exists (unless forced).
pub fn run(exp: &Experiment, env: &RunEnv) -> Result<RunRecord> {
    let dir = record::record_dir(&env.runs_dir, exp);
    if !env.force && record::is_complete(&env.runs_dir, exp) {
        return RunRecord::load(&dir);
    }
    if let Some(b) = &exp.base_encoder {
        b.check_files()?;
    }
    let mut prep = Prepared::new(exp, env)?;
    run_prepared(exp, &mut prep, env)
}
