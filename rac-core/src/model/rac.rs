//! `RacModel`: a base branch and a retrieval branch over cached inputs, and their fusion.
//!
//! - The base branch is a linear (or MLP) head on the frozen encoder E's features: the
//!   CPU stand-in for the paper's fine-tuned ViT-B/16 plus linear layer.
//! - The retrieval branch maps the text of the k nearest neighbours to logits: either a
//!   linear layer on the cached output of a frozen text encoder T, or a trainable text
//!   encoder (learned bag-of-words, fine-tuned MiniLM) followed by a linear layer.
//! - `Mode::Rac` fuses them with [`fuse_logits`]; the single-branch modes return that
//!   branch's raw logits.
//!
//! Parameters are created from a seeded RNG, so the same seed gives bit-identical runs.

use candle_core::{DType, Device, Module, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::fusion::fuse_logits;
use crate::error::{Error, Result};

/// Which outputs the model trains and predicts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The base branch alone.
    Base,
    /// The retrieval branch alone.
    Retrieval,
    /// Both, fused.
    Rac,
}

impl Mode {
    /// Whether the mode has a base branch.
    pub fn has_base(self) -> bool {
        matches!(self, Mode::Base | Mode::Rac)
    }
    /// Whether the mode has a retrieval branch.
    pub fn has_retrieval(self) -> bool {
        matches!(self, Mode::Retrieval | Mode::Rac)
    }
}

/// The shape of the base head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// One linear layer.
    Linear,
    /// Linear, ReLU, linear.
    Mlp,
}

/// The model section of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Base only, retrieval only, or RAC.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// The base head.
    #[serde(default = "default_head")]
    pub base_head: HeadKind,
    /// Hidden width of the MLP head.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// How the heads' cached inputs (E's features, a frozen T's outputs) are scaled before
    /// the heads see them; see [`InputNorm`].
    #[serde(default = "default_input_norm")]
    pub input_norm: InputNorm,
}

/// Scaling of the frozen inputs of the linear heads. The paper fine-tunes its encoders, so
/// it has no such step; a linear probe on frozen features trains far faster on standardised
/// inputs (an L2-normalised 384-d text embedding has coordinates near 0.05, which a head
/// needs weights near 20 to read at AdamW's step sizes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputNorm {
    /// The features as cached.
    None,
    /// Per-dimension z-scores with the training split's mean and standard deviation.
    Standardise,
}

impl InputNorm {
    /// Scale `train` and `others` (all `[N, D]`) with statistics of `train` alone.
    pub fn apply(self, train: &Tensor, others: &[&Tensor]) -> Result<(Tensor, Vec<Tensor>)> {
        let scaler = self.fit(train)?;
        Ok((scaler.apply(train)?, others.iter().map(|&t| scaler.apply(t)).collect::<Result<_>>()?))
    }

    /// The scaling fitted on `train` (`[N, D]`), to apply to later inputs too (the text
    /// features of augmented images while fine-tuning).
    pub fn fit(self, train: &Tensor) -> Result<Scaler> {
        match self {
            InputNorm::None => Ok(Scaler { shift_scale: None }),
            InputNorm::Standardise => {
                let x = train.to_dtype(DType::F32)?;
                let mean = x.mean_keepdim(0)?;
                let std = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?.sqrt()?;
                // A dimension constant over the training split (a dead ReLU) is centred, not
                // scaled: dividing by its zero spread would blow up any other value.
                let std = (&std + std.lt(1e-6f64)?.to_dtype(DType::F32)?)?;
                Ok(Scaler { shift_scale: Some((mean, std)) })
            }
        }
    }
}

/// A fitted [`InputNorm`]: per-dimension z-scores, or the identity.
#[derive(Debug, Clone)]
pub struct Scaler {
    shift_scale: Option<(Tensor, Tensor)>,
}

impl Scaler {
    /// Scale `[N, D]` features (to f32).
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        match &self.shift_scale {
            None => Ok(x.clone()),
            Some((mean, std)) => {
                let x = x.to_dtype(DType::F32)?;
                let (mean, std) = (mean.to_device(x.device())?, std.to_device(x.device())?);
                Ok(x.broadcast_sub(&mean)?.broadcast_div(&std)?)
            }
        }
    }
}

fn default_mode() -> Mode {
    Mode::Rac
}
fn default_head() -> HeadKind {
    HeadKind::Linear
}
fn default_hidden() -> usize {
    512
}
fn default_input_norm() -> InputNorm {
    InputNorm::Standardise
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig { mode: default_mode(), base_head: default_head(), hidden: default_hidden(), input_norm: default_input_norm() }
    }
}

/// A trainable text encoder inside the retrieval branch (learned bag-of-words, MiniLM).
pub trait TrainableTextEncoder: Send + Sync {
    /// Encode `[B, T]` u32 token ids with a `[B, T]` f32 mask into `[B, dim]` features.
    fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor>;
    /// The output width.
    fn dim(&self) -> usize;
    /// The trainable variables, with stable names.
    fn vars(&self) -> Vec<(String, Var)>;
}

/// What the retrieval branch reads for a batch.
#[derive(Debug, Clone)]
pub enum RetrievalBatch {
    /// `[B, dim]` cached outputs of a frozen text encoder.
    Embedded(Tensor),
    /// `[B, T]` token ids and `[B, T]` mask for a trainable text encoder.
    Tokens {
        /// Token ids (u32).
        ids: Tensor,
        /// Attention mask (f32, 1 for real tokens).
        mask: Tensor,
    },
}

/// The inputs of one batch.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, D]` base features, when the mode has a base branch.
    pub base: Option<Tensor>,
    /// The retrieval input, when the mode has a retrieval branch.
    pub retrieval: Option<RetrievalBatch>,
}

