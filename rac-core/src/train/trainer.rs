//! The training loop: seeded shuffling, mini-batches over cached inputs, the loss on the
//! model's predicting output, gradient clipping, AdamW with the cosine warm-up schedule,
//! a per-epoch log, and a checkpoint after every epoch from which a killed run resumes.

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
use crate::eval::{Branch, evaluate};
use crate::fsio;
use crate::model::{Batch, LongTailLoss, Outputs, RacModel, RetrievalBatch};

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
}

fn default_epochs() -> usize {
    30
}
fn default_batch() -> usize {
    200
}
fn default_warmup_epochs() -> usize {
    5
}
fn default_small_lr() -> f64 {
    1e-7
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
            Some(RetrievalBatch::Tokens { ids, mask }) => {
                Some(RetrievalBatch::Tokens { ids: ids.to_device(device)?, mask: mask.to_device(device)? })
            }
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
    /// Show a progress bar.
    pub progress: bool,
}

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    epoch: usize,
    step: usize,
    log: Vec<EpochLog>,
}

const CHECKPOINT: &str = "checkpoint.safetensors";

/// Train `model` on `train`; returns the per-epoch log. With `checkpoint_dir`, a checkpoint
/// is written after every epoch, and a run finding one there resumes after its epoch.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &RacModel,
    loss_fn: &LongTailLoss,
    optim_config: &OptimConfig,
    config: &TrainConfig,
    train: &Inputs,
    test: Option<&Inputs>,
    checkpoint_dir: Option<&Path>,
    hooks: &TrainHooks,
) -> Result<Vec<EpochLog>> {
    if train.is_empty() {
        return Err(Error::InvalidInput("the training split is empty".into()));
    }
    if config.batch_size == 0 || config.epochs == 0 {
        return Err(Error::InvalidInput("train.batch_size and train.epochs must be at least 1".into()));
    }
    let device = train.device();
    let n = train.len();
    let steps_per_epoch = n.div_ceil(config.batch_size);
    let schedule = CosineWarmup {
        lr: optim_config.lr,
        warmup_lr: config.warmup_lr,
        min_lr: config.min_lr,
        warmup_steps: config.warmup_epochs * steps_per_epoch,
        total_steps: config.epochs * steps_per_epoch,
    };
    let mut optim = AdamW::new(model.vars(), optim_config)?;
    let mut log = Vec::new();
    let mut start_epoch = 0;
    if let Some(dir) = checkpoint_dir {
        if let Some(state) = load_checkpoint(&dir.join(CHECKPOINT), model, &mut optim)? {
            start_epoch = state.epoch;
            log = state.log;
        }
    }
    let labels_u32: Vec<u32> = train.labels.iter().map(|&l| l as u32).collect();
    let vars: Vec<Var> = model.vars().iter().map(|(_, v)| v.clone()).collect();
    let bar = progress_bar(hooks.progress, (config.epochs - start_epoch.min(config.epochs)) * steps_per_epoch);
    for epoch in start_epoch..config.epochs {
        let started = Instant::now();
        let mut order: Vec<u32> = (0..n as u32).collect();
        // A fresh RNG per epoch makes a resumed run shuffle exactly as an uninterrupted one.
        order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(config.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)));
        let (mut loss_sum, mut lr) = (0f64, 0f64);
        for chunk in order.chunks(config.batch_size) {
            let idx = Tensor::from_slice(chunk, chunk.len(), &device)?;
            let batch = train.batch(&idx)?;
            let targets = Tensor::from_vec(chunk.iter().map(|&i| labels_u32[i as usize]).collect::<Vec<u32>>(), chunk.len(), &device)?;
            let out = model.forward(&batch)?;
            let loss = loss_fn.forward(&out.fused, &targets)?;
            let (step_lr, value) = optimise(&loss, &vars, &mut optim, &schedule, optim_config.clip_norm)?;
            lr = step_lr;
            loss_sum += value * chunk.len() as f64;
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!("epoch {}/{}", epoch + 1, config.epochs));
            }
        }
        let secs = started.elapsed().as_secs_f64();
        let test_top1 = match test {
            Some(t) if config.eval_every > 0 && (epoch + 1) % config.eval_every == 0 => {
                let out = predict(model, t, config.batch_size.max(256))?;
                Some(evaluate(Branch::Fused, &out.fused, &t.labels, &class_counts(train, &out.fused)?)?.top1)
            }
            _ => None,
        };
        log.push(EpochLog { epoch: epoch + 1, loss: loss_sum / n as f64, lr, samples_per_s: n as f64 / secs.max(1e-9), test_top1 });
        if let Some(dir) = checkpoint_dir {
            save_checkpoint(&dir.join(CHECKPOINT), model, &optim, &CheckpointState { epoch: epoch + 1, step: optim.step_count(), log: log.clone() })?;
        }
        if hooks.stop_after_epoch == Some(epoch + 1) && epoch + 1 < config.epochs {
            return Err(Error::InvalidInput(format!("training stopped after epoch {} (hook)", epoch + 1)));
        }
    }
    if let Some(b) = bar {
        crate::progress::finish(&b, "training", "batches");
    }
    Ok(log)
}

