//! The training loop, one for every run: batches from a [`BatchSource`] (seeded shuffles of
//! cached inputs, or the loader's augmented images with online retrieval), the loss on the
//! model's fused output, gradient clipping, AdamW with the cosine warm-up schedule, a
//! per-epoch log with evaluation handed in, and a checkpoint after every epoch from which a
//! killed run resumes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::{AdamW, CosineWarmup, OptimConfig, clip_grad_norm};
use crate::device::DeviceChoice;
use crate::error::{Error, Result};
use crate::fsio;
use crate::model::{Batch, LongTailLoss, Outputs, RacModel, RetrievalBatch};
use crate::progress::Progress;

/// The training section of an experiment (schedule, epochs, batches, seed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Epochs.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Mini-batch size.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Seed of the initialisation and the shuffling.
    #[serde(default)]
    pub seed: u64,
    /// Epochs of linear warm-up.
    #[serde(default = "default_warmup_epochs")]
    pub warmup_epochs: usize,
    /// Learning rate at the start of the warm-up.
    #[serde(default = "default_small_lr")]
    pub warmup_lr: f64,
    /// Learning rate at the end of the cosine decay.
    #[serde(default = "default_small_lr")]
    pub min_lr: f64,
    /// Evaluate on the test split every this many epochs (0: only at the end).
    #[serde(default)]
    pub eval_every: usize,
    /// Where the model trains: `auto` (a CUDA device when the build has CUDA and one
    /// answers, else the CPU), `cpu` or `cuda:N`. Left out of the saved configuration
    /// while `auto`, so that records made before the setting existed keep their hash.
    #[serde(default, skip_serializing_if = "DeviceChoice::is_auto")]
    pub device: DeviceChoice,
    /// Items per forward pass when a trained model predicts (evaluation). Only speed and
    /// memory depend on it; left out of the saved configuration at its default, so that
    /// records keep their hash.
    #[serde(default = "default_eval_batch", skip_serializing_if = "is_default_eval_batch")]
    pub eval_batch_size: usize,
}

fn default_epochs() -> usize {
    30
}
fn default_batch() -> usize {
    200
}
fn default_eval_batch() -> usize {
    1024
}
fn is_default_eval_batch(n: &usize) -> bool {
    *n == default_eval_batch()
}
fn default_warmup_epochs() -> usize {
    5
}
fn default_small_lr() -> f64 {
    1e-7
}

impl TrainConfig {
    /// Check every value; errors name the field within `[train]`.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| Err(Error::Setting { field: field.into(), message });
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if self.eval_batch_size == 0 {
            return bad("eval_batch_size", "must be at least 1".into());
        }
        if self.warmup_epochs > self.epochs {
            return bad("warmup_epochs", format!("{} is more than train.epochs ({})", self.warmup_epochs, self.epochs));
        }
        for (field, v) in [("warmup_lr", self.warmup_lr), ("min_lr", self.min_lr)] {
            if !v.is_finite() || v < 0.0 {
                return bad(field, format!("must be a finite number >= 0, found {v}"));
            }
        }
        Ok(())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: default_epochs(),
            batch_size: default_batch(),
            seed: 0,
            warmup_epochs: default_warmup_epochs(),
            warmup_lr: default_small_lr(),
            min_lr: default_small_lr(),
            eval_every: 0,
            device: DeviceChoice::Auto,
            eval_batch_size: default_eval_batch(),
        }
    }
}

/// Cached inputs of every item of a split.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// `[N, D]` base features.
    pub base: Option<Tensor>,
    /// The retrieval branch's input for every item.
    pub retrieval: Option<RetrievalBatch>,
    /// Class ids.
    pub labels: Vec<usize>,
}

impl Inputs {
    /// The number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The device the inputs live on (the CPU when there are none).
    pub fn device(&self) -> Device {
        match (&self.base, &self.retrieval) {
            (Some(t), _) | (None, Some(RetrievalBatch::Embedded(t))) | (None, Some(RetrievalBatch::Tokens { ids: t, .. })) => t.device().clone(),
            (None, None) => Device::Cpu,
        }
    }

    /// A copy on `device`.
    pub fn to_device(&self, device: &Device) -> Result<Inputs> {
        let retrieval = match &self.retrieval {
            None => None,
            Some(RetrievalBatch::Embedded(t)) => Some(RetrievalBatch::Embedded(t.to_device(device)?)),
            Some(RetrievalBatch::Tokens { ids, mask }) => Some(RetrievalBatch::Tokens { ids: ids.to_device(device)?, mask: mask.to_device(device)? }),
        };
        Ok(Inputs { base: self.base.as_ref().map(|t| t.to_device(device)).transpose()?, retrieval, labels: self.labels.clone() })
    }

