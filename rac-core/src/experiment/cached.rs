//! The runner of a head on cached features (every experiment without `[base_encoder]`):
//! the base branch reads E's cached features, the retrieval branch T's features of the
//! neighbours' texts; the model trains in the shared loop with a checkpoint after every
//! epoch, is evaluated on every branch, and its record is saved.

use std::path::PathBuf;
use std::time::Instant;

use super::config::Experiment;
use super::prepared::{Prepared, RunEnv};
use super::record::{RunRecord, Study, save_run};
use super::texts::{FrozenText, retrieval_inputs};
use crate::error::Result;
use crate::eval::{Branch, evaluate};
use crate::fsio;
use crate::model::{LongTailLoss, Outputs, RacModel, Widths};
use crate::train::{CachedBatches, EpochLog, Inputs, TrainHooks, TrainJob, predict, train_with};

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
    /// T, when it is frozen, with the scaling fitted on the training split's features: a
    /// trained model reads new neighbours' texts through it.
    pub frozen_text: Option<FrozenText>,
}

/// Build the model and its inputs for `exp`: the base features, the neighbours' joined texts
/// (encoded by a frozen T, cached, or tokenised for a trainable one), scaled as
/// `model.input_norm` says.
pub fn assemble(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<Assembled> {
    let device = exp.train.device.resolve("train.device")?;
    let counts = prep.train_counts.clone();
    let mode = exp.model.mode;
    let (mut train_in, mut eval_in) = (
        Inputs { base: None, retrieval: None, labels: prep.train.labels.clone() },
        Inputs { base: None, retrieval: None, labels: prep.eval.labels.clone() },
    );
    let (mut text, mut text_dim, mut frozen_text) = (None, 0, None);
    if mode.has_retrieval() {
        let r = retrieval_inputs(exp, prep, env)?;
        (train_in.retrieval, eval_in.retrieval) = (Some(r.train), Some(r.eval));
        (text, text_dim, frozen_text) = (r.trainable, r.text_dim, r.frozen);
    }
    if mode.has_base() {
        let (tr, mut ev) = exp.model.input_norm.apply(&prep.train.vectors, &[&prep.eval.vectors])?;
        (train_in.base, eval_in.base) = (Some(tr), ev.pop());
    }
    let (train_in, eval_in) = (train_in.to_device(&device)?, eval_in.to_device(&device)?);
    let widths = Widths { base_dim: prep.train.dim(), text_dim, num_classes: prep.dataset.num_classes() };
    let model = RacModel::new(&exp.model, widths, text, exp.train.seed, &device)?;
    let loss = LongTailLoss::new(&exp.loss, &counts, &device)?;
    Ok(Assembled { model, loss, train: train_in, eval: eval_in, counts, frozen_text })
}

/// A head trained on cached inputs, with what evaluating it again needs.
pub struct Trained {
    /// The model and its inputs (the trained weights are the model's).
    pub assembled: Assembled,
    /// Its outputs on the evaluation items.
    pub outputs: Outputs,
    /// The training log.
    pub log: Vec<EpochLog>,
    /// Its checkpoint folder, dropped once the record is saved.
    pub checkpoint_dir: PathBuf,
    /// When the run started.
    pub started: Instant,
}

/// Train a head on cached inputs. A checkpoint is kept in the runs folder after every epoch,
/// so a killed run resumes; it goes once the record is saved.
pub fn train_cached(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<Trained> {
    let started = Instant::now();
    let assembled = assemble(exp, prep, env)?;
    let checkpoint_dir = env.checkpoint_dir(exp);
    fsio::create_dir_all(&checkpoint_dir)?;
    let hooks = TrainHooks { progress: env.progress, ..env.hooks.clone() };
    let Assembled { model, loss, train: train_in, eval: eval_in, counts, .. } = &assembled;
    let job = TrainJob {
        model,
        extra_vars: &[],
        loss,
        optim: &exp.optim,
        config: &exp.train,
        checkpoint_dir: Some(&checkpoint_dir),
        hooks: &hooks,
        label: "training",
    };
    let eval_batch = exp.train.eval_batch_size;
    let mut eval_fused = |m: &RacModel| -> Result<f64> {
        let out = predict(m, eval_in, eval_batch)?;
        Ok(evaluate(Branch::Fused, &out.fused, &eval_in.labels, counts)?.top1)
    };
    let mut source = CachedBatches::new(train_in, exp.train.batch_size, exp.train.seed);
    let log = train_with(&job, &mut source, Some(&mut eval_fused))?;
    let outputs = predict(model, eval_in, eval_batch)?;
    Ok(Trained { assembled, outputs, log, checkpoint_dir, started })
}

/// Train a head on cached inputs, evaluate it and save the record.
pub fn run_cached(exp: &Experiment, prep: &mut Prepared, env: &RunEnv) -> Result<RunRecord> {
    let t = train_cached(exp, prep, env)?;
    save_run(exp, prep, env, t.started, &t.outputs, &t.log, &t.checkpoint_dir, Study::default())
}
