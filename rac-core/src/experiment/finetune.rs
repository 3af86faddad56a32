//! Fine-tuning runs: an experiment with a `[base_encoder]` section trains that image encoder
//! end to end as the base branch, on augmented images from the worker-thread loader.
//!
//! Per batch:
//! 1. the loader's augmented views go to the device and through the trainable encoder (f32,
//!    or bf16 on f32 masters) and the base head;
//! 2. in RAC mode, the frozen E encodes the same views, the index (on the CPU, as in the
//!    paper) is queried for each (k + 1 hits, the item itself dropped), the k neighbours'
//!    texts are joined and encoded by the frozen T (memoised per joined text), and scaled
//!    as the cached training features are (`model.input_norm`);
//! 3. the loss on the fused logits, gradient clipping over every parameter, and AdamW under
//!    the cosine warm-up schedule.
//!
//! Evaluation runs the encoder on the evaluation split with the eval transform, and reads
//! the retrieval branch's input from the neighbour cache (un-augmented queries), so its
//! record has the same three branch rows as any other run. Fine-tuning runs do not
//! checkpoint between epochs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};

use super::config::Experiment;
use super::record::RunRecord;
use super::run::{Prepared, RunEnv, assemble, join_texts, save_record, text_encoder_spec};
use crate::data::{Augment, EpochLoader, ImageBatch, LoaderConfig, SplitKind, Transform};
use crate::encoders::{ImageEncoder, ImageEncoderSpec, TextEncoder};
use crate::error::{Error, Result};
use crate::index::{ItemId, RetrievalIndex};
use crate::model::{Batch, LongTailLoss, Mode, RacModel, RetrievalBatch, Scaler, Widths};
use crate::train::trainer::{optimise, progress_bar};
use crate::train::{AdamW, CosineWarmup, EpochLog, Inputs, TrainableVit, pixels_to_device, predict};

/// The retrieval branch's input for augmented views: E, the index, T, and the scaling.
pub struct OnlineRetrieval {
    encoder: Box<dyn ImageEncoder>,
    text: Box<dyn TextEncoder>,
    scaler: Scaler,
    k: usize,
    separator: String,
    /// Joined text → T's pooled output.
    memo: HashMap<String, Vec<f32>>,
    /// The index item of each training-split position.
    item_of_row: HashMap<usize, ItemId>,
}

impl OnlineRetrieval {
    /// The retrieval side of fine-tuning: the frozen `encoder` E (whose features the index
    /// holds), the frozen `text` encoder T, the scaling of T's outputs, k, the separator of
    /// the joined texts, and the index item of each training-split position.
    pub fn new(
        encoder: Box<dyn ImageEncoder>,
        text: Box<dyn TextEncoder>,
        scaler: Scaler,
        k: usize,
        separator: &str,
        item_of_row: HashMap<usize, ItemId>,
    ) -> Self {
        OnlineRetrieval { encoder, text, scaler, k, separator: separator.into(), memo: HashMap::new(), item_of_row }
    }

    /// The text encoder's output width.
    pub fn text_dim(&self) -> usize {
        self.text.dim()
    }

    /// The side of E's input.
    pub fn input_size(&self) -> usize {
        self.encoder.input_size()
    }