    /// The rows `idx` as a batch.
    pub fn batch(&self, idx: &Tensor) -> Result<Batch> {
        let base = self.base.as_ref().map(|t| t.index_select(idx, 0)).transpose()?;
        let retrieval = match &self.retrieval {
            None => None,
            Some(RetrievalBatch::Embedded(t)) => Some(RetrievalBatch::Embedded(t.index_select(idx, 0)?)),
            Some(RetrievalBatch::Tokens { ids, mask }) => {
                Some(RetrievalBatch::Tokens { ids: ids.index_select(idx, 0)?, mask: mask.index_select(idx, 0)? })
            }
        };
        Ok(Batch { base, retrieval })
    }

    /// The items `rows`, in that order.
    pub fn subset(&self, rows: &[u32]) -> Result<Inputs> {
        let batch = self.batch(&Tensor::from_slice(rows, rows.len(), &Device::Cpu)?)?;
        Ok(Inputs { base: batch.base, retrieval: batch.retrieval, labels: rows.iter().map(|&r| self.labels[r as usize]).collect() })
    }
}

/// One line of the training log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
    /// Training samples per second.
    pub samples_per_s: f64,
    /// Test top-1 (balanced, fused output) when it was evaluated this epoch.
    pub test_top1: Option<f64>,
}

/// Knobs of one call that are not part of the experiment.
#[derive(Debug, Clone, Default)]
pub struct TrainHooks {
    /// Stop with an error right after this epoch's checkpoint, as a killed run would.
    pub stop_after_epoch: Option<usize>,
    /// How the training bar is drawn.
    pub progress: Progress,
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    epoch: usize,
    step: usize,
    log: Vec<EpochLog>,
}

const CHECKPOINT: &str = "checkpoint.safetensors";

/// The shuffle of epoch `e` is seeded with `seed * SHUFFLE_SEED_STRIDE + e`: a fresh RNG per
/// epoch makes a resumed run shuffle exactly as an uninterrupted one. (A large prime keeps
/// the epochs of neighbouring seeds apart; changing it changes every run's results.)
const SHUFFLE_SEED_STRIDE: u64 = 1_000_003;

/// Where the batches of an epoch come from: cached inputs ([`CachedBatches`]), or images
/// through the loader with online retrieval (fine-tuning).
pub trait BatchSource {
    /// The items of one epoch.
    fn len(&self) -> usize;

    /// Whether an epoch has no items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hand every batch of epoch `epoch` (0-based) and its `[b]` u32 targets to `step`, in
    /// an order that depends only on the seed and the epoch, so that a run resumed after
    /// an epoch sees the batches an uninterrupted run sees.
    fn for_each_batch(&mut self, epoch: usize, step: &mut dyn FnMut(Batch, Tensor) -> Result<()>) -> Result<()>;
}

/// Seeded, shuffled mini-batches over cached inputs.
pub struct CachedBatches<'a> {
    inputs: &'a Inputs,
    batch_size: usize,
    seed: u64,
    labels: Vec<u32>,
}

impl<'a> CachedBatches<'a> {
    /// Batches of `batch_size` items of `inputs`, shuffled each epoch from `seed`.
    pub fn new(inputs: &'a Inputs, batch_size: usize, seed: u64) -> Self {
        CachedBatches { inputs, batch_size, seed, labels: inputs.labels.iter().map(|&l| l as u32).collect() }
    }
}

impl BatchSource for CachedBatches<'_> {
    fn len(&self) -> usize {
        self.inputs.len()
    }

    fn for_each_batch(&mut self, epoch: usize, step: &mut dyn FnMut(Batch, Tensor) -> Result<()>) -> Result<()> {
        let device = self.inputs.device();
        let mut order: Vec<u32> = (0..self.inputs.len() as u32).collect();
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(self.seed.wrapping_mul(SHUFFLE_SEED_STRIDE).wrapping_add(epoch as u64)));
        for chunk in order.chunks(self.batch_size) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let targets = Tensor::from_vec(chunk.iter().map(|&i| self.labels[i as usize]).collect::<Vec<u32>>(), chunk.len(), &device)?;
            step(self.inputs.batch(&idx)?, targets)?;
        }
        Ok(())
    }
}