/// The outputs of a forward pass.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Base-branch logits.
    pub base: Option<Tensor>,
    /// Retrieval-branch logits.
    pub retrieval: Option<Tensor>,
    /// The logits the model predicts with (fused in RAC mode).
    pub fused: Tensor,
}

/// A linear layer or a two-layer MLP.
struct Head {
    layers: Vec<candle_nn::Linear>,
}

impl Head {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.layers[0].forward(x)?;
        for layer in &self.layers[1..] {
            h = layer.forward(&h.relu()?)?;
        }
        Ok(h)
    }
}

/// Parameter factory with PyTorch's default `nn.Linear` init, from a seeded RNG.
struct Init<'a> {
    rng: rand_chacha::ChaCha8Rng,
    vars: &'a mut Vec<(String, Var)>,
    device: Device,
}

impl Init<'_> {
    fn uniform(&mut self, name: String, shape: &[usize], bound: f64) -> Result<Var> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| self.rng.random_range(-bound..bound) as f32).collect();
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, &self.device)?)?;
        self.vars.push((name, var.clone()));
        Ok(var)
    }

    fn linear(&mut self, name: &str, fan_in: usize, fan_out: usize) -> Result<candle_nn::Linear> {
        let bound = 1.0 / (fan_in as f64).sqrt();
        let w = self.uniform(format!("{name}.weight"), &[fan_out, fan_in], bound)?;
        let b = self.uniform(format!("{name}.bias"), &[fan_out], bound)?;
        Ok(candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())))
    }
}

/// The RAC model.
pub struct RacModel {
    mode: Mode,
    base: Option<Head>,
    text: Option<Box<dyn TrainableTextEncoder>>,
    retrieval: Option<Head>,
    vars: Vec<(String, Var)>,
    num_classes: usize,
}

/// The widths the model is built for.
#[derive(Debug, Clone, Copy)]
pub struct Widths {
    /// Base feature width (E's output), when the mode has a base branch.
    pub base_dim: usize,
    /// Text feature width (T's output), when the mode has a retrieval branch.
    pub text_dim: usize,
    /// Number of classes L.
    pub num_classes: usize,
}

impl RacModel {
    /// Build a model with seeded parameters. `text` is the trainable text encoder, if the
    /// retrieval branch has one; otherwise it reads cached embeddings of width `text_dim`.
    pub fn new(config: &ModelConfig, widths: Widths, text: Option<Box<dyn TrainableTextEncoder>>, seed: u64, device: &Device) -> Result<Self> {
        if widths.num_classes < 2 {
            return Err(Error::Shape { what: "a classifier's classes".into(), expected: "at least 2".into(), found: widths.num_classes.to_string() });
        }
        let mut vars = Vec::new();
        let mut init = Init { rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed), vars: &mut vars, device: device.clone() };
        let base = if config.mode.has_base() {
            let layers = match config.base_head {
                HeadKind::Linear => vec![init.linear("base.fc", widths.base_dim, widths.num_classes)?],
                HeadKind::Mlp => {
                    vec![init.linear("base.fc1", widths.base_dim, config.hidden)?, init.linear("base.fc2", config.hidden, widths.num_classes)?]
                }
            };
            Some(Head { layers })
        } else {
            None
        };
        let (text, retrieval) = if config.mode.has_retrieval() {
            let dim = text.as_ref().map(|t| t.dim()).unwrap_or(widths.text_dim);
            (text, Some(Head { layers: vec![init.linear("retrieval.fc", dim, widths.num_classes)?] }))
        } else {
            (None, None)
        };
        if let Some(t) = &text {
            vars.extend(t.vars().into_iter().map(|(n, v)| (format!("retrieval.text.{n}"), v)));
        }
        Ok(RacModel { mode: config.mode, base, text, retrieval, vars, num_classes: widths.num_classes })
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether the retrieval branch reads token ids (a trainable text encoder).
    pub fn reads_tokens(&self) -> bool {
        self.text.is_some()
    }

    /// Every trainable variable, with stable names.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The forward pass.
    pub fn forward(&self, batch: &Batch) -> Result<Outputs> {
        let base = match (&self.base, &batch.base) {
            (Some(h), Some(x)) => Some(h.forward(x)?),
            (Some(_), None) => return Err(Error::Internal("the base branch was given no base features".into())),
            _ => None,
        };
        let retrieval = match (&self.retrieval, &batch.retrieval) {
            (Some(h), Some(input)) => {
                let feats = match (input, &self.text) {
                    (RetrievalBatch::Embedded(x), None) => x.clone(),
                    (RetrievalBatch::Tokens { ids, mask }, Some(t)) => t.forward(ids, mask)?,
                    (RetrievalBatch::Embedded(_), Some(_)) => {
                        return Err(Error::Internal("the trainable text encoder was given embeddings, not token ids".into()));
                    }
                    (RetrievalBatch::Tokens { .. }, None) => {
                        return Err(Error::Internal("the retrieval branch over cached embeddings was given token ids".into()));
                    }
                };
                Some(h.forward(&feats.to_dtype(DType::F32)?)?)
            }
            (Some(_), None) => return Err(Error::Internal("the retrieval branch was given no input".into())),
            _ => None,
        };
        let fused = match (&base, &retrieval) {
            (Some(b), Some(r)) => fuse_logits(b, r)?,
            (Some(b), None) => b.clone(),
            (None, Some(r)) => r.clone(),
            (None, None) => unreachable!("every mode has a branch"),
        };
        debug_assert_eq!(fused.dim(1)?, self.num_classes);
        Ok(Outputs { base, retrieval, fused })
    }
}