    /// The scaled `[n, d]` text features of a batch's augmented views.
    pub fn features(&mut self, batch: &ImageBatch, index: &RetrievalIndex, device: &Device) -> Result<Tensor> {
        let (pixels, size) = batch.retrieval();
        let x = pixels_to_device(pixels, size, self.encoder.preprocess(), self.encoder.device(), DType::F32)?;
        let queries: Vec<f32> = self.encoder.forward(&x)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
        let own: Vec<ItemId> = batch
            .items
            .iter()
            .map(|r| self.item_of_row.get(r).copied().ok_or_else(|| Error::InvalidInput(format!("training item {r} is not in the index"))))
            .collect::<Result<_>>()?;
        let hits = index.search_hits(&queries, index.dim(), self.k, true, Some(&own))?;
        let texts = join_texts(&index.resolve(hits)?, self.k, &self.separator);
        let mut missing: Vec<&str> = texts.iter().map(String::as_str).filter(|t| !self.memo.contains_key(*t)).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let encoded: Vec<f32> = self.text.encode(&missing)?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
            let d = self.text.dim();
            for (t, row) in missing.iter().zip(encoded.chunks(d)) {
                self.memo.insert(t.to_string(), row.to_vec());
            }
        }
        let rows: Vec<f32> = texts.iter().flat_map(|t| self.memo[t].iter().copied()).collect();
        self.scaler.apply(&Tensor::from_vec(rows, (texts.len(), self.text.dim()), device)?)
    }
}