/// What one training run steps: the model, any variables trained with it (a fine-tuned
/// encoder's), the loss and the recipe, and where its checkpoints go.
pub struct TrainJob<'a> {
    /// The model (its heads).
    pub model: &'a RacModel,
    /// Variables outside the model that the optimiser also steps and the checkpoint keeps
    /// (a fine-tuned image encoder's, named `base.encoder.*`); empty for a head on features.
    pub extra_vars: &'a [(String, Var)],
    /// The loss on the model's fused output.
    pub loss: &'a LongTailLoss,
    /// The optimiser's settings.
    pub optim: &'a OptimConfig,
    /// The schedule, epochs and batch size.
    pub config: &'a TrainConfig,
    /// A checkpoint is written here after every epoch, and a run finding one resumes after it.
    pub checkpoint_dir: Option<&'a Path>,
    /// Progress and the stop hook.
    pub hooks: &'a TrainHooks,
    /// What the progress bar calls the run (`training`, `fine-tuning`).
    pub label: &'a str,
}

/// Evaluation handed to the loop: the balanced top-1 of the model on held-out data.
pub type EvalFn<'a> = dyn FnMut(&RacModel) -> Result<f64> + 'a;

/// The training loop, the one place where the optimiser steps and the epoch log is written:
/// batches from `source`, the loss on the fused output, clipping, AdamW under the cosine
/// warm-up schedule, `eval` every `train.eval_every` epochs, a checkpoint after each epoch.
pub fn train_with(job: &TrainJob, source: &mut dyn BatchSource, mut eval: Option<&mut EvalFn>) -> Result<Vec<EpochLog>> {
    let config = job.config;
    let n = source.len();
    if n == 0 {
        return Err(Error::Empty { what: "the training split".into(), hint: "check the data set's training split list, or its thinning".into() });
    }
    // Experiments are validated at load; this guards configs built in code.
    if config.batch_size == 0 || config.epochs == 0 {
        return Err(Error::Setting { field: "train.batch_size / train.epochs".into(), message: "must be at least 1".into() });
    }
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let schedule = CosineWarmup {
        lr: job.optim.lr,
        warmup_lr: config.warmup_lr,
        min_lr: config.min_lr,
        warmup_steps: config.warmup_epochs * steps_per_epoch,
        total_steps: config.epochs * steps_per_epoch,
    };
    let mut named: Vec<(String, Var)> = job.extra_vars.to_vec();
    named.extend(job.model.vars().iter().cloned());
    let mut optim = AdamW::new(&named, job.optim)?;
    let mut log = Vec::new();
    let mut start_epoch = 0;
    if let Some(dir) = job.checkpoint_dir
        && let Some(state) = load_checkpoint(&dir.join(CHECKPOINT), &named, &mut optim)?
    {
        start_epoch = state.epoch;
        log = state.log;
    }
    let vars: Vec<Var> = named.iter().map(|(_, v)| v.clone()).collect();
    let bar = progress_bar(job.hooks.progress, (config.epochs - start_epoch.min(config.epochs)) * steps_per_epoch);
    for epoch in start_epoch..config.epochs {
        let started = Instant::now();
        let (mut loss_sum, mut lr) = (0f64, 0f64);
        source.for_each_batch(epoch, &mut |batch, targets| {
            let b = targets.dim(0)?;
            let out = job.model.forward(&batch)?;
            let loss = job.loss.forward(&out.fused, &targets)?;
            let (step_lr, value) = optimise(&loss, &vars, &mut optim, &schedule, job.optim.clip_norm)?;
            lr = step_lr;
            loss_sum += value * b as f64;
            if let Some(bar) = &bar {
                bar.inc(1);
                bar.set_message(format!("{}, epoch {}/{}", job.label, epoch + 1, config.epochs));
            }
            Ok(())
        })?;
        let secs = started.elapsed().as_secs_f64();
        let test_top1 = match eval.as_mut() {
            Some(f) if config.eval_every > 0 && (epoch + 1) % config.eval_every == 0 => Some(f(job.model)?),
            _ => None,
        };
        log.push(EpochLog { epoch: epoch + 1, loss: loss_sum / n as f64, lr, samples_per_s: n as f64 / secs.max(1e-9), test_top1 });
        if let Some(dir) = job.checkpoint_dir {
            save_checkpoint(
                &dir.join(CHECKPOINT),
                &named,
                &optim,
                &CheckpointState { epoch: epoch + 1, step: optim.step_count(), log: log.clone() },
            )?;
        }
        if job.hooks.stop_after_epoch == Some(epoch + 1) && epoch + 1 < config.epochs {
            return Err(Error::TrainingStopped { epoch: epoch + 1 });
        }
    }
    if let Some(b) = bar {
        crate::progress::finish(&b, job.label, "batches", job.hooks.progress);
    }
    Ok(log)
}