/// One optimiser step on `loss`: backward, clipping of the global norm (when `clip_norm` >
/// 0) over `vars`, AdamW at the schedule's learning rate. Returns that rate and the loss.
pub(crate) fn optimise(loss: &Tensor, vars: &[Var], optim: &mut AdamW, schedule: &CosineWarmup, clip_norm: f64) -> Result<(f64, f64)> {
    let mut grads = loss.backward()?;
    if clip_norm > 0.0 {
        clip_grad_norm(&mut grads, vars, clip_norm)?;
    }
    let lr = schedule.lr_at(optim.step_count());
    optim.step(&grads, lr)?;
    Ok((lr, loss.to_dtype(DType::F64)?.to_scalar::<f64>()?))
}

fn class_counts(train: &Inputs, logits: &Tensor) -> Result<Vec<usize>> {
    let mut counts = vec![0; logits.dim(1)?];
    for &l in &train.labels {
        counts[l] += 1;
    }
    Ok(counts)
}

/// The training bar (batches, rate, time left), when `show`.
pub(crate) fn progress_bar(show: bool, total: usize) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    Some(crate::progress::bar(
        total as u64,
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} batches, {per_sec}, {eta} left")
            .expect("a valid template")
            .progress_chars("=> "),
    ))
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
    Ok(Outputs { base: cat(base)?, retrieval: cat(ret)?, fused: cat(fused)?.ok_or_else(|| Error::InvalidInput("no items to predict".into()))? })
}

fn save_checkpoint(path: &Path, model: &RacModel, optim: &AdamW, state: &CheckpointState) -> Result<()> {
    let (mut tensors, _) = optim.state();
    for (name, var) in model.vars() {
        tensors.insert(format!("model.{name}"), var.as_tensor().clone());
    }
    let metadata: HashMap<String, String> =
        [("state".to_string(), serde_json::to_string(state).expect("state serialises"))].into_iter().collect();
    let mut sorted: Vec<(String, Tensor)> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes = safetensors::serialize(sorted, Some(metadata))
        .map_err(|e| Error::Format { path: path.into(), message: format!("cannot serialise the checkpoint: {e}") })?;
    fsio::write_atomic(path, &bytes)
}

fn load_checkpoint(path: &Path, model: &RacModel, optim: &mut AdamW) -> Result<Option<CheckpointState>> {
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = fsio::read(path, "checkpoint")?;
    let bad = |m: String| Error::Format { path: path.to_path_buf(), message: m };
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a checkpoint: {e}")))?;
    let state: CheckpointState = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("state"))
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| bad("the checkpoint has no training state".into()))?;
    let device = model.vars().first().map(|(_, v)| v.device().clone()).unwrap_or(Device::Cpu);
    let tensors = candle_core::safetensors::load_buffer(&bytes, &device)?;
    for (name, var) in model.vars() {
        let t = tensors.get(&format!("model.{name}")).ok_or_else(|| bad(format!("missing tensor model.{name}")))?;
        if t.dims() != var.dims() {
            return Err(bad(format!("tensor model.{name} has shape {:?}, the model {:?}", t.dims(), var.dims())));
        }
        var.set(t)?;
    }
    optim.load_state(&tensors, state.step)?;
    Ok(Some(state))
}

/// Where a run keeps its checkpoint.
pub fn checkpoint_path(run_dir: &Path) -> PathBuf {
    run_dir.join(CHECKPOINT)
}