/// Fine-tune the encoder of `exp.base_encoder` (loaded from its folder) and save the record.
pub fn run_finetune(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<RunRecord> {
    let cfg = exp.base_encoder.as_ref().ok_or_else(|| Error::InvalidInput("the experiment has no [base_encoder] section".into()))?;
    let device = exp.train.device.resolve("train.device")?;
    let vit = TrainableVit::load(cfg, &device)?;
    run_finetune_with(exp, prep, env, &vit)
}

/// [`run_finetune`] with the encoder given (a small one in tests, random weights in benches).
pub fn run_finetune_with(exp: &Experiment, prep: &mut Prepared, env: &RunEnv, vit: &TrainableVit) -> Result<RunRecord> {
    let started = Instant::now();
    let cfg = exp.base_encoder.clone().ok_or_else(|| Error::InvalidInput("the experiment has no [base_encoder] section".into()))?;
    let device = exp.train.device.resolve("train.device")?;
    let num_classes = prep.dataset.num_classes();
    let counts = prep.train_counts();

    // The retrieval side: the eval inputs through the neighbour cache, and what the
    // augmented views need.
    let (mut online, eval_text) = if exp.model.mode == Mode::Rac {
        let mut rexp = exp.clone();
        rexp.model.mode = Mode::Retrieval;
        rexp.base_encoder = None;
        let asm = assemble(&rexp, prep, env)?;
        let (Some(RetrievalBatch::Embedded(eval_text)), Some(scaler)) = (asm.eval.retrieval, asm.retrieval_norm) else {
            return Err(Error::InvalidInput("fine-tuning needs a frozen text encoder's cached features".into()));
        };
        let encoder = ImageEncoderSpec::parse(&exp.encoder.image)?.load(&env.cache, &device)?;
        let vocabulary: Vec<&str> = prep.dataset.class_texts.iter().map(String::as_str).collect();
        let text = text_encoder_spec(&exp.retrieval.text_encoder, exp.retrieval.max_tokens, exp.train.seed)?.load(&env.cache, &vocabulary, &device)?;
        let first = prep.index.source_ids("train")?.start;
        let item_of_row = prep.train_rows.iter().enumerate().map(|(j, &r)| (r, first + j as ItemId)).collect();
        let online = OnlineRetrieval::new(encoder, text, scaler, exp.retrieval.k, &exp.retrieval.separator, item_of_row);
        (Some(online), Some(eval_text))
    } else {
        (None, None)
    };

    let widths = Widths { base_dim: vit.dim(), text_dim: online.as_ref().map_or(0, |o| o.text.dim()), num_classes };
    let model = RacModel::new(&exp.model, widths, None, exp.train.seed, &device)?;
    let loss_fn = LongTailLoss::new(&exp.loss, &counts, &device)?;
    let mut vars: Vec<(String, Var)> = vit.vars().iter().map(|(n, v)| (format!("base.encoder.{n}"), v.clone())).collect();
    vars.extend(model.vars().iter().cloned());
    let plain_vars: Vec<Var> = vars.iter().map(|(_, v)| v.clone()).collect();
    let mut optim = AdamW::new(&vars, &exp.optim)?;

    let t = &exp.train;
    let n_train = prep.train_rows.len();
    let steps_per_epoch = n_train.div_ceil(t.batch_size);
    let schedule = CosineWarmup {
        lr: exp.optim.lr,
        warmup_lr: t.warmup_lr,
        min_lr: t.min_lr,
        warmup_steps: t.warmup_epochs * steps_per_epoch,
        total_steps: t.epochs * steps_per_epoch,
    };
    let train_split = Arc::new(prep.dataset.split(SplitKind::Train).ok_or_else(|| Error::InvalidInput("the data set has no training split".into()))?.clone());
    let augment = Augment::new(cfg.augment.clone(), vit.preprocess().clone())?;
    let transform = Arc::new(Transform::Train(augment.clone()));
    let loader = LoaderConfig { batch_size: t.batch_size, workers: cfg.workers, prefetch: cfg.prefetch, seed: t.seed, shuffle: true };
    let retrieval_size = online.as_ref().map(|o| o.input_size() as u32);
    let bar = progress_bar(env.progress, t.epochs * steps_per_epoch);
    let mut log = Vec::new();
    for epoch in 0..t.epochs {
        let epoch_started = Instant::now();
        let (mut loss_sum, mut lr) = (0f64, 0f64);
        for batch in EpochLoader::start(train_split.clone(), Some(&prep.train_rows), transform.clone(), retrieval_size, loader, epoch)? {
            let batch = batch?;
            let pixels = pixels_to_device(&batch.pixels, batch.size, vit.preprocess(), &device, vit.precision().dtype())?;
            let base = vit.forward(&pixels)?;
            let retrieval = match &mut online {
                Some(o) => Some(RetrievalBatch::Embedded(o.features(&batch, &prep.index, &device)?)),
                None => None,
            };
            let out = model.forward(&Batch { base: Some(base), retrieval })?;
            let targets = Tensor::from_slice(&batch.labels, batch.len(), &device)?;
            let loss = loss_fn.forward(&out.fused, &targets)?;
            let (step_lr, value) = optimise(&loss, &plain_vars, &mut optim, &schedule, exp.optim.clip_norm)?;
            lr = step_lr;
            loss_sum += value * batch.len() as f64;
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!("fine-tuning, epoch {}/{}", epoch + 1, t.epochs));
            }
        }
        let secs = epoch_started.elapsed().as_secs_f64();
        log.push(EpochLog { epoch: epoch + 1, loss: loss_sum / n_train as f64, lr, samples_per_s: n_train as f64 / secs.max(1e-9), test_top1: None });
    }
    if let Some(b) = bar {
        crate::progress::finish(&b, "fine-tuning", "batches");
    }

    // Evaluation: the fine-tuned encoder on the eval transform; retrieval from the cache.
    let eval_kind = if prep.eval_split == "val" { SplitKind::Train } else { SplitKind::Test };
    let eval_split = Arc::new(prep.dataset.split(eval_kind).ok_or_else(|| Error::InvalidInput(format!("the data set has no {} split", eval_kind.name())))?.clone());
    let eval_loader = LoaderConfig { batch_size: cfg.eval_batch, shuffle: false, ..loader };
    let mut features = Vec::new();
    for batch in EpochLoader::start(eval_split, Some(&prep.eval_rows), Arc::new(Transform::Eval(augment.eval_preprocess())), None, eval_loader, 0)? {
        let batch = batch?;
        let pixels = pixels_to_device(&batch.pixels, batch.size, vit.preprocess(), &device, vit.precision().dtype())?;
        features.push(vit.forward(&pixels)?.detach());
    }
    let inputs = Inputs {
        base: Some(Tensor::cat(&features, 0)?),
        retrieval: eval_text.map(RetrievalBatch::Embedded),
        labels: prep.eval.labels.clone(),
    };
    let out = predict(&model, &inputs, 1024)?;
    save_record(exp, prep, env, started, &out, &inputs.labels, &counts, &log)
}