/// Train `model` on cached inputs (no evaluation between epochs); returns the per-epoch
/// log. With `checkpoint_dir`, a checkpoint is written after every epoch, and a run finding
/// one there resumes after its epoch.
pub fn train(
    model: &RacModel,
    loss: &LongTailLoss,
    optim: &OptimConfig,
    config: &TrainConfig,
    inputs: &Inputs,
    checkpoint_dir: Option<&Path>,
    hooks: &TrainHooks,
) -> Result<Vec<EpochLog>> {
    let job = TrainJob { model, extra_vars: &[], loss, optim, config, checkpoint_dir, hooks, label: "training" };
    train_with(&job, &mut CachedBatches::new(inputs, config.batch_size, config.seed), None)
}

/// One optimiser step on `loss`: backward, clipping of the global norm (when `clip_norm` >
/// 0) over `vars`, AdamW at the schedule's learning rate. Returns that rate and the loss.
fn optimise(loss: &Tensor, vars: &[Var], optim: &mut AdamW, schedule: &CosineWarmup, clip_norm: f64) -> Result<(f64, f64)> {
    let mut grads = loss.backward()?;
    if clip_norm > 0.0 {
        clip_grad_norm(&mut grads, vars, clip_norm)?;
    }
    let lr = schedule.lr_at(optim.step_count());
    optim.step(&grads, lr)?;
    Ok((lr, loss.to_dtype(DType::F64)?.to_scalar::<f64>()?))
}

/// The training bar (batches, rate, time left), drawn as `mode` says.
fn progress_bar(mode: Progress, total: usize) -> Option<indicatif::ProgressBar> {
    crate::progress::bar(
        total as u64,
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} batches, {per_sec}, {eta} left")
            .expect("a valid template")
            .progress_chars("=> "),
        mode,
    )
}

/// Run the model over every item in batches; outputs are concatenated in item order.
pub fn predict(model: &RacModel, inputs: &Inputs, batch_size: usize) -> Result<Outputs> {
    let device = inputs.device();
    let n = inputs.len();
    let (mut base, mut ret, mut fused) = (Vec::new(), Vec::new(), Vec::new());
    for start in (0..n).step_by(batch_size.max(1)) {
        let len = batch_size.min(n - start);
        let idx = Tensor::arange(start as u32, (start + len) as u32, &device)?;
        let out = model.forward(&inputs.batch(&idx)?)?;
        base.extend(out.base.map(|t| t.detach()));
        ret.extend(out.retrieval.map(|t| t.detach()));
        fused.push(out.fused.detach());
    }
    let cat = |v: Vec<Tensor>| -> Result<Option<Tensor>> { if v.is_empty() { Ok(None) } else { Ok(Some(Tensor::cat(&v, 0)?)) } };
    Ok(Outputs {
        base: cat(base)?,
        retrieval: cat(ret)?,
        fused: cat(fused)?.ok_or_else(|| Error::Empty { what: "the items to predict".into(), hint: "give at least one item".into() })?,
    })
}

fn save_checkpoint(path: &Path, vars: &[(String, Var)], optim: &AdamW, state: &CheckpointState) -> Result<()> {
    let (mut tensors, _) = optim.state();
    for (name, var) in vars {
        tensors.insert(format!("model.{name}"), var.as_tensor().clone());
    }
    let metadata: HashMap<String, String> = [("state".to_string(), serde_json::to_string(state).expect("state serialises"))].into_iter().collect();
    let mut sorted: Vec<(String, Tensor)> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes = safetensors::serialize(sorted, Some(metadata))
        .map_err(|e| Error::Format { path: path.into(), message: format!("cannot serialise the checkpoint: {e}") })?;
    fsio::write_atomic(path, &bytes)
}

fn load_checkpoint(path: &Path, vars: &[(String, Var)], optim: &mut AdamW) -> Result<Option<CheckpointState>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = fsio::read(path, "checkpoint")?;
    let bad = |m: String| Error::Format { path: path.to_path_buf(), message: format!("{m}; delete the checkpoint to train the run from its start") };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a checkpoint: {e}")))?;
    let state: CheckpointState = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("state"))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad("the checkpoint has no training state".into()))?;
    let device = vars.first().map(|(_, v)| v.device().clone()).unwrap_or(Device::Cpu);
    let tensors = candle_core::safetensors::load_buffer(&bytes, &device)?;
    for (name, var) in vars {
        let t = tensors.get(&format!("model.{name}")).ok_or_else(|| bad(format!("missing tensor model.{name}")))?;
        if t.dims() != var.dims() {
            return Err(bad(format!("tensor model.{name} has shape {:?}, the model {:?}", t.dims(), var.dims())));
        }
        var.set(t)?;
    }
    optim.load_state(&tensors, state.step).map_err(bad)?;
    Ok(Some(state))
}

/// Where a run keeps its checkpoint.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join(CHECKPOINT)
}
