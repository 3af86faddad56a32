//! Fine-tuning the base branch: a trainable image encoder (ViT-B/16 in the paper) under the
//! linear base head, trained end to end on augmented images, on the GPU when there is one.
//!
//! - [`FinetuneConfig`] is an experiment's `[base_encoder]` section: which encoder, the
//!   precision, the loader's workers and the augmentation.
//! - [`TrainableVit`] holds the encoder's f32 master weights as `Var`s. Under
//!   [`Precision::Bf16`] each step casts them to bf16 and runs the forward and backward
//!   passes in bf16 (mixed precision: the casts are part of the graph, so the gradients and
//!   AdamW's update land on the f32 masters, as with PyTorch's autocast).
//! - [`pixels_to_device`] turns the loader's `u8` views into normalised input on the device,
//!   so only a quarter of the bytes cross the bus.
//!
//! The batch source that feeds augmented views (and queries the index for each) to the
//! shared training loop is `experiment::finetune`.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::data::{AugmentConfig, Preprocess};
use crate::encoders::{ImageEncoder, VitConfig, VitEncoder, Weights};
use crate::error::{Error, Result};

/// The precision of the fine-tuned encoder's forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    F32,
    /// bf16 compute on f32 master weights.
    Bf16,
}

impl Precision {
    /// The compute type.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }
}

/// An experiment's `[base_encoder]` section: fine-tune this image encoder as the base branch
/// instead of a head on cached features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// `vit:<folder>`: a Hugging Face ViT folder (`config.json`, `model.safetensors`).
    pub image: String,
    /// `f32` or `bf16` (mixed precision, f32 master weights).
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// Loader threads that decode and augment images.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Batches each loader thread prepares ahead.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Images per forward pass when the fine-tuned encoder evaluates.
    #[serde(default = "default_eval_batch")]
    pub eval_batch: usize,
    /// The training augmentation (the paper's low-magnitude recipe by default).
    #[serde(default)]
    pub augment: AugmentConfig,
}

fn default_precision() -> Precision {
    Precision::F32
}
fn default_workers() -> usize {
    4
}
fn default_prefetch() -> usize {
    2
}
fn default_eval_batch() -> usize {
    64
}

impl FinetuneConfig {
    /// A section for `image` with every other default.
    pub fn new(image: &str) -> Self {
        FinetuneConfig {
            image: image.into(),
            precision: default_precision(),
            workers: default_workers(),
            prefetch: default_prefetch(),
            eval_batch: default_eval_batch(),
            augment: AugmentConfig::default(),
        }
    }

    /// Check the values; errors name the field.
    pub fn validate(&self) -> Result<()> {
        self.folder()?;
        for (field, v) in [("workers", self.workers), ("prefetch", self.prefetch), ("eval_batch", self.eval_batch)] {
            if v == 0 {
                return Err(Error::Setting { field: field.into(), message: "must be at least 1".into() });
            }
        }
        self.augment.validate()
    }

    /// Check that the encoder's folder holds `config.json` and `model.safetensors`, before
    /// a run spends time on features and the index.
    pub fn check_files(&self) -> Result<()> {
        let dir = self.folder()?;
        for (file, what) in [("config.json", "ViT config"), ("model.safetensors", "ViT weights")] {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(Error::MissingFile {
                    what: format!("base_encoder.image: {what}"),
                    path,
                    hint: Some("point base_encoder.image at a Hugging Face ViT folder (config.json + model.safetensors)".into()),
                });
            }
        }
        Ok(())
    }

    /// The ViT folder of `image`.
    pub fn folder(&self) -> Result<PathBuf> {
        match self.image.split_once(':') {
            Some(("vit", dir)) if !dir.is_empty() => Ok(PathBuf::from(dir)),
            _ => Err(Error::Setting {
                field: "image".into(),
                message: format!("`{}` is not a fine-tunable encoder; use `vit:<folder>` (a Hugging Face ViT folder)", self.image),
            }),
        }
    }
}

/// A ViT whose parameters train: f32 master weights, computed in f32 or bf16.
pub struct TrainableVit {
    varmap: VarMap,
    vars: Vec<(String, Var)>,
    /// The encoder over the f32 masters themselves (used as is under f32).
    master: VitEncoder,
    identity: Weights,
    config: VitConfig,
    preprocess: Preprocess,
    precision: Precision,
}

impl TrainableVit {
    /// Fine-tune from `weights` (their tensors initialise the masters).
    pub fn new(weights: &Weights, config: VitConfig, preprocess: Preprocess, precision: Precision) -> Result<Self> {
        if precision == Precision::Bf16 && weights.device().is_cpu() {
            return Err(Error::Setting {
                field: "base_encoder.precision".into(),
                message: "`bf16` needs a CUDA device (candle has no bf16 matrix product on the CPU); use `f32` there".into(),
            });
        }
        let varmap = VarMap::new();
        let master = VitEncoder::trainable(weights, config.clone(), preprocess.clone(), &varmap, DType::F32)?;
        let mut vars: Vec<(String, Var)> = varmap.data().lock().expect("varmap lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(TrainableVit { varmap, vars, master, identity: weights.with_tensors(HashMap::new()), config, preprocess, precision })
    }

    /// Load a Hugging Face ViT folder for fine-tuning.
    pub fn load(config: &FinetuneConfig, device: &Device) -> Result<Self> {
        let (weights, vit, preprocess) = VitEncoder::read_folder(&config.folder()?, None, device)?;
        Self::new(&weights, vit, preprocess, config.precision)
    }

    /// The trainable parameters, sorted by name.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The parameters' map (for saving the fine-tuned weights).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The feature width.
    pub fn dim(&self) -> usize {
        self.config.hidden_size
    }

    /// The normalisation and input size the weights expect.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The precision.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// `[n, d]` f32 features of normalised `[n, 3, s, s]` pixels, with the graph back to the
    /// f32 masters.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        match self.precision {
            Precision::F32 => self.master.forward(pixels),
            Precision::Bf16 => {
                let mut tensors = HashMap::with_capacity(self.vars.len());
                for (name, var) in &self.vars {
                    tensors.insert(name.clone(), var.as_tensor().to_dtype(DType::BF16)?);
                }
                let weights = self.identity.with_tensors(tensors);
                let vit = VitEncoder::from_weights_as(&weights, self.config.clone(), self.preprocess.clone(), DType::BF16)?;
                Ok(vit.forward(pixels)?.to_dtype(DType::F32)?)
            }
        }
    }
}

/// Normalised `[n, 3, size, size]` input on `device` from the loader's `u8` planes:
/// `(v / 255 − mean) / std` per channel, computed on the device, in `dtype`.
pub fn pixels_to_device(pixels: &[u8], size: usize, pre: &Preprocess, device: &Device, dtype: DType) -> Result<Tensor> {
    let per = 3 * size * size;
    if per == 0 || !pixels.len().is_multiple_of(per) {
        return Err(Error::Shape {
            what: "pixels to the device".into(),
            expected: format!("whole 3x{size}x{size} images"),
            found: format!("{} bytes", pixels.len()),
        });
    }
    let n = pixels.len() / per;
    let x = Tensor::from_slice(pixels, (n, 3, size, size), device)?.to_dtype(DType::F32)?;
    let mean = Tensor::from_slice(&pre.mean, (1, 3, 1, 1), device)?;
    let std = Tensor::from_slice(&pre.std, (1, 3, 1, 1), device)?;
    Ok(((x / 255.0)?.broadcast_sub(&mean)?.broadcast_div(&std)?).to_dtype(dtype)?)
}
