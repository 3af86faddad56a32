//! Fine-tuning runs: an experiment with a `[base_encoder]` section trains that image encoder
//! end to end as the base branch, on augmented images from the worker-thread loader.
//!
//! Per batch:
//! 1. the loader's augmented views go to the device and through the trainable encoder (f32,
//!    or bf16 on f32 masters) and the base head;
//! 2. in RAC mode, the frozen E encodes the same views, the index (on the CPU, as in the
//!    paper) is queried for each as the retrieval request says (k + 1 hits and the item
//!    itself dropped, with `retrieval.drop_self`), the k neighbours'
//!    texts are joined and encoded by the frozen T (memoised per joined text), and scaled
//!    as the cached training features are (`model.input_norm`);
//! 3. the loss on the fused logits, gradient clipping over every parameter, and AdamW under
//!    the cosine warm-up schedule.
//!
//! Evaluation runs the encoder on the evaluation split with the eval transform, and reads
//! the retrieval branch's input from the neighbour cache (un-augmented queries), so its
//! record has the same three branch rows as any other run. The loop is the shared one of
//! `train`, so a fine-tuning run checkpoints after every epoch (the encoder's weights with
//! the heads') and a killed run resumes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};

use super::config::Experiment;
use super::prepared::{Prepared, RunEnv};
use super::record::{RunRecord, Study, save_run};
use super::texts::{FrozenText, retrieval_inputs};
use crate::data::{EpochLoader, ImageBatch, LoaderConfig, Split, SplitKind, Transform};
use crate::encoders::ImageEncoder;
use crate::error::{Error, Result};
use crate::fsio;
use crate::index::{ItemId, Neighbours, Queries, RetrievalIndex};
use crate::model::{Batch, LongTailLoss, Mode, RacModel, RetrievalBatch, Widths};
use crate::train::{BatchSource, Inputs, TrainHooks, TrainJob, TrainableVit, pixels_to_device, predict, train_with};

/// The retrieval branch's input for augmented views: E, the index, and the frozen T with
/// its scaling, searched and joined as the experiment's retrieval request says.
pub struct OnlineRetrieval {
    encoder: Box<dyn ImageEncoder>,
    text: FrozenText,
    /// Joined text → T's pooled output.
    memo: HashMap<String, Vec<f32>>,
    /// The index item of each training-split position.
    item_of_row: HashMap<usize, ItemId>,
}

impl OnlineRetrieval {
    /// The retrieval side of fine-tuning: the frozen `encoder` E (whose features the index
    /// holds), the frozen T with its scaling and the request, and the index item of each
    /// training-split position.
    pub fn new(encoder: Box<dyn ImageEncoder>, text: FrozenText, item_of_row: HashMap<usize, ItemId>) -> Self {
        OnlineRetrieval { encoder, text, memo: HashMap::new(), item_of_row }
    }

    /// The text encoder's output width.
    pub fn text_dim(&self) -> usize {
        self.text.dim()
    }

    /// The side of E's input.
    pub fn input_size(&self) -> usize {
        self.encoder.input_size()
    }

    /// The neighbours of a batch's augmented views: `retrieval.k` of them, a view's own
    /// item dropped when `retrieval.drop_self` says so and the index holds it (a thinned or
    /// external index may not).
    pub fn neighbours(&self, batch: &ImageBatch, index: &RetrievalIndex) -> Result<Vec<Neighbours>> {
        let (pixels, size) = batch.retrieval();
        let x = pixels_to_device(pixels, size, self.encoder.preprocess(), self.encoder.device(), DType::F32)?;
        let vectors: Vec<f32> = self.encoder.forward(&x)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
        let items: Vec<Option<ItemId>> = batch.items.iter().map(|r| self.item_of_row.get(r).copied()).collect();
        let queries = Queries::Identified { vectors: &vectors, dim: index.dim(), items: &items };
        index.neighbours(&queries, &self.text.request().search)
    }

    /// The scaled `[n, d]` text features of a batch's augmented views.
    pub fn features(&mut self, batch: &ImageBatch, index: &RetrievalIndex, device: &Device) -> Result<Tensor> {
        let nb = self.neighbours(batch, index)?;
        self.text.memoised(&nb, &mut self.memo, device)
    }
}

/// The error of a fine-tuning run asked of an experiment without `[base_encoder]`.
fn no_base_encoder() -> Error {
    Error::Setting { field: "base_encoder".into(), message: "is missing: a fine-tuning run needs the section (its `encoder` folder at least)".into() }
}

/// The error of a split the data set lacks.
fn missing_split(prep: &Prepared, kind: SplitKind) -> Error {
    Error::MissingSplit { dataset: prep.dataset.name().to_string(), split: kind.name().to_string(), hint: None }
}

/// Fine-tune the encoder of `exp.base_encoder` (loaded from its folder) and save the record.
pub fn run_finetune(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<RunRecord> {
    let cfg = exp.base_encoder.as_ref().ok_or_else(no_base_encoder)?;
    let device = exp.train.device.resolve("train.device")?;
    let vit = TrainableVit::load(cfg, &device)?;
    run_finetune_with(exp, prep, env, &vit)
}

/// Augmented training images through the loader, the trainable encoder (the base branch's
/// input) and, in RAC mode, online retrieval (the retrieval branch's).
struct AugmentedBatches<'a> {
    split: Arc<Split>,
    rows: &'a [usize],
    transform: Arc<Transform>,
    loader: LoaderConfig,
    vit: &'a TrainableVit,
    online: Option<OnlineRetrieval>,
    index: &'a RetrievalIndex,
    device: Device,
}

impl BatchSource for AugmentedBatches<'_> {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn for_each_batch(&mut self, epoch: usize, step: &mut dyn FnMut(Batch, Tensor) -> Result<()>) -> Result<()> {
        let retrieval_size = self.online.as_ref().map(|o| o.input_size() as u32);
        let batches = EpochLoader::start(self.split.clone(), Some(self.rows), self.transform.clone(), retrieval_size, self.loader, epoch)?;
        for batch in batches {
            let batch = batch?;
            let pixels = pixels_to_device(&batch.pixels, batch.size, self.vit.preprocess(), &self.device, self.vit.precision().dtype())?;
            let base = self.vit.forward(&pixels)?;
            let retrieval = match &mut self.online {
                Some(o) => Some(RetrievalBatch::Embedded(o.features(&batch, self.index, &self.device)?)),
                None => None,
            };
            let targets = Tensor::from_slice(&batch.labels, batch.len(), &self.device)?;
            step(Batch { base: Some(base), retrieval }, targets)?;
        }
        Ok(())
    }
}

/// [`run_finetune`] with the encoder given (a small one in tests, random weights in benches).
pub fn run_finetune_with(exp: &Experiment, prep: &mut Prepared, env: &RunEnv, vit: &TrainableVit) -> Result<RunRecord> {
    let started = Instant::now();
    let cfg = exp.base_encoder.clone().ok_or_else(no_base_encoder)?;
    let device = exp.train.device.resolve("train.device")?;
    let counts = prep.train_counts.clone();

    // The retrieval side: the eval inputs through the neighbour cache, and what the
    // augmented views need.
    let (online, eval_text) = if exp.model.mode == Mode::Rac {
        let r = retrieval_inputs(exp, prep, env)?;
        let (RetrievalBatch::Embedded(eval_text), Some(text)) = (r.eval, r.frozen) else {
            return Err(Error::Setting {
                field: "retrieval.finetune_text".into(),
                message: "fine-tuning the base encoder reads the neighbours' texts through a frozen T; set it to false".into(),
            });
        };
        let encoder = exp.image_encoder()?.load(&env.cache, &device)?;
        let own = prep.train_items()?;
        let item_of_row = prep.train_rows.iter().zip(own).filter_map(|(&r, id)| id.map(|id| (r, id))).collect();
        let online = OnlineRetrieval::new(encoder, text, item_of_row);
        (Some(online), Some(eval_text.to_device(&device)?))
    } else {
        (None, None)
    };

    let widths = Widths { base_dim: vit.dim(), text_dim: online.as_ref().map_or(0, |o| o.text_dim()), num_classes: prep.dataset.num_classes() };
    let model = RacModel::new(&exp.model, widths, None, exp.train.seed, &device)?;
    let loss = LongTailLoss::new(&exp.loss, &counts, &device)?;
    let encoder_vars: Vec<(String, Var)> = vit.vars().iter().map(|(n, v)| (format!("base.encoder.{n}"), v.clone())).collect();

    let t = &exp.train;
    let train_split = Arc::new(prep.dataset.split(SplitKind::Train).ok_or_else(|| missing_split(prep, SplitKind::Train))?.clone());
    let augment = crate::data::Augment::new(cfg.augment.clone(), vit.preprocess().clone())?;
    let loader = LoaderConfig { batch_size: t.batch_size, workers: cfg.workers, prefetch: cfg.prefetch, seed: t.seed, shuffle: true };
    let mut source = AugmentedBatches {
        split: train_split,
        rows: &prep.train_rows,
        transform: Arc::new(Transform::Train(augment.clone())),
        loader,
        vit,
        online,
        index: &prep.index,
        device: device.clone(),
    };
    let checkpoint_dir = env.checkpoint_dir(exp);
    fsio::create_dir_all(&checkpoint_dir)?;
    let hooks = TrainHooks { progress: env.progress, ..env.hooks.clone() };
    let job = TrainJob {
        model: &model,
        extra_vars: &encoder_vars,
        loss: &loss,
        optim: &exp.optim,
        config: t,
        checkpoint_dir: Some(&checkpoint_dir),
        hooks: &hooks,
        label: "fine-tuning",
    };
    let log = train_with(&job, &mut source, None)?;

    // Evaluation: the fine-tuned encoder on the eval transform; retrieval from the cache.
    let eval_kind = prep.eval_split.source();
    let eval_split = Arc::new(prep.dataset.split(eval_kind).ok_or_else(|| missing_split(prep, eval_kind))?.clone());
    let eval_loader = LoaderConfig { batch_size: cfg.eval_batch, shuffle: false, ..loader };
    let mut features = Vec::new();
    for batch in EpochLoader::start(eval_split, Some(&prep.eval_rows), Arc::new(Transform::Eval(augment.eval_preprocess())), None, eval_loader, 0)? {
        let batch = batch?;
        let pixels = pixels_to_device(&batch.pixels, batch.size, vit.preprocess(), &device, vit.precision().dtype())?;
        features.push(vit.forward(&pixels)?.detach());
    }
    let inputs =
        Inputs { base: Some(Tensor::cat(&features, 0)?), retrieval: eval_text.map(RetrievalBatch::Embedded), labels: prep.eval.labels.clone() };
    let out = predict(&model, &inputs, t.eval_batch_size)?;
    save_run(exp, prep, env, started, &out, &log, &checkpoint_dir, Study::default())
}
